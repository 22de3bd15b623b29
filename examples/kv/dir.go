package kv

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// A replica's directory (Options.GroupDir) holds:
//
//	CURRENT          the name of the live database directory, e.g. "db-000003\n"
//	CURRENT.tmp      a CURRENT being written (tmp → fsync → rename → fsync dir)
//	db-<seq>/        Pebble databases; only the one CURRENT names is live
//	checkpoint-<n>/  captures of Snapshot, removed by Release
//
// CURRENT is the only pointer: a database directory is complete and
// durable before CURRENT names it, and CURRENT changes by an atomic
// rename, so a crash at any point leaves CURRENT naming a whole database
// (the old one or the new one). Open removes every other entry: database
// directories from a Restore that was cut short or whose swap finished
// without the removal of the old one, CURRENT.tmp, and captures of a
// previous process.
const (
	currentName       = "CURRENT"
	currentTmpName    = "CURRENT.tmp"
	dbPrefix          = "db-"
	checkpointPrefix  = "checkpoint-"
	maxCurrentFileLen = 64
)

func dbName(seq uint64) string { return fmt.Sprintf("%s%06d", dbPrefix, seq) }

// dbSeq parses a database directory name; ok is false for other names.
func dbSeq(name string) (uint64, bool) {
	s, ok := strings.CutPrefix(name, dbPrefix)
	if !ok {
		return 0, false
	}
	seq, err := strconv.ParseUint(s, 10, 64)
	return seq, err == nil && dbName(seq) == name
}

// readCurrent returns the database directory CURRENT names; found is
// false when there is no CURRENT (a new replica).
func readCurrent(fs vfs.FS, dir string) (name string, found bool, err error) {
	path := fs.PathJoin(dir, currentName)
	f, err := fs.Open(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return "", false, nil
		}
		return "", false, fmt.Errorf("kv: open %s: %w", path, err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxCurrentFileLen+1))
	if err != nil {
		return "", false, fmt.Errorf("kv: read %s: %w", path, err)
	}
	name, ok := strings.CutSuffix(string(b), "\n")
	if _, isDB := dbSeq(name); !ok || !isDB {
		return "", false, fmt.Errorf("%w: %s holds %q, not a database name", ErrCorrupt, path, b)
	}
	return name, true, nil
}

// writeCurrent points CURRENT at the database directory name, atomically
// and durably.
func writeCurrent(fs vfs.FS, dir, name string) error {
	tmp := fs.PathJoin(dir, currentTmpName)
	f, err := fs.Create(tmp, vfs.WriteCategoryUnspecified)
	if err != nil {
		return fmt.Errorf("kv: create %s: %w", tmp, err)
	}
	if _, err := io.WriteString(f, name+"\n"); err != nil {
		f.Close()
		return fmt.Errorf("kv: write %s: %w", tmp, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("kv: sync %s: %w", tmp, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("kv: close %s: %w", tmp, err)
	}
	path := fs.PathJoin(dir, currentName)
	if err := fs.Rename(tmp, path); err != nil {
		return fmt.Errorf("kv: rename %s to %s: %w", tmp, path, err)
	}
	return syncDir(fs, dir)
}

func syncDir(fs vfs.FS, dir string) error {
	d, err := fs.OpenDir(dir)
	if err != nil {
		return fmt.Errorf("kv: open directory %s: %w", dir, err)
	}
	if err := d.Sync(); err != nil {
		d.Close()
		return fmt.Errorf("kv: sync directory %s: %w", dir, err)
	}
	if err := d.Close(); err != nil {
		return fmt.Errorf("kv: close directory %s: %w", dir, err)
	}
	return nil
}

// mkdirAllSync creates dir and its missing parents, and syncs each
// directory that gained an entry, so that the new directories survive a
// crash.
func mkdirAllSync(fs vfs.FS, dir string) error {
	var missing []string
	for d := dir; ; d = fs.PathDir(d) {
		if _, err := fs.Stat(d); err == nil {
			break
		} else if !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("kv: stat %s: %w", d, err)
		}
		missing = append(missing, d)
		if fs.PathDir(d) == d {
			break
		}
	}
	if len(missing) == 0 {
		return nil
	}
	if err := fs.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("kv: create directory %s: %w", dir, err)
	}
	// Sync from the deepest new directory up to the existing ancestor that
	// gained the first new entry.
	for _, d := range missing {
		parent := fs.PathDir(d)
		if parent == d {
			continue
		}
		if err := syncDir(fs, parent); err != nil {
			return err
		}
	}
	return nil
}

// linkOrCopyFile puts a durable copy of src at dst: a hard link when the
// file system allows (zero copy), else a synced copy.
func linkOrCopyFile(fs vfs.FS, src, dst string) error {
	if err := vfs.LinkOrCopy(fs, src, dst); err != nil {
		return fmt.Errorf("kv: link %s to %s: %w", src, dst, err)
	}
	return nil
}

// copyFile copies src to dst and syncs dst.
func copyFile(fs vfs.FS, src, dst string) error {
	if err := vfs.Copy(fs, src, dst); err != nil {
		return fmt.Errorf("kv: copy %s to %s: %w", src, dst, err)
	}
	return nil
}
