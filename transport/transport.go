package transport

import (
	"context"
	"errors"
	"net"

	"github.com/skiffdb/skiff/raftpb"
)

// Errors.
var (
	// ErrClosed: the transport is closed.
	ErrClosed = errors.New("transport: closed")
	// ErrDeploymentMismatch: a peer belongs to another deployment (cluster);
	// its frames are rejected and counted.
	ErrDeploymentMismatch = errors.New("transport: deployment ID mismatch")
	// ErrCorruptFrame: a frame failed its CRC or length checks; the
	// connection is closed.
	ErrCorruptFrame = errors.New("transport: corrupt frame")
)

// Handler receives what arrives from other hosts.
type Handler interface {
	// HandleBatch is called for every accepted batch (deployment ID
	// checked), from the transport's receive goroutines, possibly
	// concurrently for batches from different hosts; batches from one host
	// arrive in order. It must not block for long: it should queue the
	// messages for the step workers. The batch is owned by the handler.
	HandleBatch(b *raftpb.MessageBatch)
	// HandleUnreachable reports that messages queued for addr could not be
	// delivered (connection failed, queue full). The engine tells Raft
	// (MsgUnreachable) so that the leader slows down probing.
	HandleUnreachable(addr string)
}

// Transport moves Raft messages between hosts on one lane, and gives the
// snapshot subsystem separate connections on a second lane, so that a large
// transfer never delays a heartbeat (DESIGN.md §5).
//
// Send never blocks: messages go to a bounded per-peer queue and are dropped
// when it is full (Raft retransmits). Messages to one peer are delivered in
// the order they were sent, or not at all.
type Transport interface {
	// Start starts accepting connections and delivering batches to h. It is
	// called once, before Send.
	Start(h Handler) error
	// Addr returns the address other hosts reach this one at.
	Addr() string
	// Send queues msgs for the host at addr. It reports false when some
	// were dropped (queue full, transport closed). msgs is not retained
	// after Send returns (they are encoded or copied).
	Send(addr string, msgs []raftpb.Message) bool
	// SnapshotListener returns the listener of the snapshot lane: the
	// connections other hosts opened with DialSnapshot.
	SnapshotListener() net.Listener
	// DialSnapshot opens a snapshot-lane connection to the host at addr.
	DialSnapshot(ctx context.Context, addr string) (net.Conn, error)
	// Stats returns counters for metrics.
	Stats() Stats
	// Close stops the transport: connections are closed, queued messages
	// dropped, Handler no longer called once Close returns.
	Close() error
}

// Stats are a transport's counters since it started.
type Stats struct {
	BatchesSent, BatchesReceived   uint64
	MessagesSent, MessagesReceived uint64
	// MessagesDropped: queue full or connection down.
	MessagesDropped uint64
	// RejectedDeployment: batches from another deployment.
	RejectedDeployment uint64
	// CorruptFrames: frames that failed the CRC or length checks.
	CorruptFrames uint64
	// Connects: successful outgoing connections (reconnects included).
	Connects uint64
	// SnapshotConns: snapshot-lane connections accepted.
	SnapshotConns uint64
	// RejectedConns: accepted connections closed before carrying traffic
	// (failed TLS handshake, bad magic, version or lane in the preamble).
	RejectedConns uint64
}
