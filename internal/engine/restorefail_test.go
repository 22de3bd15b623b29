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
	es, gc, ctx := twoOfThreeWritten(t, 80, func(c *GroupConfig) { c.SnapshotEntries, c.CompactionOverhead = 30, 2 }, nil)
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

// twoOfThreeWritten opens three engines over loopback TCP (host 3's
// config adjusted by host3, when given), starts group 1 on the first two
// with tweak applied to every replica's config, and writes n entries: the
// third replica, started by the test, must catch up by snapshot. It
// returns the engines, the group config of replica i+1 and a context for
// the rest of the test.
func twoOfThreeWritten(t *testing.T, n int, tweak func(*GroupConfig), host3 func(*Config)) ([]*Engine, func(int) GroupConfig, context.Context) {
	t.Helper()
	trs, members := tcpTransports(t, 3)
	gc := func(i int) GroupConfig {
		c := GroupConfig{Group: 1, Replica: raftpb.ReplicaID(i + 1), Members: members, PreVote: true, CheckQuorum: true}
		tweak(&c)
		return c
	}
	var es []*Engine
	for i := 0; i < 3; i++ {
		cfg := Config{Dir: "h", FS: vfs.NewMem(), Transport: trs[i], TickInterval: 10 * time.Millisecond}
		if i == 2 && host3 != nil {
			host3(&cfg)
		}
		e, err := Open(cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { e.Close() })
		es = append(es, e)
	}
	for i := 0; i < 2; i++ {
		if err := es[i].StartGroup(context.Background(), gc(i), newKV); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	for i := 0; i < n; i++ {
		if _, err := es[i%2].Propose(ctx, 1, []byte(fmt.Sprintf("k%d=v%d", i, i))); err != nil {
			t.Fatalf("propose %d: %v", i, err)
		}
	}
	return es, gc, ctx
}
