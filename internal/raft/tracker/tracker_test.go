package tracker

import (
	"slices"
	"testing"

	"github.com/skiffdb/skiff/internal/raft/quorum"
	"github.com/skiffdb/skiff/raftpb"
)

func newTracker(voters, outgoing, learners []raftpb.ReplicaID) *Tracker {
	t := New(4, 0)
	cfg := Config{Voters: quorum.JointConfig{quorum.NewMajorityConfig(voters...), quorum.NewMajorityConfig(outgoing...)},
		Learners: learners}
	prs := map[raftpb.ReplicaID]*Progress{}
	for _, id := range append(cfg.Voters.IDs(), learners...) {
		prs[id] = t.NewProgress(10, slices.Contains(learners, id))
	}
	t.SetConfig(cfg, prs)
	return t
}

// TestTrackerCommittedIgnoresLearners: only voters count, in both halves.
func TestTrackerCommittedIgnoresLearners(t *testing.T) {
	tr := newTracker([]raftpb.ReplicaID{1, 2, 3}, nil, []raftpb.ReplicaID{4, 5})
	for id, m := range map[raftpb.ReplicaID]uint64{1: 10, 2: 3, 3: 2, 4: 10, 5: 10} {
		tr.Progress(id).Match = m
	}
	if c := tr.Committed(); c != 3 {
		t.Errorf("Committed = %d, want 3 (learners at 10 do not count)", c)
	}
	tr = newTracker([]raftpb.ReplicaID{1, 2, 3}, []raftpb.ReplicaID{1, 4, 5}, nil)
	for id, m := range map[raftpb.ReplicaID]uint64{1: 10, 2: 9, 3: 9, 4: 2, 5: 1} {
		tr.Progress(id).Match = m
	}
	if c := tr.Committed(); c != 2 {
		t.Errorf("joint Committed = %d, want 2 (the outgoing half lags)", c)
	}
	if !slices.Equal(tr.IDs(), []raftpb.ReplicaID{1, 2, 3, 4, 5}) || tr.Len() != 5 {
		t.Errorf("IDs = %v", tr.IDs())
	}
}

// TestTrackerVotes: learners' votes never count; only the first answer of
// each voter counts.
func TestTrackerVotes(t *testing.T) {
	tr := newTracker([]raftpb.ReplicaID{1, 2, 3}, nil, []raftpb.ReplicaID{4})
	tr.RecordVote(1, true)
	tr.RecordVote(4, true)
	if g, r, res := tr.TallyVotes(); g != 1 || r != 0 || res != quorum.VotePending {
		t.Fatalf("after 1 and learner 4: %d %d %s", g, r, res)
	}
	tr.RecordVote(2, false)
	tr.RecordVote(2, true) // a second answer is ignored
	if g, r, res := tr.TallyVotes(); g != 1 || r != 1 || res != quorum.VotePending {
		t.Fatalf("after 2 rejected: %d %d %s", g, r, res)
	}
	tr.RecordVote(3, true)
	if _, _, res := tr.TallyVotes(); res != quorum.VoteWon {
		t.Fatalf("after 3 granted: %s", res)
	}
	tr.ResetVotes()
	if g, r, _ := tr.TallyVotes(); g != 0 || r != 0 {
		t.Fatalf("after ResetVotes: %d %d", g, r)
	}
}

func TestTrackerQuorumActive(t *testing.T) {
	tr := newTracker([]raftpb.ReplicaID{1, 2, 3}, nil, []raftpb.ReplicaID{4})
	tr.Visit(func(id raftpb.ReplicaID, pr *Progress) { pr.RecentActive = id == 1 || id == 4 })
	if tr.QuorumActive() {
		t.Fatal("1 and a learner are not a quorum")
	}
	tr.Progress(3).RecentActive = true
	if !tr.QuorumActive() {
		t.Fatal("1 and 3 are a quorum")
	}
}

func TestTrackerSingletonAndConfig(t *testing.T) {
	if !newTracker([]raftpb.ReplicaID{1}, nil, []raftpb.ReplicaID{2}).IsSingleton() {
		t.Error("one voter plus a learner is a singleton")
	}
	if newTracker([]raftpb.ReplicaID{1}, []raftpb.ReplicaID{1, 2}, nil).IsSingleton() {
		t.Error("a joint config is not a singleton")
	}
	tr := newTracker([]raftpb.ReplicaID{1, 2}, []raftpb.ReplicaID{1, 3}, []raftpb.ReplicaID{4})
	tr.AutoLeave = true
	c := tr.Config.Clone()
	tr.Learners[0] = 9
	if c.Learners[0] != 4 || !c.IsLearner(4) || c.IsLearner(1) {
		t.Errorf("Clone shares state: %s", c)
	}
	if s := c.String(); s != "voters=(1 2)&&(1 3) learners=(4) autoleave" {
		t.Errorf("String = %q", s)
	}
	m := tr.ProgressMap()
	delete(m, 1)
	if tr.Progress(1) == nil {
		t.Error("ProgressMap is not a copy")
	}
}
