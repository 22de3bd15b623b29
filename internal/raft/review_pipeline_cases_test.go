package raft

import (
	"testing"

	"github.com/skiffdb/skiff/raftpb"
)

// Deterministic cases of the review of Step between Ready and Advance
// (the randomized driver is review_pipeline_fuzz_test.go).

// rpPersist persists rd on replica id of nw and advances, sending nothing.
func rpPersist(t *testing.T, nw *testNet, id raftpb.ReplicaID, rd Ready) {
	t.Helper()
	if err := nw.logs[id].Append(rd.Entries); err != nil {
		t.Fatal(err)
	}
	if !rd.HardState.IsEmpty() {
		nw.logs[id].SetHardState(rd.HardState)
	}
	nw.nodes[id].Advance(rd)
}

func hasMsg(msgs []raftpb.Message, typ raftpb.MessageType) bool {
	for _, m := range msgs {
		if m.Type == typ {
			return true
		}
	}
	return false
}

// TestReviewPipelineVoteDuringSave: a vote granted by a Step while a Ready
// is being persisted leaves only with the next Ready, after its
// HardState (term and vote, MustSync) — never with the Ready in flight.
func TestReviewPipelineVoteDuringSave(t *testing.T) {
	nw := newTestNet(t, 3)
	nw.nodes[1].Campaign()
	nw.stabilize()
	f := nw.nodes[2]
	if err := nw.nodes[1].Propose(raftpb.Entry{Data: []byte("a")}); err != nil {
		t.Fatal(err)
	}
	// Deliver the append to 2 only, and take 2's Ready: it is "being
	// persisted" from here on.
	rd1 := nw.nodes[1].Ready()
	for _, m := range rd1.Messages {
		if m.To == 2 {
			_ = f.Step(m)
		}
	}
	rpPersist(t, nw, 1, rd1)
	out := f.Ready()
	if len(out.Entries) == 0 {
		t.Fatal("the follower's Ready carries no entries")
	}
	term := f.BasicStatus().HardState.Term
	last := out.Entries[len(out.Entries)-1]
	// Replica 3 asks for a vote in a higher term with a log as long as 2's.
	if err := f.Step(raftpb.Message{Type: raftpb.MsgVote, From: 3, To: 2, Group: 1, Term: term + 1,
		Index: last.Index, LogTerm: last.Term}); err != nil {
		t.Fatal(err)
	}
	if ents := f.TakeCommitted(); len(ents) > 0 && ents[len(ents)-1].Index >= last.Index {
		t.Fatalf("TakeCommitted hands out %v, not durable", ents)
	}
	rpPersist(t, nw, 2, out)
	if hs := nw.logs[2].HardState(); hs.Term > term {
		t.Fatalf("the Ready in flight persisted the new term: %+v", hs)
	}
	rd := f.Ready()
	if rd.HardState.Term != term+1 || rd.HardState.Vote != 3 || !rd.MustSync {
		t.Fatalf("next Ready's HardState %+v MustSync=%v, want term %d vote 3 synced", rd.HardState, rd.MustSync, term+1)
	}
	if hasMsg(rd.Messages, raftpb.MsgVoteResp) || hasMsg(out.Messages, raftpb.MsgVoteResp) ||
		hasMsg(out.MessagesAfterPersist, raftpb.MsgVoteResp) {
		t.Fatal("the vote left before the HardState holding it was persisted")
	}
	if !hasMsg(rd.MessagesAfterPersist, raftpb.MsgVoteResp) {
		t.Fatalf("no vote response after persisting: %v", rd.MessagesAfterPersist)
	}
}

// TestReviewPipelineSnapshotOfferDuringSave: an offer of a snapshot whose
// last entry is in the log being persisted (Raft Fig. 13 rule 7) commits
// up to it at once, but TakeCommitted does not hand out that entry before
// the save returned, and the acknowledgement waits for the next Ready.
func TestReviewPipelineSnapshotOfferDuringSave(t *testing.T) {
	nw := newTestNet(t, 3)
	nw.nodes[1].Campaign()
	nw.stabilize()
	f := nw.nodes[2]
	if err := nw.nodes[1].Propose(raftpb.Entry{Data: []byte("a")}, raftpb.Entry{Data: []byte("b")}); err != nil {
		t.Fatal(err)
	}
	rd1 := nw.nodes[1].Ready()
	for _, m := range rd1.Messages {
		if m.To == 2 {
			_ = f.Step(m)
		}
	}
	rpPersist(t, nw, 1, rd1)
	out := f.Ready()
	if len(out.Entries) < 2 {
		t.Fatalf("the follower's Ready carries %d entries, want 2", len(out.Entries))
	}
	durable := out.Entries[0].Index - 1
	snap := out.Entries[len(out.Entries)-1]
	st := f.BasicStatus()
	if err := f.Step(raftpb.Message{Type: raftpb.MsgInstallSnapshot, From: 1, To: 2, Group: 1, Term: st.HardState.Term,
		Snapshot: &raftpb.SnapshotMeta{Index: snap.Index, Term: snap.Term, Membership: f.Membership()}}); err != nil {
		t.Fatal(err)
	}
	if c := f.BasicStatus().HardState.Commit; c != snap.Index {
		t.Fatalf("commit %d after a rule-7 offer at %d", c, snap.Index)
	}
	for _, e := range f.TakeCommitted() {
		if e.Index > durable {
			t.Fatalf("TakeCommitted hands out %d, in the save still running (durable up to %d)", e.Index, durable)
		}
	}
	rpPersist(t, nw, 2, out)
	rd := f.Ready()
	if hasMsg(rd.Messages, raftpb.MsgReplicateResp) {
		t.Fatal("the snapshot's acknowledgement may leave before persisting")
	}
	acked := false
	for _, m := range rd.MessagesAfterPersist {
		acked = acked || (m.Type == raftpb.MsgReplicateResp && m.Index == snap.Index)
	}
	if !acked {
		t.Fatalf("no acknowledgement of %d after the save: %v", snap.Index, rd.MessagesAfterPersist)
	}
	var got []uint64
	for _, e := range rd.CommittedEntries {
		got = append(got, e.Index)
	}
	if len(got) == 0 || got[len(got)-1] != snap.Index {
		t.Fatalf("committed entries after the save %v, want up to %d", got, snap.Index)
	}
}
