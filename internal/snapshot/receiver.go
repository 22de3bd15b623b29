package snapshot

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"syscall"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/skiffdb/skiff/raftpb"
)

const (
	// DefaultChunkSize is the bytes asked for by one GetFile.
	DefaultChunkSize = 1 << 20
	// DefaultInFlight is the number of GetFile calls outstanding at once.
	DefaultInFlight = 4
	// DefaultChunkTimeout fails a transfer that moved no chunk for this
	// long. There is no limit on a transfer's total duration
	// (REQUIREMENTS §3).
	DefaultChunkTimeout = 10 * time.Second
	// DefaultSyncBytes is how many bytes of a file are written between
	// fsyncs, so that a restarted receiver finds most of them again.
	DefaultSyncBytes = 8 << 20
	// maxChunkSize bounds a chunk on both ends, whatever a peer asks for.
	maxChunkSize = 16 << 20
	// maxFileSize bounds a snapshot (and so each file): 1 PiB.
	maxFileSize = 1 << 50
	// freeSpaceMargin is kept free beyond the bytes still to fetch.
	freeSpaceMargin = 64 << 20
)

// ReceiverConfig configures a Receiver. Zero fields take the defaults.
type ReceiverConfig struct {
	// ChunkSize and InFlight bound the memory of one transfer: at most
	// InFlight chunks of ChunkSize bytes (×2 with compression) are held.
	ChunkSize int
	InFlight  int
	// ChunkTimeout: the transfer fails with ErrProgressTimeout when no
	// chunk arrived for this long. It must exceed ChunkSize divided by the
	// slowest rate limit in force.
	ChunkTimeout time.Duration
	// SyncBytes: fsync cadence while writing a file.
	SyncBytes int64
	Throttle  *Throttle  // nil: unlimited
	Transfers *Transfers // nil: a private registry
}

// Receiver pulls snapshots from senders into stores: the follower's end of
// the transfer. One Receiver per host, shared by all groups; the Throttle
// makes its limits node-wide. Safe for concurrent use; each Receive call
// runs one transfer.
type Receiver struct {
	cfg   ReceiverConfig
	codec *chunkCodec
}

// NewReceiver returns a Receiver. Close it to release the decoders.
func NewReceiver(cfg ReceiverConfig) (*Receiver, error) {
	if cfg.ChunkSize <= 0 {
		cfg.ChunkSize = DefaultChunkSize
	}
	cfg.ChunkSize = min(cfg.ChunkSize, maxChunkSize)
	if cfg.InFlight <= 0 {
		cfg.InFlight = DefaultInFlight
	}
	if cfg.ChunkTimeout <= 0 {
		cfg.ChunkTimeout = DefaultChunkTimeout
	}
	if cfg.SyncBytes <= 0 {
		cfg.SyncBytes = DefaultSyncBytes
	}
	if cfg.Throttle == nil {
		cfg.Throttle = NewThrottle(Limits{})
	}
	if cfg.Transfers == nil {
		cfg.Transfers = NewTransfers(nil)
	}
	codec, err := newChunkCodec(cfg.InFlight)
	if err != nil {
		return nil, err
	}
	return &Receiver{cfg: cfg, codec: codec}, nil
}

// Close releases the Receiver's decoders. No Receive may be in progress.
func (r *Receiver) Close() { r.codec.close() }

// Transfers returns the registry the Receiver reports progress to.
func (r *Receiver) Transfers() *Transfers { return r.cfg.Transfers }

// InstallRequest is what a leader's install request tells the receiver.
type InstallRequest struct {
	// From is the leader's replica, for progress reporting.
	From raftpb.ReplicaID
	// Meta is the snapshot announced; the sender's meta must match it.
	// An empty Meta (Index 0) accepts whatever the reader serves.
	Meta raftpb.SnapshotMeta
	// Reader names the snapshot reader registered at the sender.
	Reader ReaderID
	// Priority is the transfer's class in the receive bucket
	// (Limits.BackgroundShare); the zero value is PriorityCatchUp.
	Priority Priority
}

