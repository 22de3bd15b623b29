package rafttest

import (
	"strings"
	"testing"

	"github.com/skiffdb/skiff/raftpb"
)

// TestSafetyChecksFire builds two unrelated single-voter groups in one Env:
// both elect a leader in term 2 and apply different entries at index 3,
// which the Env must report as violations of election safety and state
// machine safety.
func TestSafetyChecksFire(t *testing.T) {
	env := New()
	for _, id := range []raftpb.ReplicaID{1, 2} {
		if err := env.AddNodes(1, NodeOptions{Voters: []raftpb.ReplicaID{id}}); err != nil {
			t.Fatal(err)
		}
	}
	for _, id := range []raftpb.ReplicaID{1, 2} {
		env.Node(id).Campaign()
	}
	if err := env.Stabilize(); err != nil {
		t.Fatal(err)
	}
	if out := env.Out.String(); !strings.Contains(out, "INVARIANT VIOLATED: 1 and 2 both lead term 2") {
		t.Errorf("two leaders of term 2 not reported:\n%s", out)
	}
	env.Out.Reset()
	for _, id := range []raftpb.ReplicaID{1, 2} {
		if err := env.Node(id).Propose(raftpb.Entry{Data: []byte{byte(id)}}); err != nil {
			t.Fatal(err)
		}
	}
	if err := env.Stabilize(); err != nil {
		t.Fatal(err)
	}
	if out := env.Out.String(); !strings.Contains(out, `INVARIANT VIOLATED: 2 applies 2/3 EntryNormal "\x02"`) {
		t.Errorf("different entries applied at index 3 not reported:\n%s", out)
	}
}

// TestDescribeMessage pins the one-line message format the scripts use.
func TestDescribeMessage(t *testing.T) {
	for _, tc := range []struct {
		m    raftpb.Message
		want string
	}{
		{raftpb.Message{Type: raftpb.MsgReplicate, From: 1, To: 2, Term: 1, LogTerm: 1, Index: 10, Commit: 10,
			Entries: []raftpb.Entry{{Term: 1, Index: 11, Data: []byte("x")}}},
			`1->2 MsgReplicate Term:1 Log:1/10 Commit:10 Entries:[1/11 EntryNormal "x"]`},
		{raftpb.Message{Type: raftpb.MsgReplicateResp, From: 2, To: 1, Term: 3, Index: 7, Reject: true, RejectHint: 5, LogTerm: 2},
			`2->1 MsgReplicateResp Term:3 Index:7 Rejected (Hint: 2/5)`},
		{raftpb.Message{Type: raftpb.MsgTransferLeader, From: 2, To: 1, Term: 3, Index: 3},
			`2->1 MsgTransferLeader Term:3 Target:3`},
		{raftpb.Message{Type: raftpb.MsgInstallSnapshot, From: 1, To: 3, Term: 2,
			Snapshot: &raftpb.SnapshotMeta{Index: 5, Term: 2, Membership: raftpb.Membership{
				Voters: []raftpb.Member{{ID: 1}, {ID: 2}}, VotersOutgoing: []raftpb.Member{{ID: 1}, {ID: 3}},
				NonVoters: []raftpb.Member{{ID: 4}}, Removed: []raftpb.ReplicaID{9}, AutoLeave: true}}},
			`1->3 MsgInstallSnapshot Term:2 Snapshot:{Index:5 Term:2 voters=(1 2)&&(1 3) learners=(4) removed=(9) autoleave}`},
		{raftpb.Message{Type: raftpb.MsgHeartbeatResp, From: 2, To: 1, Term: 2, Context: []byte("r1")},
			`2->1 MsgHeartbeatResp Term:2 Ctx:"r1"`},
	} {
		if got := DescribeMessage(tc.m); got != tc.want {
			t.Errorf("got  %s\nwant %s", got, tc.want)
		}
	}
	cc := raftpb.ConfChange{Transition: raftpb.TransitionJointExplicit, Changes: []raftpb.ConfChangeSingle{
		{Type: raftpb.AddVoter, Replica: 4}, {Type: raftpb.AddNonVoter, Replica: 5}, {Type: raftpb.RemoveReplica, Replica: 2}}}
	e := raftpb.Entry{Term: 2, Index: 9, Type: raftpb.EntryConfigChange, Data: cc.Marshal()}
	if got, want := DescribeEntry(e), "2/9 EntryConfigChange v4 l5 r2 transition=explicit"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}
