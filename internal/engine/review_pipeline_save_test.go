package engine

import (
	"context"
	"errors"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/skiffdb/skiff/raftpb"
)

// Review of the pass whose SaveBatch runs on the saver goroutine while the
// step worker steps what arrives: the save's failure path, and Close and
// StopGroup while a save is in flight.

var errInjectedSync = errors.New("review: injected fsync failure")

// faultFS is gatedFS whose held syncs fail once fail is set.
type faultFS struct {
	vfs.FS
	g    *syncGate
	fail *atomic.Bool
}

func (fs faultFS) Create(name string, c vfs.DiskWriteCategory) (vfs.File, error) {
	f, err := fs.FS.Create(name, c)
	if err != nil {
		return nil, err
	}
	return faultFile{File: f, fs: fs}, nil
}

func (fs faultFS) OpenReadWrite(name string, c vfs.DiskWriteCategory, opts ...vfs.OpenOption) (vfs.File, error) {
	f, err := fs.FS.OpenReadWrite(name, c, opts...)
	if err != nil {
		return nil, err
	}
	return faultFile{File: f, fs: fs}, nil
}

type faultFile struct {
	vfs.File
	fs faultFS
}

func (f faultFile) Sync() error {
	f.fs.g.wait()
	if f.fs.fail.Load() {
		return errInjectedSync
	}
	return f.File.Sync()
}

func (f faultFile) SyncData() error {
	f.fs.g.wait()
	if f.fs.fail.Load() {
		return errInjectedSync
	}
	return f.File.SyncData()
}

func (f faultFile) SyncTo(length int64) (bool, error) {
	f.fs.g.wait()
	if f.fs.fail.Load() {
		return false, errInjectedSync
	}
	return f.File.SyncTo(length)
}

// faultCluster is gatedCluster with failable syncs.
type faultCluster struct {
	gatedCluster
	fails []*atomic.Bool
}

