package logdb

import (
	"errors"
	"fmt"
	"runtime"
	"sync"
	"time"

	"github.com/skiffdb/skiff/internal/logdb/wal"
	"github.com/skiffdb/skiff/raftpb"
)

// batch is one group-commit unit: the record being filled by callers, then
// written and synced by one leader.
type batch struct {
	wb      wal.Batch
	groups  []*group // marked busy by this batch
	entries int
	waiters int
	// filling: callers filling a region reserved in wb without db.mu
	// (saveRegion). wb must not move or be written until it is 0.
	filling int
	done    bool
	err     error
	// cond (on DB.mu) wakes this batch's callers: when it is done, or when
	// one of them should lead.
	cond sync.Cond
}

func newBatch() *batch {
	b := &batch{}
	b.wb.Reset()
	return b
}

func (b *batch) mark(g *group) {
	g.busy = true
	b.groups = append(b.groups, g)
}

func (b *batch) reset() {
	b.wb.Reset()
	clear(b.groups)
	b.groups = b.groups[:0]
	b.entries, b.waiters, b.filling, b.done, b.err = 0, 0, 0, false, nil
}

// submit encodes an operation into the filling batch and waits until that
// batch is durable. Whoever finds no write in flight leads: it takes the
// filling batch, writes it, fsyncs, applies it and wakes its callers;
// callers arriving meanwhile fill the next batch (group commit).
func (db *DB) submit(encode func(*batch) error) error {
	db.mu.Lock()
	if err := db.acceptingLocked(); err != nil {
		db.mu.Unlock()
		return err
	}
	// encode appends to the batch, which may move its buffer: not while
	// others fill regions of it.
	for db.mu.cur.filling > 0 {
		db.mu.fill.Wait()
		if err := db.acceptingLocked(); err != nil {
			db.mu.Unlock()
			return err
		}
	}
	b := db.mu.cur
	size, count, ng := len(b.wb.Buf), b.wb.Count(), len(b.groups)
	if err := encode(b); err != nil {
		// Undo this caller's chunks; the batch is as before.
		b.wb.Truncate(size, count)
		b.unmarkFrom(ng)
		db.mu.Unlock()
		return err
	}
	if b.wb.Count() == count {
		db.mu.Unlock()
		return nil // nothing to write
	}
	b.waiters++
	return db.waitLocked(b)
}

// acceptingLocked returns why the DB takes no more writes, or nil.
func (db *DB) acceptingLocked() error {
	if db.mu.closed {
		return ErrClosed
	}
	return db.mu.failed
}

func (b *batch) unmarkFrom(ng int) {
	for _, g := range b.groups[ng:] {
		g.busy = false
	}
	clear(b.groups[ng:])
	b.groups = b.groups[:ng]
}

// encodeOutsideLock reports whether a SaveBatch is worth encoding outside
// db.mu (saveRegion): it carries no snapshot (whose encoded size is not
// cheap to know in advance) and enough data that copying it matters —
// in total, and per entry: saveRegion walks the entries twice (to plan
// under the lock, to encode outside it), which costs more than it saves
// for tiny entries (measured at load ~8: 256 groups × 16 entries of 16 B
// from 4 workers, 1.2 → 0.9 M entries/s through saveRegion).
func encodeOutsideLock(updates []Update, minBytes, minAvg int) bool {
	n, ents := 0, 0
	for i := range updates {
		u := &updates[i]
		if u.Snapshot != nil {
			return false
		}
		ents += len(u.Entries)
		for j := range u.Entries {
			n += len(u.Entries[j].Data)
		}
	}
	return n >= minBytes && n >= minAvg*ents
}

