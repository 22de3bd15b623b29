package logdb

import (
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/skiffdb/skiff/internal/logdb/wal"
	"github.com/skiffdb/skiff/raftpb"
)

var (
	// ErrCompacted: the requested index is below the first available one
	// (raft-rs StorageError::Compacted). The same value as
	// raftpb.ErrCompacted, which the raft core tests for.
	ErrCompacted = raftpb.ErrCompacted
	// ErrUnavailable: the requested index is beyond the last entry
	// (raft-rs StorageError::Unavailable); raftpb.ErrUnavailable.
	ErrUnavailable = raftpb.ErrUnavailable
	// ErrStorageFailed: an fsync failed; the DB accepts no more writes.
	// Reopen (after the disk is repaired) to recover what was durable.
	ErrStorageFailed = errors.New("logdb: storage failed")
	// ErrClosed: the DB is closed.
	ErrClosed = errors.New("logdb: closed")
	// ErrOutOfOrder: the entries of an update do not continue the log
	// (a gap after LastIndex, or non-consecutive indexes).
	ErrOutOfOrder = errors.New("logdb: entries out of order")
	// ErrConcurrentUpdate: a group was given a second update while one is
	// in flight. Each group must have one writer that waits for SaveBatch.
	ErrConcurrentUpdate = errors.New("logdb: concurrent update of one group")
)

// Options configure a DB. The zero value is usable.
type Options struct {
	// SegmentSize is the preallocated WAL segment size (default 64 MiB).
	SegmentSize int64
	// CacheBytes bounds the entry cache across all groups (default
	// 64 MiB; negative disables it).
	CacheBytes int64
	// MaxLogBytes: a group whose live entries pin more WAL bytes than this
	// is reported by OverLimit so the host forces a snapshot (default
	// 4 GiB; negative disables).
	MaxLogBytes int64
	// UnsafeNoSync skips fsyncs. Test-only: a crash loses acknowledged
	// writes. A warning is logged once per DB.
	UnsafeNoSync bool
	// Logger (default slog.Default()).
	Logger *slog.Logger

	// prepareInline: see wal.Options.PrepareInline (golden tests).
	prepareInline bool
	// regionMinBytes overrides the default regionMinBytes (tests: 1 puts
	// every SaveBatch with data through saveRegion).
	regionMinBytes int
	regionMinAvg   int // set with the default regionMinBytes only
	// splitEncodeBytes overrides the default splitEncodeBytes (tests).
	splitEncodeBytes int
}

