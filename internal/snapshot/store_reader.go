package snapshot

import (
	"fmt"
	"io"
	"sync/atomic"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/skiffdb/skiff/raftpb"
)

// Reader reads one published snapshot and holds a reference on it, so GC
// keeps its directory until Close. A transfer (the sender) and a load each
// hold one. Methods may be called concurrently; Close once.
type Reader struct {
	s      *Store
	meta   raftpb.SnapshotMeta
	dir    string
	closed atomic.Bool
}

// OpenReader returns a Reader of the published snapshot at index, or of the
// latest one when index is 0. ErrNotFound if there is none.
func (s *Store) OpenReader(index uint64) (*Reader, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, ErrClosed
	}
	e := s.findLocked(index)
	if e == nil {
		return nil, fmt.Errorf("%w: index %d", ErrNotFound, index)
	}
	e.refs++
	return &Reader{s: s, meta: cloneMeta(&e.meta), dir: s.path(e.name)}, nil
}

// Meta returns the snapshot's meta. The caller owns the copy.
func (r *Reader) Meta() raftpb.SnapshotMeta { return cloneMeta(&r.meta) }

// Index returns the snapshot's index.
func (r *Reader) Index() uint64 { return r.meta.Index }

// Files lists the snapshot's files. The caller owns the slice.
func (r *Reader) Files() []raftpb.SnapshotFile {
	return append([]raftpb.SnapshotFile(nil), r.meta.Files...)
}

// Dir returns the snapshot's directory.
func (r *Reader) Dir() string { return r.dir }

// Path returns the path of a file listed in the meta.
func (r *Reader) Path(name string) (string, error) {
	if _, ok := fileOf(&r.meta, name); !ok {
		return "", fmt.Errorf("%w: no file %q in snapshot %d", ErrNotFound, name, r.meta.Index)
	}
	return r.s.fs.PathJoin(r.dir, name), nil
}

// OpenFile opens a file listed in the meta for reading.
func (r *Reader) OpenFile(name string) (vfs.File, error) {
	p, err := r.Path(name)
	if err != nil {
		return nil, err
	}
	return r.s.fs.Open(p, vfs.SequentialReadsOption)
}

// Verify reads every file and checks its size and CRC32C against the meta
// (ErrChecksum). Run it before loading a snapshot into a state machine.
func (r *Reader) Verify() error {
	return verifyFiles(r.s.fs, r.dir, &r.meta)
}

// Close drops the reference. A snapshot past retention is removed at its
// last Close.
func (r *Reader) Close() error {
	if r.closed.Swap(true) {
		return ErrClosed
	}
	r.s.Unref(r.meta.Index)
	return nil
}

// verifyFiles checks every file of m in dir: size and CRC32C.
func verifyFiles(fs vfs.FS, dir string, m *raftpb.SnapshotMeta) error {
	buf := make([]byte, 256<<10)
	for _, f := range m.Files {
		size, crc, err := fileCRC(fs, fs.PathJoin(dir, f.Name), buf)
		if err != nil {
			return fmt.Errorf("%w: %s: %v", ErrChecksum, f.Name, err)
		}
		if size != f.Size || crc != f.CRC32C {
			return fmt.Errorf("%w: %s: %d bytes crc %08x, meta says %d bytes crc %08x",
				ErrChecksum, f.Name, size, crc, f.Size, f.CRC32C)
		}
	}
	return nil
}

// fileCRC reads a whole file and returns its size and CRC32C.
func fileCRC(fs vfs.FS, path string, buf []byte) (uint64, uint32, error) {
	f, err := fs.Open(path, vfs.SequentialReadsOption)
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	return readCRC(f, buf, -1)
}

// readCRC reads up to limit bytes (all if limit < 0) from r and returns
// the count and their CRC32C.
func readCRC(r io.Reader, buf []byte, limit int64) (uint64, uint32, error) {
	if limit >= 0 {
		r = io.LimitReader(r, limit)
	}
	var n uint64
	var crc uint32
	for {
		k, err := r.Read(buf)
		crc = crc32c(crc, buf[:k])
		n += uint64(k)
		if err == io.EOF {
			return n, crc, nil
		}
		if err != nil {
			return n, crc, err
		}
	}
}
