// Package logdb stores the Raft log, HardState and snapshot pointer of
// every group on a host.
//
// Stage ② of the pipeline: raft hands it a batch of updates for many groups
// (SaveBatch); it writes all of them to the WAL as one record and fsyncs
// once — callers that arrive while an fsync is in flight join the next
// batch (group commit), and the next leader briefly waits for the callers
// of the batch just synced to come back (see gatherLocked) — and only then
// may raft send messages that depend on them. Compact(g, i) drops entries
// ≤ i after a snapshot at i.
//
// # Commit pipeline
//
// A large SaveBatch is validated and given its exact encoded size in the
// filling batch under the commit lock, then encoded (data copied, chunk
// CRCs computed) without it, in parallel with other callers and with the
// write in flight (saveRegion; a very large one in two halves at once).
// A batch goes through two stages: write + fsync, holding the writer role,
// then apply (indexes, entry cache), while the next batch is written. So
// at most one record is ever unsynced (the WAL's recovery rule), applies
// run in write order, and a batch's callers are acknowledged only after
// its fsync and its apply: what readers see is durable, and a caller reads
// its own writes when SaveBatch returns.
//
// # Reading
//
// DB.Group(g) returns a *GroupLog with the read contract of raft-rs
// Storage (seed 002): InitialState, Entries(lo, hi, maxSize) over the
// half-open range [lo, hi) returning at least one entry, Term(i) on
// [FirstIndex-1, LastIndex], FirstIndex, LastIndex, with ErrCompacted and
// ErrUnavailable. Recent entries come from a per-group entry cache bounded
// in bytes across all groups (oldest appended evicted first); older ones
// are read from the WAL by an in-memory index (group, index) → chunk
// position, verified by the chunk's CRC32C.
//
// # Records
//
// Each update, compaction, reset or removal is one chunk of a WAL record
// (see package wal for the framing):
//
//	chunk  = group(uvarint) op(1) body
//	update = flags(1) [hardstate] [snapshot] [entries]    flags: 1 hs, 2 snapshot, 4 entries
//	compact= index term
//	reset  = keep(1) hardstate snapshot
//	remove = (empty)
//	state  = hardstate snapshot first compactTerm last   (a group's whole metadata)
//	hardstate = term vote commit;  snapshot = len bytes (raftpb.SnapshotMeta.Marshal)
//	entries   = first count { term type len data }…
//
// The same function applies a chunk after its fsync and during recovery,
// so what is in memory is exactly what a restart rebuilds.
//
// # Segments and compaction
//
// A segment is needed while it holds a live entry, or the latest HardState
// or state of a group, or the chunk that last set a group's last index
// (replaying it drops a truncated suffix still on disk in an older segment;
// it matters once compaction has emptied the log), or the tombstone of a
// removed group whose older records are still on disk. When only metadata
// pins a segment, the commit leader rewrites that metadata (one "state"
// chunk per group) at the tail and the segment is deleted (or recycled).
// Live entries are never moved: a
// group whose old entries pin segments makes LogBytes grow, and past
// MaxLogBytes OverLimit reports it so the host forces a snapshot and
// compacts. Recovery reads only the live segments listed in the WAL
// manifest; entries whose segments were deleted must lie below the
// group's first index by then, and Open checks it.
//
// Invariant: for each group, entries are contiguous in [FirstIndex, LastIndex].
//
// Errors: a failed fsync is final — every later write returns
// ErrStorageFailed (reads keep working); a failed write (ENOSPC, EIO)
// fails that batch only and leaves the DB consistent.
//
// Imports: raftpb, logdb/wal (and pebble/vfs for files). Never snapshot,
// transport or raft.
package logdb
