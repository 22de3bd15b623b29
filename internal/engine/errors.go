package engine

import (
	"errors"

	"github.com/skiffdb/skiff/internal/logdb"
	"github.com/skiffdb/skiff/internal/rsm"
	"github.com/skiffdb/skiff/internal/snapshot"
)

// Errors. The public package re-exports them.
var (
	ErrClosed        = errors.New("skiff: host closed")
	ErrGroupNotFound = errors.New("skiff: group not found")
	ErrGroupExists   = errors.New("skiff: group already started")
	// ErrRejected: Raft dropped the proposal or request (no leader, a
	// leadership transfer, another config change pending, not a member).
	// Nothing was done; retrying is safe.
	ErrRejected = errors.New("skiff: request rejected")
	// ErrGroupStopped: the group stopped (StopGroup, or it failed) while
	// the request waited; the outcome of a proposal is unknown.
	ErrGroupStopped = errors.New("skiff: group stopped")
	// ErrGroupFailed: the group hit an error it cannot continue from.
	ErrGroupFailed = errors.New("skiff: group failed")

	// ErrInvalidConfig wraps configuration errors.
	ErrInvalidConfig = errors.New("skiff: invalid config")

	ErrSessionNotFound = rsm.ErrSessionNotFound
	ErrSessionExpired  = rsm.ErrSessionExpired

	ErrBusy          = snapshot.ErrBusy
	ErrStale         = snapshot.ErrStale
	ErrNoNewEntries  = snapshot.ErrNoNewEntries
	ErrDirNotExist   = snapshot.ErrDirNotExist
	ErrStorageFailed = logdb.ErrStorageFailed
)
