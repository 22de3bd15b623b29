package snapshot

// Transfer: moving a published snapshot from a leader to a follower.
//
// The model is braft's and SOFAJRaft's pull copy, made resumable:
//
//	leader (sender)                               follower (receiver)
//	Sender.RegisterPriority(peer, store.OpenReader(i), prio)
//	  holds a store reference, takes a send slot
//	  ─── InstallSnapshot{meta, reader, prio} ────►  Receiver.Receive(req, source)
//	                                                  takes a receive slot FIRST
//	  ◄── Meta(reader) ──────────────────────────────  validates the meta
//	  ◄── Checksum(reader, name, n) ─────────────────  only when resuming a file
//	  ◄── GetFile(reader, name, off, len) × k in flight
//	  reads [off, off+len), compresses per meta ───►  decompresses, writes in order,
//	                                                  CRC32C per file, Commit
//	Sender.Release(reader)  ◄──── install answer ────
//
// Nothing is read on the sender before the receiver holds a receive slot:
// the sender only ever reads in answer to the receiver's requests, and the
// receiver makes none until Throttle.TryReserveRecv succeeded. That is the
// "reservation before the sender reads anything" of REQUIREMENTS §10 without
// an extra round trip.
//
// Chunks of one snapshot are numbered across all its files in order; up to
// InFlight requests are outstanding and the writer consumes them in order, so
// a file on the receiver is always a contiguous prefix of the sender's file.
// Memory is bounded by ChunkSize × InFlight (twice that with compression,
// for the compressed and the decompressed copy) whatever the snapshot size.
//
// Resume: a receiving directory survives a broken connection, a retry and a
// restart. On the next attempt each file's present bytes are rounded down to
// a chunk boundary (a torn last write is dropped) and the prefix is verified
// by comparing its local CRC32C with the sender's Checksum of the same range;
// on a mismatch the prefix is halved until it matches or is empty. Nothing is
// fetched twice that verified. A complete file whose CRC32C is wrong is
// fetched again whole (it may be a hard link into a published snapshot).
// Files the receiver's latest published snapshot holds with the same name,
// size and CRC32C are hard-linked by the store, never fetched. While a file
// is written, a background goroutine fsyncs it every SyncBytes, so that a
// restarted receiver finds most of it again without the writer waiting.
//
// Compression is a property of the stream, not of the files at rest: files
// stay raw on both ends and each chunk travels as one block encoded per the
// meta's Compression (compress.go).
//
// Seams: FileSource is the transport's side (Sender in process, TCPSource
// over a socket, the transport package later); the store's ReceiveTx is the
// disk's side; Throttle and Transfers are shared by every group of a host.
//
// Ranges are half-open: GetFile(name, off, n) is bytes [off, off+n).

import (
	"context"
	"errors"
	"fmt"
	"syscall"

	"github.com/skiffdb/skiff/raftpb"
)

// ReaderID names a snapshot reader registered at a sender. It is carried in
// the install request; 0 is never a valid reader.
type ReaderID uint64

// FileSource is the receiver's view of a sender: the transport seam of the
// transfer. Sender implements it in process (tests, the in-memory network);
// TCPSource implements it over a connection. Implementations must be safe for
// concurrent use: the copier keeps several GetFile calls in flight.
//
// Errors: ErrReaderNotFound when the sender no longer holds the reader (the
// leader must send a new install request); ErrChunkPastEnd for a range past a
// file's end; any other error is treated as a broken connection and the
// transfer can be retried and resumed.
type FileSource interface {
	// Meta returns the meta of the snapshot the reader serves.
	Meta(ctx context.Context, reader ReaderID) (raftpb.SnapshotMeta, error)
	// GetFile returns bytes [offset, offset+length) of the named file in the
	// encoding of the meta's Compression: raw bytes for NoCompression, else
	// one compressed block that decodes to exactly length bytes. The result
	// may alias buf (passed for reuse); the caller owns it until it passes
	// the same buf again.
	GetFile(ctx context.Context, reader ReaderID, name string, offset, length int64, buf []byte) ([]byte, error)
	// Checksum returns the CRC32C of bytes [0, length) of the named file, so
	// that a receiver can verify the prefix it already holds without
	// fetching it again.
	Checksum(ctx context.Context, reader ReaderID, name string, length int64) (uint32, error)
}

// Transfer errors. Callers use errors.Is; IsRetryable says which ones a
// retry of the same install may fix.
var (
	// ErrReaderNotFound: the sender has no such reader (released, expired
	// or never registered). Retrying needs a new install request.
	ErrReaderNotFound = errors.New("snapshot: snapshot reader not found")
	// ErrChunkPastEnd: a requested or returned range reaches past the end of
	// the file the meta describes.
	ErrChunkPastEnd = errors.New("snapshot: chunk past end of file")
	// ErrChunkCorrupt: a chunk did not decode to the requested length, or
	// its frame checksum did not match.
	ErrChunkCorrupt = errors.New("snapshot: corrupt chunk")
	// ErrFileChecksum: a received file's CRC32C differs from the meta's,
	// even after fetching it again from zero.
	ErrFileChecksum = errors.New("snapshot: received file checksum mismatch")
	// ErrProgressTimeout: no chunk arrived within the per-chunk timeout.
	ErrProgressTimeout = errors.New("snapshot: no transfer progress within the chunk timeout")
	// ErrNoSlot: the node-wide cap on concurrent sends or receives is
	// reached; the peer should retry later (TiKV RESOURCE_EXHAUSTED).
	ErrNoSlot = errors.New("snapshot: no free transfer slot, retry later")
	// ErrMetaMismatch: the sender's meta is not the one the install
	// request announced.
	ErrMetaMismatch = errors.New("snapshot: sender meta differs from the install request")
)

// IsRetryable reports whether a transfer that failed with err may succeed if
// the same install is tried again (resuming from the bytes already held).
// Disk full is retryable: space may come back, and the partial data is kept.
func IsRetryable(err error) bool {
	if err == nil {
		return false
	}
	var re *retryableError
	switch {
	case errors.As(err, &re),
		errors.Is(err, ErrProgressTimeout),
		errors.Is(err, ErrNoSlot),
		errors.Is(err, ErrBusy), // the store is receiving (or saving) another
		errors.Is(err, ErrChunkCorrupt),
		errors.Is(err, syscall.ENOSPC):
		return true
	}
	return false
}

// retryableError marks an error from the source (a broken connection) as
// worth a retry without exposing the transport's own error types.
type retryableError struct{ err error }

func (e *retryableError) Error() string { return fmt.Sprintf("snapshot: source: %v", e.err) }
func (e *retryableError) Unwrap() error { return e.err }

// wrapSourceErr marks an error from a FileSource: the sentinels above and
// context errors pass through; anything else is a broken connection, which a
// retry may fix.
func wrapSourceErr(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, ErrReaderNotFound), errors.Is(err, ErrChunkPastEnd),
		errors.Is(err, ErrChunkCorrupt), errors.Is(err, ErrNoSlot),
		errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return err
	}
	return &retryableError{err: err}
}
