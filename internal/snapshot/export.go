package snapshot

import (
	"fmt"
	"io"
	"slices"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/skiffdb/skiff/raftpb"
)

// Exported snapshots (dragonboat's Exported/ExportPath, REQUIREMENTS §16).
//
// An export is a snapshot directory like a published one — the files and
// the checksummed meta — written under an operator's path as
// <path>/snapshot-<index>/ through the same transaction (a .generating
// directory, fsyncs, rename, fsync of the path). It is self-contained: it
// needs nothing from the group's directories, and taking it changes
// neither the group's snapshot index nor its log.

// createExport starts a Writer whose directory is under an export path.
func createExport(fs vfs.FS, path string, meta raftpb.SnapshotMeta) (*Writer, error) {
	names, err := fs.List(path)
	if err != nil {
		if isNotExist(err) {
			return nil, fmt.Errorf("%w: %s", ErrDirNotExist, path)
		}
		return nil, fmt.Errorf("snapshot: list %s: %w", path, err)
	}
	var seq uint64
	for _, n := range names {
		if n == publishedName(meta.Index) {
			return nil, fmt.Errorf("%w: %s already holds an export of snapshot %d", ErrInvalid, path, meta.Index)
		}
		if _, s, _, ok := parseDirName(n); ok {
			seq = max(seq, s)
		}
	}
	return newWriter(nil, fs, path, tempName(meta.Index, seq+1, kindGenerating), meta)
}

// publishExport publishes a Writer whose directory is under an export path
// rather than a store: rename to snapshot-<index>, sync the export path.
func (w *Writer) publishExport() error {
	name := publishedName(w.meta.Index)
	dst := w.fs.PathJoin(w.parent, name)
	if _, err := w.fs.Stat(dst); err == nil {
		return fmt.Errorf("%w: %s already exists", ErrInvalid, dst)
	}
	if err := w.fs.Rename(w.Dir(), dst); err != nil {
		return fmt.Errorf("snapshot: publish export %s: %w", dst, err)
	}
	w.done = true
	if err := syncDir(w.fs, w.parent); err != nil {
		return fmt.Errorf("snapshot: export: %w", err)
	}
	return nil
}

// ExportDir returns the directory an export of snapshot index has under
// path.
func ExportDir(fs vfs.FS, path string, index uint64) string {
	return fs.PathJoin(path, publishedName(index))
}

// Export copies the published snapshot at index (0: the latest) to path,
// which must exist, as a self-contained snapshot, and returns its
// directory. The copy is verified against the meta as it is written. The
// store is only read (a Reader is held meanwhile).
func (s *Store) Export(index uint64, path string) (string, error) {
	r, err := s.OpenReader(index)
	if err != nil {
		return "", err
	}
	defer r.Close()
	m := r.Meta()
	w, err := createExport(s.fs, path, m)
	if err != nil {
		return "", err
	}
	defer w.Abort()
	if err := copyFiles(r, w); err != nil {
		return "", err
	}
	if got := w.Meta().Files; !slices.Equal(got, m.Files) {
		return "", fmt.Errorf("%w: export of snapshot %d read %+v, meta says %+v", ErrChecksum, m.Index, got, m.Files)
	}
	if err := w.Commit(); err != nil {
		return "", err
	}
	return ExportDir(s.fs, path, m.Index), nil
}

// copyFiles streams every file of r into w, in meta order.
func copyFiles(r *Reader, w *Writer) error {
	buf := make([]byte, writeBufferSize)
	for _, f := range r.Files() {
		src, err := r.OpenFile(f.Name)
		if err != nil {
			return err
		}
		dst, err := w.CreateFile(f.Name)
		if err != nil {
			src.Close()
			return err
		}
		_, err = io.CopyBuffer(struct{ io.Writer }{dst}, struct{ io.Reader }{src}, buf)
		src.Close()
		if err != nil {
			return fmt.Errorf("snapshot: copy %s: %w", f.Name, err)
		}
		if err := dst.Close(); err != nil {
			return err
		}
	}
	return nil
}

// VerifyExport checks an exported (or any published) snapshot directory
// offline: the meta decodes and every file has its size and CRC32C
// (REQUIREMENTS §16 "ValidateSnapshot"). A truncated or altered export
// fails with ErrChecksum or ErrCorruptMeta; a newer format with
// ErrUnknownFormat.
func VerifyExport(fs vfs.FS, dir string) (raftpb.SnapshotMeta, error) {
	f, err := fs.Open(fs.PathJoin(dir, metaFile))
	if err != nil {
		if isNotExist(err) {
			return raftpb.SnapshotMeta{}, fmt.Errorf("%w: %s has no meta", ErrCorruptMeta, dir)
		}
		return raftpb.SnapshotMeta{}, err
	}
	b, err := io.ReadAll(io.LimitReader(f, maxMetaSize+1))
	f.Close()
	if err != nil {
		return raftpb.SnapshotMeta{}, fmt.Errorf("%w: read: %v", ErrCorruptMeta, err)
	}
	m, err := DecodeMeta(b)
	if err != nil {
		return m, err
	}
	if name := fs.PathBase(dir); name != publishedName(m.Index) {
		return m, fmt.Errorf("%w: %s holds the meta of snapshot %d", ErrCorruptMeta, dir, m.Index)
	}
	if err := verifyFiles(fs, dir, &m); err != nil {
		return m, err
	}
	return m, nil
}
