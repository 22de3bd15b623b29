package logdb

import (
	"fmt"

	"github.com/skiffdb/skiff/raftpb"
)

// walkLogBytes is what LogBytes computed before it kept a running count:
// the sizes of the distinct segments holding the group's live runs, read
// from the WAL now. Tests compare the running count against it.
func walkLogBytes(db *DB, id raftpb.GroupID) int64 {
	g := db.Group(id).group()
	g.mu.RLock()
	segs := g.segments(nil)
	g.mu.RUnlock()
	var n int64
	for _, s := range segs {
		n += db.wal.SegmentBytes(s)
	}
	return n
}

// checkLogBytes compares LogBytes with the walk for groups 1..groups.
func checkLogBytes(db *DB, groups int) error {
	for id := raftpb.GroupID(1); id <= raftpb.GroupID(groups); id++ {
		if got, want := db.Group(id).LogBytes(), walkLogBytes(db, id); got != want {
			return fmt.Errorf("group %d: LogBytes = %d, walk over its runs = %d", id, got, want)
		}
	}
	return nil
}
