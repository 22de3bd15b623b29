package snapshot

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"

	"github.com/skiffdb/skiff/raftpb"
)

// The executor is the per-group snapshot state machine of SOFAJRaft's
// SnapshotExecutorImpl and braft's SnapshotExecutor, rule for rule (seeds
// 000 and 003): it decides whether a snapshot may be taken now, saves and
// publishes it, lets the log compact, and registers, fetches and loads the
// snapshots a leader installs. It reaches the rest of the host only through
// the small interfaces below, so it is tested with in-memory fakes.
//
// Concurrency: every method is safe for concurrent use. e.mu guards the
// state flags; no method holds it across I/O, a state machine call or a
// log call (the seeds unlock around logManager.setSnapshot for the same
// reason).

// Log is the executor's view of the group's Raft log (logdb, through the
// host).
type Log interface {
	// SetSnapshot records meta as the log's latest snapshot (braft
	// LogManager.set_snapshot). After a save the entries stay; after an
	// install the log is reset by Raft Fig. 13 rule 7: entries are kept
	// only if the log has meta.Index with meta.Term.
	SetSnapshot(meta raftpb.SnapshotMeta) error
	// Compact discards entries ≤ index. The executor never asks for more
	// than the latest durable snapshot covers.
	Compact(index uint64) error
}

// BufferedLog is an optional Log capability: ClearBufferedLogs drops
// entries cached for a snapshot that turned out unnecessary (SOFAJRaft
// clears them when applied == lastSnapshotIndex).
type BufferedLog interface {
	ClearBufferedLogs()
}

// LogRange is an optional Log capability used at NewExecutor: with it, a
// fallback to an older snapshot is accepted when the log still covers the
// gap (REQUIREMENTS §6); without it such a fallback is refused.
type LogRange interface {
	// FirstIndex is the index of the first entry the log holds.
	FirstIndex() uint64
}

// Raft is the executor's view of the replica's Raft state.
type Raft interface {
	// Term returns the current term, which install requests must match.
	Term() uint64
}

// CompactionLimiter is an optional Raft capability: the highest index the
// log may be compacted to for the sake of live followers that are behind
// but still within MaxLogBytes (REQUIREMENTS §1, §11). Without it only the
// snapshots being sent limit compaction.
type CompactionLimiter interface {
	CompactionLimit() uint64
}

// StateMachine is the executor's view of the group's state machine (the
// rsm stage wraps the user's statemachine.StateMachine).
type StateMachine interface {
	// LastApplied returns the index of the last applied entry.
	LastApplied() uint64
	// Capture takes a cheap point-in-time view at LastApplied (Raft §7,
	// hashicorp FSM.Snapshot). It runs on the goroutine that calls
	// Prepare, which must be serialized with applies; the Capture's Save
	// then runs concurrently with them. exported is set for an export: the
	// snapshot leaves the host and must rebuild a replica on its own, so it
	// must carry the state machine's data even where the group's own
	// snapshots record only metadata (on-disk state machines).
	Capture(exported bool) (Capture, error)
	// Restore replaces the state with a published, verified snapshot.
	// It runs on the goroutine that called Install.
	Restore(ctx context.Context, r *Reader) error
}

// Capture is a point-in-time view of a state machine.
type Capture interface {
	// Meta describes the captured state: Index, Term, Membership and the
	// state machine fields. Files is ignored.
	Meta() raftpb.SnapshotMeta
	// Save writes the state into w (w.Write for a stream, w.AddFile for
	// immutable files). It must not Commit or Abort w.
	Save(ctx context.Context, w *Writer) error
	// Release frees the capture; called once, after Save.
	Release()
}

