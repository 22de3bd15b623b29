package snapshot

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/skiffdb/skiff/raftpb"
)

// testMeta returns a meta for group 1 at index.
func testMeta(index uint64) raftpb.SnapshotMeta {
	return raftpb.SnapshotMeta{
		Group: 1, Index: index, Term: 1 + index/100,
		Membership: raftpb.Membership{ConfigChangeIndex: 3, Voters: []raftpb.Member{{ID: 1, Addr: "a"}, {ID: 2, Addr: "b"}}},
	}
}

func mustOpen(t testing.TB, fs vfs.FS, dir string) *Store {
	t.Helper()
	s, err := Open(fs, dir, Options{Group: 1})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return s
}

// save saves a snapshot at index whose DataFile holds data.
func save(t testing.TB, s *Store, index uint64, data string) {
	t.Helper()
	if err := trySave(s, index, data); err != nil {
		t.Fatalf("save %d: %v", index, err)
	}
}

func trySave(s *Store, index uint64, data string) error {
	w, err := s.Create(testMeta(index))
	if err != nil {
		return err
	}
	defer w.Abort()
	if _, err := io.WriteString(w, data); err != nil {
		return err
	}
	return w.Commit()
}

// readData returns the DataFile of the snapshot at index (0: latest).
func readData(t testing.TB, s *Store, index uint64) string {
	t.Helper()
	r, err := s.OpenReader(index)
	if err != nil {
		t.Fatalf("OpenReader(%d): %v", index, err)
	}
	defer r.Close()
	if err := r.Verify(); err != nil {
		t.Fatalf("Verify: %v", err)
	}
	f, err := r.OpenFile(DataFile)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b, err := io.ReadAll(f)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestStoreSaveOpenRead(t *testing.T) {
	fs := vfs.NewMem()
	s := mustOpen(t, fs, "g1")
	save(t, s, 10, "v1")
	save(t, s, 20, "v2")
	save(t, s, 30, "v3")
	if got := readData(t, s, 0); got != "v3" {
		t.Fatalf("latest = %q", got)
	}
	if n := len(s.List()); n != DefaultRetained {
		t.Fatalf("%d snapshots retained, want %d", n, DefaultRetained)
	}
	if err := trySave(s, 30, "again"); !errors.Is(err, ErrStale) {
		t.Fatalf("saving the same index: %v, want ErrStale", err)
	}
	s2 := mustOpen(t, fs, "g1")
	if m, ok := s2.Latest(); !ok || m.Index != 30 || m.Membership.ConfigChangeIndex != 3 {
		t.Fatalf("reopened latest = %+v %v", m, ok)
	}
	if got := readData(t, s2, 20); got != "v2" {
		t.Fatalf("snapshot 20 = %q", got)
	}
}

func TestStoreReceiveResume(t *testing.T) {
	fs := vfs.NewMem()
	src := mustOpen(t, fs, "leader")
	w, err := src.Create(testMeta(50))
	if err != nil {
		t.Fatal(err)
	}
	a := bytes.Repeat([]byte("a"), 10000)
	b := bytes.Repeat([]byte("b"), 7000)
	fa, _ := w.CreateFile("a")
	fa.Write(a)
	fb, _ := w.CreateFile("b")
	fb.Write(b)
	if err := w.Commit(); err != nil {
		t.Fatal(err)
	}
	meta, _ := src.Latest()

	dst := mustOpen(t, fs, "follower")
	tx, err := dst.Receive(meta)
	if err != nil {
		t.Fatal(err)
	}
	rf, err := tx.OpenFile("a", 0)
	if err != nil {
		t.Fatal(err)
	}
	rf.Write(a[:4000])
	rf.Close()
	tx.Close()

	// Restart: the receiving directory survives and resumes.
	dst = mustOpen(t, fs, "follower")
	tx, err = dst.Receive(meta)
	if err != nil {
		t.Fatal(err)
	}
	if !tx.Resumed() || tx.Files()[0].Present != 4000 {
		t.Fatalf("resumed=%v files=%+v", tx.Resumed(), tx.Files())
	}
	rf, err = tx.OpenFile("a", 4000)
	if err != nil {
		t.Fatal(err)
	}
	rf.Write(a[4000:])
	if _, err := rf.Write([]byte("x")); !errors.Is(err, ErrInvalid) {
		t.Fatalf("write past end: %v", err)
	}
	rf.Close()
	rf, _ = tx.OpenFile("b", 0)
	rf.Write(b)
	rf.Close()
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	if m, _ := dst.Latest(); m.Index != 50 {
		t.Fatalf("latest %d", m.Index)
	}
	r, _ := dst.OpenReader(0)
	if err := r.Verify(); err != nil {
		t.Fatal(err)
	}
	r.Close()
}

// A publish whose rename fails (not stale, the store not failed) leaves the
// transaction open, as Commit documents: a second Commit publishes it, and
// the store does not forget its receiving directory meanwhile.
func TestReceiveCommitRenameFails(t *testing.T) {
	fs := newTracingFS(vfs.NewMem())
	src := mustOpen(t, fs, "leader")
	w, err := src.Create(testMeta(50))
	if err != nil {
		t.Fatal(err)
	}
	w.Write([]byte("state"))
	if err := w.Commit(); err != nil {
		t.Fatal(err)
	}
	meta, _ := src.Latest()
	dst := mustOpen(t, fs, "follower")
	tx, err := dst.Receive(meta)
	if err != nil {
		t.Fatal(err)
	}
	rf, _ := tx.OpenFile(DataFile, 0)
	rf.Write([]byte("state"))
	rf.Close()
	errRename := errors.New("rename refused (test)")
	fs.before = func(op string) error {
		if strings.HasPrefix(op, "rename: follower/") {
			return errRename
		}
		return nil
	}
	if err := tx.Commit(); !errors.Is(err, errRename) {
		t.Fatalf("commit: %v, want the rename's error", err)
	}
	fs.before = nil
	if _, err := dst.Receive(meta); !errors.Is(err, ErrBusy) {
		t.Fatalf("a second Receive while the first is open: %v, want ErrBusy", err)
	}
	if err := tx.Commit(); err != nil {
		t.Fatalf("commit again: %v", err)
	}
	if m, _ := dst.Latest(); m.Index != 50 {
		t.Fatalf("latest %d, want 50", m.Index)
	}
}
