package logdb

import (
	"sort"

	"github.com/skiffdb/skiff/raftpb"
)

// GroupLog is one group's read view, with the contract of raft-rs Storage
// (seed 002). A group that does not exist reads as an empty log:
// FirstIndex 1, LastIndex 0, Term(0) = 0.
//
// Methods are safe for concurrent use with each other and with writes.
// Returned entries are owned by the caller, but their Data may be shared
// with the cache: do not modify it.
type GroupLog struct {
	db *DB
	id raftpb.GroupID
}

var emptyGroup = &group{first: 1}

func (l *GroupLog) group() *group {
	if g := l.db.lookup(l.id); g != nil {
		return g
	}
	return emptyGroup
}

// InitialState returns the stored HardState and the latest snapshot meta
// (zero if none). The meta is a copy.
func (l *GroupLog) InitialState() (raftpb.HardState, raftpb.SnapshotMeta, error) {
	g := l.group()
	g.mu.RLock()
	defer g.mu.RUnlock()
	m := g.snap
	m.Membership = m.Membership.Clone()
	m.Files = append([]raftpb.SnapshotFile(nil), m.Files...)
	return g.hs, m, nil
}

// SnapshotMeta returns the latest recorded snapshot meta (zero if none).
func (l *GroupLog) SnapshotMeta() (raftpb.SnapshotMeta, error) {
	_, m, err := l.InitialState()
	return m, err
}

// FirstIndex returns the index of the first entry that Entries can return:
// the compaction point plus one (1 for a new group).
func (l *GroupLog) FirstIndex() (uint64, error) {
	g := l.group()
	g.mu.RLock()
	defer g.mu.RUnlock()
	return g.first, nil
}

// LastIndex returns the index of the last entry (FirstIndex-1 if none).
func (l *GroupLog) LastIndex() (uint64, error) {
	g := l.group()
	g.mu.RLock()
	defer g.mu.RUnlock()
	return g.last, nil
}

// Term returns the term of entry i, which must be in [FirstIndex-1,
// LastIndex]: below, ErrCompacted; above, ErrUnavailable. The term of
// FirstIndex-1 is kept after compaction for log matching.
func (l *GroupLog) Term(i uint64) (uint64, error) {
	g := l.group()
	g.mu.RLock()
	defer g.mu.RUnlock()
	switch {
	case i+1 < g.first:
		return 0, ErrCompacted
	case i > g.last:
		return 0, ErrUnavailable
	}
	return g.termLocked(i), nil
}

// Entries returns the entries in the half-open range [lo, hi), stopping
// before the total Size would exceed maxSize but always returning at least
// one entry when the range is not empty. lo < FirstIndex gives
// ErrCompacted; hi > LastIndex+1 gives ErrUnavailable.
func (l *GroupLog) Entries(lo, hi, maxSize uint64) ([]raftpb.Entry, error) {
	g := l.group()
	g.mu.RLock()
	defer g.mu.RUnlock()
	switch {
	case lo < g.first:
		return nil, ErrCompacted
	case hi > g.last+1 || lo > hi:
		return nil, ErrUnavailable
	case lo == hi:
		return nil, nil
	}
	out := make([]raftpb.Entry, 0, min(hi-lo, 256))
	var size uint64
	add := func(e raftpb.Entry) bool {
		s := e.Size()
		if len(out) > 0 && size+s > maxSize {
			return false
		}
		size += s
		out = append(out, e)
		return true
	}
	cf := g.cache.firstIndex()
	if cf == 0 || cf > hi {
		cf = hi
	}
	if lo < cf {
		full, err := l.db.readEntries(g, lo, cf, add)
		if err != nil || !full {
			return out, err
		}
	}
	// The cache is contiguous by index (cache.continues): start at lo
	// directly instead of walking up to it (a linear walk was the top CPU
	// cost of a leader handing out committed entries from a long cache).
	c := &g.cache
	k := 0
	if c.len() > 0 && lo > c.at(0).Index {
		k = int(min(lo-c.at(0).Index, uint64(c.len())))
	}
	for ; k < c.len(); k++ {
		if e := c.at(k); e.Index >= hi || !add(*e) {
			break
		}
	}
	l.db.stats.reads.Add(1)
	return out, nil
}

// readEntries reads [lo, hi) from the WAL, calling add for each entry in
// order; full is false if add refused one. g.mu is held for reading.
func (db *DB) readEntries(g *group, lo, hi uint64, add func(raftpb.Entry) bool) (full bool, err error) {
	runs := g.liveRuns()
	k := sort.Search(len(runs), func(k int) bool { return runs[k].last >= lo })
	for ; k < len(runs) && runs[k].first < hi; k++ {
		r := &runs[k]
		p, err := db.wal.ReadChunk(r.pos, nil)
		if err != nil {
			return false, err
		}
		db.stats.diskReads.Add(1)
		o, err := decodeOp(p)
		if err != nil || o.entCount == 0 {
			return false, &corruptChunk{pos: r.pos, err: err}
		}
		it := newEntryIter(&o)
		var e raftpb.Entry
		for it.next(&e) {
			if e.Index < max(lo, r.first) {
				continue
			}
			if e.Index > r.last || e.Index >= hi {
				break
			}
			if !add(e) {
				return false, nil
			}
		}
		if err := it.err(); err != nil {
			return false, &corruptChunk{pos: r.pos, err: err}
		}
	}
	return true, nil
}
