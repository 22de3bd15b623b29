package snapshot

import (
	"bytes"
	"errors"
	"fmt"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/skiffdb/skiff/raftpb"
)

// ReceiveTx is the transaction that receives one snapshot from a leader
// into snapshot-<index>-<n>.receiving and publishes it on Commit. The
// directory holds the remote meta from the start, so that a broken
// connection, a retried install or a restart of this host resumes it
// (Store.Receive with the same meta) instead of starting over. At most one
// ReceiveTx per store is open at a time. Not safe for concurrent use.
type ReceiveTx struct {
	s     *Store
	name  string
	meta  raftpb.SnapshotMeta
	files []FileState
	// known[i]: the CRC32C of file i is known from bytes that passed
	// through this transaction (verified prefix + writes); synced[i]: the
	// file was synced by this transaction.
	known   []bool
	crc     []uint32
	synced  []bool
	open    map[string]*ReceiveFile
	resumed bool
	done    bool
}

// FileState is what a receiving directory holds of one file.
type FileState struct {
	raftpb.SnapshotFile
	// Present is the number of bytes on disk (not yet verified: compare
	// PrefixCRC with the sender's checksum before relying on them).
	Present uint64
	// Linked: the file was hard-linked from the latest published snapshot,
	// which holds it with the same name, size and CRC32C. Do not fetch it.
	Linked bool
}

// Complete reports whether the file has all its bytes on disk.
func (f FileState) Complete() bool { return f.Present == f.Size }

// Receive starts receiving the snapshot described by meta (the leader's,
// validated here), or resumes the receiving directory of an earlier attempt
// at the very same meta. Another receiving directory is removed: there is
// at most one per group. Files that the latest published snapshot holds
// with the same name, size and CRC32C are hard-linked at once.
//
// ErrStale if a published snapshot is at least as new; ErrBusy if a
// ReceiveTx is already open; ErrBadFileName, ErrUnknownFormat,
// ErrCorruptMeta for a bad meta.
func (s *Store) Receive(meta raftpb.SnapshotMeta) (*ReceiveTx, error) {
	enc, err := EncodeMeta(&meta)
	if err != nil {
		return nil, err
	}
	if meta.FormatVersion == 0 {
		meta.FormatVersion = raftpb.SnapshotFormatVersion
	}
	if s.group != 0 && meta.Group != s.group {
		return nil, fmt.Errorf("%w: meta of group %d in the store of group %d", ErrInvalid, meta.Group, s.group)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.usableLocked(); err != nil {
		return nil, err
	}
	if latest := s.latestIndexLocked(); meta.Index <= latest {
		return nil, fmt.Errorf("%w: snapshot %d, latest is %d", ErrStale, meta.Index, latest)
	}
	if s.rx != nil {
		return nil, fmt.Errorf("%w: already receiving snapshot %d", ErrBusy, s.rx.meta.Index)
	}
	t := &ReceiveTx{s: s, meta: cloneMeta(&meta), open: map[string]*ReceiveFile{}}
	n := len(meta.Files)
	t.files, t.known, t.crc, t.synced = make([]FileState, n), make([]bool, n), make([]uint32, n), make([]bool, n)
	for i, f := range meta.Files {
		t.files[i].SnapshotFile = f
	}
	if s.receiving != "" && bytes.Equal(s.receivingMeta, enc) {
		t.name, t.resumed = s.receiving, true
	} else {
		if s.receiving != "" {
			if err := s.fs.RemoveAll(s.path(s.receiving)); err != nil {
				return nil, fmt.Errorf("snapshot: remove %s: %w", s.receiving, err)
			}
			s.receiving, s.receivingMeta = "", nil
		}
		if err := t.createLocked(enc); err != nil {
			return nil, err
		}
	}
	if err := t.scanLocked(); err != nil {
		return nil, err
	}
	s.rx = t
	return t, nil
}

// createLocked makes a new receiving directory with the meta in it, durable
// so that a restart can resume it.
func (t *ReceiveTx) createLocked(enc []byte) error {
	s := t.s
	t.name = tempName(t.meta.Index, s.nextSeqLocked(), kindReceiving)
	dir := s.path(t.name)
	if err := s.fs.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("snapshot: create %s: %w", t.name, err)
	}
	fail := func(err error) error {
		s.fs.RemoveAll(dir)
		return err
	}
	if err := writeFileSync(s.fs, s.fs.PathJoin(dir, metaFile), enc); err != nil {
		return fail(fmt.Errorf("snapshot: write meta of %s: %w", t.name, err))
	}
	if err := syncDir(s.fs, dir); err != nil {
		return fail(err)
	}
	if err := s.syncDir(s.dir); err != nil {
		return err
	}
	s.receiving, s.receivingMeta = t.name, enc
	return nil
}

