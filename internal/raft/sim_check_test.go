package raft

import (
	"fmt"
	"slices"

	"github.com/skiffdb/skiff/raftpb"
)

// simChecker holds the simulation's global view of history and checks the
// Raft safety properties against it after every step:
//
//   - election safety: at most one leader per term, ever;
//   - log matching: in every durable log, an entry (index, term) has the
//     same content and the same previous term everywhere, which by
//     induction makes equal (index, term) imply equal prefixes;
//   - leader completeness: a new leader of term T holds (or covers with its
//     snapshot) every applied entry that was committed in a term < T;
//   - state machine safety: every replica applies the same entry at an
//     index, in order, so applied sequences are prefixes of one history
//     (snapshots carry the hash of that prefix);
//   - ReadIndex: an answer is at least every index applied anywhere before
//     the read started;
//   - local sanity: applied <= committed <= last index, a durable HardState
//     never loses its term, vote or commit, entries are applied only once
//     durable.
type simChecker struct {
	c       *simCluster
	leaders map[uint64]raftpb.ReplicaID // term -> leader
	// hist[i] is the entry applied at index i, by whoever applied it first;
	// hist[0] is the empty root and hist[1] the bootstrap snapshot.
	hist []histEntry
	// reg[{index, term}] is what every durable log holds at that position.
	reg map[[2]uint64]logRec
	// reads[ctx] is the highest applied index when the read started.
	reads map[string]uint64
	// memberships[ConfigChangeIndex] is the fingerprint of the membership
	// that config change produced.
	memberships map[uint64]string
	finalIndex  uint64 // index of the calm phase's probe entry, once applied
}

type histEntry struct {
	term uint64
	typ  raftpb.EntryType
	data uint64 // hash of Data
	sm   uint64 // state machine hash after applying this entry
	// bound >= the term in which the entry was committed: the smallest
	// term any replica was in when applying it (a replica learns a commit
	// index only from a leader of its term or earlier).
	bound uint64
}

type logRec struct {
	typ      raftpb.EntryType
	data     uint64
	prevTerm uint64
}

const finalData = "calm-probe"

func newSimChecker(c *simCluster) *simChecker {
	return &simChecker{
		c:           c,
		leaders:     map[uint64]raftpb.ReplicaID{},
		hist:        []histEntry{{}},
		reg:         map[[2]uint64]logRec{},
		reads:       map[string]uint64{},
		memberships: map[uint64]string{},
	}
}

// fnv64 hashes b (FNV-1a).
func fnv64(b []byte) uint64 {
	h := uint64(14695981039346656037)
	for _, c := range b {
		h ^= uint64(c)
		h *= 1099511628211
	}
	return h
}

func mix(h uint64, vs ...uint64) uint64 {
	for _, v := range vs {
		h ^= v + 0x9E3779B97F4A7C15 + h<<6 + h>>2
		h *= 0xBF58476D1CE4E5B9
	}
	return h
}

// bootstrap records the initial snapshot at index 1 and returns its data.
func (k *simChecker) bootstrap(meta raftpb.SnapshotMeta) uint64 {
	h := mix(0, meta.Index, meta.Term)
	k.hist = append(k.hist, histEntry{term: meta.Term, typ: raftpb.EntryNoOp, sm: h, bound: meta.Term})
	k.memberships[0] = membershipFingerprint(meta.Membership)
	return h
}

func (k *simChecker) snapshotOK(who string, n *simNode, meta raftpb.SnapshotMeta, sm smState) {
	if sm.index != meta.Index {
		k.c.fail("replica %d: %s snapshot %d holds state machine data of index %d", n.id, who, meta.Index, sm.index)
		return
	}
	if meta.Index >= uint64(len(k.hist)) {
		k.c.fail("replica %d: %s snapshot %d beyond anything applied (%d)", n.id, who, meta.Index, len(k.hist)-1)
		return
	}
	if h := k.hist[meta.Index]; meta.Index > 0 && (h.term != meta.Term || h.sm != sm.hash) {
		k.c.fail("state machine safety: replica %d: %s snapshot %d/%d differs from the applied history (term %d)",
			n.id, who, meta.Index, meta.Term, h.term)
		return
	}
	k.membership(n, meta.Membership)
}

// membership checks that every replica derives the same membership from a
// given config change, and never one from beyond its applied index.
func (k *simChecker) membership(n *simNode, m raftpb.Membership) {
	fp := membershipFingerprint(m)
	if prev, ok := k.memberships[m.ConfigChangeIndex]; ok && prev != fp {
		k.c.fail("replica %d: membership of config change %d is %s, elsewhere %s", n.id, m.ConfigChangeIndex, fp, prev)
		return
	}
	k.memberships[m.ConfigChangeIndex] = fp
}

