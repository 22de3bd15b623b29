package raft

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/skiffdb/skiff/raftpb"
)

// Review of the pipelined Ready/Advance contract (Step, Propose and
// TakeCommitted between Ready and Advance). This driver mirrors the
// engine's step worker: messages that may go before persisting leave at
// Ready; the durable prefix of the committed entries is applied before the
// persist (engine applyDurable); while a Ready is "being persisted" any
// message may be stepped into the replica and TakeCommitted is called when
// the engine would call it (all of the outstanding Ready's committed
// entries already applied); a commit-only HardState is not written (the
// engine's unsyncedHS); the state machine is durable (an on-disk one) and
// survives crashes, which lose everything not persisted.
//
// Invariants checked at every step:
//   - an entry reaches the state machine only when it is committed and in
//     the replica's durable log with the same term (claim 1);
//   - entries reach each state machine exactly once, in index order, and
//     all replicas apply the same entry at an index (claim 4);
//   - a granted vote leaves only once the HardState holding it is durable,
//     an append ack only once the acknowledged index is durable (claim 3);
//   - when a leader's commit index moves to c, a quorum of durable logs
//     hold the leader's entry at c (claim 2: the leader's own undurable
//     copy was not counted);
//   - at most one leader per term, also across crashes (durable votes).

type rpNode struct {
	r  *Replica
	ml *MemoryLog
	// out is the Ready being persisted, if any.
	out     *Ready
	early   int
	applied []raftpb.Entry // durable state machine: survives crashes
	// unsynced mirrors the engine's unsyncedHS.
	unsynced   raftpb.HardState
	lastCommit uint64
	// fetch is a snapshot offer being "fetched".
	fetch *SnapshotFetch
}

type rpSim struct {
	t       *testing.T
	rng     *rand.Rand
	cfg     func(id raftpb.ReplicaID) Config
	nodes   map[raftpb.ReplicaID]*rpNode
	ids     []raftpb.ReplicaID
	net     []raftpb.Message
	leaders map[uint64]raftpb.ReplicaID
	props   int
	taken   int // entries applied by TakeCommitted
	// reads maps a ReadIndex request to the highest index applied on any
	// replica when it was asked: the answer may not be below it.
	reads     map[string]uint64
	readsDone int
	ccs       int // config changes applied
	// snapEnts are the entries a snapshot at an index holds (the state
	// machine it restores).
	snapEnts  map[uint64][]raftpb.Entry
	installed int
}

func (s *rpSim) fatalf(format string, args ...any) {
	s.t.Helper()
	s.t.Fatalf(format, args...)
}

func (s *rpSim) newReplica(id raftpb.ReplicaID) {
	n := s.nodes[id]
	cfg := s.cfg(id)
	if k := len(n.applied); k > 0 {
		last, _ := n.ml.LastIndex()
		applied := n.applied[k-1].Index
		if applied > last {
			s.fatalf("replica %d restarts with its state machine at %d ahead of its durable log (last %d)", id, applied, last)
		}
		cfg.Applied = applied
	}
	r, err := New(cfg, n.ml)
	if err != nil {
		s.fatalf("restart %d: %v", id, err)
	}
	n.r, n.out, n.early, n.unsynced = r, nil, 0, raftpb.HardState{}
	n.lastCommit = r.BasicStatus().HardState.Commit
}

