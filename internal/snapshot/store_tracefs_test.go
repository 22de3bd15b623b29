package snapshot

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// tracingFS wraps a vfs.FS and records, in order, every operation that
// changes what a crash leaves behind: mkdir, create, link, rename, remove,
// remove-all, sync (a file) and sync-dir (a directory). Plain writes and
// reads are not recorded: durability is decided by the syncs.
//
// before, if set, runs ahead of every recorded operation with its trace
// line; an error it returns is returned by the operation, which then does
// not happen. Crash tests use it to stop the world at operation k.
type tracingFS struct {
	vfs.FS
	mu     sync.Mutex
	ops    []string
	before func(op string) error
	// root is trimmed from the paths in the trace.
	root string
	// dead: a simulated crash happened; every later change fails.
	dead bool
	// n counts recorded operations (including the one that crashed).
	n int
}

func newTracingFS(fs vfs.FS) *tracingFS { return &tracingFS{FS: fs, root: "/"} }

func (t *tracingFS) rel(p string) string { return strings.TrimPrefix(p, t.root) }

// record runs the hook and appends the trace line.
func (t *tracingFS) record(format string, args ...any) error {
	op := fmt.Sprintf(format, args...)
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.dead {
		return errCrashed
	}
	t.n++
	if t.before != nil {
		if err := t.before(op); err != nil {
			return err
		}
	}
	t.ops = append(t.ops, op)
	return nil
}

// take returns and clears the trace.
func (t *tracingFS) take() []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	ops := t.ops
	t.ops = nil
	return ops
}

func (t *tracingFS) setBefore(f func(op string) error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.before = f
}

func (t *tracingFS) Create(name string, c vfs.DiskWriteCategory) (vfs.File, error) {
	if err := t.record("create: %s", t.rel(name)); err != nil {
		return nil, err
	}
	f, err := t.FS.Create(name, c)
	if err != nil {
		return nil, err
	}
	return &tracingFile{File: f, fs: t, name: name}, nil
}

func (t *tracingFS) Open(name string, opts ...vfs.OpenOption) (vfs.File, error) {
	f, err := t.FS.Open(name, opts...)
	if err != nil {
		return nil, err
	}
	return &tracingFile{File: f, fs: t, name: name}, nil
}

func (t *tracingFS) OpenReadWrite(name string, c vfs.DiskWriteCategory, opts ...vfs.OpenOption) (vfs.File, error) {
	f, err := t.FS.OpenReadWrite(name, c, opts...)
	if err != nil {
		return nil, err
	}
	return &tracingFile{File: f, fs: t, name: name}, nil
}

func (t *tracingFS) OpenDir(name string) (vfs.File, error) {
	f, err := t.FS.OpenDir(name)
	if err != nil {
		return nil, err
	}
	return &tracingFile{File: f, fs: t, name: name, dir: true}, nil
}

func (t *tracingFS) Link(oldname, newname string) error {
	if err := t.record("link: %s -> %s", t.rel(oldname), t.rel(newname)); err != nil {
		return err
	}
	return t.FS.Link(oldname, newname)
}

func (t *tracingFS) Remove(name string) error {
	if err := t.record("remove: %s", t.rel(name)); err != nil {
		return err
	}
	return t.FS.Remove(name)
}

func (t *tracingFS) RemoveAll(name string) error {
	if err := t.record("remove-all: %s", t.rel(name)); err != nil {
		return err
	}
	return t.FS.RemoveAll(name)
}

func (t *tracingFS) Rename(oldname, newname string) error {
	if err := t.record("rename: %s -> %s", t.rel(oldname), t.rel(newname)); err != nil {
		return err
	}
	return t.FS.Rename(oldname, newname)
}

func (t *tracingFS) MkdirAll(dir string, perm os.FileMode) error {
	if err := t.record("mkdir: %s", t.rel(dir)); err != nil {
		return err
	}
	return t.FS.MkdirAll(dir, perm)
}

func (t *tracingFS) ReuseForWrite(oldname, newname string, c vfs.DiskWriteCategory) (vfs.File, error) {
	return nil, errors.New("tracingFS: ReuseForWrite is not used by the snapshot store")
}

// tracingFile records syncs; writes go through (they are not durable
// until a sync, which is what a crash test cares about).
type tracingFile struct {
	vfs.File
	fs   *tracingFS
	name string
	dir  bool
}

func (f *tracingFile) sync() error {
	kind := "sync"
	if f.dir {
		kind = "sync-dir"
	}
	name := f.fs.rel(f.name)
	if name == "" {
		name = "/"
	}
	return f.fs.record("%s: %s", kind, name)
}

func (f *tracingFile) Sync() error {
	if err := f.sync(); err != nil {
		return err
	}
	return f.File.Sync()
}

func (f *tracingFile) SyncData() error {
	if err := f.sync(); err != nil {
		return err
	}
	return f.File.SyncData()
}

// SyncTo promises no durability: it is recorded as sync-to.
func (f *tracingFile) SyncTo(length int64) (bool, error) {
	if err := f.fs.record("sync-to: %s %d", f.fs.rel(f.name), length); err != nil {
		return false, err
	}
	return f.File.SyncTo(length)
}

// Write and WriteAt fail once the world has stopped (crash tests): a hook
// that returns an error for "write" stops them too.
func (f *tracingFile) Write(p []byte) (int, error) {
	if err := f.fs.stopped(); err != nil {
		return 0, err
	}
	return f.File.Write(p)
}

func (f *tracingFile) WriteAt(p []byte, off int64) (int, error) {
	if err := f.fs.stopped(); err != nil {
		return 0, err
	}
	return f.File.WriteAt(p, off)
}

// errCrashed is returned by every operation after a simulated crash.
var errCrashed = errors.New("tracingFS: crashed")

// crashPoint is where crashWhen crashed, and what the disk held then.
type crashPoint struct {
	clone *vfs.MemFS // nil if the crash never happened
	op    string
	index int
}

// crashWhen makes the first recorded operation for which pred(i, op) holds
// (i counts from 0) take a crash clone of mem instead of happening; that
// operation and every later change then fail with errCrashed.
func (t *tracingFS) crashWhen(mem *vfs.MemFS, cfg vfs.CrashCloneCfg, pred func(i int, op string) bool) *crashPoint {
	cp := &crashPoint{}
	i := 0
	t.setBefore(func(op string) error {
		defer func() { i++ }()
		if !pred(i, op) {
			return nil
		}
		cp.clone, cp.op, cp.index = mem.CrashClone(cfg), op, i
		t.dead = true
		return errCrashed
	})
	return cp
}

// stopped returns errCrashed after a simulated crash; writes check it.
func (t *tracingFS) stopped() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.dead {
		return errCrashed
	}
	return nil
}

var _ io.Writer = (*tracingFile)(nil)
