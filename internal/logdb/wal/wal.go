package wal

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// DefaultSegmentSize is the preallocated size of a segment file.
const DefaultSegmentSize = 64 << 20

// maxRecycle bounds the removed segment files kept for reuse. A recycled
// file needs only its first block zeroed, while a new one is zero-filled
// whole: in a 256-group × 1 KiB write benchmark that zero-fill took 64 %
// of the process CPU and half of the disk's write bandwidth. With
// compaction freeing segments about as fast as the log fills them, a few
// kept files make every new segment a recycled one; the bound keeps the
// disk space they hold small (4 × 64 MiB by default).
const maxRecycle = 4

// ErrFailed is returned by every write after an fsync failed: the kernel
// may have dropped dirty pages, so what is on disk is unknown, and retrying
// the fsync would report success for lost data. Reopen to recover.
var ErrFailed = errors.New("wal: an fsync failed; the log accepts no more writes")

// ErrClosed is returned after Close.
var ErrClosed = errors.New("wal: closed")

// Options configure a WAL.
type Options struct {
	// SegmentSize is the preallocated size of each segment (default 64 MiB).
	// A record larger than a segment gets a segment of its own that grows.
	SegmentSize int64
	// NoSync skips every fsync of segment data. Test-only: a crash loses
	// acknowledged writes and may read as corruption.
	NoSync bool
	// PrepareInline prepares the next segment on the writer when a roll
	// needs it, instead of ahead of time in the background: slower rolls,
	// deterministic file operations (for golden tests).
	PrepareInline bool
}

// Pos is the location of a record or chunk.
type Pos struct {
	Segment uint64
	Offset  int64
}

type segment struct {
	num  uint64
	f    vfs.File
	size int64 // preallocated size (the file may be longer)
}

// WAL is a segmented write-ahead log.
//
// Concurrency: Write, Sync and Remove must be called by one goroutine at a
// time (logdb's commit leader). ReadChunk, Segments and SegmentBytes may be
// called concurrently with them and each other. A background goroutine
// prepares the next segment while the active one fills.
type WAL struct {
	fs   vfs.FS
	dir  string
	opts Options
	lock io.Closer

	// Writer state, owned by the goroutine calling Write/Sync.
	active *segment
	off    int64                 // next write offset in active
	seq    uint64                // Seq of the next record
	failed atomic.Pointer[error] // set once, by the first fsync failure

	mu struct {
		sync.RWMutex
		segs   map[uint64]*segment // listed and open
		listed []uint64            // sorted; what the manifest says
		closed bool
	}

	// manMu serializes manifest rewrites (preparer, Remove).
	manMu sync.Mutex

	prep struct {
		sync.Mutex
		cond    sync.Cond
		running bool
		ready   *segment
		err     error
		recycle []string // removed segment files kept for reuse
	}
}

func segmentName(num uint64) string { return fmt.Sprintf("%06d.wal", num) }

func parseSegmentName(name string) (uint64, bool) {
	s, ok := strings.CutSuffix(name, ".wal")
	if !ok || len(s) < 6 {
		return 0, false
	}
	n, err := strconv.ParseUint(s, 10, 64)
	return n, err == nil && n > 0
}

// Open opens or creates the WAL in dir and replays it: fn is called with
// every record of the live segments in order (seal records excluded). The
// record's slices are only valid during the call. An error from fn aborts
// Open and is returned.
func Open(fs vfs.FS, dir string, opts Options, fn func(*Record) error) (*WAL, error) {
	if opts.SegmentSize <= 0 {
		opts.SegmentSize = DefaultSegmentSize
	}
	if opts.SegmentSize < 4096 {
		opts.SegmentSize = 4096
	}
	if err := fs.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("wal: create dir: %w", err)
	}
	// The directory's own entry must be durable before anything in it is.
	if err := syncDir(fs, fs.PathDir(dir)); err != nil {
		return nil, fmt.Errorf("wal: %w", err)
	}
	lock, err := fs.Lock(fs.PathJoin(dir, "LOCK"))
	if err != nil {
		return nil, fmt.Errorf("wal: lock: %w", err)
	}
	w := &WAL{fs: fs, dir: dir, opts: opts, lock: lock}
	w.mu.segs = make(map[uint64]*segment)
	w.prep.cond.L = &w.prep.Mutex
	if err := w.open(fn); err != nil {
		w.closeFiles()
		lock.Close()
		return nil, err
	}
	return w, nil
}