// ExecutorConfig configures an Executor.
type ExecutorConfig struct {
	Store        *Store
	Log          Log
	Raft         Raft
	StateMachine StateMachine
	// Fetch receives and publishes the snapshot a leader announced
	// (Receiver.Receive bound to the store and the leader's source). It
	// must return when ctx is canceled.
	Fetch func(ctx context.Context, req InstallRequest) (raftpb.SnapshotMeta, error)
	// SnapshotMinGap: a periodic DoSnapshot is skipped while fewer entries
	// were applied since the last snapshot (SOFAJRaft
	// snapshotLogIndexMargin).
	SnapshotMinGap uint64
	// CompactionOverhead: entries kept in the log below a new snapshot, so
	// that slightly lagging followers catch up without one.
	CompactionOverhead uint64
	Logger             *slog.Logger
	// OnError is told of I/O failures (SOFAJRaft reportError); nil: logged.
	OnError func(error)
}

// Executor runs one group's snapshot saves and installs.
type Executor struct {
	cfg ExecutorConfig
	log *slog.Logger
	// ctx is canceled by Stop; fetches and loads run under it.
	ctx    context.Context
	cancel context.CancelFunc

	mu sync.Mutex
	// lastIndex/lastTerm: the latest snapshot this replica saved or
	// loaded. Invariant: the log is never compacted past lastIndex.
	lastIndex, lastTerm uint64
	stopped             bool
	// saving: a save is between Prepare and its done (SOFAJRaft
	// savingSnapshot). Invariant: !saving || downloading == nil at the
	// moment either was set.
	saving bool
	// downloading: the install request in progress, from registration to
	// load done; loading: it is past its fetch, being loaded.
	downloading *download
	loading     bool
}

// download is an install request being served (SOFAJRaft
// DownloadingSnapshot) and the fetch serving it. A retry of the same
// snapshot takes over the request and respond of a download but keeps its
// fetch.
type download struct {
	req     InstallRequest
	term    uint64
	respond func(InstallResponse)
	cancel  context.CancelFunc
	// callerCanceled: the Install call's context ended (the host canceled
	// the transfer), as opposed to a newer request canceling the fetch.
	callerCanceled atomic.Bool
	done           chan struct{} // closed when the fetch returned
	meta           raftpb.SnapshotMeta
	err            error
}

// NewExecutor returns an executor positioned at the store's latest
// snapshot. If Open had to fall back past snapshots that failed
// verification, the log must still cover the gap (LogRange), else
// ErrNoValidSnapshot: never a silent start with a hole.
func NewExecutor(cfg ExecutorConfig) (*Executor, error) {
	if cfg.Store == nil || cfg.Log == nil || cfg.Raft == nil || cfg.StateMachine == nil {
		return nil, fmt.Errorf("%w: executor needs a store, a log, raft and a state machine", ErrInvalid)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	e := &Executor{cfg: cfg, log: cfg.Logger}
	e.ctx, e.cancel = context.WithCancel(context.Background())
	if m, ok := cfg.Store.Latest(); ok {
		e.lastIndex, e.lastTerm = m.Index, m.Term
	}
	if sk := cfg.Store.Skipped(); len(sk) > 0 && sk[0].Index > e.lastIndex {
		lr, ok := cfg.Log.(LogRange)
		if !ok {
			return nil, fmt.Errorf("%w: snapshot %d failed verification (%v) and the log cannot tell whether it covers the gap",
				ErrNoValidSnapshot, sk[0].Index, sk[0].Err)
		}
		if first := lr.FirstIndex(); first > e.lastIndex+1 {
			return nil, fmt.Errorf("%w: snapshot %d failed verification (%v); the log starts at %d, past the fallback snapshot %d",
				ErrNoValidSnapshot, sk[0].Index, sk[0].Err, first, e.lastIndex)
		}
		e.log.Warn("snapshot: fell back to an older snapshot; the log covers the gap",
			"skipped", sk[0].Index, "using", e.lastIndex)
	}
	return e, nil
}

// LastSnapshot returns the index and term of the latest snapshot saved or
// loaded.
func (e *Executor) LastSnapshot() (index, term uint64) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.lastIndex, e.lastTerm
}

// Stop stops the executor: the fetch in progress is canceled, later
// requests fail with ErrHostDown. It does not wait.
func (e *Executor) Stop() {
	e.mu.Lock()
	e.stopped = true
	e.mu.Unlock()
	e.cancel()
}

