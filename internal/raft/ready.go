package raft

import (
	"github.com/skiffdb/skiff/internal/raft/tracker"
	"github.com/skiffdb/skiff/raftpb"
)

// SoftState is volatile state worth reporting: who leads and our role.
type SoftState struct {
	Lead raftpb.ReplicaID
	Role Role
}

func (r *Replica) softState() SoftState { return SoftState{Lead: r.lead, Role: r.role} }

// Ready is the work the core hands to its driver. Slices are owned by the
// driver after Ready returns; entry Data may alias proposals.
type Ready struct {
	// SoftState is set when the leader or our role changed.
	SoftState *SoftState
	// HardState is set (non-zero) when it changed and must be persisted.
	HardState raftpb.HardState
	// Entries must be persisted (appending, overwriting any suffix at the
	// first entry's index) before MessagesAfterPersist are sent.
	Entries []raftpb.Entry
	// Snapshot, if set, is an installed snapshot: the driver discards the
	// whole log, records the snapshot as the log's base, and restores the
	// state machine from it before applying CommittedEntries.
	Snapshot *raftpb.SnapshotMeta
	// CommittedEntries are to be applied, in order, once Entries are
	// durable. They may include entries of this Ready's Entries.
	CommittedEntries []raftpb.Entry
	// Messages may be sent at once, before or while persisting (thesis
	// §10.2.1: the leader writes its log in parallel with replicating).
	Messages []raftpb.Message
	// MessagesAfterPersist may only be sent after HardState, Entries and
	// Snapshot are durable: they promise durable state (votes, appends).
	MessagesAfterPersist []raftpb.Message
	// ReadStates answer ReadIndex requests.
	ReadStates []ReadState
	// Fetch asks the driver to fetch a snapshot from the leader.
	Fetch *SnapshotFetch
	// MustSync: HardState's term or vote or Entries changed, so the write
	// must be fsynced before MessagesAfterPersist go out.
	MustSync bool

	// selfMsgs are stepped in Advance, once durable (our own vote).
	selfMsgs []raftpb.Message
}

// HasReady reports whether Ready would return any work.
func (r *Replica) HasReady() bool {
	return r.pendingBcast || len(r.msgs) > 0 || len(r.msgsAfterPersist) > 0 ||
		len(r.selfMsgs) > 0 || len(r.readStates) > 0 || r.fetch != nil ||
		len(r.log.unstable.entries) > 0 || r.log.unstable.snapshot != nil ||
		r.log.hasNextCommittedEnts() || r.hardState() != r.prevHardState ||
		r.softState() != r.prevSoftState
}

// Ready collects the work accumulated since the last Advance. Every Ready
// must be followed by Advance before the next Ready.
func (r *Replica) Ready() Ready {
	if r.readyOut {
		panic("raft: Ready called twice without Advance")
	}
	r.readyOut = true
	r.flushAppends()
	rd := Ready{
		Entries:              capped(r.log.unstable.entries),
		Snapshot:             r.log.unstable.snapshot,
		CommittedEntries:     r.log.nextCommittedEnts(),
		Messages:             r.msgs,
		MessagesAfterPersist: r.msgsAfterPersist,
		ReadStates:           r.readStates,
		Fetch:                r.fetch,
		selfMsgs:             r.selfMsgs,
	}
	if n := len(rd.CommittedEntries); n > 0 {
		r.log.applying = rd.CommittedEntries[n-1].Index
	}
	r.msgs, r.msgsAfterPersist, r.selfMsgs, r.readStates, r.fetch = nil, nil, nil, nil, nil
	if hs := r.hardState(); hs != r.prevHardState {
		rd.HardState = hs
		rd.MustSync = hs.Term != r.prevHardState.Term || hs.Vote != r.prevHardState.Vote
		r.prevHardState = hs
	}
	if ss := r.softState(); ss != r.prevSoftState {
		// NB: only this copy escapes; taking &ss would allocate on
		// every Ready, changed or not.
		changed := ss
		rd.SoftState = &changed
		r.prevSoftState = ss
	}
	rd.MustSync = rd.MustSync || len(rd.Entries) > 0 || rd.Snapshot != nil
	return rd
}

