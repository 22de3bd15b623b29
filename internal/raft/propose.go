package raft

import (
	"fmt"

	"github.com/skiffdb/skiff/internal/raft/confchange"
	"github.com/skiffdb/skiff/raftpb"
)

// Propose proposes entries for the log. Their Type and Data are used; Term
// and Index are assigned by the leader. On a follower they are forwarded to
// the leader. Data is retained (not copied) and must not be modified after.
//
// A nil error means the proposal was appended or forwarded, not that it
// will commit: the caller learns that from the committed entries, and
// times out otherwise. Errors wrap ErrProposalDropped and say why.
func (r *Replica) Propose(ents ...raftpb.Entry) error {
	if len(ents) == 0 {
		return nil
	}
	return r.Step(raftpb.Message{Type: raftpb.MsgPropose, Group: r.group, From: r.id, Entries: ents})
}

// ProposeConfigChange proposes a membership change. Only one may be pending
// at a time; a change that is invalid for the current membership is refused
// here with a confchange error.
func (r *Replica) ProposeConfigChange(cc raftpb.ConfChange) error {
	return r.Propose(raftpb.Entry{Type: raftpb.EntryConfigChange, Data: cc.Marshal()})
}

func (r *Replica) handleLeaderPropose(m *raftpb.Message) error {
	if r.trk.Progress(r.id) == nil {
		// We were removed from the group and must not grow the log.
		return ErrNotMember
	}
	if r.leadTransferee != raftpb.None {
		return ErrLeaderTransfer
	}
	confChanges := 0
	for i := range m.Entries {
		if m.Entries[i].Type != raftpb.EntryConfigChange {
			continue
		}
		// One pending change at a time holds within a batch too: the
		// second change would be pending behind the first.
		if confChanges++; confChanges > 1 {
			return ErrConfChangePending
		}
		if err := r.checkConfChangeProposal(&m.Entries[i]); err != nil {
			return err
		}
	}
	first := r.appendEntries(m.Entries)
	for i := range m.Entries {
		if m.Entries[i].Type == raftpb.EntryConfigChange {
			r.pendingConfIndex = first + uint64(i)
		}
	}
	return nil
}

// checkConfChangeProposal refuses a config change while another is not yet
// applied, and one that is invalid for the membership in effect.
func (r *Replica) checkConfChangeProposal(e *raftpb.Entry) error {
	if r.pendingConfIndex > r.log.applied {
		return ErrConfChangePending
	}
	var cc raftpb.ConfChange
	if err := cc.Unmarshal(e.Data); err != nil {
		return fmt.Errorf("raft: config change: %w", err)
	}
	if _, err := confchange.Apply(r.membership, cc, 0); err != nil {
		return err
	}
	return nil
}

// nextMembership returns the membership after the config-change entry e.
// An entry that does not decode or is invalid leaves the membership as it
// is: every replica reaches the same verdict, so the entry is a no-op.
func (r *Replica) nextMembership(e *raftpb.Entry) (raftpb.Membership, error) {
	var cc raftpb.ConfChange
	if err := cc.Unmarshal(e.Data); err != nil {
		return r.membership, err
	}
	return confchange.Apply(r.membership, cc, e.Index)
}

// applyConfChange makes the config-change entry e take effect; called when
// it is handed out for applying (so the membership in effect is always the
// last snapshot's plus the applied config changes).
func (r *Replica) applyConfChange(e *raftpb.Entry) {
	next, err := r.nextMembership(e)
	if err != nil {
		r.cfg.Logger.Warn("raft: config change ignored", "group", r.group, "index", e.Index, "err", err)
		return
	}
	r.membership = next
	r.installMembershipInTracker()
	if r.role != Leader {
		return
	}
	if !r.trk.Voters.Contains(r.id) {
		r.stepDownRemovedLeader()
		return
	}
	if r.leadTransferee != raftpb.None && !r.trk.Voters.Contains(r.leadTransferee) {
		r.abortLeaderTransfer()
	}
	// The quorum changed: the commit index may move, and new replicas
	// must be probed.
	r.maybeCommit()
	r.pendingBcast = true
}

// installMembershipInTracker derives the tracker's config from membership.
func (r *Replica) installMembershipInTracker() {
	cfg := confchange.TrackerConfig(r.membership)
	r.trk.SetConfig(cfg, confchange.Progress(r.trk, cfg, r.log.lastIndex()))
}

// stepDownRemovedLeader hands leadership to the most up-to-date voter and
// steps down (thesis §4.2.2: a removed leader steps down once the change is
// committed).
func (r *Replica) stepDownRemovedLeader() {
	var best raftpb.ReplicaID
	var bestMatch uint64
	for _, id := range r.trk.Voters.IDs() {
		if pr := r.trk.Progress(id); pr != nil && pr.Match >= bestMatch {
			best, bestMatch = id, pr.Match
		}
	}
	if best != raftpb.None && bestMatch == r.log.lastIndex() {
		r.sendTimeoutNow(best)
	}
	r.becomeFollower(r.term, raftpb.None)
}

// maybeAutoLeave proposes leaving a joint configuration entered with
// AutoLeave, once it is applied.
func (r *Replica) maybeAutoLeave() {
	if r.role != Leader || !r.membership.IsJoint() || !r.membership.AutoLeave ||
		r.pendingConfIndex > r.log.applied || r.leadTransferee != raftpb.None {
		return
	}
	if err := r.ProposeConfigChange(raftpb.ConfChange{}); err != nil {
		r.cfg.Logger.Warn("raft: auto-leave of joint config failed", "group", r.group, "err", err)
	}
}

// TransferLeader asks the leader (directly, or via this follower) to hand
// leadership to target (thesis §3.10).
func (r *Replica) TransferLeader(target raftpb.ReplicaID) {
	_ = r.Step(raftpb.Message{Type: raftpb.MsgTransferLeader, Group: r.group, From: r.id, Index: uint64(target)})
}

func (r *Replica) handleLeaderTransferLeader(m *raftpb.Message) error {
	target := raftpb.ReplicaID(m.Index)
	pr := r.trk.Progress(target)
	if target == r.id || pr == nil || pr.IsLearner {
		return nil
	}
	if r.leadTransferee == target {
		return nil // already in progress
	}
	r.abortLeaderTransfer()
	r.leadTransferee = target
	// The transfer must finish within an election timeout, else it is
	// aborted and proposals are accepted again.
	r.electionElapsed = 0
	if pr.Match == r.log.lastIndex() {
		r.sendTimeoutNow(target)
	} else {
		r.maybeSendAppend(target, true)
	}
	return nil
}

func (r *Replica) sendTimeoutNow(to raftpb.ReplicaID) {
	r.leaseRevoked = true
	r.send(raftpb.Message{To: to, Type: raftpb.MsgTimeoutNow})
}

func (r *Replica) abortLeaderTransfer() { r.leadTransferee = raftpb.None }
