package engine

import (
	"context"
	"fmt"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/skiffdb/skiff/raftpb"
	"github.com/skiffdb/skiff/statemachine"
)

// ctxRestoreKV is kv whose Restore honours its context the way the
// statemachine contract invites ("ctx is canceled when the host stops"):
// the first Restore waits for ctx to end and returns its error.
type ctxRestoreKV struct {
	*kv
	entered chan struct{}
	first   bool
}

func (s *ctxRestoreKV) Restore(ctx context.Context, r io.Reader, files []statemachine.SnapshotFile) error {
	if s.first {
		s.first = false
		close(s.entered)
		<-ctx.Done()
		return ctx.Err()
	}
	return s.kv.Restore(ctx, r, files)
}

// TestReviewCancelTransferDuringRestore: CancelSnapshotTransfers while
// the fetched snapshot is being restored cancels the context handed to
// StateMachine.Restore; the rsm records the canceled restore as a fatal
// state machine error, and the replica never installs a snapshot again.
func TestReviewCancelTransferDuringRestore(t *testing.T) {
	reviewBug(t, "a restore that fails after the fetch published the snapshot (here: CancelSnapshotTransfers, api.go:281, "+
		"cancels the install ctx that execSM.Restore, snap.go:238, hands to StateMachine.Restore) leaves the replica "+
		"stuck: every retry's fetch fails 'stale snapshot: snapshot 100, latest is 100' (the store refuses to re-create "+
		"the index it already published, and the executor never loads it), until the leader snapshots past it; and "+
		"rsm.Restore records the canceled restore as fatal (rsm/snapshot.go:302), so a retry could not load it anyway")
	trs, members := tcpTransports(t, 3)
	gc := func(i int) GroupConfig {
		return GroupConfig{Group: 1, Replica: raftpb.ReplicaID(i + 1), Members: members, PreVote: true,
			CheckQuorum: true, SnapshotEntries: 50, CompactionOverhead: 5}
	}
	var es []*Engine
	failures := &lastFailure{}
	for i := 0; i < 3; i++ {
		cfg := Config{Dir: "h", FS: vfs.NewMem(), Transport: trs[i], TickInterval: 10 * time.Millisecond}
		if i == 2 {
			cfg.Listener = failures
		}
		e, err := Open(cfg)
		if err != nil {
			t.Fatal(err)
		}
		defer e.Close()
		es = append(es, e)
	}
	for i := 0; i < 2; i++ {
		if err := es[i].StartGroup(context.Background(), gc(i), newKV); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for i := 0; i < 120; i++ {
		if _, err := es[i%2].Propose(ctx, 1, []byte(fmt.Sprintf("k%d=v%d", i, i))); err != nil {
			t.Fatalf("propose %d: %v", i, err)
		}
	}
	sm := &ctxRestoreKV{kv: newKV(0, 0).(*kv), entered: make(chan struct{}), first: true}
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
	// The leader offers the snapshot again: replica 3 must catch up.
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
