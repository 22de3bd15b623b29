package kv

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"strings"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/skiffdb/skiff/statemachine"
)

// A snapshot is a Pebble checkpoint handed to the host as files, plus a
// short stream:
//
//	"skiffkv" version(1 byte) uvarint(applied index) uvarint(number of files)
//
// The checkpoint's tables are hard links to the live database's (Pebble
// never changes a table once written), so taking one copies only the
// MANIFEST, OPTIONS and the WAL; the host hard-links the files again into
// its snapshot, and a follower that already holds a table with the same
// name, size and checksum links it instead of receiving it.
const snapshotMagic = "skiffkv"

// capture is a checkpoint taken by Snapshot.
type capture struct {
	fs      vfs.FS
	log     *slog.Logger
	path    string // the checkpoint directory
	applied uint64 // the applied index the checkpoint holds
	// err is why the checkpoint could not be taken: Save reports it, so
	// that a failed capture (a full disk) fails this snapshot only, not
	// the replica.
	err error
}

// Snapshot takes a Pebble checkpoint of the current state into a new
// directory beside the database. It runs on the apply goroutine between
// Apply calls, so the checkpoint holds exactly the entries applied so far:
// the WAL is flushed first (WithFlushedWAL) because batches are committed
// without sync and could otherwise still sit in Pebble's buffer.
func (m *machine) Snapshot() (statemachine.Snapshot, error) {
	if m.db == nil {
		return nil, ErrClosed
	}
	m.nextCkpt++
	path := m.fs.PathJoin(m.dir, fmt.Sprintf("%s%06d", checkpointPrefix, m.nextCkpt))
	c := &capture{fs: m.fs, log: m.log, path: path, applied: m.applied}
	if err := m.db.Checkpoint(path, pebble.WithFlushedWAL()); err != nil {
		// Pebble removed what it had created.
		c.err = fmt.Errorf("kv: checkpoint %s: %w", path, err)
	}
	return c, nil
}

// Save hands every file of the checkpoint to the host (zero copy) and
// writes the header. It may run concurrently with Apply: the checkpoint
// does not change.
func (c *capture) Save(ctx context.Context, w io.Writer, files statemachine.FileCollection) error {
	if c.err != nil {
		return c.err
	}
	names, err := c.fs.List(c.path)
	if err != nil {
		return fmt.Errorf("kv: list checkpoint %s: %w", c.path, err)
	}
	slices.Sort(names)
	for _, name := range names {
		if err := ctx.Err(); err != nil {
			return err
		}
		path := c.fs.PathJoin(c.path, name)
		st, err := c.fs.Stat(path)
		if err != nil {
			return fmt.Errorf("kv: stat %s: %w", path, err)
		}
		// Pebble's checkpoint layout is flat; a subdirectory (shared or
		// remote storage, WAL failover) is a configuration this package
		// does not use, and cannot be handed over as plain files.
		if st.IsDir() {
			return fmt.Errorf("kv: checkpoint %s has a subdirectory %s", c.path, name)
		}
		if err := checkFileName(name); err != nil {
			return err
		}
		if err := files.AddFile(name, path); err != nil {
			return fmt.Errorf("kv: add snapshot file %s: %w", name, err)
		}
	}
	hdr := append([]byte(snapshotMagic), SnapshotVersion)
	hdr = binary.AppendUvarint(hdr, c.applied)
	hdr = binary.AppendUvarint(hdr, uint64(len(names)))
	if _, err := w.Write(hdr); err != nil {
		return fmt.Errorf("kv: write snapshot header: %w", err)
	}
	return nil
}

// Release removes the checkpoint directory: the host has hard-linked
// what it needed (or the snapshot was abandoned). A failure is logged; Open
// removes leftovers.
func (c *capture) Release() {
	if c.err != nil {
		return
	}
	if err := c.fs.RemoveAll(c.path); err != nil {
		c.log.Warn("kv: remove checkpoint", "path", c.path, "err", err)
	}
}

