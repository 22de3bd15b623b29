package engine

import (
	"context"
	"errors"
	"fmt"

	"github.com/skiffdb/skiff/internal/rsm"
	"github.com/skiffdb/skiff/internal/snapshot"
	"github.com/skiffdb/skiff/raftpb"
	"github.com/skiffdb/skiff/statemachine"
)

// ErrTimeout: the context ended before the outcome was known; a proposal
// may still commit. It wraps the context's error.
var ErrTimeout = errors.New("skiff: timeout (outcome unknown)")

// Session is a client session for exactly-once proposals (rsm.Session).
type Session = rsm.Session

// Propose proposes cmd to group g and waits until it is applied on this
// host, returning the state machine's result. Any replica accepts
// proposals: followers forward them to the leader.
func (e *Engine) Propose(ctx context.Context, g raftpb.GroupID, cmd []byte) (statemachine.Result, error) {
	return e.proposeEntry(ctx, g, raftpb.EntryNormal, func(key uint64) []byte { return rsm.EncodeProposal(nil, key, cmd) })
}

// ProposeSession proposes cmd within a client session: retrying with the
// same SeriesID never applies it twice (the cached result is returned).
func (e *Engine) ProposeSession(ctx context.Context, g raftpb.GroupID, s Session, cmd []byte) (statemachine.Result, error) {
	return e.proposeEntry(ctx, g, raftpb.EntryNormal, func(key uint64) []byte { return rsm.EncodeSessionProposal(nil, key, s, cmd) })
}

// RegisterSession registers client session clientID in group g (a
// replicated entry; the session survives snapshots and restarts).
func (e *Engine) RegisterSession(ctx context.Context, g raftpb.GroupID, clientID uint64) error {
	_, err := e.proposeEntry(ctx, g, raftpb.EntrySession, func(key uint64) []byte { return rsm.EncodeRegister(nil, key, clientID) })
	return err
}

// UnregisterSession removes client session clientID from group g.
func (e *Engine) UnregisterSession(ctx context.Context, g raftpb.GroupID, clientID uint64) error {
	_, err := e.proposeEntry(ctx, g, raftpb.EntrySession, func(key uint64) []byte { return rsm.EncodeUnregister(nil, key, clientID) })
	return err
}

// proposeEntry proposes an entry of type typ whose data encode builds
// around a fresh proposal key, and waits for its outcome.
func (e *Engine) proposeEntry(ctx context.Context, g raftpb.GroupID, typ raftpb.EntryType, encode func(key uint64) []byte) (statemachine.Result, error) {
	n, err := e.node(g)
	if err != nil {
		return statemachine.Result{}, err
	}
	p := newProposal(e.nextKey())
	p.typ, p.data = typ, encode(p.key)
	return n.wait(ctx, p)
}

// wait submits p and waits for its outcome.
func (n *node) wait(ctx context.Context, p *proposal) (statemachine.Result, error) {
	n.e.metrics.proposals.Inc()
	n.addPending(p)
	if !n.submitProposal(p) {
		n.removePending(p.key)
		return statemachine.Result{}, n.stoppedErr()
	}
	select {
	case <-p.done:
		return p.result, p.err
	case <-ctx.Done():
		p.abandoned.Store(true)
		n.removePending(p.key)
		return statemachine.Result{}, fmt.Errorf("%w: %w", ErrTimeout, ctx.Err())
	}
}

// Read answers query linearizably: a ReadIndex round confirms the
// leadership (or the leader's lease) and the read waits until this replica
// has applied the read index. It works on followers.
func (e *Engine) Read(ctx context.Context, g raftpb.GroupID, query []byte) ([]byte, error) {
	n, err := e.node(g)
	if err != nil {
		return nil, err
	}
	r := &readRequest{query: query, done: make(chan struct{})}
	if !n.submitRead(r) {
		return nil, n.stoppedErr()
	}
	select {
	case <-r.done:
		return r.value, r.err
	case <-ctx.Done():
		r.abandoned.Store(true)
		return nil, fmt.Errorf("%w: %w", ErrTimeout, ctx.Err())
	case <-n.stopped:
		return nil, n.stoppedErr()
	}
}

// StaleRead answers query from this replica's state machine as it is,
// without confirming it is current.
func (e *Engine) StaleRead(ctx context.Context, g raftpb.GroupID, query []byte) ([]byte, error) {
	n, err := e.node(g)
	if err != nil {
		return nil, err
	}
	var (
		v    []byte
		lerr error
	)
	if err := n.onApply(ctx, func() {
		if n.failed.Load() != nil {
			lerr = n.stoppedErr()
			return
		}
		v, lerr = n.rsm.Lookup(query)
	}); err != nil {
		return nil, err
	}
	return v, lerr
}

// RequestSnapshot takes a snapshot of group g now and returns its index
// (dragonboat RequestSnapshot): ErrNoNewEntries if nothing was applied
// since the last one, ErrBusy while another save or an install runs; an
// exported snapshot goes to opt.ExportPath (which must exist) and changes
// neither the log nor the group's snapshot index.
func (e *Engine) RequestSnapshot(ctx context.Context, g raftpb.GroupID, opt snapshot.SnapshotOption) (uint64, error) {
	n, err := e.node(g)
	if err != nil {
		return 0, err
	}
	before, _ := n.exec.LastSnapshot()
	n.captureCtx.Store(&ctx)
	idx, err := n.exec.RequestSnapshot(ctx, opt)
	n.captureCtx.CompareAndSwap(&ctx, nil)
	if err == nil && !opt.Exported && idx > before {
		n.snapshotCreated(idx)
	}
	return idx, err
}

