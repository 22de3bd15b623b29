package logdb

import (
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/skiffdb/skiff/internal/logdb/wal"
)

// batch is one group-commit unit: the record being filled by callers, then
// written and synced by one leader.
type batch struct {
	wb      wal.Batch
	groups  []*group // marked busy by this batch
	entries int
	waiters int
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
	b.entries, b.waiters, b.done, b.err = 0, 0, false, nil
}

// submit encodes an operation into the filling batch and waits until that
// batch is durable. Whoever finds no write in flight leads: it takes the
// filling batch, writes it, fsyncs, applies it and wakes its callers;
// callers arriving meanwhile fill the next batch (group commit).
func (db *DB) submit(encode func(*batch) error) error {
	db.mu.Lock()
	if db.mu.closed {
		db.mu.Unlock()
		return ErrClosed
	}
	if db.mu.failed != nil {
		err := db.mu.failed
		db.mu.Unlock()
		return err
	}
	b := db.mu.cur
	size, count, ng := len(b.wb.Buf), b.wb.Count(), len(b.groups)
	if err := encode(b); err != nil {
		// Undo this caller's chunks; the batch is as before.
		b.wb.Truncate(size, count)
		for _, g := range b.groups[ng:] {
			g.busy = false
		}
		b.groups = b.groups[:ng]
		db.mu.Unlock()
		return err
	}
	if b.wb.Count() == count {
		db.mu.Unlock()
		return nil // nothing to write
	}
	b.waiters++
	if db.mu.gathering {
		db.maybeEndGatherLocked()
	}
	for !b.done {
		if !db.mu.writing {
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
func (db *DB) lead(b *batch) {
	if b != db.mu.cur {
		panic("logdb: leader's batch is not the filling batch")
	}
	db.mu.writing = true
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
	// Only a batch of several callers is timed: a gather follows only a
	// batch larger than one, so a single sequential writer's path reads
	// no clock.
	timed := b.waiters > 1
	db.mu.Unlock()

	pos, err := db.write(b, timed)
	if err == nil {
		var kept bool
		// A large record is kept by the cache rather than copied; a small
		// one is copied into the slab, which costs no allocation per
		// batch (a new record buffer would).
		kept, err = db.applyRecord(b.wb.Buf, pos, len(b.wb.Buf) >= slabSize)
		if kept {
			// The entry cache now points into this record: give the batch
			// a new buffer of about the same size (no regrowth by
			// doubling); the old one lives until its entries are evicted.
			b.wb.Buf = make([]byte, 0, len(b.wb.Buf)+len(b.wb.Buf)/4)
			b.wb.Reset()
		}
	}

	db.mu.Lock()
	for _, g := range b.groups {
		g.busy = false
	}
	b.done, b.err = true, err
	db.mu.lastWaiters = b.waiters
	db.mu.lastWrite = db.lastWrite
	db.mu.draining += b.waiters
	b.cond.Broadcast()
	if err != nil && errors.Is(err, ErrStorageFailed) && db.mu.failed == nil {
		db.mu.failed = err
	}
	if db.mu.failed == nil && !db.mu.closed {
		db.mu.Unlock()
		db.maybeGC()
		db.mu.Lock()
	}
	db.mu.writing = false
	db.mu.idle.Broadcast()
	if db.mu.cur.waiters > 0 {
		db.mu.cur.cond.Signal() // one of them leads the next batch
	}
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
		db.cacheBytes -= g.cache.compactTo(it.upto + 1)
		g.mu.Unlock()
	}
}
