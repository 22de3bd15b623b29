package main

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"hash/crc32"
	"maps"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/skiffdb/skiff"
	"github.com/skiffdb/skiff/internal/snapshot"
	"github.com/skiffdb/skiff/raftpb"
	"github.com/skiffdb/skiff/statemachine"
)

// TestInspectPublished: a published snapshot verifies, and the text says
// what the meta holds.
func TestInspectPublished(t *testing.T) {
	f := getFixture(t)
	before := treeDigest(t, f.data)
	code, out, errOut := runCmd("snapshot", "inspect", f.snapDir)
	if code != exitOK {
		t.Fatalf("inspect %s: exit %d\n%s%s", f.snapDir, code, out, errOut)
	}
	for _, want := range []string{
		"group 1  index " + itoa(f.snapIndex),
		"voter        1  " + f.addr,
		"transfer compression none",
		"data ",
		"OK: every file matches the meta",
		"state machine data follows: true",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("inspect output lacks %q:\n%s", want, out)
		}
	}
	if after := treeDigest(t, f.data); !maps.Equal(before, after) {
		t.Fatalf("inspect changed the data directory")
	}
}

// TestInspectJSON: --json gives the meta and a verified entry per file.
func TestInspectJSON(t *testing.T) {
	f := getFixture(t)
	code, out, errOut := runCmd("snapshot", "inspect", "--json", f.exportDir)
	if code != exitOK {
		t.Fatalf("exit %d\n%s%s", code, out, errOut)
	}
	var rep inspectReport
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, out)
	}
	if !rep.OK || rep.Kind != "snapshot" || len(rep.Snapshots) != 1 {
		t.Fatalf("report %+v", rep)
	}
	s := rep.Snapshots[0]
	if s.Meta == nil || s.Meta.Index != f.exportIdx || s.Meta.Group != 1 || s.Meta.Term == 0 {
		t.Fatalf("meta %+v, want index %d of group 1", s.Meta, f.exportIdx)
	}
	if len(s.Meta.Membership.Voters) != 1 || s.Meta.Membership.Voters[0].Addr != f.addr {
		t.Fatalf("voters %+v, want 1=%s", s.Meta.Membership.Voters, f.addr)
	}
	if len(s.Files) != 1 || s.Files[0].Name != "data" || s.Files[0].Status != "ok" || s.Files[0].Size == 0 {
		t.Fatalf("files %+v", s.Files)
	}
	if s.Header == nil || s.Header.Error != "" || !s.Header.Full || s.Header.Bytes == 0 {
		t.Fatalf("stream header %+v", s.Header)
	}
	// The positional argument may come first too.
	if code, out, _ := runCmd("snapshot", "inspect", f.exportDir, "--json"); code != exitOK || !strings.HasPrefix(out, "{") {
		t.Fatalf("flags after DIR: exit %d\n%s", code, out)
	}
}