// saveRegion is SaveBatch for large updates: it validates them and
// reserves their exact encoded size in the filling batch under db.mu, then
// encodes them — copying the entries' data and computing the chunks'
// CRCs, most of a SaveBatch's CPU — without db.mu, into that reserved
// region. Encoding under db.mu serialized every caller's copy with the
// others' and with the leader, who needs db.mu to finish a batch and start
// the next: in a 4-worker, 256-group × 1 KiB run the disk idled 1.7 ms of
// a 5.7 ms cycle while callers encoded (the leader waiting to get db.mu
// back, then the next leader and its stragglers arriving). Now callers
// encode in parallel with each other and with the write in flight; the
// leader of a batch waits only for regions still being filled
// (batch.filling) before writing it.
//
// The groups are marked busy under db.mu before the region is filled, so
// their FirstIndex and LastIndex (what the updates were validated
// against) cannot change until the batch is applied: shapeUpdate gives the
// same result when encoding.
func (db *DB) saveRegion(updates []Update) error {
	db.mu.Lock()
	var b *batch
	var region wal.Batch
	for {
		if err := db.acceptingLocked(); err != nil {
			db.mu.Unlock()
			return err
		}
		b = db.mu.cur
		ng := len(b.groups)
		size, chunks, entries := 0, 0, 0
		for i := range updates {
			u := &updates[i]
			g, ents, hs, err := db.checkUpdate(u)
			if err != nil {
				b.unmarkFrom(ng)
				db.mu.Unlock()
				return err
			}
			if g == nil {
				continue
			}
			b.mark(g)
			size += updateLen(u.Group, hs, ents)
			chunks++
			entries += len(ents)
		}
		if chunks == 0 {
			db.mu.Unlock()
			return nil
		}
		if b.wb.Spare() < size {
			if b.filling > 0 {
				// Growing moves the buffer under the regions being
				// filled: wait for them, then plan again (the batch may
				// have been taken by a leader meanwhile).
				b.unmarkFrom(ng)
				db.mu.fill.Wait()
				continue
			}
			// Grow to the recent record size at once rather than by
			// doubling as callers arrive (each doubling copies it all).
			b.wb.Grow(max(size, db.mu.recordHigh-len(b.wb.Buf)))
		}
		region = b.wb.Reserve(size, chunks)
		b.filling++
		b.entries += entries
		b.waiters++
		break
	}
	if db.mu.gathering {
		db.maybeEndGatherLocked()
	}
	db.mu.Unlock()

	if n, _ := region.Reserved(); n >= db.opts.splitEncodeBytes && len(updates) > 1 {
		db.encodeSplit(&region, updates)
	} else {
		db.encodeRegion(&region, updates)
	}
	if !region.Filled() {
		panic("logdb: a SaveBatch did not encode to the size it reserved")
	}

	db.mu.Lock()
	b.filling--
	if b.filling == 0 {
		db.mu.fill.Broadcast()
	}
	return db.waitLocked(b)
}

// shapeSaved is shapeUpdate for an update saveRegion planned: its group
// exists and is marked busy (so FirstIndex and LastIndex are those it was
// validated against). ok is false if it encodes to nothing.
func (db *DB) shapeSaved(u *Update) (ents []raftpb.Entry, hs *raftpb.HardState, ok bool) {
	g := db.lookup(u.Group)
	g.mu.RLock()
	first, last := g.first, g.last
	g.mu.RUnlock()
	ents, hs, _ = shapeUpdate(u, first, last)
	return ents, hs, hs != nil || len(ents) > 0
}

// encodeRegion encodes planned updates into a reserved region.
func (db *DB) encodeRegion(region *wal.Batch, updates []Update) {
	for i := range updates {
		u := &updates[i]
		if ents, hs, ok := db.shapeSaved(u); ok {
			encodeUpdate(region, u.Group, hs, nil, ents)
		}
	}
}

// encodeSplit encodes a large region in two halves at once, the second
// on another goroutine: a single caller saving megabytes (the engine's
// one step worker with all its groups) copies and checksums them on both
// cores instead of one, while the other core would otherwise idle.
func (db *DB) encodeSplit(region *wal.Batch, updates []Update) {
	total, totalChunks := region.Reserved()
	half := total / 2
	size, chunks, k := 0, 0, 0
	for ; k < len(updates) && size < half; k++ {
		u := &updates[k]
		if ents, hs, ok := db.shapeSaved(u); ok {
			size += updateLen(u.Group, hs, ents)
			chunks++
		}
	}
	first := region.Reserve(size, chunks)
	s := db.splits.Get().(*split)
	s.region = region.Reserve(total-size, totalChunks-chunks)
	// The second half's updates are copied for the goroutine: handing it
	// the caller's slice would make every SaveBatch's updates escape to
	// the heap (an allocation per call, even for a single small entry).
	s.updates = append(s.updates[:0], updates[k:]...)
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		db.encodeRegion(&s.region, s.updates)
	}()
	db.encodeRegion(&first, updates[:k])
	s.wg.Wait()
	ok := first.Filled() && s.region.Filled()
	clear(s.updates)
	s.region = wal.Batch{}
	db.splits.Put(s)
	if !ok {
		panic("logdb: a SaveBatch did not encode to the size it reserved")
	}
}

