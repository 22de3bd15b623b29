package snapshot

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/skiffdb/skiff/raftpb"
)

// DataFile is the name of the file that Writer.Write streams into.
const DataFile = "data"

// writeBufferSize is the buffer between a snapshot stream and its file:
// large enough that a save is a few big sequential writes.
const writeBufferSize = 1 << 20

// bytesPerSync is how often a file being saved is told to start writeback.
const bytesPerSync = 4 << 20

// Writer is the transaction that saves one snapshot into a .generating
// directory and publishes it on Commit (hashicorp's SnapshotSink, with
// Commit/Abort in place of Close/Cancel). Not safe for concurrent use.
//
//	w, err := s.Create(meta)
//	if err != nil { return err }
//	defer w.Abort()                 // no-op after Commit
//	if err := snap.Save(ctx, w); err != nil { return err }
//	return w.Commit()
type Writer struct {
	s *Store
	// fs and parent are where the directory lives: the store's, or an
	// export path (export.go) when s is nil.
	fs     vfs.FS
	parent string
	tmp    string // directory name under parent
	meta   raftpb.SnapshotMeta
	files  []raftpb.SnapshotFile
	names  map[string]bool
	data   *FileWriter
	open   []*FileWriter
	done   bool
	err    error // sticky: the first failure; Commit refuses after it
	// throttle, the store's, limits the bytes written (nil: unlimited);
	// ctx bounds the waits for it (SetContext).
	throttle *Throttle
	ctx      context.Context
}

// Create starts saving a snapshot described by meta (its Files are filled
// in by the writer) in snapshot-<index>-<n>.generating. ErrStale if a
// published snapshot is at least as new.
func (s *Store) Create(meta raftpb.SnapshotMeta) (*Writer, error) {
	if meta.FormatVersion == 0 {
		meta.FormatVersion = raftpb.SnapshotFormatVersion
	}
	meta.Files = nil
	if err := ValidateMeta(&meta); err != nil {
		return nil, err
	}
	if s.group != 0 && meta.Group != s.group {
		return nil, fmt.Errorf("%w: meta of group %d in the store of group %d", ErrInvalid, meta.Group, s.group)
	}
	s.mu.Lock()
	if err := s.usableLocked(); err != nil {
		s.mu.Unlock()
		return nil, err
	}
	if latest := s.latestIndexLocked(); meta.Index <= latest {
		s.mu.Unlock()
		return nil, fmt.Errorf("%w: snapshot %d, latest is %d", ErrStale, meta.Index, latest)
	}
	tmp := tempName(meta.Index, s.nextSeqLocked(), kindGenerating)
	s.mu.Unlock()
	return newWriter(s, s.fs, s.dir, tmp, meta)
}

func newWriter(s *Store, fs vfs.FS, parent, tmp string, meta raftpb.SnapshotMeta) (*Writer, error) {
	w := &Writer{s: s, fs: fs, parent: parent, tmp: tmp, meta: meta, names: map[string]bool{}, ctx: context.Background()}
	if s != nil {
		w.throttle = s.throttle
	}
	if err := fs.MkdirAll(w.Dir(), 0o755); err != nil {
		return nil, fmt.Errorf("snapshot: create %s: %w", tmp, err)
	}
	return w, nil
}

// SetContext makes ctx bound the writer's waits for the node-wide
// generation budget (Limits.GenerateBytesPerSec): once ctx is done, a
// write that would wait fails with ctx's error, and so does the Writer
// (the save must be aborted). Without it the waits are unbounded.
func (w *Writer) SetContext(ctx context.Context) { w.ctx = ctx }

// Dir returns the directory being written.
func (w *Writer) Dir() string { return w.fs.PathJoin(w.parent, w.tmp) }

// Meta returns the meta as it stands: Files lists the files closed so far.
func (w *Writer) Meta() raftpb.SnapshotMeta {
	m := cloneMeta(&w.meta)
	m.Files = append([]raftpb.SnapshotFile(nil), w.files...)
	return m
}

// Write streams p into DataFile, creating it on first use. It makes Writer
// the io.Writer a state machine's Save writes to.
func (w *Writer) Write(p []byte) (int, error) {
	if w.data == nil {
		fw, err := w.CreateFile(DataFile)
		if err != nil {
			return 0, err
		}
		w.data = fw
	}
	return w.data.Write(p)
}