// changeMembership proposes cc and waits until it is applied here.
func (e *Engine) changeMembership(ctx context.Context, g raftpb.GroupID, ch raftpb.ConfChangeSingle) error {
	n, err := e.node(g)
	if err != nil {
		return err
	}
	p := newProposal(e.nextKey())
	p.cc = &raftpb.ConfChange{Changes: []raftpb.ConfChangeSingle{ch},
		Context: rsm.EncodeProposal(nil, p.key, nil)}
	_, err = n.wait(ctx, p)
	return err
}

// AddReplica adds replica id at addr to group g as a voter (or promotes a
// non-voter). Start the replica on its host with Join.
func (e *Engine) AddReplica(ctx context.Context, g raftpb.GroupID, id raftpb.ReplicaID, addr string) error {
	return e.changeMembership(ctx, g, raftpb.ConfChangeSingle{Type: raftpb.AddVoter, Replica: id, Addr: addr})
}

// AddNonVoting adds replica id at addr as a non-voter (learner).
func (e *Engine) AddNonVoting(ctx context.Context, g raftpb.GroupID, id raftpb.ReplicaID, addr string) error {
	return e.changeMembership(ctx, g, raftpb.ConfChangeSingle{Type: raftpb.AddNonVoter, Replica: id, Addr: addr})
}

// RemoveReplica removes replica id from group g. Its ID is never reused.
func (e *Engine) RemoveReplica(ctx context.Context, g raftpb.GroupID, id raftpb.ReplicaID) error {
	return e.changeMembership(ctx, g, raftpb.ConfChangeSingle{Type: raftpb.RemoveReplica, Replica: id})
}

// TransferLeadership asks the leader of g to hand leadership to target
// and waits until target leads (or ctx ends).
func (e *Engine) TransferLeadership(ctx context.Context, g raftpb.GroupID, target raftpb.ReplicaID) error {
	n, err := e.node(g)
	if err != nil {
		return err
	}
	for {
		changed := n.leaderChanged()
		if raftpb.ReplicaID(n.leader.Load()) == target {
			return nil
		}
		n.do(func() { n.raft.TransferLeader(target) })
		select {
		case <-changed:
		case <-ctx.Done():
			return fmt.Errorf("%w: %w", ErrTimeout, ctx.Err())
		case <-n.stopped:
			return n.stoppedErr()
		}
	}
}

// Status is a replica's state for monitoring.
type Status struct {
	Group      raftpb.GroupID
	Replica    raftpb.ReplicaID
	Leader     raftpb.ReplicaID
	Term       uint64
	Commit     uint64
	Applied    uint64
	FirstIndex uint64
	LastIndex  uint64
	Snapshot   raftpb.SnapshotMeta // latest published (Files listed)
	Membership raftpb.Membership
	LogBytes   int64
	Transfers  []snapshot.Progress
	Failed     error
}

// GroupStatus returns group g's status on this host.
func (e *Engine) GroupStatus(g raftpb.GroupID) (Status, error) {
	n, err := e.node(g)
	if err != nil {
		return Status{}, err
	}
	st := Status{
		Group: g, Replica: n.replica,
		Leader:     raftpb.ReplicaID(n.leader.Load()),
		Term:       n.term.Load(),
		Commit:     n.commit.Load(),
		Applied:    n.applied.Load(),
		FirstIndex: n.firstIndex.Load(),
		LastIndex:  n.lastIndex.Load(),
		LogBytes:   n.glog.LogBytes(),
	}
	if m := n.membership.Load(); m != nil {
		st.Membership = m.Clone()
	}
	if m, ok := n.store.Latest(); ok {
		st.Snapshot = m
	}
	if p := n.failed.Load(); p != nil {
		st.Failed = *p
	}
	for _, t := range e.transfers.List() {
		if t.Group == g {
			st.Transfers = append(st.Transfers, t)
		}
	}
	return st, nil
}

// WaitLeader waits until group g has a known leader and returns it.
func (e *Engine) WaitLeader(ctx context.Context, g raftpb.GroupID) (raftpb.ReplicaID, error) {
	n, err := e.node(g)
	if err != nil {
		return 0, err
	}
	for {
		changed := n.leaderChanged()
		if l := raftpb.ReplicaID(n.leader.Load()); l != 0 {
			return l, nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return 0, fmt.Errorf("%w: %w", ErrTimeout, ctx.Err())
		case <-n.stopped:
			return 0, n.stoppedErr()
		}
	}
}

// CancelSnapshotTransfers cancels group g's snapshot transfers on this
// host: an install in progress stops (its partial data is kept for a
// resume; the leader offers the snapshot again later), and the snapshots
// this host serves to peer (0: to every peer) are released, so the
// receiver's next request fails and it reports the install failed.
func (e *Engine) CancelSnapshotTransfers(ctx context.Context, g raftpb.GroupID, peer raftpb.ReplicaID) error {
	n, err := e.node(g)
	if err != nil {
		return err
	}
	n.imu.Lock()
	for _, cancel := range n.installCancels {
		cancel()
	}
	n.imu.Unlock()
	return n.doWait(ctx, func() error {
		for id, s := range n.sending {
			if peer == 0 || id == peer {
				n.e.sender.Release(s.reader)
				delete(n.sending, id)
			}
		}
		return nil
	})
}