// SnapshotOption is a RequestSnapshot's options (dragonboat
// SnapshotOption).
type SnapshotOption struct {
	// Exported writes a self-contained snapshot under ExportPath, which
	// must exist (ErrDirNotExist). It changes neither the group's snapshot
	// index nor its log. ExportPath without Exported is ignored with a
	// warning.
	Exported   bool
	ExportPath string
	// CompactionOverhead replaces the group's when
	// OverrideCompactionOverhead is set.
	CompactionOverhead         uint64
	OverrideCompactionOverhead bool
}

// SaveJob is a snapshot captured by Prepare, to be saved by Run (on a
// snapshot worker, off the apply path).
type SaveJob struct {
	e       *Executor
	capture Capture
	meta    raftpb.SnapshotMeta
	w       *Writer
	opt     SnapshotOption
	export  bool
	// rebuild: replaces a quarantined snapshot, possibly at the same index.
	rebuild bool
	// Skipped: nothing to do (applied == last snapshot, or the gap is
	// below SnapshotMinGap); Run returns the last snapshot's index.
	Skipped bool
}

// DoSnapshot takes a periodic snapshot now if the rules allow (SOFAJRaft
// doSnapshot): ErrHostDown when stopped; ErrBusy "is loading another
// snapshot" while an install is registered; ErrBusy "is saving another
// snapshot" while a save runs; success without a snapshot when nothing was
// applied since the last one (buffered logs are cleared) or fewer than
// SnapshotMinGap entries; an error when the writer cannot be created. It
// captures on the calling goroutine and saves on it too; use Prepare and
// SaveJob.Run to save elsewhere. It returns the latest snapshot's index.
func (e *Executor) DoSnapshot(ctx context.Context) (uint64, error) {
	job, err := e.prepare(SnapshotOption{}, false /* requested */)
	if err != nil {
		return 0, err
	}
	return job.Run(ctx)
}

// Prepare is DoSnapshot's first half: the guards and the capture, on the
// calling goroutine (serialized with applies). The caller then Runs the
// job, on any goroutine, or Cancels it; until then no other save starts.
func (e *Executor) Prepare() (*SaveJob, error) {
	return e.prepare(SnapshotOption{}, false /* requested */)
}

// RequestSnapshot takes a snapshot on a user's request (dragonboat
// RequestSnapshot) and returns its index. Unlike DoSnapshot it ignores
// SnapshotMinGap, and it reports ErrNoNewEntries rather than success when
// nothing was applied since the last snapshot. An exported snapshot is
// taken even then: it is a copy for the operator.
func (e *Executor) RequestSnapshot(ctx context.Context, opt SnapshotOption) (uint64, error) {
	if opt.Exported {
		if _, err := e.cfg.Store.FS().Stat(opt.ExportPath); err != nil {
			if isNotExist(err) {
				return 0, fmt.Errorf("%w: %s", ErrDirNotExist, opt.ExportPath)
			}
			return 0, fmt.Errorf("snapshot: export path %s: %w", opt.ExportPath, err)
		}
	} else if opt.ExportPath != "" {
		e.log.Warn("snapshot: ExportPath set without Exported; ignored", "path", opt.ExportPath)
		opt.ExportPath = ""
	}
	job, err := e.prepare(opt, true /* requested */)
	if err != nil {
		return 0, err
	}
	return job.Run(ctx)
}

func (e *Executor) prepare(opt SnapshotOption, requested bool) (*SaveJob, error) {
	return e.prepareMode(opt, requested, false /* rebuild */)
}