// apply hands ents to id's state machine, checking claims 1 and 4.
func (s *rpSim) apply(id raftpb.ReplicaID, ents []raftpb.Entry, what string) {
	s.t.Helper()
	n := s.nodes[id]
	commit := n.r.log.committed
	for _, e := range ents {
		next := uint64(1)
		if k := len(n.applied); k > 0 {
			next = n.applied[k-1].Index + 1
		}
		if e.Index < next && len(n.applied) > 0 {
			// Handed out again after a restart below the durable state
			// machine: the state machine skips it (rsm does); it must be
			// the same entry.
			if got := n.applied[e.Index-n.applied[0].Index]; got.Term != e.Term {
				s.fatalf("%s: replica %d re-handed entry %d term %d, applied term %d", what, id, e.Index, e.Term, got.Term)
			}
			continue
		}
		if e.Index != next {
			s.fatalf("%s: replica %d applies entry %d, next is %d (skip or repeat)", what, id, e.Index, next)
		}
		if e.Index > commit {
			s.fatalf("%s: replica %d applies entry %d above its commit %d", what, id, e.Index, commit)
		}
		if t, err := n.ml.Term(e.Index); err != nil || t != e.Term {
			s.fatalf("%s: replica %d applies entry %d term %d, durable log has term %d (err %v): not durable here", what, id, e.Index, e.Term, t, err)
		}
		for _, oid := range s.ids {
			o := s.nodes[oid]
			if len(o.applied) == 0 || e.Index < o.applied[0].Index || e.Index > o.applied[len(o.applied)-1].Index {
				continue
			}
			oe := o.applied[e.Index-o.applied[0].Index]
			if oe.Term != e.Term || string(oe.Data) != string(e.Data) {
				s.fatalf("%s: replicas %d and %d applied different entries at %d", what, id, oid, e.Index)
			}
		}
		if e.Type == raftpb.EntryConfigChange {
			s.ccs++
		}
		n.applied = append(n.applied, e)
	}
}

// checkLeader checks election safety and claim 2 after an input to id.
func (s *rpSim) checkLeader(id raftpb.ReplicaID) {
	s.t.Helper()
	n := s.nodes[id]
	r := n.r
	if r.role == Leader {
		if l, ok := s.leaders[r.term]; ok && l != id {
			s.fatalf("two leaders in term %d: %d and %d", r.term, l, id)
		}
		s.leaders[r.term] = id
	}
	c := r.log.committed
	if r.role == Leader && c > n.lastCommit {
		t, err := r.log.term(c)
		if err != nil {
			s.fatalf("leader %d: term of its commit %d: %v", id, c, err)
		}
		holders := 0
		for _, oid := range s.ids {
			ml := s.nodes[oid].ml
			if first, _ := ml.FirstIndex(); c < first {
				holders++ // in its durable snapshot
			} else if ot, err := ml.Term(c); err == nil && ot == t {
				holders++
			}
		}
		if holders < len(s.ids)/2+1 {
			s.fatalf("leader %d committed %d (term %d) held durably by only %d of %d replicas", id, c, t, holders, len(s.ids))
		}
	}
	n.lastCommit = c
}

func (s *rpSim) send(from raftpb.ReplicaID, msgs []raftpb.Message, afterPersist bool) {
	s.t.Helper()
	n := s.nodes[from]
	for _, m := range msgs {
		switch {
		case m.Type == raftpb.MsgVoteResp && !m.Reject:
			hs := n.ml.HardState()
			if hs.Term < m.Term || (hs.Term == m.Term && hs.Vote != m.To) {
				s.fatalf("replica %d grants its vote to %d in term %d with durable HardState %+v (afterPersist=%v)", from, m.To, m.Term, hs, afterPersist)
			}
		case m.Type == raftpb.MsgReplicateResp && !m.Reject:
			if last, _ := n.ml.LastIndex(); last < m.Index {
				s.fatalf("replica %d acks %d with durable last index %d (afterPersist=%v)", from, m.Index, last, afterPersist)
			}
		}
		s.net = append(s.net, m)
	}
}

func (s *rpSim) ready(id raftpb.ReplicaID) {
	n := s.nodes[id]
	rd := n.r.Ready()
	n.out = &rd
	s.send(id, rd.Messages, false)
	if rd.Fetch != nil {
		f := *rd.Fetch
		n.fetch = &f
	}
	for _, rs := range rd.ReadStates {
		want, ok := s.reads[string(rs.RequestCtx)]
		if !ok {
			s.fatalf("replica %d: read state for unknown request %q", id, rs.RequestCtx)
		}
		if rs.Index < want {
			s.fatalf("replica %d: read %q answered at index %d, but %d was applied before it was asked", id, rs.RequestCtx, rs.Index, want)
		}
		s.readsDone++
	}
	// Engine applyDurable.
	ents := rd.CommittedEntries
	n.early = 0
	if len(ents) > 0 && rd.Snapshot == nil {
		k := len(ents)
		if len(rd.Entries) > 0 {
			k = 0
			for k < len(ents) && ents[k].Index < rd.Entries[0].Index {
				k++
			}
		}
		cc := false
		for i := range ents[:k] {
			cc = cc || ents[i].Type == raftpb.EntryConfigChange
		}
		if k > 0 && !cc {
			n.early = k
			s.apply(id, ents[:k], "early")
		}
	}
}

