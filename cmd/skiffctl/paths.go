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

// skiffkv's own entries in --data (cmd/skiffkv/serve.go): its identity
// file, written at the first start and checked at every later one, and
// the directory of its state machine (examples/kv, Pebble), which keeps
// its data durable itself (statemachine.OnDisk).
const (
	skiffkvIdentityFile = "skiffkv.json"
	skiffkvStateDir     = "kv"
)

// skiffkvIdentity is the content of skiffkvIdentityFile.
type skiffkvIdentity struct {
	DeploymentID uint64 `json:"deployment_id"`
	ReplicaID    uint64 `json:"replica_id"`
}
