package raft

import (
	"testing"

	"github.com/skiffdb/skiff/raftpb"
)

// testNet is a minimal in-package network of replicas over MemoryLogs, used
// by the unit tests here (the full harness is in rafttest).
type testNet struct {
	t       testing.TB
	nodes   map[raftpb.ReplicaID]*Replica
	logs    map[raftpb.ReplicaID]*MemoryLog
	ids     []raftpb.ReplicaID
	drop    func(m raftpb.Message) bool
	queue   []raftpb.Message
	applied map[raftpb.ReplicaID][]raftpb.Entry
}

func newTestNet(t testing.TB, n int, opts ...func(*Config)) *testNet {
	t.Helper()
	nw := &testNet{t: t, nodes: map[raftpb.ReplicaID]*Replica{}, logs: map[raftpb.ReplicaID]*MemoryLog{},
		applied: map[raftpb.ReplicaID][]raftpb.Entry{}}
	var members []raftpb.Member
	for i := 1; i <= n; i++ {
		members = append(members, raftpb.Member{ID: raftpb.ReplicaID(i)})
	}
	for i := 1; i <= n; i++ {
		id := raftpb.ReplicaID(i)
		ml := NewMemoryLog()
		ml.snap.Membership = raftpb.Membership{Voters: members}
		cfg := Config{ID: id, Group: 1, ElectionTicks: 10, HeartbeatTicks: 1, Seed: uint64(i)}
		for _, o := range opts {
			o(&cfg)
		}
		r, err := New(cfg, ml)
		if err != nil {
			t.Fatal(err)
		}
		nw.nodes[id], nw.logs[id] = r, ml
		nw.ids = append(nw.ids, id)
	}
	return nw
}

// process handles every Ready of every node and queues their messages.
func (nw *testNet) process() bool {
	any := false
	for _, id := range nw.ids {
		r := nw.nodes[id]
		for r.HasReady() {
			any = true
			rd := r.Ready()
			ml := nw.logs[id]
			if rd.Snapshot != nil {
				if err := ml.ApplySnapshot(*rd.Snapshot); err != nil {
					nw.t.Fatal(err)
				}
			}
			if err := ml.Append(rd.Entries); err != nil {
				nw.t.Fatal(err)
			}
			if !rd.HardState.IsEmpty() {
				ml.SetHardState(rd.HardState)
			}
			nw.queue = append(nw.queue, rd.Messages...)
			nw.queue = append(nw.queue, rd.MessagesAfterPersist...)
			nw.applied[id] = append(nw.applied[id], rd.CommittedEntries...)
			r.Advance(rd)
		}
	}
	return any
}

// stabilize delivers messages until nothing moves.
func (nw *testNet) stabilize() {
	for i := 0; i < 10000; i++ {
		moved := nw.process()
		q := nw.queue
		nw.queue = nil
		for _, m := range q {
			if nw.drop != nil && nw.drop(m) {
				continue
			}
			if r := nw.nodes[m.To]; r != nil {
				_ = r.Step(m)
				moved = true
			}
		}
		if !moved {
			return
		}
	}
	nw.t.Fatal("network did not stabilize")
}

func (nw *testNet) leader() raftpb.ReplicaID {
	for _, id := range nw.ids {
		if nw.nodes[id].role == Leader {
			return id
		}
	}
	return raftpb.None
}

func TestSmokeElectAndReplicate(t *testing.T) {
	for _, preVote := range []bool{false, true} {
		nw := newTestNet(t, 3, func(c *Config) { c.PreVote = preVote; c.CheckQuorum = preVote })
		nw.nodes[1].Campaign()
		nw.stabilize()
		if nw.leader() != 1 {
			t.Fatalf("preVote=%v: leader = %d, want 1", preVote, nw.leader())
		}
		if err := nw.nodes[1].Propose(raftpb.Entry{Data: []byte("x")}); err != nil {
			t.Fatal(err)
		}
		if err := nw.nodes[2].Propose(raftpb.Entry{Data: []byte("y")}); err != nil {
			t.Fatal(err)
		}
		nw.stabilize()
		for _, id := range nw.ids {
			var data []string
			for _, e := range nw.applied[id] {
				if e.Type == raftpb.EntryNormal {
					data = append(data, string(e.Data))
				}
			}
			if len(data) != 2 || data[0] != "x" || data[1] != "y" {
				t.Fatalf("preVote=%v: replica %d applied %q", preVote, id, data)
			}
		}
	}
}

// TestBasicStatusMatchesStatus: BasicStatus reports what Status does for
// the fields they share, on a leader and a follower, and allocates nothing
// (the engine reads it after every Ready).
func TestBasicStatusMatchesStatus(t *testing.T) {
	nw := newTestNet(t, 3)
	nw.nodes[1].Campaign()
	nw.stabilize()
	if err := nw.nodes[1].Propose(raftpb.Entry{Data: []byte("x")}); err != nil {
		t.Fatal(err)
	}
	nw.stabilize()
	for _, id := range []raftpb.ReplicaID{1, 2} {
		r := nw.nodes[id]
		b, s := r.BasicStatus(), r.Status()
		want := BasicStatus{HardState: s.HardState, SoftState: s.SoftState, Applied: s.Applied,
			FirstIndex: s.FirstIndex, LastIndex: s.LastIndex}
		if b != want {
			t.Errorf("replica %d: BasicStatus %+v, Status has %+v", id, b, want)
		}
		if b.LastIndex == 0 || b.HardState.Commit != b.LastIndex || b.SoftState.Lead != 1 {
			t.Errorf("replica %d: BasicStatus %+v after a committed write led by 1", id, b)
		}
		if n := testing.AllocsPerRun(100, func() { _ = r.BasicStatus() }); n != 0 {
			t.Errorf("replica %d: BasicStatus allocates %.0f times", id, n)
		}
	}
}

