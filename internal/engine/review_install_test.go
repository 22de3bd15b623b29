package engine

import (
	"context"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/skiffdb/skiff/statemachine"
)

// ctxRestoreKV is kv whose first Restore waits until the test releases
// it, or until its context ends (the host stopping).
type ctxRestoreKV struct {
	*kv
	entered chan struct{}
	release chan struct{}
	first   bool
}

func (s *ctxRestoreKV) Restore(ctx context.Context, r io.Reader, files []statemachine.SnapshotFile) error {
	if s.first {
		s.first = false
		close(s.entered)
		select {
		case <-s.release:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return s.kv.Restore(ctx, r, files)
}

// TestReviewCancelTransferDuringRestore: CancelSnapshotTransfers while
// the fetched snapshot is being restored does not interrupt the restore
// (a state machine cut off mid-restore is broken, which rsm makes fatal):
// the load runs to the end and the replica catches up with one install.
// (Found by review: the cancel used to reach StateMachine.Restore, the
// replica failed, and every retry's fetch was refused as stale because the
// snapshot was already published; now a published snapshot is reloaded.)
func TestReviewCancelTransferDuringRestore(t *testing.T) {
	failures := &lastFailure{}
	es, gc, ctx := twoOfThreeWritten(t, 120, func(c *GroupConfig) { c.SnapshotEntries, c.CompactionOverhead = 50, 5 },
		func(c *Config) { c.Listener = failures })
	sm := &ctxRestoreKV{kv: newKV(0, 0).(*kv), entered: make(chan struct{}), release: make(chan struct{}), first: true}
	if err := es[2].StartGroup(ctx, gc(2), func(uint64, uint64) statemachine.StateMachine { return sm }); err != nil {
		t.Fatal(err)
	}
	select {
	case <-sm.entered:
	case <-ctx.Done():
		t.Fatal("replica 3 never restored a snapshot")
	}
	if err := es[2].CancelSnapshotTransfers(ctx, 1, 0); err != nil {
		t.Fatal(err)
	}
	close(sm.release)
	// The restore finishes: replica 3 catches up.
	catchUp, cancelCatchUp := context.WithTimeout(ctx, 3*time.Second)
	defer cancelCatchUp()
	tk := time.NewTicker(10 * time.Millisecond)
	defer tk.Stop()
	for {
		v, err := es[2].StaleRead(catchUp, 1, []byte("k119"))
		if err == nil && string(v) == "v119" {
			return
		}
		select {
		case <-catchUp.Done():
			st, _ := es[2].GroupStatus(1)
			t.Fatalf("replica 3 did not catch up after a canceled restore: applied %d, failed %v, read %q %v; last install failure: %v",
				st.Applied, st.Failed, v, err, failures.get())
		case <-tk.C:
		}
	}
}

// lastFailure records the last SnapshotFailed event's error.
type lastFailure struct {
	mu  sync.Mutex
	err error
}

func (l *lastFailure) OnEvent(ev Event) {
	if ev.Kind == SnapshotFailed {
		l.mu.Lock()
		l.err = ev.Err
		l.mu.Unlock()
	}
}

func (l *lastFailure) get() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.err
}
