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
	"github.com/skiffdb/skiff/transport"
)

// disk is what an on-disk state machine keeps across restarts.
type disk struct {
	mu       sync.Mutex
	kv       *kv
	applied  uint64
	restores int
}

// diskKV is an OnDisk state machine over a disk that survives restarts
// (every Apply is durable at once).
type diskKV struct{ d *disk }

func (s diskKV) Open(context.Context) (uint64, error) {
	s.d.mu.Lock()
	defer s.d.mu.Unlock()
	return s.d.applied, nil
}
func (s diskKV) Sync() error { return nil }
func (s diskKV) Apply(ents []statemachine.Entry) error {
	if err := s.d.kv.Apply(ents); err != nil {
		return err
	}
	s.d.mu.Lock()
	s.d.applied = ents[len(ents)-1].Index
	s.d.mu.Unlock()
	return nil
}
func (s diskKV) Lookup(q []byte) ([]byte, error)          { return s.d.kv.Lookup(q) }
func (s diskKV) Snapshot() (statemachine.Snapshot, error) { return s.d.kv.Snapshot() }
func (s diskKV) Restore(ctx context.Context, r io.Reader, f []statemachine.SnapshotFile) error {
	s.d.mu.Lock()
	s.d.restores++
	s.d.mu.Unlock()
	return s.d.kv.Restore(ctx, r, f)
}
func (s diskKV) Close() error { return nil }

func TestOnDiskCatchUpAndRestart(t *testing.T) {
	trs, members := tcpTransports(t, 3)
	disks := make([]*disk, 3)
	fss := make([]vfs.FS, 3)
	for i := 0; i < 3; i++ {
		disks[i] = &disk{kv: &kv{data: map[string]string{}}}
		fss[i] = vfs.NewMem()
	}
	gc := func(i int) GroupConfig {
		return GroupConfig{Group: 1, Replica: raftpb.ReplicaID(i + 1), Members: members, PreVote: true,
			CheckQuorum: true, SnapshotEntries: 40, CompactionOverhead: 5}
	}
	create := func(i int) statemachine.CreateFunc {
		return func(uint64, uint64) statemachine.StateMachine { return diskKV{disks[i]} }
	}
	open := func(i int, tr transport.Transport) *Engine {
		e, err := Open(Config{Dir: "host", FS: fss[i], Transport: tr, TickInterval: 10 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		if err := e.StartGroup(context.Background(), gc(i), create(i)); err != nil {
			t.Fatal(err)
		}
		return e
	}
	es := make([]*Engine, 3)
	for i := range es {
		es[i] = open(i, trs[i])
	}
	defer func() {
		for _, e := range es {
			e.Close()
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	addr3 := trs[2].Addr()
	es[2].Close()
	for i := 0; i < 200; i++ {
		if _, err := es[i%2].Propose(ctx, 1, []byte(fmt.Sprintf("k%d=v%d", i, i))); err != nil {
			t.Fatalf("propose %d: %v", i, err)
		}
	}
	st, _ := es[0].GroupStatus(1)
	if st.FirstIndex <= 1 {
		t.Fatalf("log not compacted: %+v", st)
	}
	if len(st.Snapshot.Files) != 1 || st.Snapshot.Files[0].Size > 200 {
		t.Fatalf("periodic snapshot of an on-disk state machine carries data: %+v", st.Snapshot.Files)
	}
	// Replica 3 returns with a new disk: it needs a full data snapshot,
	// generated on demand by the leader.
	disks[2] = &disk{kv: &kv{data: map[string]string{}}}
	fss[2] = vfs.NewMem()
	tr := listenTCP(t, addr3)
	es[2] = open(2, tr)
	waitValue(ctx, t, es[2], "k199", "v199")
	if disks[2].restores != 1 {
		t.Fatalf("replica 3 restored %d times, want 1", disks[2].restores)
	}
	// A restart of a current on-disk state machine restores nothing.
	for i := 200; i < 260; i++ {
		if _, err := es[i%2].Propose(ctx, 1, []byte(fmt.Sprintf("k%d=v%d", i, i))); err != nil {
			t.Fatalf("propose %d: %v", i, err)
		}
	}
	waitValue(ctx, t, es[2], "k259", "v259")
	for i := 0; i < 3; i++ {
		es[i].Close()
	}
	before := []int{disks[0].restores, disks[1].restores, disks[2].restores}
	for i := 0; i < 3; i++ {
		tr := listenTCP(t, members[raftpb.ReplicaID(i+1)])
		es[i] = open(i, tr)
	}
	for i := 0; i < 3; i++ {
		if disks[i].restores != before[i] {
			t.Fatalf("replica %d restored at restart although current", i+1)
		}
	}
	if _, err := es[0].Propose(ctx, 1, []byte("after=restart")); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		waitValue(ctx, t, es[i], "after", "restart")
		waitValue(ctx, t, es[i], "k259", "v259")
	}
}

func waitValue(ctx context.Context, t *testing.T, e *Engine, key, want string) {
	t.Helper()
	for {
		v, err := e.Read(ctx, 1, []byte(key))
		if err == nil && string(v) == want {
			return
		}
		if ctx.Err() != nil {
			st, _ := e.GroupStatus(1)
			t.Fatalf("read %s: %q %v, want %q; status %+v", key, v, err, want, st)
		}
	}
}
