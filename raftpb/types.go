package raftpb

import "fmt"

// GroupID names a Raft group. A host runs many groups.
type GroupID uint64

// ReplicaID names one member of a group. Replica IDs are unique within a
// group and never reused after removal. 0 means "none".
type ReplicaID uint64

// None is the ReplicaID meaning "no replica" (no vote, no leader).
const None ReplicaID = 0

// EntryType says how an entry's Data is to be interpreted.
type EntryType uint8

const (
	// EntryNormal carries an opaque command for the state machine.
	EntryNormal EntryType = iota
	// EntryConfigChange carries an encoded ConfChange.
	EntryConfigChange
	// EntrySession carries a client-session operation (register,
	// unregister) applied by the replicated state machine layer.
	EntrySession
	// EntryNoOp is appended by a new leader (Raft §5.4.2, §8) so that it
	// can commit entries of earlier terms; its Data is empty.
	EntryNoOp
	numEntryTypes
)

var entryTypeNames = [...]string{"Normal", "ConfigChange", "Session", "NoOp"}

func (t EntryType) String() string {
	if int(t) < len(entryTypeNames) {
		return entryTypeNames[t]
	}
	return fmt.Sprintf("EntryType(%d)", uint8(t))
}

// Entry is one Raft log entry.
type Entry struct {
	Term  uint64
	Index uint64
	Type  EntryType
	Data  []byte
}

// Size approximates the bytes an entry occupies in memory and on the wire;
// it is what byte limits (inflight bytes, max message size) are measured in.
func (e *Entry) Size() uint64 { return uint64(len(e.Data)) + 24 }

// EntriesSize sums Size over ents.
func EntriesSize(ents []Entry) uint64 {
	var n uint64
	for i := range ents {
		n += ents[i].Size()
	}
	return n
}

// HardState is the part of a replica's Raft state that must be durable
// before it sends messages that depend on it (Raft Fig. 2, "persistent state").
type HardState struct {
	Term   uint64
	Vote   ReplicaID
	Commit uint64
}

// IsEmpty reports whether hs is the zero HardState.
func (hs HardState) IsEmpty() bool { return hs == HardState{} }

// Member is a replica and the address of the host it runs on.
type Member struct {
	ID   ReplicaID
	Addr string
}

// Membership is a group's configuration as of ConfigChangeIndex. It is stored
// in every snapshot's meta so that the configuration in effect is always
// derivable from the last snapshot plus the config-change entries after it.
//
// Voters, VotersOutgoing and NonVoters are sorted by ID. VotersOutgoing is
// non-empty only in a joint configuration (Raft thesis §4.3): decisions then
// need a majority of Voters and a majority of VotersOutgoing.
type Membership struct {
	// ConfigChangeIndex is the log index of the config change that produced
	// this membership (0 for the initial one). It is preserved through
	// snapshots, export and import; never synthesized from a snapshot index.
	ConfigChangeIndex uint64
	Voters            []Member
	VotersOutgoing    []Member
	NonVoters         []Member
	// Removed lists replicas removed from the group; they are never
	// re-added under the same ID. Sorted.
	Removed []ReplicaID
	// AutoLeave: the joint configuration is left automatically by the
	// leader once it is committed.
	AutoLeave bool
}

// IsJoint reports whether m is a joint configuration.
func (m *Membership) IsJoint() bool { return len(m.VotersOutgoing) > 0 }

// Clone returns a deep copy of m.
func (m Membership) Clone() Membership {
	m.Voters = append([]Member(nil), m.Voters...)
	m.VotersOutgoing = append([]Member(nil), m.VotersOutgoing...)
	m.NonVoters = append([]Member(nil), m.NonVoters...)
	m.Removed = append([]ReplicaID(nil), m.Removed...)
	return m
}

// ConfChangeType is the kind of one membership change.
type ConfChangeType uint8

const (
	// AddVoter adds a voting replica, or promotes a non-voter.
	AddVoter ConfChangeType = iota
	// AddNonVoter adds a replica that receives the log but does not vote
	// and does not count towards quorums (a learner).
	AddNonVoter
	// RemoveReplica removes a voter or non-voter, possibly the leader.
	RemoveReplica
	numConfChangeTypes
)

var confChangeTypeNames = [...]string{"AddVoter", "AddNonVoter", "RemoveReplica"}

func (t ConfChangeType) String() string {
	if int(t) < len(confChangeTypeNames) {
		return confChangeTypeNames[t]
	}
	return fmt.Sprintf("ConfChangeType(%d)", uint8(t))
}

// ConfChangeSingle is one change of a ConfChange.
type ConfChangeSingle struct {
	Type    ConfChangeType
	Replica ReplicaID
	Addr    string
}

// ConfChangeTransition says how a ConfChange with several changes is made.
type ConfChangeTransition uint8

const (
	// TransitionAuto: a single change is applied directly (Raft thesis §4.1,
	// one server at a time); several changes go through a joint
	// configuration that the leader leaves automatically once committed.
	TransitionAuto ConfChangeTransition = iota
	// TransitionJointImplicit always enters a joint configuration and
	// leaves it automatically.
	TransitionJointImplicit
	// TransitionJointExplicit enters a joint configuration that is left
	// only by an explicit empty ConfChange (LeaveJoint).
	TransitionJointExplicit
	numTransitions
)

// ConfChange is the payload of an EntryConfigChange entry. An empty
// Changes list means "leave the joint configuration".
type ConfChange struct {
	Transition ConfChangeTransition
	Changes    []ConfChangeSingle
	// Context is opaque to raft, returned to the proposer when applied.
	Context []byte
}

// LeaveJoint reports whether cc is the request to leave a joint config.
func (cc *ConfChange) LeaveJoint() bool { return len(cc.Changes) == 0 }

// SnapshotFormatVersion is the current on-disk snapshot format. A meta with
// a higher version is rejected before anything is touched.
const SnapshotFormatVersion uint32 = 1

// Compression names the stream compression of a snapshot's files.
type Compression uint8

const (
	NoCompression Compression = iota
	Snappy
	Zstd
	numCompressions
)

// SnapshotFile describes one file of a snapshot.
type SnapshotFile struct {
	// Name is relative to the snapshot directory: no '/', no "..", not
	// empty; validated by the snapshot package before any use.
	Name   string
	Size   uint64
	CRC32C uint32
}

// SnapshotMeta describes a snapshot: the log position it covers, the
// membership at that position and the files that hold its data.
type SnapshotMeta struct {
	FormatVersion uint32
	Group         GroupID
	Index         uint64
	Term          uint64
	Membership    Membership
	// StateMachineType and StateMachineVersion let a state machine refuse
	// a snapshot it cannot read.
	StateMachineType    uint64
	StateMachineVersion uint64
	// OnDisk: the state machine keeps its own data durable; a snapshot
	// taken for log compaction may carry no files.
	OnDisk      bool
	Compression Compression
	Files       []SnapshotFile
}

// IsEmpty reports whether the meta describes no snapshot.
func (m *SnapshotMeta) IsEmpty() bool { return m.Index == 0 }
