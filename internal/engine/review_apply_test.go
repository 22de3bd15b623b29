package engine

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/skiffdb/skiff/statemachine"
)

// trackKV is kv that can hold the apply worker (Lookup of "block" waits
// for unblock) and counts captures and their releases.
type trackKV struct {
	*kv
	entered, unblock chan struct{}
	snaps, releases  atomic.Int32
}

func newTrackKV() *trackKV {
	return &trackKV{kv: newKV(0, 0).(*kv), entered: make(chan struct{}), unblock: make(chan struct{})}
}

func (s *trackKV) Lookup(q []byte) ([]byte, error) {
	if string(q) == "block" {
		close(s.entered)
		<-s.unblock
		return nil, nil
	}
	return s.kv.Lookup(q)
}

func (s *trackKV) Snapshot() (statemachine.Snapshot, error) {
	sn, err := s.kv.Snapshot()
	if err != nil {
		return nil, err
	}
	s.snaps.Add(1)
	return trackSnap{kvSnap: sn.(kvSnap), t: s}, nil
}

type trackSnap struct {
	kvSnap
	t *trackKV
}

func (s trackSnap) Release() { s.t.releases.Add(1) }

// startBlocked starts group 1 on a single host with sm, applies one entry
// and holds the apply worker in a StaleRead until sm.unblock is closed.
func startBlocked(t *testing.T, sm *trackKV) (*Engine, <-chan error) {
	t.Helper()
	trs, members := tcpTransports(t, 1)
	e, err := Open(Config{Dir: "h", FS: vfs.NewMem(), Transport: trs[0], TickInterval: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	create := func(uint64, uint64) statemachine.StateMachine { return sm }
	if err := e.StartGroup(context.Background(), GroupConfig{Group: 1, Replica: 1, Members: members}, create); err != nil {
		e.Close()
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := e.Propose(ctx, 1, []byte("a=1")); err != nil {
		e.Close()
		t.Fatal(err)
	}
	staleDone := make(chan error, 1)
	go func() {
		_, err := e.StaleRead(context.Background(), 1, []byte("block"))
		staleDone <- err
	}()
	<-sm.entered
	return e, staleDone
}

// TestReviewRequestSnapshotIgnoresContext: RequestSnapshot returns when
// its context ends, even while the capture waits for a busy apply worker
// (found by review: the wait used the node's context).
func TestReviewRequestSnapshotIgnoresContext(t *testing.T) {
	sm := newTrackKV()
	e, staleDone := startBlocked(t, sm)
	defer e.Close()
	short, cancelShort := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancelShort()
	done := make(chan error, 1)
	go func() {
		_, err := e.RequestSnapshot(short, 1, SnapshotOption{})
		done <- err
	}()
	var err error
	select {
	case err = <-done:
	case <-time.After(2 * time.Second):
		close(sm.unblock)
		<-staleDone
		<-done
		t.Fatalf("RequestSnapshot still blocked 2s after its 50ms context ended")
	}
	close(sm.unblock)
	<-staleDone
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("RequestSnapshot: %v, want the context's error", err)
	}
}

// TestReviewCaptureLeakedByStopGroup: a capture queued on a busy apply
// worker when the group stops is either not taken or released (found by
// review: onApply returned on n.ctx but left the task queued, and the
// statemachine.Snapshot it created was never Released).
func TestReviewCaptureLeakedByStopGroup(t *testing.T) {
	sm := newTrackKV()
	e, staleDone := startBlocked(t, sm)
	defer e.Close()
	req := make(chan error, 1)
	go func() {
		_, err := e.RequestSnapshot(context.Background(), 1, SnapshotOption{})
		req <- err
	}()
	n, err := e.node(1)
	if err != nil {
		t.Fatal(err)
	}
	// Wait until the capture is queued behind the blocked StaleRead.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	waitFor(ctx, t, "capture queued", func() bool {
		n.amu.Lock()
		defer n.amu.Unlock()
		return len(n.atasks) > 0
	})
	stopped := make(chan error, 1)
	go func() { stopped <- e.StopGroup(1) }()
	if err := <-req; err == nil {
		t.Fatalf("RequestSnapshot succeeded on a stopping group")
	}
	close(sm.unblock)
	<-staleDone
	if err := <-stopped; err != nil {
		t.Fatal(err)
	}
	if s, r := sm.snaps.Load(), sm.releases.Load(); s != r {
		t.Fatalf("state machine captures: %d taken, %d released", s, r)
	}
}
