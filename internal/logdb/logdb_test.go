package logdb

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/cockroachdb/pebble/v2/vfs/errorfs"
	"github.com/skiffdb/skiff/raftpb"
)

func TestUnsafeNoSyncWarnsOnce(t *testing.T) {
	var buf bytes.Buffer
	db, err := Open(vfs.NewMem(), "db", Options{UnsafeNoSync: true, Logger: slog.New(slog.NewTextHandler(&buf, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for i := uint64(1); i <= 10; i++ {
		if err := db.SaveBatch([]Update{{Group: 1, Entries: []raftpb.Entry{{Index: i, Term: 1}}}}); err != nil {
			t.Fatal(err)
		}
	}
	if n := strings.Count(buf.String(), "UnsafeNoSync"); n != 1 {
		t.Fatalf("%d warnings: %s", n, buf.String())
	}
}

// TestSyncFailureIsFinal: after an fsync error every write returns
// ErrStorageFailed — no retry of the fsync, no panic — and reads go on.
func TestSyncFailureIsFinal(t *testing.T) {
	inj := &injector{}
	db, err := Open(errorfs.Wrap(vfs.NewCrashableMem(), inj), "db", Options{Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.SaveBatch([]Update{{Group: 1, Entries: []raftpb.Entry{{Index: 1, Term: 1}}}}); err != nil {
		t.Fatal(err)
	}
	inj.err.Store(error(syscall.EIO))
	inj.count.Store(1)
	inj.kind.Store(2)
	for i := 0; i < 3; i++ {
		err := db.SaveBatch([]Update{{Group: 1, Entries: []raftpb.Entry{{Index: 2, Term: 1}}}})
		if !errors.Is(err, ErrStorageFailed) {
			t.Fatalf("write %d: %v", i, err)
		}
	}
	if err := db.Compact(1, 1); !errors.Is(err, ErrStorageFailed) {
		t.Fatalf("compact: %v", err)
	}
	if last, _ := db.Group(1).LastIndex(); last != 1 {
		t.Fatalf("last = %d", last)
	}
}

// TestGroupCommitGather: concurrent writers that stop at different times,
// and an fsync failure while they run, never leave a leader waiting for
// callers that will not come (the straggler wait has no timer: it ends when
// every woken caller has returned). Every call returns, and afterwards no
// caller is counted as still returning.
func TestGroupCommitGather(t *testing.T) {
	for _, failAt := range []int32{0, 40} {
		t.Run(fmt.Sprintf("failAt=%d", failAt), func(t *testing.T) {
			inj := &injector{}
			db, err := Open(errorfs.Wrap(vfs.NewMem(), inj), "db", Options{SegmentSize: 16 << 10, Logger: quiet})
			if err != nil {
				t.Fatal(err)
			}
			const writers = 16
			var wg sync.WaitGroup
			var calls atomic.Int32
			for w := 0; w < writers; w++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := uint64(1); i <= uint64(5+10*w); i++ {
						if calls.Add(1) == failAt {
							inj.err.Store(error(syscall.EIO))
							inj.count.Store(1)
							inj.kind.Store(2)
						}
						err := db.SaveBatch([]Update{{Group: raftpb.GroupID(w + 1), Entries: []raftpb.Entry{{Index: i, Term: 1}}}})
						if err != nil {
							if failAt == 0 || !errors.Is(err, ErrStorageFailed) {
								t.Error(err)
							}
							return
						}
					}
				}()
			}
			wg.Wait()
			db.mu.Lock()
			draining, gathering := db.mu.draining, db.mu.gathering
			db.mu.Unlock()
			if draining != 0 || gathering {
				t.Fatalf("after all callers returned: draining=%d gathering=%v", draining, gathering)
			}
			if err := db.Close(); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestReadErrorsAreTheCoresSentinels: the raft core tells a compacted or
// unavailable index from a storage failure with errors.Is against the
// raftpb sentinels; logdb must return those very values, or the core would
// treat a routine compacted read as a broken log.
func TestReadErrorsAreTheCoresSentinels(t *testing.T) {
	db, err := Open(vfs.NewMem(), "db", Options{Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var ents []raftpb.Entry
	for i := uint64(1); i <= 10; i++ {
		ents = append(ents, raftpb.Entry{Index: i, Term: 1})
	}
	if err := db.SaveBatch([]Update{{Group: 1, Entries: ents}}); err != nil {
		t.Fatal(err)
	}
	if err := db.Compact(1, 5); err != nil {
		t.Fatal(err)
	}
	l := db.Group(1)
	if _, err := l.Term(3); !errors.Is(err, raftpb.ErrCompacted) {
		t.Fatalf("Term(3) after Compact(5) = %v, want raftpb.ErrCompacted", err)
	}
	if _, err := l.Entries(2, 8, 1<<20); !errors.Is(err, raftpb.ErrCompacted) {
		t.Fatalf("Entries(2, 8) = %v, want raftpb.ErrCompacted", err)
	}
	if _, err := l.Term(11); !errors.Is(err, raftpb.ErrUnavailable) {
		t.Fatalf("Term(11) = %v, want raftpb.ErrUnavailable", err)
	}
}

// TestLargeRecordCacheKeepsRecord: the cached entries of a record of at
// least slabSize point into the record itself, so its batch must never be
// refilled; later batches (which reuse batch structs) must not change what
// the cache returns for earlier entries.
func TestLargeRecordCacheKeepsRecord(t *testing.T) {
	db, err := Open(vfs.NewMem(), "db", Options{Logger: quiet, CacheBytes: 64 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	data := func(g, i uint64) []byte {
		return bytes.Repeat(fmt.Appendf(nil, "[g%d i%d]", g, i), 100)
	}
	const per = 400 // ~400 KiB per record, above slabSize
	for round := uint64(0); round < 6; round++ {
		var us []Update
		for g := uint64(1); g <= 2; g++ {
			ents := make([]raftpb.Entry, per)
			for k := range ents {
				i := round*per + uint64(k) + 1
				ents[k] = raftpb.Entry{Index: i, Term: 1, Data: data(g, i)}
			}
			us = append(us, Update{Group: raftpb.GroupID(g), Entries: ents})
		}
		if err := db.SaveBatch(us); err != nil {
			t.Fatal(err)
		}
	}
	for g := uint64(1); g <= 2; g++ {
		ents, err := db.Group(raftpb.GroupID(g)).Entries(1, 6*per+1, 1<<62)
		if err != nil || len(ents) != 6*per {
			t.Fatalf("group %d: %d entries, %v", g, len(ents), err)
		}
		for _, e := range ents {
			if !bytes.Equal(e.Data, data(g, e.Index)) {
				t.Fatalf("group %d: entry %d was overwritten: %.40q", g, e.Index, e.Data)
			}
		}
	}
	if st := db.Stats(); st.DiskReads != 0 {
		t.Fatalf("%d chunks read from disk: the entries were not served from the cache", st.DiskReads)
	}
}
