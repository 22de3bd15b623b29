package snapshot

import (
	"fmt"
	"io"
	"math/rand/v2"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/skiffdb/skiff/raftpb"
)

// TestCrashAtEveryOperation crashes save, receive, publish and GC at every
// file operation in turn (REQUIREMENTS §6). For each crash point the disk
// is cloned as a power cut would leave it — only synced data, all of it, or
// a random part of what was not synced — and reopened. Open must then
// succeed and find the old or the new snapshot, fully verified (every
// file's CRC32C): never a torn one, never neither.
func TestCrashAtEveryOperation(t *testing.T) {
	cfgs := []struct {
		name string
		cfg  func(seed uint64) vfs.CrashCloneCfg
	}{
		{"synced-only", func(uint64) vfs.CrashCloneCfg { return vfs.CrashCloneCfg{} }},
		{"unsynced-50%", func(seed uint64) vfs.CrashCloneCfg {
			return vfs.CrashCloneCfg{UnsyncedDataPercent: 50, RNG: rand.New(rand.NewPCG(seed, 1))}
		}},
		{"unsynced-100%", func(seed uint64) vfs.CrashCloneCfg {
			return vfs.CrashCloneCfg{UnsyncedDataPercent: 100, RNG: rand.New(rand.NewPCG(seed, 2))}
		}},
	}
	for _, w := range crashWorkloads {
		t.Run(w.name, func(t *testing.T) {
			// A clean run counts the operations.
			mem := crashBase(t)
			fs := newTracingFS(mem)
			s := mustOpen(t, fs, "/g1")
			fs.take()
			if err := w.run(s); err != nil {
				t.Fatalf("clean run: %v", err)
			}
			ops := fs.take()
			if len(ops) < 5 {
				t.Fatalf("only %d operations: %q", len(ops), ops)
			}
			for k := range ops {
				for _, c := range cfgs {
					for seed := uint64(1); seed <= 3; seed++ {
						if c.name == "synced-only" && seed > 1 {
							break
						}
						name := fmt.Sprintf("op%d(%s)/%s/seed%d", k, ops[k], c.name, seed)
						checkCrashAt(t, name, w, k, c.cfg(seed))
					}
				}
			}
		})
	}
}

// crashWorkload moves the store from snapshot 90 (the latest of the base)
// to 100.
type crashWorkload struct {
	name string
	run  func(s *Store) error
}

// payload is the content of snapshot 100's files: several 4 KiB blocks, so
// that a clone with part of the unsynced blocks tears files in the middle.
var payload = map[string]string{
	"data": string(make([]byte, 10000)) + "end",
	"same": "unchanged in 90 and 100",
	"new":  "new in 100",
}

var crashWorkloads = []crashWorkload{
	{"save", func(s *Store) error {
		w, err := s.Create(testMeta(100))
		if err != nil {
			return err
		}
		defer w.Abort()
		for _, name := range []string{"data", "same", "new"} {
			fw, err := w.CreateFile(name)
			if err != nil {
				return err
			}
			if _, err := io.WriteString(fw, payload[name]); err != nil {
				return err
			}
			if err := fw.Close(); err != nil {
				return err
			}
		}
		return w.Commit() // publishes and GCs snapshot 80
	}},
	{"receive", func(s *Store) error {
		m := testMeta(100)
		for _, name := range []string{"data", "same", "new"} {
			p := payload[name]
			m.Files = append(m.Files, raftpb.SnapshotFile{Name: name, Size: uint64(len(p)), CRC32C: crc32c(0, []byte(p))})
		}
		tx, err := s.Receive(m)
		if err != nil {
			return err
		}
		defer tx.Close()
		for _, f := range tx.Files() {
			if f.Complete() {
				continue // "same" is hard-linked from 90
			}
			rf, err := tx.OpenFile(f.Name, 0)
			if err != nil {
				return err
			}
			p := payload[f.Name]
			if _, err := io.WriteString(rf, p[:len(p)/2]); err != nil {
				return err
			}
			if err := rf.Sync(); err != nil {
				return err
			}
			if _, err := io.WriteString(rf, p[len(p)/2:]); err != nil {
				return err
			}
			if err := rf.Close(); err != nil {
				return err
			}
		}
		return tx.Commit()
	}},
	{"gc-at-unref", func(s *Store) error {
		// Snapshot 80 is held by a reader while 100 is saved; its removal
		// happens at the last Unref.
		r, err := s.OpenReader(80)
		if err != nil {
			return err
		}
		w, err := s.Create(testMeta(100))
		if err != nil {
			return err
		}
		defer w.Abort()
		if _, err := io.WriteString(w, payload["data"]); err != nil {
			return err
		}
		if err := w.Commit(); err != nil {
			return err
		}
		return r.Close()
	}},
}