func (w *WAL) open(fn func(*Record) error) error {
	listed, exists, err := readManifest(w.fs, w.dir)
	if err != nil {
		return err
	}
	names, err := w.fs.List(w.dir)
	if err != nil {
		return fmt.Errorf("wal: list dir: %w", err)
	}
	for _, name := range names {
		num, ok := parseSegmentName(name)
		if !ok {
			continue
		}
		if !exists {
			return fmt.Errorf("wal: segment %s exists but the manifest does not", name)
		}
		if !slices.Contains(listed, num) {
			// A leftover: removed from the manifest, not yet deleted, or
			// created but never listed. Its contents are not part of the log.
			if err := w.fs.Remove(w.fs.PathJoin(w.dir, name)); err != nil {
				return fmt.Errorf("wal: remove leftover %s: %w", name, err)
			}
		}
	}
	_ = w.fs.Remove(w.fs.PathJoin(w.dir, manifestTmpName))
	if !exists {
		if err := writeManifest(w.fs, w.dir, nil); err != nil {
			return fmt.Errorf("wal: %w", err)
		}
	}
	for _, num := range listed {
		f, err := w.fs.OpenReadWrite(w.fs.PathJoin(w.dir, segmentName(num)), vfs.WriteCategoryUnspecified)
		if err != nil {
			return fmt.Errorf("wal: open segment %06d listed in the manifest: %w", num, err)
		}
		st, err := f.Stat()
		if err != nil {
			f.Close()
			return fmt.Errorf("wal: stat segment %06d: %w", num, err)
		}
		w.mu.segs[num] = &segment{num: num, f: f, size: st.Size()}
	}
	w.mu.listed = listed
	return w.replay(fn)
}

// replay reads the listed segments in order, applying the recovery rules
// of the package doc, and positions the writer.
func (w *WAL) replay(fn func(*Record) error) error {
	var (
		buf      []byte
		next     uint64 // Seq the next record must have; 0 until one is seen
		sealed   = true // the previous segment ended with a seal (or none)
		tear     *Pos   // where the log stopped without a seal
		lastUsed = -1   // index in listed of the last segment holding records
	)
	for i, num := range w.mu.listed {
		if i > 0 && num != w.mu.listed[i-1]+1 && tear == nil {
			// Segments between were removed: Seqs continue from theirs.
			next = 0
		}
		s := w.mu.segs[num]
		var err error
		if buf, err = readAll(s.f, buf); err != nil {
			return fmt.Errorf("wal: read segment %06d: %w", num, err)
		}
		if tear != nil {
			// Nothing may follow a tear but unused space.
			if off, found := ScanFrom(buf, num, 0, next); found {
				return &CorruptionError{Segment: tear.Segment, Offset: tear.Offset,
					Reason: fmt.Sprintf("unreadable record followed by a valid later record in segment %06d at offset %d", num, off)}
			}
			continue
		}
		if sealed && allZero(buf[:min(len(buf), HeaderSize)]) {
			if _, found := ScanFrom(buf, num, 0, next); found {
				return &CorruptionError{Segment: num, Offset: 0, Reason: "zeroed record followed by valid records"}
			}
			continue // unused (prepared, never written)
		}
		r := NewReader(buf, num)
		r.SetNext(next)
		for {
			rec, ok, err := r.Next()
			if err != nil {
				return err
			}
			if !ok {
				break
			}
			lastUsed = i
			if !rec.Seal {
				if err := fn(&rec); err != nil {
					return err
				}
			}
		}
		next = r.NextSeq()
		end, sld, _ := r.End()
		sealed = sld
		if !sld {
			tear = &Pos{Segment: num, Offset: end}
		}
	}
	if next == 0 {
		next = 1
	}
	w.seq = next
	switch {
	case tear != nil && tear.Segment == w.mu.listed[len(w.mu.listed)-1]:
		// The torn (or clean, zero) tail is in the last segment: the writer
		// resumes at its first byte, overwriting it.
		w.active, w.off = w.mu.segs[tear.Segment], tear.Offset
		return nil
	case tear != nil:
		// Later segments are unused; seal the torn one so that records in
		// them are not taken for lost data.
		if err := w.writeSeal(w.mu.segs[tear.Segment], tear.Offset); err != nil {
			return err
		}
	}
	if n := len(w.mu.listed); n > 0 && lastUsed < n-1 && (tear != nil || sealed) {
		// Reuse the last listed segment if it is unused.
		last := w.mu.segs[w.mu.listed[n-1]]
		if tear == nil || tear.Segment != last.num {
			if b, _ := readAll(last.f, buf[:0]); allZero(b[:min(len(b), HeaderSize)]) {
				w.active, w.off = last, 0
				return nil
			}
		}
	}
	s, err := w.prepare()
	if err != nil {
		return err
	}
	w.active, w.off = s, 0
	return nil
}

