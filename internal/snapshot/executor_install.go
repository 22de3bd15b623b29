package snapshot

import (
	"context"
	"errors"
	"fmt"

	"github.com/skiffdb/skiff/raftpb"
)

// InstallResponse answers one install request (SOFAJRaft
// InstallSnapshotResponse, with the installed index that NuRaft#121 asks
// for so that a slow load is never mistaken for a failure).
type InstallResponse struct {
	// Term is the receiver's current term (0 when it never got that far).
	Term uint64
	// Success: the snapshot is installed (Index), or the replica already
	// had a snapshot at least as new (Index is then the local one).
	// Success false with a nil Err: the request's term is not the
	// receiver's; the leader steps down or retries in the new term.
	Success bool
	Index   uint64
	// Err says why the request was not served: ErrHostDown (EHOSTDOWN),
	// ErrBusy (EBUSY, retry later), ErrInterrupted (EINTR: a retry took
	// over; it will be answered), ErrInvalid (EINVAL: a newer snapshot is
	// being installed), or the fetch's or the load's failure.
	Err error
}

// Install serves one install request of a leader in term term, blocking the
// calling goroutine while this request's session lasts (SOFAJRaft
// installSnapshot). respond is called exactly once for the request, maybe
// from another Install call's goroutine: a retry of the same snapshot takes
// over the session in progress, which then answers the retry, while the
// earlier request is answered ErrInterrupted at once.
//
// Registration follows SOFAJRaft's registerDownloadingSnapshot exactly:
//
//	stopped                                  → ErrHostDown
//	saving a snapshot                        → ErrBusy
//	term ≠ current term                      → Success false
//	not newer than the local snapshot        → Success true, nothing done
//	no install in progress                   → fetch, load, answer
//	same index as the install in progress    → takes it over; the old request → ErrInterrupted
//	older than the install in progress       → ErrInvalid
//	newer, and the one in progress is loading → ErrBusy
//	newer, the one in progress is fetching   → cancel its fetch; ErrBusy (the leader retries)
func (e *Executor) Install(ctx context.Context, term uint64, req InstallRequest, respond func(InstallResponse)) {
	d := &download{req: req, term: term, respond: respond}
	if !e.register(d) {
		return
	}
	// The caller's context cancels the fetch too (a transfer canceled
	// from outside); the session then answers with the context's error.
	stop := context.AfterFunc(ctx, func() {
		d.callerCanceled.Store(true)
		d.cancel()
	})
	defer stop()
	<-d.done
	e.afterFetch(ctx, d)
}

// register decides what to do with a request. It returns true if the
// request started a fetch, which the caller then waits for.
func (e *Executor) register(d *download) bool {
	var interrupted *download
	defer func() {
		// Answered outside the lock, like SOFAJRaft's saved.done.
		if interrupted != nil {
			interrupted.respond(InstallResponse{Term: interrupted.term,
				Err: fmt.Errorf("%w: interrupted by the retry of install request", ErrInterrupted)})
		}
	}()
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.stopped {
		d.respond(InstallResponse{Err: fmt.Errorf("%w: node is stopped", ErrHostDown)})
		return false
	}
	if e.saving {
		d.respond(InstallResponse{Err: fmt.Errorf("%w: node is saving snapshot", ErrBusy)})
		return false
	}
	term := e.cfg.Raft.Term()
	if d.term != term {
		e.log.Warn("snapshot: install term mismatch", "want", term, "got", d.term)
		d.respond(InstallResponse{Term: term, Success: false})
		return false
	}
	idx := d.req.Meta.Index
	if idx <= e.lastIndex {
		e.log.Warn("snapshot: install of a snapshot that is not newer; nothing done",
			"index", idx, "last", e.lastIndex)
		d.respond(InstallResponse{Term: term, Success: true, Index: e.lastIndex})
		return false
	}
	m := e.downloading
	switch {
	case m == nil:
		e.downloading = d
		e.startFetchLocked(d)
		return true
	case m.req.Meta.Index == idx:
		// A retry of the session in progress: it will answer the new
		// request, the old one is interrupted (EINTR).
		interrupted = &download{term: m.term, respond: m.respond}
		m.req, m.respond, m.term = d.req, d.respond, d.term
		return false
	case m.req.Meta.Index > idx:
		d.respond(InstallResponse{Term: term,
			Err: fmt.Errorf("%w: a newer snapshot (%d) is under installing", ErrInvalid, m.req.Meta.Index)})
		return false
	case e.loading:
		d.respond(InstallResponse{Term: term,
			Err: fmt.Errorf("%w: a former snapshot (%d) is under loading", ErrBusy, m.req.Meta.Index)})
		return false
	default:
		m.cancel()
		e.log.Warn("snapshot: canceling the fetch of an older snapshot for a newer one",
			"old", m.req.Meta.Index, "new", idx)
		d.respond(InstallResponse{Term: term,
			Err: fmt.Errorf("%w: a former snapshot (%d) is under installing, trying to cancel", ErrBusy, m.req.Meta.Index)})
		return false
	}
}