func (e *Executor) prepareMode(opt SnapshotOption, requested, rebuild bool) (*SaveJob, error) {
	e.mu.Lock()
	switch {
	case e.stopped:
		e.mu.Unlock()
		return nil, fmt.Errorf("%w: node is stopped", ErrHostDown)
	case e.downloading != nil:
		e.mu.Unlock()
		return nil, fmt.Errorf("%w: is loading another snapshot", ErrBusy)
	case e.saving:
		e.mu.Unlock()
		return nil, fmt.Errorf("%w: is saving another snapshot", ErrBusy)
	}
	applied := e.cfg.StateMachine.LastApplied()
	if !opt.Exported && (applied < e.lastIndex || (applied == e.lastIndex && !rebuild)) {
		// There might be a false positive as applied is being updated,
		// but the next snapshot comes in a predictable time (SOFAJRaft).
		e.mu.Unlock()
		if bl, ok := e.cfg.Log.(BufferedLog); ok {
			bl.ClearBufferedLogs()
		}
		if requested {
			return nil, fmt.Errorf("%w: applied %d, last snapshot %d", ErrNoNewEntries, applied, e.lastIndex)
		}
		return &SaveJob{e: e, Skipped: true}, nil
	}
	if !requested && applied-e.lastIndex < e.cfg.SnapshotMinGap {
		e.mu.Unlock()
		e.log.Debug("snapshot: gap below SnapshotMinGap; skipped",
			"applied", applied, "last", e.lastIndex, "min_gap", e.cfg.SnapshotMinGap)
		return &SaveJob{e: e, Skipped: true}, nil
	}
	if !opt.Exported {
		e.saving = true
	}
	e.mu.Unlock()

	job := &SaveJob{e: e, opt: opt, export: opt.Exported, rebuild: rebuild}
	err := job.create()
	if err != nil {
		if !opt.Exported {
			e.mu.Lock()
			e.saving = false
			e.mu.Unlock()
		}
		e.reportError(err)
		return nil, err
	}
	return job, nil
}

// create captures the state machine and opens the writer.
func (j *SaveJob) create() error {
	c, err := j.e.cfg.StateMachine.Capture(j.export)
	if err != nil {
		return fmt.Errorf("snapshot: capture: %w", err)
	}
	j.capture, j.meta = c, c.Meta()
	j.meta.Files = nil
	if j.meta.FormatVersion == 0 {
		j.meta.FormatVersion = raftpb.SnapshotFormatVersion
	}
	if j.export {
		j.w, err = createExport(j.e.cfg.Store.FS(), j.opt.ExportPath, j.meta)
	} else {
		j.w, err = j.e.cfg.Store.Create(j.meta)
	}
	if err != nil {
		c.Release()
		return fmt.Errorf("snapshot: fail to create writer: %w", err)
	}
	return nil
}

// Index returns the index the job saves (0 for a skipped job).
func (j *SaveJob) Index() uint64 { return j.meta.Index }

// Cancel gives up a job that will not be Run: the capture is released,
// the writer aborted and the executor free to save again.
func (j *SaveJob) Cancel() {
	if j.Skipped || j.capture == nil {
		return
	}
	j.capture.Release()
	j.capture = nil
	j.w.Abort()
	if !j.export {
		j.e.mu.Lock()
		j.e.saving = false
		j.e.mu.Unlock()
	}
}

// Run saves the captured state and completes the save (SOFAJRaft
// onSnapshotSaveDone): if a newer snapshot was installed meanwhile the
// writer is aborted with ErrStale; else the snapshot is published,
// lastSnapshotIndex/Term advance, the log learns of it and is compacted to
// index − CompactionOverhead, but never past a snapshot a transfer is
// still sending nor past the Raft CompactionLimit. A failed save compacts
// nothing and leaves the previous snapshot intact. Run returns the new
// snapshot's index (the last one's for a skipped job).
func (j *SaveJob) Run(ctx context.Context) (uint64, error) {
	e := j.e
	if j.Skipped {
		idx, _ := e.LastSnapshot()
		return idx, nil
	}
	if j.capture == nil {
		return 0, fmt.Errorf("%w: save job canceled or already run", ErrClosed)
	}
	j.w.SetContext(ctx) // the generation budget's waits end with the save's ctx
	err := j.capture.Save(ctx, j.w)
	j.capture.Release()
	j.capture = nil
	if err != nil {
		err = fmt.Errorf("snapshot: save %d: %w", j.meta.Index, err)
	}
	return j.done(err)
}

