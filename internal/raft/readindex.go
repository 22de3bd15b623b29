package raft

import (
	"github.com/skiffdb/skiff/internal/raft/quorum"
	"github.com/skiffdb/skiff/raftpb"
)

// ReadState is the answer to a ReadIndex request: once the local state
// machine has applied Index, a read that started when RequestCtx was
// submitted is linearizable (Raft thesis §6.4).
type ReadState struct {
	Index      uint64
	RequestCtx []byte
}

// readOnly tracks ReadIndex requests waiting for a heartbeat quorum.
type readOnly struct {
	pending map[string]*readIndexStatus
	queue   []string // request contexts in arrival order
}

type readIndexStatus struct {
	req   raftpb.Message
	index uint64
	acks  map[raftpb.ReplicaID]bool
}

func (ro *readOnly) init() { ro.pending = map[string]*readIndexStatus{} }

func (ro *readOnly) reset() {
	clear(ro.pending)
	ro.queue = ro.queue[:0]
}

func (ro *readOnly) lastPendingContext() []byte {
	if len(ro.queue) == 0 {
		return nil
	}
	return []byte(ro.queue[len(ro.queue)-1])
}

// ReadIndex requests a read index for ctx, which must be unique among
// outstanding requests. The answer arrives as a ReadState in a later Ready,
// or never (no leader, leadership lost): the caller times out and retries.
func (r *Replica) ReadIndex(ctx []byte) {
	_ = r.Step(raftpb.Message{Type: raftpb.MsgReadIndex, Group: r.group, From: r.id, Context: ctx})
}

// committedEntryInCurrentTerm reports whether the leader has committed an
// entry of its term, and so knows the latest commit index (§6.4 step 1).
func (r *Replica) committedEntryInCurrentTerm() bool {
	return r.log.termOrZero(r.log.committed) == r.term
}

func (r *Replica) handleLeaderReadIndex(m *raftpb.Message) error {
	if r.trk.IsSingleton() {
		r.respondReadIndex(*m, r.log.committed)
		return nil
	}
	if !r.committedEntryInCurrentTerm() {
		r.pendingReadIndex = append(r.pendingReadIndex, *m)
		return nil
	}
	r.serveReadIndex(*m)
	return nil
}

func (r *Replica) serveReadIndex(m raftpb.Message) {
	switch {
	case r.cfg.ReadOnly == ReadOnlyLeaseBased && !r.leaseRevoked && r.leaseValid():
		// A quorum has heard from us recently enough that none of its
		// members will vote for another candidate yet (leader
		// stickiness), so no other leader can exist: our commit index
		// is current.
		r.respondReadIndex(m, r.log.committed)
	default:
		key := string(m.Context)
		if _, dup := r.readOnly.pending[key]; dup {
			return
		}
		r.readOnly.pending[key] = &readIndexStatus{req: m, index: r.log.committed,
			acks: map[raftpb.ReplicaID]bool{r.id: true}}
		r.readOnly.queue = append(r.readOnly.queue, key)
		r.bcastHeartbeat()
	}
}

// leaseValid reports whether our leader lease holds now. A follower ignores
// vote requests for ElectionTicks of its ticks after hearing from us; we
// know it heard from us no earlier than the tick echoed in its latest
// heartbeat response. The lease holds while a quorum's such tick is recent:
// ticks - quorumTick < ElectionTicks - leaseMarginTicks. The margin covers
// the phase difference between our tick and the follower's (one tick) and
// clock drift between hosts (one more). Without an acknowledged heartbeat in
// this term there is no lease and reads confirm leadership by heartbeat.
func (r *Replica) leaseValid() bool {
	const leaseMarginTicks = 2
	quorumTick := r.trk.Voters.CommittedIndex(func(id raftpb.ReplicaID) (uint64, bool) {
		if id == r.id {
			return r.ticks, true
		}
		if pr := r.trk.Progress(id); pr != nil {
			return pr.LeaseTick, true
		}
		return 0, false
	})
	return quorumTick > 0 && r.ticks+leaseMarginTicks < quorumTick+uint64(r.cfg.ElectionTicks)
}

// releasePendingReadIndex serves reads that waited for the first commit of
// this term.
func (r *Replica) releasePendingReadIndex() {
	if len(r.pendingReadIndex) == 0 || !r.committedEntryInCurrentTerm() {
		return
	}
	pending := r.pendingReadIndex
	r.pendingReadIndex = nil
	for _, m := range pending {
		r.serveReadIndex(m)
	}
}

// handleReadIndexAck counts a heartbeat response echoing a request context;
// once a quorum confirms our leadership, that request and every earlier one
// are answered.
func (r *Replica) handleReadIndexAck(m *raftpb.Message) {
	st, ok := r.readOnly.pending[string(m.Context)]
	if !ok {
		return
	}
	st.acks[m.From] = true
	res := r.trk.Voters.VoteResult(func(id raftpb.ReplicaID) (bool, bool) {
		v, ok := st.acks[id]
		return v, ok
	})
	if res != quorum.VoteWon {
		return
	}
	var i int
	for i < len(r.readOnly.queue) {
		key := r.readOnly.queue[i]
		i++
		rs := r.readOnly.pending[key]
		delete(r.readOnly.pending, key)
		r.respondReadIndex(rs.req, rs.index)
		if key == string(m.Context) {
			break
		}
	}
	r.readOnly.queue = append(r.readOnly.queue[:0], r.readOnly.queue[i:]...)
}

func (r *Replica) respondReadIndex(req raftpb.Message, index uint64) {
	if req.From == r.id || req.From == raftpb.None {
		r.readStates = append(r.readStates, ReadState{Index: index, RequestCtx: req.Context})
		return
	}
	r.send(raftpb.Message{To: req.From, Type: raftpb.MsgReadIndexResp, Index: index, Context: req.Context})
}
