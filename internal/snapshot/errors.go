package snapshot

import "errors"

// Store, executor, export and import errors. Callers use errors.Is. The
// transfer errors live beside the copier (transfer.go).
//
// The first group mirrors the status codes of the seeds (SOFAJRaft's
// RaftError, braft's errno): EBUSY, ESTALE, EHOSTDOWN, EINTR, EINVAL.
var (
	// ErrBusy: another snapshot is being saved, downloaded or loaded
	// (EBUSY). The caller may retry later.
	ErrBusy = errors.New("snapshot: busy")
	// ErrStale: a snapshot at least as new was published meanwhile, so this
	// one is discarded (ESTALE).
	ErrStale = errors.New("snapshot: stale snapshot")
	// ErrHostDown: the executor is stopped (EHOSTDOWN).
	ErrHostDown = errors.New("snapshot: executor stopped")
	// ErrInterrupted: the install request was taken over by a retry of the
	// same snapshot; the newer request will be answered instead (EINTR).
	ErrInterrupted = errors.New("snapshot: interrupted by a retried install request")
	// ErrInvalid: the request is invalid here, e.g. an install older than
	// the one in progress, or an import membership that re-admits a removed
	// replica (EINVAL).
	ErrInvalid = errors.New("snapshot: invalid request")
	// ErrNoNewEntries: RequestSnapshot found nothing applied since the last
	// snapshot.
	ErrNoNewEntries = errors.New("snapshot: no new entries since the last snapshot")
	// ErrDirNotExist: the export path does not exist.
	ErrDirNotExist = errors.New("snapshot: export directory does not exist")

	// ErrCorruptMeta: a meta record is truncated, bit-flipped or otherwise
	// undecodable, or contradicts its directory.
	ErrCorruptMeta = errors.New("snapshot: corrupt meta")
	// ErrBadFileName: a meta names a file with '/', "..", an absolute path,
	// an empty or reserved name, or the same name twice.
	ErrBadFileName = errors.New("snapshot: bad file name")
	// ErrChecksum: a file's size or CRC32C differs from its meta.
	ErrChecksum = errors.New("snapshot: file size or checksum mismatch")
	// ErrUnknownFormat: the meta was written in a format version this build
	// does not know (a newer release). Reported before anything is changed
	// on disk (REQUIREMENTS §26).
	ErrUnknownFormat = errors.New("snapshot: unknown snapshot format version")
	// ErrNotFound: no published snapshot with that index.
	ErrNotFound = errors.New("snapshot: snapshot not found")
	// ErrNoValidSnapshot: snapshots exist on disk but none verifies, or the
	// only valid one leaves a gap the log does not cover. Never a silent
	// start (REQUIREMENTS §6, §14).
	ErrNoValidSnapshot = errors.New("snapshot: no valid snapshot")
	// ErrStorageFailed: an fsync of the snapshot directory failed. The
	// store is unusable until reopened; fsyncs are never retried.
	ErrStorageFailed = errors.New("snapshot: storage failed")
	// ErrClosed: the store, writer or transaction was already closed.
	ErrClosed = errors.New("snapshot: closed")
)