func (j *SaveJob) done(err error) (uint64, error) {
	e, m := j.e, j.meta
	if j.export {
		if err == nil {
			err = j.w.Commit()
		}
		j.w.Abort()
		if err != nil {
			e.reportError(err)
			return 0, err
		}
		return m.Index, nil
	}
	e.mu.Lock()
	if err == nil && (m.Index < e.lastIndex || (m.Index == e.lastIndex && !j.rebuild)) {
		// InstallSnapshot can break SaveSnapshot: the snapshot installed
		// meanwhile is newer than this one (SOFAJRaft ESTALE).
		err = fmt.Errorf("%w: discarding snapshot %d, last snapshot is %d", ErrStale, m.Index, e.lastIndex)
	}
	e.mu.Unlock()
	if err == nil {
		err = j.w.Commit()
	}
	j.w.Abort() // no-op after a successful Commit
	e.mu.Lock()
	if err == nil {
		e.lastIndex, e.lastTerm = m.Index, m.Term
	}
	e.saving = false
	e.mu.Unlock()
	if err != nil {
		if !errors.Is(err, ErrStale) {
			e.reportError(err)
		}
		return 0, err
	}
	if err := e.cfg.Log.SetSnapshot(m); err != nil {
		e.reportError(fmt.Errorf("snapshot: log set snapshot %d: %w", m.Index, err))
		return m.Index, nil // published; the log will learn at the next one
	}
	overhead := e.cfg.CompactionOverhead
	if j.opt.OverrideCompactionOverhead {
		overhead = j.opt.CompactionOverhead
	}
	if to := e.compactionIndex(m.Index, overhead); to > 0 {
		if err := e.cfg.Log.Compact(to); err != nil {
			e.reportError(fmt.Errorf("snapshot: compact log to %d: %w", to, err))
		}
	}
	return m.Index, nil
}

// compactionIndex is where the log may be compacted to after a snapshot at
// index: index − overhead, but not past a snapshot some transfer still
// sends (the follower then needs the entries after it: etcd#4055,
// openraft#1706) nor past what Raft keeps for live followers.
func (e *Executor) compactionIndex(index, overhead uint64) uint64 {
	if overhead >= index {
		return 0
	}
	to := index - overhead
	if pinned, ok := e.cfg.Store.MinReferenced(); ok && pinned < to {
		to = pinned
	}
	if cl, ok := e.cfg.Raft.(CompactionLimiter); ok {
		to = min(to, cl.CompactionLimit())
	}
	return to
}

func (e *Executor) reportError(err error) {
	if e.cfg.OnError != nil {
		e.cfg.OnError(err)
		return
	}
	e.log.Error("snapshot: executor error", "err", err)
}

// RebuildSnapshot checks the latest snapshot in full (every CRC32C) and, if
// it is damaged, quarantines it and takes a fresh one from the state
// machine, even at the same index (REQUIREMENTS §29: a leader that cannot
// read its own snapshot builds a new one rather than failing every
// follower that needs it). It returns the index of the good snapshot.
// ErrBusy if the damaged snapshot is being read (a transfer holds it).
func (e *Executor) RebuildSnapshot(ctx context.Context) (uint64, error) {
	r, err := e.cfg.Store.OpenReader(0)
	if err != nil {
		return 0, err
	}
	index := r.Index()
	verr := r.Verify()
	r.Close()
	if verr == nil {
		return index, nil
	}
	if !errors.Is(verr, ErrChecksum) {
		return 0, verr
	}
	e.log.Error("snapshot: latest snapshot is damaged; rebuilding it", "index", index, "err", verr)
	if err := e.cfg.Store.Quarantine(index, verr); err != nil {
		return 0, err
	}
	job, err := e.prepareMode(SnapshotOption{}, true /* requested */, true /* rebuild */)
	if err != nil {
		return 0, err
	}
	return job.Run(ctx)
}
