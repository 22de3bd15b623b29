package snapshot

// Store API, for the copier and the executor.
//
//	s, err := Open(fs, dir, Options{Group: g})   // one Store per group directory
//
//	// Saving (executor): a .generating transaction.
//	w, err := s.Create(meta)         // meta without Files; ErrStale if not newer
//	defer w.Abort()                  // no-op after Commit
//	w.Write(p) / w.CreateFile(name) / w.AddFile(name, externalPath)
//	err = w.Commit()                 // fsync files → meta → fsync dir → rename → fsync parent
//
//	// Reading (sender, load): a reference held until Close; GC never removes
//	// a referenced snapshot.
//	r, err := s.OpenReader(index)    // 0 = latest; ErrNotFound
//	r.Meta(); r.Files(); r.OpenFile(name); r.Path(name); r.Verify()
//	r.Close()
//
//	// Receiving (copier): create or resume snapshot-<index>-<n>.receiving.
//	tx, err := s.Receive(meta)       // validated remote meta; ErrStale, ErrBusy
//	for _, f := range tx.Files() {   // Present bytes, Complete, Linked (hard-linked
//	    ...                          // from the latest snapshot: same name/size/CRC)
//	}
//	crc, err := tx.PrefixCRC(name, n)     // CRC32C of [0, n) as held locally
//	fw, err := tx.OpenFile(name, offset)  // append from offset (≤ Present); bytes
//	fw.Write(chunk); fw.Sync(); fw.Close() // past the meta's size are refused
//	err = tx.Commit()                // sizes + CRC32C of every file → fsync →
//	                                 // fsync dir → rename → fsync parent
//	tx.Close()                       // keep the directory for a later resume
//	tx.Abort()                       // remove it
//
// Files identical (name, size, CRC) to the latest snapshot's are
// hard-linked by Receive itself; tx.Files() reports them as Linked.
//
// Meta records: EncodeMeta / DecodeMeta / ValidateMeta / ValidateFileName
// (meta.go). Everything goes through vfs.FS.

import (
	"cmp"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"sync"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/skiffdb/skiff/raftpb"
)

// DefaultRetained is the number of published snapshots kept by default.
const DefaultRetained = 2

// Options configure a Store.
type Options struct {
	// Group is the group whose snapshots the store holds; metas of another
	// group are refused. 0 disables the check.
	Group raftpb.GroupID
	// Retained is how many of the newest published snapshots GC keeps
	// (SnapshotsRetained); at least 1, default DefaultRetained.
	Retained int
	// Logger receives warnings (quarantined snapshots, failed cleanups).
	Logger *slog.Logger
	// Throttle, shared by the host's stores, limits the bytes Writers
	// write (Limits.GenerateBytesPerSec). nil: unlimited.
	Throttle *Throttle
}

// Skipped describes a published snapshot that Open could not verify.
type Skipped struct {
	Index uint64
	// Dir is where the snapshot now lies (quarantined as .corrupt).
	Dir string
	Err error
}

// Store holds one group's snapshots in one directory. It is safe for
// concurrent use; Writers, Readers and ReceiveTxs are each for one
// goroutine at a time.
type Store struct {
	fs       vfs.FS
	dir      string
	group    raftpb.GroupID
	retained int
	log      *slog.Logger
	throttle *Throttle // nil: saves are not limited

	mu sync.Mutex
	// snaps are the published snapshots, ascending by index.
	// Invariant: each was verified by Open (meta checksum, file sizes) or
	// created by a Commit of this process.
	snaps []*entry
	// seq is the last sequence number used in a temp directory name.
	seq uint64
	// receiving is the one receive directory known on disk ("" if none);
	// rx is the open transaction over it, if any.
	// Invariant: at most one .receiving directory exists per group.
	receiving     string
	receivingMeta []byte
	rx            *ReceiveTx
	skipped       []Skipped
	// failed is set when an fsync of the store directory failed: the state
	// on disk is unknown, so every later change is refused.
	failed error
	closed bool
}

// entry is one published snapshot.
type entry struct {
	meta raftpb.SnapshotMeta
	name string
	// refs counts open Readers. Invariant: a snapshot with refs > 0 is
	// never removed; one past retention is removed at its last Unref.
	refs int
}

