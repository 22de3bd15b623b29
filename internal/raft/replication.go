package raft

import (
	"errors"

	"github.com/skiffdb/skiff/internal/raft/tracker"
	"github.com/skiffdb/skiff/raftpb"
)

// appendEntries appends copies of ents as the leader, in the current term,
// and returns the index of the first; ents is not modified. The leader's own
// progress is updated in Advance, once they are durable; the followers
// receive them at the next Ready (so that proposals batch).
func (r *Replica) appendEntries(ents []raftpb.Entry) uint64 {
	first := r.log.appendLeader(r.term, ents)
	r.pendingBcast = true
	return first
}

// flushAppends sends what pendingBcast asked for.
func (r *Replica) flushAppends() {
	if !r.pendingBcast {
		return
	}
	r.pendingBcast = false
	if r.role != Leader {
		return
	}
	r.trk.Visit(func(id raftpb.ReplicaID, _ *tracker.Progress) {
		if id != r.id {
			r.sendAppendsTo(id, true)
		}
	})
}

// sendAppendsTo sends as many MsgReplicate to id as flow control allows;
// sendIfEmpty sends one even without entries (to carry the commit index or
// to probe).
func (r *Replica) sendAppendsTo(id raftpb.ReplicaID, sendIfEmpty bool) {
	if r.maybeSendAppend(id, sendIfEmpty) {
		for r.maybeSendAppend(id, false) {
		}
	}
}

// maybeSendAppend sends one MsgReplicate to id if flow control allows,
// or an install-snapshot if id needs entries the log no longer has.
// It returns whether a MsgReplicate was sent.
func (r *Replica) maybeSendAppend(to raftpb.ReplicaID, sendIfEmpty bool) bool {
	pr := r.trk.Progress(to)
	if pr == nil || pr.IsPaused() {
		return false
	}
	prevIndex := pr.Next - 1
	prevTerm, errTerm := r.log.term(prevIndex)
	var ents []raftpb.Entry
	var errEnts error
	// NB: a heartbeat response unpauses a replica whose Inflights is full
	// (all of them may have been lost); it then gets an empty MsgReplicate,
	// whose answer frees Inflights, and no entries that would overflow it.
	full := pr.State == tracker.StateReplicate && pr.Inflights.Full()
	if last := r.log.lastIndex(); pr.Next <= last && !full {
		ents, errEnts = r.log.slice(pr.Next, last+1, r.cfg.MaxMsgBytes)
	}
	if errTerm != nil || errEnts != nil {
		// The entries this replica needs are compacted.
		r.maybeSendSnapshot(to, pr)
		return false
	}
	if len(ents) == 0 && !sendIfEmpty {
		return false
	}
	size := raftpb.EntriesSize(ents)
	r.send(raftpb.Message{To: to, Type: raftpb.MsgReplicate, Index: prevIndex,
		LogTerm: prevTerm, Entries: ents, Commit: r.log.committed})
	pr.SentEntries(len(ents), size)
	return true
}

// maybeSendSnapshot asks the log reader for a snapshot covering what the
// replica needs and sends it. If the snapshot is being generated, or the
// reader fails, the replica is marked and retried on a later tick, so that
// a missing snapshot never becomes a busy loop or a message storm.
func (r *Replica) maybeSendSnapshot(to raftpb.ReplicaID, pr *tracker.Progress) {
	if !pr.RecentActive {
		// Not heard from lately: a snapshot would likely be wasted.
		pr.SnapshotWanted = true
		return
	}
	need := r.log.firstIndex() - 1
	meta, err := r.log.reader.Snapshot(need)
	if err != nil || meta.Index < need {
		if err != nil && !errors.Is(err, ErrSnapshotTemporarilyUnavailable) {
			r.cfg.Logger.Warn("raft: snapshot unavailable; will retry",
				"group", r.group, "replica", r.id, "to", to, "err", err)
		}
		pr.SnapshotWanted = true
		return
	}
	r.send(raftpb.Message{To: to, Type: raftpb.MsgInstallSnapshot, Snapshot: &meta})
	pr.BecomeSnapshot(meta.Index)
}

// tickSnapshotProgress retries wanted snapshots and returns replicas whose
// snapshot shows no progress for SnapshotTimeoutTicks to probing.
func (r *Replica) tickSnapshotProgress() {
	heartbeat := r.heartbeatElapsed >= r.cfg.HeartbeatTicks
	r.trk.Visit(func(id raftpb.ReplicaID, pr *tracker.Progress) {
		switch {
		case pr.State == tracker.StateSnapshot:
			pr.SnapshotTicks++
			if pr.SnapshotTicks > r.cfg.SnapshotTimeoutTicks {
				r.cfg.Logger.Info("raft: snapshot made no progress; probing again",
					"group", r.group, "to", id, "snapshot", pr.PendingSnapshot)
				pr.PendingSnapshot = 0 // failed: resume probing from Match
				pr.BecomeProbe()
			}
		case pr.SnapshotWanted && heartbeat && id != r.id:
			// Once per heartbeat interval, not on every tick.
			pr.SnapshotWanted = false
			r.maybeSendAppend(id, true)
		}
	})
}

// maybeCommit advances the commit index to what a quorum holds; entries of
// earlier terms are committed only indirectly (Raft §5.4.2).
func (r *Replica) maybeCommit() bool {
	if !r.log.maybeCommit(r.trk.Committed(), r.term) {
		return false
	}
	r.releasePendingReadIndex()
	r.pendingBcast = true // followers learn the new commit index
	return true
}

