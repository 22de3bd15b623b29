package main

import (
	"fmt"
	"path/filepath"
)

// The host directory's layout, as internal/engine makes it under
// HostConfig.Dir (which is skiffkv's --data): every path skiffctl derives
// from --data is made here and nowhere else, so a change of the layout or
// of how skiffkv maps --data to HostConfig.Dir is a change of this file.
//
//	<data>/logdb/                     the log of every group (internal/logdb)
//	<data>/logdb/LOCK                 held while a host has the log open
//	<data>/snapshots/<%020d group>/   that group's snapshot store

// logDir is the log of every group of the host at data.
func logDir(data string) string { return filepath.Join(data, "logdb") }

// snapshotsDir holds one snapshot store per group.
func snapshotsDir(data string) string { return filepath.Join(data, "snapshots") }

// groupSnapshotDir is group g's snapshot store.
func groupSnapshotDir(data string, g uint64) string {
	return filepath.Join(snapshotsDir(data), fmt.Sprintf("%020d", g))
}

// publishedName is the name of a published (or exported) snapshot
// directory: internal/snapshot's "snapshot-<20-digit index>".
func publishedName(index uint64) string { return fmt.Sprintf("snapshot-%020d", index) }