func readAll(f vfs.File, buf []byte) ([]byte, error) {
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	n := int(st.Size())
	if cap(buf) < n {
		buf = make([]byte, n)
	}
	buf = buf[:n]
	if _, err := f.ReadAt(buf, 0); err != nil && err != io.EOF {
		return nil, err
	}
	return buf, nil
}

// writeSeal writes and syncs a seal record at off in s, consuming a Seq.
func (w *WAL) writeSeal(s *segment, off int64) error {
	var b [HeaderSize]byte
	rec := appendSeal(b[:0], s.num, w.seq)
	if _, err := s.f.WriteAt(rec, off); err != nil {
		return fmt.Errorf("wal: seal segment %06d: %w", s.num, err)
	}
	if err := w.syncFile(s.f); err != nil {
		return err
	}
	w.seq++
	return nil
}

func (w *WAL) syncFile(f vfs.File) error {
	if w.opts.NoSync {
		return nil
	}
	if err := f.SyncData(); err != nil {
		return w.fail(err)
	}
	return nil
}

// Write writes b as one record, rolling to a new segment first if b does
// not fit in the active one, and returns the record's position. It does
// not sync. On error nothing is consumed: the next Write goes to the same
// place with the same Seq. After an fsync failure it returns ErrFailed.
func (w *WAL) Write(b *Batch) (Pos, error) {
	if err := w.Failed(); err != nil {
		return Pos{}, err
	}
	need := int64(b.Size())
	if w.off > 0 && w.off+need > w.active.size {
		if err := w.roll(); err != nil {
			return Pos{}, err
		}
	}
	if w.off >= w.active.size/2 && !w.opts.PrepareInline {
		w.prepareAsync()
	}
	b.finish(w.active.num, w.seq)
	if _, err := w.active.f.WriteAt(b.Buf, w.off); err != nil {
		return Pos{}, fmt.Errorf("wal: write segment %06d at %d: %w", w.active.num, w.off, err)
	}
	pos := Pos{Segment: w.active.num, Offset: w.off}
	w.off += need
	w.seq++
	return pos, nil
}

// Sync makes every written record durable. A failure is final.
func (w *WAL) Sync() error {
	if err := w.Failed(); err != nil {
		return err
	}
	return w.syncFile(w.active.f)
}

// Failed returns the error that stopped the WAL, or nil.
func (w *WAL) Failed() error {
	if p := w.failed.Load(); p != nil {
		return *p
	}
	return nil
}

// fail records the first fsync failure and returns the final error.
func (w *WAL) fail(cause error) error {
	err := fmt.Errorf("%w: %w", ErrFailed, cause)
	w.failed.CompareAndSwap(nil, &err)
	return w.Failed()
}

// Active returns the segment being written.
func (w *WAL) Active() uint64 { return w.active.num }

// roll seals the active segment and makes the next one active.
func (w *WAL) roll() error {
	next, err := w.nextSegment()
	if err != nil {
		return err
	}
	if err := w.writeSeal(w.active, w.off); err != nil {
		// The prepared segment stays ready for the next attempt.
		w.prep.Lock()
		if w.prep.ready == nil {
			w.prep.ready = next
		}
		w.prep.Unlock()
		return err
	}
	w.active, w.off = next, 0
	return nil
}

// nextSegment returns a prepared segment, waiting for the background
// preparer or preparing one now.
func (w *WAL) nextSegment() (*segment, error) {
	w.prep.Lock()
	for w.prep.running {
		w.prep.cond.Wait()
	}
	s := w.prep.ready
	w.prep.ready, w.prep.err = nil, nil
	w.prep.Unlock()
	if s != nil {
		return s, nil
	}
	return w.prepare()
}

