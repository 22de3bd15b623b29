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
// # Throttle
//
// One Throttle per host (throttle.go) holds the limits every group shares
// (REQUIREMENTS §9, §10), all changeable at runtime with SetLimits:
// concurrency slots for sends, receives and generations, taken without
// blocking (ErrNoSlot); and a token bucket per direction, send and
// receive, waited on per chunk (Sender.GetFile, the copier's fetches).
// Each transfer has a Priority: PriorityCatchUp (the zero value: a voter
// that fell behind, the group's liveness may depend on it) or
// PriorityBackground (a new learner, rebalancing). While a catch-up
// transfer is active in a direction, background bytes of that direction
// also wait on a second bucket at Limits.BackgroundShare of the rate
// (default 0.25), so catch-up keeps at least the rest; with none active,
// background may use the whole rate. Every byte waits on the direction's
// bucket, so the sum never exceeds it. A catch-up transfer is active on
// the sender from Sender.RegisterPriority to the reader's release
// (Release, idle timeout, Close), on the receiver for the whole Receive of
// an InstallRequest with that Priority. Unlimited, a wait is a check of
// the limit: no sleep, no allocation.
// A third bucket, Limits.GenerateBytesPerSec, limits what snapshot saves
// write: a Store opened with Options.Throttle makes its Writers wait on it
// per 1 MiB buffer, bounded by the context given to Writer.SetContext
// (the executor passes the save's).
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
