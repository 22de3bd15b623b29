package snapshot

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/skiffdb/skiff/raftpb"
)

// Handle is a published snapshot held open for a reader: until Close, the
// store must not delete the directory (a store reference). *Reader, from
// Store.OpenReader, is one.
type Handle interface {
	// Meta returns the snapshot's meta. It must not change.
	Meta() raftpb.SnapshotMeta
	// Dir is the published directory's path in the Sender's FS.
	Dir() string
	// Close drops the reference. Called exactly once.
	Close() error
}

// SenderConfig configures a Sender.
type SenderConfig struct {
	FS        vfs.FS
	Throttle  *Throttle  // nil: unlimited
	Transfers *Transfers // nil: a private registry
	// IdleTimeout releases a reader nobody asked anything of for this long
	// (counted from the end of the last call: a call in progress is never
	// idleness), so a receiver that vanished cannot pin a snapshot forever. It is a
	// progress timeout, not a limit on the transfer's duration.
	// Default 1 minute.
	IdleTimeout time.Duration
}

// Sender serves published snapshots to receivers that pull them: it is the
// leader's end of the transfer and implements FileSource in process. One
// Sender per host, shared by all groups. Safe for concurrent use.
type Sender struct {
	cfg     SenderConfig
	codec   *chunkCodec
	rawPool sync.Pool // *[]byte: raw chunks awaiting compression

	mu      sync.Mutex
	next    ReaderID
	readers map[ReaderID]*reader
	closed  bool
}

// reader is one registered snapshot being served to one peer.
type reader struct {
	id       ReaderID
	h        Handle
	meta     raftpb.SnapshotMeta
	sizes    map[string]int64
	state    *transferState
	prio     Priority
	freeSlot func() // the send slot and the priority class's activity
	// idle releases the reader after idleAfter with no call in progress.
	// Invariant: stopped while active > 0 (a call blocked in the send
	// rate limit, or a long Checksum, is not idleness).
	idle      *time.Timer
	idleAfter time.Duration

	mu       sync.Mutex
	files    map[string]vfs.File
	active   int  // calls in progress; files close when it drops to 0
	released bool // Invariant: once true, no new call starts
}

var (
	_ FileSource = (*Sender)(nil)
	_ Handle     = (*Reader)(nil)
)

// NewSender returns a Sender.
func NewSender(cfg SenderConfig) (*Sender, error) {
	if cfg.FS == nil {
		return nil, fmt.Errorf("snapshot: sender needs an FS")
	}
	if cfg.Throttle == nil {
		cfg.Throttle = NewThrottle(Limits{})
	}
	if cfg.Transfers == nil {
		cfg.Transfers = NewTransfers(nil)
	}
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = time.Minute
	}
	codec, err := newChunkCodec(4)
	if err != nil {
		return nil, err
	}
	// Reader IDs start at a random point so that a restarted leader never
	// hands out an ID a receiver still holds from its previous life.
	var seed [8]byte
	_, _ = rand.Read(seed[:])
	next := ReaderID(binary.LittleEndian.Uint64(seed[:]) >> 1)
	s := &Sender{cfg: cfg, codec: codec, next: next, readers: make(map[ReaderID]*reader)}
	s.rawPool.New = func() any { return new([]byte) }
	return s, nil
}

// Register starts serving the snapshot h to peer as a catch-up transfer:
// RegisterPriority(peer, h, PriorityCatchUp).
func (s *Sender) Register(peer raftpb.ReplicaID, h Handle) (ReaderID, error) {
	return s.RegisterPriority(peer, h, PriorityCatchUp)
}