// scanLocked records what the directory holds of each file and hard-links
// the files the latest published snapshot has in identical form.
func (t *ReceiveTx) scanLocked() error {
	s := t.s
	for i := range t.files {
		f := &t.files[i]
		p := s.path(t.name, f.Name)
		fi, err := s.fs.Stat(p)
		switch {
		case err == nil && uint64(fi.Size()) <= f.Size:
			f.Present = uint64(fi.Size())
		case err == nil:
			// Longer than the meta says: useless, fetch it again.
			if err := s.fs.Remove(p); err != nil {
				return fmt.Errorf("snapshot: remove %s: %w", p, err)
			}
		case !isNotExist(err):
			return fmt.Errorf("snapshot: stat %s: %w", p, err)
		}
		if f.Complete() {
			continue
		}
		src, ok := s.findFileLocked(f.SnapshotFile)
		if !ok {
			continue
		}
		if f.Present > 0 {
			if err := s.fs.Remove(p); err != nil {
				return fmt.Errorf("snapshot: remove %s: %w", p, err)
			}
		}
		if err := s.fs.Link(src, p); err != nil {
			// Not fatal: the copier fetches it instead.
			s.log.Warn("snapshot: hard link failed", "from", src, "to", p, "err", err)
			f.Present = 0
			continue
		}
		f.Present, f.Linked = f.Size, true
		t.known[i], t.crc[i] = true, f.CRC32C
	}
	return nil
}

// Meta returns the meta being received.
func (t *ReceiveTx) Meta() raftpb.SnapshotMeta { return cloneMeta(&t.meta) }

// Dir returns the receiving directory.
func (t *ReceiveTx) Dir() string { return t.s.path(t.name) }

// Resumed reports whether the transaction continues an earlier attempt.
func (t *ReceiveTx) Resumed() bool { return t.resumed }

// Files returns what is held of each file, in meta order. The caller owns
// the slice.
func (t *ReceiveTx) Files() []FileState { return append([]FileState(nil), t.files...) }

// BytesPresent sums Present over all files.
func (t *ReceiveTx) BytesPresent() uint64 {
	var n uint64
	for _, f := range t.files {
		n += f.Present
	}
	return n
}

func (t *ReceiveTx) file(name string) (int, error) {
	for i := range t.files {
		if t.files[i].Name == name {
			return i, nil
		}
	}
	return 0, fmt.Errorf("%w: no file %q in snapshot %d", ErrInvalid, name, t.meta.Index)
}

// PrefixCRC returns the CRC32C of bytes [0, n) of the named file as held
// locally; n must not exceed Present.
func (t *ReceiveTx) PrefixCRC(name string, n uint64) (uint32, error) {
	if t.done {
		return 0, ErrClosed
	}
	i, err := t.file(name)
	if err != nil {
		return 0, err
	}
	if n > t.files[i].Present {
		return 0, fmt.Errorf("%w: prefix of %d bytes of %s, %d present", ErrInvalid, n, name, t.files[i].Present)
	}
	if n == 0 {
		return 0, nil
	}
	f, err := t.s.fs.Open(t.s.path(t.name, name), vfs.SequentialReadsOption)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	got, crc, err := readCRC(f, make([]byte, 256<<10), int64(n))
	if err != nil {
		return 0, err
	}
	if got != n {
		return 0, fmt.Errorf("%w: %s: read %d of %d bytes", ErrChecksum, name, got, n)
	}
	return crc, nil
}

