package logdb

import (
	"bytes"
	"flag"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/cockroachdb/pebble/v2/vfs/errorfs"
	"github.com/skiffdb/skiff/raftpb"
)

var (
	seedFlag  = flag.Uint64("seed", 0, "seed for the randomized logdb tests (0: time-based)")
	seedsFlag = flag.Int("seeds", 6, "number of seeds the randomized logdb tests run")
)

// mgroup is the model of one group's storage.
type mgroup struct {
	hs          raftpb.HardState
	snapIndex   uint64
	snapTerm    uint64
	first       uint64
	compactTerm uint64
	ents        []raftpb.Entry // [first, last]
}

func (g *mgroup) last() uint64 { return g.first + uint64(len(g.ents)) - 1 }

func (g *mgroup) term(i uint64) uint64 {
	if i == g.first-1 {
		return g.compactTerm
	}
	return g.ents[i-g.first].Term
}

func (g *mgroup) clone() *mgroup {
	c := *g
	c.ents = slices.Clone(g.ents)
	return &c
}

type model map[raftpb.GroupID]*mgroup

func (m model) clone() model {
	c := make(model, len(m))
	for id, g := range m {
		c[id] = g.clone()
	}
	return c
}

func (m model) get(id raftpb.GroupID) *mgroup {
	if g := m[id]; g != nil {
		return g
	}
	return &mgroup{first: 1}
}

// crashPoint takes a crash clone of the FS at the n-th file operation.
type crashPoint struct {
	mem *vfs.MemFS
	rng *rand.Rand // under mu
	ops atomic.Int64
	at  atomic.Int64
	// anyOp: instead of cloning at op number at, keep a clone taken at an
	// op chosen uniformly among all ops so far (reservoir sampling: clone
	// at op n with probability 1/n), so a clone is always taken however
	// many ops the run turns out to need.
	anyOp   bool
	mu      sync.Mutex
	clone   *vfs.MemFS
	onClone func() // runs at the moment of the clone
}

func (c *crashPoint) String() string { return "crash point" }

func (c *crashPoint) MaybeError(op errorfs.Op) error {
	n := c.ops.Add(1)
	if c.anyOp {
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.rng.Int64N(n) == 0 {
			c.clone = c.mem.CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: c.rng.IntN(101), RNG: c.rng})
			c.onClone()
		}
		return nil
	}
	if n == c.at.Load() {
		c.mu.Lock()
		c.clone = c.mem.CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: c.rng.IntN(101), RNG: c.rng})
		if c.onClone != nil {
			c.onClone()
		}
		c.mu.Unlock()
	}
	return nil
}

func seeds(t *testing.T) []uint64 {
	if *seedFlag != 0 {
		return []uint64{*seedFlag}
	}
	base := uint64(time.Now().UnixNano())
	out := make([]uint64, *seedsFlag)
	for i := range out {
		out[i] = base + uint64(i)
	}
	return out
}

