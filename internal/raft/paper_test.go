package raft_test

import (
	"maps"
	"slices"
	"testing"

	"github.com/skiffdb/skiff/internal/raft"
	"github.com/skiffdb/skiff/internal/raft/rafttest"
	"github.com/skiffdb/skiff/raftpb"
)

// One test per claim of §5 of the Raft paper (Ongaro & Ousterhout, "In
// Search of an Understandable Consensus Algorithm", 2014), each citing the
// section and the sentence it checks. Replicas start from a snapshot at
// index 1 in term 1 holding the membership, so a first election is in term
// 2 and its no-op is entry 2.

const electionTicks = 10

// replica is one raft.Replica over its own MemoryLog, driven by hand.
type replica struct {
	*raft.Replica
	log *raft.MemoryLog
	// applied collects every committed entry handed out.
	applied []raftpb.Entry
}

// newReplica returns replica id of a group with the given voters whose log
// holds, after the bootstrap snapshot at 1/1, one entry per term in terms
// (at indexes 2, 3, ...), with the HardState hs (Commit defaults to 1).
func newReplica(t testing.TB, id raftpb.ReplicaID, voters []raftpb.ReplicaID, terms []uint64, hs raftpb.HardState, opts ...func(*raft.Config)) *replica {
	t.Helper()
	ml := raft.NewMemoryLog()
	var m raftpb.Membership
	for _, v := range voters {
		m.Voters = append(m.Voters, raftpb.Member{ID: v})
	}
	if err := ml.ApplySnapshot(raftpb.SnapshotMeta{Index: 1, Term: 1, Membership: m}); err != nil {
		t.Fatal(err)
	}
	var ents []raftpb.Entry
	for i, term := range terms {
		ents = append(ents, raftpb.Entry{Index: uint64(i + 2), Term: term, Data: []byte{byte(i)}})
	}
	if err := ml.Append(ents); err != nil {
		t.Fatal(err)
	}
	hs.Term = max(hs.Term, 1)
	hs.Commit = max(hs.Commit, 1)
	ml.SetHardState(hs)
	cfg := raft.Config{ID: id, Group: rafttest.Group, ElectionTicks: electionTicks, HeartbeatTicks: 1, Seed: uint64(id)}
	for _, o := range opts {
		o(&cfg)
	}
	r, err := raft.New(cfg, ml)
	if err != nil {
		t.Fatal(err)
	}
	return &replica{Replica: r, log: ml}
}

func ids(n int) []raftpb.ReplicaID {
	out := make([]raftpb.ReplicaID, n)
	for i := range out {
		out[i] = raftpb.ReplicaID(i + 1)
	}
	return out
}

// drain handles every Ready as a host would (persisting before sending
// MessagesAfterPersist) and returns the messages sent, in order.
func (r *replica) drain(t testing.TB) []raftpb.Message {
	t.Helper()
	var msgs []raftpb.Message
	for r.HasReady() {
		rd := r.Ready()
		msgs = append(msgs, rd.Messages...)
		if rd.Snapshot != nil {
			if err := r.log.ApplySnapshot(*rd.Snapshot); err != nil {
				t.Fatal(err)
			}
		}
		if err := r.log.Append(rd.Entries); err != nil {
			t.Fatal(err)
		}
		if !rd.HardState.IsEmpty() {
			r.log.SetHardState(rd.HardState)
		}
		msgs = append(msgs, rd.MessagesAfterPersist...)
		r.applied = append(r.applied, rd.CommittedEntries...)
		r.Advance(rd)
	}
	return msgs
}

func (r *replica) step(t testing.TB, m raftpb.Message) {
	t.Helper()
	m.Group = rafttest.Group
	if m.To == 0 {
		m.To = r.ID()
	}
	if err := r.Step(m); err != nil {
		t.Fatalf("step %s: %v", rafttest.DescribeMessage(m), err)
	}
}

func (r *replica) tick(n int) {
	for range n {
		r.Tick()
	}
}

func (r *replica) role() raft.Role { return r.Status().SoftState.Role }
func (r *replica) term() uint64    { return r.Status().HardState.Term }