// CreateFile starts another file of the snapshot, written as a stream. It
// is synced and added to the meta when closed (or at Commit).
func (w *Writer) CreateFile(name string) (*FileWriter, error) {
	if err := w.check(); err != nil {
		return nil, err
	}
	if err := w.claim(name); err != nil {
		return nil, err
	}
	f, err := w.fs.Create(w.fs.PathJoin(w.Dir(), name), vfs.WriteCategoryUnspecified)
	if err != nil {
		return nil, w.fail(fmt.Errorf("snapshot: create %s: %w", name, err))
	}
	fw := &FileWriter{w: w, name: name, f: f}
	w.open = append(w.open, fw)
	return fw, nil
}

// AddFile adds an immutable file that already exists (for example a file
// of a Pebble checkpoint) by hard-linking it into the snapshot, copying it
// when a link is impossible (another device). Its size and CRC32C are
// computed by reading it; the caller must not change it afterwards.
func (w *Writer) AddFile(name, path string) error {
	if err := w.check(); err != nil {
		return err
	}
	if err := w.claim(name); err != nil {
		return err
	}
	dst := w.fs.PathJoin(w.Dir(), name)
	if err := vfs.LinkOrCopy(w.fs, path, dst); err != nil {
		return w.fail(fmt.Errorf("snapshot: add %s: %w", name, err))
	}
	// The source may never have been synced: sync through the new name.
	if err := syncFile(w.fs, dst); err != nil {
		return w.fail(fmt.Errorf("snapshot: add %s: %w", name, err))
	}
	size, crc, err := fileCRC(w.fs, dst, make([]byte, 256<<10))
	if err != nil {
		return w.fail(fmt.Errorf("snapshot: add %s: %w", name, err))
	}
	w.files = append(w.files, raftpb.SnapshotFile{Name: name, Size: size, CRC32C: crc})
	return nil
}

func (w *Writer) claim(name string) error {
	if err := ValidateFileName(name); err != nil {
		return err
	}
	if w.names[name] {
		return fmt.Errorf("%w: %q added twice", ErrBadFileName, name)
	}
	w.names[name] = true
	return nil
}

func (w *Writer) check() error {
	if w.done {
		return ErrClosed
	}
	return w.err
}

func (w *Writer) fail(err error) error {
	if w.err == nil {
		w.err = err
	}
	return err
}

// Commit makes the snapshot durable and published: every file is synced,
// the meta is written and synced, the directory is synced, renamed to
// snapshot-<index> and its parent synced. The order is pinned by golden
// traces (testdata/save.txt). On any error the directory is removed and
// nothing is published. ErrStale if a snapshot at least as new was
// published meanwhile.
func (w *Writer) Commit() error {
	if err := w.check(); err != nil {
		w.Abort()
		return err
	}
	if err := w.commit(); err != nil {
		w.fail(err)
		w.Abort()
		return err
	}
	return nil
}

func (w *Writer) commit() error {
	for len(w.open) > 0 {
		if err := w.open[0].Close(); err != nil {
			return err
		}
	}
	w.meta.Files = w.files
	b, err := EncodeMeta(&w.meta)
	if err != nil {
		return err
	}
	if err := writeFileSync(w.fs, w.fs.PathJoin(w.Dir(), metaFile), b); err != nil {
		return fmt.Errorf("snapshot: write meta: %w", err)
	}
	if err := syncDir(w.fs, w.Dir()); err != nil {
		return err
	}
	if w.s == nil {
		return w.publishExport()
	}
	w.s.mu.Lock()
	doomed, err := w.s.publishLocked(w.tmp, w.meta)
	w.s.mu.Unlock()
	if err != nil {
		if errors.Is(err, ErrStorageFailed) {
			w.done = true // renamed: the directory is no longer ours to remove
		}
		return err
	}
	w.done = true
	w.s.removeAll(doomed)
	return nil
}

