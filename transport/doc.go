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
// # Wire format (TCP)
//
// One listening port serves both lanes. Every connection, after the TLS
// handshake when TLS is configured, starts with a 16-byte preamble from the
// dialer; the acceptor never writes on the Raft lane:
//
//	+------------+---------+------+--------------+--------------------+
//	| "SKFT" (4) | version | lane | reserved (2) | deployment ID u64  |
//	+------------+---------+------+--------------+--------------------+
//	version = 1; lane = 1 (Raft) or 2 (snapshot); reserved = 0;
//	integers little-endian.
//
// A bad magic, version, lane or reserved field closes the connection
// (Stats.RejectedConns); another deployment ID closes it too
// (Stats.RejectedDeployment, and a log line). A snapshot-lane connection is
// then handed to SnapshotListener as is: it carries the snapshot package's
// own protocol. A Raft-lane connection carries frames until it closes:
//
//	+------------+------------------+-----------------------------------+
//	| length u32 | crc32c u32       | payload (length bytes)            |
//	+------------+------------------+-----------------------------------+
//	payload = raftpb.MessageBatch encoding (version byte, deployment ID,
//	          source address, count, messages); crc32c (Castagnoli) covers
//	          the payload; 0 < length <= MaxFrameBytes.
//
// A frame with a bad length, a bad CRC, a payload that does not decode or
// that ends early is corrupt: nothing of it is delivered, the connection is
// closed and Stats.CorruptFrames counted; the sender redials. Each batch's
// deployment ID is checked again.
//
// A host's batches are delivered in order and never concurrently, even
// across its reconnects: the newest connection (in accept order) from a
// source address owns it, and an older connection still holding frames is
// closed at its next frame, which is dropped.
//
// # Sending
//
// Send encodes the messages at once onto the peer's bounded queue (so it
// retains nothing of the caller's) and returns without blocking. One sender
// goroutine per remote host dials, takes everything queued, writes it as
// frames of about 1 MiB through a bufio.Writer and flushes when the queue
// is empty: one write for everything that queued meanwhile. (A message
// alone may fill a frame up to MaxFrameBytes; a larger one is dropped at
// Send.) A full queue drops and is reported once until it drains. A failed
// dial or connection drops the queue and is reported once; Send then drops
// during a jittered exponential backoff (10 ms doubling to 1 s) before the
// next dial. Reports go through Handler.HandleUnreachable, always from a
// transport goroutine, never from Send.
//
// # TLS
//
// TCPConfig.TLS secures both lanes with one config used as server and as
// client. Mutual TLS is the caller's choice in that config (ClientAuth:
// tls.RequireAndVerifyClientCert, ClientCAs, RootCAs, Certificates); a
// failed handshake counts in Stats.RejectedConns on the accepting side and
// as a failed dial (HandleUnreachable) on the dialing side.
//
// Imports: raftpb only. Never raft, logdb, snapshot or engine.
package transport
