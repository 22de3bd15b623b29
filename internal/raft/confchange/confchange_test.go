package confchange

import (
	"errors"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/skiffdb/skiff/internal/raft/tracker"
	"github.com/skiffdb/skiff/raftpb"
)

func members(ids ...raftpb.ReplicaID) []raftpb.Member {
	var ms []raftpb.Member
	for _, id := range ids {
		ms = append(ms, raftpb.Member{ID: id})
	}
	return ms
}

func single(typ raftpb.ConfChangeType, id raftpb.ReplicaID) raftpb.ConfChange {
	return raftpb.ConfChange{Changes: []raftpb.ConfChangeSingle{{Type: typ, Replica: id}}}
}

// TestApplyRejections covers every way Apply refuses a change; each leaves
// the membership as it was.
func TestApplyRejections(t *testing.T) {
	base := raftpb.Membership{Voters: members(1, 2, 3), NonVoters: members(4), Removed: []raftpb.ReplicaID{9}}
	joint := raftpb.Membership{Voters: members(1, 2), VotersOutgoing: members(1, 2, 3), AutoLeave: true}
	for _, tc := range []struct {
		name string
		m    raftpb.Membership
		cc   raftpb.ConfChange
		want string
	}{
		{"replica 0", base, single(raftpb.AddVoter, 0), "replica ID 0"},
		{"re-add removed voter", base, single(raftpb.AddVoter, 9), "was removed"},
		{"re-add removed non-voter", base, single(raftpb.AddNonVoter, 9), "was removed"},
		{"demote a voter", base, single(raftpb.AddNonVoter, 2), "demotion is not supported"},
		{"unknown type", base, single(raftpb.ConfChangeType(7), 5), "unknown change type"},
		{"remove every voter", raftpb.Membership{Voters: members(1)}, single(raftpb.RemoveReplica, 1), "removing every voter"},
		{"remove every voter jointly", base, raftpb.ConfChange{Changes: []raftpb.ConfChangeSingle{
			{Type: raftpb.RemoveReplica, Replica: 1}, {Type: raftpb.RemoveReplica, Replica: 2},
			{Type: raftpb.RemoveReplica, Replica: 3}}}, "removing every voter"},
		{"change while joint", joint, single(raftpb.AddVoter, 5), "config is joint"},
		{"leave when not joint", base, raftpb.ConfChange{}, "not joint"},
		{"second change of a batch invalid", base, raftpb.ConfChange{Changes: []raftpb.ConfChangeSingle{
			{Type: raftpb.AddVoter, Replica: 5}, {Type: raftpb.AddVoter, Replica: 0}}}, "replica ID 0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := tc.m.Clone()
			got, err := Apply(tc.m, tc.cc, 7)
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want ErrInvalid containing %q", err, tc.want)
			}
			if !equal(got, before) || !equal(tc.m, before) {
				t.Errorf("membership changed on rejection: got %+v, input now %+v, was %+v", got, tc.m, before)
			}
		})
	}
}

func equal(a, b raftpb.Membership) bool {
	return a.ConfigChangeIndex == b.ConfigChangeIndex && a.AutoLeave == b.AutoLeave &&
		slices.Equal(ids(a.Voters), ids(b.Voters)) && slices.Equal(ids(a.VotersOutgoing), ids(b.VotersOutgoing)) &&
		slices.Equal(ids(a.NonVoters), ids(b.NonVoters)) && slices.Equal(a.Removed, b.Removed)
}

