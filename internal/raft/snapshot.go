package raft

import (
	"fmt"

	"github.com/skiffdb/skiff/raftpb"
)

// SnapshotFetch asks the host to fetch a snapshot from the leader. The data
// moves out of band (the snapshot transfer lane); when it is durable
// locally the host calls InstallSnapshot, or InstallFailed if it gave up.
type SnapshotFetch struct {
	Meta raftpb.SnapshotMeta
	// From is the leader that offered it, in Term.
	From raftpb.ReplicaID
	Term uint64
	// Context is the offer's Message.Context: the host's own data about
	// where to fetch from (the leader's host names its snapshot reader
	// there). Owned by the driver.
	Context []byte
}

// handleFollowerInstallSnapshot accepts an offer of a snapshot from the
// leader. Only a snapshot newer than our commit index is worth fetching.
func (r *Replica) handleFollowerInstallSnapshot(m *raftpb.Message) error {
	r.electionElapsed = 0
	r.lead = m.From
	meta := m.Snapshot
	switch {
	case meta.Index <= r.log.committed:
		// Stale or duplicate: tell the leader how far we are.
		r.send(raftpb.Message{To: m.From, Type: raftpb.MsgReplicateResp, Index: r.log.committed})
		return nil
	case r.log.matchTerm(meta.Index, meta.Term):
		// Raft Fig. 13 rule 7: our log already holds the snapshot's last
		// entry; keep the log and just commit up to it.
		r.log.commitTo(meta.Index)
		r.send(raftpb.Message{To: m.From, Type: raftpb.MsgReplicateResp, Index: meta.Index})
		return nil
	case r.installing != nil && (meta.Index < r.installing.Index ||
		(meta.Index == r.installing.Index && m.From == r.installingFrom)):
		// A duplicate (or older) offer while we fetch: keep fetching.
		return nil
	}
	cp := *meta
	r.installing, r.installingFrom = &cp, m.From
	r.fetch = &SnapshotFetch{Meta: cp, From: m.From, Term: m.Term, Context: m.Context}
	return nil
}

// InstallSnapshot installs a snapshot whose data the host holds durably
// (received, verified and published). Raft Fig. 13: if the log already has
// the snapshot's last entry, the log is kept and only the commit index moves
// (rule 7), and ErrSnapshotOutOfDate says the state machine need not be
// restored; otherwise the whole log is discarded (rule 8), Ready.Snapshot
// carries meta for the host to reset its log and restore the state machine,
// and the membership becomes the snapshot's.
func (r *Replica) InstallSnapshot(meta raftpb.SnapshotMeta) error {
	// Acknowledge to the leader we follow now: the one that offered the
	// snapshot may have been replaced while we fetched, and any later
	// leader holds the snapshot's committed entries (Raft §5.4), so the
	// ack is true for it too.
	from := r.lead
	if from == raftpb.None {
		from = r.installingFrom
	}
	if r.installing != nil && meta.Index >= r.installing.Index {
		r.installing, r.installingFrom = nil, raftpb.None
	}
	if meta.Index <= r.log.committed {
		return ErrSnapshotOutOfDate
	}
	if r.log.matchTerm(meta.Index, meta.Term) {
		r.log.commitTo(meta.Index)
		r.replyInstalled(from, meta.Index)
		return ErrSnapshotOutOfDate
	}
	if meta.Index > r.log.committed && r.role == Leader {
		// A leader holds every committed entry; a snapshot past its
		// commit index cannot come from a legitimate leader.
		return fmt.Errorf("raft: leader asked to install snapshot %d beyond its commit %d", meta.Index, r.log.committed)
	}
	r.log.restore(&meta)
	r.membership = meta.Membership.Clone()
	r.installMembershipInTracker()
	r.replyInstalled(from, meta.Index)
	return nil
}

// replyInstalled acknowledges an installed snapshot to the leader, after
// the reset log is durable.
func (r *Replica) replyInstalled(to raftpb.ReplicaID, index uint64) {
	if to != raftpb.None && to != r.id {
		r.send(raftpb.Message{To: to, Type: raftpb.MsgReplicateResp, Index: index})
	}
}

// InstallFailed reports that fetching or installing meta failed. The
// leader is told, returns us to probing and offers a snapshot again later.
func (r *Replica) InstallFailed(meta raftpb.SnapshotMeta) {
	if r.installing == nil || r.installing.Index != meta.Index {
		return
	}
	// Like the ack in InstallSnapshot, tell the leader we follow now: it
	// may have replaced the one that offered the snapshot while we
	// fetched, and it is the one that must stop waiting for us.
	to := r.lead
	if to == raftpb.None {
		to = r.installingFrom
	}
	r.installing, r.installingFrom = nil, raftpb.None
	r.send(raftpb.Message{To: to, Type: raftpb.MsgSnapshotStatus, Index: meta.Index, Reject: true})
}
