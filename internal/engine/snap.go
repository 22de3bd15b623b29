package engine

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/skiffdb/skiff/internal/logdb"
	"github.com/skiffdb/skiff/internal/raft"
	"github.com/skiffdb/skiff/internal/rsm"
	"github.com/skiffdb/skiff/internal/snapshot"
	"github.com/skiffdb/skiff/raftpb"
)

// logReader is the core's raft.LogReader: the group's logdb view, plus
// the snapshot to send to a replica that needs compacted entries.
type logReader struct {
	*logdb.GroupLog
	n *node
}

// Snapshot returns the newest published snapshot if it covers
// requestIndex; otherwise it starts one (asynchronously) and reports
// ErrSnapshotTemporarilyUnavailable, and the core asks again later (seed
// 002, TiKV's PeerStorage::snapshot).
func (l *logReader) Snapshot(requestIndex uint64) (raftpb.SnapshotMeta, error) {
	n := l.n
	if n.sendStore != nil {
		if m, ok := n.sendStore.Latest(); ok && m.Index >= requestIndex {
			return m, nil
		}
		if n.generating.CompareAndSwap(false, true) {
			n.bg.Add(1)
			go n.generateFull()
		}
		return raftpb.SnapshotMeta{}, raft.ErrSnapshotTemporarilyUnavailable
	}
	if m, ok := n.store.Latest(); ok && m.Index >= requestIndex && m.Index > 0 {
		return m, nil
	}
	n.aw.submit(n, applyTask{fn: func() {
		if n.saving.CompareAndSwap(false, true) {
			n.bg.Add(1)
			go n.runRequestedSnapshot()
		}
	}})
	return raftpb.SnapshotMeta{}, raft.ErrSnapshotTemporarilyUnavailable
}

// runRequestedSnapshot takes a snapshot a follower needs, ignoring the
// minimum gap.
func (n *node) runRequestedSnapshot() {
	defer n.bg.Done()
	defer n.saving.Store(false)
	release, ok := n.e.throttle.TryReserveGeneration()
	if !ok {
		return
	}
	defer release()
	idx, err := n.exec.RequestSnapshot(n.ctx, snapshot.SnapshotOption{})
	switch {
	case err == nil:
		n.snapshotCreated(idx)
	case !errors.Is(err, snapshot.ErrNoNewEntries):
		n.log.Info("snapshot for a follower not taken", "err", err)
	}
}

// generateFull saves a full data snapshot of an on-disk state machine
// into the send store, for followers that need one (asynchronous
// generation, seed 002). The log and the group's snapshot index are not
// touched: the periodic metadata snapshots handle compaction.
func (n *node) generateFull() {
	defer n.bg.Done()
	defer n.generating.Store(false)
	release, ok := n.e.throttle.TryReserveGeneration()
	if !ok {
		return // the core asks again on a later tick
	}
	defer release()
	start := time.Now()
	var (
		c   *rsm.Capture
		err error
	)
	if werr := n.onApply(n.ctx, func() { c, err = n.rsm.Capture(true) }); werr != nil {
		return
	}
	if err != nil {
		n.log.Warn("full snapshot capture", "err", err)
		return
	}
	cp := capture{c: c, n: n}
	defer cp.Release()
	w, err := n.sendStore.Create(cp.Meta())
	if err != nil {
		if !errors.Is(err, snapshot.ErrStale) {
			n.log.Warn("full snapshot create", "err", err)
		}
		return
	}
	defer w.Abort()
	w.SetContext(n.ctx) // the generation-IO throttle's waits end with the node
	if err := cp.Save(n.ctx, w); err != nil {
		n.log.Warn("full snapshot save", "err", err)
		return
	}
	if err := w.Commit(); err != nil {
		n.log.Warn("full snapshot commit", "err", err)
		return
	}
	n.e.metrics.snapshotSeconds.WithLabelValues("generate").Observe(since(start))
	// The size is the send store's snapshot: a metadata-only snapshot of
	// the group's own store may sit at the same index.
	var bytes int64
	if m, ok := n.sendStore.Latest(); ok && m.Index == c.Index() {
		for _, f := range m.Files {
			bytes += int64(f.Size)
		}
	}
	n.e.metrics.snapshotBytes.WithLabelValues("created").Add(float64(bytes))
	n.e.cfg.Listener.OnEvent(Event{Kind: SnapshotCreated, Group: n.group, Replica: n.replica, Index: c.Index(), Bytes: bytes})
}

