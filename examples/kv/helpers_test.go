package kv

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/skiffdb/skiff/statemachine"
)

// testDir is the Options.Dir of the tests' state machines.
const testDir = "/kv"

// newMachine returns group 1's replica r on fs, not yet opened; it is
// closed at cleanup.
func newMachine(t testing.TB, fs vfs.FS, r uint64) *machine {
	t.Helper()
	m := New(Options{Dir: testDir, FS: fs})(1, r).(*machine)
	t.Cleanup(func() { m.Close() })
	return m
}

// openMachine returns an opened newMachine and its applied index.
func openMachine(t testing.TB, fs vfs.FS, r uint64) (*machine, uint64) {
	t.Helper()
	m := newMachine(t, fs, r)
	applied, err := m.Open(context.Background())
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	return m, applied
}

// apply applies cmds in one Apply call at the indexes after m's applied
// index and returns their result values.
func apply(t testing.TB, m *machine, cmds ...[]byte) []uint64 {
	t.Helper()
	ents := make([]statemachine.Entry, len(cmds))
	for i, c := range cmds {
		ents[i] = statemachine.Entry{Index: m.applied + 1 + uint64(i), Cmd: c}
	}
	if err := m.Apply(ents); err != nil {
		t.Fatalf("apply: %v", err)
	}
	res := make([]uint64, len(ents))
	for i := range ents {
		res[i] = ents[i].Result.Value
	}
	return res
}

func getKey(t testing.TB, m *machine, key string) (string, bool) {
	t.Helper()
	resp, err := m.Lookup(EncodeGet([]byte(key)))
	if err != nil {
		t.Fatalf("get %q: %v", key, err)
	}
	v, found, err := DecodeGet(resp)
	if err != nil {
		t.Fatalf("decode get %q: %v", key, err)
	}
	return string(v), found
}

func scanMap(t testing.TB, m *machine, prefix string, limit int) []Pair {
	t.Helper()
	resp, err := m.Lookup(EncodeScan([]byte(prefix), limit))
	if err != nil {
		t.Fatalf("scan %q: %v", prefix, err)
	}
	pairs, err := DecodeScan(resp)
	if err != nil {
		t.Fatalf("decode scan %q: %v", prefix, err)
	}
	return pairs
}

// contents returns every user key and value of m.
func contents(t testing.TB, m *machine) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, p := range scanMap(t, m, "", 0) {
		out[string(p.Key)] = string(p.Value)
	}
	return out
}

// sameContents fails the test unless m holds exactly want.
func sameContents(t testing.TB, what string, m *machine, want map[string]string) {
	t.Helper()
	got := contents(t, m)
	if !maps.Equal(got, want) {
		t.Fatalf("%s: contents differ:\n got %s\nwant %s", what, describe(got), describe(want))
	}
}

func describe(m map[string]string) string {
	if len(m) > 20 {
		return fmt.Sprintf("%d keys", len(m))
	}
	var b strings.Builder
	for _, k := range slices.Sorted(maps.Keys(m)) {
		fmt.Fprintf(&b, "%q=%q ", k, m[k])
	}
	return b.String()
}

// hostFiles is the host's side of Snapshot.Save in tests: it hard-links
// every added file into its own directory, as the snapshot store does.
type hostFiles struct {
	fs    vfs.FS
	dir   string
	files []statemachine.SnapshotFile
}

func (h *hostFiles) AddFile(name, path string) error {
	if err := checkFileName(name); err != nil {
		return err
	}
	for _, f := range h.files {
		if f.Name == name {
			return fmt.Errorf("duplicate snapshot file %s", name)
		}
	}
	dst := h.fs.PathJoin(h.dir, name)
	if err := h.fs.Link(path, dst); err != nil {
		return err
	}
	st, err := h.fs.Stat(dst)
	if err != nil {
		return err
	}
	h.files = append(h.files, statemachine.SnapshotFile{Name: name, Path: dst, Size: st.Size()})
	return nil
}

// snap is a saved snapshot, as the host would hand it to Restore.
type snap struct {
	stream []byte
	files  []statemachine.SnapshotFile
}

var snapSeq int

// takeSnapshot captures m and saves the capture into a host directory.
func takeSnapshot(t testing.TB, m *machine) snap {
	t.Helper()
	c, err := m.Snapshot()
	if err != nil {
		t.Fatalf("snapshot: %v", err)
	}
	return save(t, m.fs, c)
}

func save(t testing.TB, fs vfs.FS, c statemachine.Snapshot) snap {
	t.Helper()
	defer c.Release()
	snapSeq++
	h := &hostFiles{fs: fs, dir: fmt.Sprintf("/host/snapshot-%d", snapSeq)}
	if err := fs.MkdirAll(h.dir, 0o755); err != nil {
		t.Fatal(err)
	}
	var w bytes.Buffer
	if err := c.Save(context.Background(), &w, h); err != nil {
		t.Fatalf("save: %v", err)
	}
	return snap{stream: w.Bytes(), files: h.files}
}

func restore(m *machine, s snap) error {
	return m.Restore(context.Background(), bytes.NewReader(s.stream), s.files)
}

// dirEntries lists a replica's directory.
func dirEntries(t testing.TB, fs vfs.FS, r uint64) []string {
	t.Helper()
	names, err := fs.List(Options{Dir: testDir, FS: fs}.GroupDir(1, r))
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(names)
	return names
}

// checkLayout fails unless the replica's directory holds only CURRENT and
// one database directory.
func checkLayout(t testing.TB, fs vfs.FS, r uint64) {
	t.Helper()
	names := dirEntries(t, fs, r)
	if len(names) != 2 || names[0] != currentName || !strings.HasPrefix(names[1], dbPrefix) {
		t.Fatalf("replica directory holds %v, want CURRENT and one database", names)
	}
}

// checkNoPebbleGoroutines fails the test at cleanup if a goroutine of
// Pebble outlives the test (every state machine closed). Pebble's Close
// waits for its goroutines, so none may remain; a few yields let exiting
// goroutines finish.
func checkNoPebbleGoroutines(t *testing.T) {
	t.Helper()
	t.Cleanup(func() {
		var stacks string
		for range 1000 {
			buf := make([]byte, 1<<20)
			stacks = string(buf[:runtime.Stack(buf, true)])
			if !strings.Contains(stacks, "cockroachdb/pebble") {
				return
			}
			runtime.Gosched()
		}
		t.Errorf("pebble goroutines leaked:\n%s", stacks)
	})
}

func isErr(err, target error) bool { return errors.Is(err, target) }
