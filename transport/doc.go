// Package transport is the network seam between hosts: Raft messages on
// one lane, batched per peer, length-prefixed and CRC-checked, through
// bounded queues that drop rather than block; snapshot file traffic on
// separate connections (the snapshot lane), which the snapshot subsystem's
// pull protocol (GetFile) runs over.
//
// Stage ⑤ of the pipeline (DESIGN.md §5). TCP is the production
// implementation (with mutual TLS via crypto/tls when configured);
// transport/memnet implements the same interface in memory with seeded
// faults for tests.
//
// Every batch carries the deployment ID; batches from another deployment are
// rejected and counted. Whether the sender is a member of the group is for
// the engine to decide, which knows membership.
//
// Imports: raftpb only. Never raft, logdb, snapshot or engine.
package transport
