package raftpb

import "errors"

// Errors of the log read contract (raft-rs Storage, seed 002), shared by the
// raft core, which reads the log through it, and logdb, which implements
// it. Both packages re-export these same values, so errors.Is matches
// across the seam without an adapter.
var (
	// ErrCompacted: the requested index is below the log's first index
	// (compacted behind a snapshot).
	ErrCompacted = errors.New("log: requested index is compacted")
	// ErrUnavailable: the requested index is above the log's last index.
	ErrUnavailable = errors.New("log: requested entry is unavailable")
	// ErrSnapshotTemporarilyUnavailable: a snapshot is being generated;
	// ask again later (TiKV's GenSnapTask pattern).
	ErrSnapshotTemporarilyUnavailable = errors.New("log: snapshot is temporarily unavailable")
)
