package engine

import (
	"context"
	"errors"
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/skiffdb/skiff/raftpb"
	"github.com/skiffdb/skiff/statemachine"
)

// failingRestoreKV fails every Restore after reading part of the stream:
// its state is then neither the old nor the new one.
type failingRestoreKV struct{ *kv }

func (s failingRestoreKV) Restore(_ context.Context, r io.Reader, _ []statemachine.SnapshotFile) error {
	s.kv.mu.Lock()
	s.kv.data = map[string]string{"half": "restored"}
	s.kv.mu.Unlock()
	return errors.New("disk on fire")
}

// TestFailedRestoreFailsTheGroupAtOnce: a replica whose state machine
// fails to restore an installed snapshot stops at once, and no read is
// served from the half-restored state machine.
func TestFailedRestoreFailsTheGroupAtOnce(t *testing.T) {
	trs, members := tcpTransports(t, 3)
	gc := func(i int) GroupConfig {
		return GroupConfig{Group: 1, Replica: raftpb.ReplicaID(i + 1), Members: members, PreVote: true,
			CheckQuorum: true, SnapshotEntries: 30, CompactionOverhead: 2}
	}
	var es []*Engine
	for i := 0; i < 3; i++ {
		e, err := Open(Config{Dir: "h", FS: vfs.NewMem(), Transport: trs[i], TickInterval: 10 * time.Millisecond})
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
	for i := 0; i < 80; i++ {
		if _, err := es[i%2].Propose(ctx, 1, []byte(fmt.Sprintf("k%d=v", i))); err != nil {
			t.Fatal(err)
		}
	}
	bad := failingRestoreKV{newKV(0, 0).(*kv)}
	if err := es[2].StartGroup(ctx, gc(2), func(uint64, uint64) statemachine.StateMachine { return bad }); err != nil {
		t.Fatal(err)
	}
	for {
		st, err := es[2].GroupStatus(1)
		if err == nil && st.Failed != nil {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("the replica did not fail: %+v %v", st, err)
		}
		<-time.After(5 * time.Millisecond)
	}
	if v, err := es[2].StaleRead(ctx, 1, []byte("half")); !errors.Is(err, ErrGroupFailed) {
		t.Fatalf("stale read from a failed restore: %q %v, want ErrGroupFailed", v, err)
	}
}
