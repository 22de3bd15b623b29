package logdb

import (
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"testing/synctest"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/cockroachdb/pebble/v2/vfs/errorfs"
	"github.com/skiffdb/skiff/raftpb"
)

// syncGate holds every fdatasync of a WAL segment, once armed, until the
// test releases it with the outcome the fsync should have; it also counts
// writes to segments.
type syncGate struct {
	mu      sync.Mutex
	armed   bool
	held    chan struct{} // a SyncData is being held
	release chan error    // its outcome (nil: it goes ahead)
	writes  atomic.Int64
}

func (g *syncGate) String() string { return "sync gate" }

func (g *syncGate) MaybeError(op errorfs.Op) error {
	if !strings.HasSuffix(op.Path, ".wal") {
		return nil
	}
	switch op.Kind {
	case errorfs.OpFileWriteAt:
		g.writes.Add(1)
	case errorfs.OpFileSyncData:
		g.mu.Lock()
		armed := g.armed
		g.mu.Unlock()
		if armed {
			g.held <- struct{}{}
			return <-g.release
		}
	}
	return nil
}

// TestPipelineOrderAndFailure holds the writer inside the fsync of one
// batch while more callers queue, then lets it finish and fails the next
// one, checking at each step what the two-stage commit (write+fsync, then
// apply while the next batch is written) must guarantee:
//   - while a record's fsync runs, no later record is written (one
//     unsynced record: the WAL's recovery rule), nobody is acknowledged,
//     and nothing of it is visible to readers;
//   - once its fsync returns, its caller is acknowledged and reads it,
//     while the next batch — written meanwhile — is neither acknowledged
//     nor visible before its own fsync;
//   - a failed fsync fails every caller in flight (the failed batch and the
//     one queued behind it) with ErrStorageFailed and every later write,
//     and a crash after it keeps everything acknowledged and nothing else.
//
// testing/synctest's Wait makes "every caller is queued or held" exact, with
// no timing.
func TestPipelineOrderAndFailure(t *testing.T) {
	for _, region := range []int{0, 1} {
		name := map[int]string{0: "encode=locked", 1: "encode=region"}[region]
		t.Run(name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				pipelineOrderAndFailure(t, region)
			})
		})
	}
}

func pipelineOrderAndFailure(t *testing.T, regionMin int) {
	mem := vfs.NewCrashableMem()
	gate := &syncGate{held: make(chan struct{}), release: make(chan error)}
	var w0 int64
	db, err := Open(errorfs.Wrap(mem, gate), "db", Options{Logger: quiet, SegmentSize: 64 << 10, prepareInline: true, regionMinBytes: regionMin, splitEncodeBytes: regionMin})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	// A caller saves entry 1 of its groups and, right when SaveBatch
	// returns nil, reads them back: an acknowledged caller must read its
	// own writes (its batch applied before it is woken).
	type result struct {
		err  error
		read []uint64 // LastIndex of each group right after the return
	}
	const span = 64 // groups per caller: a non-leading caller's apply takes a while
	save := func(first raftpb.GroupID) chan result {
		done := make(chan result, 1)
		go func() {
			var us []Update
			for g := first; g < first+span; g++ {
				us = append(us, Update{Group: g, Entries: []raftpb.Entry{{Index: 1, Term: 1, Data: []byte("data")}}})
			}
			err := db.SaveBatch(us)
			var read []uint64
			for g := first; g < first+span && err == nil; g++ {
				i, _ := db.Group(g).LastIndex()
				read = append(read, i)
			}
			done <- result{err, read}
		}()
		return done
	}
	returned := func(done chan result) (result, bool) {
		select {
		case r := <-done:
			return r, true
		default:
			return result{}, false
		}
	}
	mustAck := func(name string, done chan result) {
		t.Helper()
		r, ok := returned(done)
		if !ok || r.err != nil {
			t.Fatalf("caller %s after its fsync: returned %v, err %v", name, ok, r.err)
		}
		for k, i := range r.read {
			if i != 1 {
				t.Fatalf("caller %s: group %d read LastIndex %d right after the acknowledgement, want 1", name, k, i)
			}
		}
	}
	mustWait := func(name string, done chan result) {
		t.Helper()
		if r, ok := returned(done); ok {
			t.Fatalf("caller %s returned (%v) before its batch's fsync did", name, r.err)
		}
	}
	invisible := func(name string, first raftpb.GroupID) {
		t.Helper()
		for g := first; g < first+span; g++ {
			if i, _ := db.Group(g).LastIndex(); i != 0 {
				t.Fatalf("caller %s: group %d LastIndex %d visible before its fsync returned", name, g, i)
			}
		}
	}
	written := func(want int64) {
		t.Helper()
		if n := gate.writes.Load() - w0; n != want {
			t.Fatalf("%d records written, want %d (one unsynced record at a time)", n, want)
		}
	}
	gate.mu.Lock()
	gate.armed = true
	gate.mu.Unlock()
	w0 = gate.writes.Load()

	// Batch 1 (A) is written and held in its fsync; B and C queue behind
	// it.
	a := save(1 * span)
	<-gate.held
	b, c := save(2*span), save(3*span)
	synctest.Wait()
	written(1)
	mustWait("A", a)
	mustWait("B", b)
	mustWait("C", c)
	invisible("A", 1*span)
	invisible("B", 2*span)

	// Batch 1's fsync returns: A is applied and acknowledged while batch 2
	// (B and C, one of them leading) is written and held in its fsync. D
	// queues behind it.
	gate.release <- nil
	<-gate.held
	synctest.Wait()
	mustAck("A", a)
	written(2)
	mustWait("B", b)
	mustWait("C", c)
	invisible("B", 2*span)
	invisible("C", 3*span)
	d := save(4 * span)
	synctest.Wait()
	written(2)
	mustWait("D", d)

	// Batch 2's fsync returns: B and C — the leader and a caller it wakes —
	// read their writes; batch 3 (D) is written and held, E queues.
	gate.release <- nil
	<-gate.held
	synctest.Wait()
	mustAck("B", b)
	mustAck("C", c)
	written(3)
	e := save(5 * span)
	synctest.Wait()
	mustWait("D", d)
	mustWait("E", e)

	// Batch 3's fsync fails: D and E, queued behind it, fail too, and so
	// does every later write.
	gate.release <- syscall.EIO
	synctest.Wait()
	for name, ch := range map[string]chan result{"D": d, "E": e} {
		r, ok := returned(ch)
		if !ok || !errors.Is(r.err, ErrStorageFailed) {
			t.Fatalf("caller %s after the failed fsync: returned %v, err %v", name, ok, r.err)
		}
	}
	if err := db.SaveBatch([]Update{{Group: 1, Entries: []raftpb.Entry{{Index: 1, Term: 1}}}}); !errors.Is(err, ErrStorageFailed) {
		t.Fatalf("write after the failed fsync: %v", err)
	}
	invisible("D", 4*span)
	invisible("E", 5*span)

	// A crash now keeps what was acknowledged and nothing else.
	crashed := mem.CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: 0})
	db2, err := Open(crashed, "db", Options{Logger: quiet, prepareInline: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db2.Close()
	for g := raftpb.GroupID(span); g < 6*span; g++ {
		want := uint64(0)
		if g < 4*span {
			want = 1
		}
		if l, _ := db2.Group(g).LastIndex(); l != want {
			t.Fatalf("after the crash: group %d LastIndex %d, want %d", g, l, want)
		}
	}
}
