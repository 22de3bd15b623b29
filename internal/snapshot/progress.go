package snapshot

import (
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/skiffdb/skiff/raftpb"
)

// Direction says which end of a transfer a Progress describes.
type Direction uint8

const (
	// Sending: this host serves the snapshot to Peer.
	Sending Direction = iota
	// Receiving: this host pulls the snapshot from Peer.
	Receiving
)

func (d Direction) String() string {
	if d == Sending {
		return "send"
	}
	return "recv"
}

// Phase is where a transfer stands. Receiving goes Reserved → Meta →
// Verifying (resumed prefixes) → Copying → Committing → Done or Failed;
// sending stays in Copying until released.
type Phase uint8

const (
	PhaseReserved Phase = iota
	PhaseMeta
	PhaseVerifying
	PhaseCopying
	PhaseCommitting
	PhaseDone
	PhaseFailed
)

var phaseNames = [...]string{"reserved", "meta", "verifying", "copying", "committing", "done", "failed"}

func (p Phase) String() string {
	if int(p) < len(phaseNames) {
		return phaseNames[p]
	}
	return "unknown"
}

// Progress is a point-in-time view of one transfer (REQUIREMENTS §15).
type Progress struct {
	Direction Direction
	Group     raftpb.GroupID
	Peer      raftpb.ReplicaID
	Index     uint64
	Phase     Phase
	// BytesDone counts bytes of the snapshot this transfer has in place:
	// moved, resumed or linked. BytesTotal is the snapshot's size.
	BytesDone, BytesTotal int64
	// BytesMoved counts only the bytes this transfer moved over the source
	// (decoded size); BytesResumed were verified on disk from an earlier
	// attempt; BytesLinked were hard-linked from the local snapshot.
	BytesMoved, BytesResumed, BytesLinked int64
	// BytesPerSec is BytesMoved over the time since the transfer started.
	BytesPerSec float64
	Started     time.Time
	Err         error
}

// Transfers is a host's registry of transfers in flight, shared by its
// Senders and Receivers so that status endpoints list them all. Safe for
// concurrent use.
type Transfers struct {
	mu  sync.Mutex
	set map[*transferState]struct{}
	now func() time.Time
}

// NewTransfers returns an empty registry reading time from now (nil:
// time.Now).
func NewTransfers(now func() time.Time) *Transfers {
	if now == nil {
		now = time.Now
	}
	return &Transfers{set: make(map[*transferState]struct{}), now: now}
}

// List returns the progress of every registered transfer, ordered by
// group, peer and direction so that output is stable.
func (ts *Transfers) List() []Progress {
	ts.mu.Lock()
	states := make([]*transferState, 0, len(ts.set))
	for s := range ts.set {
		states = append(states, s)
	}
	ts.mu.Unlock()
	out := make([]Progress, len(states))
	for i, s := range states {
		out[i] = s.snapshot(ts.now())
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if a.Group != b.Group {
			return a.Group < b.Group
		}
		if a.Peer != b.Peer {
			return a.Peer < b.Peer
		}
		return a.Direction < b.Direction
	})
	return out
}

func (ts *Transfers) start(d Direction, g raftpb.GroupID, peer raftpb.ReplicaID, index uint64) *transferState {
	s := &transferState{dir: d, group: g, peer: peer, index: index, started: ts.now(), owner: ts}
	ts.mu.Lock()
	ts.set[s] = struct{}{}
	ts.mu.Unlock()
	return s
}

func (ts *Transfers) remove(s *transferState) {
	ts.mu.Lock()
	delete(ts.set, s)
	ts.mu.Unlock()
}

// transferState is one transfer's live counters. The copier's writer
// goroutine updates them; List reads them at any time, hence atomics.
type transferState struct {
	owner   *Transfers
	dir     Direction
	group   raftpb.GroupID // guarded by mu
	peer    raftpb.ReplicaID
	index   uint64 // guarded by mu
	started time.Time

	phase                         atomic.Uint32
	total, moved, resumed, linked atomic.Int64
	mu                            sync.Mutex
	err                           error // guarded by mu, like group and index
}

func (s *transferState) setPhase(p Phase) { s.phase.Store(uint32(p)) }

// identify records the group and index once the meta is known (a receiver
// may start before it knows them).
func (s *transferState) identify(g raftpb.GroupID, index uint64) {
	s.mu.Lock()
	s.group, s.index = g, index
	s.mu.Unlock()
}

func (s *transferState) fail(err error) {
	s.mu.Lock()
	s.err = err
	s.mu.Unlock()
	s.setPhase(PhaseFailed)
}

// finish drops the transfer from the registry.
func (s *transferState) finish() { s.owner.remove(s) }

func (s *transferState) snapshot(now time.Time) Progress {
	s.mu.Lock()
	err, group, index := s.err, s.group, s.index
	s.mu.Unlock()
	p := Progress{
		Direction:    s.dir,
		Group:        group,
		Peer:         s.peer,
		Index:        index,
		Phase:        Phase(s.phase.Load()),
		BytesTotal:   s.total.Load(),
		BytesMoved:   s.moved.Load(),
		BytesResumed: s.resumed.Load(),
		BytesLinked:  s.linked.Load(),
		Started:      s.started,
		Err:          err,
	}
	p.BytesDone = p.BytesMoved + p.BytesResumed + p.BytesLinked
	if el := now.Sub(s.started).Seconds(); el > 0 {
		p.BytesPerSec = float64(p.BytesMoved) / el
	}
	return p
}
