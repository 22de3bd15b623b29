package raft

import (
	"fmt"
	"runtime"
	"testing"

	"github.com/skiffdb/skiff/raftpb"
)

// BenchmarkPropose measures entries per second through the core alone:
// Propose on the leader of a 3-replica group, then Ready → persist to a
// MemoryLog → deliver messages in-process → Advance on every replica until
// the batch is committed and applied everywhere. There is no I/O, so this
// is the cost of the protocol core (plus MemoryLog), which must never be a
// host's bottleneck. It reports entries/s, ns/entry and allocs/entry; in
// steady state the allocations are per Ready and per message, not per
// entry, so batching amortizes them towards zero.
func BenchmarkPropose(b *testing.B) {
	for _, size := range []int{16, 1024} {
		for _, batch := range []int{1, 64} {
			b.Run(fmt.Sprintf("size=%d/batch=%d", size, batch), func(b *testing.B) {
				benchmarkPropose(b, size, batch)
			})
		}
	}
}

func benchmarkPropose(b *testing.B, size, batch int) {
	bn := newBenchNet(b, 3)
	data := make([]byte, size)
	ents := make([]raftpb.Entry, batch)
	for i := range ents {
		ents[i].Data = data
	}
	leader := bn.nodes[0]
	// Warm up: fill the pipeline's buffers and the logs' arrays.
	for range 1000 {
		bn.propose(b, leader, ents)
	}
	b.SetBytes(int64(size * batch))
	b.ReportAllocs()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	b.ResetTimer()
	for b.Loop() {
		bn.propose(b, leader, ents)
	}
	b.StopTimer()
	runtime.ReadMemStats(&after)
	n := float64(b.N * batch)
	b.ReportMetric(n/b.Elapsed().Seconds(), "entries/s")
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/n, "ns/entry")
	b.ReportMetric(float64(after.Mallocs-before.Mallocs)/n, "allocs/entry")
	if got := bn.applied[2]; got < uint64(b.N*batch) {
		b.Fatalf("replica 3 applied %d entries, want >= %d", got, b.N*batch)
	}
}

// benchNet is a 3-replica group in one goroutine, with reused buffers so
// that the driver itself allocates as little as possible.
type benchNet struct {
	nodes   []*Replica
	logs    []*MemoryLog
	applied []uint64 // normal entries applied, per replica
	queue   []raftpb.Message
	spare   []raftpb.Message
}

// benchCompactEvery: replicas snapshot and compact their MemoryLog this
// often (in entries), so memory stays bounded over a long run.
const benchCompactEvery = 1 << 12

func newBenchNet(b *testing.B, n int) *benchNet {
	b.Helper()
	var members []raftpb.Member
	for i := 1; i <= n; i++ {
		members = append(members, raftpb.Member{ID: raftpb.ReplicaID(i)})
	}
	bn := &benchNet{applied: make([]uint64, n)}
	for i := 1; i <= n; i++ {
		ml := NewMemoryLog()
		if err := ml.ApplySnapshot(raftpb.SnapshotMeta{Index: 1, Term: 1, Membership: raftpb.Membership{Voters: members}}); err != nil {
			b.Fatal(err)
		}
		ml.SetHardState(raftpb.HardState{Term: 1, Commit: 1})
		r, err := New(Config{ID: raftpb.ReplicaID(i), Group: 1, ElectionTicks: 10, HeartbeatTicks: 1}, ml)
		if err != nil {
			b.Fatal(err)
		}
		bn.nodes = append(bn.nodes, r)
		bn.logs = append(bn.logs, ml)
	}
	bn.nodes[0].Campaign()
	bn.stabilize(b)
	if bn.nodes[0].role != Leader {
		b.Fatalf("replica 1 is %s, want leader", bn.nodes[0].role)
	}
	return bn
}

func (bn *benchNet) propose(b *testing.B, leader *Replica, ents []raftpb.Entry) {
	if err := leader.Propose(ents...); err != nil {
		b.Fatal(err)
	}
	bn.stabilize(b)
}

// stabilize handles Readies and delivers messages until nothing moves.
func (bn *benchNet) stabilize(b *testing.B) {
	for {
		for i, r := range bn.nodes {
			for r.HasReady() {
				bn.handleReady(b, i, r)
			}
		}
		if len(bn.queue) == 0 {
			return
		}
		q := bn.queue
		bn.queue = bn.spare[:0]
		for i := range q {
			if err := bn.nodes[q[i].To-1].Step(q[i]); err != nil {
				b.Fatal(err)
			}
			q[i] = raftpb.Message{} // drop references to entries
		}
		bn.spare = q[:0]
	}
}

func (bn *benchNet) handleReady(b *testing.B, i int, r *Replica) {
	rd := r.Ready()
	ml := bn.logs[i]
	if err := ml.Append(rd.Entries); err != nil {
		b.Fatal(err)
	}
	if !rd.HardState.IsEmpty() {
		ml.SetHardState(rd.HardState)
	}
	bn.queue = append(bn.queue, rd.Messages...)
	bn.queue = append(bn.queue, rd.MessagesAfterPersist...)
	for j := range rd.CommittedEntries {
		if rd.CommittedEntries[j].Type == raftpb.EntryNormal {
			bn.applied[i]++
		}
	}
	r.Advance(rd)
	if n := len(rd.CommittedEntries); n > 0 {
		if applied := rd.CommittedEntries[n-1].Index; applied >= ml.SnapshotMeta().Index+benchCompactEvery {
			if _, err := ml.CreateSnapshot(applied, r.membership); err != nil {
				b.Fatal(err)
			}
			if err := ml.Compact(applied); err != nil {
				b.Fatal(err)
			}
		}
	}
}