func (s *rpSim) persist(id raftpb.ReplicaID) {
	n := s.nodes[id]
	rd := *n.out
	if rd.Snapshot != nil {
		if err := n.ml.ApplySnapshot(*rd.Snapshot); err != nil {
			s.fatalf("apply snapshot: %v", err)
		}
		// The state machine is restored from it (durably, with the log).
		src, ok := s.snapEnts[rd.Snapshot.Index]
		if !ok {
			s.fatalf("replica %d installs unknown snapshot %d", id, rd.Snapshot.Index)
		}
		if k := len(n.applied); k > 0 && n.applied[k-1].Index >= rd.Snapshot.Index {
			s.fatalf("replica %d installs snapshot %d with its state machine at %d", id, rd.Snapshot.Index, n.applied[k-1].Index)
		}
		n.applied = append([]raftpb.Entry(nil), src...)
		s.installed++
	}
	if err := n.ml.Append(rd.Entries); err != nil {
		s.fatalf("replica %d append %v: %v", id, rd.Entries, err)
	}
	hs := rd.HardState
	switch {
	case !hs.IsEmpty() && !rd.MustSync && len(rd.Entries) == 0:
		n.unsynced = hs
	case hs.IsEmpty() && len(rd.Entries) > 0 && !n.unsynced.IsEmpty():
		n.ml.SetHardState(n.unsynced)
		n.unsynced = raftpb.HardState{}
	case !hs.IsEmpty():
		n.ml.SetHardState(hs)
		n.unsynced = raftpb.HardState{}
	}
	s.send(id, rd.MessagesAfterPersist, true)
	n.r.Advance(rd)
	n.out = nil
	s.apply(id, rd.CommittedEntries[n.early:], "after persist")
	s.checkLeader(id)
}

func (s *rpSim) deliver() {
	i := s.rng.IntN(len(s.net))
	m := s.net[i]
	s.net = append(s.net[:i], s.net[i+1:]...)
	if s.rng.IntN(20) == 0 {
		return // lost
	}
	if s.rng.IntN(20) == 0 {
		s.net = append(s.net, m) // duplicated
	}
	n := s.nodes[m.To]
	if n == nil {
		return // a non-voter added by a config change that never runs
	}
	_ = n.r.Step(m)
	if n.out != nil && n.early == len(n.out.CommittedEntries) {
		if ents := n.r.TakeCommitted(); len(ents) > 0 {
			s.taken += len(ents)
			s.apply(m.To, ents, "TakeCommitted")
		}
	}
	s.checkLeader(m.To)
}

