// Package raft is skiff's Raft protocol core: leader election (with
// pre-vote, check-quorum and leader stickiness), log replication with flow
// control, membership changes (single-server and joint consensus,
// non-voters), ReadIndex and lease reads, leadership transfer, and
// snapshot-aware replication.
//
// Stage ① of the pipeline. It is pure and deterministic: no goroutines, no
// clock, no I/O. Time arrives through Tick, input through Step and the
// Propose/ReadIndex/TransferLeader methods, and every effect leaves through
// Ready — entries and HardState to persist, messages to send (those that may
// go before persisting, thesis §10.2.1, and those that must wait),
// committed entries to apply, a snapshot to fetch or install, read states —
// and is acknowledged with Advance. While a Ready is being persisted the
// driver may keep stepping messages and proposals in, and take the
// committed entries that are already durable (TakeCommitted); the rest
// waits for the next Ready. The durable log is read through a LogReader
// that follows raft-rs's Storage contract.
//
// Message dispatch is a table, handlers[role][type], of small handlers.
//
// Invariants (checked by the tests in this package and rafttest):
//   - Election safety: at most one leader per term.
//   - Log matching: equal (index, term) implies equal prefixes.
//   - Leader completeness: a committed entry is in every later leader's log.
//   - State machine safety: no two replicas apply different entries at an
//     index.
//   - applied <= committed <= last index; a leader counts its own entries
//     towards a quorum only after they are durable (Advance), even when
//     acknowledgements are stepped while they are being persisted.
//
// Snapshots: when a replica needs entries below the log's first index the
// leader asks LogReader.Snapshot; ErrSnapshotTemporarilyUnavailable means
// "being generated" and is retried once per heartbeat interval. The replica
// stays in StateSnapshot until it acknowledges the install, reports a
// failure, or shows no progress for SnapshotTimeoutTicks (a receiving
// follower reports progress in its heartbeat responses). Followers fetch the
// data out of band (Ready.Fetch) and then call InstallSnapshot, which applies
// Raft Fig. 13 rules 7 and 8.
//
// Imports: raftpb and the sub-packages quorum, tracker and confchange. Never
// logdb, snapshot, transport or anything with I/O.
package raft