func ofType(msgs []raftpb.Message, typ raftpb.MessageType) []raftpb.Message {
	var out []raftpb.Message
	for _, m := range msgs {
		if m.Type == typ {
			out = append(out, m)
		}
	}
	return out
}

// logTerms returns the terms of the durable log after the snapshot.
func (r *replica) logTerms(t testing.TB) []uint64 {
	t.Helper()
	first, _ := r.log.FirstIndex()
	last, _ := r.log.LastIndex()
	var out []uint64
	for i := first; i <= last; i++ {
		term, err := r.log.Term(i)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, term)
	}
	return out
}

// makeLeader elects replica 1 of a group of n in term 2 by feeding it the
// votes, and drains its first Ready (the no-op at 2/2).
func makeLeader(t testing.TB, n int, terms []uint64, opts ...func(*raft.Config)) *replica {
	t.Helper()
	r := newReplica(t, 1, ids(n), terms, raftpb.HardState{}, opts...)
	r.Campaign()
	r.drain(t)
	for id := 2; id <= n; id++ {
		r.step(t, raftpb.Message{From: raftpb.ReplicaID(id), Type: raftpb.MsgVoteResp, Term: r.term()})
	}
	if r.role() != raft.Leader {
		t.Fatalf("replica 1 is %s, want Leader", r.role())
	}
	return r
}

// TestPaperRejectStaleTerm checks §5.1: "If a server receives a request with
// a stale term number, it rejects the request." A vote request and an append
// from term 2 reach a replica in term 3: no vote is granted, nothing is
// appended, and the term stays 3.
func TestPaperRejectStaleTerm(t *testing.T) {
	r := newReplica(t, 2, ids(3), []uint64{2}, raftpb.HardState{Term: 3})
	r.step(t, raftpb.Message{From: 1, Type: raftpb.MsgVote, Term: 2, Index: 5, LogTerm: 2})
	r.step(t, raftpb.Message{From: 1, Type: raftpb.MsgReplicate, Term: 2, Index: 2, LogTerm: 2,
		Entries: []raftpb.Entry{{Index: 3, Term: 2}}, Commit: 3})
	for _, m := range r.drain(t) {
		if m.Type == raftpb.MsgVoteResp && !m.Reject {
			t.Errorf("granted a vote to a stale candidate: %s", rafttest.DescribeMessage(m))
		}
		if m.Type == raftpb.MsgReplicateResp && !m.Reject && m.Term <= 2 {
			t.Errorf("accepted a stale append: %s", rafttest.DescribeMessage(m))
		}
	}
	if got := r.logTerms(t); !slices.Equal(got, []uint64{2}) {
		t.Errorf("log terms = %v, want [2]", got)
	}
	if st := r.Status(); st.HardState.Term != 3 || st.HardState.Vote != 0 || st.HardState.Commit != 1 {
		t.Errorf("hard state = %+v, want term 3, no vote, commit 1", st.HardState)
	}
}

// TestPaperAdoptLargerTerm checks §5.1: "If one server's current term is
// smaller than the other's, then it updates its current term to the larger
// value. If a candidate or leader discovers that its term is out of date, it
// immediately reverts to follower state." Each role receives a heartbeat
// from term 9.
func TestPaperAdoptLargerTerm(t *testing.T) {
	for _, role := range []raft.Role{raft.Follower, raft.Candidate, raft.Leader} {
		t.Run(role.String(), func(t *testing.T) {
			var r *replica
			switch role {
			case raft.Follower:
				r = newReplica(t, 1, ids(3), nil, raftpb.HardState{Term: 2})
			case raft.Candidate:
				r = newReplica(t, 1, ids(3), nil, raftpb.HardState{Term: 2})
				r.Campaign()
			case raft.Leader:
				r = makeLeader(t, 3, nil)
			}
			r.drain(t)
			if r.role() != role {
				t.Fatalf("setup: role %s, want %s", r.role(), role)
			}
			r.step(t, raftpb.Message{From: 2, Type: raftpb.MsgHeartbeat, Term: 9})
			if r.term() != 9 || r.role() != raft.Follower || r.Status().SoftState.Lead != 2 {
				t.Errorf("after a term-9 heartbeat: term %d, %s, lead %d; want term 9, Follower, lead 2",
					r.term(), r.role(), r.Status().SoftState.Lead)
			}
		})
	}
}

