package raft

import (
	"github.com/skiffdb/skiff/internal/raft/quorum"
	"github.com/skiffdb/skiff/raftpb"
)

// handleVoteRequest answers MsgVote and MsgPreVote in every role (the term
// checks in Step have already run).
func (r *Replica) handleVoteRequest(m *raftpb.Message) error {
	respType := raftpb.MsgVoteResp
	if m.Type == raftpb.MsgPreVote {
		respType = raftpb.MsgPreVoteResp
	}
	// We may vote for From if we already did in this term, if we have not
	// voted and know no leader, or — for a pre-vote — if it is for a later
	// term (a pre-vote binds nothing).
	canVote := r.vote == m.From ||
		(r.vote == raftpb.None && r.lead == raftpb.None) ||
		(m.Type == raftpb.MsgPreVote && m.Term > r.term)
	// Election restriction (Raft §5.4.1): only a candidate whose log is
	// at least as up to date as ours.
	if canVote && r.log.isUpToDate(m.Index, m.LogTerm) {
		// Respond with the request's term: for a pre-vote it is the term
		// the candidate will campaign in, not ours.
		r.send(raftpb.Message{To: m.From, Type: respType, Term: m.Term})
		if m.Type == raftpb.MsgVote {
			r.electionElapsed = 0
			r.vote = m.From
		}
		return nil
	}
	r.send(raftpb.Message{To: m.From, Type: respType, Term: r.term, Reject: true})
	return nil
}

// handleVoteResp counts a (pre-)vote response of the current round.
func (r *Replica) handleVoteResp(m *raftpb.Message) error {
	r.trk.RecordVote(m.From, !m.Reject)
	_, _, res := r.trk.TallyVotes()
	switch res {
	case quorum.VoteWon:
		if r.role == PreCandidate {
			r.campaign(campaignElection)
			return nil
		}
		r.becomeLeader()
	case quorum.VoteLost:
		// Back to follower in our (possibly raised) term; wait for a
		// leader or the next election timeout.
		r.becomeFollower(r.term, raftpb.None)
	}
	return nil
}

// handleCandidateLeaderMsg: a leader exists in our term; follow it.
func (r *Replica) handleCandidateLeaderMsg(m *raftpb.Message) error {
	r.becomeFollower(m.Term, m.From)
	return handlers[Follower][m.Type](r, m)
}

func (r *Replica) handleDropNoLeader(m *raftpb.Message) error {
	if m.Type == raftpb.MsgPropose {
		return ErrNoLeader
	}
	return nil
}

func (r *Replica) handleFollowerReplicate(m *raftpb.Message) error {
	r.electionElapsed = 0
	r.lead = m.From
	if m.Index < r.log.committed {
		// Everything up to committed matches; tell the leader.
		r.send(raftpb.Message{To: m.From, Type: raftpb.MsgReplicateResp, Index: r.log.committed})
		return nil
	}
	if lastNew, ok := r.log.maybeAppend(m.Index, m.LogTerm, m.Commit, m.Entries); ok {
		r.send(raftpb.Message{To: m.From, Type: raftpb.MsgReplicateResp, Index: lastNew})
		return nil
	}
	// Reject with a hint: the largest index <= min(m.Index, lastIndex)
	// whose term is <= m.LogTerm. The leader can resume probing there,
	// skipping every entry of a conflicting term in one round trip.
	hintIndex, hintTerm := r.log.findConflictByTerm(min(m.Index, r.log.lastIndex()), m.LogTerm)
	r.send(raftpb.Message{To: m.From, Type: raftpb.MsgReplicateResp, Index: m.Index,
		Reject: true, RejectHint: hintIndex, LogTerm: hintTerm})
	return nil
}

func (r *Replica) handleFollowerHeartbeat(m *raftpb.Message) error {
	r.electionElapsed = 0
	r.lead = m.From
	// The leader caps Commit at what we hold, so this never commits an
	// entry that may not match.
	r.log.commitTo(min(m.Commit, r.log.lastIndex()))
	// LogTerm echoes the leader's tick of the heartbeat (lease reads).
	resp := raftpb.Message{To: m.From, Type: raftpb.MsgHeartbeatResp, Context: m.Context, LogTerm: m.LogTerm}
	if r.installing != nil {
		// Tell the leader the snapshot is still being received, so it
		// keeps us in StateSnapshot.
		resp.Index = r.installing.Index
	}
	r.send(resp)
	return nil
}

func (r *Replica) handleFollowerTimeoutNow(m *raftpb.Message) error {
	if !r.promotable() {
		return nil
	}
	// Leadership transfer (thesis §3.10): campaign at once, without
	// pre-vote, and tell voters to ignore their leader lease.
	r.cfg.Logger.Info("raft: campaigning on MsgTimeoutNow", "group", r.group, "replica", r.id, "from", m.From)
	r.campaign(campaignTransfer)
	return nil
}

// handleFollowerForward forwards proposals, reads and transfer requests to
// the leader.
func (r *Replica) handleFollowerForward(m *raftpb.Message) error {
	if r.lead == raftpb.None {
		if m.Type == raftpb.MsgPropose {
			return ErrNoLeader
		}
		return nil
	}
	if m.Type == raftpb.MsgPropose && r.cfg.DisableProposalForwarding {
		return ErrForwardDisabled
	}
	fwd := *m
	fwd.To = r.lead
	fwd.Term = 0
	if fwd.Type == raftpb.MsgTransferLeader {
		fwd.Term = r.term
	}
	r.send(fwd)
	return nil
}

func (r *Replica) handleFollowerReadIndexResp(m *raftpb.Message) error {
	r.readStates = append(r.readStates, ReadState{Index: m.Index, RequestCtx: m.Context})
	return nil
}