// TestApplyTransitions covers the accepted shapes: a simple change, a
// promotion, an address update, multi-change and explicit joint configs and
// leaving them, and a joint change that alters no voter (applied directly).
func TestApplyTransitions(t *testing.T) {
	m := raftpb.Membership{Voters: members(1, 2, 3)}
	next, err := Apply(m, single(raftpb.AddNonVoter, 4), 5)
	if err != nil || !slices.Equal(ids(next.NonVoters), []raftpb.ReplicaID{4}) || next.IsJoint() || next.ConfigChangeIndex != 5 {
		t.Fatalf("add non-voter: %+v, %v", next, err)
	}
	next, err = Apply(next, single(raftpb.AddVoter, 4), 6)
	if err != nil || !slices.Equal(ids(next.Voters), []raftpb.ReplicaID{1, 2, 3, 4}) || len(next.NonVoters) != 0 || next.IsJoint() {
		t.Fatalf("promote: %+v, %v", next, err)
	}
	upd, err := Apply(next, raftpb.ConfChange{Changes: []raftpb.ConfChangeSingle{{Type: raftpb.AddVoter, Replica: 2, Addr: "h2:1"}}}, 7)
	if err != nil || upd.Voters[1].Addr != "h2:1" || upd.IsJoint() {
		t.Fatalf("address update: %+v, %v", upd, err)
	}
	if next.Voters[1].Addr != "" {
		t.Fatal("Apply modified its input")
	}
	joint, err := Apply(next, raftpb.ConfChange{Changes: []raftpb.ConfChangeSingle{
		{Type: raftpb.AddVoter, Replica: 5}, {Type: raftpb.RemoveReplica, Replica: 1}}}, 8)
	if err != nil || !joint.IsJoint() || !joint.AutoLeave ||
		!slices.Equal(ids(joint.Voters), []raftpb.ReplicaID{2, 3, 4, 5}) ||
		!slices.Equal(ids(joint.VotersOutgoing), []raftpb.ReplicaID{1, 2, 3, 4}) {
		t.Fatalf("enter joint: %+v, %v", joint, err)
	}
	left, err := Apply(joint, raftpb.ConfChange{}, 9)
	if err != nil || left.IsJoint() || left.AutoLeave || left.ConfigChangeIndex != 9 {
		t.Fatalf("leave joint: %+v, %v", left, err)
	}
	explicit, err := Apply(left, raftpb.ConfChange{Transition: raftpb.TransitionJointExplicit,
		Changes: []raftpb.ConfChangeSingle{{Type: raftpb.RemoveReplica, Replica: 5}}}, 10)
	if err != nil || !explicit.IsJoint() || explicit.AutoLeave {
		t.Fatalf("explicit joint: %+v, %v", explicit, err)
	}
	implicit, err := Apply(left, raftpb.ConfChange{Transition: raftpb.TransitionJointImplicit,
		Changes: []raftpb.ConfChangeSingle{{Type: raftpb.RemoveReplica, Replica: 5}}}, 10)
	if err != nil || !implicit.IsJoint() || !implicit.AutoLeave {
		t.Fatalf("implicit joint: %+v, %v", implicit, err)
	}
	// Several changes that leave the voters as they are need no joint
	// config.
	nv, err := Apply(left, raftpb.ConfChange{Transition: raftpb.TransitionJointExplicit, Changes: []raftpb.ConfChangeSingle{
		{Type: raftpb.AddNonVoter, Replica: 6}, {Type: raftpb.AddNonVoter, Replica: 7}}}, 11)
	if err != nil || nv.IsJoint() || !slices.Equal(ids(nv.NonVoters), []raftpb.ReplicaID{6, 7}) {
		t.Fatalf("non-voters only: %+v, %v", nv, err)
	}
}

// randomChange returns a change that is valid as a simple change on m, or
// false after too many tries.
func randomChange(rng *rand.Rand, m raftpb.Membership) (raftpb.ConfChangeSingle, bool) {
	for range 50 {
		c := raftpb.ConfChangeSingle{Type: raftpb.ConfChangeType(rng.IntN(3)), Replica: raftpb.ReplicaID(1 + rng.IntN(12))}
		if _, err := Apply(m, raftpb.ConfChange{Changes: []raftpb.ConfChangeSingle{c}}, 1); err == nil {
			return c, true
		}
	}
	return raftpb.ConfChangeSingle{}, false
}

