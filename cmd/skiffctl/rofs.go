package main

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"sort"
	"sync"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// overlayFS lets logdb.Open run on a stopped host's log without changing a
// byte of it. logdb.Open is a recovery, not a reader: it creates the LOCK
// file, removes leftover segments and MANIFEST.tmp, seals a torn tail,
// prepares (creates, zero-fills, lists in the manifest) the next segment
// and syncs directories. There is no read-only mode in logdb, and its
// record decoder is internal to it, so skiffctl gives it a file system
// where every read comes from the disk and every write lands in memory:
//
//   - Open reads the disk, or the in-memory version of a file once one was
//     written, created or renamed in the overlay;
//   - OpenReadWrite of a file on disk returns a copy-on-write file: reads
//     from the disk, writes kept as extents in memory, read back over it;
//   - Create, Rename, Remove, MkdirAll change only the overlay's view;
//   - Sync and Lock do nothing (the caller holds the real lock).
//
// Writes counts what logdb would have changed, for the report.
type overlayFS struct {
	base vfs.FS // the disk, only read
	mem  vfs.FS // files created or renamed in the overlay

	mu sync.Mutex
	// inMem: the current content of the name is in mem.
	inMem map[string]bool
	// gone: the name no longer exists in the overlay's view (removed or
	// renamed away) although the disk has it.
	gone map[string]bool
	// alias: a disk file renamed in the overlay: new name → disk name.
	alias map[string]string
	// writes lists what the overlay absorbed: "create X", "remove X", ...
	writes []string
}

func newOverlayFS() *overlayFS {
	return &overlayFS{base: vfs.Default, mem: vfs.NewMem(),
		inMem: map[string]bool{}, gone: map[string]bool{}, alias: map[string]string{}}
}

var _ vfs.FS = (*overlayFS)(nil)

var errReadOnly = errors.New("skiffctl: read-only view of the data directory")

func notExist(op, name string) error {
	return &fs.PathError{Op: op, Path: name, Err: fs.ErrNotExist}
}

func (o *overlayFS) note(format string, a ...any) {
	o.writes = append(o.writes, fmt.Sprintf(format, a...))
}

// Writes returns what the overlay absorbed, in order.
func (o *overlayFS) Writes() []string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]string(nil), o.writes...)
}

// diskName returns where name's content is on disk, if it is there.
func (o *overlayFS) diskNameLocked(name string) (string, bool) {
	if o.inMem[name] || o.gone[name] {
		return "", false
	}
	if a, ok := o.alias[name]; ok {
		return a, true
	}
	if _, err := o.base.Stat(name); err != nil {
		return "", false
	}
	return name, true
}

func (o *overlayFS) memCreateLocked(name string) (vfs.File, error) {
	if err := o.mem.MkdirAll(o.mem.PathDir(name), 0o755); err != nil {
		return nil, err
	}
	f, err := o.mem.Create(name, vfs.WriteCategoryUnspecified)
	if err != nil {
		return nil, err
	}
	o.inMem[name] = true
	delete(o.gone, name)
	delete(o.alias, name)
	return f, nil
}

func (o *overlayFS) Create(name string, _ vfs.DiskWriteCategory) (vfs.File, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.note("create %s", name)
	return o.memCreateLocked(name)
}

func (o *overlayFS) Link(oldname, newname string) error {
	return &fs.PathError{Op: "link", Path: newname, Err: errReadOnly}
}

func (o *overlayFS) Open(name string, opts ...vfs.OpenOption) (vfs.File, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.inMem[name] {
		return o.mem.Open(name, opts...)
	}
	d, ok := o.diskNameLocked(name)
	if !ok {
		return nil, notExist("open", name)
	}
	f, err := o.base.Open(d, opts...)
	if err != nil {
		return nil, err
	}
	return &cowFile{base: f}, nil
}