func newFaultCluster(t *testing.T) *faultCluster {
	t.Helper()
	trs, members := tcpTransports(t, 3)
	c := &faultCluster{}
	for i := 0; i < 3; i++ {
		g, fail := newSyncGate(), new(atomic.Bool)
		at := &ackTransport{TCP: trs[i]}
		e, err := Open(Config{Dir: "h", FS: faultFS{FS: vfs.NewMem(), g: g, fail: fail}, Transport: at,
			TickInterval: 10 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		c.es, c.gates, c.acks, c.fails = append(c.es, e), append(c.gates, g), append(c.acks, at), append(c.fails, fail)
		if err := e.StartGroup(context.Background(), GroupConfig{Group: 1, Replica: raftpb.ReplicaID(i + 1),
			Members: members, PreVote: true, CheckQuorum: true}, newKV); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		for _, g := range c.gates {
			g.disarm()
		}
		for _, e := range c.es {
			e.Close()
		}
	})
	return c
}

// saverGoroutines counts the saver goroutines alive.
func saverGoroutines() int {
	buf := make([]byte, 1<<20)
	return strings.Count(string(buf[:runtime.Stack(buf, true)]), "(*stepWorker).saver")
}

// TestReviewPipelineSaveFailsWithAcksSteppedDuringIt: the leader's save
// fails (ErrStorageFailed) while acknowledgements of an earlier, durable
// entry are stepped during it. The earlier entry still completes (it was
// durable and committed), the entry being saved fails its proposer with
// the group's failure rather than hanging, the other two hosts elect a
// leader and go on, and Close ends every saver goroutine.
func TestReviewPipelineSaveFailsWithAcksSteppedDuringIt(t *testing.T) {
	base := saverGoroutines() // engines other tests left open
	c := newFaultCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	lead, fs, last := c.settle(ctx, t)
	le := c.es[lead]
	a, b := c.ackDuringHeldSave(ctx, t, lead, fs, last)
	done(ctx, t, a, "A (durable, committed during B's save)")

	c.fails[lead].Store(true)
	c.gates[lead].disarm()
	select {
	case err := <-b:
		if err == nil {
			t.Fatal("B succeeded on a leader whose save of it failed")
		}
		if !errors.Is(err, ErrGroupFailed) && !errors.Is(err, ErrStorageFailed) {
			t.Fatalf("B failed with %v, want the group's storage failure", err)
		}
	case <-ctx.Done():
		t.Fatalf("B's proposer still waits after the save failed: %v", ctx.Err())
	}
	if st, err := le.GroupStatus(1); err == nil && !errors.Is(st.Failed, ErrStorageFailed) {
		t.Fatalf("the leader's group after its save failed: Failed = %v, want ErrStorageFailed", st.Failed)
	}
	for _, f := range fs {
		c.acks[f].stopHolding()
	}
	// The two healthy hosts go on without the failed one.
	other := c.es[fs[0]]
	waitFor(ctx, t, "a new leader among the healthy hosts", func() bool {
		st, err := other.GroupStatus(1)
		return err == nil && st.Leader != 0 && st.Leader != raftpb.ReplicaID(lead+1)
	})
	pctx, pcancel := context.WithTimeout(ctx, 15*time.Second)
	defer pcancel()
	for {
		_, err := other.Propose(pctx, 1, []byte("c=3"))
		if err == nil {
			break
		}
		if pctx.Err() != nil {
			t.Fatalf("the healthy hosts accept no write after the leader's storage failed: %v", err)
		}
	}
	if saverGoroutines() <= base {
		t.Fatal("no saver goroutine found: the leak check would prove nothing")
	}
	for _, e := range c.es {
		if err := e.Close(); err != nil && !errors.Is(err, ErrStorageFailed) {
			t.Logf("close: %v", err)
		}
	}
	waitFor(ctx, t, "every saver goroutine ends after Close", func() bool { return saverGoroutines() <= base })
}

// TestReviewPipelineCloseDuringHeldSave: Close while the leader's save is
// held waits for the save, then returns, and no saver goroutine is left.
func TestReviewPipelineCloseDuringHeldSave(t *testing.T) {
	base := saverGoroutines()
	c := newGatedCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	lead, _, _ := c.settle(ctx, t)
	le := c.es[lead]
	c.gates[lead].arm()
	p := proposeAsync(ctx, le, "k=v")
	c.gates[lead].awaitBlocked(ctx, t, "the leader's save")
	closed := make(chan error, 1)
	go func() { closed <- le.Close() }()
	// The proposer is released by Close (the group stops) even though the
	// save is still held.
	select {
	case err := <-p:
		if err == nil {
			t.Log("proposal completed before Close stopped the group")
		}
	case <-ctx.Done():
		t.Fatalf("proposer not released by Close during a held save: %v", ctx.Err())
	}
	c.gates[lead].disarm()
	select {
	case err := <-closed:
		if err != nil {
			t.Fatalf("Close: %v", err)
		}
	case <-ctx.Done():
		t.Fatalf("Close did not return after the held save was released: %v", ctx.Err())
	}
	for i, e := range c.es {
		if i != lead {
			e.Close()
		}
	}
	waitFor(ctx, t, "every saver goroutine ends after Close", func() bool { return saverGoroutines() <= base })
}

// TestReviewPipelineStopGroupDuringHeldSave: StopGroup while the group's
// save is held returns once the save does, the proposer is answered, and
// the group restarted on the same host from its log catches up and takes
// writes (nothing the held save and the messages stepped during it left
// behind is inconsistent).
func TestReviewPipelineStopGroupDuringHeldSave(t *testing.T) {
	c := newGatedCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	lead, fs, _ := c.settle(ctx, t)
	f := fs[0]
	fe := c.es[f]
	c.gates[f].arm()
	p := proposeAsync(ctx, c.es[lead], "x=1")
	c.gates[f].awaitBlocked(ctx, t, "the follower's save")
	done(ctx, t, p, "X (committed by the leader and the other follower)")
	// More appends reach the follower and are stepped during its save.
	q := proposeAsync(ctx, c.es[lead], "y=2")
	done(ctx, t, q, "Y")
	stopped := make(chan error, 1)
	go func() { stopped <- fe.StopGroup(1) }()
	c.gates[f].disarm()
	select {
	case err := <-stopped:
		if err != nil {
			t.Fatalf("StopGroup: %v", err)
		}
	case <-ctx.Done():
		t.Fatalf("StopGroup during a held save did not return: %v", ctx.Err())
	}
	st, _ := c.es[lead].GroupStatus(1)
	members := map[raftpb.ReplicaID]string{}
	for i, e := range c.es {
		members[raftpb.ReplicaID(i+1)] = e.Addr()
	}
	if err := fe.StartGroup(ctx, GroupConfig{Group: 1, Replica: raftpb.ReplicaID(f + 1), Members: members,
		PreVote: true, CheckQuorum: true}, newKV); err != nil {
		t.Fatalf("restart the group stopped during a save: %v", err)
	}
	waitFor(ctx, t, "the restarted replica catches up", func() bool {
		s, err := fe.GroupStatus(1)
		return err == nil && s.Applied >= st.Commit
	})
	if _, err := c.es[lead].Propose(ctx, 1, []byte("z=3")); err != nil {
		t.Fatal(err)
	}
}