// TestPaperFollowerStartsElection checks §5.2: "If a follower receives no
// communication over a period of time called the election timeout, then it
// ... begins an election ... A follower increments its current term and
// transitions to candidate state. It then votes for itself and issues
// RequestVote RPCs in parallel to each of the other servers."
func TestPaperFollowerStartsElection(t *testing.T) {
	r := newReplica(t, 1, ids(5), []uint64{1}, raftpb.HardState{})
	r.tick(2 * electionTicks)
	if r.role() != raft.Candidate || r.term() != 2 {
		t.Fatalf("after an election timeout: %s in term %d, want Candidate in term 2", r.role(), r.term())
	}
	msgs := r.drain(t)
	if hs := r.log.HardState(); hs.Vote != 1 || hs.Term != 2 {
		t.Errorf("durable vote = %d in term %d, want a vote for itself in term 2", hs.Vote, hs.Term)
	}
	var to []raftpb.ReplicaID
	for _, m := range ofType(msgs, raftpb.MsgVote) {
		if m.Term != 2 || m.Index != 2 || m.LogTerm != 1 {
			t.Errorf("bad vote request %s", rafttest.DescribeMessage(m))
		}
		to = append(to, m.To)
	}
	if !slices.Equal(to, []raftpb.ReplicaID{2, 3, 4, 5}) {
		t.Errorf("vote requests to %v, want [2 3 4 5]", to)
	}
}

// TestPaperLeaderHeartbeats checks §5.2: "Leaders send periodic heartbeats
// (AppendEntries RPCs that carry no log entries) to all followers in order
// to maintain their authority."
func TestPaperLeaderHeartbeats(t *testing.T) {
	r := makeLeader(t, 3, nil)
	r.drain(t)
	for round := 0; round < 3; round++ {
		r.Tick() // HeartbeatTicks is 1
		var to []raftpb.ReplicaID
		for _, m := range ofType(r.drain(t), raftpb.MsgHeartbeat) {
			if len(m.Entries) != 0 || m.Term != 2 {
				t.Errorf("bad heartbeat %s", rafttest.DescribeMessage(m))
			}
			to = append(to, m.To)
		}
		if !slices.Equal(to, []raftpb.ReplicaID{2, 3}) {
			t.Fatalf("round %d: heartbeats to %v, want [2 3]", round, to)
		}
	}
}

// TestPaperElectionOutcome checks §5.2: "A candidate wins an election if it
// receives votes from a majority of the servers in the full cluster for the
// same term", and otherwise either loses (a majority refused) or stays a
// candidate (no winner yet).
func TestPaperElectionOutcome(t *testing.T) {
	for _, tc := range []struct {
		size     int
		votes    map[raftpb.ReplicaID]bool // granted
		wantRole raft.Role
	}{
		{1, nil, raft.Leader},
		{3, map[raftpb.ReplicaID]bool{2: true}, raft.Leader},
		{3, map[raftpb.ReplicaID]bool{2: false}, raft.Candidate},
		{3, map[raftpb.ReplicaID]bool{2: false, 3: false}, raft.Follower},
		{5, map[raftpb.ReplicaID]bool{2: true, 3: true}, raft.Leader},
		{5, map[raftpb.ReplicaID]bool{2: true}, raft.Candidate},
		{5, map[raftpb.ReplicaID]bool{2: true, 3: false, 4: false, 5: false}, raft.Follower},
		{5, map[raftpb.ReplicaID]bool{2: false, 3: false}, raft.Candidate},
	} {
		r := newReplica(t, 1, ids(tc.size), nil, raftpb.HardState{})
		r.Campaign()
		r.drain(t) // persists the vote for itself, which then counts
		for _, id := range slices.Sorted(maps.Keys(tc.votes)) {
			r.step(t, raftpb.Message{From: id, Type: raftpb.MsgVoteResp, Term: 2, Reject: !tc.votes[id]})
		}
		if r.role() != tc.wantRole {
			t.Errorf("size %d, votes %v: %s, want %s", tc.size, tc.votes, r.role(), tc.wantRole)
		}
	}
}

