package tracker

import (
	"slices"

	"github.com/skiffdb/skiff/internal/raft/quorum"
	"github.com/skiffdb/skiff/raftpb"
)

// Config is a group's voting configuration as the core sees it.
type Config struct {
	Voters quorum.JointConfig
	// Learners are non-voters. Invariant: disjoint from Voters.
	Learners []raftpb.ReplicaID // sorted
	// AutoLeave: leave the joint configuration automatically once the
	// entry that entered it is applied.
	AutoLeave bool
}

// Clone returns a deep copy.
func (c Config) Clone() Config {
	return Config{
		Voters:    quorum.JointConfig{slices.Clone(c.Voters[0]), slices.Clone(c.Voters[1])},
		Learners:  slices.Clone(c.Learners),
		AutoLeave: c.AutoLeave,
	}
}

// IsLearner reports whether id is a non-voter.
func (c *Config) IsLearner(id raftpb.ReplicaID) bool {
	_, ok := slices.BinarySearch(c.Learners, id)
	return ok
}

func (c Config) String() string {
	s := "voters=" + c.Voters.String()
	if len(c.Learners) > 0 {
		s += " learners=" + quorum.MajorityConfig(c.Learners).String()
	}
	if c.AutoLeave {
		s += " autoleave"
	}
	return s
}

// Tracker tracks every replica's Progress and the votes of an election.
type Tracker struct {
	Config

	progress map[raftpb.ReplicaID]*Progress
	// ids is the sorted set of keys of progress, for deterministic
	// iteration.
	ids []raftpb.ReplicaID

	votes map[raftpb.ReplicaID]bool

	maxInflight      int
	maxInflightBytes uint64
}

// New returns an empty Tracker whose Progresses get Inflights with the given
// limits.
func New(maxInflight int, maxInflightBytes uint64) *Tracker {
	return &Tracker{
		progress:         map[raftpb.ReplicaID]*Progress{},
		votes:            map[raftpb.ReplicaID]bool{},
		maxInflight:      maxInflight,
		maxInflightBytes: maxInflightBytes,
	}
}

// NewProgress returns a Progress for a replica that joins with the leader's
// log ending at lastIndex.
func (t *Tracker) NewProgress(lastIndex uint64, learner bool) *Progress {
	return &Progress{
		Next:         lastIndex + 1,
		Inflights:    NewInflights(t.maxInflight, t.maxInflightBytes),
		IsLearner:    learner,
		RecentActive: true,
	}
}

// Progress returns id's Progress, or nil.
func (t *Tracker) Progress(id raftpb.ReplicaID) *Progress { return t.progress[id] }

// IDs returns the sorted replica IDs (voters and learners). The slice is
// owned by the Tracker and must not be modified.
func (t *Tracker) IDs() []raftpb.ReplicaID { return t.ids }

// Len returns the number of tracked replicas.
func (t *Tracker) Len() int { return len(t.ids) }

// SetConfig installs cfg and the matching progress map, as produced by
// confchange. Replicas that stay keep their Progress.
func (t *Tracker) SetConfig(cfg Config, progress map[raftpb.ReplicaID]*Progress) {
	t.Config = cfg
	t.progress = progress
	t.ids = t.ids[:0]
	for id := range progress {
		t.ids = append(t.ids, id)
	}
	slices.Sort(t.ids)
}

// ProgressMap returns a copy of the progress map, for confchange to edit.
func (t *Tracker) ProgressMap() map[raftpb.ReplicaID]*Progress {
	m := make(map[raftpb.ReplicaID]*Progress, len(t.progress))
	for id, pr := range t.progress {
		m[id] = pr
	}
	return m
}

// Visit calls f for every replica in ID order.
func (t *Tracker) Visit(f func(id raftpb.ReplicaID, pr *Progress)) {
	for _, id := range t.ids {
		f(id, t.progress[id])
	}
}

// IsSingleton reports whether the group has exactly one voter (not joint).
func (t *Tracker) IsSingleton() bool {
	return len(t.Voters[0]) == 1 && len(t.Voters[1]) == 0
}

// Committed returns the largest index a quorum of voters has acknowledged.
func (t *Tracker) Committed() uint64 {
	return t.Voters.CommittedIndex(func(id raftpb.ReplicaID) (uint64, bool) {
		pr, ok := t.progress[id]
		if !ok {
			return 0, false
		}
		return pr.Match, true
	})
}

// QuorumActive reports whether a quorum of voters was recently active.
func (t *Tracker) QuorumActive() bool {
	return t.Voters.VoteResult(func(id raftpb.ReplicaID) (bool, bool) {
		pr, ok := t.progress[id]
		if !ok {
			return false, false
		}
		return pr.RecentActive, true
	}) == quorum.VoteWon
}

// ResetVotes clears the votes of an election.
func (t *Tracker) ResetVotes() { clear(t.votes) }

// RecordVote records id's answer; only the first answer counts.
func (t *Tracker) RecordVote(id raftpb.ReplicaID, granted bool) {
	if _, ok := t.votes[id]; !ok {
		t.votes[id] = granted
	}
}

// TallyVotes returns the grants and rejections among voters and the result.
func (t *Tracker) TallyVotes() (granted, rejected int, result quorum.VoteResult) {
	for _, id := range t.ids {
		if t.progress[id].IsLearner {
			continue
		}
		if v, ok := t.votes[id]; ok {
			if v {
				granted++
			} else {
				rejected++
			}
		}
	}
	result = t.Voters.VoteResult(func(id raftpb.ReplicaID) (bool, bool) {
		v, ok := t.votes[id]
		return v, ok
	})
	return granted, rejected, result
}
