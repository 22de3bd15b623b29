// Package memnet is an in-memory transport.Transport for tests: a Network
// of Endpoints, one per host address, with faults a test sets at any time
// (partitions, isolation, drop and duplicate rates, delays, reordering),
// all drawn from one seeded generator.
//
// It runs inside testing/synctest bubbles, which is how the engine and
// cluster tests drive whole clusters on a fake clock: it uses only
// goroutines, channels, mutexes and time's timers, never sockets. Create
// the Network inside the bubble that uses it, so that its goroutines,
// channels and timers belong to that bubble, and Close it before the
// bubble's function returns (synctest.Test then fails on any goroutine
// left behind, which makes every bubble a leak check).
//
// Raft lane: Send encodes the batch with raftpb and each delivery decodes
// it, so handlers get a deep copy and every test exercises the codec. Each
// (sender, receiver) pair has a link: one goroutine that delivers batches
// at their delivery time, in send order unless reordering is on. A batch
// to an address that is absent, closed, not started or cut off is refused
// and reported through HandleUnreachable, from the endpoint's own
// goroutine; a partition also loses the batches in flight across it.
//
// Snapshot lane: DialSnapshot returns one end of an in-memory connection
// (buffered both ways, with deadlines that follow the fake clock) whose
// other end the destination's SnapshotListener accepts. A partition closes
// the connections that cross it.
//
// memnet is a harness: production code must not import it.
//
// Imports: raftpb and transport only. Never raft, logdb, snapshot or
// engine; and no production package imports memnet (imports_test.go).
package memnet
