package snapshot

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/cockroachdb/pebble/v2/vfs/errorfs"
	"github.com/skiffdb/skiff/raftpb"
)

// Bad input gets a clear error and nothing lost (issue 4). Each case is one
// test; the meta decoder's cases are in meta_test.go.

// tree lists every file under dir with its size and CRC, to show that a
// refused input changed nothing.
func tree(t testing.TB, fs vfs.FS, dir string) string {
	t.Helper()
	var lines []string
	var walk func(string)
	walk = func(d string) {
		names, err := fs.List(d)
		if err != nil {
			t.Fatal(err)
		}
		slices.Sort(names)
		for _, n := range names {
			p := fs.PathJoin(d, n)
			fi, err := fs.Stat(p)
			if err != nil {
				t.Fatal(err)
			}
			if fi.IsDir() {
				lines = append(lines, p+"/")
				walk(p)
				continue
			}
			size, crc, err := fileCRC(fs, p, make([]byte, 4096))
			if err != nil {
				t.Fatal(err)
			}
			lines = append(lines, fmt.Sprintf("%s %d %08x", p, size, crc))
		}
	}
	walk(dir)
	return strings.Join(lines, "\n")
}

func receiveMeta(index uint64, files map[string]string) raftpb.SnapshotMeta {
	m := testMeta(index)
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		m.Files = append(m.Files, raftpb.SnapshotFile{Name: n, Size: uint64(len(files[n])), CRC32C: crc32c(0, []byte(files[n]))})
	}
	return m
}

func TestBadInputFileNamesRefusedBeforeAnyChange(t *testing.T) {
	for _, name := range []string{"a/b", "../escape", "/etc/passwd", "", "..", "meta"} {
		fs := vfs.NewMem()
		s := mustOpen(t, fs, "/g1")
		save(t, s, 10, "ten")
		before := tree(t, fs, "/")
		m := testMeta(20)
		m.Files = []raftpb.SnapshotFile{{Name: name, Size: 1}}
		if _, err := s.Receive(m); !errors.Is(err, ErrBadFileName) {
			t.Errorf("Receive with file %q: %v, want ErrBadFileName", name, err)
		}
		if after := tree(t, fs, "/"); after != before {
			t.Errorf("file %q: the disk changed:\n%s\n---\n%s", name, before, after)
		}
	}
	// Duplicates.
	fs := vfs.NewMem()
	s := mustOpen(t, fs, "/g1")
	m := testMeta(20)
	m.Files = []raftpb.SnapshotFile{{Name: "x", Size: 1}, {Name: "x", Size: 1}}
	if _, err := s.Receive(m); !errors.Is(err, ErrBadFileName) {
		t.Errorf("duplicate names: %v", err)
	}
	// The writer refuses them as well.
	w, err := s.Create(testMeta(30))
	if err != nil {
		t.Fatal(err)
	}
	defer w.Abort()
	for _, name := range []string{"../x", "a/b", "meta"} {
		if _, err := w.CreateFile(name); !errors.Is(err, ErrBadFileName) {
			t.Errorf("CreateFile(%q): %v", name, err)
		}
	}
	w.CreateFile("ok")
	if _, err := w.CreateFile("ok"); !errors.Is(err, ErrBadFileName) {
		t.Errorf("CreateFile twice: %v", err)
	}
}

// An unknown format version is rejected before any destructive step: Open
// changes nothing at all, not even the leftovers it would otherwise remove.
func TestBadInputUnknownFormatBeforeAnyChange(t *testing.T) {
	fs := vfs.NewMem()
	s := mustOpen(t, fs, "/g1")
	save(t, s, 10, "ten")
	// A newer release published snapshot 20 and left a .generating behind.
	m := testMeta(20)
	m.FormatVersion = raftpb.SnapshotFormatVersion + 1
	fs.MkdirAll("/g1/"+publishedName(20), 0o755)
	if err := writeFileSync(fs, "/g1/"+publishedName(20)+"/meta", rawRecord(&m, m.FormatVersion)); err != nil {
		t.Fatal(err)
	}
	fs.MkdirAll("/g1/"+tempName(30, 9, kindGenerating), 0o755)
	before := tree(t, fs, "/")
	if _, err := Open(fs, "/g1", Options{Group: 1}); !errors.Is(err, ErrUnknownFormat) {
		t.Fatalf("Open: %v, want ErrUnknownFormat", err)
	}
	if after := tree(t, fs, "/"); after != before {
		t.Fatalf("the disk changed:\n%s\n---\n%s", before, after)
	}
	// A receive of a newer format is refused too, before creating anything.
	before = tree(t, fs, "/")
	if _, err := s.Receive(m); !errors.Is(err, ErrUnknownFormat) {
		t.Fatalf("Receive: %v", err)
	}
	if after := tree(t, fs, "/"); after != before {
		t.Fatalf("the disk changed:\n%s\n---\n%s", before, after)
	}
}