func membershipFingerprint(m raftpb.Membership) string {
	s := "v"
	for _, x := range m.Voters {
		s += fmt.Sprintf(" %d", x.ID)
	}
	if len(m.VotersOutgoing) > 0 {
		s += " o"
		for _, x := range m.VotersOutgoing {
			s += fmt.Sprintf(" %d", x.ID)
		}
	}
	if len(m.NonVoters) > 0 {
		s += " n"
		for _, x := range m.NonVoters {
			s += fmt.Sprintf(" %d", x.ID)
		}
	}
	if m.AutoLeave {
		s += " auto"
	}
	return s
}

// restored: n restarted from its durable snapshot.
func (k *simChecker) restored(n *simNode, meta raftpb.SnapshotMeta, sm smState) {
	if meta.Index == 0 {
		return // a new replica, still empty
	}
	k.snapshotOK("restart from", n, meta, sm)
}

// installed: n's Ready.Snapshot was persisted.
func (k *simChecker) installed(n *simNode, meta raftpb.SnapshotMeta, sm smState) {
	k.snapshotOK("installed", n, meta, sm)
}

// fetched: n received snapshot data from the leader.
func (k *simChecker) fetched(n *simNode, meta raftpb.SnapshotMeta, sm smState) {
	k.snapshotOK("fetched", n, meta, sm)
}

// created: n took a snapshot of its state machine.
func (k *simChecker) created(n *simNode, meta raftpb.SnapshotMeta) {
	k.snapshotOK("created", n, meta, n.sm)
}

// appended: n persisted ents. Log matching, checked per entry: (index,
// term) determines the content and the previous entry's term.
func (k *simChecker) appended(n *simNode, ents []raftpb.Entry) {
	for i := range ents {
		e := &ents[i]
		if i > 0 && e.Index != ents[i-1].Index+1 {
			k.c.fail("replica %d: Ready.Entries not contiguous at %d", n.id, e.Index)
			return
		}
		prev, err := n.log.Term(e.Index - 1)
		if err != nil {
			continue // behind the snapshot
		}
		k.register(n, e, prev)
	}
}

func (k *simChecker) register(n *simNode, e *raftpb.Entry, prevTerm uint64) {
	key := [2]uint64{e.Index, e.Term}
	rec := logRec{typ: e.Type, data: fnv64(e.Data), prevTerm: prevTerm}
	if old, ok := k.reg[key]; ok {
		if old != rec {
			k.c.fail("log matching: replica %d holds entry %d/%d as %+v, another log as %+v", n.id, e.Index, e.Term, rec, old)
		}
		return
	}
	k.reg[key] = rec
}

// hardState: n persisted hs over n.hs.
func (k *simChecker) hardState(n *simNode, hs raftpb.HardState) {
	old := n.hs
	switch {
	case hs.Term < old.Term:
		k.c.fail("replica %d: durable term went back from %d to %d", n.id, old.Term, hs.Term)
	case hs.Term == old.Term && old.Vote != raftpb.None && hs.Vote != old.Vote:
		k.c.fail("replica %d: changed its durable vote in term %d from %d to %d", n.id, hs.Term, old.Vote, hs.Vote)
	case hs.Commit < old.Commit:
		k.c.fail("replica %d: durable commit went back from %d to %d", n.id, old.Commit, hs.Commit)
	}
}

// apply: n's state machine applies e.
func (k *simChecker) apply(n *simNode, e *raftpb.Entry) {
	if e.Index != n.sm.index+1 {
		k.c.fail("replica %d: applies entry %d after %d", n.id, e.Index, n.sm.index)
		return
	}
	if t, err := n.log.Term(e.Index); err != nil || t != e.Term {
		k.c.fail("replica %d: applies entry %d/%d that is not durable (log term %d, %v)", n.id, e.Index, e.Term, t, err)
		return
	}
	dh := fnv64(e.Data)
	sm := mix(n.sm.hash, e.Term, uint64(e.Type), dh)
	term := n.r.term
	switch {
	case e.Index < uint64(len(k.hist)):
		h := &k.hist[e.Index]
		if h.term != e.Term || h.typ != e.Type || h.data != dh || h.sm != sm {
			k.c.fail("state machine safety: replica %d applies %d/%d %s %q; history has %d/%d %s",
				n.id, e.Index, e.Term, e.Type, e.Data, e.Index, h.term, h.typ)
			return
		}
		h.bound = min(h.bound, term)
	default:
		k.hist = append(k.hist, histEntry{term: e.Term, typ: e.Type, data: dh, sm: sm, bound: term})
		if k.finalIndex == 0 && string(e.Data) == finalData {
			k.finalIndex = e.Index
		}
		// A leader of a later term than the commit must hold it now.
		for _, id := range k.c.ids {
			if m := k.c.nodes[id]; m.up() && m.r.role == Leader && m.r.term > term {
				k.holds(m, e.Index, "applied elsewhere")
			}
		}
	}
	n.sm = smState{index: e.Index, hash: sm}
	k.c.stats.applied++
}

