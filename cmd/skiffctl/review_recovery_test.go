package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/skiffdb/skiff"
	"github.com/skiffdb/skiff/examples/kv"
)

// TestReviewRecoveryWithKV runs the disaster-recovery path the README
// gives, with skiffkv's own state machine (examples/kv, Pebble, on disk)
// instead of the in-memory testKV of the other import tests: a host
// exports a snapshot, takes more writes, stops; "skiffctl import" rebuilds
// (a) a fresh directory as a new replica 5 and (b) the old directory itself
// in place (its kv/ moved aside); each starts, holds exactly the exported
// data (not the later write) and takes new writes.
func TestReviewRecoveryWithKV(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	root := t.TempDir()
	old := filepath.Join(root, "old")
	exportPath := filepath.Join(root, "export")
	if err := os.MkdirAll(exportPath, 0o755); err != nil {
		t.Fatal(err)
	}

	var exportIdx uint64
	reviewRun(t, ctx, old, 1, map[skiff.ReplicaID]string{1: freeAddr(t)}, func(h *skiff.Host) {
		for i := range 50 {
			reviewPut(t, ctx, h, fmt.Sprintf("k%d", i), fmt.Sprintf("v%d", i))
		}
		idx, err := h.RequestSnapshot(ctx, 1, skiff.SnapshotOption{Exported: true, ExportPath: exportPath})
		if err != nil {
			t.Fatalf("export: %v", err)
		}
		exportIdx = idx
		reviewPut(t, ctx, h, "late", "after the export")
	})
	exported := filepath.Join(exportPath, publishedName(exportIdx))

	check := func(data string, id skiff.ReplicaID) {
		t.Helper()
		addr := freeAddr(t)
		code, out, errOut := runCmd("import", "--exported", exported, "--data", data, "--id", fmt.Sprint(id),
			"--members", fmt.Sprintf("%d=%s", id, addr))
		if code != exitOK {
			t.Fatalf("import into %s: exit %d\n%s%s", data, code, out, errOut)
		}
		reviewRun(t, ctx, data, id, map[skiff.ReplicaID]string{id: addr}, func(h *skiff.Host) {
			for _, c := range []struct{ key, want string }{{"k0", "v0"}, {"k49", "v49"}, {"late", ""}} {
				if got := reviewGet(t, ctx, h, c.key); got != c.want {
					t.Errorf("%s after import into %s: %q, want %q", c.key, data, got, c.want)
				}
			}
			reviewPut(t, ctx, h, "after", "1")
			if got := reviewGet(t, ctx, h, "after"); got != "1" {
				t.Errorf("write after import into %s: %q", data, got)
			}
		})
	}
	check(filepath.Join(root, "new"), 5)
	check(old, 1)
}

// reviewRun opens a host on data with replica id of group 1 (skiffkv's layout:
// the Pebble state machine under data/kv), runs f, and closes the host.
func reviewRun(t *testing.T, ctx context.Context, data string, id skiff.ReplicaID, members map[skiff.ReplicaID]string, f func(*skiff.Host)) {
	t.Helper()
	h, err := skiff.Open(skiff.HostConfig{Dir: data, RaftAddr: members[id], DeploymentID: 1, TickInterval: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := h.Close(); err != nil {
			t.Errorf("close %s: %v", data, err)
		}
	}()
	create := kv.New(kv.Options{Dir: filepath.Join(data, skiffkvStateDir)})
	if err := h.StartGroup(ctx, skiff.GroupConfig{GroupID: 1, ReplicaID: id, Members: members}, create); err != nil {
		t.Fatalf("start group on %s: %v", data, err)
	}
	if _, err := h.WaitLeader(ctx, 1); err != nil {
		t.Fatal(err)
	}
	f(h)
}

func reviewPut(t *testing.T, ctx context.Context, h *skiff.Host, k, v string) {
	t.Helper()
	if res, err := h.Propose(ctx, 1, kv.EncodePut([]byte(k), []byte(v))); err != nil || res.Value != kv.ResultOK {
		t.Fatalf("put %s: %+v %v", k, res, err)
	}
}

func reviewGet(t *testing.T, ctx context.Context, h *skiff.Host, k string) string {
	t.Helper()
	resp, err := h.Read(ctx, 1, kv.EncodeGet([]byte(k)))
	if err != nil {
		t.Fatalf("get %s: %v", k, err)
	}
	v, _, err := kv.DecodeGet(resp)
	if err != nil {
		t.Fatal(err)
	}
	return string(v)
}

// TestReviewRecoveryThreeReplicasWithKV: the README's procedure for a
// whole new group — the same export imported on three hosts with the same
// --members — gives a group that elects a leader, holds the exported data
// on every replica and replicates new writes.
func TestReviewRecoveryThreeReplicasWithKV(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	root := t.TempDir()
	exportPath := filepath.Join(root, "export")
	if err := os.MkdirAll(exportPath, 0o755); err != nil {
		t.Fatal(err)
	}
	var exportIdx uint64
	reviewRun(t, ctx, filepath.Join(root, "old"), 1, map[skiff.ReplicaID]string{1: freeAddr(t)}, func(h *skiff.Host) {
		for i := range 30 {
			reviewPut(t, ctx, h, fmt.Sprintf("k%d", i), fmt.Sprintf("v%d", i))
		}
		idx, err := h.RequestSnapshot(ctx, 1, skiff.SnapshotOption{Exported: true, ExportPath: exportPath})
		if err != nil {
			t.Fatalf("export: %v", err)
		}
		exportIdx = idx
	})
	exported := filepath.Join(exportPath, publishedName(exportIdx))

	members := map[skiff.ReplicaID]string{1: freeAddr(t), 2: freeAddr(t), 3: freeAddr(t)}
	list := formatMembers(members)
	hosts := map[skiff.ReplicaID]*skiff.Host{}
	for id := range members {
		data := filepath.Join(root, fmt.Sprint("r", id))
		if code, out, errOut := runCmd("import", "--exported", exported, "--data", data, "--id", fmt.Sprint(id), "--members", list); code != exitOK {
			t.Fatalf("import %d: exit %d\n%s%s", id, code, out, errOut)
		}
		h, err := skiff.Open(skiff.HostConfig{Dir: data, RaftAddr: members[id], DeploymentID: 1, TickInterval: 10 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		hosts[id] = h
		defer func() {
			if err := h.Close(); err != nil {
				t.Errorf("close %d: %v", id, err)
			}
		}()
	}
	for id, h := range hosts {
		create := kv.New(kv.Options{Dir: filepath.Join(root, fmt.Sprint("r", id), skiffkvStateDir)})
		if err := h.StartGroup(ctx, skiff.GroupConfig{GroupID: 1, ReplicaID: id, Members: members}, create); err != nil {
			t.Fatalf("start %d: %v", id, err)
		}
	}
	for id, h := range hosts {
		if _, err := h.WaitLeader(ctx, 1); err != nil {
			t.Fatalf("replica %d: no leader: %v", id, err)
		}
	}
	reviewPut(t, ctx, hosts[2], "after", "1")
	for id, h := range hosts {
		for _, c := range []struct{ key, want string }{{"k0", "v0"}, {"k29", "v29"}, {"after", "1"}} {
			if got := reviewGet(t, ctx, h, c.key); got != c.want {
				t.Errorf("replica %d: %s = %q, want %q", id, c.key, got, c.want)
			}
		}
		st, err := h.GroupStatus(1)
		if err != nil || len(st.Members) != 3 {
			t.Errorf("replica %d: members %v %v", id, st.Members, err)
		}
	}
}