// checkFileName accepts the plain file names FileCollection.AddFile takes.
func checkFileName(name string) error {
	if name == "" || name == "." || name == ".." || name == "data" || name == "meta" ||
		strings.ContainsAny(name, `/\`) {
		return fmt.Errorf("%w: snapshot file name %q", ErrCorrupt, name)
	}
	return nil
}

// immutableFile reports whether Pebble never writes to a file of this name
// once it exists (tables and blob files), so that a hard link to it can be
// shared between databases and the host's snapshots. Everything else (the
// MANIFEST, which Pebble appends to; WAL files, which it recycles; OPTIONS
// and markers) is copied.
func immutableFile(name string) bool {
	return strings.HasSuffix(name, ".sst") || strings.HasSuffix(name, ".blob")
}

// readHeader reads a snapshot stream and checks that nothing follows the
// header.
func readHeader(r io.Reader) (applied, files uint64, err error) {
	br := bufio.NewReader(io.LimitReader(r, 64))
	magic := make([]byte, len(snapshotMagic)+1)
	if _, err := io.ReadFull(br, magic); err != nil {
		return 0, 0, fmt.Errorf("%w: snapshot header: %v", ErrCorrupt, err)
	}
	if string(magic[:len(snapshotMagic)]) != snapshotMagic {
		return 0, 0, fmt.Errorf("%w: snapshot header magic %q", ErrCorrupt, magic[:len(snapshotMagic)])
	}
	if v := magic[len(snapshotMagic)]; v != SnapshotVersion {
		return 0, 0, fmt.Errorf("%w: snapshot format version %d, want %d", ErrCorrupt, v, SnapshotVersion)
	}
	if applied, err = binary.ReadUvarint(br); err != nil {
		return 0, 0, fmt.Errorf("%w: snapshot applied index: %v", ErrCorrupt, err)
	}
	if files, err = binary.ReadUvarint(br); err != nil {
		return 0, 0, fmt.Errorf("%w: snapshot file count: %v", ErrCorrupt, err)
	}
	if _, err := br.ReadByte(); err != io.EOF {
		return 0, 0, fmt.Errorf("%w: bytes after the snapshot header", ErrCorrupt)
	}
	return applied, files, nil
}

// Restore replaces the whole state with the snapshot's. It builds a new
// database directory from the files (hard links for tables, copies for
// the files Pebble changes), opens and checks it, and only then points
// CURRENT at it and swaps it in; the old directory is removed afterwards.
// A crash at any point leaves CURRENT naming either the old or the new
// database, each whole; Open removes the other.
func (m *machine) Restore(ctx context.Context, r io.Reader, files []statemachine.SnapshotFile) error {
	if m.db == nil {
		return ErrClosed
	}
	applied, n, err := readHeader(r)
	if err != nil {
		return err
	}
	if n != uint64(len(files)) {
		return fmt.Errorf("%w: snapshot header lists %d files, the snapshot has %d", ErrCorrupt, n, len(files))
	}
	name := dbName(m.nextDB)
	m.nextDB++
	path := m.fs.PathJoin(m.dir, name)
	db, err := m.build(ctx, path, name, files)
	if err != nil {
		if rmErr := m.fs.RemoveAll(path); rmErr != nil {
			m.log.Warn("kv: remove unfinished restore", "path", path, "err", rmErr)
		}
		return err
	}
	got, found, err := readApplied(db)
	if err != nil {
		err = fmt.Errorf("kv: restored database %s: %w", name, err)
	} else if !found || got != applied {
		err = fmt.Errorf("%w: restored database %s holds applied index %d (present: %v), the snapshot says %d",
			ErrCorrupt, name, got, found, applied)
	}
	if err == nil {
		err = writeCurrent(m.fs, m.dir, name)
		if err != nil {
			// CURRENT may or may not name the new database now: leave
			// both directories for Open to sort out. The error stops the
			// replica, whose next Open finds a whole database either way.
			db.Close()
			return err
		}
	}
	if err != nil {
		db.Close()
		if rmErr := m.fs.RemoveAll(path); rmErr != nil {
			m.log.Warn("kv: remove rejected restore", "path", path, "err", rmErr)
		}
		return err
	}

	m.mu.Lock()
	old := m.db
	m.db = db
	m.mu.Unlock()
	oldName := m.dbName
	m.dbName, m.applied, m.applyError = name, applied, nil
	m.log.Info("kv: restored snapshot", "db", name, "applied", applied, "files", len(files))

	// CURRENT names the new database: failures from here on only leave
	// garbage that Open removes.
	if err := old.Close(); err != nil {
		m.log.Warn("kv: close replaced database", "db", oldName, "err", err)
	}
	oldPath := m.fs.PathJoin(m.dir, oldName)
	if err := m.fs.RemoveAll(oldPath); err != nil {
		m.log.Warn("kv: remove replaced database", "path", oldPath, "err", err)
	}
	return nil
}

// build creates the database directory path from the snapshot's files and
// opens it. Everything in it is durable before it returns.
func (m *machine) build(ctx context.Context, path, name string, files []statemachine.SnapshotFile) (*pebble.DB, error) {
	if err := m.fs.RemoveAll(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("kv: remove %s: %w", path, err)
	}
	if err := mkdirAllSync(m.fs, path); err != nil {
		return nil, err
	}
	for _, f := range files {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if err := checkFileName(f.Name); err != nil {
			return nil, err
		}
		dst := m.fs.PathJoin(path, f.Name)
		var err error
		if immutableFile(f.Name) {
			err = linkOrCopyFile(m.fs, f.Path, dst)
		} else {
			err = copyFile(m.fs, f.Path, dst)
		}
		if err != nil {
			return nil, err
		}
	}
	if err := syncDir(m.fs, path); err != nil {
		return nil, err
	}
	// Pebble syncs whatever it writes while opening (a new MANIFEST, the
	// flush of the copied WAL).
	return m.openDB(name, false)
}