// Open opens (creating if needed) the snapshot directory dir and recovers
// it: published snapshots are verified newest first (meta checksum, every
// file's size); a snapshot that fails is quarantined as .corrupt and listed
// by Skipped, and the next older one is used. If snapshots exist but none
// verifies, Open fails with ErrNoValidSnapshot and changes nothing; a meta of
// a newer format fails it with ErrUnknownFormat, also changing nothing.
// Then .generating, .deleting and non-resumable .receiving leftovers are
// removed (a .receiving newer than the latest snapshot, with a valid meta,
// is kept for Receive to resume) and retention is applied.
//
// Whether the log covers the gap left by a skipped snapshot is for the
// caller to decide (NewExecutor does).
func Open(fs vfs.FS, dir string, opts Options) (*Store, error) {
	if opts.Retained <= 0 {
		opts.Retained = DefaultRetained
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	s := &Store{fs: fs, dir: dir, group: opts.Group, retained: opts.Retained, log: opts.Logger, throttle: opts.Throttle}
	if err := s.ensureDir(); err != nil {
		return nil, err
	}
	names, err := fs.List(dir)
	if err != nil {
		return nil, fmt.Errorf("snapshot: list %s: %w", dir, err)
	}
	slices.Sort(names)

	// Classify everything first; nothing is changed before we know that no
	// meta is of an unknown format and that some snapshot verifies.
	type found struct {
		name  string
		index uint64
		seq   uint64
		kind  dirKind
	}
	var all []found
	for _, n := range names {
		index, seq, k, ok := parseDirName(n)
		if !ok {
			continue
		}
		s.seq = max(s.seq, seq)
		all = append(all, found{n, index, seq, k})
	}
	var bad []Skipped
	var good []*entry
	for i := len(all) - 1; i >= 0; i-- { // newest first
		f := all[i]
		if f.kind != kindPublished {
			continue
		}
		m, err := s.verifyDir(f.name, f.index)
		if errors.Is(err, ErrUnknownFormat) {
			return nil, fmt.Errorf("snapshot: %s: %w", f.name, err)
		}
		if err != nil {
			bad = append(bad, Skipped{Index: f.index, Dir: f.name, Err: err})
			continue
		}
		good = append(good, &entry{meta: m, name: f.name})
	}
	if len(good) == 0 && len(bad) > 0 {
		return nil, fmt.Errorf("%w: %d snapshot(s) in %s, none verifies; newest: %v",
			ErrNoValidSnapshot, len(bad), dir, bad[0].Err)
	}
	slices.Reverse(good)
	s.snaps = good
	latest := s.latestIndexLocked()

	// Now repair. Quarantine what failed, keep the newest resumable
	// .receiving, remove the other leftovers.
	changed := false
	for _, b := range bad {
		s.seq++
		to := tempName(b.Index, s.seq, kindCorrupt)
		s.log.Warn("snapshot: quarantining a snapshot that failed verification",
			"dir", b.Dir, "to", to, "err", b.Err)
		if err := fs.Rename(s.path(b.Dir), s.path(to)); err != nil {
			return nil, fmt.Errorf("snapshot: quarantine %s: %w", b.Dir, err)
		}
		s.skipped = append(s.skipped, Skipped{Index: b.Index, Dir: to, Err: b.Err})
		changed = true
	}
	for i := len(all) - 1; i >= 0; i-- {
		f := all[i]
		switch f.kind {
		case kindPublished:
			continue
		case kindCorrupt:
			// Quarantined by an earlier Open: still reported, so that the
			// gap it may leave is checked at every start, not just the first.
			s.skipped = append(s.skipped, Skipped{Index: f.index, Dir: f.name,
				Err: fmt.Errorf("%w: quarantined by an earlier Open", ErrChecksum)})
			continue
		case kindReceiving:
			if s.receiving == "" && f.index > latest {
				b, err := s.readMetaBytes(f.name)
				if err == nil {
					m, _ := DecodeMeta(b)
					if m.Index == f.index && (s.group == 0 || m.Group == s.group) {
						s.receiving, s.receivingMeta = f.name, b
						continue
					}
				}
			}
		}
		if err := fs.RemoveAll(s.path(f.name)); err != nil {
			return nil, fmt.Errorf("snapshot: remove leftover %s: %w", f.name, err)
		}
		changed = true
	}
	slices.SortStableFunc(s.skipped, func(a, b Skipped) int { return cmp.Compare(b.Index, a.Index) })
	if changed {
		if err := s.syncDir(s.dir); err != nil {
			return nil, err
		}
	}
	s.mu.Lock()
	doomed := s.gcLocked()
	s.mu.Unlock()
	s.removeAll(doomed)
	if s.failed != nil {
		return nil, s.failed
	}
	return s, nil
}

// ensureDir creates the store directory if needed and makes its entry in
// the parent durable.
func (s *Store) ensureDir() error {
	if err := mkdirDurable(s.fs, s.dir); err != nil {
		if s.failed == nil && errors.Is(err, ErrStorageFailed) {
			s.failed = err
		}
		return err
	}
	return nil
}

// mkdirDurable creates dir if needed and makes its entry in the parent
// durable (a failed fsync is ErrStorageFailed).
func mkdirDurable(fs vfs.FS, dir string) error {
	if _, err := fs.Stat(dir); err == nil {
		return nil
	} else if !isNotExist(err) {
		return fmt.Errorf("snapshot: stat %s: %w", dir, err)
	}
	// Every directory MkdirAll creates is a new entry in its parent, and
	// each parent must be synced, up to the first that existed: syncing
	// only dir's parent left a new "snapshots" directory of a fresh host
	// unsynced, so a power cut lost every snapshot (testcluster,
	// TestPowerCutRightAfterFirstSnapshotKeepsIt).
	created := []string{dir}
	for p := fs.PathDir(dir); p != created[len(created)-1]; p = fs.PathDir(p) {
		if _, err := fs.Stat(p); err == nil {
			break
		} else if !isNotExist(err) {
			return fmt.Errorf("snapshot: stat %s: %w", p, err)
		}
		created = append(created, p)
	}
	if err := fs.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("snapshot: mkdir %s: %w", dir, err)
	}
	for _, d := range created {
		if err := syncDir(fs, fs.PathDir(d)); err != nil {
			return fmt.Errorf("%w: %v", ErrStorageFailed, err)
		}
	}
	return nil
}

