package engine

import (
	"sync"
	"sync/atomic"

	"github.com/skiffdb/skiff/raftpb"
	"github.com/skiffdb/skiff/statemachine"
)

// proposal is one waiting Propose (or config change, or session
// registration). It completes once, when its entry is applied on this
// host, when Raft rejects it, or when the group stops.
type proposal struct {
	key  uint64
	typ  raftpb.EntryType
	data []byte
	cc   *raftpb.ConfChange
	// abandoned: the caller stopped waiting; a parked proposal is then
	// not proposed again.
	abandoned atomic.Bool

	once   sync.Once
	done   chan struct{}
	result statemachine.Result
	err    error
}

func newProposal(key uint64) *proposal {
	return &proposal{key: key, done: make(chan struct{})}
}

func (p *proposal) complete(r statemachine.Result, err error) {
	p.once.Do(func() {
		p.result, p.err = r, err
		close(p.done)
	})
}

// readRequest is one waiting Read.
type readRequest struct {
	query []byte
	// abandoned: the caller stopped waiting.
	abandoned atomic.Bool

	once  sync.Once
	done  chan struct{}
	value []byte
	err   error
}

func (r *readRequest) complete(v []byte, err error) {
	r.once.Do(func() {
		r.value, r.err = v, err
		close(r.done)
	})
}

// readBatch is the reads that share one ReadIndex round.
type readBatch struct {
	reqs  []*readRequest
	tick  uint64 // when the ReadIndex was asked (step worker ticks)
	index uint64 // the confirmed read index
}

func (b *readBatch) fail(err error) {
	for _, r := range b.reqs {
		r.complete(nil, err)
	}
}

func (n *node) addPending(p *proposal) {
	n.pmu.Lock()
	n.pending[p.key] = p
	n.pmu.Unlock()
}

func (n *node) removePending(key uint64) *proposal {
	n.pmu.Lock()
	defer n.pmu.Unlock()
	p, ok := n.pending[key]
	if ok {
		delete(n.pending, key)
	}
	return p
}

// submitProposal queues p for the step worker.
func (n *node) submitProposal(p *proposal) bool {
	return n.mailbox(func() { n.props = append(n.props, p) })
}

// submitRead queues r for the step worker.
func (n *node) submitRead(r *readRequest) bool {
	return n.mailbox(func() { n.reads = append(n.reads, r) })
}

// leaderChanged returns a channel closed at the next leader change.
func (n *node) leaderChanged() <-chan struct{} {
	n.lmu.Lock()
	defer n.lmu.Unlock()
	if n.leaderCh == nil {
		n.leaderCh = make(chan struct{})
	}
	return n.leaderCh
}

func (n *node) notifyLeader() {
	n.lmu.Lock()
	if n.leaderCh != nil {
		close(n.leaderCh)
		n.leaderCh = nil
	}
	n.lmu.Unlock()
}
