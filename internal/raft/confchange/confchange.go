package confchange

import (
	"errors"
	"fmt"
	"slices"

	"github.com/skiffdb/skiff/internal/raft/quorum"
	"github.com/skiffdb/skiff/internal/raft/tracker"
	"github.com/skiffdb/skiff/raftpb"
)

// ErrInvalid is wrapped by every rejection of a config change.
var ErrInvalid = errors.New("confchange: invalid change")

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(format, args...))
}

// Apply returns the membership that results from applying cc, the entry at
// index, to m. m is not modified. An invalid change returns an error and
// leaves the membership as it was (the entry is then a no-op on every
// replica, since every replica reaches the same verdict).
func Apply(m raftpb.Membership, cc raftpb.ConfChange, index uint64) (raftpb.Membership, error) {
	if cc.LeaveJoint() {
		return leaveJoint(m, index)
	}
	if m.IsJoint() {
		return m, invalid("config is joint; leave it before changing it again")
	}
	next := m.Clone()
	for _, c := range cc.Changes {
		if err := applyOne(&next, c); err != nil {
			return m, err
		}
	}
	if len(next.Voters) == 0 {
		return m, invalid("removing every voter")
	}
	joint := cc.Transition != raftpb.TransitionAuto || len(cc.Changes) > 1
	if joint {
		if slices.Equal(ids(m.Voters), ids(next.Voters)) {
			// Entering a joint config with identical halves would need an
			// explicit leave for nothing; apply it directly instead.
			joint = false
		}
	} else if symdiff(ids(m.Voters), ids(next.Voters)) > 1 {
		return m, invalid("more than one voter changed in a simple change")
	}
	if joint {
		next.VotersOutgoing = slices.Clone(m.Voters)
		next.AutoLeave = cc.Transition != raftpb.TransitionJointExplicit
	}
	next.ConfigChangeIndex = index
	return next, nil
}

func leaveJoint(m raftpb.Membership, index uint64) (raftpb.Membership, error) {
	if !m.IsJoint() {
		return m, invalid("leaving a joint config that is not joint")
	}
	next := m.Clone()
	next.VotersOutgoing = nil
	next.AutoLeave = false
	next.ConfigChangeIndex = index
	return next, nil
}

func applyOne(m *raftpb.Membership, c raftpb.ConfChangeSingle) error {
	if c.Replica == raftpb.None {
		return invalid("replica ID 0")
	}
	if _, removed := slices.BinarySearch(m.Removed, c.Replica); removed && c.Type != raftpb.RemoveReplica {
		return invalid("replica %d was removed and cannot be added again", c.Replica)
	}
	switch c.Type {
	case raftpb.AddVoter:
		// Adding a non-voter as a voter promotes it.
		m.NonVoters = del(m.NonVoters, c.Replica)
		m.Voters = put(m.Voters, raftpb.Member{ID: c.Replica, Addr: c.Addr})
	case raftpb.AddNonVoter:
		if find(m.Voters, c.Replica) >= 0 {
			return invalid("replica %d is a voter; demotion is not supported", c.Replica)
		}
		m.NonVoters = put(m.NonVoters, raftpb.Member{ID: c.Replica, Addr: c.Addr})
	case raftpb.RemoveReplica:
		m.Voters = del(m.Voters, c.Replica)
		m.NonVoters = del(m.NonVoters, c.Replica)
		if i, found := slices.BinarySearch(m.Removed, c.Replica); !found {
			m.Removed = slices.Insert(m.Removed, i, c.Replica)
		}
	default:
		return invalid("unknown change type %d", c.Type)
	}
	return nil
}

func find(ms []raftpb.Member, id raftpb.ReplicaID) int {
	i, ok := slices.BinarySearchFunc(ms, id, func(m raftpb.Member, id raftpb.ReplicaID) int {
		return cmpID(m.ID, id)
	})
	if !ok {
		return -1
	}
	return i
}

func cmpID(a, b raftpb.ReplicaID) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// put inserts or updates (an address change) m in sorted ms.
func put(ms []raftpb.Member, m raftpb.Member) []raftpb.Member {
	i, ok := slices.BinarySearchFunc(ms, m.ID, func(x raftpb.Member, id raftpb.ReplicaID) int {
		return cmpID(x.ID, id)
	})
	if ok {
		if m.Addr != "" {
			ms[i].Addr = m.Addr
		}
		return ms
	}
	return slices.Insert(ms, i, m)
}

func del(ms []raftpb.Member, id raftpb.ReplicaID) []raftpb.Member {
	if i := find(ms, id); i >= 0 {
		return slices.Delete(ms, i, i+1)
	}
	return ms
}

func ids(ms []raftpb.Member) []raftpb.ReplicaID {
	out := make([]raftpb.ReplicaID, len(ms))
	for i := range ms {
		out[i] = ms[i].ID
	}
	return out
}

func symdiff(a, b []raftpb.ReplicaID) int {
	n := 0
	for _, id := range a {
		if _, ok := slices.BinarySearch(b, id); !ok {
			n++
		}
	}
	for _, id := range b {
		if _, ok := slices.BinarySearch(a, id); !ok {
			n++
		}
	}
	return n
}

// Validate checks a membership read from disk or the network.
func Validate(m raftpb.Membership) error {
	for _, list := range [][]raftpb.Member{m.Voters, m.VotersOutgoing, m.NonVoters} {
		if !slices.IsSortedFunc(list, func(a, b raftpb.Member) int { return cmpID(a.ID, b.ID) }) {
			return invalid("members not sorted")
		}
		for i := range list {
			if list[i].ID == raftpb.None || (i > 0 && list[i].ID == list[i-1].ID) {
				return invalid("zero or duplicate replica ID %d", list[i].ID)
			}
		}
	}
	for _, nv := range m.NonVoters {
		if find(m.Voters, nv.ID) >= 0 || find(m.VotersOutgoing, nv.ID) >= 0 {
			return invalid("replica %d is both voter and non-voter", nv.ID)
		}
	}
	if len(m.Voters) == 0 && (len(m.NonVoters) > 0 || len(m.VotersOutgoing) > 0) {
		return invalid("no voters")
	}
	return nil
}

// TrackerConfig derives the tracker's voting config from m.
func TrackerConfig(m raftpb.Membership) tracker.Config {
	return tracker.Config{
		Voters:    quorum.JointConfig{quorum.NewMajorityConfig(ids(m.Voters)...), quorum.NewMajorityConfig(ids(m.VotersOutgoing)...)},
		Learners:  ids(m.NonVoters),
		AutoLeave: m.AutoLeave,
	}
}

// Progress returns the progress map for cfg: replicas in both keep their
// Progress (with the learner flag updated), new ones start probing after
// lastIndex, and replicas no longer in cfg are dropped.
func Progress(t *tracker.Tracker, cfg tracker.Config, lastIndex uint64) map[raftpb.ReplicaID]*tracker.Progress {
	out := map[raftpb.ReplicaID]*tracker.Progress{}
	add := func(id raftpb.ReplicaID, learner bool) {
		pr := t.Progress(id)
		if pr == nil {
			pr = t.NewProgress(lastIndex, learner)
		}
		pr.IsLearner = learner
		out[id] = pr
	}
	for _, id := range cfg.Voters.IDs() {
		add(id, false)
	}
	for _, id := range cfg.Learners {
		add(id, true)
	}
	return out
}