// verifyDir reads and checks the meta of a published directory and the
// sizes of its files. Full CRC verification is Reader.Verify.
func (s *Store) verifyDir(name string, index uint64) (raftpb.SnapshotMeta, error) {
	b, err := s.readMetaBytes(name)
	if err != nil {
		return raftpb.SnapshotMeta{}, err
	}
	m, err := DecodeMeta(b)
	if err != nil {
		return m, err
	}
	if m.Index != index {
		return m, fmt.Errorf("%w: meta index %d in %s", ErrCorruptMeta, m.Index, name)
	}
	if s.group != 0 && m.Group != s.group {
		return m, fmt.Errorf("%w: meta of group %d in the store of group %d", ErrCorruptMeta, m.Group, s.group)
	}
	for _, f := range m.Files {
		fi, err := s.fs.Stat(s.path(name, f.Name))
		if err != nil {
			return m, fmt.Errorf("%w: %s: %v", ErrChecksum, f.Name, err)
		}
		if uint64(fi.Size()) != f.Size {
			return m, fmt.Errorf("%w: %s is %d bytes, meta says %d", ErrChecksum, f.Name, fi.Size(), f.Size)
		}
	}
	return m, nil
}

// readMetaBytes reads the meta record of a snapshot directory.
func (s *Store) readMetaBytes(dir string) ([]byte, error) {
	f, err := s.fs.Open(s.path(dir, metaFile))
	if err != nil {
		return nil, fmt.Errorf("%w: open: %v", ErrCorruptMeta, err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxMetaSize+1))
	if err != nil {
		return nil, fmt.Errorf("%w: read: %v", ErrCorruptMeta, err)
	}
	if _, err := DecodeMeta(b); err != nil {
		return nil, err
	}
	return b, nil
}

// Dir returns the store's directory.
func (s *Store) Dir() string { return s.dir }

// FS returns the store's file system.
func (s *Store) FS() vfs.FS { return s.fs }

// Skipped lists the snapshots that failed verification, now or at an
// earlier Open (quarantined as .corrupt), newest first.
func (s *Store) Skipped() []Skipped {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.skipped)
}

// Latest returns the meta of the newest published snapshot.
func (s *Store) Latest() (raftpb.SnapshotMeta, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.snaps) == 0 {
		return raftpb.SnapshotMeta{}, false
	}
	return cloneMeta(&s.snaps[len(s.snaps)-1].meta), true
}

// List returns the metas of the published snapshots, oldest first.
func (s *Store) List() []raftpb.SnapshotMeta {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]raftpb.SnapshotMeta, len(s.snaps))
	for i, e := range s.snaps {
		out[i] = cloneMeta(&e.meta)
	}
	return out
}

