package logdb

import "github.com/skiffdb/skiff/raftpb"

// cache holds a contiguous suffix of a group's log in memory. It belongs
// to its group and is guarded by the group's mutex.
type cache struct {
	ents []raftpb.Entry // ents[head:] are live, contiguous indexes
	head int
}

func (c *cache) live() []raftpb.Entry { return c.ents[c.head:] }

func (c *cache) firstIndex() uint64 {
	if c.head == len(c.ents) {
		return 0
	}
	return c.ents[c.head].Index
}

// continues reports whether entries starting at i can be pushed after
// truncation (i.e. the cache would stay contiguous).
func (c *cache) continues(i uint64) bool {
	l := c.live()
	return len(l) == 0 || (i >= l[0].Index && i <= l[len(l)-1].Index+1)
}

// push appends e (contiguous with the cache) and returns its size.
func (c *cache) push(e raftpb.Entry) int64 {
	if c.head > 0 && c.head == len(c.ents) {
		c.ents, c.head = c.ents[:0], 0
	}
	if len(c.ents) == cap(c.ents) && c.head > len(c.ents)/2 {
		n := copy(c.ents, c.ents[c.head:])
		clear(c.ents[n:])
		c.ents, c.head = c.ents[:n], 0
	}
	c.ents = append(c.ents, e)
	return int64(e.Size())
}

// truncateFrom drops entries >= i and returns the bytes freed.
func (c *cache) truncateFrom(i uint64) int64 {
	var freed int64
	for len(c.ents) > c.head && c.ents[len(c.ents)-1].Index >= i {
		n := len(c.ents) - 1
		freed += int64(c.ents[n].Size())
		c.ents[n] = raftpb.Entry{}
		c.ents = c.ents[:n]
	}
	return freed
}

// compactTo drops entries < i and returns the bytes freed.
func (c *cache) compactTo(i uint64) int64 {
	var freed int64
	for c.head < len(c.ents) && c.ents[c.head].Index < i {
		freed += int64(c.ents[c.head].Size())
		c.ents[c.head] = raftpb.Entry{}
		c.head++
	}
	return freed
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
