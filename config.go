package skiff

import (
	"crypto/tls"
	"log/slog"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/skiffdb/skiff/raftpb"
	"github.com/skiffdb/skiff/statemachine"
	"github.com/skiffdb/skiff/transport"
)

// GroupID names a Raft group; ReplicaID a member of a group. Both are
// never 0.
type (
	GroupID   = raftpb.GroupID
	ReplicaID = raftpb.ReplicaID
)

// DefaultMaxProposalBytes is HostConfig.MaxProposalBytes's default: half
// the TCP transport's 64 MiB frame, leaving room for the entry's framing.
const DefaultMaxProposalBytes = 32 << 20

// Compression of snapshot transfers.
type Compression = raftpb.Compression

// Compression choices.
const (
	NoCompression     = raftpb.NoCompression
	SnappyCompression = raftpb.Snappy
	ZstdCompression   = raftpb.Zstd
)

// HostConfig configures a Host: one process's share of every group it
// runs.
type HostConfig struct {
	// Dir holds the host's log and snapshots. Required.
	Dir string
	// RaftAddr is the address other hosts reach this one at (host:port),
	// used for both the Raft lane and the snapshot lane. Required unless
	// Transport is set.
	RaftAddr string
	// ListenAddr is where to listen (default RaftAddr).
	ListenAddr string
	// DeploymentID identifies the cluster; hosts of another deployment
	// are refused. Use the same non-zero value on every host.
	DeploymentID uint64
	// TLS secures both lanes (mutual TLS: set ClientAuth and ClientCAs).
	TLS *tls.Config
	// FS is the file system every byte goes through (default the OS).
	// Tests pass vfs.NewCrashableMem() to simulate power loss.
	FS vfs.FS
	// Transport replaces the TCP transport (tests use transport/memnet).
	Transport transport.Transport

	// TickInterval is one Raft tick (default 100ms).
	TickInterval time.Duration
	// StepWorkers and ApplyWorkers shard groups over goroutines
	// (default 1 and 2: step passes wait on the log's fsync, and one pass
	// persists every group with one fsync).
	StepWorkers, ApplyWorkers int

	// Node-wide snapshot limits shared by every group (0: unlimited). The
	// rates can be changed at runtime with SetSnapshotLimits.
	MaxSnapshotSendBytesPerSec       int64
	MaxSnapshotRecvBytesPerSec       int64
	MaxConcurrentSnapshotSends       int
	MaxConcurrentSnapshotRecvs       int
	MaxConcurrentSnapshotGenerations int
	// MaxSnapshotGenerateBytesPerSec caps the bytes snapshot saves write
	// (0: unlimited), so a save never saturates the disk the log needs.
	MaxSnapshotGenerateBytesPerSec int64
	// SnapshotBackgroundShare is the most of a direction's rate that
	// transfers to non-voters (new learners, rebalancing) get while a
	// voter is catching up (default 0.25).
	SnapshotBackgroundShare float64
	// SnapshotChunkTimeout fails a transfer that made no progress for this
	// long (default 30s; there is no limit on a transfer's total time).
	SnapshotChunkTimeout time.Duration

	// LogSegmentBytes is the WAL segment size (default 64 MiB);
	// LogCacheBytes bounds the entry cache across groups (default 64 MiB);
	// MaxLogBytes is the default per-group log cap that forces a snapshot
	// (default 4 GiB).
	LogSegmentBytes int64
	LogCacheBytes   int64
	MaxLogBytes     int64
	// UnsafeNoSync skips fsync: tests only; it loses data on power loss.
	UnsafeNoSync bool

	// MaxProposalBytes is the largest command Propose accepts (default
	// DefaultMaxProposalBytes). A Raft entry travels whole in one transport
	// frame (64 MiB on TCP): keep it well below the frame size.
	MaxProposalBytes int

	// Listener is told of leader changes, snapshots and compactions.
	Listener func(Event)
	// Metrics, when set, receives the host's Prometheus collectors.
	Metrics MetricsRegisterer
	Logger  *slog.Logger
}

// GroupConfig configures one replica of one group.
type GroupConfig struct {
	GroupID   GroupID
	ReplicaID ReplicaID
	// Members is the initial membership of a new group: every initial
	// replica's ID and Raft address, the same on every host. Ignored once
	// the replica has state on disk.
	Members map[ReplicaID]string
	// Join starts a replica that was added with AddReplica or
	// AddNonVoting: it starts empty and waits for the leader.
	Join bool

	// ElectionTicks (default 10) and HeartbeatTicks (default 1).
	ElectionTicks, HeartbeatTicks int
	// PreVote keeps a partitioned replica from disrupting the group when
	// it returns; CheckQuorum makes a leader that lost its quorum step
	// down. Both are recommended.
	PreVote, CheckQuorum bool
	// LeaseRead serves linearizable reads from the leader's lease, without
	// a round trip (implies CheckQuorum; relies on bounded clock drift).
	LeaseRead bool

	// SnapshotEntries takes a snapshot every this many applied entries
	// (0: off). SnapshotInterval takes one on a jittered timer if at least
	// SnapshotMinGap entries are new (0: off). CompactionOverhead entries
	// are kept in the log below a snapshot so slightly lagging followers
	// catch up from the log. SnapshotsRetained published snapshots are
	// kept (default 2).
	SnapshotEntries    uint64
	SnapshotInterval   time.Duration
	SnapshotMinGap     uint64
	CompactionOverhead uint64
	SnapshotsRetained  int
	// SnapshotCompression compresses snapshot transfers.
	SnapshotCompression Compression
	// MaxLogBytes forces a snapshot once the group's log pins this many
	// bytes of WAL (0: the host's MaxLogBytes).
	MaxLogBytes uint64
	// Quiesce stops ticking a replica whose group has been idle for
	// QuiesceTicks (default 10 election timeouts): no heartbeats, no
	// elections, next to no CPU for thousands of idle groups; any activity
	// wakes it. Ignored with LeaseRead.
	Quiesce      bool
	QuiesceTicks int
	// MaxInflightMsgs and MaxMsgBytes tune replication.
	MaxInflightMsgs int
	MaxMsgBytes     uint64
}

// SnapshotOption are RequestSnapshot's options.
type SnapshotOption struct {
	// Exported writes a self-contained snapshot under ExportPath (which
	// must exist) for backup or disaster recovery; it changes neither the
	// log nor the group's snapshot index.
	Exported   bool
	ExportPath string
	// CompactionOverhead replaces the group's for this snapshot when
	// OverrideCompactionOverhead is set (0 compacts everything).
	CompactionOverhead         uint64
	OverrideCompactionOverhead bool
}

// Session is a client session for exactly-once proposals: register
// ClientID once (RegisterSession), then give every proposal a SeriesID one
// higher than the previous one, reusing it on retries; RespondedTo is the
// highest SeriesID whose result the client has seen.
type Session struct {
	ClientID, SeriesID, RespondedTo uint64
}

// CreateFunc creates a group's state machine on this host.
type CreateFunc = statemachine.CreateFunc

// MetricsRegisterer is where a host registers its Prometheus collectors
// (prometheus.Registerer; pass prometheus.NewRegistry() or
// prometheus.DefaultRegisterer).
type MetricsRegisterer = prometheus.Registerer
