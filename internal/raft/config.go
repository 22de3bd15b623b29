package raft

import (
	"errors"
	"fmt"
	"log/slog"

	"github.com/skiffdb/skiff/raftpb"
)

// ReadOnlyOption selects how ReadIndex requests are served.
type ReadOnlyOption uint8

const (
	// ReadOnlySafe confirms leadership with a heartbeat round to a quorum
	// before answering (Raft thesis §6.4).
	ReadOnlySafe ReadOnlyOption = iota
	// ReadOnlyLeaseBased answers from the leader's lease without a round
	// trip (thesis §6.4.1). It relies on bounded clock drift and is only
	// allowed with CheckQuorum, which makes a partitioned leader step down
	// within an election timeout.
	ReadOnlyLeaseBased
)

// Config configures one replica's core.
type Config struct {
	// ID is this replica's ID; never 0.
	ID    raftpb.ReplicaID
	Group raftpb.GroupID

	// ElectionTicks: a follower that hears nothing from a leader for a
	// randomized [ElectionTicks, 2*ElectionTicks) ticks campaigns.
	// Must be > HeartbeatTicks; 10 × HeartbeatTicks is typical.
	ElectionTicks int
	// HeartbeatTicks: the leader sends heartbeats this often.
	HeartbeatTicks int

	// Applied is the index the state machine has applied at start; 0 means
	// the snapshot index. Entries above it are handed out again.
	Applied uint64

	// MaxMsgBytes bounds the entries of one MsgReplicate (at least one
	// entry is always sent).
	MaxMsgBytes uint64
	// MaxInflightMsgs bounds the unacknowledged MsgReplicate per replica
	// in StateReplicate; MaxInflightBytes bounds their bytes (0: no limit).
	MaxInflightMsgs  int
	MaxInflightBytes uint64
	// MaxCommittedBytesPerReady bounds Ready.CommittedEntries (0: 64 MiB).
	MaxCommittedBytesPerReady uint64

	// PreVote enables the pre-vote phase (thesis §9.6): a replica first
	// asks whether it could win before raising its term, so a rejoining
	// partitioned replica does not disrupt the group.
	PreVote bool
	// CheckQuorum makes a leader step down when it has not heard from a
	// quorum for an election timeout, and makes followers that heard from
	// a leader recently ignore vote requests (leader stickiness).
	CheckQuorum bool
	ReadOnly    ReadOnlyOption
	// DisableProposalForwarding makes followers drop proposals instead of
	// forwarding them to the leader.
	DisableProposalForwarding bool

	// SnapshotTimeoutTicks: a replica in StateSnapshot that shows no sign of
	// progress for this many ticks returns to StateProbe (0: 5 election
	// timeouts). A follower receiving a snapshot says so in its heartbeat
	// responses, so a live transfer never times out this way.
	SnapshotTimeoutTicks int

	// Seed seeds the randomized election timeout (deterministic tests).
	// 0 derives a seed from ID and Group.
	Seed uint64

	// Logger receives the core's rare diagnostics; nil discards them.
	Logger *slog.Logger
}

// ErrInvalidConfig is wrapped by Config validation errors.
var ErrInvalidConfig = errors.New("raft: invalid config")

func (c *Config) validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", ErrInvalidConfig, fmt.Sprintf(format, args...))
	}
	switch {
	case c.ID == raftpb.None:
		return bad("replica ID 0 is reserved")
	case c.HeartbeatTicks <= 0:
		return bad("HeartbeatTicks must be > 0")
	case c.ElectionTicks <= c.HeartbeatTicks:
		return bad("ElectionTicks (%d) must be > HeartbeatTicks (%d)", c.ElectionTicks, c.HeartbeatTicks)
	case c.ReadOnly == ReadOnlyLeaseBased && !c.CheckQuorum:
		return bad("lease-based reads require CheckQuorum")
	case c.MaxInflightMsgs < 0:
		return bad("MaxInflightMsgs must be >= 0")
	}
	if c.MaxMsgBytes == 0 {
		c.MaxMsgBytes = 1 << 20
	}
	if c.MaxInflightMsgs == 0 {
		c.MaxInflightMsgs = 256
	}
	if c.MaxCommittedBytesPerReady == 0 {
		c.MaxCommittedBytesPerReady = 64 << 20
	}
	if c.SnapshotTimeoutTicks == 0 {
		c.SnapshotTimeoutTicks = 5 * c.ElectionTicks
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return nil
}
