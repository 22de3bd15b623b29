package logdb

import "github.com/skiffdb/skiff/raftpb"

// cache holds a contiguous suffix of a group's log in memory. It belongs
// to its group and is guarded by the group's mutex; only the applying
// leader changes it (applies are serialized), readers hold the mutex for
// reading.
//
// Entries live in fixed blocks of cacheBlockLen rather than in one slice:
// a cache of a long log holds millions of entries, and one slice of them
// was regrown by doubling (a growslice copying the whole cache, on fresh
// zeroed memory) while it filled and was shifted down by a copy of the
// whole cache every time the evicted prefix reached half of it. With
// blocks, pushing allocates at most one block per cacheBlockLen entries
// (and none when the DB's free list has one), evicting returns whole
// blocks, and no entry is ever moved. Slots outside the live range are
// always zero, so a block can be handed back without clearing it and
// holds no stale Data pointers.
type cache struct {
	blocks []*cacheBlock // blocks[bhead:] hold the live entries
	bhead  int
	head   int // slot of the first live entry in blocks[bhead]
	n      int // live entries, contiguous indexes
}

const (
	cacheBlockShift = 6
	cacheBlockLen   = 1 << cacheBlockShift // 3 KiB of entries
	cacheBlockMask  = cacheBlockLen - 1
)

type cacheBlock [cacheBlockLen]raftpb.Entry

// cacheBlocks is the DB's free list of emptied cache blocks, shared by all
// groups (one group's evicted blocks feed another's appends). Used only by
// the applying leader, like slab. It keeps at most maxFree blocks so that
// a cache that shrank does not stay allocated here.
type cacheBlocks struct {
	free []*cacheBlock
}

const maxFreeCacheBlocks = 64

func (p *cacheBlocks) get() *cacheBlock {
	if n := len(p.free); n > 0 {
		b := p.free[n-1]
		p.free[n-1] = nil
		p.free = p.free[:n-1]
		return b
	}
	return new(cacheBlock)
}

// put takes a block whose slots are all zero.
func (p *cacheBlocks) put(b *cacheBlock) {
	if len(p.free) < maxFreeCacheBlocks {
		p.free = append(p.free, b)
	}
}

func (c *cache) len() int { return c.n }

// at returns the k-th live entry, 0 <= k < len(). Its Data is shared
// with the cache: do not modify it.
func (c *cache) at(k int) *raftpb.Entry {
	p := c.head + k
	return &c.blocks[c.bhead+p>>cacheBlockShift][p&cacheBlockMask]
}

func (c *cache) firstIndex() uint64 {
	if c.n == 0 {
		return 0
	}
	return c.at(0).Index
}

// continues reports whether entries starting at i can be pushed after
// truncation (i.e. the cache would stay contiguous).
func (c *cache) continues(i uint64) bool {
	return c.n == 0 || (i >= c.at(0).Index && i <= c.at(c.n-1).Index+1)
}

// push appends e (contiguous with the cache) and returns its size.
func (c *cache) push(e raftpb.Entry, pool *cacheBlocks) int64 {
	p := c.head + c.n
	bi := c.bhead + p>>cacheBlockShift
	if bi == len(c.blocks) {
		if c.bhead > 0 && len(c.blocks) == cap(c.blocks) && c.bhead >= len(c.blocks)/2 {
			// Reuse the front of the block list rather than growing it:
			// moves pointers only, amortized over the blocks freed.
			k := copy(c.blocks, c.blocks[c.bhead:])
			clear(c.blocks[k:])
			c.blocks, c.bhead = c.blocks[:k], 0
			bi = k
		}
		c.blocks = append(c.blocks, pool.get())
	}
	c.blocks[bi][p&cacheBlockMask] = e
	c.n++
	return int64(e.Size())
}

// truncateFrom drops entries >= i and returns the bytes freed.
func (c *cache) truncateFrom(i uint64, pool *cacheBlocks) int64 {
	var freed int64
	for c.n > 0 {
		e := c.at(c.n - 1)
		if e.Index < i {
			break
		}
		freed += int64(e.Size())
		*e = raftpb.Entry{}
		c.n--
	}
	c.release(pool)
	return freed
}

// compactTo drops entries < i and returns the bytes freed.
func (c *cache) compactTo(i uint64, pool *cacheBlocks) int64 {
	var freed int64
	for c.n > 0 {
		e := c.at(0)
		if e.Index >= i {
			break
		}
		freed += int64(e.Size())
		*e = raftpb.Entry{}
		c.n--
		if c.head++; c.head == cacheBlockLen {
			pool.put(c.blocks[c.bhead])
			c.blocks[c.bhead] = nil
			c.bhead++
			c.head = 0
		}
	}
	c.release(pool)
	return freed
}

// release hands back the blocks past the last live entry (all of them
// when the cache is empty).
func (c *cache) release(pool *cacheBlocks) {
	keep := c.bhead // blocks[:keep] stay in the list
	if c.n > 0 {
		keep = c.bhead + (c.head+c.n-1)>>cacheBlockShift + 1
	}
	for k := keep; k < len(c.blocks); k++ {
		pool.put(c.blocks[k])
		c.blocks[k] = nil
	}
	c.blocks = c.blocks[:keep]
	if c.n == 0 {
		c.blocks, c.bhead, c.head = c.blocks[:0], 0, 0
	}
}

// slab copies entry data into large shared blocks so that caching an entry
// costs no allocation of its own. A block lives while any entry in it is
// referenced. Used only by the applying leader (applies are serialized).
// Records of at least slabSize are not copied: their cached entries point
// into the record itself (see applyRecord).
type slab struct {
	buf []byte
}

const slabSize = 256 << 10

func (s *slab) copy(p []byte) []byte {
	if len(p) == 0 {
		return nil
	}
	if len(p) > slabSize/8 {
		return append([]byte(nil), p...)
	}
	if cap(s.buf)-len(s.buf) < len(p) {
		s.buf = make([]byte, 0, slabSize)
	}
	n := len(s.buf)
	s.buf = append(s.buf, p...)
	return s.buf[n : n+len(p) : n+len(p)]
}

// evictItem: when it reaches the front of the queue, the group's cached
// entries up to upto are the oldest appended and are evicted first.
type evictItem struct {
	g    *group
	upto uint64
}

// evictQueue is a FIFO ring of evictItems, in append order across groups.
type evictQueue struct {
	items []evictItem
	head  int
	n     int
}

func (q *evictQueue) push(it evictItem) {
	if q.n == len(q.items) {
		grown := make([]evictItem, max(64, 2*len(q.items)))
		for i := 0; i < q.n; i++ {
			grown[i] = q.items[(q.head+i)%len(q.items)]
		}
		q.items, q.head = grown, 0
	}
	q.items[(q.head+q.n)%len(q.items)] = it
	q.n++
}

func (q *evictQueue) pop() (evictItem, bool) {
	if q.n == 0 {
		return evictItem{}, false
	}
	it := q.items[q.head]
	q.items[q.head] = evictItem{}
	q.head = (q.head + 1) % len(q.items)
	q.n--
	return it, true
}