func (o *overlayFS) OpenReadWrite(name string, _ vfs.DiskWriteCategory, opts ...vfs.OpenOption) (vfs.File, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.inMem[name] {
		return o.mem.OpenReadWrite(name, vfs.WriteCategoryUnspecified, opts...)
	}
	d, ok := o.diskNameLocked(name)
	if !ok {
		o.note("create %s", name)
		return o.memCreateLocked(name)
	}
	f, err := o.base.Open(d, opts...)
	if err != nil {
		return nil, err
	}
	return &cowFile{base: f, name: name, o: o}, nil
}

func (o *overlayFS) OpenDir(name string) (vfs.File, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if _, err := o.base.Stat(name); err == nil && !o.gone[name] {
		f, err := o.base.OpenDir(name)
		if err != nil {
			return nil, err
		}
		return &cowFile{base: f}, nil
	}
	return o.mem.OpenDir(name)
}

func (o *overlayFS) Remove(name string) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.inMem[name] {
		delete(o.inMem, name)
		if _, err := o.base.Stat(name); err == nil {
			o.gone[name] = true
		}
		o.note("remove %s", name)
		return o.mem.Remove(name)
	}
	if _, ok := o.diskNameLocked(name); !ok {
		return notExist("remove", name)
	}
	delete(o.alias, name)
	o.gone[name] = true
	o.note("remove %s", name)
	return nil
}

func (o *overlayFS) RemoveAll(name string) error {
	return &fs.PathError{Op: "removeall", Path: name, Err: errReadOnly}
}

func (o *overlayFS) Rename(oldname, newname string) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.note("rename %s -> %s", oldname, newname)
	if o.inMem[oldname] {
		if err := o.mem.MkdirAll(o.mem.PathDir(newname), 0o755); err != nil {
			return err
		}
		if err := o.mem.Rename(oldname, newname); err != nil {
			return err
		}
		delete(o.inMem, oldname)
		if _, err := o.base.Stat(oldname); err == nil {
			o.gone[oldname] = true
		}
		o.inMem[newname] = true
		delete(o.gone, newname)
		delete(o.alias, newname)
		return nil
	}
	d, ok := o.diskNameLocked(oldname)
	if !ok {
		return notExist("rename", oldname)
	}
	delete(o.alias, oldname)
	o.gone[oldname] = true
	if o.inMem[newname] {
		_ = o.mem.Remove(newname)
		delete(o.inMem, newname)
	}
	delete(o.gone, newname)
	o.alias[newname] = d
	return nil
}

func (o *overlayFS) ReuseForWrite(oldname, newname string, _ vfs.DiskWriteCategory) (vfs.File, error) {
	if err := o.Rename(oldname, newname); err != nil {
		return nil, err
	}
	return o.OpenReadWrite(newname, vfs.WriteCategoryUnspecified)
}

func (o *overlayFS) MkdirAll(dir string, perm os.FileMode) error {
	if st, err := o.base.Stat(dir); err == nil && st.IsDir() {
		return nil
	}
	o.mu.Lock()
	o.note("mkdir %s", dir)
	o.mu.Unlock()
	return o.mem.MkdirAll(dir, perm)
}

// Lock does nothing: runDump holds the real lock of the log directory for
// as long as the overlay is in use.
func (o *overlayFS) Lock(name string) (io.Closer, error) {
	return io.NopCloser(nil), nil
}

func (o *overlayFS) List(dir string) ([]string, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	seen := map[string]bool{}
	names, berr := o.base.List(dir)
	for _, n := range names {
		if !o.gone[o.base.PathJoin(dir, n)] {
			seen[n] = true
		}
	}
	mnames, merr := o.mem.List(dir)
	for _, n := range mnames {
		seen[n] = true
	}
	for a := range o.alias {
		if o.base.PathDir(a) == dir {
			seen[o.base.PathBase(a)] = true
		}
	}
	if berr != nil && merr != nil {
		return nil, berr
	}
	out := make([]string, 0, len(seen))
	for n := range seen {
		out = append(out, n)
	}
	sort.Strings(out)
	return out, nil
}

func (o *overlayFS) Stat(name string) (vfs.FileInfo, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.inMem[name] {
		return o.mem.Stat(name)
	}
	if d, ok := o.diskNameLocked(name); ok {
		return o.base.Stat(d)
	}
	if st, err := o.mem.Stat(name); err == nil && st.IsDir() {
		return st, nil
	}
	return nil, notExist("stat", name)
}