// checkModel compares every group of m (and any extra group in db).
func checkModel(t *testing.T, db *DB, m model, groups int) error {
	if err := checkLogBytes(db, groups); err != nil {
		return err
	}
	for id := raftpb.GroupID(1); id <= raftpb.GroupID(groups); id++ {
		mg := m.get(id)
		l := db.Group(id)
		hs, snap, _ := l.InitialState()
		first, _ := l.FirstIndex()
		last, _ := l.LastIndex()
		if hs != mg.hs || snap.Index != mg.snapIndex || snap.Term != mg.snapTerm || first != mg.first || last != mg.last() {
			return fmt.Errorf("group %d: db hs=%+v snap=%d/%d [%d,%d], model hs=%+v snap=%d/%d [%d,%d]",
				id, hs, snap.Index, snap.Term, first, last, mg.hs, mg.snapIndex, mg.snapTerm, mg.first, mg.last())
		}
		if tm, err := l.Term(first - 1); err != nil || tm != mg.compactTerm {
			return fmt.Errorf("group %d: term(%d) = %d %v, model %d", id, first-1, tm, err, mg.compactTerm)
		}
		if _, err := l.Term(first - 2); first >= 2 && err != ErrCompacted {
			return fmt.Errorf("group %d: term below first-1: %v", id, err)
		}
		if first > last {
			continue
		}
		ents, err := l.Entries(first, last+1, 1<<62)
		if err != nil || len(ents) != len(mg.ents) {
			return fmt.Errorf("group %d: Entries(%d,%d) = %d entries, %v; model %d", id, first, last+1, len(ents), err, len(mg.ents))
		}
		for i := range ents {
			e, w := ents[i], mg.ents[i]
			if e.Index != w.Index || e.Term != w.Term || e.Type != w.Type || !bytes.Equal(e.Data, w.Data) {
				return fmt.Errorf("group %d: entry %d = %d@%d %q, model %d@%d %q", id, i, e.Index, e.Term, e.Data, w.Index, w.Term, w.Data)
			}
			if tm, _ := l.Term(e.Index); tm != e.Term {
				return fmt.Errorf("group %d: Term(%d) = %d, entry has %d", id, e.Index, tm, e.Term)
			}
		}
		// A random sub-range, with a size limit, from the middle.
		lo := first + uint64(len(ents))/3
		part, err := l.Entries(lo, last+1, 200)
		if err != nil || len(part) == 0 || part[0].Index != lo {
			return fmt.Errorf("group %d: Entries(%d, %d, 200): %d entries, %v", id, lo, last+1, len(part), err)
		}
	}
	return nil
}

type modelRun struct {
	t      *testing.T
	rng    *rand.Rand
	groups int
	m      model
	db     *DB
	cp     *crashPoint
	opts   Options
	term   uint64
}

func (r *modelRun) open(mem *vfs.MemFS) {
	r.cp = &crashPoint{mem: mem, rng: rand.New(rand.NewPCG(r.rng.Uint64(), 1))}
	db, err := Open(errorfs.Wrap(mem, r.cp), "db", r.opts)
	if err != nil {
		r.t.Fatalf("open: %v", err)
	}
	r.db = db
}

// step runs one random operation against db and returns the model after it
// (the caller's model is unchanged if the op fails).
func (r *modelRun) step() (model, error) {
	rng := r.rng
	next := r.m.clone()
	gid := raftpb.GroupID(1 + rng.IntN(r.groups))
	g := next.get(gid)
	switch k := rng.IntN(100); {
	case k < 70: // save for 1-4 groups
		var us []Update
		for _, id := range rng.Perm(r.groups)[:1+rng.IntN(min(4, r.groups))] {
			gid := raftpb.GroupID(id + 1)
			g := next.get(gid)
			u := Update{Group: gid}
			from := g.last() + 1
			if rng.IntN(5) == 0 && len(g.ents) > 0 {
				from = g.first + uint64(rng.IntN(len(g.ents))) // conflicting suffix
				r.term++
			}
			n := 1 + rng.IntN(20)
			for i := 0; i < n; i++ {
				data := make([]byte, rng.IntN(300))
				for j := range data {
					data[j] = byte(rng.Uint32())
				}
				u.Entries = append(u.Entries, raftpb.Entry{Index: from + uint64(i), Term: r.term, Type: raftpb.EntryNormal, Data: data})
			}
			if rng.IntN(2) == 0 {
				u.HardState = raftpb.HardState{Term: r.term, Vote: raftpb.ReplicaID(rng.IntN(3)), Commit: from - 1}
				g.hs = u.HardState
			}
			g.ents = append(g.ents[:from-g.first], u.Entries...)
			next[gid] = g
			us = append(us, u)
		}
		return next, r.db.SaveBatch(us)
	case k < 82: // compact
		if len(g.ents) == 0 {
			return r.m, nil
		}
		i := g.first + uint64(rng.IntN(len(g.ents)))
		dbg("compact g%d %d", gid, i)
		g.compactTerm = g.term(i)
		g.ents = g.ents[i+1-g.first:]
		g.first = i + 1
		next[gid] = g
		return next, r.db.Compact(gid, i)
	case k < 88: // reset to a snapshot
		keep := rng.IntN(2) == 0 && len(g.ents) > 0
		var meta raftpb.SnapshotMeta
		if keep {
			meta.Index = g.first + uint64(rng.IntN(len(g.ents)))
			meta.Term = g.term(meta.Index)
			g.ents = g.ents[meta.Index+1-g.first:]
		} else {
			meta.Index = g.last() + uint64(rng.IntN(50))
			r.term++
			meta.Term = r.term
			g.ents = nil
		}
		dbg("reset g%d %d/%d keep=%v", gid, meta.Index, meta.Term, keep)
		g.first, g.compactTerm = meta.Index+1, meta.Term
		g.snapIndex, g.snapTerm = meta.Index, meta.Term
		g.hs.Commit = max(g.hs.Commit, meta.Index)
		next[gid] = g
		return next, r.db.ResetToSnapshot(gid, meta, keep)
	case k < 92: // snapshot pointer only
		if len(g.ents) == 0 {
			return r.m, nil
		}
		i := g.first + uint64(rng.IntN(len(g.ents)))
		meta := raftpb.SnapshotMeta{Index: i, Term: g.term(i)}
		g.snapIndex, g.snapTerm = meta.Index, meta.Term
		next[gid] = g
		return next, r.db.SaveBatch([]Update{{Group: gid, Snapshot: &meta}})
	default: // remove
		dbg("remove g%d", gid)
		delete(next, gid)
		return next, r.db.RemoveGroup(gid)
	}
}