// split is the second half of an encodeSplit, reused through DB.splits.
type split struct {
	region  wal.Batch
	updates []Update
	wg      sync.WaitGroup
}

// waitLocked waits, leading if nobody is writing, until b is durable, and
// returns its result. Called with db.mu held by a caller counted in
// b.waiters; returns with it released.
func (db *DB) waitLocked(b *batch) error {
	if db.mu.gathering {
		db.maybeEndGatherLocked()
	}
	for !b.done {
		// b may be written already and being applied: only the filling
		// batch is led.
		if !db.mu.writing && b == db.mu.cur {
			db.lead(b)
			continue
		}
		b.cond.Wait()
	}
	err := b.err
	b.waiters--
	db.mu.draining--
	if db.mu.gathering {
		db.maybeEndGatherLocked()
	}
	if b.waiters == 0 && len(db.mu.spare) < maxSpare && cap(b.wb.Buf) <= maxSpareBytes {
		// Keep the batch and its grown buffer: a fresh one would regrow to
		// the record size by doubling (measured: 12 % of the CPU of a
		// 256-group × 1 KiB run went to that copying and allocation).
		b.reset()
		db.mu.spare = append(db.mu.spare, b)
	}
	db.mu.Unlock()
	return err
}

// lead writes the filling batch (which holds the caller's op). Called and
// returns with db.mu held.
//
// Writing and applying are two stages. The writer role (db.mu.writing)
// covers a record's write and fsync only, so there is still at most one
// unsynced record — the recovery invariant of package wal. Once a large
// record (≥ pipelineMinBytes) is durable the leader hands the role on, and
// the next batch's leader writes it while this one is applied (indexes,
// entry cache): the disk does not idle while the CPU applies. A small
// batch is applied before the role is handed on, as its callers are
// better off joining the next batch. Applies run in write order
// (db.mu.applySeq), and a batch's callers are woken and its groups
// released only after its apply, so a caller that returns reads its own
// writes, readers never see a record before it is durable, and the next
// update of a group is validated against the applied state. Segment GC
// writes records and reads what applies build, so it runs only with the
// writer role held and every written batch applied (collectLocked).
func (db *DB) lead(b *batch) {
	if b != db.mu.cur {
		panic("logdb: leader's batch is not the filling batch")
	}
	db.mu.writing = true
	db.collectLocked(false)
	db.gatherLocked(b)
	var next *batch
	if n := len(db.mu.spare); n > 0 {
		next = db.mu.spare[n-1]
		db.mu.spare[n-1] = nil
		db.mu.spare = db.mu.spare[:n-1]
	} else {
		next = newBatch()
	}
	next.cond.L = &db.mu
	db.mu.cur = next
	// Callers that reserved regions of b may still be filling them.
	for b.filling > 0 {
		db.mu.fill.Wait()
	}
	ticket := db.mu.writeSeq
	db.mu.writeSeq++
	// Only a batch of several callers is timed: a gather follows only a
	// batch larger than one, so a single sequential writer's path reads
	// no clock.
	timed := b.waiters > 1
	db.mu.Unlock()

	pos, err := db.write(b, timed)
	size := len(b.wb.Buf)

	db.mu.Lock()
	if err != nil && errors.Is(err, ErrStorageFailed) && db.mu.failed == nil {
		db.mu.failed = err
	}
	db.mu.lastWaiters = b.waiters
	db.mu.recordHigh = max(size, db.mu.recordHigh-db.mu.recordHigh/8)
	db.mu.lastWrite = db.lastWrite
	// The record is durable (or failed, consuming nothing): the next
	// leader may write while this batch is applied — if it is large.
	// Callers of this batch can join only a batch written after its
	// apply; for a small batch (many callers with little data each, or
	// few fsync-bound ones) the apply is short, and letting its callers
	// join the next batch beats starting that batch without them: handing
	// on early split such loads into half-size batches (16 groups ×
	// 4 KiB per worker: 58 → 37 entries per fsync).
	pipelined := size >= pipelineMinBytes
	handoff := false
	if pipelined {
		db.mu.writing = false
		handoff = db.mu.cur.waiters > 0
		if handoff {
			db.mu.cur.cond.Signal() // one of them leads the next batch
		}
	}
	for db.mu.applySeq != ticket {
		db.mu.applied.Wait()
	}
	db.mu.Unlock()
	if handoff {
		// The woken leader is queued to run on this P after this
		// goroutine; if it applied now, the other P busy encoding, the
		// next write would start only after the apply (measured: 0.3 to
		// 0.6 ms from the signal to the next leader, in 4 of 5 cycles,
		// with the next batch ready). Let it write first: it soon
		// blocks in its fsync and this goroutine applies meanwhile.
		runtime.Gosched()
	}

	if err == nil {
		var kept bool
		// A large record is kept by the cache rather than copied; a small
		// one is copied into the slab, which costs no allocation per
		// batch (a new record buffer would).
		kept, err = db.applyRecord(b.wb.Buf, pos, size >= slabSize)
		if kept {
			// The entry cache now points into this record: give the batch
			// a new buffer, as large as recent records (whichever callers
			// fill it next, it then needs no growing, which would be a
			// second allocation and copy); the old one lives until its
			// entries are evicted.
			db.mu.Lock()
			high := db.mu.recordHigh
			db.mu.Unlock()
			n := max(size, high)
			b.wb.Buf = make([]byte, 0, n+n/8)
			b.wb.Reset()
		}
	}
	gc := db.gcDirty // written only by applies and GC, which are ordered

	db.mu.Lock()
	db.mu.applySeq++
	db.mu.gcPending = db.mu.gcPending || gc
	db.mu.applied.Broadcast()
	for _, g := range b.groups {
		g.busy = false
	}
	b.done, b.err = true, err
	db.mu.draining += b.waiters
	b.cond.Broadcast()
	if !pipelined {
		db.mu.writing = false
	}
	if !db.mu.writing && db.mu.gcPending && db.mu.applySeq == db.mu.writeSeq {
		// Nobody is writing and nothing written is unapplied: collect now
		// rather than at the next leader's start, so that the segments a
		// single writer's call freed are gone when it returns.
		db.mu.writing = true
		db.collectLocked(true)
		db.mu.writing = false
	}
	if !db.mu.writing && db.mu.cur.waiters > 0 {
		db.mu.cur.cond.Signal() // one of them leads the next batch
	}
	db.mu.idle.Broadcast()
}