func (o *overlayFS) PathBase(p string) string                     { return o.base.PathBase(p) }
func (o *overlayFS) PathJoin(elem ...string) string               { return o.base.PathJoin(elem...) }
func (o *overlayFS) PathDir(p string) string                      { return o.base.PathDir(p) }
func (o *overlayFS) Unwrap() vfs.FS                               { return nil }
func (o *overlayFS) GetDiskUsage(p string) (vfs.DiskUsage, error) { return o.base.GetDiskUsage(p) }

// cowFile is a disk file opened read-only. With o set (OpenReadWrite), a
// write is kept in memory and read back over the disk's bytes; without
// it, a write fails.
type cowFile struct {
	base vfs.File
	name string
	o    *overlayFS

	mu      sync.Mutex
	extents []extent // in write order; later ones win
	pos     int64    // for Read and Write
}

type extent struct {
	off  int64
	data []byte
}

func (f *cowFile) Close() error { return f.base.Close() }

func (f *cowFile) Read(p []byte) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	n, err := f.readAtLocked(p, f.pos)
	f.pos += int64(n)
	return n, err
}

func (f *cowFile) ReadAt(p []byte, off int64) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.readAtLocked(p, off)
}

func (f *cowFile) sizeLocked() (int64, error) {
	st, err := f.base.Stat()
	if err != nil {
		return 0, err
	}
	size := st.Size()
	for _, e := range f.extents {
		size = max(size, e.off+int64(len(e.data)))
	}
	return size, nil
}

func (f *cowFile) readAtLocked(p []byte, off int64) (int, error) {
	if len(f.extents) == 0 {
		return f.base.ReadAt(p, off)
	}
	size, err := f.sizeLocked()
	if err != nil {
		return 0, err
	}
	if off >= size {
		return 0, io.EOF
	}
	n := len(p)
	if off+int64(n) > size {
		n = int(size - off)
	}
	// The disk's bytes (zeros past its end), then the writes over them.
	clear(p[:n])
	if _, err := f.base.ReadAt(p[:n], off); err != nil && !errors.Is(err, io.EOF) {
		return 0, err
	}
	for _, e := range f.extents {
		lo, hi := max(off, e.off), min(off+int64(n), e.off+int64(len(e.data)))
		if lo < hi {
			copy(p[lo-off:hi-off], e.data[lo-e.off:hi-e.off])
		}
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func (f *cowFile) Write(p []byte) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	n, err := f.writeAtLocked(p, f.pos)
	f.pos += int64(n)
	return n, err
}

func (f *cowFile) WriteAt(p []byte, off int64) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.writeAtLocked(p, off)
}

func (f *cowFile) writeAtLocked(p []byte, off int64) (int, error) {
	if f.o == nil {
		return 0, &fs.PathError{Op: "write", Path: f.name, Err: errReadOnly}
	}
	f.extents = append(f.extents, extent{off: off, data: append([]byte(nil), p...)})
	f.o.mu.Lock()
	f.o.note("write %s: %d bytes at %d", f.name, len(p), off)
	f.o.mu.Unlock()
	return len(p), nil
}

func (f *cowFile) Preallocate(offset, length int64) error { return nil }

func (f *cowFile) Stat() (vfs.FileInfo, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	st, err := f.base.Stat()
	if err != nil || len(f.extents) == 0 {
		return st, err
	}
	size, err := f.sizeLocked()
	if err != nil {
		return nil, err
	}
	return sizedInfo{st, size}, nil
}

func (f *cowFile) Sync() error                         { return nil }
func (f *cowFile) SyncTo(int64) (bool, error)          { return true, nil }
func (f *cowFile) SyncData() error                     { return nil }
func (f *cowFile) Prefetch(offset, length int64) error { return nil }
func (f *cowFile) Fd() uintptr                         { return vfs.InvalidFd }

// sizedInfo is a disk file's info with the overlay's size.
type sizedInfo struct {
	vfs.FileInfo
	size int64
}

func (s sizedInfo) Size() int64 { return s.size }