// TestPaperOneVotePerTerm checks §5.2: "Each server will vote for at most
// one candidate in a given term, on a first-come-first-served basis", and
// that the vote survives a crash (it is persisted before it is sent).
func TestPaperOneVotePerTerm(t *testing.T) {
	r := newReplica(t, 1, ids(3), nil, raftpb.HardState{})
	r.step(t, raftpb.Message{From: 2, Type: raftpb.MsgVote, Term: 2, Index: 1, LogTerm: 1})
	msgs := ofType(r.drain(t), raftpb.MsgVoteResp)
	if len(msgs) != 1 || msgs[0].Reject || msgs[0].To != 2 {
		t.Fatalf("first request: %v, want a grant to 2", msgs)
	}
	// Crash and restart: the vote is durable.
	restarted, err := raft.New(raft.Config{ID: 1, Group: rafttest.Group, ElectionTicks: electionTicks, HeartbeatTicks: 1}, r.log)
	if err != nil {
		t.Fatal(err)
	}
	r.Replica = restarted
	r.step(t, raftpb.Message{From: 3, Type: raftpb.MsgVote, Term: 2, Index: 1, LogTerm: 1})
	r.step(t, raftpb.Message{From: 2, Type: raftpb.MsgVote, Term: 2, Index: 1, LogTerm: 1})
	msgs = ofType(r.drain(t), raftpb.MsgVoteResp)
	if len(msgs) != 2 || !msgs[0].Reject || msgs[0].To != 3 || msgs[1].Reject || msgs[1].To != 2 {
		t.Fatalf("after restart: %v, want a rejection for 3 and a repeated grant for 2", msgs)
	}
}

// TestPaperCandidateFollowsLeader checks §5.2: "If the leader's term ... is
// at least as large as the candidate's current term, then the candidate
// recognizes the leader as legitimate and returns to follower state."
func TestPaperCandidateFollowsLeader(t *testing.T) {
	r := newReplica(t, 1, ids(3), nil, raftpb.HardState{})
	r.Campaign()
	r.drain(t)
	r.step(t, raftpb.Message{From: 2, Type: raftpb.MsgReplicate, Term: 2, Index: 1, LogTerm: 1})
	if r.role() != raft.Follower || r.Status().SoftState.Lead != 2 || r.term() != 2 {
		t.Errorf("after an append from the term-2 leader: %s, lead %d, term %d; want Follower of 2 in term 2",
			r.role(), r.Status().SoftState.Lead, r.term())
	}
}

// TestPaperSplitVoteNewElection checks §5.2: "If many followers become
// candidates at the same time, votes could be split so that no candidate
// obtains a majority. When this happens, each candidate will time out and
// start a new election by incrementing its term."
func TestPaperSplitVoteNewElection(t *testing.T) {
	r := newReplica(t, 1, ids(3), nil, raftpb.HardState{})
	r.Campaign()
	r.drain(t)
	// 2 voted for itself and 3 for 2: one rejection, one silence.
	r.step(t, raftpb.Message{From: 2, Type: raftpb.MsgVoteResp, Term: 2, Reject: true})
	if r.role() != raft.Candidate {
		t.Fatalf("after a split vote: %s, want Candidate", r.role())
	}
	r.tick(2 * electionTicks)
	if r.role() != raft.Candidate || r.term() != 3 {
		t.Fatalf("after another timeout: %s in term %d, want Candidate in term 3", r.role(), r.term())
	}
	if n := len(ofType(r.drain(t), raftpb.MsgVote)); n != 2 {
		t.Errorf("new election sent %d vote requests, want 2", n)
	}
}