// RegisterPriority starts serving the snapshot h to peer and returns the
// reader ID to put in the install request. It takes a node-wide send slot;
// with none free it returns ErrNoSlot and releases h, so the leader neither
// generates nor streams (REQUIREMENTS §10). On success the Sender owns h
// until the reader is released.
//
// p is the transfer's class in the send bucket (Limits.BackgroundShare): a
// PriorityCatchUp reader holds background readers to their share from
// registration until its release (Release, the idle timeout or Close),
// whether or not its receiver is pulling at the moment.
func (s *Sender) RegisterPriority(peer raftpb.ReplicaID, h Handle, p Priority) (ReaderID, error) {
	meta := h.Meta()
	if err := ValidateMeta(&meta); err != nil {
		_ = h.Close()
		return 0, err
	}
	freeSlot, ok := s.cfg.Throttle.TryReserveSend()
	if !ok {
		_ = h.Close()
		return 0, ErrNoSlot
	}
	endClass := s.cfg.Throttle.beginSend(p)
	free := func() { endClass(); freeSlot() }
	r := &reader{h: h, meta: meta, prio: p, freeSlot: free, sizes: make(map[string]int64, len(meta.Files)),
		files: make(map[string]vfs.File), idleAfter: s.cfg.IdleTimeout}
	var total int64
	for _, f := range meta.Files {
		r.sizes[f.Name] = int64(f.Size)
		total += int64(f.Size)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		free()
		_ = h.Close()
		return 0, ErrReaderNotFound
	}
	s.next++
	if s.next == 0 {
		s.next++
	}
	r.id = s.next
	r.state = s.cfg.Transfers.start(Sending, meta.Group, peer, meta.Index)
	r.state.total.Store(total)
	r.state.setPhase(PhaseCopying)
	s.readers[r.id] = r
	id := r.id
	r.idle = time.AfterFunc(s.cfg.IdleTimeout, func() { s.Release(id) })
	return id, nil
}

// Release stops serving the reader and drops its store reference once the
// calls in progress return. Unknown IDs are ignored.
func (s *Sender) Release(id ReaderID) {
	s.mu.Lock()
	r, ok := s.readers[id]
	delete(s.readers, id)
	s.mu.Unlock()
	if ok {
		r.release()
	}
}

// Close releases every reader.
func (s *Sender) Close() {
	s.mu.Lock()
	s.closed = true
	rs := s.readers
	s.readers = make(map[ReaderID]*reader)
	s.mu.Unlock()
	for _, r := range rs {
		r.release()
	}
	s.codec.close()
}