func (r *Replica) handleLeaderReplicateResp(m *raftpb.Message) error {
	pr := r.trk.Progress(m.From)
	if pr == nil {
		return nil
	}
	pr.RecentActive = true
	if m.Reject {
		r.handleReplicateReject(m, pr)
		return nil
	}
	oldPaused := pr.IsPaused()
	if !pr.MaybeUpdate(m.Index) && !(pr.Match == m.Index && pr.State == tracker.StateProbe) {
		return nil
	}
	switch pr.State {
	case tracker.StateProbe:
		pr.BecomeReplicate()
	case tracker.StateSnapshot:
		// Installed (or caught up by other means): replicate from the log
		// if it covers what the replica needs.
		if pr.Match+1 >= r.log.firstIndex() {
			pr.BecomeProbe()
			pr.BecomeReplicate()
		} else if pr.Match >= pr.PendingSnapshot {
			// The snapshot is installed but we compacted past it while it
			// was in flight: probe, which offers a newer snapshot now
			// rather than after SnapshotTimeoutTicks of silence.
			pr.BecomeProbe()
		}
	case tracker.StateReplicate:
		pr.Inflights.FreeLE(m.Index)
	}
	if !r.maybeCommit() && oldPaused {
		r.maybeSendAppend(m.From, false)
	}
	r.sendAppendsTo(m.From, false)
	if m.From == r.leadTransferee && pr.Match == r.log.lastIndex() {
		r.sendTimeoutNow(m.From)
	}
	return nil
}

// handleReplicateReject backs up Next using the follower's hint: the
// largest index <= RejectHint whose term is <= LogTerm in our log is where
// the logs may match (one round trip per term, not per entry).
func (r *Replica) handleReplicateReject(m *raftpb.Message, pr *tracker.Progress) {
	next := m.RejectHint
	if m.LogTerm > 0 {
		next, _ = r.log.findConflictByTerm(m.RejectHint, m.LogTerm)
	}
	if !pr.MaybeDecrTo(m.Index, next) {
		return
	}
	if pr.State == tracker.StateReplicate {
		pr.BecomeProbe()
	}
	r.maybeSendAppend(m.From, true)
}

func (r *Replica) handleLeaderHeartbeatResp(m *raftpb.Message) error {
	pr := r.trk.Progress(m.From)
	if pr == nil {
		return nil
	}
	pr.RecentActive = true
	pr.MsgAppFlowPaused = false
	// The response echoes the tick at which we sent the heartbeat: the
	// replica has heard from us no earlier than that.
	pr.LeaseTick = max(pr.LeaseTick, m.LogTerm)
	if pr.State == tracker.StateSnapshot {
		switch {
		case m.Index != 0 && m.Index >= pr.PendingSnapshot:
			// The replica is still receiving our snapshot: progress.
			pr.SnapshotTicks = 0
		case pr.SnapshotTicks > r.cfg.ElectionTicks:
			// An election timeout after the offer, the replica says it
			// is receiving nothing: it restarted or dropped the offer.
			// Offer again now rather than after SnapshotTimeoutTicks.
			pr.PendingSnapshot = 0
			pr.BecomeProbe()
		}
	}
	// A snapshot the log reader could not provide yet is retried by
	// tickSnapshotProgress once per heartbeat interval; retrying here too
	// would ask twice per interval (this response answers that tick's
	// heartbeat).
	if pr.Match < r.log.lastIndex() && !pr.SnapshotWanted {
		r.maybeSendAppend(m.From, true)
	}
	if len(m.Context) > 0 {
		r.handleReadIndexAck(m)
	}
	return nil
}

func (r *Replica) handleLeaderSnapshotStatus(m *raftpb.Message) error {
	pr := r.trk.Progress(m.From)
	if pr == nil || pr.State != tracker.StateSnapshot {
		return nil
	}
	if m.Reject {
		// Failed: probe again from Match, which may need a new snapshot.
		pr.PendingSnapshot = 0
	}
	pr.BecomeProbe()
	// Wait for the next heartbeat response before sending again, so a
	// failing install is retried at heartbeat pace, not in a loop.
	pr.MsgAppFlowPaused = true
	return nil
}

func (r *Replica) handleLeaderUnreachable(m *raftpb.Message) error {
	if pr := r.trk.Progress(m.From); pr != nil && pr.State == tracker.StateReplicate {
		pr.BecomeProbe()
	}
	return nil
}

// bcastHeartbeat sends a heartbeat to every replica, carrying the context
// of the latest pending ReadIndex request (if any) for it to echo.
func (r *Replica) bcastHeartbeat() {
	ctx := r.readOnly.lastPendingContext()
	r.trk.Visit(func(id raftpb.ReplicaID, pr *tracker.Progress) {
		if id != r.id {
			r.sendHeartbeat(id, pr, ctx)
		}
	})
}

func (r *Replica) sendHeartbeat(to raftpb.ReplicaID, pr *tracker.Progress, ctx []byte) {
	// Never tell a replica to commit beyond what it is known to hold:
	// its log past Match may not match ours.
	r.send(raftpb.Message{To: to, Type: raftpb.MsgHeartbeat,
		Commit: min(pr.Match, r.log.committed), Context: ctx, LogTerm: r.ticks})
}
