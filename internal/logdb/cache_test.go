package logdb

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/skiffdb/skiff/raftpb"
)

// checkCache compares c with want (the live entries) and checks the block
// invariants: every slot outside the live range is zero (so a block handed
// back holds no stale Data), no block past the last live entry is kept,
// and an empty cache keeps no block.
func checkCache(c *cache, want []raftpb.Entry) error {
	if c.len() != len(want) {
		return fmt.Errorf("len %d, want %d", c.len(), len(want))
	}
	for k := range want {
		if e := c.at(k); e.Index != want[k].Index || e.Term != want[k].Term || len(e.Data) != len(want[k].Data) {
			return fmt.Errorf("entry %d = %d@%d (%d B), want %d@%d (%d B)", k, e.Index, e.Term, len(e.Data), want[k].Index, want[k].Term, len(want[k].Data))
		}
	}
	if len(want) == 0 {
		if len(c.blocks) != 0 {
			return fmt.Errorf("empty cache keeps %d blocks", len(c.blocks))
		}
		return nil
	}
	if first := want[0].Index; c.firstIndex() != first {
		return fmt.Errorf("firstIndex %d, want %d", c.firstIndex(), first)
	}
	if want := c.bhead + (c.head+c.n-1)>>cacheBlockShift + 1; len(c.blocks) != want {
		return fmt.Errorf("%d blocks, want %d", len(c.blocks), want)
	}
	for bi := range c.blocks {
		for s := range cacheBlockLen {
			p := (bi-c.bhead)<<cacheBlockShift + s - c.head // live position of the slot
			live := bi >= c.bhead && p >= 0 && p < c.n
			if bi < c.bhead {
				if c.blocks[bi] != nil {
					return fmt.Errorf("freed block %d still referenced", bi)
				}
				break
			}
			if e := c.blocks[bi][s]; !live && (e.Index != 0 || e.Data != nil) {
				return fmt.Errorf("slot %d of block %d outside the live range holds entry %d", s, bi, e.Index)
			}
		}
	}
	return nil
}

// TestCacheBlocks runs random pushes, suffix truncations and compactions
// (including ones that cross and empty whole blocks) against a slice and
// checks the cache's entries, the bytes each call reports (the byte bound's
// accounting) and the block invariants after every call.
func TestCacheBlocks(t *testing.T) {
	for seed := range uint64(20) {
		rng := rand.New(rand.NewPCG(seed, 7))
		var (
			c    cache
			pool cacheBlocks
			want []raftpb.Entry
			term uint64 = 1
		)
		next := uint64(1 + rng.IntN(100))
		size := func(es []raftpb.Entry) (n int64) {
			for i := range es {
				n += int64(es[i].Size())
			}
			return n
		}
		for step := range 3000 {
			var op string
			switch k := rng.IntN(10); {
			case k < 6:
				n := 1 + rng.IntN(3*cacheBlockLen)
				op = fmt.Sprintf("push %d from %d", n, next)
				for range n {
					e := raftpb.Entry{Index: next, Term: term, Data: make([]byte, rng.IntN(40))}
					if got := c.push(e, &pool); got != int64(e.Size()) {
						t.Fatalf("seed %d step %d: push returned %d, entry size %d", seed, step, got, e.Size())
					}
					want = append(want, e)
					next++
				}
			case k < 8:
				if len(want) == 0 {
					continue
				}
				i := want[0].Index + uint64(rng.IntN(len(want)+1))
				op = fmt.Sprintf("truncateFrom %d", i)
				drop := want[i-want[0].Index:]
				if got, w := c.truncateFrom(i, &pool), size(drop); got != w {
					t.Fatalf("seed %d step %d: %s freed %d, want %d", seed, step, op, got, w)
				}
				want = want[:i-want[0].Index]
				next, term = i, term+1
			default:
				if len(want) == 0 {
					continue
				}
				i := want[0].Index + uint64(rng.IntN(len(want)+2))
				op = fmt.Sprintf("compactTo %d", i)
				k := min(int(i-want[0].Index), len(want))
				if got, w := c.compactTo(i, &pool), size(want[:k]); got != w {
					t.Fatalf("seed %d step %d: %s freed %d, want %d", seed, step, op, got, w)
				}
				want = want[k:]
				if len(want) == 0 {
					next = max(next, i)
				}
			}
			if err := checkCache(&c, want); err != nil {
				t.Fatalf("seed %d step %d after %s: %v", seed, step, op, err)
			}
			if len(pool.free) > maxFreeCacheBlocks {
				t.Fatalf("seed %d: free list holds %d blocks", seed, len(pool.free))
			}
			for _, b := range pool.free {
				for s := range b {
					if b[s].Index != 0 || b[s].Data != nil {
						t.Fatalf("seed %d step %d after %s: a block on the free list holds entry %d", seed, step, op, b[s].Index)
					}
				}
			}
		}
	}
}

// TestCacheReusesBlocks: a cache whose prefix is evicted as fast as its
// tail grows (the steady state of a busy group) allocates no block once
// warm, and never moves an entry: an entry's slot stays where it was
// pushed until it is evicted.
func TestCacheReusesBlocks(t *testing.T) {
	var (
		c    cache
		pool cacheBlocks
	)
	const live = 10 * cacheBlockLen
	idx := uint64(1)
	push := func() {
		c.push(raftpb.Entry{Index: idx, Term: 1}, &pool)
		idx++
		if c.len() > live {
			c.compactTo(idx-live, &pool)
		}
	}
	for range 4 * live {
		push()
	}
	allocs := testing.AllocsPerRun(100, func() {
		for range cacheBlockLen {
			push()
		}
	})
	if allocs != 0 {
		t.Fatalf("%.1f allocations per %d pushes in steady state, want 0", allocs, cacheBlockLen)
	}
	slot := c.at(c.len() - 1)
	pinned := slot.Index
	for range live / 2 {
		push()
	}
	if k := int(pinned - c.firstIndex()); c.at(k) != slot || slot.Index != pinned {
		t.Fatalf("entry %d moved", pinned)
	}
}