// TestPaperRandomizedElectionTimeout checks §5.2: "Raft uses randomized
// election timeouts ... chosen randomly from a fixed interval (e.g.,
// 150–300ms)": here [ElectionTicks, 2*ElectionTicks). Timeouts fall in that
// interval, and differ between replicas and between rounds.
func TestPaperRandomizedElectionTimeout(t *testing.T) {
	seen := map[int]bool{}
	for id := raftpb.ReplicaID(1); id <= 20; id++ {
		r := newReplica(t, id, ids(20), nil, raftpb.HardState{})
		for round := 0; round < 3; round++ {
			start := r.term()
			ticks := 0
			for r.term() == start {
				r.Tick()
				ticks++
				if ticks > 2*electionTicks {
					t.Fatalf("replica %d: no election after %d ticks", id, ticks)
				}
			}
			if ticks < electionTicks {
				t.Fatalf("replica %d campaigned after %d ticks, below the election timeout %d", id, ticks, electionTicks)
			}
			seen[ticks] = true
			r.drain(t)
		}
	}
	if len(seen) < electionTicks/2 {
		t.Errorf("only %d distinct timeouts in 60 elections: %v", len(seen), seen)
	}
}

// TestPaperLeaderAppendsAndReplicates checks §5.3: "The leader appends the
// command to its log as a new entry, then issues AppendEntries RPCs in
// parallel to each of the other servers" — in parallel with its own disk
// write (Ready.Messages, thesis §10.2.1), and without counting its own entry
// towards the commit until it is durable.
func TestPaperLeaderAppendsAndReplicates(t *testing.T) {
	r := makeLeader(t, 3, nil)
	r.drain(t)
	for id := raftpb.ReplicaID(2); id <= 3; id++ { // both hold the no-op
		r.step(t, raftpb.Message{From: id, Type: raftpb.MsgReplicateResp, Term: 2, Index: 2})
	}
	r.drain(t)
	if err := r.Propose(raftpb.Entry{Data: []byte("x")}); err != nil {
		t.Fatal(err)
	}
	rd := r.Ready()
	if len(rd.Entries) != 1 || rd.Entries[0].Index != 3 || rd.Entries[0].Term != 2 {
		t.Fatalf("entries to persist: %v, want 2/3", rd.Entries)
	}
	var to []raftpb.ReplicaID
	for _, m := range ofType(rd.Messages, raftpb.MsgReplicate) {
		if len(m.Entries) != 1 || m.Entries[0].Index != 3 || m.Index != 2 || m.LogTerm != 2 {
			t.Errorf("bad append %s", rafttest.DescribeMessage(m))
		}
		to = append(to, m.To)
	}
	if !slices.Equal(to, []raftpb.ReplicaID{2, 3}) {
		t.Errorf("appends sent before persisting to %v, want [2 3]", to)
	}
	// One follower's ack is a majority only with the leader's own copy,
	// which counts once durable.
	r.step(t, raftpb.Message{From: 2, Type: raftpb.MsgReplicateResp, Term: 2, Index: 3})
	if c := r.Status().HardState.Commit; c >= 3 {
		t.Errorf("committed %d before the leader's own entry was durable", c)
	}
	if err := r.log.Append(rd.Entries); err != nil {
		t.Fatal(err)
	}
	r.Advance(rd)
	if c := r.Status().HardState.Commit; c != 3 {
		t.Errorf("commit = %d after the leader's write and one ack, want 3", c)
	}
}

// TestPaperCommitOnMajority checks §5.3: "A log entry is committed once the
// leader that created the entry has replicated it on a majority of the
// servers", and the leader then applies it.
func TestPaperCommitOnMajority(t *testing.T) {
	for _, tc := range []struct {
		size, acks int
		want       bool
	}{
		{1, 0, true}, {3, 0, false}, {3, 1, true}, {5, 1, false}, {5, 2, true}, {7, 2, false}, {7, 3, true},
	} {
		r := makeLeader(t, tc.size, nil)
		r.drain(t)
		for id := 2; id <= 1+tc.acks; id++ {
			r.step(t, raftpb.Message{From: raftpb.ReplicaID(id), Type: raftpb.MsgReplicateResp, Term: 2, Index: 2})
		}
		r.drain(t)
		committed := r.Status().HardState.Commit == 2
		applied := slices.ContainsFunc(r.applied, func(e raftpb.Entry) bool { return e.Index == 2 })
		if committed != tc.want || applied != tc.want {
			t.Errorf("size %d, %d acks: committed %v applied %v, want %v", tc.size, tc.acks, committed, applied, tc.want)
		}
	}
}

