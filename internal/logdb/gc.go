package logdb

import (
	"errors"
	"fmt"
	"slices"
	"sync/atomic"

	"github.com/skiffdb/skiff/internal/logdb/wal"
	"github.com/skiffdb/skiff/raftpb"
)

type corruptChunk struct {
	pos wal.Pos
	err error
}

func (e *corruptChunk) Error() string {
	return fmt.Sprintf("logdb: chunk at segment %06d offset %d does not decode: %v", e.pos.Segment, e.pos.Offset, e.err)
}

func (e *corruptChunk) Unwrap() error {
	return &wal.CorruptionError{Segment: e.pos.Segment, Offset: e.pos.Offset, Reason: fmt.Sprint(e.err)}
}

// maybeGC deletes segments nothing needs any more. A segment pinned only
// by metadata (a HardState, a state chunk, a tombstone) first has that
// metadata rewritten at the tail. Runs on the commit leader.
func (db *DB) maybeGC() {
	if !db.gcDirty {
		return
	}
	db.gcDirty = false
	active := db.wal.Active()
	live := db.wal.Segments()
	var dead, metaOnly []uint64
	for _, seg := range live {
		if seg >= active {
			continue
		}
		switch r := db.refs[seg]; {
		case r == nil || (r.ents == 0 && r.meta == 0):
			dead = append(dead, seg)
		case r.ents == 0:
			metaOnly = append(metaOnly, seg)
		}
	}
	if len(metaOnly) > 0 {
		keep, err := db.rewriteMeta(metaOnly, live)
		if err != nil {
			db.gcFailed(err)
			return
		}
		for _, s := range metaOnly {
			if !slices.Contains(keep, s) {
				dead = append(dead, s)
			}
		}
		slices.Sort(dead)
	}
	if len(dead) == 0 {
		return
	}
	for _, seg := range dead {
		if r := db.refs[seg]; r != nil && (r.ents != 0 || r.meta != 0) {
			panic(fmt.Sprintf("logdb: segment %d still pinned (%+v)", seg, *r))
		}
	}
	err := db.wal.Remove(dead)
	still := db.wal.Segments()
	for _, seg := range dead {
		if !slices.Contains(still, seg) {
			delete(db.refs, seg)
		}
	}
	if err != nil {
		db.gcFailed(err)
	}
}

func (db *DB) gcFailed(err error) {
	if errors.Is(err, wal.ErrFailed) {
		db.mu.Lock()
		if db.mu.failed == nil {
			db.mu.failed = fmt.Errorf("%w: %w", ErrStorageFailed, err)
		}
		db.mu.Unlock()
		return
	}
	// Not final: the segments stay (or a leftover file stays, deleted at
	// the next Open); try again after the next batch.
	db.log.Warn("logdb: segment deletion failed; will retry", "err", err)
	db.gcDirty = true
}

// rewriteMeta writes, as one synced record, the whole metadata of every
// group and tombstone pinning segs, so that segs hold nothing needed —
// except the segments it returns, which hold a tombstone that must stay.
func (db *DB) rewriteMeta(segs, live []uint64) (keep []uint64, err error) {
	wb := &db.rewrite
	wb.Reset()
	db.gmu.RLock()
	for _, g := range db.groups {
		g.mu.RLock()
		if slices.Contains(segs, g.hsSeg) || slices.Contains(segs, g.snapSeg) || slices.Contains(segs, g.compactSeg) || slices.Contains(segs, g.lastSeg) {
			encodeState(wb, g.id, &g.hs, &g.snap, g.first, g.compactTerm, g.last)
		}
		g.mu.RUnlock()
	}
	db.gmu.RUnlock()
	// A tombstone is needed while an older segment may hold records of the
	// removed group.
	oldest := uint64(0)
	for _, s := range live {
		if !slices.Contains(segs, s) {
			oldest = s
			break
		}
	}
	var drop []raftpb.GroupID
	db.tombMu.Lock()
	for id, t := range db.tombs {
		switch {
		case !slices.Contains(segs, t.seg):
		case oldest == 0 || oldest > t.seg:
			drop = append(drop, id) // nothing older is left to hide
		case !t.recreated:
			encodeRemove(wb, id)
		default:
			keep = append(keep, t.seg)
		}
	}
	db.tombMu.Unlock()
	a := applier{db: db}
	for _, id := range drop {
		a.clearTomb(id)
	}
	if wb.Empty() {
		return keep, nil
	}
	pos, err := db.wal.Write(wb)
	if err != nil {
		return keep, err
	}
	if err := db.wal.Sync(); err != nil {
		return keep, err
	}
	db.stats.rewrites.Add(1)
	_, err = db.applyRecord(wb.Buf, pos, false)
	return keep, err
}

// Stats describe the DB.
type Stats struct {
	Segments   int    // live WAL segments
	LogBytes   int64  // bytes of live segments
	CacheBytes int64  // entry cache
	Groups     int    // groups with state
	Batches    uint64 // WAL records written for SaveBatch and friends (one fsync each)
	Entries    uint64 // entries written
	Bytes      uint64 // bytes written
	Rewrites   uint64 // metadata rewrites to free segments
	Reads      uint64 // Entries calls
	DiskReads  uint64 // chunks read from the WAL by Entries
}

type statsCounters struct {
	batches, entries, bytes, rewrites, reads, diskReads atomic.Uint64
	cacheBytes                                          atomic.Int64
}

// Stats returns current statistics.
func (db *DB) Stats() Stats {
	s := Stats{
		Batches:    db.stats.batches.Load(),
		Entries:    db.stats.entries.Load(),
		Bytes:      db.stats.bytes.Load(),
		Rewrites:   db.stats.rewrites.Load(),
		Reads:      db.stats.reads.Load(),
		DiskReads:  db.stats.diskReads.Load(),
		CacheBytes: db.stats.cacheBytes.Load(),
	}
	for _, seg := range db.wal.Segments() {
		s.Segments++
		s.LogBytes += db.wal.SegmentBytes(seg)
	}
	db.gmu.RLock()
	s.Groups = len(db.groups)
	db.gmu.RUnlock()
	return s
}

// LogBytes returns the WAL bytes that the group's live entries keep from
// being deleted: the sizes of the segments holding them. It is O(1): the
// applier keeps the sum up to date (group.logBytes).
func (l *GroupLog) LogBytes() int64 {
	g := l.group()
	g.mu.RLock()
	defer g.mu.RUnlock()
	return g.logBytes
}

// OverLimit returns the groups whose LogBytes exceed MaxLogBytes: the host
// should snapshot and compact them, so that one slow group never makes the
// disk grow without bound.
func (db *DB) OverLimit() []raftpb.GroupID {
	if db.opts.MaxLogBytes < 0 {
		return nil
	}
	db.gmu.RLock()
	ids := make([]raftpb.GroupID, 0, len(db.groups))
	for id := range db.groups {
		ids = append(ids, id)
	}
	db.gmu.RUnlock()
	var over []raftpb.GroupID
	for _, id := range ids {
		if db.Group(id).LogBytes() > db.opts.MaxLogBytes {
			over = append(over, id)
		}
	}
	slices.Sort(over)
	return over
}