// offerStore is the store whose snapshots are sent to followers.
func (n *node) offerStore() *snapshot.Store {
	if n.sendStore != nil {
		return n.sendStore
	}
	return n.store
}

// execRaft is the executor's view of the core.
type execRaft struct{ n *node }

func (r execRaft) Term() uint64 { return r.n.term.Load() }

// CompactionLimit keeps the entries that live followers replicating
// normally still need (computed by the step worker every election timeout).
// A full snapshot being sent from the send store pins the entries after it.
func (r execRaft) CompactionLimit() uint64 {
	limit := r.n.compactLimit.Load()
	if r.n.sendStore != nil {
		if idx, ok := r.n.sendStore.MinReferenced(); ok && idx < limit {
			limit = idx
		}
	}
	return limit
}

// execLog is the executor's view of the log: both calls run on the step
// worker, the group's only writer.
type execLog struct{ n *node }

// SetSnapshot records a published snapshot. After an install (the
// restore of meta just ran) the core is told, and its Ready resets the log
// (Raft Fig. 13); after a save only the snapshot pointer is recorded.
func (l execLog) SetSnapshot(meta raftpb.SnapshotMeta) error {
	n := l.n
	if n.restored.Load() == meta.Index && meta.Index != 0 {
		return n.installOnCore(meta)
	}
	return n.doWait(n.ctx, func() error {
		if cur, _ := n.glog.SnapshotMeta(); cur.Index >= meta.Index {
			return nil
		}
		return n.e.db.SaveBatch([]logdb.Update{{Group: n.group, Snapshot: &meta}})
	})
}

// installOnCore tells the core a snapshot was installed and waits until
// the reset log is durable.
func (n *node) installOnCore(meta raftpb.SnapshotMeta) error {
	persisted := make(chan error, 1)
	err := n.doWait(n.ctx, func() error {
		err := n.raft.InstallSnapshot(meta)
		if errors.Is(err, raft.ErrSnapshotOutOfDate) {
			// The log already holds the snapshot's last entry (rule 7)
			// or is past it: keep it, record the pointer if it is news.
			if cur, _ := n.glog.SnapshotMeta(); cur.Index < meta.Index {
				if t, terr := n.glog.Term(meta.Index); terr == nil && t == meta.Term {
					persisted <- n.e.db.ResetToSnapshot(n.group, meta, true)
					return nil
				}
			}
			persisted <- nil
			return nil
		}
		if err != nil {
			return err
		}
		n.afterPersist = append(n.afterPersist, func(err error) { persisted <- err })
		n.sw.schedule(n)
		return nil
	})
	if err != nil {
		return err
	}
	select {
	case err := <-persisted:
		return err
	case <-n.stopped:
		return n.stoppedErr()
	}
}

// Compact discards entries ≤ index.
func (l execLog) Compact(index uint64) error {
	n := l.n
	err := n.doWait(n.ctx, func() error {
		err := n.e.db.Compact(n.group, index)
		if errors.Is(err, logdb.ErrCompacted) {
			return nil // already
		}
		return err
	})
	if err == nil {
		n.e.cfg.Listener.OnEvent(Event{Kind: LogCompacted, Group: n.group, Replica: n.replica, Index: index})
	}
	return err
}

// FirstIndex implements snapshot.LogRange.
func (l execLog) FirstIndex() uint64 {
	i, _ := l.n.glog.FirstIndex()
	return i
}

