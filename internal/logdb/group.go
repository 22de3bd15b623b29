package logdb

import (
	"fmt"
	"sort"
	"sync"

	"github.com/skiffdb/skiff/internal/logdb/wal"
	"github.com/skiffdb/skiff/raftpb"
)

// run locates live entries [first, last] stored in one chunk whose first
// entry is chunkFirst.
type run struct {
	first, last uint64
	chunkFirst  uint64
	pos         wal.Pos // of the chunk header
}

// termRun: entries from index on have term, up to the next termRun.
type termRun struct {
	index, term uint64
}

// group is one group's log state. Fields are written only by the commit
// leader (apply) with mu held for writing; readers hold mu for reading.
type group struct {
	id raftpb.GroupID
	mu sync.RWMutex

	hs   raftpb.HardState
	snap raftpb.SnapshotMeta
	// Invariant: first >= 1 and last >= first-1; entries [first, last] are
	// available (after recovery), term of first-1 is compactTerm.
	first, last uint64
	compactTerm uint64
	// runs cover [first, last] in order; runs[:runHead] are dead.
	// Invariant: run segments are non-decreasing (later writes go to later
	// segments).
	runs    []run
	runHead int
	// logBytes is the sum of the WAL sizes of the distinct segments holding
	// live runs (what LogBytes reports), kept up to date as runs come and
	// go so that LogBytes does not walk the runs. Because run segments are
	// non-decreasing, a segment is counted when a run in it becomes the
	// tail after a run in an earlier segment (or after none), and
	// uncounted when the last live run in it goes. Not maintained during
	// replay (the WAL is not open yet): Open sets it with recountLogBytes.
	logBytes int64
	// terms[termHead:] are the term changes over [first, last].
	terms    []termRun
	termHead int
	cache    cache
	// hsSeg, snapSeg and compactSeg pin the segments holding the chunks
	// that last set the HardState, the snapshot pointer and the compaction
	// point (first, compactTerm); replay needs each of them (0: never set).
	// lastSeg pins the segment of the chunk that last set last (the latest
	// append, a reset that discarded the log, or a state): replaying it
	// drops whatever older, truncated entries are still on disk above
	// last. While the log is not empty its entries pin that segment
	// anyway; once compaction empties the log, only this pin keeps a
	// restart from reading a truncated suffix in an older segment back as
	// the log's tail.
	hsSeg, snapSeg, compactSeg, lastSeg uint64
	removed                             bool

	// busy: an op for this group is queued or being written (DB.mu).
	busy bool
}

// fresh reports whether the group has never stored anything.
func (g *group) fresh() bool {
	return g.hsSeg == 0 && g.snapSeg == 0 && g.compactSeg == 0 && g.lastSeg == 0 && len(g.liveRuns()) == 0 && g.last == 0
}

func newGroup(id raftpb.GroupID) *group {
	return &group{id: id, first: 1}
}

func (g *group) liveRuns() []run { return g.runs[g.runHead:] }

// termLocked returns the term of entry i, which must be in [first-1, last].
func (g *group) termLocked(i uint64) uint64 {
	if i == g.first-1 {
		return g.compactTerm
	}
	ts := g.terms[g.termHead:]
	k := sort.Search(len(ts), func(k int) bool { return ts[k].index > i })
	if k == 0 {
		return 0
	}
	return ts[k-1].term
}

// segRefs tracks what pins each live segment.
type segRefs struct {
	ents int // runs referencing it
	meta int // hsSeg/snapSeg/compactSeg/tombstones referencing it
}

// applier mutates group state and segment pins. Used by the commit leader
// after a batch is durable and by recovery, so both build the same state.
type applier struct {
	db     *DB
	live   bool // fill the entry cache
	replay bool // tolerate holes (entries in deleted segments)
	// keep: cached entries may alias the chunk (a record buffer the
	// caller gives up if kept is set); otherwise their data is copied.
	keep, kept bool
}

func (a *applier) pin(seg uint64, ents, meta int) {
	if seg == 0 {
		return
	}
	r := a.db.refs[seg]
	if r == nil {
		r = &segRefs{}
		a.db.refs[seg] = r
	}
	r.ents += ents
	r.meta += meta
	if r.ents == 0 {
		a.db.gcDirty = true
	}
}

func (a *applier) setHSSeg(g *group, seg uint64) {
	a.pin(g.hsSeg, 0, -1)
	g.hsSeg = seg
	a.pin(seg, 0, 1)
}

func (a *applier) setSnapSeg(g *group, seg uint64) {
	a.pin(g.snapSeg, 0, -1)
	g.snapSeg = seg
	a.pin(seg, 0, 1)
}

func (a *applier) setCompactSeg(g *group, seg uint64) {
	a.pin(g.compactSeg, 0, -1)
	g.compactSeg = seg
	a.pin(seg, 0, 1)
}