// holds checks that leader n's log has hist[i] or covers it by its snapshot.
func (k *simChecker) holds(n *simNode, i uint64, why string) {
	if i < n.r.log.firstIndex() {
		return // covered by the snapshot, whose content is checked
	}
	t, err := n.r.log.term(i)
	if err != nil || t != k.hist[i].term {
		k.c.fail("leader completeness: leader %d of term %d lacks entry %d/%d (%s; has term %d, %v)",
			n.id, n.r.term, i, k.hist[i].term, why, t, err)
	}
}

// readStarted records a ReadIndex request.
func (k *simChecker) readStarted(ctx string) { k.reads[ctx] = uint64(len(k.hist) - 1) }

// readStates checks ReadIndex answers: none may be below a write applied
// (so acknowledged) anywhere before the read started.
func (k *simChecker) readStates(n *simNode, rss []ReadState) {
	for _, rs := range rss {
		want, ok := k.reads[string(rs.RequestCtx)]
		if !ok {
			continue // answered already (a duplicate)
		}
		delete(k.reads, string(rs.RequestCtx))
		k.c.stats.readsServed++
		if rs.Index < want {
			k.c.fail("linearizability: read %s on replica %d got index %d, but %d was applied before it started",
				rs.RequestCtx, n.id, rs.Index, want)
		}
	}
}

// afterStep runs the per-step checks over every live replica.
func (k *simChecker) afterStep() {
	for _, id := range k.c.ids {
		n := k.c.nodes[id]
		if !n.up() {
			continue
		}
		r := n.r
		if last := r.log.lastIndex(); r.log.applied > r.log.committed || r.log.committed > last {
			k.c.fail("replica %d: applied %d, committed %d, last %d out of order", id, r.log.applied, r.log.committed, last)
			return
		}
		if r.role != Leader {
			continue
		}
		lead, ok := k.leaders[r.term]
		if ok && lead != id {
			k.c.fail("election safety: replicas %d and %d both lead term %d", lead, id, r.term)
			return
		}
		if !ok {
			k.leaders[r.term] = id
			k.c.stats.elections++
			k.newLeader(n)
			k.c.leaderElected(n)
		}
	}
}

// newLeader checks leader completeness for n, just elected.
func (k *simChecker) newLeader(n *simNode) {
	if k.c.trace.on {
		k.c.trace.add(k.c.now, n.id, "leader", fmt.Sprintf("term=%d last=%d", n.r.term, n.r.log.lastIndex()))
	}
	for i := max(n.r.log.firstIndex(), 2); i < uint64(len(k.hist)); i++ {
		if k.hist[i].bound < n.r.term {
			k.holds(n, i, "committed in an earlier term")
		}
	}
}

// final sweeps every durable log against the registry once more.
func (k *simChecker) final() {
	for _, id := range k.c.ids {
		n := k.c.nodes[id]
		first, _ := n.log.FirstIndex()
		last, _ := n.log.LastIndex()
		if first > last {
			continue
		}
		ents, err := n.log.Entries(first, last+1, 1<<62)
		if err != nil {
			k.c.fail("replica %d: read log: %v", id, err)
			return
		}
		prev, _ := n.log.Term(first - 1)
		for i := range ents {
			key := [2]uint64{ents[i].Index, ents[i].Term}
			rec := logRec{typ: ents[i].Type, data: fnv64(ents[i].Data), prevTerm: prev}
			if old, ok := k.reg[key]; !ok || old != rec {
				k.c.fail("log matching: replica %d's durable entry %d/%d was never registered or differs", id, key[0], key[1])
				return
			}
			prev = ents[i].Term
		}
	}
	// Live members agree on the state machine.
	var ref *simNode
	for _, id := range k.c.ids {
		n := k.c.nodes[id]
		if !n.up() || !slices.Contains(k.c.members, id) {
			continue
		}
		if ref != nil && n.sm != ref.sm {
			k.c.fail("replicas %d and %d converged to different states %+v and %+v", ref.id, id, ref.sm, n.sm)
			return
		}
		ref = n
	}
}
