package skiff_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/skiffdb/skiff"
)

// freeAddr returns a loopback address nobody listens on right now.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// TestExportImportRecovery: a group loses every host; an operator rebuilds
// it on a new host from an exported snapshot, with a new membership.
func TestExportImportRecovery(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	fs := vfs.NewMem()
	cfg := skiff.HostConfig{Dir: "old", FS: fs, RaftAddr: "127.0.0.1:0", DeploymentID: 1, TickInterval: 10 * time.Millisecond}
	h, err := skiff.Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	members := map[skiff.ReplicaID]string{1: h.RaftAddr()}
	if err := h.StartGroup(ctx, skiff.GroupConfig{GroupID: 1, ReplicaID: 1, Members: members}, newKV); err != nil {
		t.Fatal(err)
	}
	if _, err := h.WaitLeader(ctx, 1); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 20; i++ {
		if _, err := h.Propose(ctx, 1, []byte(fmt.Sprintf("k%d=v%d", i, i))); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := h.RequestSnapshot(ctx, 1, skiff.SnapshotOption{Exported: true, ExportPath: "/missing"}); !errors.Is(err, skiff.ErrDirNotExist) {
		t.Fatalf("export to a missing dir: %v, want ErrDirNotExist", err)
	}
	if err := fs.MkdirAll("/export", 0o755); err != nil {
		t.Fatal(err)
	}
	idx, err := h.RequestSnapshot(ctx, 1, skiff.SnapshotOption{Exported: true, ExportPath: "/export"})
	if err != nil {
		t.Fatal(err)
	}
	st, _ := h.GroupStatus(1)
	if st.Snapshot.Index == idx {
		t.Fatalf("an exported snapshot changed the group's snapshot index to %d", idx)
	}
	// The write after the export is lost with the old hosts.
	if _, err := h.Propose(ctx, 1, []byte("late=1")); err != nil {
		t.Fatal(err)
	}
	h.Close()

	dirs, err := fs.List("/export")
	if err != nil || len(dirs) != 1 {
		t.Fatalf("export dir: %v %v", dirs, err)
	}
	addr := freeAddr(t)
	ncfg := skiff.HostConfig{Dir: "new", FS: fs, RaftAddr: addr, DeploymentID: 1, TickInterval: 10 * time.Millisecond}
	if err := skiff.ImportSnapshot(ncfg, fs.PathJoin("/export", dirs[0]), 1, map[skiff.ReplicaID]string{7: addr}); err != nil {
		t.Fatal(err)
	}
	nh, err := skiff.Open(ncfg)
	if err != nil {
		t.Fatal(err)
	}
	defer nh.Close()
	if err := nh.StartGroup(ctx, skiff.GroupConfig{GroupID: 1, ReplicaID: 7, Members: map[skiff.ReplicaID]string{7: addr}}, newKV); err != nil {
		t.Fatal(err)
	}
	if _, err := nh.WaitLeader(ctx, 1); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ key, want string }{{"k19", "v19"}, {"k0", "v0"}, {"late", ""}} {
		v, err := nh.Read(ctx, 1, []byte(c.key))
		if err != nil || string(v) != c.want {
			t.Fatalf("read %s after import: %q %v, want %q", c.key, v, err, c.want)
		}
	}
	if _, err := nh.Propose(ctx, 1, []byte("after=1")); err != nil {
		t.Fatalf("the recovered group does not take writes: %v", err)
	}
	nst, _ := nh.GroupStatus(1)
	if _, ok := nst.Members[1]; ok || nst.Members[7] != addr {
		t.Fatalf("recovered membership %v", nst.Members)
	}
}