// OpenFile opens the named file for writing from offset, which must not
// exceed Present: the copier verifies [0, offset) (PrefixCRC against the
// sender's checksum) and appends the rest in order. Bytes at and after
// offset are overwritten. offset 0 starts the file afresh in a new inode,
// so a hard-linked file is never written through; a complete file can only
// be rewritten from 0.
func (t *ReceiveTx) OpenFile(name string, offset uint64) (*ReceiveFile, error) {
	if t.done {
		return nil, ErrClosed
	}
	i, err := t.file(name)
	if err != nil {
		return nil, err
	}
	if t.open[name] != nil {
		return nil, fmt.Errorf("%w: %s is already open", ErrInvalid, name)
	}
	fs, st := t.s.fs, &t.files[i]
	p := t.s.path(t.name, name)
	if offset > st.Present {
		return nil, fmt.Errorf("%w: offset %d of %s, %d present", ErrInvalid, offset, name, st.Present)
	}
	if offset > 0 && st.Complete() {
		// A complete file may be a hard link to a published snapshot's
		// (from this or an earlier attempt): never write through it. Only
		// complete files are ever linked, so partial ones are safe.
		return nil, fmt.Errorf("%w: %s is complete; rewrite it from offset 0", ErrInvalid, name)
	}
	rf := &ReceiveFile{t: t, i: i, off: offset}
	if offset == 0 {
		if st.Present > 0 || st.Linked {
			if err := fs.Remove(p); err != nil && !isNotExist(err) {
				return nil, fmt.Errorf("snapshot: remove %s: %w", name, err)
			}
		}
		st.Present, st.Linked = 0, false
		if rf.f, err = fs.Create(p, vfs.WriteCategoryUnspecified); err != nil {
			return nil, fmt.Errorf("snapshot: create %s: %w", name, err)
		}
		rf.created = true
	} else {
		if rf.crc, err = t.PrefixCRC(name, offset); err != nil {
			return nil, err
		}
		if rf.f, err = fs.OpenReadWrite(p, vfs.WriteCategoryUnspecified); err != nil {
			return nil, fmt.Errorf("snapshot: open %s: %w", name, err)
		}
	}
	t.known[i], t.synced[i] = false, false
	t.open[name] = rf
	return rf, nil
}

// ReceiveFile appends to one file of a receiving snapshot, computing its
// CRC32C as it goes. Writes past the size in the meta are refused.
type ReceiveFile struct {
	t      *ReceiveTx
	i      int
	f      vfs.File
	off    uint64
	crc    uint32
	err    error
	closed bool
	// scratch holds a copy of what is written: a vfs.File may modify what
	// it is given, and Write must not modify p.
	scratch []byte
	// created: the file is new; its directory entry becomes durable with
	// the first sync (else a crash could keep the bytes' blocks but lose
	// the name, and a resume would start the file over).
	created bool
}

// Offset returns the offset the next Write goes to.
func (rf *ReceiveFile) Offset() uint64 { return rf.off }

// CRC returns the CRC32C of the file's bytes [0, Offset()): the verified
// prefix it was opened at plus everything written since.
func (rf *ReceiveFile) CRC() uint32 { return rf.crc }

// Write writes p at Offset.
func (rf *ReceiveFile) Write(p []byte) (int, error) {
	if rf.closed {
		return 0, ErrClosed
	}
	if rf.err != nil {
		return 0, rf.err
	}
	st := &rf.t.files[rf.i]
	if rf.off+uint64(len(p)) > st.Size {
		return 0, fmt.Errorf("%w: %d bytes at offset %d of %s exceed its %d bytes",
			ErrInvalid, len(p), rf.off, st.Name, st.Size)
	}
	crc := crc32c(rf.crc, p)
	rf.scratch = append(rf.scratch[:0], p...)
	n, err := rf.f.WriteAt(rf.scratch, int64(rf.off))
	if err != nil || n != len(p) {
		// The bytes at and after rf.off are not known; a resume goes by
		// PrefixCRC and the sender's checksum.
		if err == nil {
			err = fmt.Errorf("short write of %d bytes", n)
		}
		rf.err = fmt.Errorf("snapshot: write %s: %w", st.Name, err)
		return n, rf.err
	}
	rf.crc = crc
	rf.off += uint64(n)
	st.Present = max(st.Present, rf.off)
	return n, nil
}

// Sync makes the bytes written so far durable: a resume after a crash
// finds at least them.
func (rf *ReceiveFile) Sync() error {
	if rf.closed {
		return ErrClosed
	}
	return rf.sync()
}

func (rf *ReceiveFile) sync() error {
	if rf.err != nil {
		return rf.err
	}
	name := rf.t.files[rf.i].Name
	if err := rf.f.Sync(); err != nil {
		rf.err = fmt.Errorf("snapshot: sync %s: %w", name, err)
		return rf.err
	}
	if rf.created {
		if err := syncDir(rf.t.s.fs, rf.t.Dir()); err != nil {
			rf.err = fmt.Errorf("snapshot: sync %s: %w", name, err)
			return rf.err
		}
		rf.created = false
	}
	return nil
}

