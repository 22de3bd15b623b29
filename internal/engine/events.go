package engine

import "github.com/skiffdb/skiff/raftpb"

// EventKind says what an Event reports.
type EventKind uint8

// Event kinds.
const (
	// LeaderChanged: Leader (0: none known) in Term.
	LeaderChanged EventKind = iota + 1
	// SnapshotCreated: a snapshot at Index was saved and published; Bytes
	// is its size.
	SnapshotCreated
	// SnapshotSent: a snapshot at Index was offered to replica Peer.
	SnapshotSent
	// SnapshotReceived: a snapshot at Index was received and published.
	SnapshotReceived
	// SnapshotInstalled: the state machine was restored from the
	// snapshot at Index and the log reset to it.
	SnapshotInstalled
	// LogCompacted: entries up to Index were discarded.
	LogCompacted
	// SnapshotFailed: taking or installing a snapshot failed (Err).
	SnapshotFailed
	// GroupFailed: the group stopped on an error it cannot continue from
	// (state machine error, storage failure): Err.
	GroupFailed
)

var eventNames = [...]string{"", "leader-changed", "snapshot-created", "snapshot-sent",
	"snapshot-received", "snapshot-installed", "log-compacted", "snapshot-failed", "group-failed"}

func (k EventKind) String() string {
	if int(k) < len(eventNames) {
		return eventNames[k]
	}
	return "unknown"
}

// Event is something that happened to a replica, for listeners.
type Event struct {
	Kind    EventKind
	Group   raftpb.GroupID
	Replica raftpb.ReplicaID
	Leader  raftpb.ReplicaID
	Peer    raftpb.ReplicaID
	Term    uint64
	Index   uint64
	Bytes   int64
	Err     error
}

// Listener receives events. OnEvent is called from engine goroutines,
// possibly concurrently; it must not block or call back into the engine.
type Listener interface {
	OnEvent(Event)
}

type nopListener struct{}

func (nopListener) OnEvent(Event) {}
