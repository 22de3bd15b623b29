package main

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/skiffdb/skiff"
)

// TestImportThenServe: an export imported into a fresh data directory with
// a new membership; a host started on it serves the exported state.
func TestImportThenServe(t *testing.T) {
	f := getFixture(t)
	exportBefore := treeDigest(t, f.exportPath)
	data := filepath.Join(t.TempDir(), "replica5")
	addr := freeAddr(t)
	code, out, errOut := runCmd("import", "--exported", f.exportDir, "--data", data, "--id", "5", "--members", "5="+addr)
	if code != exitOK {
		t.Fatalf("import: exit %d\n%s%s", code, out, errOut)
	}
	for _, want := range []string{
		"imported snapshot index " + itoa(f.exportIdx),
		"removed for good: 1",
		"skiffkv serve --id 5 --data " + data + " --raft-addr " + addr,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("import output lacks %q:\n%s", want, out)
		}
	}
	if after := treeDigest(t, f.exportPath); !maps.Equal(after, exportBefore) {
		t.Fatalf("import changed the export")
	}
	// skiffkv will accept the directory as replica 5's.
	var ident skiffkvIdentity
	if b, err := os.ReadFile(filepath.Join(data, skiffkvIdentityFile)); err != nil || json.Unmarshal(b, &ident) != nil ||
		ident != (skiffkvIdentity{DeploymentID: 1, ReplicaID: 5}) {
		t.Fatalf("identity file: %+v %v", ident, err)
	}
	// The imported snapshot verifies where the host will look for it.
	if code, out, _ := runCmd("snapshot", "inspect", groupSnapshotDir(data, 1)); code != exitOK || !strings.Contains(out, "voter        5  "+addr) {
		t.Fatalf("inspect of the imported store: exit %d\n%s", code, out)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	h, err := skiff.Open(skiff.HostConfig{Dir: data, RaftAddr: addr, DeploymentID: 7, TickInterval: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	// Members is ignored once the replica has state: the import's rules.
	if err := h.StartGroup(ctx, skiff.GroupConfig{GroupID: 1, ReplicaID: 5, Members: map[skiff.ReplicaID]string{5: addr}}, newTestKV); err != nil {
		t.Fatal(err)
	}
	if _, err := h.WaitLeader(ctx, 1); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ key, want string }{{"k0", "v0"}, {"k24", "v24"}, {"late", ""}} {
		v, err := h.Read(ctx, 1, []byte(c.key))
		if err != nil || string(v) != c.want {
			t.Fatalf("read %s after import: %q %v, want %q (late was written after the export)", c.key, v, err, c.want)
		}
	}
	if _, err := h.Propose(ctx, 1, []byte("after=1")); err != nil {
		t.Fatalf("the recovered group takes no writes: %v", err)
	}
	st, err := h.GroupStatus(1)
	if err != nil || len(st.Members) != 1 || st.Members[5] != addr {
		t.Fatalf("membership %v %v", st.Members, err)
	}
}

func TestImportRefuses(t *testing.T) {
	f := getFixture(t)
	data := filepath.Join(t.TempDir(), "d")
	base := []string{"import", "--exported", f.exportDir, "--data", data}

	// Usage errors: exit 2, nothing created.
	for _, extra := range [][]string{
		{"--id", "1"}, // no --members
		{"--id", "0", "--members", "1=127.0.0.1:7000"},
		{"--id", "1", "--members", "1=127.0.0.1"},
		{"--id", "1", "--members", "1=127.0.0.1:7000,1=127.0.0.1:7001"},
		{"--id", "1", "--members", "1=127.0.0.1:7000,2=127.0.0.1:7000"},
		{"--id", "1", "--members", "x=127.0.0.1:7000"},
		{"--id", "1", "--members", "1=127.0.0.1:99999"},
		{"--id", "1", "--members", "1=127.0.0.1:7000", "--group", "0"},
		{"--id", "1", "--members", "1=127.0.0.1:7000", "--bogus"},
	} {
		code, _, errOut := runCmd(append(base, extra...)...)
		if code != exitUsage || !strings.Contains(errOut, "Usage:") {
			t.Errorf("%q: exit %d, stderr %q", extra, code, errOut)
		}
	}
	// Refusals: exit 1, nothing created.
	code, _, errOut := runCmd(append(base, "--id", "3", "--members", "1=127.0.0.1:7000,2=127.0.0.1:7001")...)
	if code != exitFail || !strings.Contains(errOut, "--id 3 is not in --members") {
		t.Errorf("id not in members: exit %d %q", code, errOut)
	}
	code, _, errOut = runCmd(append(base, "--id", "1", "--members", "1=127.0.0.1:7000", "--group", "2")...)
	if code != exitFail || !strings.Contains(errOut, "the export is of group 1, not --group 2") {
		t.Errorf("wrong group: exit %d %q", code, errOut)
	}

	// A damaged export is refused before anything is written.
	bad := filepath.Join(t.TempDir(), filepath.Base(f.exportDir))
	copyTree(t, f.exportDir, bad)
	b, err := os.ReadFile(filepath.Join(bad, "data"))
	if err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0x80
	if err := os.WriteFile(filepath.Join(bad, "data"), b, 0o644); err != nil {
		t.Fatal(err)
	}
	code, _, errOut = runCmd("import", "--exported", bad, "--data", data, "--id", "1", "--members", "1=127.0.0.1:7000")
	if code != exitFail || !strings.Contains(errOut, "failed verification; nothing was changed") || !strings.Contains(errOut, "data: ") {
		t.Errorf("damaged export: exit %d %q", code, errOut)
	}
	if _, err := os.Stat(data); !os.IsNotExist(err) {
		t.Fatalf("a refused import created %s (%v)", data, err)
	}
}

// TestImportRefusesRunningHost: the data directory of a running host is
// left alone.
func TestImportRefusesRunningHost(t *testing.T) {
	f := getFixture(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	dir := t.TempDir()
	h, err := skiff.Open(skiff.HostConfig{Dir: dir, RaftAddr: "127.0.0.1:0", DeploymentID: 7, TickInterval: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	if err := h.StartGroup(ctx, skiff.GroupConfig{GroupID: 1, ReplicaID: 1, Members: map[skiff.ReplicaID]string{1: h.RaftAddr()}}, newTestKV); err != nil {
		t.Fatal(err)
	}
	before := treeDigest(t, groupSnapshotDir(dir, 1))
	code, _, errOut := runCmd("import", "--exported", f.exportDir, "--data", dir, "--id", "1", "--members", "1="+h.RaftAddr())
	if code != exitFail || !strings.Contains(errOut, "a server is running") {
		t.Fatalf("import under a running host: exit %d %q", code, errOut)
	}
	if after := treeDigest(t, groupSnapshotDir(dir, 1)); len(after) != len(before) {
		t.Fatalf("the refused import changed the snapshot store")
	}
}

// TestImportSkiffkvDir: an import into skiffkv's existing data directory
// checks its identity, keeps it, and moves the state machine's data aside.
func TestImportSkiffkvDir(t *testing.T) {
	f := getFixture(t)
	data := t.TempDir()
	writeIdent := func(id skiffkvIdentity) {
		b, _ := json.Marshal(id)
		if err := os.WriteFile(filepath.Join(data, skiffkvIdentityFile), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	sm := filepath.Join(data, skiffkvStateDir)
	if err := os.MkdirAll(sm, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(sm, "CURRENT"), []byte("newer than the export"), 0o644); err != nil {
		t.Fatal(err)
	}
	args := func(extra ...string) []string {
		return append([]string{"import", "--exported", f.exportDir, "--data", data, "--id", "3",
			"--members", "3=127.0.0.1:7003,4=127.0.0.1:7004"}, extra...)
	}

	writeIdent(skiffkvIdentity{DeploymentID: 9, ReplicaID: 2})
	before := treeDigest(t, data)
	if code, _, errOut := runCmd(args()...); code != exitFail || !strings.Contains(errOut, "belongs to replica 2, not --id 3") {
		t.Fatalf("another replica's dir: exit %d %q", code, errOut)
	}
	if !maps.Equal(before, treeDigest(t, data)) {
		t.Fatal("a refused import changed the data directory")
	}
	writeIdent(skiffkvIdentity{DeploymentID: 9, ReplicaID: 3})
	before = treeDigest(t, data)
	if code, _, errOut := runCmd(args("--deployment-id", "4")...); code != exitFail || !strings.Contains(errOut, "belongs to deployment 9, not --deployment-id 4") {
		t.Fatalf("another deployment's dir: exit %d %q", code, errOut)
	}
	if !maps.Equal(before, treeDigest(t, data)) {
		t.Fatal("a refused import changed the data directory")
	}

	code, out, errOut := runCmd(args()...)
	if code != exitOK {
		t.Fatalf("exit %d\n%s%s", code, out, errOut)
	}
	aside := fmt.Sprintf("%s.before-import-%d", sm, f.exportIdx)
	if b, err := os.ReadFile(filepath.Join(aside, "CURRENT")); err != nil || string(b) != "newer than the export" {
		t.Fatalf("state machine data not moved aside to %s: %q %v", aside, b, err)
	}
	if _, err := os.Stat(sm); !os.IsNotExist(err) {
		t.Fatalf("%s still there: %v", sm, err)
	}
	if !strings.Contains(out, "moved aside to "+aside) || !strings.Contains(out, "--deployment-id 9") {
		t.Fatalf("output:\n%s", out)
	}
	b, _ := os.ReadFile(filepath.Join(data, skiffkvIdentityFile))
	if string(b) != `{"deployment_id":9,"replica_id":3}` {
		t.Fatalf("identity changed: %s", b)
	}
}