func (a *applier) setLastSeg(g *group, seg uint64) {
	if g.lastSeg == seg {
		return
	}
	a.pin(g.lastSeg, 0, -1)
	g.lastSeg = seg
	a.pin(seg, 0, 1)
}

// setAllSegs: the chunk at seg carries the group's HardState, snapshot
// pointer and compaction point (and, with last, its last index).
func (a *applier) setAllSegs(g *group, seg uint64, last bool) {
	a.setHSSeg(g, seg)
	a.setSnapSeg(g, seg)
	a.setCompactSeg(g, seg)
	if last {
		a.setLastSeg(g, seg)
	}
}

// truncateFrom drops entries >= i.
func (a *applier) truncateFrom(g *group, i uint64) {
	for len(g.runs) > g.runHead {
		r := &g.runs[len(g.runs)-1]
		if r.last < i {
			break
		}
		if r.first >= i {
			seg := r.pos.Segment
			a.pin(seg, -1, 0)
			g.runs = g.runs[:len(g.runs)-1]
			if l := g.liveRuns(); len(l) == 0 || l[len(l)-1].pos.Segment != seg {
				g.logBytes -= a.segBytes(seg)
			}
			continue
		}
		r.last = i - 1
		break
	}
	for len(g.terms) > g.termHead && g.terms[len(g.terms)-1].index >= i {
		g.terms = g.terms[:len(g.terms)-1]
	}
	a.db.cacheBytes -= g.cache.truncateFrom(i, &a.db.cacheBlocks)
	if g.last >= i {
		g.last = i - 1
	}
}

// compactTo drops entries < first.
func (a *applier) compactTo(g *group, first uint64) {
	rs := g.runs
	for g.runHead < len(rs) {
		r := &rs[g.runHead]
		if r.last >= first {
			r.first = max(r.first, first)
			break
		}
		seg := r.pos.Segment
		a.pin(seg, -1, 0)
		rs[g.runHead] = run{}
		g.runHead++
		if g.runHead == len(rs) || rs[g.runHead].pos.Segment != seg {
			g.logBytes -= a.segBytes(seg)
		}
	}
	if g.runHead > 32 && g.runHead > len(rs)/2 {
		n := copy(rs, rs[g.runHead:])
		g.runs, g.runHead = rs[:n], 0
	}
	ts := g.terms
	for g.termHead+1 < len(ts) && ts[g.termHead+1].index <= first {
		g.termHead++
	}
	if g.termHead > 32 && g.termHead > len(ts)/2 {
		n := copy(ts, ts[g.termHead:])
		g.terms, g.termHead = ts[:n], 0
	}
	a.db.cacheBytes -= g.cache.compactTo(first, &a.db.cacheBlocks)
	g.first = first
	if g.last < first-1 {
		g.last = first - 1
	}
}

// dropAll discards every entry.
func (a *applier) dropAll(g *group) {
	for _, r := range g.liveRuns() {
		a.pin(r.pos.Segment, -1, 0)
	}
	g.runs, g.runHead = g.runs[:0], 0
	g.logBytes = 0
	g.terms, g.termHead = g.terms[:0], 0
	a.db.cacheBytes -= g.cache.truncateFrom(0, &a.db.cacheBlocks)
}

