package raftpb

import "fmt"

// MessageType is the kind of a Raft message.
type MessageType uint8

const (
	// MsgReplicate carries entries (possibly none) from the leader:
	// Index/LogTerm name the entry before Entries, Commit the leader's
	// commit index (Raft Fig. 2 AppendEntries).
	MsgReplicate MessageType = iota
	// MsgReplicateResp answers MsgReplicate. On success Index is the last
	// index known to match. On Reject, Index is the rejected prev index and
	// RejectHint/LogTerm give the follower's hint for fast backtracking:
	// the largest index <= RejectHint whose term <= LogTerm may match.
	MsgReplicateResp
	// MsgVote / MsgPreVote ask for a vote for a candidate whose last entry
	// is (LogTerm, Index). A pre-vote is sent with Term = the term the
	// candidate would campaign in, and changes no state (thesis §9.6).
	MsgVote
	MsgVoteResp
	MsgPreVote
	MsgPreVoteResp
	// MsgHeartbeat carries the leader's commit (capped at what the
	// follower is known to have) and, when confirming ReadIndex requests,
	// a Context echoed back in MsgHeartbeatResp.
	MsgHeartbeat
	MsgHeartbeatResp
	// MsgInstallSnapshot tells a follower to install the snapshot named by
	// Snapshot. The snapshot's data is moved out of band by the snapshot
	// transfer lane; raft only sees the meta.
	MsgInstallSnapshot
	// MsgSnapshotStatus reports the outcome of an install to the leader
	// when raft itself cannot (the transfer failed, or the follower's host
	// refused it): Reject=true means failed. A successful install is also
	// answered by the follower's raft with a MsgReplicateResp.
	MsgSnapshotStatus
	// MsgReadIndex asks the leader for a read index; Context identifies the
	// request. Sent by followers, or stepped locally.
	MsgReadIndex
	// MsgReadIndexResp returns Index (the read index) for Context.
	// Reject means the leader could not serve it.
	MsgReadIndexResp
	// MsgTimeoutNow tells the leadership-transfer target to campaign now,
	// ignoring its election timer and leader stickiness (thesis §3.10).
	MsgTimeoutNow
	// MsgTransferLeader asks the leader to transfer leadership to From's
	// chosen target, carried in Index as a ReplicaID. Followers forward it.
	MsgTransferLeader
	// MsgUnreachable is a local report from the host that sending to From
	// failed; the leader pauses optimistic replication to it.
	MsgUnreachable
	// MsgPropose forwards a follower's proposal Entries to the leader.
	MsgPropose
	numMessageTypes
)

// NumMessageTypes is the number of defined message types; handler tables
// are sized by it.
const NumMessageTypes = int(numMessageTypes)

var messageTypeNames = [...]string{
	"MsgReplicate", "MsgReplicateResp", "MsgVote", "MsgVoteResp",
	"MsgPreVote", "MsgPreVoteResp", "MsgHeartbeat", "MsgHeartbeatResp",
	"MsgInstallSnapshot", "MsgSnapshotStatus", "MsgReadIndex",
	"MsgReadIndexResp", "MsgTimeoutNow", "MsgTransferLeader",
	"MsgUnreachable", "MsgPropose",
}

func (t MessageType) String() string {
	if int(t) < len(messageTypeNames) {
		return messageTypeNames[t]
	}
	return fmt.Sprintf("MessageType(%d)", uint8(t))
}

// IsResponse reports whether t answers another message.
func (t MessageType) IsResponse() bool {
	switch t {
	case MsgReplicateResp, MsgVoteResp, MsgPreVoteResp, MsgHeartbeatResp,
		MsgReadIndexResp, MsgSnapshotStatus, MsgUnreachable:
		return true
	}
	return false
}

// IsLocal reports whether t is only ever produced by the local host, never
// received from the network.
func (t MessageType) IsLocal() bool { return t == MsgUnreachable }

// Message is one Raft message between two replicas of a group. Which fields
// are meaningful depends on Type; see the MessageType constants.
type Message struct {
	Type    MessageType
	Group   GroupID
	From    ReplicaID
	To      ReplicaID
	Term    uint64
	LogTerm uint64
	Index   uint64
	Commit  uint64
	Reject  bool
	// RejectHint is the follower's suggestion for the next probe index in
	// a rejected MsgReplicateResp (with LogTerm as the hint's term).
	RejectHint uint64
	Context    []byte
	Entries    []Entry
	// Snapshot is set on MsgInstallSnapshot only.
	Snapshot *SnapshotMeta
}

// MessageBatch is the unit the transport sends between hosts: messages of
// many groups from one host to another.
type MessageBatch struct {
	// DeploymentID identifies the cluster; a batch from another deployment
	// is rejected by the receiver.
	DeploymentID uint64
	// SourceAddress is the sending host's Raft address.
	SourceAddress string
	Messages      []Message
}
