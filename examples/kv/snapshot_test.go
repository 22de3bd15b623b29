package kv

import (
	"bytes"
	"context"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/skiffdb/skiff/statemachine"
)

// fill applies n puts of keys prefix00000.. in batches of 16 and returns
// the model.
func fill(t testing.TB, m *machine, prefix string, n int, model map[string]string) {
	t.Helper()
	var cmds [][]byte
	for i := range n {
		k, v := fmt.Sprintf("%s%05d", prefix, i), fmt.Sprintf("%s-value-%d", prefix, i)
		cmds = append(cmds, EncodePut([]byte(k), []byte(v)))
		model[k] = v
		if len(cmds) == 16 || i == n-1 {
			apply(t, m, cmds...)
			cmds = cmds[:0]
		}
	}
}

// A snapshot of A restored into a new replica and into one with other
// data yields A's contents and applied index exactly; both continue to
// apply and survive a reopen.
func TestSnapshotRestoreIntoFreshAndNonEmptyReplica(t *testing.T) {
	checkNoPebbleGoroutines(t)
	fs := vfs.NewMem()
	a, _ := openMachine(t, fs, 1)
	want := map[string]string{}
	fill(t, a, "a", 500, want)
	// Part of A's data in tables, part only in its WAL: the checkpoint
	// must carry both.
	if err := a.db.Flush(); err != nil {
		t.Fatal(err)
	}
	fill(t, a, "b", 100, want)
	apply(t, a, EncodeDelete([]byte("a00007")))
	delete(want, "a00007")
	s := takeSnapshot(t, a)
	hasTable := false
	for _, f := range s.files {
		hasTable = hasTable || strings.HasSuffix(f.Name, ".sst")
	}
	if !hasTable {
		t.Fatalf("snapshot of a flushed database has no table: %v", s.files)
	}

	fresh, _ := openMachine(t, fs, 2)
	other, _ := openMachine(t, fs, 3)
	otherModel := map[string]string{}
	fill(t, other, "zz", 50, otherModel) // keys A never had
	fill(t, other, "a", 20, otherModel)  // and some it has, with other values
	apply(t, other, EncodePut([]byte("a00007"), []byte("deleted in A")))
	for i, m := range []*machine{fresh, other} {
		if err := restore(m, s); err != nil {
			t.Fatalf("restore into replica %d: %v", i+2, err)
		}
		if m.applied != a.applied {
			t.Fatalf("replica %d: applied %d after restore, want %d", i+2, m.applied, a.applied)
		}
		sameContents(t, fmt.Sprintf("replica %d after restore", i+2), m, want)
		checkLayout(t, fs, uint64(i+2))
	}
	// The restored replicas apply on top, and keep it across a reopen.
	for r, m := range map[uint64]*machine{2: fresh, 3: other} {
		apply(t, m, EncodePut([]byte("after"), []byte("restore")))
		idx := m.applied
		if err := m.Close(); err != nil {
			t.Fatal(err)
		}
		m2, applied := openMachine(t, fs, r)
		if applied != idx {
			t.Fatalf("replica %d reopened at %d, want %d", r, applied, idx)
		}
		w := maps.Clone(want)
		w["after"] = "restore"
		sameContents(t, fmt.Sprintf("replica %d reopened", r), m2, w)
	}
	// A is untouched by its snapshot, and Release removed the checkpoint.
	sameContents(t, "A after its snapshot", a, want)
	checkLayout(t, fs, 1)
}

// The snapshot holds the state at the Snapshot call: applies that run
// while it is saved are not in it.
func TestSnapshotIsPointInTimeWhileApplyContinues(t *testing.T) {
	checkNoPebbleGoroutines(t)
	fs := vfs.NewMem()
	a, _ := openMachine(t, fs, 1)
	want := map[string]string{}
	fill(t, a, "k", 200, want)
	at := a.applied
	c, err := a.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	// Save on another goroutine, as the host does, while A applies
	// overwrites and deletes of the captured keys and flushes them.
	saved := make(chan snap)
	go func() { saved <- save(t, fs, c) }()
	for i := range 200 {
		k := []byte(fmt.Sprintf("k%05d", i))
		if i%2 == 0 {
			apply(t, a, EncodeDelete(k))
		} else {
			apply(t, a, EncodePut(k, []byte("changed")), EncodePut([]byte(fmt.Sprintf("new%d", i)), nil))
		}
	}
	if err := a.db.Flush(); err != nil {
		t.Fatal(err)
	}
	s := <-saved
	b, _ := openMachine(t, fs, 2)
	if err := restore(b, s); err != nil {
		t.Fatal(err)
	}
	if b.applied != at {
		t.Fatalf("restored applied index %d, want %d (the index at the Snapshot call)", b.applied, at)
	}
	sameContents(t, "restored from the point-in-time snapshot", b, want)
}

