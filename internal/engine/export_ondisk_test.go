package engine

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/skiffdb/skiff/internal/logdb"
	"github.com/skiffdb/skiff/raftpb"
	"github.com/skiffdb/skiff/statemachine"
)

// An export must rebuild a replica on its own, so for an on-disk state
// machine it carries the data, although the group's periodic snapshots
// record only metadata. (Exports were metadata-only: importing one failed
// with "snapshot carries no state machine data" — found by skiffctl's
// disaster-recovery run against skiffkv.)
func TestOnDiskExportCarriesData(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	fs := vfs.NewMem()
	trs, members := tcpTransports(t, 1)
	src := &disk{kv: &kv{data: map[string]string{}}}
	e, err := Open(Config{Dir: "old", FS: fs, Transport: trs[0], TickInterval: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	gc := GroupConfig{Group: 1, Replica: 1, Members: members}
	if err := e.StartGroup(ctx, gc, func(uint64, uint64) statemachine.StateMachine { return diskKV{src} }); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 20; i++ {
		if _, err := e.Propose(ctx, 1, []byte(fmt.Sprintf("k%d=v%d", i, i))); err != nil {
			t.Fatal(err)
		}
	}
	st, err := e.GroupStatus(1)
	if err != nil {
		t.Fatal(err)
	}
	if err := fs.MkdirAll("/export", 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := e.RequestSnapshot(ctx, 1, SnapshotOption{Exported: true, ExportPath: "/export"}); err != nil {
		t.Fatal(err)
	}
	dirs, err := fs.List("/export")
	if err != nil || len(dirs) != 1 {
		t.Fatalf("export dir: %v %v", dirs, err)
	}
	// An import into a running host's directory is refused (the log's
	// lock) before its snapshot store is touched.
	before, _ := fs.List(groupDir(e, 1))
	if _, err := ImportSnapshot(fs, "old", fs.PathJoin("/export", dirs[0]), 1, members, logdb.Options{}); err == nil {
		t.Fatal("import into a running host's directory accepted")
	}
	if after, _ := fs.List(groupDir(e, 1)); fmt.Sprint(after) != fmt.Sprint(before) {
		t.Fatalf("a refused import changed the snapshot store: %v → %v", before, after)
	}
	e.Close()

	// A new host with an empty on-disk state machine, rebuilt from the
	// export alone.
	trs2, members2 := tcpTransports(t, 1)
	if _, err := ImportSnapshot(fs, "new", fs.PathJoin("/export", dirs[0]), 1, members2, logdb.Options{}); err != nil {
		t.Fatal(err)
	}
	dst := &disk{kv: &kv{data: map[string]string{}}}
	e2, err := Open(Config{Dir: "new", FS: fs, Transport: trs2[0], TickInterval: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer e2.Close()
	gc2 := GroupConfig{Group: 1, Replica: raftpb.ReplicaID(1), Members: members2}
	if err := e2.StartGroup(ctx, gc2, func(uint64, uint64) statemachine.StateMachine { return diskKV{dst} }); err != nil {
		t.Fatalf("start from the import: %v", err)
	}
	waitValue(ctx, t, e2, "k19", "v19")
	// Terms never go backwards: the imported replica's first election is
	// in a term above the export's (it was elected in term 1 before).
	if st2, err := e2.GroupStatus(1); err != nil || st2.Term <= st.Term {
		t.Fatalf("imported replica leads in term %d, the export was taken in term %d (%v)", st2.Term, st.Term, err)
	}
	if dst.restores != 1 {
		t.Fatalf("restores = %d, want 1", dst.restores)
	}
}
