package snapshot

import (
	"fmt"
)

// publishExport publishes a Writer whose directory is under an export path
// rather than a store: rename to snapshot-<index>, sync the export path. An
// export never touches the group's store, log or snapshot index.
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
