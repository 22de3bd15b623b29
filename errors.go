package skiff

import (
	"errors"

	"github.com/skiffdb/skiff/internal/engine"
)

// Errors returned by Host methods; test with errors.Is. Every error a
// method returns wraps one of these or a context error.
var (
	// ErrClosed: the host is closed.
	ErrClosed = engine.ErrClosed
	// ErrGroupNotFound: no replica of the group runs on this host.
	ErrGroupNotFound = engine.ErrGroupNotFound
	// ErrGroupExists: StartGroup of a group already started.
	ErrGroupExists = engine.ErrGroupExists
	// ErrTimeout: the context ended before the outcome was known. A
	// proposal may still commit: retry with a client session to be safe.
	ErrTimeout = engine.ErrTimeout
	// ErrRejected: Raft refused the request (no leader yet, a leadership
	// transfer in progress, another membership change pending, this
	// replica removed). Nothing happened; retrying later is safe.
	ErrRejected = engine.ErrRejected
	// ErrGroupStopped: the group stopped while the request waited.
	ErrGroupStopped = engine.ErrGroupStopped
	// ErrGroupFailed: the group stopped on an error it cannot continue
	// from (the state machine failed, the disk failed).
	ErrGroupFailed = engine.ErrGroupFailed
	// ErrBusy: another snapshot is being saved or installed (seed EBUSY).
	ErrBusy = engine.ErrBusy
	// ErrStale: a newer snapshot was installed meanwhile (seed ESTALE).
	ErrStale = engine.ErrStale
	// ErrNoNewEntries: RequestSnapshot with nothing applied since the
	// last snapshot.
	ErrNoNewEntries = engine.ErrNoNewEntries
	// ErrDirNotExist: an export path that does not exist.
	ErrDirNotExist = engine.ErrDirNotExist
	// ErrStorageFailed: an fsync failed; the log accepts no more writes
	// until the host is reopened.
	ErrStorageFailed = engine.ErrStorageFailed
	// ErrSessionNotFound: a proposal in a client session that is not
	// registered (or was evicted).
	ErrSessionNotFound = engine.ErrSessionNotFound
	// ErrSessionExpired: a retry of a proposal whose result the client
	// already acknowledged (RespondedTo).
	ErrSessionExpired = engine.ErrSessionExpired
	// ErrInvalidConfig: a HostConfig or GroupConfig that cannot work.
	ErrInvalidConfig = engine.ErrInvalidConfig
	// ErrTooLarge: a proposal above HostConfig.MaxProposalBytes. Nothing
	// was proposed.
	ErrTooLarge = errors.New("skiff: proposal too large")
)
