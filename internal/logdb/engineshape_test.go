package logdb

import (
	"bytes"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/cockroachdb/pebble/v2/vfs/errorfs"
	"github.com/skiffdb/skiff/raftpb"
)

// TestEngineShapeCompactCrash drives group commit the way the engine does:
// a few workers, each saving one batch for all its groups per pass and
// compacting them every few passes (each group's Compact from its own
// goroutine, so they coalesce), over tiny segments so that segments are
// rolled, freed, recycled and their metadata rewritten (one group per
// worker goes idle and is compacted empty) while writes go on. A crash
// clone is taken at a uniformly random file op.
//
// Live, after each SaveBatch returns: the worker reads its own writes.
// After reopening the clone: every acknowledged append and compaction is
// there, the HardState is at least the acknowledged one, and each log is
// contiguous with the data written.
func TestEngineShapeCompactCrash(t *testing.T) {
	for _, seed := range seeds(t) {
		t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) {
			t.Logf("seed %d (rerun with -seed=%d)", seed, seed)
			const workers, mine, passes, per, every = 4, 4, 60, 2, 7
			const groups = workers * mine
			mem := vfs.NewCrashableMem()
			var ackedLast, ackedCompact [groups]atomic.Uint64
			var atClone [2][groups]uint64
			cp := &crashPoint{mem: mem, rng: rand.New(rand.NewPCG(seed, 3)), anyOp: true}
			cp.onClone = func() {
				for i := range groups {
					atClone[0][i] = ackedLast[i].Load()
					atClone[1][i] = ackedCompact[i].Load()
				}
			}
			db, err := Open(errorfs.Wrap(mem, cp), "db", Options{SegmentSize: 4096, CacheBytes: 2048, Logger: slog.New(slog.DiscardHandler), regionMinBytes: regionMin(seed), splitEncodeBytes: splitMin(seed)})
			if err != nil {
				t.Fatal(err)
			}
			data := func(g, i uint64) []byte { return fmt.Appendf(nil, "g%d-i%d-%0*d", g, i, int(g%5)*8, 0) }
			var wg sync.WaitGroup
			for w := 0; w < workers; w++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					// next[k]: the next index of group k. The worker's last group
					// stops appending halfway and is then compacted to its last
					// index (an empty log): its metadata alone pins old segments,
					// so GC must rewrite it at the tail.
					var next, compactTo [mine]uint64
					for k := range next {
						next[k] = 1
					}
					for p := 1; p <= passes; p++ {
						var us []Update
						for k := range mine {
							if k == mine-1 && p > passes/2 {
								continue
							}
							g := uint64(w*mine + k + 1)
							ents := make([]raftpb.Entry, per)
							for j := range ents {
								ents[j] = raftpb.Entry{Index: next[k] + uint64(j), Term: 1, Data: data(g, next[k]+uint64(j))}
							}
							us = append(us, Update{Group: raftpb.GroupID(g), Entries: ents, HardState: raftpb.HardState{Term: 1, Commit: next[k] + per - 1}})
						}
						if err := db.SaveBatch(us); err != nil {
							t.Error(err)
							return
						}
						for k := range us {
							next[k] += per
							g := w*mine + k
							ackedLast[g].Store(next[k] - 1)
							l := db.Group(us[k].Group)
							if last, _ := l.LastIndex(); last != next[k]-1 {
								t.Errorf("group %d: LastIndex %d right after saving up to %d", g+1, last, next[k]-1)
								return
							}
							ents, err := l.Entries(next[k]-per, next[k], 1<<30)
							if err != nil || len(ents) != per || !bytes.Equal(ents[per-1].Data, data(uint64(g+1), next[k]-1)) {
								t.Errorf("group %d: reading back [%d, %d): %d entries, %v", g+1, next[k]-per, next[k], len(ents), err)
								return
							}
						}
						if p%every != 0 {
							continue
						}
						var cw sync.WaitGroup
						for k := range mine {
							if compactTo[k] == 0 || compactTo[k] < ackedCompact[w*mine+k].Load()+1 {
								compactTo[k] = next[k] - 1
								continue
							}
							cw.Add(1)
							go func() {
								defer cw.Done()
								g := w*mine + k
								if err := db.Compact(raftpb.GroupID(g+1), compactTo[k]); err != nil {
									t.Error(err)
									return
								}
								ackedCompact[g].Store(compactTo[k])
							}()
						}
						cw.Wait()
						for k := range mine {
							compactTo[k] = next[k] - 1
						}
					}
				}()
			}
			wg.Wait()
			if t.Failed() {
				return
			}
			st := db.Stats()
			segs := db.wal.Segments()
			db.Close()
			t.Logf("%d entries in %d batches, %d rewrites, live segments %v", st.Entries, st.Batches, st.Rewrites, segs)
			// Compaction must have let GC free segments while the workers
			// ran (about 16 are written in all). Not necessarily the oldest:
			// a worker scheduled ahead of the others may write all its
			// entries — the live ones included — into the first segments
			// (seen under load: segments 4 and 5 holding entries 99–120
			// of one worker's groups, 6–8 and 10–12 freed).
			// Segments are numbered from 1 and never reused, so the last
			// one's number is how many were created.
			if len(segs) == 0 || int(segs[len(segs)-1])-len(segs) < 4 {
				t.Fatalf("live segments %v: GC freed fewer than 4", segs)
			}
			if cp.clone == nil {
				t.Fatalf("no crash clone taken (only %d ops)", cp.ops.Load())
			}
			db, err = Open(cp.clone, "db", Options{Logger: slog.New(slog.DiscardHandler)})
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			for i := range groups {
				g := uint64(i + 1)
				l := db.Group(raftpb.GroupID(g))
				first, _ := l.FirstIndex()
				last, _ := l.LastIndex()
				hs, _, _ := l.InitialState()
				switch {
				case last < atClone[0][i]:
					t.Fatalf("group %d: last %d < %d acknowledged before the crash", g, last, atClone[0][i])
				case first < atClone[1][i]+1:
					t.Fatalf("group %d: first %d, but compaction to %d was acknowledged", g, first, atClone[1][i])
				case first > last+1:
					t.Fatalf("group %d: first %d > last %d + 1", g, first, last)
				case hs.Commit < atClone[0][i]:
					t.Fatalf("group %d: HardState commit %d < %d acknowledged", g, hs.Commit, atClone[0][i])
				}
				if last < first {
					continue
				}
				ents, err := l.Entries(first, last+1, 1<<62)
				if err != nil || uint64(len(ents)) != last-first+1 {
					t.Fatalf("group %d: [%d, %d]: %d entries, %v", g, first, last, len(ents), err)
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