// Receive pulls the snapshot named by req from src into store and
// publishes it. It returns the published meta and the transfer's counters.
//
// Before it asks the source for anything it takes a receive slot
// (ErrNoSlot when none is free). It resumes whatever an earlier attempt at
// the same meta left in the store's receiving directory, after verifying
// it; files the latest local snapshot holds identically are hard-linked.
// On failure the receiving directory is kept for the next attempt, except
// when the store refuses the meta. Errors: ErrNoSlot, ErrMetaMismatch,
// ErrReaderNotFound, ErrChunkPastEnd, ErrChunkCorrupt, ErrProgressTimeout,
// ErrFileChecksum, the store's ErrStale/ErrBusy/ErrBadFileName, ENOSPC,
// ctx's cause; IsRetryable tells which a retry may fix.
func (r *Receiver) Receive(ctx context.Context, store *Store, req InstallRequest, src FileSource) (ReceiveResult, error) {
	release, ok := r.cfg.Throttle.TryReserveRecv()
	if !ok {
		return ReceiveResult{}, ErrNoSlot
	}
	defer release()
	// The class is active for the whole call, and released on every
	// return: a leaked catch-up would cap background transfers forever.
	defer r.cfg.Throttle.beginRecv(req.Priority)()
	st := r.cfg.Transfers.start(Receiving, req.Meta.Group, req.From, req.Meta.Index)
	defer st.finish()
	st.setPhase(PhaseMeta)
	result := func(m raftpb.SnapshotMeta) ReceiveResult {
		return ReceiveResult{Meta: m, Progress: st.snapshot(r.cfg.Transfers.now())}
	}

	// One watchdog for the whole transfer: any step that makes no progress
	// for ChunkTimeout (meta, checksums, chunks) cancels it.
	wctx, wd := newWatchdog(ctx, r.cfg.ChunkTimeout)
	defer wd.stop()
	meta, err := r.fetchMeta(wctx, req, src)
	if err != nil {
		err = wd.classify(ctx, err)
		st.fail(err)
		return result(raftpb.SnapshotMeta{}), err
	}
	wd.kick()
	st.identify(meta.Group, meta.Index)
	tx, err := store.Receive(meta)
	if err != nil {
		st.fail(err)
		return result(raftpb.SnapshotMeta{}), err
	}
	c := &copier{r: r, tx: tx, meta: meta, src: src, reader: req.Reader, prio: req.Priority, st: st, wd: wd}
	if err := c.run(wctx); err != nil {
		err = wd.classify(ctx, err)
		st.fail(err)
		_ = tx.Close() // keep the directory: the next attempt resumes it
		return result(raftpb.SnapshotMeta{}), err
	}
	st.setPhase(PhaseDone)
	return result(meta), nil
}

// ReceiveResult is what a Receive did: the published meta (empty on
// failure) and the transfer's final progress — bytes moved, resumed from an
// earlier attempt and hard-linked — for the install answer and metrics.
type ReceiveResult struct {
	Meta     raftpb.SnapshotMeta
	Progress Progress
}

// fetchMeta asks the source for the meta and checks it against the
// request before anything local is touched.
func (r *Receiver) fetchMeta(ctx context.Context, req InstallRequest, src FileSource) (raftpb.SnapshotMeta, error) {
	meta, err := src.Meta(ctx, req.Reader)
	if err != nil {
		return meta, err
	}
	if meta.FormatVersion == 0 {
		meta.FormatVersion = raftpb.SnapshotFormatVersion
	}
	if err := ValidateMeta(&meta); err != nil {
		return meta, err
	}
	// Sizes a hostile or broken sender could use to overflow the byte
	// counts (and the free-space check) are refused up front.
	var total uint64
	for _, f := range meta.Files {
		if f.Size > maxFileSize || total+f.Size > maxFileSize {
			return meta, fmt.Errorf("%w: file %q of %d bytes, snapshot of more than %d", ErrCorruptMeta, f.Name, f.Size, uint64(maxFileSize))
		}
		total += f.Size
	}
	if !req.Meta.IsEmpty() && !sameSnapshot(&req.Meta, &meta) {
		return meta, fmt.Errorf("%w: announced group %d index %d term %d, reader %d serves group %d index %d term %d",
			ErrMetaMismatch, req.Meta.Group, req.Meta.Index, req.Meta.Term, req.Reader, meta.Group, meta.Index, meta.Term)
	}
	return meta, nil
}