// Abort removes the directory being written. It is a no-op after a
// successful Commit, so `defer w.Abort()` is always right.
func (w *Writer) Abort() error {
	if w.done {
		return nil
	}
	w.done = true
	for _, fw := range w.open {
		fw.f.Close()
	}
	w.open = nil
	if err := w.fs.RemoveAll(w.Dir()); err != nil {
		return fmt.Errorf("snapshot: abort %s: %w", w.tmp, err)
	}
	return nil
}

// FileWriter streams one file of a snapshot being saved, computing its
// size and CRC32C as it goes.
type FileWriter struct {
	w    *Writer
	name string
	f    vfs.File
	// buf collects writes into large sequential ones. NB: a vfs.File may
	// modify what it is given (pebble's MemFS does under invariants), so
	// the file only ever sees buf, never the caller's slice.
	buf []byte
	// written counts bytes handed to f; synced, those SyncTo started
	// writing back.
	written, synced int64
	size            uint64
	crc             uint32
	closed          bool
}

// Write appends p to the file.
func (fw *FileWriter) Write(p []byte) (int, error) {
	if fw.closed {
		return 0, ErrClosed
	}
	if err := fw.w.check(); err != nil {
		return 0, err
	}
	fw.crc = crc32c(fw.crc, p)
	fw.size += uint64(len(p))
	if fw.buf == nil {
		fw.buf = make([]byte, 0, writeBufferSize)
	}
	for rest := p; len(rest) > 0; {
		if len(fw.buf) == cap(fw.buf) {
			if err := fw.flush(); err != nil {
				return 0, err
			}
		}
		k := copy(fw.buf[len(fw.buf):cap(fw.buf)], rest)
		fw.buf = fw.buf[:len(fw.buf)+k]
		rest = rest[k:]
	}
	return len(p), nil
}

func (fw *FileWriter) flush() error {
	if len(fw.buf) == 0 {
		return nil
	}
	// The budget is taken per buffer (1 MiB), not per caller's Write: a
	// state machine writing small records waits as seldom as possible.
	if fw.w.throttle != nil {
		if err := fw.w.throttle.WaitGenerate(fw.w.ctx, len(fw.buf)); err != nil {
			return fw.w.fail(fmt.Errorf("snapshot: write %s: waiting for the generation budget: %w", fw.name, err))
		}
	}
	if _, err := fw.f.Write(fw.buf); err != nil {
		return fw.w.fail(fmt.Errorf("snapshot: write %s: %w", fw.name, err))
	}
	fw.written += int64(len(fw.buf))
	fw.buf = fw.buf[:0]
	if fw.written-fw.synced >= bytesPerSync {
		// Start writeback now (sync_file_range on Linux; no durability
		// promise): dirty data stays bounded, so a large save neither ends
		// in one huge fsync nor stalls the WAL's (REQUIREMENTS §8).
		if _, err := fw.f.SyncTo(fw.written); err != nil {
			return fw.w.fail(fmt.Errorf("snapshot: sync %s: %w", fw.name, err))
		}
		fw.synced = fw.written
	}
	return nil
}

// Close flushes and syncs the file and adds it to the meta.
func (fw *FileWriter) Close() error {
	if fw.closed {
		return nil
	}
	fw.closed = true
	w := fw.w
	for i, o := range w.open {
		if o == fw {
			w.open = append(w.open[:i], w.open[i+1:]...)
			break
		}
	}
	if w.data == fw {
		w.data = nil
	}
	err := fw.flush()
	fw.buf = nil
	if err == nil {
		err = fw.f.Sync()
	}
	if cerr := fw.f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return w.fail(fmt.Errorf("snapshot: close %s: %w", fw.name, err))
	}
	w.files = append(w.files, raftpb.SnapshotFile{Name: fw.name, Size: fw.size, CRC32C: fw.crc})
	return nil
}

// writeFileSync creates path with contents b and syncs it. b is not
// modified.
func writeFileSync(fs vfs.FS, path string, b []byte) error {
	f, err := fs.Create(path, vfs.WriteCategoryUnspecified)
	if err != nil {
		return err
	}
	if _, err := f.Write(slices.Clone(b)); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// syncFile opens path and syncs it.
func syncFile(fs vfs.FS, path string) error {
	f, err := fs.Open(path)
	if err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
