// Package statemachine is what users of skiff implement: the replicated state
// machine of one group, its point-in-time snapshots, and the optional
// capabilities found by type assertion (OnDisk).
//
// It is layer 0 of DESIGN.md §1: it imports nothing from the module, so that
// a state machine can be written and tested without the library. The apply
// stage (internal/rsm) drives these interfaces; the host never calls them
// from two goroutines at once except where a method's comment says so.
//
// # Goroutines
//
// One group's state machine is driven by one apply goroutine at a time:
// Open, Apply, Lookup (for linearizable and stale reads), Snapshot, Restore
// and Close are never called concurrently with each other, except that
// Lookup may run concurrently with Apply when the state machine implements
// ConcurrentLookup. Snapshot.Save runs on a snapshot goroutine concurrently
// with Apply and Lookup; that is why Snapshot must be a cheap, immutable
// capture. Sync (OnDisk) runs on the apply goroutine.
//
// # Errors
//
// An error from Apply, Snapshot or Restore is fatal for the replica: the
// state machine's state is unknown, so the host stops the group and reports
// the error (it does not retry, and it never skips an entry). An error from
// Lookup is returned to the reader. An error from Snapshot.Save fails that
// snapshot only; the previous snapshot and the log are left intact and a
// later snapshot is tried again.
package statemachine