// acquire finds a live reader and marks a call in progress.
func (s *Sender) acquire(id ReaderID) (*reader, error) {
	s.mu.Lock()
	r, ok := s.readers[id]
	s.mu.Unlock()
	if !ok {
		return nil, fmt.Errorf("%w: %d", ErrReaderNotFound, id)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.released {
		return nil, fmt.Errorf("%w: %d", ErrReaderNotFound, id)
	}
	r.active++
	r.idle.Stop()
	return r, nil
}

func (r *reader) done() {
	r.mu.Lock()
	r.active--
	closeNow := r.released && r.active == 0
	if r.active == 0 && !r.released {
		r.idle.Reset(r.idleAfter)
	}
	r.mu.Unlock()
	if closeNow {
		r.closeFiles()
	}
}

func (r *reader) release() {
	r.idle.Stop()
	r.mu.Lock()
	if r.released {
		r.mu.Unlock()
		return
	}
	r.released = true
	closeNow := r.active == 0
	r.mu.Unlock()
	if closeNow {
		r.closeFiles()
	}
	r.state.setPhase(PhaseDone)
	r.state.finish()
	r.freeSlot()
}

// closeFiles closes the cached files and drops the store reference. It runs
// once: after release, when no call is in progress.
func (r *reader) closeFiles() {
	r.mu.Lock()
	files := r.files
	r.files = nil
	r.mu.Unlock()
	for _, f := range files {
		_ = f.Close()
	}
	_ = r.h.Close()
}

// file returns the open file for name, opening it on first use.
func (r *reader) file(fs vfs.FS, name string) (vfs.File, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if f, ok := r.files[name]; ok {
		return f, nil
	}
	f, err := fs.Open(fs.PathJoin(r.h.Dir(), name))
	if err != nil {
		return nil, fmt.Errorf("snapshot: open %s for sending: %w", name, err)
	}
	r.files[name] = f
	return f, nil
}

// Meta implements FileSource.
func (s *Sender) Meta(ctx context.Context, id ReaderID) (raftpb.SnapshotMeta, error) {
	r, err := s.acquire(id)
	if err != nil {
		return raftpb.SnapshotMeta{}, err
	}
	defer r.done()
	return cloneMeta(&r.meta), nil
}

// checkRange validates [offset, offset+length) of name against the meta.
func (r *reader) checkRange(name string, offset, length int64) error {
	size, ok := r.sizes[name]
	if !ok {
		return fmt.Errorf("snapshot: file %q is not in snapshot %d", name, r.meta.Index)
	}
	if offset < 0 || length < 0 || length > maxChunkSize || offset > size || length > size-offset {
		return fmt.Errorf("%w: %s [%d, %d+%d) of %d bytes", ErrChunkPastEnd, name, offset, offset, length, size)
	}
	return nil
}

// GetFile implements FileSource: it waits for the node-wide send budget,
// reads the range and encodes it per the meta's compression.
func (s *Sender) GetFile(ctx context.Context, id ReaderID, name string, offset, length int64, buf []byte) ([]byte, error) {
	r, err := s.acquire(id)
	if err != nil {
		return nil, err
	}
	defer r.done()
	if err := r.checkRange(name, offset, length); err != nil {
		return nil, err
	}
	f, err := r.file(s.cfg.FS, name)
	if err != nil {
		return nil, err
	}
	if err := s.cfg.Throttle.WaitSend(ctx, r.prio, int(length)); err != nil {
		return nil, err
	}
	raw := buf
	if r.meta.Compression != raftpb.NoCompression {
		// NB: buf receives the encoded bytes and must not alias the raw
		// ones; the raw ones go through a pooled buffer, so that memory
		// stays bounded by the chunks in flight, not by allocation churn.
		p := s.rawPool.Get().(*[]byte)
		defer s.rawPool.Put(p)
		if int64(cap(*p)) < length {
			*p = make([]byte, length)
		}
		raw = *p
	}
	if int64(cap(raw)) < length {
		raw = make([]byte, length)
	}
	raw = raw[:length]
	if n, err := f.ReadAt(raw, offset); int64(n) != length {
		return nil, fmt.Errorf("snapshot: read %s [%d, %d): %d bytes: %w", name, offset, offset+length, n, err)
	}
	r.state.moved.Add(length)
	if r.meta.Compression == raftpb.NoCompression {
		return raw, nil
	}
	return s.codec.encode(r.meta.Compression, buf, raw)
}

// Checksum implements FileSource.
func (s *Sender) Checksum(ctx context.Context, id ReaderID, name string, length int64) (uint32, error) {
	r, err := s.acquire(id)
	if err != nil {
		return 0, err
	}
	defer r.done()
	if err := r.checkRange(name, 0, 0); err != nil {
		return 0, err
	}
	if length < 0 || length > r.sizes[name] {
		return 0, fmt.Errorf("%w: checksum of %s [0, %d) of %d bytes", ErrChunkPastEnd, name, length, r.sizes[name])
	}
	f, err := r.file(s.cfg.FS, name)
	if err != nil {
		return 0, err
	}
	return crcPrefix(ctx, f, length)
}

// crcPrefix returns the CRC32C of [0, length) of f, reading it in bounded
// pieces so that memory does not grow with the file.
func crcPrefix(ctx context.Context, f io.ReaderAt, length int64) (uint32, error) {
	buf := make([]byte, min(length, 1<<20))
	var crc uint32
	for off := int64(0); off < length; {
		if err := ctx.Err(); err != nil {
			return 0, err
		}
		p := buf[:min(int64(len(buf)), length-off)]
		if n, err := f.ReadAt(p, off); n != len(p) {
			return 0, fmt.Errorf("snapshot: checksum read at %d: %d bytes: %w", off, n, err)
		}
		crc = crc32c(crc, p)
		off += int64(len(p))
	}
	return crc, nil
}
