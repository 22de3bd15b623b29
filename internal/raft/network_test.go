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