func (s *rpSim) step() {
	id := s.ids[s.rng.IntN(len(s.ids))]
	n := s.nodes[id]
	switch k := s.rng.IntN(100); {
	case k < 45 && len(s.net) > 0:
		s.deliver()
	case k < 60:
		if n.out == nil {
			if n.r.HasReady() {
				s.ready(id)
			}
		} else {
			s.persist(id)
		}
	case k < 72:
		if n.out == nil {
			n.r.Tick()
			s.checkLeader(id)
		}
	case k < 85:
		// Propose is allowed between Ready and Advance.
		s.props++
		_ = n.r.Propose(raftpb.Entry{Data: []byte(fmt.Sprintf("p%d", s.props))})
		s.checkLeader(id)
	case k < 87:
		s.newReplica(id) // crash: the outstanding Ready is lost
	case k < 91:
		if n.out == nil { // ReadIndex waits for Advance
			ctx := fmt.Sprintf("r%d", len(s.reads))
			var hi uint64
			for _, o := range s.nodes {
				if k := len(o.applied); k > 0 {
					hi = max(hi, o.applied[k-1].Index)
				}
			}
			s.reads[ctx] = hi
			n.r.ReadIndex([]byte(ctx))
		}
	case k < 95:
		if n.out != nil {
			break
		}
		if n.fetch != nil && s.rng.IntN(2) == 0 {
			f := n.fetch
			n.fetch = nil
			if s.rng.IntN(5) == 0 {
				n.r.InstallFailed(f.Meta)
			} else {
				_ = n.r.InstallSnapshot(f.Meta)
			}
			s.checkLeader(id)
			break
		}
		// Snapshot at the applied index, and compact behind it.
		k := len(n.applied)
		if k == 0 {
			break
		}
		a := n.applied[k-1].Index
		if a <= n.ml.SnapshotMeta().Index {
			break
		}
		meta, err := n.ml.CreateSnapshot(a, n.r.Membership())
		if err != nil {
			s.fatalf("replica %d snapshot at %d: %v", id, a, err)
		}
		s.snapEnts[meta.Index] = append([]raftpb.Entry(nil), n.applied...)
		if c := a - uint64(s.rng.IntN(3)); c > 0 {
			_ = n.ml.Compact(c)
		}
	case k < 97:
		// Config changes, also proposed between Ready and Advance: a
		// non-voter that never answers, added and removed, sometimes
		// through a joint configuration left automatically.
		var cc raftpb.ConfChange
		switch s.rng.IntN(3) {
		case 0:
			cc.Changes = []raftpb.ConfChangeSingle{{Type: raftpb.AddNonVoter, Replica: 4}}
		case 1:
			cc.Changes = []raftpb.ConfChangeSingle{{Type: raftpb.RemoveReplica, Replica: 4}}
		default:
			cc.Transition = raftpb.TransitionJointImplicit
			cc.Changes = []raftpb.ConfChangeSingle{{Type: raftpb.AddNonVoter, Replica: 5}, {Type: raftpb.RemoveReplica, Replica: 5}}
			if s.rng.IntN(2) == 0 {
				cc.Changes = cc.Changes[:1]
			}
		}
		_ = n.r.ProposeConfigChange(cc)
		s.checkLeader(id)
	}
}

func runPipelineSim(t *testing.T, seed uint64, steps int) *rpSim {
	s := &rpSim{t: t, rng: rand.New(rand.NewPCG(seed, seed^0x5eed)), nodes: map[raftpb.ReplicaID]*rpNode{},
		leaders: map[uint64]raftpb.ReplicaID{}, reads: map[string]uint64{}, snapEnts: map[uint64][]raftpb.Entry{}}
	preVote := seed%2 == 0
	var members []raftpb.Member
	for i := 1; i <= 3; i++ {
		members = append(members, raftpb.Member{ID: raftpb.ReplicaID(i)})
	}
	s.cfg = func(id raftpb.ReplicaID) Config {
		return Config{ID: id, Group: 1, ElectionTicks: 5, HeartbeatTicks: 1, PreVote: preVote,
			CheckQuorum: preVote, MaxMsgBytes: 64, Seed: seed*7 + uint64(id)}
	}
	for i := 1; i <= 3; i++ {
		id := raftpb.ReplicaID(i)
		ml := NewMemoryLog()
		ml.snap.Membership = raftpb.Membership{Voters: members}
		s.nodes[id] = &rpNode{ml: ml}
		s.ids = append(s.ids, id)
		s.newReplica(id)
	}
	for range steps {
		s.step()
	}
	return s
}

func TestReviewPipelineSim(t *testing.T) {
	seeds := uint64(300)
	if testing.Short() {
		seeds = 50
	}
	taken, applied, reads, ccs, installed := 0, 0, 0, 0, 0
	for seed := uint64(1); seed <= seeds; seed++ {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			s := runPipelineSim(t, seed, 3000)
			taken += s.taken
			reads += s.readsDone
			ccs += s.ccs
			installed += s.installed
			for _, n := range s.nodes {
				applied += len(n.applied)
			}
		})
	}
	// The driver must exercise what it reviews.
	if taken == 0 || applied < int(seeds)*10 || reads == 0 || ccs == 0 || installed == 0 {
		t.Fatalf("the simulation applied %d entries, %d by TakeCommitted: it exercises nothing", applied, taken)
	}
	t.Logf("%d seeds: %d entries applied, %d of them by TakeCommitted; %d config changes applied; %d reads answered; %d snapshots installed", seeds, applied, taken, ccs, reads, installed)
}