// MinReferenced returns the lowest index of a snapshot held by a Reader:
// the log must not be compacted past what an in-flight transfer of that
// snapshot needs.
func (s *Store) MinReferenced() (uint64, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, e := range s.snaps {
		if e.refs > 0 {
			return e.meta.Index, true
		}
	}
	return 0, false
}

// findFileLocked returns the path of a file with f's name, size and CRC32C
// in the latest published snapshot, so that a receive hard-links it instead
// of copying it.
func (s *Store) findFileLocked(f raftpb.SnapshotFile) (string, bool) {
	if len(s.snaps) == 0 {
		return "", false
	}
	e := s.snaps[len(s.snaps)-1]
	if g, ok := fileOf(&e.meta, f.Name); ok && g == f {
		return s.path(e.name, f.Name), true
	}
	return "", false
}

// Close closes the store. Open Readers stay usable; new operations fail
// with ErrClosed.
func (s *Store) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	return nil
}

func (s *Store) latestIndexLocked() uint64 {
	if len(s.snaps) == 0 {
		return 0
	}
	return s.snaps[len(s.snaps)-1].meta.Index
}

// usableLocked reports why the store cannot change anything, if it can't.
func (s *Store) usableLocked() error {
	if s.closed {
		return ErrClosed
	}
	return s.failed
}

func (s *Store) nextSeqLocked() uint64 {
	s.seq++
	return s.seq
}

func (s *Store) path(elem ...string) string {
	return s.fs.PathJoin(append([]string{s.dir}, elem...)...)
}

// syncDir fsyncs a directory. A failure is final for the store: the
// durability of earlier renames is unknown (no fsync is retried).
func (s *Store) syncDir(dir string) error {
	if err := syncDir(s.fs, dir); err != nil {
		err = fmt.Errorf("%w: %v", ErrStorageFailed, err)
		if s.failed == nil {
			s.failed = err
		}
		return err
	}
	return nil
}

func syncDir(fs vfs.FS, dir string) error {
	d, err := fs.OpenDir(dir)
	if err != nil {
		return fmt.Errorf("open dir %s: %w", dir, err)
	}
	if err := d.Sync(); err != nil {
		d.Close()
		return fmt.Errorf("sync dir %s: %w", dir, err)
	}
	return d.Close()
}

// publishLocked renames a finished temp directory to its published name,
// makes the rename durable and applies retention. It returns the
// directories to remove once the lock is released.
func (s *Store) publishLocked(tmp string, m raftpb.SnapshotMeta) ([]string, error) {
	if err := s.usableLocked(); err != nil {
		return nil, err
	}
	if latest := s.latestIndexLocked(); m.Index <= latest {
		return nil, fmt.Errorf("%w: snapshot %d, latest is %d", ErrStale, m.Index, latest)
	}
	name := publishedName(m.Index)
	if err := s.fs.Rename(s.path(tmp), s.path(name)); err != nil {
		return nil, fmt.Errorf("snapshot: publish %s: %w", tmp, err)
	}
	// Once renamed, the snapshot is ours whatever the dir sync says: if it
	// fails the store is failed (ErrStorageFailed) and nothing else changes.
	s.snaps = append(s.snaps, &entry{meta: m, name: name})
	if err := s.syncDir(s.dir); err != nil {
		return nil, err
	}
	return s.gcLocked(), nil
}

// gcLocked applies retention: every published snapshot older than the
// newest s.retained and not referenced is renamed to .deleting (durably)
// and returned for removal. A referenced one is removed at its last Unref.
// The newest snapshot is never removed.
func (s *Store) gcLocked() []string {
	if s.failed != nil {
		return nil
	}
	var doomed []string
	// A kept .receiving directory that a newer snapshot made useless. NB:
	// renamed to .deleting under the lock, like a snapshot, so that a
	// Receive running before the removal never finds two .receiving
	// directories (at most one per group, at every instant).
	if s.receiving != "" && s.rx == nil {
		if index, _, _, _ := parseDirName(s.receiving); index <= s.latestIndexLocked() {
			to := tempName(index, s.nextSeqLocked(), kindDeleting)
			if err := s.fs.Rename(s.path(s.receiving), s.path(to)); err != nil {
				s.log.Warn("snapshot: gc rename failed", "dir", s.receiving, "err", err)
			} else {
				doomed = append(doomed, to)
				s.receiving, s.receivingMeta = "", nil
			}
		}
	}
	if len(s.snaps) <= s.retained {
		return doomed
	}
	keep := s.snaps[:0:0]
	cut := len(s.snaps) - s.retained
	for i, e := range s.snaps {
		if i >= cut || e.refs > 0 {
			keep = append(keep, e)
			continue
		}
		to := tempName(e.meta.Index, s.nextSeqLocked(), kindDeleting)
		if err := s.fs.Rename(s.path(e.name), s.path(to)); err != nil {
			s.log.Warn("snapshot: gc rename failed", "dir", e.name, "err", err)
			keep = append(keep, e)
			continue
		}
		doomed = append(doomed, to)
	}
	renamed := len(keep) < len(s.snaps)
	s.snaps = keep
	if renamed {
		// Make the renames durable before removing anything, so that a
		// crash never leaves a published name over a half-removed directory.
		if err := s.syncDir(s.dir); err != nil {
			return nil
		}
	}
	return doomed
}