// With the OS file system, the snapshot's tables are hard links of the
// database's (zero copy), and so are the restored database's.
func TestSnapshotTablesAreHardLinks(t *testing.T) {
	checkNoPebbleGoroutines(t)
	root := t.TempDir()
	fs := vfs.Default
	a := New(Options{Dir: filepath.Join(root, "a"), FS: fs})(1, 1).(*machine)
	t.Cleanup(func() { a.Close() })
	if _, err := a.Open(context.Background()); err != nil {
		t.Fatal(err)
	}
	fill(t, a, "k", 300, map[string]string{})
	if err := a.db.Flush(); err != nil {
		t.Fatal(err)
	}
	c, err := a.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	hostDir := filepath.Join(root, "host")
	if err := os.Mkdir(hostDir, 0o755); err != nil {
		t.Fatal(err)
	}
	h := &hostFiles{fs: fs, dir: hostDir}
	var w bytes.Buffer
	if err := c.Save(context.Background(), &w, h); err != nil {
		t.Fatal(err)
	}
	c.Release()
	live := filepath.Join(a.dir, a.dbName)
	b := New(Options{Dir: filepath.Join(root, "b"), FS: fs})(1, 2).(*machine)
	t.Cleanup(func() { b.Close() })
	if _, err := b.Open(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := b.Restore(context.Background(), bytes.NewReader(w.Bytes()), h.files); err != nil {
		t.Fatal(err)
	}
	restored := filepath.Join(b.dir, b.dbName)
	tables := 0
	for _, f := range h.files {
		if !strings.HasSuffix(f.Name, ".sst") {
			continue
		}
		tables++
		for _, other := range []string{live, restored} {
			if !sameFile(t, f.Path, filepath.Join(other, f.Name)) {
				t.Errorf("table %s of the snapshot is not a hard link of %s's", f.Name, other)
			}
		}
	}
	if tables == 0 {
		t.Fatal("no table in the snapshot")
	}
	// The files Pebble writes to are copies: a restored database must not
	// write into the host's snapshot.
	for _, f := range h.files {
		if !immutableFile(f.Name) && sameFile(t, f.Path, filepath.Join(restored, f.Name)) {
			t.Errorf("mutable file %s is shared between the snapshot and the restored database", f.Name)
		}
	}
}

func sameFile(t *testing.T, a, b string) bool {
	t.Helper()
	sa, err := os.Stat(a)
	if err != nil {
		t.Fatal(err)
	}
	sb, err := os.Stat(b)
	if err != nil {
		if os.IsNotExist(err) {
			return false
		}
		t.Fatal(err)
	}
	return os.SameFile(sa, sb)
}

// A snapshot that is not this package's, or whose files are missing, is
// refused, and the replica keeps its state.
func TestRestoreRefusesBadSnapshots(t *testing.T) {
	checkNoPebbleGoroutines(t)
	fs := vfs.NewMem()
	a, _ := openMachine(t, fs, 1)
	fill(t, a, "a", 40, map[string]string{})
	good := takeSnapshot(t, a)

	b, _ := openMachine(t, fs, 2)
	bModel := map[string]string{}
	fill(t, b, "b", 10, bModel)
	bApplied := b.applied

	withoutManifest := snap{stream: good.stream}
	for _, f := range good.files {
		if !strings.HasPrefix(f.Name, "MANIFEST") {
			withoutManifest.files = append(withoutManifest.files, f)
		}
	}
	withoutManifest.stream = bytes.Clone(good.stream)
	withoutManifest.stream[len(withoutManifest.stream)-1]-- // the count matches again
	wrongIndex := snap{stream: append([]byte(snapshotMagic), SnapshotVersion, 99, byte(len(good.files))), files: good.files}
	badName := snap{stream: good.stream, files: append([]statemachine.SnapshotFile(nil), good.files...)}
	badName.files[0].Name = "../escape"

	for name, s := range map[string]snap{
		"empty stream":          {files: good.files},
		"foreign magic":         {stream: []byte("notskiff\x01\x01\x01"), files: good.files},
		"newer version":         {stream: append([]byte(snapshotMagic), SnapshotVersion+1, 1, byte(len(good.files))), files: good.files},
		"trailing bytes":        {stream: append(bytes.Clone(good.stream), 0), files: good.files},
		"file count mismatch":   {stream: good.stream, files: good.files[1:]},
		"missing MANIFEST":      withoutManifest,
		"applied index differs": wrongIndex,
		"bad file name":         badName,
	} {
		err := restore(b, s)
		if err == nil {
			t.Errorf("%s: restore succeeded", name)
		}
		t.Logf("%s: %v", name, err)
		if b.applied != bApplied {
			t.Fatalf("%s: applied %d after a refused restore, want %d", name, b.applied, bApplied)
		}
		sameContents(t, name, b, bModel)
		checkLayout(t, fs, 2)
	}
	// The replica still works and still restores a good snapshot.
	apply(t, b, EncodePut([]byte("x"), []byte("y")))
	if err := restore(b, good); err != nil {
		t.Fatal(err)
	}
	sameContents(t, "after the good restore", b, contents(t, a))
}

// Lookups run concurrently with Apply, Snapshot and Restore (the host
// calls them so with ConcurrentLookup); run under -race this checks the
// locking, and every answer must be a whole state.
func TestLookupConcurrentWithApplyAndRestore(t *testing.T) {
	checkNoPebbleGoroutines(t)
	fs := vfs.NewMem()
	src, _ := openMachine(t, fs, 1)
	fill(t, src, "k", 64, map[string]string{})
	s := takeSnapshot(t, src)

	m, _ := openMachine(t, fs, 2)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for range 3 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				resp, err := m.Lookup(EncodeScan([]byte("k"), 0))
				if err != nil {
					errs <- err
					return
				}
				pairs, err := DecodeScan(resp)
				if err != nil {
					errs <- err
					return
				}
				// Either the restored 64 keys, or what the applies left
				// (a multiple of 8 keys: one Apply writes 8).
				if n := len(pairs); n != 64 && n%8 != 0 {
					errs <- fmt.Errorf("scan saw %d keys: a partial batch", n)
					return
				}
			}
		})
	}
	for round := range 20 {
		var cmds [][]byte
		for i := range 8 {
			cmds = append(cmds, EncodePut([]byte(fmt.Sprintf("k%05d", 100+round*8+i)), []byte("v")))
		}
		apply(t, m, cmds...)
		if round%5 == 4 {
			if err := restore(m, s); err != nil {
				t.Fatal(err)
			}
		}
	}
	close(stop)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}