// sameSnapshot compares what identifies a snapshot's content.
func sameSnapshot(a, b *raftpb.SnapshotMeta) bool {
	return a.Group == b.Group && a.Index == b.Index && a.Term == b.Term &&
		a.Compression == b.Compression && slices.Equal(a.Files, b.Files)
}

// watchdog cancels a context when kick was not called for a timeout: the
// per-chunk progress timeout, with no limit on the total duration.
type watchdog struct {
	cancel  context.CancelCauseFunc
	timer   *time.Timer
	timeout time.Duration
}

func newWatchdog(ctx context.Context, timeout time.Duration) (context.Context, *watchdog) {
	wctx, cancel := context.WithCancelCause(ctx)
	wd := &watchdog{cancel: cancel, timeout: timeout}
	wd.timer = time.AfterFunc(timeout, func() { cancel(ErrProgressTimeout) })
	return wctx, wd
}

func (w *watchdog) kick() { w.timer.Reset(w.timeout) }

// minVerifyRate is the slowest disk read the watchdog allows for while a
// prefix is checksummed (locally, or by the sender in one Checksum call).
const minVerifyRate = 32 << 20

// allowRead kicks the watchdog with extra time for reading n bytes: a
// Checksum of a 10 GiB prefix is one long call, not a stalled transfer.
func (w *watchdog) allowRead(n int64) {
	w.timer.Reset(w.timeout + time.Duration(n)*time.Second/minVerifyRate)
}

func (w *watchdog) stop() {
	w.timer.Stop()
	w.cancel(context.Canceled)
}

// classify maps an error seen under the watchdog's context to what the
// caller should see: the outer context's cause if it ended, the progress
// timeout if that fired, else the error itself (source errors made
// retryable).
func (w *watchdog) classify(outer context.Context, err error) error {
	if outer.Err() != nil {
		return context.Cause(outer)
	}
	w.timer.Stop()
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, ErrProgressTimeout) {
		return fmt.Errorf("%w (%v)", ErrProgressTimeout, err)
	}
	return err
}

// checkFreeSpace refuses a transfer that cannot fit, before fetching
// anything (REQUIREMENTS §7). Filesystems that cannot tell are not checked.
func checkFreeSpace(fs vfs.FS, dir string, need uint64) error {
	du, err := fs.GetDiskUsage(dir)
	if err != nil {
		return nil
	}
	if du.AvailBytes < need+freeSpaceMargin {
		return fmt.Errorf("snapshot: receiving needs %d bytes + %d margin, %d available: %w",
			need, freeSpaceMargin, du.AvailBytes, syscall.ENOSPC)
	}
	return nil
}

// Fetcher binds Receive to a group's store for ExecutorConfig.Fetch:
// sourceFor resolves the source of each install request (the host knows
// the leader's address and dials its snapshot lane).
func (r *Receiver) Fetcher(store *Store, sourceFor func(InstallRequest) (FileSource, error)) func(context.Context, InstallRequest) (raftpb.SnapshotMeta, error) {
	return func(ctx context.Context, req InstallRequest) (raftpb.SnapshotMeta, error) {
		src, err := sourceFor(req)
		if err != nil {
			return raftpb.SnapshotMeta{}, err
		}
		res, err := r.Receive(ctx, store, req, src)
		return res.Meta, err
	}
}