func TestBadInputTruncatedOrFlippedMetaFallsBack(t *testing.T) {
	for name, damage := range map[string]func(b []byte) []byte{
		"truncated":   func(b []byte) []byte { return b[:len(b)-3] },
		"bit-flipped": func(b []byte) []byte { b[len(b)/2] ^= 0x10; return b },
		"empty":       func([]byte) []byte { return nil },
	} {
		t.Run(name, func(t *testing.T) {
			fs := vfs.NewMem()
			s := mustOpen(t, fs, "/g1")
			save(t, s, 10, "ten")
			save(t, s, 20, "twenty")
			p := "/g1/" + publishedName(20) + "/meta"
			f, _ := fs.Open(p)
			b, _ := io.ReadAll(f)
			f.Close()
			writeFileSync(fs, p, damage(b))
			s2 := mustOpen(t, fs, "/g1")
			if m, _ := s2.Latest(); m.Index != 10 {
				t.Fatalf("latest %d, want the fallback 10", m.Index)
			}
			sk := s2.Skipped()
			if len(sk) != 1 || sk[0].Index != 20 || !errors.Is(sk[0].Err, ErrCorruptMeta) {
				t.Fatalf("skipped %+v", sk)
			}
			// Nothing lost: the damaged snapshot is quarantined, not removed.
			if _, err := fs.Stat("/g1/" + sk[0].Dir + "/data"); err != nil {
				t.Fatalf("quarantined data: %v", err)
			}
		})
	}
}

func TestBadInputSizeOrCRCMismatch(t *testing.T) {
	files := map[string]string{"a": "0123456789", "b": "xyz"}
	fs := vfs.NewMem()
	s := mustOpen(t, fs, "/g1")
	tx, err := s.Receive(receiveMeta(10, files))
	if err != nil {
		t.Fatal(err)
	}
	// "a" short by one byte, "b" the right size but wrong bytes.
	rf, _ := tx.OpenFile("a", 0)
	io.WriteString(rf, files["a"][:9])
	rf.Close()
	rf, _ = tx.OpenFile("b", 0)
	io.WriteString(rf, "xyZ")
	rf.Close()
	if err := tx.Commit(); !errors.Is(err, ErrChecksum) || !strings.Contains(err.Error(), "a has 9 of 10") {
		t.Fatalf("short file: %v", err)
	}
	rf, _ = tx.OpenFile("a", 9)
	io.WriteString(rf, files["a"][9:])
	rf.Close()
	if err := tx.Commit(); !errors.Is(err, ErrChecksum) || !strings.Contains(err.Error(), "b: crc") {
		t.Fatalf("wrong bytes: %v", err)
	}
	if st := tx.Files()[1]; st.Present != 0 {
		t.Fatalf("the bad file is kept: %+v", st)
	}
	if _, ok := s.Latest(); ok {
		t.Fatal("a failed commit published a snapshot")
	}
	rf, _ = tx.OpenFile("b", 0)
	io.WriteString(rf, files["b"])
	rf.Close()
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	// A published file changed behind our back: sizes at Open, CRC at Verify.
	writeFileSync(fs, "/g1/"+publishedName(10)+"/b", []byte("xyZ"))
	r, _ := s.OpenReader(0)
	if err := r.Verify(); !errors.Is(err, ErrChecksum) {
		t.Fatalf("Verify: %v", err)
	}
	r.Close()
}