// TestStepBetweenReadyAndAdvance: while a leader's Ready is being persisted,
// stepped acknowledgements are counted, but the leader counts its own copy
// of the entries being persisted only at Advance; TakeCommitted hands out
// only committed entries that are durable, and the next Ready does not
// hand them out again.
func TestStepBetweenReadyAndAdvance(t *testing.T) {
	nw := newTestNet(t, 3)
	nw.nodes[1].Campaign()
	nw.stabilize()
	l := nw.nodes[1]
	// persist handles one Ready of replica id like testNet.process.
	persist := func(id raftpb.ReplicaID, rd Ready) {
		t.Helper()
		if err := nw.logs[id].Append(rd.Entries); err != nil {
			t.Fatal(err)
		}
		if !rd.HardState.IsEmpty() {
			nw.logs[id].SetHardState(rd.HardState)
		}
		nw.queue = append(nw.queue, rd.Messages...)
		nw.queue = append(nw.queue, rd.MessagesAfterPersist...)
		nw.applied[id] = append(nw.applied[id], rd.CommittedEntries...)
		nw.nodes[id].Advance(rd)
	}
	// followers delivers the queued messages to replicas 2 and 3, persists
	// their Readys, and returns what they sent to the leader.
	followers := func() []raftpb.Message {
		t.Helper()
		var toLeader []raftpb.Message
		for len(nw.queue) > 0 {
			q := nw.queue
			nw.queue = nil
			for _, m := range q {
				if m.To == 1 {
					toLeader = append(toLeader, m)
				} else {
					_ = nw.nodes[m.To].Step(m)
				}
			}
			for _, id := range []raftpb.ReplicaID{2, 3} {
				for nw.nodes[id].HasReady() {
					persist(id, nw.nodes[id].Ready())
				}
			}
		}
		return toLeader
	}
	ackFrom := func(msgs []raftpb.Message, from raftpb.ReplicaID, index uint64) raftpb.Message {
		t.Helper()
		for _, m := range msgs {
			if m.From == from && m.Type == raftpb.MsgReplicateResp && !m.Reject && m.Index >= index {
				return m
			}
		}
		t.Fatalf("no ack of %d from %d in %v", index, from, msgs)
		return raftpb.Message{}
	}

	// A is appended and being persisted on the leader; one follower's ack
	// arrives meanwhile: without the leader's own durable copy that is no
	// quorum.
	if err := l.Propose(raftpb.Entry{Data: []byte("a")}); err != nil {
		t.Fatal(err)
	}
	rdA := l.Ready()
	idxA := rdA.Entries[len(rdA.Entries)-1].Index
	commit := l.BasicStatus().HardState.Commit
	nw.queue = append(nw.queue, rdA.Messages...)
	acks := followers()
	if err := l.Step(ackFrom(acks, 2, idxA)); err != nil {
		t.Fatal(err)
	}
	if got := l.BasicStatus().HardState.Commit; got != commit {
		t.Fatalf("commit moved %d → %d on one ack with the leader's copy not durable", commit, got)
	}
	if ents := l.TakeCommitted(); len(ents) != 0 {
		t.Fatalf("TakeCommitted during the persist of A: %v", ents)
	}
	persist(1, rdA) // A durable on the leader and replica 2: committed
	rd := l.Ready()
	if n := len(rd.CommittedEntries); n == 0 || rd.CommittedEntries[n-1].Index != idxA {
		t.Fatalf("after Advance: committed entries %v, want up to %d", rd.CommittedEntries, idxA)
	}
	persist(1, rd)
	followers()

	// B is durable on the leader but not committed when C's Ready is
	// taken; the followers' acks of B arrive while C is being persisted.
	if err := l.Propose(raftpb.Entry{Data: []byte("b")}); err != nil {
		t.Fatal(err)
	}
	rdB := l.Ready()
	idxB := rdB.Entries[len(rdB.Entries)-1].Index
	persist(1, rdB)
	acksB := followers()
	if err := l.Propose(raftpb.Entry{Data: []byte("c")}); err != nil {
		t.Fatal(err)
	}
	rdC := l.Ready()
	if len(rdC.CommittedEntries) != 0 {
		t.Fatalf("C's Ready commits %v before B's acks", rdC.CommittedEntries)
	}
	for _, id := range []raftpb.ReplicaID{2, 3} {
		if err := l.Step(ackFrom(acksB, id, idxB)); err != nil {
			t.Fatal(err)
		}
	}
	taken := l.TakeCommitted()
	if len(taken) != 1 || taken[0].Index != idxB || string(taken[0].Data) != "b" {
		t.Fatalf("TakeCommitted during the persist of C: %v, want B at %d", taken, idxB)
	}
	if again := l.TakeCommitted(); len(again) != 0 {
		t.Fatalf("TakeCommitted twice: %v", again)
	}
	nw.applied[1] = append(nw.applied[1], taken...)
	persist(1, rdC)
	if got := l.BasicStatus().Applied; got != idxB {
		t.Fatalf("applied %d after Advance, want %d (B taken)", got, idxB)
	}
	nw.stabilize()
	var data []string
	for _, e := range nw.applied[1] {
		if e.Type == raftpb.EntryNormal && len(e.Data) > 0 {
			data = append(data, string(e.Data))
		}
	}
	if len(data) != 3 || data[0] != "a" || data[1] != "b" || data[2] != "c" {
		t.Fatalf("leader applied %q, want a, b, c once each in order", data)
	}
}
