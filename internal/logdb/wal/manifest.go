package wal

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	iofs "io/fs"
	"slices"

	"github.com/cockroachdb/pebble/v2/vfs"
)

const (
	manifestName    = "MANIFEST"
	manifestTmpName = "MANIFEST.tmp"
	manifestMagic   = "skiffman"
	manifestVersion = 1
)

// ErrBadManifest: the manifest cannot be read. It is written by rename, so
// this is corruption of a synced file, not a torn write.
var ErrBadManifest = errors.New("wal: bad manifest")

func encodeManifest(segs []uint64) []byte {
	b := make([]byte, 0, 16+8*len(segs)+4)
	b = append(b, manifestMagic...)
	b = binary.LittleEndian.AppendUint32(b, manifestVersion)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(segs)))
	for _, s := range segs {
		b = binary.LittleEndian.AppendUint64(b, s)
	}
	return binary.LittleEndian.AppendUint32(b, crc32.Checksum(b, castagnoli))
}

func decodeManifest(b []byte) ([]uint64, error) {
	if len(b) < 20 || string(b[:8]) != manifestMagic {
		return nil, fmt.Errorf("%w: bad header", ErrBadManifest)
	}
	if v := binary.LittleEndian.Uint32(b[8:]); v != manifestVersion {
		return nil, fmt.Errorf("%w: unknown version %d", ErrBadManifest, v)
	}
	n := uint64(binary.LittleEndian.Uint32(b[12:]))
	if uint64(len(b)) != 16+8*n+4 {
		return nil, fmt.Errorf("%w: %d segments in %d bytes", ErrBadManifest, n, len(b))
	}
	body := b[:len(b)-4]
	if crc32.Checksum(body, castagnoli) != binary.LittleEndian.Uint32(b[len(b)-4:]) {
		return nil, fmt.Errorf("%w: checksum mismatch", ErrBadManifest)
	}
	segs := make([]uint64, n)
	for i := range segs {
		segs[i] = binary.LittleEndian.Uint64(body[16+8*i:])
	}
	if !slices.IsSorted(segs) || slices.Contains(segs, 0) {
		return nil, fmt.Errorf("%w: segments not in order", ErrBadManifest)
	}
	return segs, nil
}

// readManifest returns the listed segments, or exists=false.
func readManifest(fs vfs.FS, dir string) (segs []uint64, exists bool, err error) {
	f, err := fs.Open(fs.PathJoin(dir, manifestName))
	if err != nil {
		if errors.Is(err, iofs.ErrNotExist) {
			return nil, false, nil
		}
		return nil, false, fmt.Errorf("open manifest: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(f)
	if err != nil {
		return nil, true, fmt.Errorf("read manifest: %w", err)
	}
	segs, err = decodeManifest(b)
	return segs, true, err
}

// writeManifest replaces the manifest durably: write a temp file, fsync it,
// rename it over the manifest, fsync the directory. A sync error is
// reported as errSync (final for the WAL); others leave the old manifest.
func writeManifest(fs vfs.FS, dir string, segs []uint64) error {
	tmp := fs.PathJoin(dir, manifestTmpName)
	f, err := fs.Create(tmp, vfs.WriteCategoryUnspecified)
	if err != nil {
		return fmt.Errorf("create manifest: %w", err)
	}
	if _, err := f.Write(encodeManifest(segs)); err != nil {
		f.Close()
		return fmt.Errorf("write manifest: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return &syncError{fmt.Errorf("sync manifest: %w", err)}
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("close manifest: %w", err)
	}
	if err := fs.Rename(tmp, fs.PathJoin(dir, manifestName)); err != nil {
		return fmt.Errorf("rename manifest: %w", err)
	}
	return syncDir(fs, dir)
}

func syncDir(fs vfs.FS, dir string) error {
	d, err := fs.OpenDir(dir)
	if err != nil {
		return fmt.Errorf("open dir: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return &syncError{fmt.Errorf("sync dir: %w", err)}
	}
	return nil
}

// syncError marks an fsync failure: after one, what is on disk is unknown
// and the WAL stops accepting writes.
type syncError struct{ err error }

func (e *syncError) Error() string { return e.err.Error() }
func (e *syncError) Unwrap() error { return e.err }