// Advance acknowledges that rd was handled: its HardState, Entries and
// Snapshot are durable, and its CommittedEntries were handed to the state
// machine.
func (r *Replica) Advance(rd Ready) {
	r.readyOut = false
	if rd.Snapshot != nil {
		r.log.stableSnapTo(rd.Snapshot.Index)
	}
	if n := len(rd.Entries); n > 0 {
		last := rd.Entries[n-1]
		r.log.stableTo(last.Index, last.Term)
		if r.role == Leader {
			// The leader counts its own entries only once durable, so a
			// crash cannot lose an entry the quorum was counted with.
			if pr := r.trk.Progress(r.id); pr != nil && pr.MaybeUpdate(min(last.Index, r.log.unstable.offset-1)) {
				r.maybeCommit()
			}
		}
	}
	if n := len(rd.CommittedEntries); n > 0 {
		for i := range rd.CommittedEntries {
			if rd.CommittedEntries[i].Type == raftpb.EntryConfigChange {
				r.applyConfChange(&rd.CommittedEntries[i])
			}
		}
		r.log.appliedTo(rd.CommittedEntries[n-1].Index)
	}
	if r.log.applying > r.log.applied {
		// Entries taken with TakeCommitted meanwhile, after rd's.
		r.log.appliedTo(r.log.applying)
	}
	for _, m := range rd.selfMsgs {
		_ = r.Step(m)
	}
	r.maybeAutoLeave()
}

// TakeCommitted hands out, for applying now, the committed entries that
// are durable (below the unstable log) and were not handed out yet, up to
// the first config change (whose effect on the membership only Advance
// applies). It is for the time a Ready is being persisted: acknowledgements
// stepped meanwhile may commit entries an earlier Ready made durable, and
// they need not wait for the next Ready. They follow the outstanding
// Ready's CommittedEntries, so the driver may call it only once it has
// handed all of those to the state machine already (they were all durable
// when it took the Ready, and none was a config change); otherwise it
// waits for Advance. The next Ready does not hand them out again, and
// Advance counts them as applied.
func (r *Replica) TakeCommitted() []raftpb.Entry {
	l := r.log
	if l.unstable.snapshot != nil {
		return nil
	}
	lo := l.handedOut() + 1
	hi := min(l.committed, l.unstable.offset-1)
	if hi < lo {
		return nil
	}
	ents, err := l.slice(lo, hi+1, l.maxApplyBytes)
	mustOK(err)
	for i := range ents {
		if ents[i].Type == raftpb.EntryConfigChange {
			ents = ents[:i]
			break
		}
	}
	if len(ents) == 0 {
		return nil
	}
	l.applying = ents[len(ents)-1].Index
	return capped(ents)
}

// Status is a snapshot of a replica's state, for monitoring and tests.
type Status struct {
	ID             raftpb.ReplicaID
	Group          raftpb.GroupID
	HardState      raftpb.HardState
	SoftState      SoftState
	Applied        uint64
	FirstIndex     uint64
	LastIndex      uint64
	LeadTransferee raftpb.ReplicaID
	Membership     raftpb.Membership
	// Installing is the index of the snapshot being fetched, 0 if none.
	Installing uint64
	// Progress is set on the leader only.
	Progress map[raftpb.ReplicaID]tracker.Progress
}

// BasicStatus is the part of Status that costs no allocation: what a
// driver publishes after every Ready. Status also clones the membership
// and, on a leader, every follower's progress.
type BasicStatus struct {
	HardState  raftpb.HardState
	SoftState  SoftState
	Applied    uint64
	FirstIndex uint64
	LastIndex  uint64
}

// BasicStatus returns the current basic status.
func (r *Replica) BasicStatus() BasicStatus {
	return BasicStatus{
		HardState:  r.hardState(),
		SoftState:  r.softState(),
		Applied:    r.log.applied,
		FirstIndex: r.log.firstIndex(),
		LastIndex:  r.log.lastIndex(),
	}
}

// Status returns the current status.
func (r *Replica) Status() Status {
	b := r.BasicStatus()
	s := Status{
		ID:             r.id,
		Group:          r.group,
		HardState:      b.HardState,
		SoftState:      b.SoftState,
		Applied:        b.Applied,
		FirstIndex:     b.FirstIndex,
		LastIndex:      b.LastIndex,
		LeadTransferee: r.leadTransferee,
		Membership:     r.membership.Clone(),
	}
	if r.installing != nil {
		s.Installing = r.installing.Index
	}
	if r.role == Leader {
		s.Progress = map[raftpb.ReplicaID]tracker.Progress{}
		r.trk.Visit(func(id raftpb.ReplicaID, pr *tracker.Progress) {
			c := *pr
			c.Inflights = pr.Inflights.Clone()
			s.Progress[id] = c
		})
	}
	return s
}

// ID returns the replica's ID.
func (r *Replica) ID() raftpb.ReplicaID { return r.id }

// Membership returns the membership in effect.
func (r *Replica) Membership() raftpb.Membership { return r.membership.Clone() }

// capped returns s with its capacity cut to its length, so that a caller
// appending to it can never write into the core's backing array.
func capped[T any](s []T) []T { return s[:len(s):len(s)] }