// collectLocked runs segment GC if an apply freed something. The caller
// holds the writer role; GC waits for every written batch to be applied
// first (it reads segment pins and group state, and its metadata rewrite
// must describe everything before it in the log). A leader (idle false)
// does not wait for the apply of the previous batch — that would put the
// apply back between two writes — but defers the GC, at most
// gcMaxDefer times in a row, to a moment when nothing is left to apply.
// Called and returns with db.mu held.
func (db *DB) collectLocked(idle bool) {
	if !db.mu.gcPending {
		return
	}
	if !idle && db.mu.applySeq != db.mu.writeSeq && db.mu.gcDeferred < gcMaxDefer {
		db.mu.gcDeferred++
		return
	}
	for db.mu.applySeq != db.mu.writeSeq {
		db.mu.applied.Wait()
	}
	db.mu.gcDeferred = 0
	if db.mu.failed != nil || db.mu.closed {
		return
	}
	db.mu.Unlock()
	db.maybeGC()
	pending := db.gcDirty // a failed deletion retries
	db.mu.Lock()
	db.mu.gcPending = pending
}

// gatherLocked lets the callers of the previous batch join b before it is
// written. Those callers were all woken at once when their batch became
// durable; without this, the first of them to come back leads right away
// and the others — still being scheduled — miss b and wait a whole write
// for the next batch, so a steady load splits into two half-size batches
// per fsync.
//
// The leader waits only when b holds fewer callers than the previous batch
// and some callers of finished batches have not yet returned from submit
// (so a single sequential writer never waits), and only until all of them
// have returned — whether or not they submit again — or gatherFraction of
// the last write+sync has passed. It needs no timer: every caller that
// arrives or returns meanwhile re-evaluates the condition
// (maybeEndGatherLocked), and when none is left to return the wait ends.
//
// A wait that runs out of time means the stragglers are CPU-bound (many
// callers on few cores): waiting then only idles the disk while they are
// scheduled, and two alternating half-size batches — each filling while
// the other is synced — do better. So after a timeout the next
// gatherBackoff batches do not wait.
//
// Only the moment a write starts changes: still one record in flight,
// synced before the next is written. Called with db.mu held and
// db.mu.writing set.
func (db *DB) gatherLocked(b *batch) {
	if db.mu.draining == 0 || b.waiters >= db.mu.lastWaiters || db.mu.lastWrite <= 0 {
		return
	}
	if db.mu.gatherSkip > 0 {
		db.mu.gatherSkip--
		return
	}
	db.mu.gathering = true
	db.mu.gatherUntil = time.Now().Add(db.mu.lastWrite / gatherFraction)
	for db.mu.gathering {
		db.mu.gather.Wait()
	}
	if db.mu.draining > 0 {
		db.mu.gatherSkip = gatherBackoff
	}
}

