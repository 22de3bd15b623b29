package rsm

import (
	"errors"
	"fmt"
)

// Outcomes of one proposal, reported in Applied.Err. They are not fatal:
// the entry was applied (the index and term advance); only the proposer
// learns that its command was not given to the state machine.
var (
	// ErrSessionNotFound: the proposal names a client session that is not
	// registered (never registered, unregistered, or evicted as least
	// recently used). The command was not applied.
	ErrSessionNotFound = errors.New("rsm: client session not found")
	// ErrSessionExpired: the proposal's SeriesID is at or below the
	// session's RespondedTo (the client said it has seen that answer), or
	// its result was not kept (an OnDisk replay, see ReplayOnDisk). The
	// command was applied at most once; its result is gone.
	ErrSessionExpired = errors.New("rsm: client session result expired")
)

// Snapshot errors, returned by Restore before the state machine is touched.
var (
	// ErrNeedFullSnapshot: a metadata-only snapshot cannot be restored
	// because the state machine's own data is older than the snapshot (or
	// it keeps no data on disk at all).
	ErrNeedFullSnapshot = errors.New("rsm: snapshot carries no state machine data and the state machine is behind it")
	// ErrIncompatibleSnapshot: the snapshot was written by a state machine
	// of another type or of a newer version (statemachine.Type).
	ErrIncompatibleSnapshot = errors.New("rsm: snapshot of an incompatible state machine type or version")
	// ErrCorruptSnapshot: the rsm header of a snapshot stream is not valid
	// (bad magic, unknown format, truncated, checksum mismatch, or it
	// disagrees with the snapshot's meta).
	ErrCorruptSnapshot = errors.New("rsm: corrupt snapshot header")
)

// Fatal apply errors: the replica's log contradicts what this stage can
// apply, so the group must stop rather than diverge.
var (
	// ErrCorruptEntry: a committed entry's Data is not an encoding made by
	// EncodeProposal and friends. Every entry in a skiff log is encoded by
	// the engine, so this is a bug or a corrupt log; skipping the entry
	// would make this replica diverge from the others.
	ErrCorruptEntry = errors.New("rsm: corrupt entry data")
	// ErrIndexGap: a batch does not continue at LastApplied+1.
	ErrIndexGap = errors.New("rsm: entries do not continue the applied index")
)

// Start-up consistency errors (DESIGN.md §2, REQUIREMENTS "restart gap
// check"), returned by CheckStart inside a *StartError.
var (
	// ErrAppliedBehindSnapshot: the state machine's durable applied index
	// is below the latest snapshot, whose log prefix is compacted away: the
	// entries in between can never be applied.
	ErrAppliedBehindSnapshot = errors.New("rsm: state machine applied index is behind the snapshot")
	// ErrAppliedAheadOfLog: the state machine claims entries the log does
	// not hold (a lost log tail, or a state machine from another replica).
	ErrAppliedAheadOfLog = errors.New("rsm: state machine applied index is ahead of the log")
)

// StartError is the typed error of CheckStart: the three indexes and the
// violated rule (Err, one of ErrAppliedBehindSnapshot, ErrAppliedAheadOfLog).
type StartError struct {
	SnapshotIndex, Applied, LastLogIndex uint64
	Err                                  error
}

func (e *StartError) Error() string {
	return fmt.Sprintf("%v: snapshot index %d, applied index %d, last log index %d",
		e.Err, e.SnapshotIndex, e.Applied, e.LastLogIndex)
}

func (e *StartError) Unwrap() error { return e.Err }

// CheckStart validates snapshotIndex <= applied <= lastLogIndex (DESIGN.md
// §2): a replica never starts with a gap between its state machine and its
// log. applied is the state machine's durable applied index: for an OnDisk
// state machine, max(Open's index, LastApplied after restoring the local
// snapshot) — Restore has already checked that the state machine holds every
// entry of the snapshot that reached it, and the snapshot may end with
// entries (NoOp, config change) the state machine never sees; an in-memory
// state machine starts from the snapshot, so the engine passes
// snapshotIndex. lastLogIndex is the log's last index (the snapshot index
// when the log is empty after it). It returns nil or a *StartError.
func CheckStart(snapshotIndex, applied, lastLogIndex uint64) error {
	var rule error
	switch {
	case applied < snapshotIndex:
		rule = ErrAppliedBehindSnapshot
	case applied > lastLogIndex:
		rule = ErrAppliedAheadOfLog
	default:
		return nil
	}
	return &StartError{SnapshotIndex: snapshotIndex, Applied: applied, LastLogIndex: lastLogIndex, Err: rule}
}