// TestInspectStore: a group's store lists and verifies each snapshot.
func TestInspectStore(t *testing.T) {
	f := getFixture(t)
	store := groupSnapshotDir(f.data, 1)
	code, out, errOut := runCmd("snapshot", "inspect", store)
	if code != exitOK {
		t.Fatalf("exit %d\n%s%s", code, out, errOut)
	}
	if !strings.Contains(out, f.snapDir) || !strings.Contains(out, "published snapshot(s), all OK") {
		t.Fatalf("store output:\n%s", out)
	}
	// Temp and quarantined directories are listed, not verified.
	cp := t.TempDir()
	copyTree(t, store, cp)
	if err := os.Mkdir(filepath.Join(cp, "snapshot-00000000000000000005-3.corrupt"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(cp, "notes.txt"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	code, out, _ = runCmd("snapshot", "inspect", cp)
	if code != exitOK || !strings.Contains(out, "snapshot-00000000000000000005-3.corrupt  corrupt (quarantined") ||
		!strings.Contains(out, "notes.txt  not a snapshot") {
		t.Fatalf("store with leftovers: exit %d\n%s", code, out)
	}

	// The host directory itself is not a store: a hint, exit 1.
	code, _, errOut = runCmd("snapshot", "inspect", f.data)
	if code != exitFail || !strings.Contains(errOut, "try "+store) {
		t.Fatalf("inspect of the host dir: exit %d, stderr %q", code, errOut)
	}
}

// damaged copies the fixture's published snapshot (its directory name
// kept) and returns the copy.
func damaged(t *testing.T) (dir string, f *fixture) {
	f = getFixture(t)
	dir = filepath.Join(t.TempDir(), filepath.Base(f.snapDir))
	copyTree(t, f.snapDir, dir)
	if code, out, _ := runCmd("snapshot", "inspect", dir); code != exitOK {
		t.Fatalf("the undamaged copy does not verify: exit %d\n%s", code, out)
	}
	return dir, f
}

func TestInspectFlippedByte(t *testing.T) {
	dir, _ := damaged(t)
	p := filepath.Join(dir, "data")
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)/2] ^= 0x01
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	code, out, _ := runCmd("snapshot", "inspect", dir)
	if code != exitFail {
		t.Fatalf("a flipped byte: exit %d, want 1\n%s", code, out)
	}
	if !strings.Contains(out, "FAILED: 1 problem(s)") || !strings.Contains(out, "data: "+itoa(uint64(len(b)))+" bytes crc32c") ||
		!strings.Contains(out, "mismatch") {
		t.Fatalf("output does not name the damaged file:\n%s", out)
	}
}

func TestInspectTruncatedMeta(t *testing.T) {
	dir, _ := damaged(t)
	p := filepath.Join(dir, "meta")
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, b[:len(b)-7], 0o644); err != nil {
		t.Fatal(err)
	}
	code, out, _ := runCmd("snapshot", "inspect", dir)
	if code != exitFail || !strings.Contains(out, "meta: truncated or corrupt") {
		t.Fatalf("truncated meta: exit %d\n%s", code, out)
	}
	// JSON says the same.
	code, out, _ = runCmd("snapshot", "inspect", "--json", dir)
	var rep inspectReport
	if err := json.Unmarshal([]byte(out), &rep); err != nil || code != exitFail || rep.OK ||
		!strings.Contains(strings.Join(rep.Snapshots[0].Problems, "\n"), "corrupt meta") {
		t.Fatalf("truncated meta, JSON: exit %d %v\n%s", code, err, out)
	}
}

func TestInspectMissingAndUnexpectedFiles(t *testing.T) {
	dir, _ := damaged(t)
	if err := os.Remove(filepath.Join(dir, "data")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "stray.sst"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	code, out, _ := runCmd("snapshot", "inspect", dir)
	if code != exitFail || !strings.Contains(out, "data: missing") || !strings.Contains(out, `unexpected file "stray.sst"`) ||
		!strings.Contains(out, "FAILED: 2 problem(s)") {
		t.Fatalf("exit %d\n%s", code, out)
	}
}

// TestInspectRenamedDir: a snapshot under another name is reported (import
// would refuse it), though its files verify.
func TestInspectRenamedDir(t *testing.T) {
	f := getFixture(t)
	dir := filepath.Join(t.TempDir(), "backup")
	copyTree(t, f.snapDir, dir)
	code, out, _ := runCmd("snapshot", "inspect", dir)
	if code != exitFail || !strings.Contains(out, `directory name "backup" does not match`) {
		t.Fatalf("exit %d\n%s", code, out)
	}
}

// TestInspectHostileName: a meta with a valid checksum that names
// "../evil" is refused as a whole, nothing outside the directory read.
func TestInspectHostileName(t *testing.T) {
	dir, _ := damaged(t)
	b, err := os.ReadFile(filepath.Join(dir, "meta"))
	if err != nil {
		t.Fatal(err)
	}
	m, err := snapshot.DecodeMeta(b)
	if err != nil {
		t.Fatal(err)
	}
	m.Files = append(m.Files, raftpb.SnapshotFile{Name: "../evil", Size: 1})
	if err := os.WriteFile(filepath.Join(dir, "meta"), rawMeta(&m), 0o644); err != nil {
		t.Fatal(err)
	}
	code, out, _ := runCmd("snapshot", "inspect", dir)
	if code != exitFail || !strings.Contains(out, "hostile or invalid file name") || !strings.Contains(out, `../evil`) {
		t.Fatalf("exit %d\n%s", code, out)
	}
}

// rawMeta encodes a meta record without validating it (EncodeMeta would
// refuse a hostile name): the layout of internal/snapshot's meta.go.
func rawMeta(m *raftpb.SnapshotMeta) []byte {
	payload := m.Marshal()
	b := []byte("skfsnap\x00")
	b = binary.LittleEndian.AppendUint32(b, m.FormatVersion)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(payload)))
	b = append(b, payload...)
	return binary.LittleEndian.AppendUint32(b, crc32.Checksum(b, crc32.MakeTable(crc32.Castagnoli)))
}