// removeAll removes GC'd directories. Failures are logged: Open removes
// .deleting leftovers.
func (s *Store) removeAll(dirs []string) {
	for _, d := range dirs {
		if err := s.fs.RemoveAll(s.path(d)); err != nil {
			s.log.Warn("snapshot: remove failed", "dir", d, "err", err)
		}
	}
}

// GC applies retention now. It runs by itself after every publish and at
// the last Unref of a snapshot past retention.
func (s *Store) GC() error {
	s.mu.Lock()
	if err := s.usableLocked(); err != nil {
		s.mu.Unlock()
		return err
	}
	doomed := s.gcLocked()
	err := s.failed
	s.mu.Unlock()
	s.removeAll(doomed)
	return err
}

// Ref takes a reference on the published snapshot at index so that GC
// keeps it until Unref. Prefer OpenReader.
func (s *Store) Ref(index uint64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.findLocked(index)
	if e == nil {
		return fmt.Errorf("%w: index %d", ErrNotFound, index)
	}
	e.refs++
	return nil
}

// Unref drops a reference taken by Ref; at the last one a snapshot past
// retention is removed.
func (s *Store) Unref(index uint64) {
	s.mu.Lock()
	e := s.findLocked(index)
	if e == nil || e.refs == 0 {
		s.mu.Unlock()
		panic(fmt.Sprintf("snapshot: Unref(%d) without a reference", index))
	}
	e.refs--
	var doomed []string
	if e.refs == 0 && !s.closed {
		doomed = s.gcLocked()
	}
	s.mu.Unlock()
	s.removeAll(doomed)
}

func (s *Store) findLocked(index uint64) *entry {
	if index == 0 {
		if len(s.snaps) == 0 {
			return nil
		}
		return s.snaps[len(s.snaps)-1]
	}
	for _, e := range s.snaps {
		if e.meta.Index == index {
			return e
		}
	}
	return nil
}

func isNotExist(err error) bool { return errors.Is(err, os.ErrNotExist) }

func isStale(err error) bool { return errors.Is(err, ErrStale) }

// Quarantine moves the published snapshot at index aside as .corrupt
// (kept for the operator, listed by Skipped) after a full verification
// failed with cause. ErrBusy while a Reader holds it; ErrNotFound if there
// is no such snapshot.
func (s *Store) Quarantine(index uint64, cause error) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.usableLocked(); err != nil {
		return err
	}
	i := slices.IndexFunc(s.snaps, func(e *entry) bool { return e.meta.Index == index })
	if i < 0 {
		return fmt.Errorf("%w: index %d", ErrNotFound, index)
	}
	e := s.snaps[i]
	if e.refs > 0 {
		return fmt.Errorf("%w: snapshot %d is being read", ErrBusy, index)
	}
	to := tempName(index, s.nextSeqLocked(), kindCorrupt)
	if err := s.fs.Rename(s.path(e.name), s.path(to)); err != nil {
		return fmt.Errorf("snapshot: quarantine %s: %w", e.name, err)
	}
	s.snaps = slices.Delete(s.snaps, i, i+1)
	s.skipped = append([]Skipped{{Index: index, Dir: to, Err: cause}}, s.skipped...)
	slices.SortStableFunc(s.skipped, func(a, b Skipped) int { return cmp.Compare(b.Index, a.Index) })
	s.log.Warn("snapshot: quarantined a damaged snapshot", "dir", e.name, "to", to, "err", cause)
	return s.syncDir(s.dir)
}