func (w *WAL) prepareAsync() {
	w.prep.Lock()
	defer w.prep.Unlock()
	if w.prep.running || w.prep.ready != nil || w.prep.err != nil {
		return
	}
	w.prep.running = true
	go func() {
		s, err := w.prepare()
		w.prep.Lock()
		w.prep.running = false
		w.prep.ready, w.prep.err = s, err
		w.prep.cond.Broadcast()
		w.prep.Unlock()
	}()
}

// prepare creates the next segment: a zero-filled (or recycled) file,
// synced, its directory entry synced, and listed in the manifest.
func (w *WAL) prepare() (*segment, error) {
	w.manMu.Lock()
	defer w.manMu.Unlock()
	w.mu.RLock()
	num := uint64(1)
	if n := len(w.mu.listed); n > 0 {
		num = w.mu.listed[n-1] + 1
	}
	listed := append(slices.Clip(w.mu.listed), num)
	w.mu.RUnlock()
	path := w.fs.PathJoin(w.dir, segmentName(num))
	f, err := w.createSegment(path)
	if err != nil {
		return nil, err
	}
	if err := syncDir(w.fs, w.dir); err != nil {
		f.Close()
		return nil, w.noteSync(err)
	}
	if err := writeManifest(w.fs, w.dir, listed); err != nil {
		f.Close()
		_ = w.fs.Remove(path)
		return nil, w.noteSync(fmt.Errorf("wal: %w", err))
	}
	s := &segment{num: num, f: f, size: w.opts.SegmentSize}
	w.mu.Lock()
	w.mu.segs[num] = s
	w.mu.listed = listed
	w.mu.Unlock()
	return s, nil
}

// createSegment makes path a synced, zero-headed file of SegmentSize bytes,
// reusing a removed segment file when one is kept for recycling.
func (w *WAL) createSegment(path string) (vfs.File, error) {
	w.prep.Lock()
	var old string
	if n := len(w.prep.recycle); n > 0 {
		old = w.prep.recycle[n-1]
		w.prep.recycle = w.prep.recycle[:n-1]
	}
	w.prep.Unlock()
	if old != "" {
		if err := w.fs.Rename(old, path); err == nil {
			f, err := w.fs.OpenReadWrite(path, vfs.WriteCategoryUnspecified)
			if err == nil {
				// Stale records carry the old segment number and never
				// parse here; zero the first block so the file reads as
				// unused until written.
				if _, err = f.WriteAt(w.zeroBlock(64<<10), 0); err == nil {
					if err = f.Sync(); err != nil {
						f.Close()
						return nil, w.noteSync(&syncError{err})
					}
					return f, nil
				}
				f.Close()
			}
		}
		_ = w.fs.Remove(old)
	}
	f, err := w.fs.Create(path, vfs.WriteCategoryUnspecified)
	if err != nil {
		return nil, fmt.Errorf("wal: create segment: %w", err)
	}
	zero := w.zeroBlock(1 << 20)
	for off := int64(0); off < w.opts.SegmentSize; off += int64(len(zero)) {
		n := min(int64(len(zero)), w.opts.SegmentSize-off)
		if _, err := f.WriteAt(zero[:n], off); err != nil {
			f.Close()
			_ = w.fs.Remove(path)
			return nil, fmt.Errorf("wal: preallocate segment: %w", err)
		}
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return nil, w.noteSync(&syncError{fmt.Errorf("wal: sync new segment: %w", err)})
	}
	return f, nil
}

func (*WAL) zeroBlock(n int) []byte {
	// NB: a fresh slice each time: vfs.File.Write may modify its argument.
	return make([]byte, n)
}

// noteSync makes a sync failure final and passes other errors through.
func (w *WAL) noteSync(err error) error {
	var se *syncError
	if errors.As(err, &se) {
		return w.fail(err)
	}
	return err
}

