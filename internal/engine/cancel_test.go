package engine

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/skiffdb/skiff/raftpb"
	"github.com/skiffdb/skiff/transport"
)

type eventLog struct {
	mu     sync.Mutex
	events []Event
}

func (l *eventLog) OnEvent(e Event) {
	l.mu.Lock()
	l.events = append(l.events, e)
	l.mu.Unlock()
}

func (l *eventLog) count(k EventKind) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, e := range l.events {
		if e.Kind == k {
			n++
		}
	}
	return n
}

// TestCancelAndThrottleTransfer: a throttled catch-up shows up in the
// status, can be canceled, and completes once the limit is raised at
// runtime.
func TestCancelAndThrottleTransfer(t *testing.T) {
	trs, members := tcpTransports(t, 3)
	logs := make([]*eventLog, 3)
	es := make([]*Engine, 3)
	open := func(i int, tr transport.Transport) {
		logs[i] = &eventLog{}
		e, err := Open(Config{Dir: "h", FS: vfs.NewMem(), Transport: tr, TickInterval: 10 * time.Millisecond,
			Listener: logs[i], Snapshot: SnapshotLimits{SendBytesPerSec: 64 << 10}})
		if err != nil {
			t.Fatal(err)
		}
		es[i] = e
		if err := e.StartGroup(context.Background(), GroupConfig{Group: 1, Replica: raftpb.ReplicaID(i + 1),
			Members: members, PreVote: true, CheckQuorum: true, SnapshotEntries: 100, CompactionOverhead: 5}, newKV); err != nil {
			t.Fatal(err)
		}
	}
	for i := range es {
		open(i, trs[i])
	}
	defer func() {
		for _, e := range es {
			e.Close()
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	addr3 := trs[2].Addr()
	es[2].Close()
	val := strings.Repeat("x", 4<<10)
	for i := 0; i < 300; i++ {
		if _, err := es[i%2].Propose(ctx, 1, []byte(fmt.Sprintf("k%d=%s", i, val))); err != nil {
			t.Fatal(err)
		}
	}
	tr := listenTCP(t, addr3)
	open(2, tr)
	// The transfer (≈1.2 MiB at 64 KiB/s) is visible while it runs.
	for {
		st, _ := es[2].GroupStatus(1)
		if len(st.Transfers) > 0 {
			break
		}
		if ctx.Err() != nil {
			st, _ := es[2].GroupStatus(1)
			st0, _ := es[0].GroupStatus(1)
			t.Fatalf("no transfer in progress seen: %+v\n%+v\n%+v", st, st0, logs[0].events)
		}
		<-time.After(5 * time.Millisecond)
	}
	if err := es[2].CancelSnapshotTransfers(ctx, 1, 0); err != nil {
		t.Fatal(err)
	}
	for logs[2].count(SnapshotFailed) == 0 {
		if ctx.Err() != nil {
			t.Fatal("canceled install not reported")
		}
		<-time.After(5 * time.Millisecond)
	}
	for _, e := range es {
		e.SetSnapshotLimits(SnapshotLimits{})
	}
	waitValue(ctx, t, es[2], "k299", val)
	if n := logs[2].count(SnapshotInstalled); n != 1 {
		t.Fatalf("%d installs, want 1", n)
	}
}