// TestRandomSimpleVersusJoint applies random change sequences two ways —
// one simple change at a time, or all at once through a joint configuration
// that is then left — and requires the same final membership, satisfying
// the package invariants.
func TestRandomSimpleVersusJoint(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 13))
	for iter := 0; iter < 2000; iter++ {
		start := raftpb.Membership{Voters: members(1, 2, 3)}
		if rng.IntN(2) == 0 {
			start.NonVoters = members(4)
		}
		simple := start
		var changes []raftpb.ConfChangeSingle
		for range 1 + rng.IntN(5) {
			c, ok := randomChange(rng, simple)
			if !ok {
				break
			}
			next, err := Apply(simple, raftpb.ConfChange{Changes: []raftpb.ConfChangeSingle{c}}, 1)
			if err != nil {
				t.Fatalf("iter %d: a generated change was refused: %v", iter, err)
			}
			if next.IsJoint() {
				t.Fatalf("iter %d: a simple change entered a joint config", iter)
			}
			simple, changes = next, append(changes, c)
		}
		if len(changes) == 0 {
			continue
		}
		for _, tr := range []raftpb.ConfChangeTransition{raftpb.TransitionJointImplicit, raftpb.TransitionJointExplicit} {
			joint, err := Apply(start, raftpb.ConfChange{Transition: tr, Changes: changes}, 2)
			if err != nil {
				t.Fatalf("iter %d: %v applied jointly: %v", iter, changes, err)
			}
			if joint.IsJoint() {
				if !slices.Equal(ids(joint.VotersOutgoing), ids(start.Voters)) ||
					joint.AutoLeave != (tr == raftpb.TransitionJointImplicit) {
					t.Fatalf("iter %d: joint config %+v does not keep the old voters as the outgoing half", iter, joint)
				}
				if joint, err = Apply(joint, raftpb.ConfChange{}, 3); err != nil {
					t.Fatalf("iter %d: leave joint: %v", iter, err)
				}
			}
			simple.ConfigChangeIndex, joint.ConfigChangeIndex = 0, 0
			if !equal(simple, joint) {
				t.Fatalf("iter %d: %v\n simple: %+v\n joint:  %+v", iter, changes, simple, joint)
			}
			if err := Validate(joint); err != nil {
				t.Fatalf("iter %d: result violates invariants: %v", iter, err)
			}
		}
	}
}

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		m    raftpb.Membership
		want string // "" means valid
	}{
		{"empty", raftpb.Membership{}, ""},
		{"ok", raftpb.Membership{Voters: members(1, 2), VotersOutgoing: members(1, 3), NonVoters: members(4)}, ""},
		{"unsorted", raftpb.Membership{Voters: members(2, 1)}, "not sorted"},
		{"duplicate", raftpb.Membership{Voters: members(1, 1)}, "duplicate"},
		{"zero", raftpb.Membership{NonVoters: members(0), Voters: members(1)}, "zero"},
		{"voter and non-voter", raftpb.Membership{Voters: members(1, 2), NonVoters: members(2)}, "both voter and non-voter"},
		{"outgoing voter and non-voter", raftpb.Membership{Voters: members(1), VotersOutgoing: members(2), NonVoters: members(2)}, "both"},
		{"non-voters without voters", raftpb.Membership{NonVoters: members(2)}, "no voters"},
		{"outgoing without voters", raftpb.Membership{VotersOutgoing: members(2)}, "no voters"},
	} {
		err := Validate(tc.m)
		if tc.want == "" {
			if err != nil {
				t.Errorf("%s: %v", tc.name, err)
			}
			continue
		}
		if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want %q", tc.name, err, tc.want)
		}
	}
}

// TestTrackerConfigAndProgress: the tracker's config follows the
// membership; replicas that stay keep their Progress, new ones start after
// lastIndex, removed ones are dropped, and learner flags follow promotions.
func TestTrackerConfigAndProgress(t *testing.T) {
	m := raftpb.Membership{Voters: members(1, 2), VotersOutgoing: members(1, 3), NonVoters: members(4), AutoLeave: true}
	cfg := TrackerConfig(m)
	if s := cfg.String(); s != "voters=(1 2)&&(1 3) learners=(4) autoleave" {
		t.Fatalf("TrackerConfig = %s", s)
	}
	trk := tracker.New(4, 0)
	trk.SetConfig(cfg, Progress(trk, cfg, 10))
	if trk.Len() != 4 || trk.Progress(2).Next != 11 || !trk.Progress(4).IsLearner {
		t.Fatalf("initial progress: %v", trk.IDs())
	}
	trk.Progress(1).Match = 7
	trk.Progress(4).Match = 5
	// Leave the joint config and promote 4.
	m2 := raftpb.Membership{Voters: members(1, 2, 4)}
	cfg2 := TrackerConfig(m2)
	trk.SetConfig(cfg2, Progress(trk, cfg2, 20))
	if !slices.Equal(trk.IDs(), []raftpb.ReplicaID{1, 2, 4}) {
		t.Fatalf("IDs after leaving = %v, want [1 2 4]", trk.IDs())
	}
	if trk.Progress(1).Match != 7 || trk.Progress(4).Match != 5 || trk.Progress(4).IsLearner {
		t.Errorf("kept progress lost: 1=%s 4=%s", trk.Progress(1), trk.Progress(4))
	}
}