// execSM is the executor's view of the state machine: captures and
// restores run on the apply worker.
type execSM struct{ n *node }

func (s execSM) LastApplied() uint64 { return s.n.applied.Load() }

func (s execSM) Capture(exported bool) (snapshot.Capture, error) {
	n := s.n
	var (
		c   *rsm.Capture
		err error
	)
	ctx := n.ctx
	p := n.captureCtx.Load()
	if p != nil {
		// A RequestSnapshot waits: its deadline bounds the wait for the
		// apply worker too (the executor's Capture takes no context).
		var cancel context.CancelFunc
		ctx, cancel = context.WithCancel(n.ctx)
		defer cancel()
		defer context.AfterFunc(*p, cancel)()
	}
	if werr := n.onApply(ctx, func() { c, err = n.rsm.Capture(exported) }); werr != nil {
		if p != nil && (*p).Err() != nil {
			return nil, (*p).Err()
		}
		return nil, werr
	}
	if err != nil {
		return nil, err
	}
	return capture{c: c, n: n}, nil
}

func (s execSM) Restore(_ context.Context, r *snapshot.Reader) error {
	n := s.n
	meta := r.Meta()
	// Once fetched, a snapshot is loaded to the end: a state machine
	// interrupted mid-restore is broken (rsm makes it fatal), so only the
	// node stopping ends a restore, not CancelSnapshotTransfers.
	ctx := n.ctx
	var err error
	if werr := n.onApply(ctx, func() {
		if applied, _ := n.rsm.LastApplied(); applied >= meta.Index {
			return // already there (entries arrived while we fetched)
		}
		err = restoreRSM(ctx, n.rsm, r)
		if ferr := n.rsm.Failed(); ferr != nil {
			// The state machine is half-restored: stop the group now, so
			// that no read is served from it.
			n.fail(ferr)
		}
		if err == nil {
			n.applied.Store(meta.Index)
			n.serveReads(meta.Index)
		}
	}); werr != nil {
		return werr
	}
	if err != nil {
		return err
	}
	n.restored.Store(meta.Index)
	return nil
}

// onApply runs fn on the node's apply worker and waits for it. If ctx
// ends first, fn is not run at all — or, if it already started, onApply
// waits for it and reports success — so a caller never loses what fn
// made (a capture that nobody releases would pin its state machine
// snapshot).
func (n *node) onApply(ctx context.Context, fn func()) error {
	const (
		pending = iota
		running
		abandoned
	)
	var state atomic.Int32
	done := make(chan struct{})
	n.aw.submit(n, applyTask{fn: func() {
		defer close(done)
		if state.CompareAndSwap(pending, running) {
			fn()
		}
	}})
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		if state.CompareAndSwap(pending, abandoned) {
			return ctx.Err()
		}
		<-done
		return nil
	case <-n.aw.done:
		if state.CompareAndSwap(pending, abandoned) {
			return ErrClosed
		}
		<-done
		return nil
	}
}

// capture adapts an rsm capture to the snapshot package.
type capture struct {
	c *rsm.Capture
	n *node
}

func (c capture) Meta() raftpb.SnapshotMeta {
	typ, ver := c.c.Type()
	return raftpb.SnapshotMeta{
		Group:               c.n.group,
		Index:               c.c.Index(),
		Term:                c.c.Term(),
		Membership:          c.c.Membership(),
		StateMachineType:    typ,
		StateMachineVersion: ver,
		OnDisk:              c.c.OnDisk(),
		Compression:         c.n.cfg.SnapshotCompression,
	}
}

func (c capture) Save(ctx context.Context, w *snapshot.Writer) error {
	if err := c.c.Save(ctx, w, w); err != nil {
		return fmt.Errorf("save snapshot %d: %w", c.c.Index(), err)
	}
	return nil
}

func (c capture) Release() { c.c.Release() }