// crashBase returns a crashable disk holding snapshots 80 and 90, synced.
func crashBase(t *testing.T) *vfs.MemFS {
	t.Helper()
	mem := vfs.NewCrashableMem()
	s := mustOpen(t, mem, "/g1")
	save(t, s, 80, "eighty")
	w, err := s.Create(testMeta(90))
	if err != nil {
		t.Fatal(err)
	}
	for _, kv := range [][2]string{{"data", "ninety"}, {"same", payload["same"]}} {
		fw, _ := w.CreateFile(kv[0])
		io.WriteString(fw, kv[1])
		fw.Close()
	}
	if err := w.Commit(); err != nil {
		t.Fatal(err)
	}
	return mem
}

func checkCrashAt(t *testing.T, name string, w crashWorkload, k int, cfg vfs.CrashCloneCfg) {
	t.Helper()
	mem := crashBase(t)
	fs := newTracingFS(mem)
	s := mustOpen(t, fs, "/g1")
	cp := fs.crashWhen(mem, cfg, func(i int, _ string) bool { return i == k })
	w.run(s) // fails at the crash point (or later ones)
	if cp.clone == nil {
		t.Fatalf("%s: never reached operation %d", name, k)
	}

	s2, err := Open(cp.clone, "/g1", Options{Group: 1})
	if err != nil {
		t.Fatalf("%s: Open after the crash: %v", name, err)
	}
	latest, ok := s2.Latest()
	if !ok {
		t.Fatalf("%s: no snapshot after the crash", name)
	}
	r, err := s2.OpenReader(0)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	defer r.Close()
	if err := r.Verify(); err != nil {
		t.Fatalf("%s: latest snapshot %d is torn: %v", name, latest.Index, err)
	}
	switch latest.Index {
	case 90:
		checkContent(t, name, r, map[string]string{"data": "ninety", "same": payload["same"]})
	case 100:
		want := payload
		if w.name == "gc-at-unref" {
			want = map[string]string{"data": payload["data"]}
		}
		checkContent(t, name, r, want)
	default:
		t.Fatalf("%s: latest snapshot is %d, want 90 or 100", name, latest.Index)
	}
	if sk := s2.Skipped(); len(sk) > 0 {
		t.Fatalf("%s: Open skipped %+v", name, sk)
	}
	// Whatever the crash left, the next save works.
	if err := trySave(s2, 200, "after"); err != nil {
		t.Fatalf("%s: save after the crash: %v", name, err)
	}
}

func checkContent(t *testing.T, name string, r *Reader, want map[string]string) {
	t.Helper()
	files := r.Files()
	if len(files) != len(want) {
		t.Fatalf("%s: snapshot %d has files %+v, want %d", name, r.Index(), files, len(want))
	}
	for _, f := range files {
		fr, err := r.OpenFile(f.Name)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		b, _ := io.ReadAll(fr)
		fr.Close()
		if string(b) != want[f.Name] {
			t.Fatalf("%s: snapshot %d file %s = %q, want %q", name, r.Index(), f.Name, b, want[f.Name])
		}
	}
}
