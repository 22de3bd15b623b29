package snapshot

import (
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// TestStoreConcurrency interleaves saves, installs (receives), GC and
// readers at random (seeded choices; run under -race). No reader ever sees
// a missing or changed file, and the disk never holds more than the retained
// snapshots plus those in flight (REQUIREMENTS §25).
func TestStoreConcurrency(t *testing.T) {
	for seed := uint64(1); seed <= 3; seed++ {
		t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) { runConcurrency(t, seed) })
	}
}

func runConcurrency(t *testing.T, seed uint64) {
	const (
		retained = 2
		savers   = 2
		readers  = 4
		rounds   = 60
	)
	fs := vfs.NewMem()
	s, err := Open(fs, "/g1", Options{Group: 1, Retained: retained})
	if err != nil {
		t.Fatal(err)
	}
	var next atomic.Uint64 // snapshot indexes, increasing
	next.Store(1)
	var wg sync.WaitGroup
	var failed atomic.Bool
	fail := func(format string, args ...any) {
		failed.Store(true)
		t.Errorf(format, args...)
	}
	stop := make(chan struct{})
	content := func(index uint64, name string, n int) string {
		return fmt.Sprintf("%s@%d:%0*d", name, index, n, index)
	}

	for i := range savers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(seed, uint64(i)))
			for range rounds {
				index := next.Add(1)
				w, err := s.Create(testMeta(index))
				if errors.Is(err, ErrStale) {
					continue
				} else if err != nil {
					fail("Create: %v", err)
					return
				}
				for f := range 1 + rng.IntN(3) {
					name := fmt.Sprintf("f%d", f)
					fw, _ := w.CreateFile(name)
					io.WriteString(fw, content(index, name, rng.IntN(5000)))
				}
				if err := w.Commit(); err != nil && !errors.Is(err, ErrStale) {
					fail("Commit: %v", err)
				}
				w.Abort()
			}
		}()
	}
	// The installer receives snapshots, sometimes in two attempts.
	wg.Add(1)
	go func() {
		defer wg.Done()
		rng := rand.New(rand.NewPCG(seed, 100))
	round:
		for range rounds {
			index := next.Add(1)
			files := map[string]string{}
			for f := range 1 + rng.IntN(3) {
				name := fmt.Sprintf("f%d", f)
				files[name] = content(index, name, rng.IntN(5000))
			}
			m := receiveMeta(index, files)
			tx, err := s.Receive(m)
			if errors.Is(err, ErrStale) {
				continue
			} else if err != nil {
				fail("Receive: %v", err)
				return
			}
			for _, st := range tx.Files() {
				half := len(files[st.Name]) / 2
				rf, err := tx.OpenFile(st.Name, 0)
				if err != nil {
					fail("OpenFile: %v", err)
					return
				}
				io.WriteString(rf, files[st.Name][:half])
				rf.Close()
				if rng.IntN(2) == 0 { // a broken connection: resume
					tx.Close()
					if tx, err = s.Receive(m); err != nil {
						if !errors.Is(err, ErrStale) {
							fail("resume: %v", err)
						}
						continue round
					}
					if !tx.Resumed() {
						fail("a retry of the same snapshot did not resume")
					}
				}
				rf, err = tx.OpenFile(st.Name, uint64(half))
				if err != nil {
					fail("OpenFile at %d: %v", half, err)
					return
				}
				io.WriteString(rf, files[st.Name][half:])
				rf.Close()
			}
			if err := tx.Commit(); err != nil && !errors.Is(err, ErrStale) {
				fail("receive Commit: %v", err)
			}
			tx.Close()
		}
	}()
	var readersDone sync.WaitGroup
	for i := range readers {
		readersDone.Add(1)
		go func() {
			defer readersDone.Done()
			rng := rand.New(rand.NewPCG(seed, 200+uint64(i)))
			for {
				select {
				case <-stop:
					return
				default:
				}
				var index uint64
				if list := s.List(); len(list) > 0 && rng.IntN(2) == 0 {
					index = list[rng.IntN(len(list))].Index
				}
				r, err := s.OpenReader(index)
				if errors.Is(err, ErrNotFound) {
					continue // GC'd between List and OpenReader: fine
				} else if err != nil {
					fail("OpenReader: %v", err)
					return
				}
				if err := r.Verify(); err != nil {
					fail("reader of %d: %v", r.Index(), err)
				}
				for _, f := range r.Files() {
					fr, err := r.OpenFile(f.Name)
					if err != nil {
						fail("reader of %d: %v", r.Index(), err)
						continue
					}
					b, _ := io.ReadAll(fr)
					fr.Close()
					if want := fmt.Sprintf("%s@%d:", f.Name, r.Index()); len(b) < len(want) || string(b[:len(want)]) != want {
						fail("reader of %d: %s holds %.20q", r.Index(), f.Name, b)
					}
				}
				r.Close()
			}
		}()
	}
	// GC and the disk bound, checked all along.
	var checkerDone sync.WaitGroup
	checkerDone.Add(1)
	go func() {
		defer checkerDone.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			if err := s.GC(); err != nil {
				fail("GC: %v", err)
			}
			names, _ := fs.List("/g1")
			published, temp := 0, 0
			for _, n := range names {
				if _, _, k, ok := parseDirName(n); ok && k == kindPublished {
					published++
				} else if ok && (k == kindGenerating || k == kindReceiving) {
					temp++
				}
			}
			// retained + one per reader (each holds at most one) + one
			// publish in progress; temp: one per saver + one receive.
			if published > retained+readers+1 || temp > savers+1 {
				fail("disk holds %d published and %d temp snapshots: %v", published, temp, names)
			}
			if failed.Load() {
				return
			}
		}
	}()
	wg.Wait()
	close(stop)
	readersDone.Wait()
	checkerDone.Wait()
	if failed.Load() {
		return
	}
	// At rest: exactly the retained snapshots, no temp directories.
	names, _ := fs.List("/g1")
	if len(names) != retained {
		t.Fatalf("at rest the disk holds %v", names)
	}
	s2 := mustOpen(t, fs, "/g1")
	for _, m := range s2.List() {
		r, _ := s2.OpenReader(m.Index)
		if err := r.Verify(); err != nil {
			t.Fatal(err)
		}
		r.Close()
	}
}