func TestBadInputChunkPastEnd(t *testing.T) {
	fs := vfs.NewMem()
	s := mustOpen(t, fs, "/g1")
	tx, err := s.Receive(receiveMeta(10, map[string]string{"a": "0123"}))
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Abort()
	rf, _ := tx.OpenFile("a", 0)
	io.WriteString(rf, "01")
	if _, err := io.WriteString(rf, "2345"); !errors.Is(err, ErrInvalid) {
		t.Fatalf("write past the end: %v", err)
	}
	rf.Close()
	if st := tx.Files()[0]; st.Present != 2 {
		t.Fatalf("the refused chunk was written: %+v", st)
	}
	if _, err := tx.OpenFile("a", 3); !errors.Is(err, ErrInvalid) {
		t.Fatalf("offset past what is present: %v", err)
	}
	if _, err := tx.OpenFile("nope", 0); !errors.Is(err, ErrInvalid) {
		t.Fatalf("a file not in the meta: %v", err)
	}
}

// enospc fails file writes whose path contains match while on is set.
type enospc struct {
	on    bool
	match string
}

func (e *enospc) MaybeError(op errorfs.Op) error {
	if e.on && (op.Kind == errorfs.OpFileWrite || op.Kind == errorfs.OpFileWriteAt) && strings.Contains(op.Path, e.match) {
		return syscall.ENOSPC
	}
	return nil
}

func (e *enospc) String() string { return "enospc" }

// ENOSPC during a save: the save fails cleanly, the previous snapshot is
// intact and loadable, and once space is back the next save succeeds
// without reopening the store (braft#461, REQUIREMENTS §7). (The executor
// test checks that nothing is compacted.)
func TestENOSPCDuringSave(t *testing.T) {
	mem := vfs.NewMem()
	inj := &enospc{match: ".generating"}
	fs := errorfs.Wrap(mem, inj)
	s := mustOpen(t, fs, "/g1")
	save(t, s, 10, "ten")
	big := string(bytes.Repeat([]byte("x"), 3*writeBufferSize))
	inj.on = true
	for _, data := range []string{"small", big} {
		err := trySave(s, 20, data)
		if !errors.Is(err, syscall.ENOSPC) {
			t.Fatalf("save on a full disk: %v", err)
		}
	}
	// The meta write fails too (braft#461: ENOSPC writing the meta).
	w, _ := s.Create(testMeta(20))
	if err := w.Commit(); !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("meta on a full disk: %v", err)
	}
	if m, _ := s.Latest(); m.Index != 10 {
		t.Fatalf("latest %d", m.Index)
	}
	if got := readData(t, s, 0); got != "ten" {
		t.Fatalf("previous snapshot: %q", got)
	}
	names, _ := mem.List("/g1")
	if len(names) != 1 {
		t.Fatalf("leftovers after failed saves: %v", names)
	}
	inj.on = false
	save(t, s, 20, big)
	if got := readData(t, s, 0); got != big {
		t.Fatal("save after space came back")
	}
}

// ENOSPC while receiving: a clean, retryable error; the partial data stays
// for a resume, which continues from what is consistent (the copier checks
// PrefixCRC against the sender before trusting it).
func TestENOSPCWhileReceiving(t *testing.T) {
	mem := vfs.NewMem()
	inj := &enospc{match: ".receiving/a"}
	fs := errorfs.Wrap(mem, inj)
	s := mustOpen(t, fs, "/g1")
	content := "0123456789abcdefghij"
	m := receiveMeta(10, map[string]string{"a": content})
	tx, err := s.Receive(m)
	if err != nil {
		t.Fatal(err)
	}
	rf, _ := tx.OpenFile("a", 0)
	io.WriteString(rf, content[:8])
	inj.on = true
	if _, err := io.WriteString(rf, content[8:16]); !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("write on a full disk: %v", err)
	}
	if err := rf.Close(); !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("Close after ENOSPC: %v", err)
	}
	tx.Close()
	inj.on = false

	tx, err = s.Receive(m)
	if err != nil {
		t.Fatal(err)
	}
	st := tx.Files()[0]
	if !tx.Resumed() || st.Present != 8 {
		t.Fatalf("resume: resumed=%v %+v", tx.Resumed(), st)
	}
	crc, err := tx.PrefixCRC("a", st.Present)
	if err != nil || crc != crc32c(0, []byte(content[:8])) {
		t.Fatalf("PrefixCRC = %08x, %v", crc, err)
	}
	rf, _ = tx.OpenFile("a", st.Present)
	io.WriteString(rf, content[8:])
	rf.Close()
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
}