// TestPaperFollowerAppends checks §5.3 (and Fig. 2, AppendEntries receiver
// rules 3–5): a follower whose log matches the leader's at prevLogIndex
// appends the new entries, replies with success, and sets its commit index
// to min(leaderCommit, index of last new entry), then applies.
func TestPaperFollowerAppends(t *testing.T) {
	r := newReplica(t, 2, ids(3), []uint64{2}, raftpb.HardState{Term: 2})
	r.step(t, raftpb.Message{From: 1, Type: raftpb.MsgReplicate, Term: 2, Index: 2, LogTerm: 2, Commit: 9,
		Entries: []raftpb.Entry{{Index: 3, Term: 2}, {Index: 4, Term: 2}}})
	msgs := ofType(r.drain(t), raftpb.MsgReplicateResp)
	if len(msgs) != 1 || msgs[0].Reject || msgs[0].Index != 4 {
		t.Fatalf("responses %v, want success at 4", msgs)
	}
	if got := r.logTerms(t); !slices.Equal(got, []uint64{2, 2, 2}) {
		t.Errorf("log terms = %v, want [2 2 2]", got)
	}
	if c := r.Status().HardState.Commit; c != 4 {
		t.Errorf("commit = %d, want min(9, 4) = 4", c)
	}
	if n := len(r.applied); n != 3 {
		t.Errorf("applied %d entries, want 3", n)
	}
}

// TestPaperConsistencyCheck checks §5.3: "If the follower does not find an
// entry in its log with the same index and term, then it refuses the new
// entries." Both a missing entry and a term mismatch are refused, and
// nothing is appended.
func TestPaperConsistencyCheck(t *testing.T) {
	for _, tc := range []struct {
		name             string
		prevIndex, prevT uint64
	}{
		{"missing", 5, 2},
		{"term mismatch", 3, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newReplica(t, 2, ids(3), []uint64{2, 2}, raftpb.HardState{Term: 3})
			r.step(t, raftpb.Message{From: 1, Type: raftpb.MsgReplicate, Term: 3, Index: tc.prevIndex,
				LogTerm: tc.prevT, Entries: []raftpb.Entry{{Index: tc.prevIndex + 1, Term: 3}}, Commit: 3})
			msgs := ofType(r.drain(t), raftpb.MsgReplicateResp)
			if len(msgs) != 1 || !msgs[0].Reject || msgs[0].Index != tc.prevIndex {
				t.Fatalf("responses %v, want a rejection of %d", msgs, tc.prevIndex)
			}
			if got := r.logTerms(t); !slices.Equal(got, []uint64{2, 2}) {
				t.Errorf("log terms = %v, want [2 2] unchanged", got)
			}
			if c := r.Status().HardState.Commit; c != 1 {
				t.Errorf("commit = %d, want 1", c)
			}
		})
	}
}