func TestInspectNotASnapshot(t *testing.T) {
	empty := t.TempDir()
	if code, _, errOut := runCmd("snapshot", "inspect", empty); code != exitFail || !strings.Contains(errOut, "no meta file") {
		t.Fatalf("empty dir: exit %d %q", code, errOut)
	}
	if code, _, errOut := runCmd("snapshot", "inspect", filepath.Join(empty, "nope")); code != exitFail || !strings.Contains(errOut, "no such file") {
		t.Fatalf("missing dir: exit %d %q", code, errOut)
	}
	if code, _, _ := runCmd("snapshot", "inspect"); code != exitUsage {
		t.Fatalf("no DIR: exit %d", code)
	}
	if code, _, _ := runCmd("snapshot", "inspect", "a", "b"); code != exitUsage {
		t.Fatalf("two DIRs: exit %d", code)
	}
}

func itoa(n uint64) string { return strconv.FormatUint(n, 10) }

// diskKV claims to keep its data durable (statemachine.OnDisk): its
// compaction snapshots carry no state machine data.
type diskKV struct{ testKV }

func (*diskKV) Open(context.Context) (uint64, error) { return 0, nil }
func (*diskKV) Sync() error                          { return nil }

// TestInspectMetadataOnly: an on-disk state machine's snapshot is
// reported as metadata only, from the stream header's flags.
func TestInspectMetadataOnly(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	dir := t.TempDir()
	h, err := skiff.Open(skiff.HostConfig{Dir: dir, RaftAddr: "127.0.0.1:0", DeploymentID: 7, TickInterval: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	newDisk := func(uint64, uint64) statemachine.StateMachine { return &diskKV{testKV{data: map[string]string{}}} }
	if err := h.StartGroup(ctx, skiff.GroupConfig{GroupID: 1, ReplicaID: 1, Members: map[skiff.ReplicaID]string{1: h.RaftAddr()}}, newDisk); err != nil {
		t.Fatal(err)
	}
	if _, err := h.WaitLeader(ctx, 1); err != nil {
		t.Fatal(err)
	}
	if _, err := h.Propose(ctx, 1, []byte("a=1")); err != nil {
		t.Fatal(err)
	}
	if _, err := h.RequestSnapshot(ctx, 1, skiff.SnapshotOption{}); err != nil {
		t.Fatal(err)
	}
	if err := h.Close(); err != nil {
		t.Fatal(err)
	}
	code, out, _ := runCmd("snapshot", "inspect", "--json", groupSnapshotDir(dir, 1))
	var rep inspectReport
	if err := json.Unmarshal([]byte(out), &rep); err != nil || code != exitOK || len(rep.Snapshots) != 1 {
		t.Fatalf("exit %d %v\n%s", code, err, out)
	}
	s := rep.Snapshots[0]
	if !s.Meta.OnDisk || !s.Meta.MetadataOnly || s.Header == nil || s.Header.Full {
		t.Fatalf("meta %+v header %+v: want on disk, metadata only", s.Meta, s.Header)
	}

	// Such a snapshot, taken for an export, cannot rebuild a replica:
	// import refuses it.
	data := filepath.Join(t.TempDir(), "d")
	code, _, errOut := runCmd("import", "--exported", s.Dir, "--data", data, "--id", "1", "--members", "1=127.0.0.1:7000")
	if code != exitFail || !strings.Contains(errOut, "holds no state machine data") {
		t.Fatalf("import of a metadata-only snapshot: exit %d %q", code, errOut)
	}
	if _, err := os.Stat(data); !os.IsNotExist(err) {
		t.Fatalf("the refused import created %s", data)
	}
}
