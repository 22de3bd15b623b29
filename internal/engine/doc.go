// Package engine is a host's machinery: it owns the goroutines that move
// the work of every group between the stages of the pipeline — the Raft
// cores (internal/raft), the shared log (internal/logdb), the transport, the
// apply stage (internal/rsm) and the snapshot subsystem (internal/snapshot).
// Package skiff is a thin façade over it.
//
// # Workers
//
// Step workers each own a shard of groups (by group ID). A pass drains the
// mailboxes of the groups with work into their cores (and ticks all of them
// when the ticker fired), collects their Readys, sends the messages that may
// go before persisting, writes every group's entries and HardState with ONE
// logdb.SaveBatch — one fsync for the whole pass — then sends the messages
// that promise durable state, hands committed entries to the apply workers
// and calls Advance. Committed entries this host already holds durably
// (below the first entry the pass persists) go to the apply workers before
// the SaveBatch rather than after it: on a loaded leader they are the
// previous pass's quorum, and waiting for the next fsync cost every
// proposal one more. The SaveBatch itself runs on the worker's saver
// goroutine while the worker steps the messages that arrive into the
// cores (the core allows Step between Ready and Advance):
// acknowledgements are counted during the fsync, and the durable
// entries they commit go to the apply workers at once (TakeCommitted);
// whatever else they produce waits for the next pass. Heartbeats and
// appends to one remote host from all groups of a pass travel in one
// transport batch.
//
// Apply workers each own a shard of groups too: they apply committed
// entries in batches, complete proposals (matched by a host-unique key
// encoded in the entry), serve reads once the read index is applied, and
// run snapshot captures and restores, so a state machine is only ever
// touched by one goroutine at a time (statemachine package doc).
//
// Snapshot work runs on goroutines of its own, bounded by the node-wide
// snapshot.Throttle slots: periodic saves (the snapshot.Trigger policy),
// saves requested by a leader's core for a follower
// (ErrSnapshotTemporarilyUnavailable until ready), full data snapshots of
// on-disk state machines generated on demand into a separate send store,
// and installs (snapshot.Executor.Install: fetch over the transport's
// snapshot lane, restore on the apply worker, then the core resets its log
// through the step worker).
//
// # Invariants
//
//   - A group's core, its logdb writes and its snapshot-offer registry are
//     touched only by its step worker; its state machine only by its apply
//     worker. Other goroutines hand them work through queues (node.do,
//     applyWorker.submit) and may wait for it; the workers never wait for
//     anyone, so no cycle can deadlock.
//   - Messages that promise durable state (votes, append acks) leave only
//     after the SaveBatch that made it durable returned.
//   - An entry is applied only once it is committed and durable on this
//     host (an on-disk state machine never gets ahead of the local log),
//     and a leader counts its own copy towards a quorum only after its
//     SaveBatch returned (the core's Advance).
//   - A new group's initial membership is written into its log as committed
//     config-change entries 1..n at term 1, identical on every initial
//     replica, so a replica that joins later derives the same membership
//     from the log.
//   - A state machine restored from a snapshot at index i only ever applies
//     entries after i; an on-disk state machine that is current is never
//     restored at start (rsm decides from the snapshot header).
//   - Log compaction never passes what a snapshot being sent, or a live
//     follower replicating normally, still needs (CompactionLimit), unless
//     the group's log is over its byte cap.
//
// Imports: raftpb, statemachine, the stages (internal/raft and its
// sub-packages, internal/logdb, internal/snapshot, internal/rsm) and
// transport. Never the public package, examples or commands.
package engine