// TestPaperLeaderOverwritesConflicts checks §5.3: "the leader handles
// inconsistencies by forcing the followers' logs to duplicate its own. This
// means that conflicting entries in follower logs will be overwritten with
// entries from the leader's log." It uses the follower logs (a)–(f) of the
// paper's Figure 7 (terms shifted by one, the bootstrap entry first) against
// the leader's log of that figure.
func TestPaperLeaderOverwritesConflicts(t *testing.T) {
	leaderLog := []uint64{2, 2, 2, 5, 5, 6, 6, 7, 7, 7}
	for i, follower := range [][]uint64{
		{2, 2, 2, 5, 5, 6, 6, 7, 7},          // (a) missing an entry
		{2, 2, 2, 5},                         // (b) missing many
		{2, 2, 2, 5, 5, 6, 6, 7, 7, 7, 7},    // (c) an extra uncommitted entry
		{2, 2, 2, 5, 5, 6, 6, 7, 7, 7, 8, 8}, // (d) extra entries of a later term
		{2, 2, 2, 5, 5, 5, 5},                // (e) conflicting term-5 entries
		{2, 2, 2, 3, 3, 3, 4, 4, 4, 4, 4},    // (f) conflicting terms 3 and 4
	} {
		// Replica 1 leads term 9 with the (silent) vote of replica 3;
		// replica 2 holds the follower log.
		leader := newReplica(t, 1, ids(3), leaderLog, raftpb.HardState{Term: 8})
		fol := newReplica(t, 2, ids(3), follower, raftpb.HardState{Term: 8})
		leader.Campaign()
		leader.drain(t)
		leader.step(t, raftpb.Message{From: 3, Type: raftpb.MsgVoteResp, Term: 9})
		if leader.role() != raft.Leader {
			t.Fatalf("setup: replica 1 is %s", leader.role())
		}
		net := map[raftpb.ReplicaID]*replica{1: leader, 2: fol}
		for round := 0; round < 50; round++ {
			moved := false
			for _, id := range []raftpb.ReplicaID{1, 2} {
				for _, m := range net[id].drain(t) {
					if to := net[m.To]; to != nil {
						moved = true
						to.step(t, m)
					}
				}
			}
			if !moved {
				break
			}
		}
		want := append(slices.Clone(leaderLog), 9) // and the new leader's no-op
		if got := fol.logTerms(t); !slices.Equal(got, want) {
			t.Errorf("follower (%c): log terms %v, want the leader's %v", 'a'+i, got, want)
		}
	}
}

// TestPaperElectionRestriction checks §5.4.1: "the voter denies its vote if
// its own log is more up-to-date than that of the candidate ... If the logs
// have last entries with different terms, then the log with the later term
// is more up-to-date. If the logs end with the same term, then whichever log
// is longer is more up-to-date." The voter's log ends at 3/3.
func TestPaperElectionRestriction(t *testing.T) {
	for _, tc := range []struct {
		lastTerm, lastIndex uint64
		grant               bool
	}{
		{2, 3, false}, {2, 9, false}, // earlier last term loses whatever the length
		{3, 2, false}, // same term, shorter
		{3, 3, true},  // same term, as long
		{3, 4, true},  // same term, longer
		{4, 2, true},  // later term wins even if shorter
	} {
		r := newReplica(t, 1, ids(3), []uint64{2, 3}, raftpb.HardState{Term: 3})
		r.step(t, raftpb.Message{From: 2, Type: raftpb.MsgVote, Term: 4, Index: tc.lastIndex, LogTerm: tc.lastTerm})
		msgs := ofType(r.drain(t), raftpb.MsgVoteResp)
		if len(msgs) != 1 || msgs[0].Reject == tc.grant {
			t.Errorf("candidate log ending %d/%d: %v, want grant=%v", tc.lastTerm, tc.lastIndex, msgs, tc.grant)
		}
	}
}

// TestPaperNoCommitOfPreviousTermByCounting checks §5.4.2: "Raft never
// commits log entries from previous terms by counting replicas. Only log
// entries from the leader's current term are committed by counting
// replicas; once an entry from the current term has been committed in this
// way, then all prior entries are committed indirectly."
func TestPaperNoCommitOfPreviousTermByCounting(t *testing.T) {
	// Replica 1 holds 2/2 (uncommitted) from an earlier term and leads
	// term 3 of five replicas; its no-op is 3/3.
	r := newReplica(t, 1, ids(5), []uint64{2}, raftpb.HardState{Term: 2})
	r.Campaign()
	r.drain(t)
	for id := raftpb.ReplicaID(2); id <= 3; id++ {
		r.step(t, raftpb.Message{From: id, Type: raftpb.MsgVoteResp, Term: 3})
	}
	r.drain(t)
	// A majority (1, 2, 3) holds 2/2: still not committed.
	for id := raftpb.ReplicaID(2); id <= 3; id++ {
		r.step(t, raftpb.Message{From: id, Type: raftpb.MsgReplicateResp, Term: 3, Index: 2})
	}
	r.drain(t)
	if c := r.Status().HardState.Commit; c != 1 {
		t.Fatalf("commit = %d with a majority holding only the term-2 entry, want 1", c)
	}
	// Once the term-3 no-op is on a majority, both commit.
	for id := raftpb.ReplicaID(2); id <= 3; id++ {
		r.step(t, raftpb.Message{From: id, Type: raftpb.MsgReplicateResp, Term: 3, Index: 3})
	}
	r.drain(t)
	if c := r.Status().HardState.Commit; c != 3 {
		t.Fatalf("commit = %d with a majority holding 3/3, want 3", c)
	}
}

