package engine

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/skiffdb/skiff/raftpb"
)

// TestReviewRestartAfterCompaction: a single replica takes a snapshot and
// compacts its log up to the applied index, then the host restarts. The
// commit index is persisted lazily (a commit-only HardState is held in
// node.unsyncedHS for the next synced write) and the snapshot's
// SaveBatch{Snapshot} does not raise it, so the stored commit can be
// below the compaction point; the host must restart anyway (found by
// review: raft.New refused the log; a snapshot's index now counts as
// committed).
func TestReviewRestartAfterCompaction(t *testing.T) {
	fs := vfs.NewMem()
	tr := listenTCP(t, "127.0.0.1:0")
	addr := tr.Addr()
	members := map[raftpb.ReplicaID]string{1: addr}
	gc := GroupConfig{Group: 1, Replica: 1, Members: members}
	e, err := Open(Config{Dir: "h", FS: fs, Transport: tr, TickInterval: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.StartGroup(context.Background(), gc, newKV); err != nil {
		e.Close()
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for i := 0; i < 30; i++ {
		if _, err := e.Propose(ctx, 1, []byte(fmt.Sprintf("k%d=v", i))); err != nil {
			e.Close()
			t.Fatal(err)
		}
	}
	// An explicit snapshot at the last applied index, compacted with no
	// overhead (what a periodic one does with CompactionOverhead 0).
	idx, err := e.RequestSnapshot(ctx, 1, SnapshotOption{OverrideCompactionOverhead: true})
	if err != nil {
		e.Close()
		t.Fatal(err)
	}
	st, _ := e.GroupStatus(1)
	n, _ := e.node(1)
	hs, _, _ := n.glog.InitialState()
	first, _ := n.glog.FirstIndex()
	t.Logf("snapshot %d, commit %d, stored commit %d, first index %d", idx, st.Commit, hs.Commit, first)
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	e, err = Open(Config{Dir: "h", FS: fs, Transport: listenTCP(t, addr), TickInterval: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	if err := e.StartGroup(ctx, gc, newKV); err != nil {
		t.Fatalf("restart after snapshot %d: %v", idx, err)
	}
	v, err := e.Read(ctx, 1, []byte("k29"))
	if err != nil || string(v) != "v" {
		t.Fatalf("read after restart: %q %v", v, err)
	}
}
