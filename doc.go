// Package skiff is a multi-group Raft library: one process, a host, runs
// many Raft groups, and each group has one replica on each of several hosts.
// Besides the protocol, skiff owns what users of a bare Raft core otherwise
// build themselves: log storage, transport, the apply loop, snapshots and
// membership changes.
//
// # The pipeline
//
// A proposal travels through one package per stage:
//
//	Propose ─► raft ─► logdb ─► transport ─► raft (commit) ─► rsm (apply)
//	        ─► snapshot (save) ─► logdb (compact)
//	        ─► transport snapshot lane ─► snapshot (receive) ─► rsm (load) ─► raft (log reset)
//
// Host.Propose hands the command to the group's Raft core, internal/raft,
// a pure state machine with no I/O, clock or goroutines: it appends the
// entry and returns, in a Ready, the entries and HardState to persist and
// the replication messages to send. internal/logdb persists the Ready states
// of many groups with one write and one fsync (group commit), in the
// segmented WAL of internal/logdb/wal. The transport package carries the
// messages, batched per remote host as raftpb.MessageBatch, to the other
// replicas, whose cores answer; once a quorum holds an entry of the current
// term, the leader's core marks it committed. internal/rsm applies committed
// entries to the user's statemachine.StateMachine, completes the waiting
// proposal with the state machine's Result, and keeps client sessions
// exactly-once and membership in step with the log.
//
// Every so many entries (or on request) internal/snapshot captures the state
// machine on the apply path and saves it off it, publishing the snapshot
// atomically (temporary directory, fsync, rename, fsync of the parent), and
// logdb then compacts the log up to the snapshot index less a safety margin.
// A replica that falls behind the compacted log receives that snapshot
// over the transport's separate snapshot lane (throttled chunks that can
// resume), internal/snapshot verifies and publishes it, internal/rsm loads
// it into the state machine, and the replica's raft core resets its log to
// the snapshot.
//
// internal/engine owns the goroutines: step, apply and snapshot workers
// that move this work between the stages for all groups of a host. Package
// skiff itself is the façade over the engine (Host and its methods); the
// wire and disk types every stage shares live in raftpb.
//
// # Layers
//
// Imports go down the layers only (enforced by imports_test.go):
// raftpb and statemachine import nothing from skiff; the stages (raft,
// logdb, snapshot, transport, rsm) import only layer 0; the engine imports
// the stages; this package imports the engine, transport and layer 0; the
// examples and commands use only this package, statemachine and transport.
package skiff
