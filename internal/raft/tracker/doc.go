// Package tracker holds the leader's view of every replica: its Progress
// (match, next, probe/replicate/snapshot state, in-flight messages) and the
// group's voting configuration.
//
// It sits between the raft core and quorum: raft updates Progress as
// responses arrive and asks the Tracker for the committed index and election
// results, which quorum computes.
//
// Invariants:
//   - Match < Next for every Progress.
//   - In StateSnapshot, PendingSnapshot > 0 and no entries are sent.
//   - Inflights never holds more than its count or byte limit.
//   - IDs() is sorted, so iteration (and thus message order) is deterministic.
//
// Imports: raftpb, internal/raft/quorum.
package tracker