// startFetchLocked starts fetching d's snapshot.
func (e *Executor) startFetchLocked(d *download) {
	ctx, cancel := context.WithCancel(e.ctx)
	d.cancel, d.done = cancel, make(chan struct{})
	req := d.req
	go func() {
		defer close(d.done)
		defer cancel()
		if m, ok := e.cfg.Store.Latest(); ok && !req.Meta.IsEmpty() &&
			m.Index == req.Meta.Index && m.Term == req.Meta.Term {
			// Fetched and published by an earlier attempt whose load did
			// not finish (canceled, failed, a crash): load it again
			// instead of fetching (the store would refuse the same index
			// as stale, and the replica would never install).
			d.meta = m
			return
		}
		if e.cfg.Fetch == nil {
			d.err = fmt.Errorf("%w: no fetch configured", ErrInvalid)
			return
		}
		d.meta, d.err = e.cfg.Fetch(ctx, req)
		if d.err == nil && !req.Meta.IsEmpty() && d.meta.Index != req.Meta.Index {
			d.err = fmt.Errorf("%w: fetched snapshot %d, announced %d", ErrMetaMismatch, d.meta.Index, req.Meta.Index)
		}
		switch {
		case d.err == nil || ctx.Err() == nil || e.ctx.Err() != nil:
		case d.callerCanceled.Load():
			d.err = fmt.Errorf("snapshot: install canceled: %w (%v)", context.Canceled, d.err)
		default:
			d.err = fmt.Errorf("%w: fetch canceled for a newer snapshot: %v", ErrInterrupted, d.err)
		}
	}()
}

// afterFetch loads a fetched snapshot into the state machine and answers
// whoever owns the session now.
func (e *Executor) afterFetch(ctx context.Context, d *download) {
	e.mu.Lock()
	if d.err != nil || e.stopped {
		err := d.err
		if err == nil {
			err = fmt.Errorf("%w: node is stopped", ErrHostDown)
		}
		e.downloading = nil
		respond, term := d.respond, d.term
		e.mu.Unlock()
		respond(InstallResponse{Term: term, Err: err})
		return
	}
	e.loading = true
	e.mu.Unlock()
	err := e.load(ctx, d.meta)
	e.onLoadDone(d, err)
}

// load verifies every file of the published snapshot and restores the
// state machine from it. Stop cancels it as well as ctx.
func (e *Executor) load(ctx context.Context, m raftpb.SnapshotMeta) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer context.AfterFunc(e.ctx, cancel)()
	r, err := e.cfg.Store.OpenReader(m.Index)
	if err != nil {
		return fmt.Errorf("snapshot: load %d: %w", m.Index, err)
	}
	defer r.Close()
	if err := r.Verify(); err != nil {
		return fmt.Errorf("snapshot: load %d: %w", m.Index, err)
	}
	if err := e.cfg.StateMachine.Restore(ctx, r); err != nil {
		return fmt.Errorf("snapshot: restore %d: %w", m.Index, err)
	}
	return nil
}

// onLoadDone completes an install (braft on_snapshot_load_done): on
// success lastSnapshotIndex/Term advance and the log is handed the meta
// (set_snapshot); the request is answered with the installed index.
func (e *Executor) onLoadDone(d *download, err error) {
	m := d.meta
	e.mu.Lock()
	if err == nil && m.Index > e.lastIndex {
		e.lastIndex, e.lastTerm = m.Index, m.Term
	}
	e.loading = false
	e.downloading = nil
	respond, term := d.respond, d.term
	e.mu.Unlock()
	if err == nil {
		if lerr := e.cfg.Log.SetSnapshot(m); lerr != nil {
			err = fmt.Errorf("snapshot: log set snapshot %d: %w", m.Index, lerr)
		}
	}
	if err != nil {
		if !errors.Is(err, context.Canceled) {
			e.reportError(err)
		}
		respond(InstallResponse{Term: term, Err: err})
		return
	}
	respond(InstallResponse{Term: term, Success: true, Index: m.Index})
}