// apply applies one chunk at pos.
func (a *applier) apply(o *op, pos wal.Pos) error {
	db := a.db
	g := db.lookup(o.group)
	if g == nil || g.fresh() {
		if o.kind == opRemove {
			a.setTomb(o.group, pos.Segment)
			return nil
		}
		// A new incarnation of a removed group: its tombstone must now
		// stay where it is (see DB.tombs).
		db.tombMu.Lock()
		if t, ok := db.tombs[o.group]; ok {
			t.recreated = true
			db.tombs[o.group] = t
		}
		db.tombMu.Unlock()
		if g == nil {
			g, _ = db.getOrCreate(o.group)
		}
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	switch o.kind {
	case opUpdate:
		if o.flags&flagHardState != 0 {
			g.hs = o.hs
			a.setHSSeg(g, pos.Segment)
		}
		if o.flags&flagSnapshot != 0 {
			m, err := decodeSnap(o.snap)
			if err != nil {
				return err
			}
			g.snap = m
			a.setSnapSeg(g, pos.Segment)
		}
		if o.flags&flagEntries != 0 {
			return a.appendEntries(g, o, pos)
		}
	case opCompact:
		if o.index+1 > g.first {
			a.compactTo(g, o.index+1)
			g.compactTerm = o.term
		}
		a.setCompactSeg(g, pos.Segment)
	case opReset:
		m, err := decodeSnap(o.snap)
		if err != nil {
			return err
		}
		if o.keep {
			a.compactTo(g, m.Index+1)
		} else {
			a.dropAll(g)
			g.first, g.last = m.Index+1, m.Index
		}
		g.compactTerm = m.Term
		g.snap, g.hs = m, o.hs
		// Only a reset that discards the log sets last; one that keeps it
		// leaves last to the chunk that set it.
		a.setAllSegs(g, pos.Segment, !o.keep)
	case opRemove:
		a.dropAll(g)
		a.setAllSegs(g, 0, true)
		g.removed = true
		db.gmu.Lock()
		delete(db.groups, o.group)
		db.gmu.Unlock()
		a.setTomb(o.group, pos.Segment)
	case opState:
		m, err := decodeSnap(o.snap)
		if err != nil {
			return err
		}
		g.hs, g.snap = o.hs, m
		if o.index > g.first {
			a.compactTo(g, o.index)
		}
		g.first, g.compactTerm = o.index, o.term
		a.truncateFrom(g, o.last+1)
		g.last = o.last
		a.setAllSegs(g, pos.Segment, true)
	}
	return nil
}

func (a *applier) setTomb(id raftpb.GroupID, seg uint64) {
	a.clearTomb(id)
	a.db.tombMu.Lock()
	a.db.tombs[id] = tomb{seg: seg}
	a.db.tombMu.Unlock()
	a.pin(seg, 0, 1)
}

func (a *applier) clearTomb(id raftpb.GroupID) {
	a.db.tombMu.Lock()
	t, ok := a.db.tombs[id]
	delete(a.db.tombs, id)
	a.db.tombMu.Unlock()
	if ok {
		a.pin(t.seg, 0, -1)
	}
}

func (a *applier) appendEntries(g *group, o *op, pos wal.Pos) error {
	lo, hi := o.entFirst, o.entFirst+o.entCount-1
	if hi < g.first {
		return nil // all compacted already
	}
	if lo > g.last+1 && !a.replay {
		// Validated before writing; only a misbehaving caller gets here.
		return fmt.Errorf("logdb: group %d: entries from %d leave a gap after %d", g.id, lo, g.last)
	}
	a.truncateFrom(g, lo)
	if l := g.liveRuns(); len(l) == 0 || l[len(l)-1].pos.Segment != pos.Segment {
		g.logBytes += a.segBytes(pos.Segment)
	}
	g.runs = append(g.runs, run{first: max(lo, g.first), last: hi, chunkFirst: lo, pos: pos})
	a.pin(pos.Segment, 1, 0)
	it := newEntryIter(o)
	var e raftpb.Entry
	lastTerm := uint64(0)
	if n := len(g.terms); n > g.termHead {
		lastTerm = g.terms[n-1].term
	}
	fill := a.live && a.db.opts.CacheBytes > 0
	if fill && !g.cache.continues(lo) {
		a.db.cacheBytes -= g.cache.truncateFrom(0, &a.db.cacheBlocks)
	}
	for it.next(&e) {
		if e.Index < g.first {
			continue
		}
		if e.Term != lastTerm || len(g.terms) == g.termHead {
			g.terms = append(g.terms, termRun{index: e.Index, term: e.Term})
			lastTerm = e.Term
		}
		if fill {
			if a.keep {
				a.kept = a.kept || e.Data != nil
			} else {
				e.Data = a.db.slab.copy(e.Data)
			}
			a.db.cacheBytes += g.cache.push(e, &a.db.cacheBlocks)
		}
	}
	if err := it.err(); err != nil {
		return err
	}
	g.last = hi
	a.setLastSeg(g, pos.Segment)
	if fill {
		a.db.evictQ.push(evictItem{g: g, upto: hi})
	}
	return nil
}

// check verifies, after recovery, that the group's runs cover [first, last].
func (g *group) check() error {
	next := g.first
	for _, r := range g.liveRuns() {
		if r.first != next {
			return fmt.Errorf("logdb: group %d: entries [%d, %d) missing (their segments are gone)", g.id, next, r.first)
		}
		next = r.last + 1
	}
	if next != g.last+1 {
		return fmt.Errorf("logdb: group %d: entries [%d, %d] missing", g.id, next, g.last)
	}
	return nil
}

// segBytes returns the WAL size of live segment seg, or 0 during replay,
// when the WAL is not open yet (Open recounts every group afterwards). A
// segment holding a live run is pinned, so it is live whenever this is
// called for it and its size does not change while it is.
func (a *applier) segBytes(seg uint64) int64 {
	if a.replay {
		return 0
	}
	return a.db.wal.SegmentBytes(seg)
}

// recountLogBytes sets logBytes from the live runs: Open calls it once per
// group after replay, when segment sizes are known.
func (g *group) recountLogBytes(w *wal.WAL) {
	g.logBytes = 0
	for _, seg := range g.segments(nil) {
		g.logBytes += w.SegmentBytes(seg)
	}
}

// segments returns the distinct segments holding the group's live entries.
func (g *group) segments(dst []uint64) []uint64 {
	for _, r := range g.liveRuns() {
		if n := len(dst); n == 0 || dst[n-1] != r.pos.Segment {
			dst = append(dst, r.pos.Segment)
		}
	}
	return dst
}
