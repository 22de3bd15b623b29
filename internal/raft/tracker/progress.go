package tracker

import (
	"fmt"
)

// StateType is how the leader replicates to one replica.
type StateType uint8

const (
	// StateProbe: the leader does not know where the replica's log
	// matches; it sends one MsgReplicate per heartbeat interval and waits.
	StateProbe StateType = iota
	// StateReplicate: the logs match up to Match; the leader streams
	// entries optimistically, bounded by Inflights.
	StateReplicate
	// StateSnapshot: the replica needs entries the leader no longer has;
	// a snapshot at PendingSnapshot is being transferred and no entries
	// are sent until it is installed, fails, or times out.
	StateSnapshot
)

var stateNames = [...]string{"StateProbe", "StateReplicate", "StateSnapshot"}

func (s StateType) String() string {
	if int(s) < len(stateNames) {
		return stateNames[s]
	}
	return fmt.Sprintf("StateType(%d)", uint8(s))
}

// Progress is the leader's view of one replica.
type Progress struct {
	// Invariant: Match < Next.
	Match, Next uint64
	State       StateType

	// PendingSnapshot is the index of the snapshot being sent in
	// StateSnapshot, 0 otherwise.
	PendingSnapshot uint64
	// SnapshotTicks counts ticks in StateSnapshot without a sign of
	// progress from the replica; past the configured limit the leader
	// returns the replica to StateProbe.
	SnapshotTicks int
	// SnapshotWanted: the replica needs a snapshot but the log reader
	// answered ErrSnapshotTemporarilyUnavailable; retry on a later tick.
	SnapshotWanted bool

	// RecentActive: the replica was heard from since the last check-quorum
	// round. Reset by the leader every election timeout.
	RecentActive bool
	// LeaseTick is the latest leader tick at which the leader sent a
	// heartbeat that this replica acknowledged (0: none in this term).
	LeaseTick uint64
	// MsgAppFlowPaused: in StateProbe a message was sent and no reply has
	// come since; in StateReplicate, Inflights is full.
	MsgAppFlowPaused bool

	Inflights *Inflights

	// IsLearner: a non-voter; it receives the log but never votes or
	// counts towards a quorum.
	IsLearner bool
}

// ResetState moves to state, clearing flow-control state.
func (pr *Progress) ResetState(state StateType) {
	pr.MsgAppFlowPaused = false
	pr.PendingSnapshot = 0
	pr.SnapshotTicks = 0
	pr.SnapshotWanted = false
	pr.State = state
	pr.Inflights.Reset()
}

// BecomeProbe returns to probing from Match+1 (or, after a snapshot, from
// the snapshot index + 1 if that is further).
func (pr *Progress) BecomeProbe() {
	if pr.State == StateSnapshot {
		pending := pr.PendingSnapshot
		pr.ResetState(StateProbe)
		pr.Next = max(pr.Match+1, pending+1)
		return
	}
	pr.ResetState(StateProbe)
	pr.Next = pr.Match + 1
}

// BecomeReplicate starts optimistic replication from Match+1.
func (pr *Progress) BecomeReplicate() {
	pr.ResetState(StateReplicate)
	pr.Next = pr.Match + 1
}

// BecomeSnapshot records that a snapshot at index is being sent.
func (pr *Progress) BecomeSnapshot(index uint64) {
	pr.ResetState(StateSnapshot)
	pr.PendingSnapshot = index
}

// SentEntries updates Next and flow control after sending entries
// [Next, Next+n) taking bytes.
func (pr *Progress) SentEntries(n int, bytes uint64) {
	switch pr.State {
	case StateReplicate:
		if n > 0 {
			pr.Next += uint64(n)
			pr.Inflights.Add(pr.Next-1, bytes)
		}
		pr.MsgAppFlowPaused = pr.Inflights.Full()
	case StateProbe:
		pr.MsgAppFlowPaused = true
	default:
		panic(fmt.Sprintf("tracker: sending entries in %s", pr.State))
	}
}

// MaybeUpdate records that the replica holds the log up to n. It returns
// false if n is old news.
func (pr *Progress) MaybeUpdate(n uint64) bool {
	if n <= pr.Match {
		return false
	}
	pr.Match = n
	pr.Next = max(pr.Next, n+1)
	pr.MsgAppFlowPaused = false
	return true
}

// MaybeDecrTo handles a rejection of the MsgReplicate whose previous index
// was rejected, with the replica's hint matchHint. It returns false if the
// rejection is stale (it answers an older message).
func (pr *Progress) MaybeDecrTo(rejected, matchHint uint64) bool {
	if pr.State == StateReplicate {
		// Only a rejection of the message just after Match is current;
		// anything else answers a message sent before a later success.
		if rejected <= pr.Match {
			return false
		}
		pr.Next = pr.Match + 1
		return true
	}
	// In probe state only the latest probe (Next-1) is outstanding.
	if pr.Next-1 != rejected {
		return false
	}
	pr.Next = max(min(rejected, matchHint+1), pr.Match+1)
	pr.MsgAppFlowPaused = false
	return true
}

// IsPaused reports whether the leader must not send entries now.
func (pr *Progress) IsPaused() bool {
	switch pr.State {
	case StateProbe, StateReplicate:
		return pr.MsgAppFlowPaused
	default: // StateSnapshot
		return true
	}
}

func (pr *Progress) String() string {
	s := fmt.Sprintf("%s match=%d next=%d", pr.State, pr.Match, pr.Next)
	if pr.IsLearner {
		s += " learner"
	}
	if pr.IsPaused() {
		s += " paused"
	}
	if pr.PendingSnapshot > 0 {
		s += fmt.Sprintf(" pendingSnap=%d", pr.PendingSnapshot)
	}
	if !pr.RecentActive {
		s += " inactive"
	}
	if n := pr.Inflights.Count(); n > 0 {
		s += fmt.Sprintf(" inflight=%d[%dB]", n, pr.Inflights.Bytes())
	}
	return s
}