func (o *Options) fill() {
	if o.SegmentSize <= 0 {
		o.SegmentSize = wal.DefaultSegmentSize
	}
	if o.CacheBytes == 0 {
		o.CacheBytes = 64 << 20
	}
	if o.MaxLogBytes == 0 {
		o.MaxLogBytes = 4 << 30
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.regionMinBytes <= 0 {
		o.regionMinBytes, o.regionMinAvg = regionMinBytes, regionMinAvg
	}
	if o.splitEncodeBytes <= 0 {
		o.splitEncodeBytes = splitEncodeBytes
	}
}

type tomb struct {
	seg       uint64 // holds the removal
	recreated bool   // records of a new incarnation follow it
}

// Update is one group's share of a SaveBatch.
type Update struct {
	Group raftpb.GroupID
	// Entries to append, with consecutive indexes. The first may be at or
	// below LastIndex: everything from it on is replaced (a conflicting
	// suffix). Entries below FirstIndex are ignored. The data is copied.
	Entries []raftpb.Entry
	// HardState to store; the zero value means unchanged.
	HardState raftpb.HardState
	// Snapshot to record as the group's latest snapshot; nil means
	// unchanged. It does not touch the log (see Compact, ResetToSnapshot).
	Snapshot *raftpb.SnapshotMeta
}

// DB is the durable log of every group on a host.
//
// Concurrency: all methods are safe for concurrent use. SaveBatch calls
// from many goroutines are coalesced into one WAL write and one fsync. A
// group must not be written by two callers at once (ErrConcurrentUpdate).
type DB struct {
	opts Options
	log  *slog.Logger
	wal  *wal.WAL

	// gmu guards the groups map (not the groups).
	gmu    sync.RWMutex
	groups map[raftpb.GroupID]*group

	// mu guards the commit queue.
	mu struct {
		sync.Mutex
		cur     *batch
		spare   []*batch // finished batches kept for reuse (see maxSpare)
		writing bool
		idle    sync.Cond // broadcast when a leader finishes
		// fill is broadcast when a batch's last region is filled (see
		// saveRegion).
		fill sync.Cond
		// writeSeq counts batches given to the writer, applySeq batches
		// applied; applies run in write order (see lead). applied is
		// broadcast after each apply. gcPending: an apply freed something
		// for segment GC (collectLocked).
		writeSeq, applySeq uint64
		applied            sync.Cond
		gcPending          bool
		gcDeferred         int // leaders in a row that skipped a pending GC
		// recordHigh: a decaying maximum of the records written, the size
		// a batch's buffer grows to at once.
		recordHigh int
		closed     bool
		failed     error

		// Group-commit pacing (see gatherLocked).
		// draining: callers whose batch is done that have not yet
		// returned from submit.
		draining int
		// lastWaiters and lastWrite: callers in, and write+sync time of,
		// the last batch written.
		lastWaiters int
		lastWrite   time.Duration
		// gathering: a leader waits on gather until gatherUntil.
		// gatherSkip: batches left that do not wait (after a timeout).
		gathering   bool
		gatherUntil time.Time
		gatherSkip  int
		gather      sync.Cond
	}

	// Owned by the commit leader (and by Open before it returns).
	refs map[uint64]*segRefs
	// tombs: removed groups whose older records may still be on disk.
	// Replay must meet the removal after those records and before any
	// record of a new incarnation, so a tombstone's segment is deleted
	// only once no older segment is left — or, if the group was not
	// re-created, after the removal is rewritten at the tail. Written by
	// the leader under tombMu.
	tombMu      sync.Mutex
	tombs       map[raftpb.GroupID]tomb
	gcDirty     bool
	cacheBytes  int64
	slab        slab
	cacheBlocks cacheBlocks // free cache blocks (applying leader only)
	evictQ      evictQueue
	rewrite     wal.Batch
	lastWrite   time.Duration // of the last batch's write+sync
	stats       statsCounters
	splits      sync.Pool // *split (see encodeSplit)
}

// Open opens (creating if needed) the DB in dir and recovers it: only the
// segments listed live in the WAL manifest are read.
func Open(fs vfs.FS, dir string, opts Options) (*DB, error) {
	opts.fill()
	db := &DB{
		opts:   opts,
		log:    opts.Logger,
		groups: make(map[raftpb.GroupID]*group),
		refs:   make(map[uint64]*segRefs),
		tombs:  make(map[raftpb.GroupID]tomb),
	}
	if opts.UnsafeNoSync {
		db.log.Warn("logdb: UnsafeNoSync is set: writes are not fsynced and a crash loses acknowledged data; use only in tests", "dir", dir)
	}
	a := applier{db: db, replay: true}
	w, err := wal.Open(fs, dir, wal.Options{SegmentSize: opts.SegmentSize, NoSync: opts.UnsafeNoSync, PrepareInline: opts.prepareInline},
		func(r *wal.Record) error {
			return r.Chunks(func(off int64, p []byte) error {
				o, err := decodeOp(p)
				if err != nil {
					return &wal.CorruptionError{Segment: r.Segment, Offset: off, Reason: err.Error()}
				}
				return a.apply(&o, wal.Pos{Segment: r.Segment, Offset: off})
			})
		})
	if err != nil {
		return nil, fmt.Errorf("logdb: open: %w", err)
	}
	db.wal = w
	for _, g := range db.groups {
		if err := g.check(); err != nil {
			w.Close()
			return nil, err
		}
		g.recountLogBytes(w)
	}
	db.mu.cur = newBatch()
	db.mu.cur.cond.L = &db.mu
	db.mu.idle.L = &db.mu
	db.mu.gather.L = &db.mu
	db.mu.fill.L = &db.mu
	db.mu.applied.L = &db.mu
	db.splits.New = func() any { return new(split) }
	db.gcDirty = true
	return db, nil
}

// Close closes the DB. In-flight SaveBatch calls finish first; later calls
// return ErrClosed.
func (db *DB) Close() error {
	db.mu.Lock()
	if db.mu.closed {
		db.mu.Unlock()
		return ErrClosed
	}
	db.mu.closed = true
	// Callers already queued still get their batch written, and every
	// written batch is applied (an apply may still be running when the
	// writer role is free).
	for db.mu.writing || db.mu.cur.waiters > 0 || db.mu.applySeq != db.mu.writeSeq {
		db.mu.idle.Wait()
	}
	db.mu.writing = true // nobody leads again
	db.mu.Unlock()
	return db.wal.Close()
}

// Group returns the read view of group id. It is valid for a group that
// does not exist yet (an empty log) and follows the group across removal
// and re-creation.
func (db *DB) Group(id raftpb.GroupID) *GroupLog { return &GroupLog{db: db, id: id} }

func (db *DB) lookup(id raftpb.GroupID) *group {
	db.gmu.RLock()
	g := db.groups[id]
	db.gmu.RUnlock()
	return g
}

// getOrCreate returns the in-memory group, creating an empty one.
func (db *DB) getOrCreate(id raftpb.GroupID) (g *group, created bool) {
	db.gmu.Lock()
	defer db.gmu.Unlock()
	if g = db.groups[id]; g != nil {
		return g, false
	}
	g = newGroup(id)
	db.groups[id] = g
	return g, true
}

// SaveBatch makes updates durable: one WAL record and one fsync shared
// with every concurrent caller. When it returns nil, everything in updates
// survives a crash. A group may appear at most once.
func (db *DB) SaveBatch(updates []Update) error {
	if len(updates) == 0 {
		return nil
	}
	if encodeOutsideLock(updates, db.opts.regionMinBytes, db.opts.regionMinAvg) {
		return db.saveRegion(updates)
	}
	return db.submit(func(b *batch) error {
		for i := range updates {
			if err := db.encodeUpdate(b, &updates[i]); err != nil {
				return err
			}
		}
		return nil
	})
}

// Compact discards the entries up to and including index (after a snapshot
// at index). It returns ErrCompacted if index < FirstIndex and
// ErrUnavailable if index > LastIndex.
func (db *DB) Compact(id raftpb.GroupID, index uint64) error {
	return db.submit(func(b *batch) error {
		g, _ := db.getOrCreate(id)
		if g.busy {
			return fmt.Errorf("%w: group %d", ErrConcurrentUpdate, id)
		}
		g.mu.RLock()
		first, last := g.first, g.last
		var term uint64
		if index >= first && index <= last {
			term = g.termLocked(index)
		}
		g.mu.RUnlock()
		switch {
		case index < first:
			return ErrCompacted
		case index > last:
			return ErrUnavailable
		}
		encodeCompact(&b.wb, id, index, term)
		b.mark(g)
		return nil
	})
}

// ResetToSnapshot records meta as the group's snapshot after an install or
// import and resets the log to it (Raft Fig. 13, rule 7): with keepLog the
// entries after meta.Index are kept — the caller has checked that the entry
// at meta.Index has meta.Term (otherwise an error is returned) — else the
// whole log is discarded and the log is empty at meta.Index. The
// HardState's commit is raised to meta.Index.
func (db *DB) ResetToSnapshot(id raftpb.GroupID, meta raftpb.SnapshotMeta, keepLog bool) error {
	return db.submit(func(b *batch) error {
		g, _ := db.getOrCreate(id)
		if g.busy {
			return fmt.Errorf("%w: group %d", ErrConcurrentUpdate, id)
		}
		g.mu.RLock()
		hs := g.hs
		ok := meta.Index+1 >= g.first && meta.Index <= g.last && g.termLocked(meta.Index) == meta.Term
		g.mu.RUnlock()
		if keepLog && !ok {
			return fmt.Errorf("logdb: group %d: cannot keep the log: no entry %d with term %d", id, meta.Index, meta.Term)
		}
		hs.Commit = max(hs.Commit, meta.Index)
		encodeReset(&b.wb, id, keepLog, &hs, &meta)
		b.mark(g)
		return nil
	})
}

// RemoveGroup deletes a group's log, HardState and snapshot pointer.
func (db *DB) RemoveGroup(id raftpb.GroupID) error {
	return db.submit(func(b *batch) error {
		g := db.lookup(id)
		if g == nil {
			return nil
		}
		if g.busy {
			return fmt.Errorf("%w: group %d", ErrConcurrentUpdate, id)
		}
		encodeRemove(&b.wb, id)
		b.mark(g)
		return nil
	})
}

func (db *DB) encodeUpdate(b *batch, u *Update) error {
	g, ents, hs, err := db.checkUpdate(u)
	if err != nil || g == nil {
		return err
	}
	encodeUpdate(&b.wb, u.Group, hs, u.Snapshot, ents)
	b.mark(g)
	b.entries += len(ents)
	return nil
}

// checkUpdate validates u against its group and returns what to encode:
// the entries not below FirstIndex and the HardState if set. g is nil when
// u changes nothing. Called with db.mu held; the group is not marked.
func (db *DB) checkUpdate(u *Update) (g *group, ents []raftpb.Entry, hs *raftpb.HardState, err error) {
	g, _ = db.getOrCreate(u.Group)
	if g.busy {
		return nil, nil, nil, fmt.Errorf("%w: group %d", ErrConcurrentUpdate, u.Group)
	}
	g.mu.RLock()
	first, last := g.first, g.last
	g.mu.RUnlock()
	ents, hs, err = shapeUpdate(u, first, last)
	if err != nil || (hs == nil && u.Snapshot == nil && len(ents) == 0) {
		return nil, nil, nil, err
	}
	return g, ents, hs, nil
}

// shapeUpdate checks u's entries against a log [first, last] and trims
// those below first. A pure function of its arguments: saveRegion calls it
// again, outside db.mu, to encode what it planned under it.
func shapeUpdate(u *Update, first, last uint64) ([]raftpb.Entry, *raftpb.HardState, error) {
	ents := u.Entries
	if len(ents) > 0 {
		for i := 1; i < len(ents); i++ {
			if ents[i].Index != ents[0].Index+uint64(i) {
				return nil, nil, fmt.Errorf("%w: group %d: index %d follows %d", ErrOutOfOrder, u.Group, ents[i].Index, ents[i-1].Index)
			}
		}
		if ents[0].Index > last+1 {
			return nil, nil, fmt.Errorf("%w: group %d: entry %d after last index %d", ErrOutOfOrder, u.Group, ents[0].Index, last)
		}
		if ents[0].Index < first {
			ents = ents[min(uint64(len(ents)), first-ents[0].Index):]
		}
	}
	var hs *raftpb.HardState
	if !u.HardState.IsEmpty() {
		hs = &u.HardState
	}
	return ents, hs, nil
}