const (
	// maxSpare bounds the finished batches kept for reuse. Up to three
	// are live at a time (one filling, one being written, and the one
	// written before it until its last caller has returned), so with four
	// kept a leader rarely finds none. maxSpareBytes: a batch whose buffer
	// grew larger (a one-off huge record) is dropped rather than held.
	maxSpare      = 4
	maxSpareBytes = 16 << 20
	// regionMinBytes: a SaveBatch with at least this much entry data is
	// encoded outside db.mu (saveRegion). Below it, the copy is cheaper
	// than the second round on db.mu that saveRegion costs.
	regionMinBytes = 16 << 10
	regionMinAvg   = 128
	// splitEncodeBytes: a SaveBatch encoding to at least this much is
	// encoded in two halves at once (encodeSplit).
	splitEncodeBytes = 512 << 10
	// pipelineMinBytes: a record at least this large is applied while
	// the next one is written (see lead).
	pipelineMinBytes = 256 << 10
	// gcMaxDefer: leaders that may skip a pending segment GC because
	// the previous batch is still being applied (see collectLocked).
	// Deferring bounds how long freed segments stay on disk to a few
	// batches.
	gcMaxDefer = 8
	// gatherFraction bounds a leader's wait for stragglers to this
	// fraction of the last write+sync.
	gatherFraction = 4
	// gatherBackoff: batches written without waiting after a wait ran out
	// of time.
	gatherBackoff = 8
)

// maybeEndGatherLocked wakes the gathering leader once every caller of a
// finished batch has returned or the wait has lasted long enough.
func (db *DB) maybeEndGatherLocked() {
	if db.mu.draining == 0 || time.Now().After(db.mu.gatherUntil) {
		db.mu.gathering = false
		db.mu.gather.Signal()
	}
}

// write makes b durable and returns its position. Runs without db.mu, as
// the only writer.
func (db *DB) write(b *batch, timed bool) (wal.Pos, error) {
	var start time.Time
	if timed {
		start = time.Now()
	}
	pos, err := db.wal.Write(&b.wb)
	if err != nil {
		return pos, db.walErr(err)
	}
	if err := db.wal.Sync(); err != nil {
		return pos, db.walErr(err)
	}
	if timed {
		db.lastWrite = time.Since(start)
	}
	db.stats.batches.Add(1)
	db.stats.entries.Add(uint64(b.entries))
	db.stats.bytes.Add(uint64(b.wb.Size()))
	return pos, nil
}

// applyRecord applies every chunk of an encoded record written at pos.
// With keep, cached entries may point into rec instead of slab copies
// (saving a copy of every entry's data; vfs.File.WriteAt, like
// io.WriterAt, does not modify its argument), and kept reports whether any
// does: then rec must never be written to again.
func (db *DB) applyRecord(rec []byte, pos wal.Pos, keep bool) (kept bool, err error) {
	a := applier{db: db, live: true, keep: keep}
	for off := wal.HeaderSize; off < len(rec); {
		p := wal.ChunkPayload(rec[off:])
		o, err := decodeOp(p)
		if err != nil {
			panic(fmt.Sprintf("logdb: undecodable chunk we encoded: %v", err))
		}
		if err := a.apply(&o, wal.Pos{Segment: pos.Segment, Offset: pos.Offset + int64(off)}); err != nil {
			return a.kept, err
		}
		off += wal.ChunkHeaderSize + len(p)
	}
	db.evict()
	db.stats.cacheBytes.Store(db.cacheBytes)
	return a.kept, nil
}

func (db *DB) walErr(err error) error {
	if errors.Is(err, wal.ErrFailed) {
		db.log.Error("logdb: fsync failed; no more writes will be accepted", "err", err)
		return fmt.Errorf("%w: %w", ErrStorageFailed, err)
	}
	return err
}

// evict drops the oldest appended cached entries until the cache fits.
func (db *DB) evict() {
	for db.cacheBytes > db.opts.CacheBytes {
		it, ok := db.evictQ.pop()
		if !ok {
			return
		}
		g := it.g
		g.mu.Lock()
		db.cacheBytes -= g.cache.compactTo(it.upto+1, &db.cacheBlocks)
		g.mu.Unlock()
	}
}