// TestPaperFollowerCrashRetried checks §5.5: "If a follower or candidate
// crashes, then future RequestVote and AppendEntries RPCs sent to it will
// fail. Raft handles these failures by retrying them indefinitely; if the
// crashed server restarts, then the RPC will complete successfully." And:
// "Raft RPCs are idempotent": a repeated append changes nothing.
func TestPaperFollowerCrashRetried(t *testing.T) {
	env := rafttest.New()
	if err := env.AddNodes(3, rafttest.NodeOptions{Voters: ids(3)}); err != nil {
		t.Fatal(err)
	}
	env.Node(1).Campaign()
	if err := env.Stabilize(); err != nil {
		t.Fatal(err)
	}
	// 3 crashes: everything sent to it is lost while it is down.
	env.Partition([][]raftpb.ReplicaID{{1, 2}})
	for _, d := range []string{"a", "b"} {
		if err := env.Node(1).Propose(raftpb.Entry{Data: []byte(d)}); err != nil {
			t.Fatal(err)
		}
	}
	for range 5 {
		env.Node(1).Tick()
		if err := env.Stabilize(); err != nil {
			t.Fatal(err)
		}
	}
	if err := env.Restart(3); err != nil {
		t.Fatal(err)
	}
	env.Partition(nil)
	// The leader keeps trying (heartbeats, then appends) until 3 has it all.
	for range 5 {
		env.Node(1).Tick()
		if err := env.Stabilize(); err != nil {
			t.Fatal(err)
		}
	}
	if st := env.Node(3).Status(); st.HardState.Commit != 4 || st.LastIndex != 4 {
		t.Fatalf("restarted follower: commit %d last %d, want 4 and 4", st.HardState.Commit, st.LastIndex)
	}
	// Idempotence: the same append again leaves the log as it is.
	ents, err := env.Node(3).Log.Entries(3, 5, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	n3 := env.Node(3)
	before := len(n3.Applied)
	if err := n3.Step(raftpb.Message{Type: raftpb.MsgReplicate, Group: rafttest.Group, From: 1, To: 3,
		Term: 2, Index: 2, LogTerm: 2, Commit: 4, Entries: ents}); err != nil {
		t.Fatal(err)
	}
	if _, err := env.ProcessReady(3); err != nil {
		t.Fatal(err)
	}
	if st := n3.Status(); st.LastIndex != 4 || len(n3.Applied) != before {
		t.Errorf("after a repeated append: last %d, applied %d more; want 4 and none", st.LastIndex, len(n3.Applied)-before)
	}
}

// TestPaperCandidateCrashRetried checks §5.5 for a candidate: its vote
// requests to a crashed voter are lost, and it retries them (in a new term)
// on its next election timeout until a majority answers.
func TestPaperCandidateCrashRetried(t *testing.T) {
	env := rafttest.New()
	if err := env.AddNodes(3, rafttest.NodeOptions{Voters: ids(3)}); err != nil {
		t.Fatal(err)
	}
	env.Partition([][]raftpb.ReplicaID{{1}, {2}, {3}})
	env.Node(1).Campaign()
	if err := env.Stabilize(); err != nil {
		t.Fatal(err)
	}
	if env.Leader() != 0 {
		t.Fatal("a leader was elected with every vote request lost")
	}
	env.Partition(nil)
	for range 2 * electionTicks {
		env.Node(1).Tick()
	}
	if err := env.Stabilize(); err != nil {
		t.Fatal(err)
	}
	if env.Leader() != 1 {
		t.Fatalf("leader = %d after the retried election, want 1", env.Leader())
	}
}