// Close syncs and closes the file. After an error the file is closed too.
func (rf *ReceiveFile) Close() error {
	if rf.closed {
		return nil
	}
	rf.closed = true
	t := rf.t
	delete(t.open, t.files[rf.i].Name)
	err := rf.sync()
	if cerr := rf.f.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("snapshot: close %s: %w", t.files[rf.i].Name, cerr)
	}
	if err != nil {
		return err
	}
	t.synced[rf.i] = true
	// Every byte of [0, off) passed through this file (verified prefix +
	// writes): when off is the whole file, its CRC is known.
	if rf.off == t.files[rf.i].Size {
		t.known[rf.i], t.crc[rf.i] = true, rf.crc
	}
	return nil
}

// Commit verifies every file (size, and CRC32C — read back unless it
// passed through this transaction), syncs what this transaction did not
// sync, syncs the directory, renames it to snapshot-<index> and syncs the
// parent. A file whose checksum does not match is removed so that the next
// attempt fetches it again, and Commit fails with ErrChecksum, keeping the
// directory for that attempt. ErrStale if a snapshot at least as new was
// published meanwhile (the directory is then removed). After another
// error the transaction stays open: fetch what is missing and Commit
// again, or Close to resume later.
func (t *ReceiveTx) Commit() error {
	if t.done {
		return ErrClosed
	}
	for _, rf := range t.open {
		if err := rf.Close(); err != nil {
			return err
		}
	}
	fs := t.s.fs
	buf := make([]byte, 256<<10)
	for i := range t.files {
		f := &t.files[i]
		p := t.s.path(t.name, f.Name)
		crc, size := t.crc[i], f.Present
		if !t.known[i] {
			var err error
			if size, crc, err = fileCRC(fs, p, buf); err != nil && !isNotExist(err) {
				return fmt.Errorf("snapshot: verify %s: %w", f.Name, err)
			}
		}
		if size != f.Size {
			return fmt.Errorf("%w: %s has %d of %d bytes", ErrChecksum, f.Name, size, f.Size)
		}
		if crc != f.CRC32C {
			if err := fs.Remove(p); err != nil && !isNotExist(err) {
				// Present is reset below, so the next attempt rewrites
				// the file from offset 0 whatever is left of it.
				t.s.log.Warn("snapshot: removing a receiving file with a bad checksum failed",
					"file", p, "err", err)
			}
			f.Present, f.Linked, t.known[i] = 0, false, false
			return fmt.Errorf("%w: %s: crc %08x, meta says %08x", ErrChecksum, f.Name, crc, f.CRC32C)
		}
		if !t.synced[i] {
			if err := syncFile(fs, p); err != nil {
				return fmt.Errorf("snapshot: sync %s: %w", f.Name, err)
			}
			t.synced[i] = true
		}
	}
	if err := syncDir(fs, t.Dir()); err != nil {
		return err
	}
	s := t.s
	s.mu.Lock()
	doomed, err := s.publishLocked(t.name, t.meta)
	if err == nil || errors.Is(err, ErrStorageFailed) {
		// Published, or the store failed (maybe after the rename): the
		// receiving directory is no longer ours either way. After another
		// error (a failed rename) the transaction stays open.
		t.endLocked(true /* forget */)
	}
	s.mu.Unlock()
	if isStale(err) {
		t.Abort()
		return err
	}
	if err != nil {
		return err
	}
	s.removeAll(doomed)
	return nil
}

// Close ends the transaction and keeps the directory, so that a later
// Receive of the same meta resumes it.
func (t *ReceiveTx) Close() error {
	if t.done {
		return nil
	}
	t.closeFiles()
	t.s.mu.Lock()
	t.endLocked(false /* forget */)
	t.s.mu.Unlock()
	return nil
}

// Abort ends the transaction and removes the directory.
func (t *ReceiveTx) Abort() error {
	if t.done {
		return nil
	}
	t.closeFiles()
	s := t.s
	s.mu.Lock()
	defer s.mu.Unlock()
	if !t.endLocked(true /* forget */) {
		return nil // already replaced (cannot happen while t is open)
	}
	if err := s.fs.RemoveAll(s.path(t.name)); err != nil {
		return fmt.Errorf("snapshot: abort %s: %w", t.name, err)
	}
	return nil
}

// closeFiles closes the files still open (Close keeps what they hold).
func (t *ReceiveTx) closeFiles() {
	for _, rf := range t.open {
		_ = rf.Close()
	}
}

// endLocked ends the transaction. With forget, the store also forgets the
// receiving directory (renamed or about to be removed); it reports whether
// the directory was still the store's.
func (t *ReceiveTx) endLocked(forget bool) bool {
	t.done = true
	if t.s.rx == t {
		t.s.rx = nil
	}
	if !forget || t.s.receiving != t.name {
		return false
	}
	t.s.receiving, t.s.receivingMeta = "", nil
	return true
}
