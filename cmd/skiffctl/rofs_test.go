package main

import (
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// TestOverlayFS: every change is visible through the overlay and none
// reaches the disk — the operations logdb.Open and its WAL use: a write
// into an existing segment, create + rename over a file (the manifest),
// remove, mkdir, list.
func TestOverlayFS(t *testing.T) {
	dir := t.TempDir()
	seg, man := filepath.Join(dir, "000001.wal"), filepath.Join(dir, "MANIFEST")
	if err := os.WriteFile(seg, []byte("0123456789"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(man, []byte("old manifest"), 0o644); err != nil {
		t.Fatal(err)
	}
	before := treeDigest(t, dir)
	o := newOverlayFS()

	// Copy-on-write into an existing file, past its end too.
	f, err := o.OpenReadWrite(seg, vfs.WriteCategoryUnspecified)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("AB"), 3); err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("XYZ"), 9); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 16)
	n, err := f.ReadAt(buf, 0)
	if string(buf[:n]) != "012AB5678XYZ" || err != io.EOF {
		t.Fatalf("read back %q %v", buf[:n], err)
	}
	if st, err := f.Stat(); err != nil || st.Size() != 12 {
		t.Fatalf("stat %v %v, want 12 bytes", st, err)
	}
	f.Close()

	// Create, then rename over a disk file: reads see the new content.
	tmp := filepath.Join(dir, "MANIFEST.tmp")
	nf, err := o.Create(tmp, vfs.WriteCategoryUnspecified)
	if err != nil {
		t.Fatal(err)
	}
	nf.Write([]byte("new manifest"))
	nf.Close()
	if err := o.Rename(tmp, man); err != nil {
		t.Fatal(err)
	}
	rf, err := o.Open(man)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(rf)
	rf.Close()
	if string(b) != "new manifest" {
		t.Fatalf("manifest through the overlay: %q", b)
	}

	// Remove a disk file; rename a disk file; mkdir.
	if err := o.Remove(seg); err != nil {
		t.Fatal(err)
	}
	if _, err := o.Stat(seg); !os.IsNotExist(err) {
		t.Fatalf("removed file still there: %v", err)
	}
	if err := o.Remove(seg); !os.IsNotExist(err) {
		t.Fatalf("second remove: %v", err)
	}
	if err := o.MkdirAll(filepath.Join(dir, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	names, err := o.List(dir)
	if err != nil || !slices.Equal(names, []string{"MANIFEST", "sub"}) {
		t.Fatalf("list %q %v, want MANIFEST and sub", names, err)
	}
	if err := o.Rename(man, filepath.Join(dir, "M2")); err != nil {
		t.Fatal(err)
	}
	if names, _ := o.List(dir); !slices.Equal(names, []string{"M2", "sub"}) {
		t.Fatalf("list after rename %q", names)
	}

	// Disk: untouched. The overlay says what it absorbed.
	if after := treeDigest(t, dir); !maps.Equal(before, after) {
		t.Fatalf("the disk changed: %v -> %v", before, after)
	}
	if len(o.Writes()) < 5 {
		t.Fatalf("absorbed %q", o.Writes())
	}
	// A file opened read-only refuses writes.
	if err := os.WriteFile(seg+".2", []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	ro, err := o.Open(seg + ".2")
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	if _, err := ro.Write([]byte("y")); err == nil {
		t.Fatal("a read-only file took a write")
	}
}