// TestModelCrash runs random operations over many groups against an
// in-memory model and crash-clones at random file operations (mid-write,
// mid-roll, mid-deletion). After every reopen the state must be the model
// before or after the operation in flight: every acknowledged write is
// there, nothing unacknowledged appears partially, ranges are contiguous.
func TestModelCrash(t *testing.T) {
	for _, seed := range seeds(t) {
		t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) {
			t.Logf("seed %d (rerun with -seed=%d)", seed, seed)
			rng := rand.New(rand.NewPCG(seed, seed))
			r := &modelRun{t: t, rng: rng, groups: 2 + rng.IntN(30), m: model{}, term: 1,
				opts: Options{SegmentSize: int64(4096 << rng.IntN(4)), CacheBytes: int64(rng.IntN(3)) * 20000,
					Logger: slog.New(slog.DiscardHandler), regionMinBytes: regionMin(seed), splitEncodeBytes: splitMin(seed)}}
			if r.opts.CacheBytes == 0 {
				r.opts.CacheBytes = -1
			}
			r.open(vfs.NewCrashableMem())
			const steps = 400
			for i := 0; i < steps; i++ {
				before := r.m
				armed := rng.IntN(10) == 0
				if armed {
					r.cp.at.Store(r.cp.ops.Load() + 1 + int64(rng.IntN(8)))
				}
				next, err := r.step()
				if err != nil {
					t.Fatalf("step %d: %v", i, err)
				}
				r.m = next
				r.cp.mu.Lock()
				clone := r.cp.clone
				r.cp.clone = nil
				r.cp.mu.Unlock()
				r.cp.at.Store(0)
				if err := checkModel(t, r.db, r.m, r.groups); err != nil {
					t.Fatalf("step %d (live): %v", i, err)
				}
				if clone == nil {
					continue
				}
				dbg("crash at step %d", i)
				// Crash: reopen the clone; the op in flight may or may not be there.
				r.db.Close()
				r.open(clone)
				if err := checkModel(t, r.db, r.m, r.groups); err != nil {
					if err2 := checkModel(t, r.db, before, r.groups); err2 != nil {
						t.Fatalf("step %d after crash: matches neither the model after the op (%v) nor before (%v)", i, err, err2)
					}
					r.m = before
				}
			}
			r.db.Close()
		})
	}
}

