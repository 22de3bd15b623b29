// Package snapshot holds all of a host's snapshot disk and transfer code:
// the store (save, publish, open, verify, reference counting, GC), the meta
// record, the executor (the guard rules of SOFAJRaft's SnapshotExecutor and
// braft's), the copier/receiver (chunked, resumable, throttled transfer),
// and export/import for disaster recovery.
//
// Stage ⑥ of the pipeline: the apply stage captures a state machine at an
// index; the executor saves it through a Writer, publishes it and lets the
// log compact; a leader's sender serves a published snapshot to a follower's
// copier, which receives it into a ReceiveTx, publishes it, and the executor
// loads it into the state machine and resets the log.
//
// # On disk
//
// One directory per group:
//
//	<group dir>/
//	  snapshot-00000000000000000090/          published (immutable)
//	    meta                                  the meta record (below)
//	    data                                  the state machine's stream
//	    000123.sst ...                        more files (on-disk state machines)
//	  snapshot-00000000000000000100-7.generating/   being saved
//	  snapshot-00000000000000000120-8.receiving/    being received (holds meta)
//	  snapshot-00000000000000000080-9.deleting/     being removed by GC
//	  snapshot-00000000000000000110-6.corrupt/      failed verification at Open
//
// The meta record:
//
//	+-------------------+--------------+-------------+---------+----------+
//	| "skfsnap\x00" (8) | version u32  | length u32  | payload | crc32c   |
//	+-------------------+--------------+-------------+---------+----------+
//	payload = raftpb.SnapshotMeta (format version, group, index, term,
//	          membership with config-change index, state machine type and
//	          version, on-disk flag, compression, and every file's name,
//	          size and CRC32C); crc32c covers every byte before it.
//
// # Commit point
//
// Saving and receiving both write into a temp directory and publish by
// rename, in this order (pinned by testdata/save.txt):
//
//	write files → fsync each → write meta → fsync → fsync dir
//	→ rename to snapshot-<index> → fsync parent
//
// Only after that does the executor advance lastSnapshotIndex and compact
// the log. GC renames a snapshot to .deleting, fsyncs the parent, then
// removes it, so a crash never leaves a published name over a half-removed
// directory. A crash at any point leaves the old or the new snapshot, never
// a torn one (store_crash_test.go iterates every file operation).
//
// # Executor
//
// One Executor per group applies the seeds' rules (executor.go,
// executor_install.go): DoSnapshot refuses while an install is registered
// or another save runs (ErrBusy), succeeds without a snapshot when nothing
// or less than SnapshotMinGap was applied, and after a save discards it if
// an install overtook it (ErrStale), else publishes, advances the last
// snapshot and compacts the log to index − CompactionOverhead, never past a
// snapshot still being sent. Install registers requests exactly like
// SOFAJRaft's registerDownloadingSnapshot and answers with the installed
// index. Trigger (executor_trigger.go) says when to call DoSnapshot.
// Export writes a self-contained snapshot elsewhere; Import turns one into
// a replica's snapshot with a new membership, verifying it first.
//
// Invariants:
//   - a published directory is complete and never changes;
//   - the newest published snapshot is never removed; a referenced one
//     (Reader) is never removed;
//   - at most one .receiving directory per group;
//   - one Store per directory, in one process (nothing locks it).
//
// Imports: raftpb (and pebble/vfs for files, x/time/rate, klauspost/compress).
// Never logdb, raft, rsm or transport: those reach this package through the
// small interfaces in executor.go and transfer.go.
package snapshot
