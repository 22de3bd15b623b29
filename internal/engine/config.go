package engine

import (
	"fmt"
	"log/slog"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/skiffdb/skiff/internal/logdb"
	"github.com/skiffdb/skiff/internal/snapshot"
	"github.com/skiffdb/skiff/raftpb"
	"github.com/skiffdb/skiff/transport"
)

// Config configures an Engine: one host.
type Config struct {
	// Dir holds the host's data: logdb/ and one snapshots directory per
	// group. FS is the file system every byte goes through.
	Dir string
	FS  vfs.FS
	// Transport carries messages between hosts. The engine starts it and
	// closes it.
	Transport transport.Transport
	// TickInterval is one Raft tick (default 100ms): ElectionTicks and
	// HeartbeatTicks are counted in it.
	TickInterval time.Duration
	// StepWorkers and ApplyWorkers shard the groups (default 1 and 2).
	// Step passes are bound by the log's fsync, not by CPU: one worker
	// persists every group of a pass with one fsync, while two workers
	// only take turns at the fsync with half the entries each (16 groups,
	// 256 proposers, 3 hosts on one disk: 47 k/s with one, 25 k/s with
	// two, in back-to-back runs).
	StepWorkers  int
	ApplyWorkers int
	// Snapshot are the node-wide snapshot limits (rates and concurrency).
	Snapshot snapshot.Limits
	// SnapshotChunkTimeout fails a transfer that received nothing for this
	// long (default 30s).
	SnapshotChunkTimeout time.Duration
	// LogDB options (segment size, cache, MaxLogBytes, UnsafeNoSync).
	LogDB logdb.Options
	// Metrics registers the host's Prometheus collectors (nil: not
	// registered).
	Metrics prometheus.Registerer
	// Listener is told of events; nil ignores them.
	Listener Listener
	Logger   *slog.Logger
}

func (c *Config) fill() error {
	if c.Dir == "" {
		return fmt.Errorf("%w: Dir is required", ErrInvalidConfig)
	}
	if c.Transport == nil {
		return fmt.Errorf("%w: Transport is required", ErrInvalidConfig)
	}
	if c.FS == nil {
		c.FS = vfs.Default
	}
	if c.TickInterval <= 0 {
		c.TickInterval = 100 * time.Millisecond
	}
	if c.StepWorkers <= 0 {
		c.StepWorkers = 1
	}
	if c.ApplyWorkers <= 0 {
		c.ApplyWorkers = 2
	}
	if c.SnapshotChunkTimeout <= 0 {
		c.SnapshotChunkTimeout = 30 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Listener == nil {
		c.Listener = nopListener{}
	}
	return nil
}

// GroupConfig configures one replica of one group.
type GroupConfig struct {
	Group   raftpb.GroupID
	Replica raftpb.ReplicaID
	// Members is the initial membership (replica → Raft address) of a new
	// group. Ignored when the replica has state on disk. With Join the
	// replica starts empty and waits to be added by the group's leader.
	Members map[raftpb.ReplicaID]string
	Join    bool
	// NonVoting: with Join, the replica was added as a non-voter (a
	// learner); only informative, membership comes from the log.
	NonVoting bool

	ElectionTicks  int // default 10
	HeartbeatTicks int // default 1
	PreVote        bool
	CheckQuorum    bool
	// LeaseRead serves linearizable reads from the leader's lease
	// (requires CheckQuorum).
	LeaseRead bool

	// Snapshot policy (snapshot.Policy): SnapshotEntries, a jittered
	// SnapshotInterval, SnapshotMinGap; CompactionOverhead entries kept
	// below a snapshot; SnapshotsRetained published snapshots kept.
	SnapshotEntries     uint64
	SnapshotInterval    time.Duration
	SnapshotMinGap      uint64
	CompactionOverhead  uint64
	SnapshotsRetained   int
	SnapshotCompression raftpb.Compression
	// MaxLogBytes forces a snapshot once the group's log pins this many
	// bytes (0: the host's logdb limit).
	MaxLogBytes uint64
	// Quiesce stops ticking a replica whose group saw no activity (no
	// entries, votes or requests) for QuiesceTicks (default 10 election
	// timeouts): an idle leader sends no heartbeats and idle followers
	// start no elections, so thousands of idle groups cost next to
	// nothing. Any activity wakes it. Ignored with LeaseRead (a quiesced
	// leader's lease clock would stop while real time passes).
	Quiesce      bool
	QuiesceTicks int
	// MaxInflightMsgs / MaxMsgBytes tune replication (defaults 256 / 1 MiB).
	MaxInflightMsgs int
	MaxMsgBytes     uint64
}

func (c *GroupConfig) fill() error {
	if c.Group == 0 || c.Replica == 0 {
		return fmt.Errorf("%w: group and replica IDs must not be 0", ErrInvalidConfig)
	}
	if c.ElectionTicks == 0 {
		c.ElectionTicks = 10
	}
	if c.HeartbeatTicks == 0 {
		c.HeartbeatTicks = 1
	}
	if c.QuiesceTicks == 0 {
		c.QuiesceTicks = 10 * c.ElectionTicks
	}
	if c.LeaseRead {
		c.Quiesce = false
	}
	if c.MaxInflightMsgs == 0 {
		c.MaxInflightMsgs = 256
	}
	if c.MaxMsgBytes == 0 {
		c.MaxMsgBytes = 1 << 20
	}
	if c.SnapshotsRetained == 0 {
		c.SnapshotsRetained = snapshot.DefaultRetained
	}
	if !c.Join {
		if len(c.Members) == 0 {
			return fmt.Errorf("%w: group %d: Members is required unless Join", ErrInvalidConfig, c.Group)
		}
		if _, ok := c.Members[c.Replica]; !ok {
			return fmt.Errorf("%w: group %d: replica %d is not in Members", ErrInvalidConfig, c.Group, c.Replica)
		}
	}
	return nil
}

// Types of the stages that the public package configures through the
// engine (it imports no stage directly: DESIGN.md §1).
type (
	SnapshotLimits   = snapshot.Limits
	SnapshotOption   = snapshot.SnapshotOption
	LogOptions       = logdb.Options
	TransferProgress = snapshot.Progress
)

// Sending is the direction of a transfer this host serves.
const Sending = snapshot.Sending