// TestGroupCommitCrash: many goroutines append concurrently (group commit)
// to their own groups; a crash clone is taken mid-run. Every append
// acknowledged before the clone must be in it, and each group's log must
// be a prefix of what was attempted.
func TestGroupCommitCrash(t *testing.T) {
	for _, seed := range seeds(t)[:min(3, *seedsFlag)] {
		t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) {
			t.Logf("seed %d (rerun with -seed=%d)", seed, seed)
			const workers, groupsPer, appends = 8, 4, 60
			mem := vfs.NewCrashableMem()
			var acked [workers * groupsPer]atomic.Uint64
			var ackedAtClone []uint64
			// The number of file ops depends on how well the writes
			// coalesce, so the clone is taken at a uniformly random op of
			// the whole run.
			cp := &crashPoint{mem: mem, rng: rand.New(rand.NewPCG(seed, 2)), anyOp: true}
			cp.onClone = func() {
				ackedAtClone = make([]uint64, len(acked))
				for i := range acked {
					ackedAtClone[i] = acked[i].Load()
				}
			}
			db, err := Open(errorfs.Wrap(mem, cp), "db", Options{SegmentSize: 8192, Logger: slog.New(slog.DiscardHandler), regionMinBytes: regionMin(seed), splitEncodeBytes: splitMin(seed)})
			if err != nil {
				t.Fatal(err)
			}
			data := func(g, i uint64) []byte { return fmt.Appendf(nil, "g%d-i%d", g, i) }
			var wg sync.WaitGroup
			for w := 0; w < workers; w++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := uint64(1); i <= appends; i++ {
						var us []Update
						for k := 0; k < groupsPer; k++ {
							g := uint64(w*groupsPer + k + 1)
							us = append(us, Update{Group: raftpb.GroupID(g), Entries: []raftpb.Entry{{Index: i, Term: 1, Data: data(g, i)}}})
						}
						if err := db.SaveBatch(us); err != nil {
							t.Error(err)
							return
						}
						for k := 0; k < groupsPer; k++ {
							acked[w*groupsPer+k].Store(i)
						}
					}
				}()
			}
			wg.Wait()
			st := db.Stats()
			db.Close()
			t.Logf("%d appends in %d batches", st.Entries, st.Batches)
			if st.Batches >= st.Entries/groupsPer {
				t.Logf("no coalescing observed (possible on a busy machine)")
			}
			if cp.clone == nil {
				t.Fatalf("no crash clone taken (only %d ops)", cp.ops.Load())
			}
			db, err = Open(cp.clone, "db", Options{Logger: slog.New(slog.DiscardHandler)})
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			for i := range acked {
				g := uint64(i + 1)
				l := db.Group(raftpb.GroupID(g))
				last, _ := l.LastIndex()
				if last < ackedAtClone[i] {
					t.Fatalf("group %d: last %d < %d acknowledged before the crash", g, last, ackedAtClone[i])
				}
				if last == 0 {
					continue
				}
				ents, err := l.Entries(1, last+1, 1<<62)
				if err != nil || uint64(len(ents)) != last {
					t.Fatalf("group %d: %d entries, %v", g, len(ents), err)
				}
				for _, e := range ents {
					if !bytes.Equal(e.Data, data(g, e.Index)) {
						t.Fatalf("group %d: entry %d = %q", g, e.Index, e.Data)
					}
				}
			}
		})
	}
}

// regionMin sends every other seed's SaveBatch calls through saveRegion
// (encoded outside db.mu into a reserved region), whatever their size: the
// test data is far below the default threshold.
func regionMin(seed uint64) int {
	if seed%2 == 1 {
		return 1
	}
	return 0
}

// splitMin encodes every third seed's multi-update SaveBatch calls in two
// halves at once (encodeSplit), whatever their size; with regionMin, one
// seed in six goes both ways.
func splitMin(seed uint64) int {
	if seed%3 == 0 {
		return 1
	}
	return 0
}