// ReadChunk reads and verifies the chunk whose header is at pos, returning
// its payload (in buf's memory when it is large enough).
func (w *WAL) ReadChunk(pos Pos, buf []byte) ([]byte, error) {
	w.mu.RLock()
	s := w.mu.segs[pos.Segment]
	closed := w.mu.closed
	w.mu.RUnlock()
	if closed {
		return nil, ErrClosed
	}
	if s == nil {
		return nil, fmt.Errorf("wal: read chunk: segment %06d is not live", pos.Segment)
	}
	var h [ChunkHeaderSize]byte
	if _, err := s.f.ReadAt(h[:], pos.Offset); err != nil {
		return nil, fmt.Errorf("wal: read chunk header %06d:%d: %w", pos.Segment, pos.Offset, err)
	}
	n := int(binary.LittleEndian.Uint32(h[4:]))
	if n > 1<<30 {
		return nil, &CorruptionError{Segment: pos.Segment, Offset: pos.Offset, Reason: "chunk length out of range"}
	}
	if cap(buf) < n {
		buf = make([]byte, n)
	}
	buf = buf[:n]
	if _, err := s.f.ReadAt(buf, pos.Offset+ChunkHeaderSize); err != nil {
		if err == io.EOF {
			return nil, &CorruptionError{Segment: pos.Segment, Offset: pos.Offset, Reason: "chunk beyond end of segment"}
		}
		return nil, fmt.Errorf("wal: read chunk %06d:%d: %w", pos.Segment, pos.Offset, err)
	}
	if crc32.Checksum(buf, castagnoli) != binary.LittleEndian.Uint32(h[:]) {
		return nil, &CorruptionError{Segment: pos.Segment, Offset: pos.Offset, Reason: "chunk checksum mismatch"}
	}
	return buf, nil
}

// Segments returns the live (listed) segment numbers, oldest first.
func (w *WAL) Segments() []uint64 {
	w.mu.RLock()
	defer w.mu.RUnlock()
	return slices.Clone(w.mu.listed)
}

// SegmentBytes returns the preallocated size of live segment num (0 if
// not live).
func (w *WAL) SegmentBytes(num uint64) int64 {
	w.mu.RLock()
	defer w.mu.RUnlock()
	if s := w.mu.segs[num]; s != nil {
		return s.size
	}
	return 0
}

// Remove drops segments from the log: it rewrites the manifest without
// them, then deletes (or keeps for recycling) their files. The active
// segment cannot be removed. If rewriting the manifest fails the segments
// stay live and the error is returned; a failure to delete a file only
// leaves a leftover that the next Open deletes.
func (w *WAL) Remove(nums []uint64) error {
	w.manMu.Lock()
	defer w.manMu.Unlock()
	w.mu.RLock()
	keep := make([]uint64, 0, len(w.mu.listed))
	var gone []*segment
	for _, n := range w.mu.listed {
		if slices.Contains(nums, n) && n < w.activeNum() {
			gone = append(gone, w.mu.segs[n])
			continue
		}
		keep = append(keep, n)
	}
	w.mu.RUnlock()
	if len(gone) == 0 {
		return nil
	}
	if err := writeManifest(w.fs, w.dir, keep); err != nil {
		return w.noteSync(fmt.Errorf("wal: remove segments: %w", err))
	}
	w.mu.Lock()
	w.mu.listed = keep
	for _, s := range gone {
		delete(w.mu.segs, s.num)
	}
	w.mu.Unlock()
	var firstErr error
	for _, s := range gone {
		s.f.Close()
		path := w.fs.PathJoin(w.dir, segmentName(s.num))
		w.prep.Lock()
		if len(w.prep.recycle) < maxRecycle && s.size == w.opts.SegmentSize {
			w.prep.recycle = append(w.prep.recycle, path)
			w.prep.Unlock()
			continue
		}
		w.prep.Unlock()
		if err := w.fs.Remove(path); err != nil && firstErr == nil {
			firstErr = fmt.Errorf("wal: delete segment %06d: %w", s.num, err)
		}
	}
	return firstErr
}

// activeNum is read by Remove, which runs on the writer goroutine.
func (w *WAL) activeNum() uint64 {
	if w.active == nil {
		return 0
	}
	return w.active.num
}

// Close closes the files. It does not sync: everything acknowledged was
// synced by Sync already.
func (w *WAL) Close() error {
	w.prep.Lock()
	for w.prep.running {
		w.prep.cond.Wait()
	}
	if s := w.prep.ready; s != nil {
		w.prep.ready = nil
	}
	w.prep.Unlock()
	w.closeFiles()
	return w.lock.Close()
}

func (w *WAL) closeFiles() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.mu.closed {
		return
	}
	w.mu.closed = true
	for _, s := range w.mu.segs {
		s.f.Close()
	}
}
