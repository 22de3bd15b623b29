// Package testcluster runs several skiff hosts in one test process — on
// the in-memory network of transport/memnet and on crashable in-memory
// file systems — and lets a test partition, crash, restart and wipe them.
// Its _test.go files are the scenario tests of the whole host: the
// incidents of REQUIREMENTS.md §2 and the snapshot, membership and
// session behaviours the public API promises.
//
// A Cluster is meant to run inside testing/synctest: ticks, timeouts and
// snapshot rate limits then run on fake time, so a scenario that spans
// minutes of cluster time takes seconds, and no test sleeps. synctest.Test
// also fails a test whose goroutines outlive it: Cluster.Close, run at
// t.Cleanup, closes every host and the network, and is that leak check.
//
// Every message takes 0.1–1 ms of fake time on the network (more with
// SetDelay): a livelock, two hosts answering each other forever, then
// uses up fake time and fails a wait, where with instant delivery it
// would keep the bubble busy and the test would hang.
//
// Crash is a power cut: the host's file system becomes a crash clone
// (vfs.MemFS.CrashClone) that keeps every synced byte and a seeded share
// of the unsynced ones. The default state machine is KV, a deterministic
// in-memory map with stream snapshots; OnDiskKV is the same map as a
// statemachine.OnDisk that keeps its data in the host's file system.
//
// It is a harness (imports_test.go): it may import "testing", and only
// tests and other harnesses may import it. From the module it imports only
// the root package skiff, statemachine and transport/memnet (transport is
// allowed too) — never internal/engine or the stages: the scenarios test
// the public API.
package testcluster
