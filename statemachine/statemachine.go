package statemachine

import (
	"context"
	"io"
)

// Entry is one committed command handed to Apply.
type Entry struct {
	// Index is the entry's Raft log index; strictly increasing across
	// calls to Apply.
	Index uint64
	// Cmd is the command as proposed. It is owned by the host and valid
	// only during the Apply call: copy it to keep it.
	Cmd []byte
	// Result is set by Apply and returned to the proposer.
	Result Result
}

// Result is what applying one entry produced. It is returned to the proposer
// on the replica that accepted the proposal, and kept in the client session
// for exactly-once retries (so it must be deterministic).
type Result struct {
	Value uint64
	Data  []byte
}

// StateMachine is a group's replicated state machine.
//
// Apply must be deterministic: the same entries applied to the same state
// give the same state and results on every replica.
type StateMachine interface {
	// Apply applies entries in order and fills each entries[i].Result. It
	// is called on the group's apply goroutine. An error stops the replica
	// (see the package doc).
	Apply(entries []Entry) error
	// Lookup answers a read query against the current state. The host has
	// ensured linearizability (ReadIndex) before calling it, or the caller
	// asked for a stale read.
	Lookup(query []byte) ([]byte, error)
	// Snapshot captures the current state cheaply (copy-on-write, a
	// database snapshot, a reference to immutable files). It is called on
	// the apply goroutine between Apply calls; the capture's Save then
	// runs concurrently with later Applies (hashicorp FSM.Snapshot).
	Snapshot() (Snapshot, error)
	// Restore replaces the whole state with a snapshot's: r is the stream
	// its Save wrote (empty if it wrote none), files the files it added,
	// readable at their Path until Restore returns (hard-link them to keep
	// them). It is called on the apply goroutine, never concurrently with
	// Apply. ctx is canceled when the host stops.
	Restore(ctx context.Context, r io.Reader, files []SnapshotFile) error
	// Close releases the state machine's resources. It is called once,
	// after the last other call has returned.
	Close() error
}

// Snapshot is a point-in-time capture returned by StateMachine.Snapshot.
type Snapshot interface {
	// Save writes the captured state: a stream into w and/or immutable
	// files through files.AddFile. It runs on a snapshot goroutine,
	// concurrently with Apply. ctx is canceled when the snapshot is
	// abandoned (host stopping, a newer snapshot installed meanwhile).
	Save(ctx context.Context, w io.Writer, files FileCollection) error
	// Release frees the capture. It is called exactly once, after Save
	// returned or when Save will not be called.
	Release()
}

// FileCollection lets Snapshot.Save hand over immutable files instead of
// streaming their bytes: the host hard-links them into the snapshot (zero
// copy) and transfers them as separate files, so a follower that already
// holds an identical file (same name, size and CRC32C) links it rather than
// copying it.
type FileCollection interface {
	// AddFile adds the file at path under name. The name must be a plain
	// file name (no separators, not "." or "..", not "data" or "meta",
	// unique within the snapshot). The file must not change afterwards.
	AddFile(name, path string) error
}

// SnapshotFile is a file of a snapshot handed to Restore.
type SnapshotFile struct {
	Name string
	// Path is where the file can be read during Restore.
	Path string
	Size int64
}

// OnDisk is implemented by state machines that keep their own data durable
// (for example in Pebble). For them:
//
//   - the periodic snapshots taken for log compaction record only metadata
//     (index, term, membership, sessions), because the data is already on
//     disk: no data is written;
//   - a full data snapshot is generated only when a follower needs one,
//     asynchronously (the leader retries until it is ready);
//   - at start the host calls Open and replays only the entries above the
//     returned index; Restore is called only when the replica must install
//     a newer snapshot from the leader.
type OnDisk interface {
	// Open opens the state machine's durable data and returns the index
	// of the last entry it durably applied. Called once, before any other
	// method, on the apply goroutine.
	Open(ctx context.Context) (appliedIndex uint64, err error)
	// Sync makes everything applied so far durable. The host calls it
	// before it records a metadata-only snapshot at the applied index,
	// because the log below that index is then compacted away.
	Sync() error
}

// ConcurrentLookup is implemented by state machines whose Lookup is safe to
// call concurrently with Apply (and with other Lookups). Reads then do not
// wait for the apply goroutine.
type ConcurrentLookup interface {
	ConcurrentLookup()
}

// Type is implemented by state machines that name their snapshot format: the
// type and version are recorded in every snapshot's meta, and a replica
// refuses to restore a snapshot of another type or of a newer version than
// it declares.
type Type interface {
	SnapshotType() (typ, version uint64)
}

// CreateFunc creates the state machine of one replica of a group. It is
// called once per StartGroup.
type CreateFunc func(group, replica uint64) StateMachine
