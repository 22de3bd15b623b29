package raft

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"

	"github.com/skiffdb/skiff/internal/raft/confchange"
	"github.com/skiffdb/skiff/internal/raft/quorum"
	"github.com/skiffdb/skiff/internal/raft/tracker"
	"github.com/skiffdb/skiff/raftpb"
)

// Role is a replica's role in its group.
type Role uint8

const (
	Follower Role = iota
	PreCandidate
	Candidate
	Leader
	numRoles
)

var roleNames = [...]string{"Follower", "PreCandidate", "Candidate", "Leader"}

func (r Role) String() string {
	if int(r) < len(roleNames) {
		return roleNames[r]
	}
	return fmt.Sprintf("Role(%d)", uint8(r))
}

// Errors returned by proposals. Each wraps ErrProposalDropped, so callers
// can test for the general case or the reason.
var (
	ErrProposalDropped   = errors.New("raft: proposal dropped")
	ErrNoLeader          = fmt.Errorf("%w: no leader", ErrProposalDropped)
	ErrLeaderTransfer    = fmt.Errorf("%w: leadership transfer in progress", ErrProposalDropped)
	ErrConfChangePending = fmt.Errorf("%w: another config change is pending", ErrProposalDropped)
	ErrNotMember         = fmt.Errorf("%w: replica is not a member of the group", ErrProposalDropped)
	ErrForwardDisabled   = fmt.Errorf("%w: proposal forwarding is disabled", ErrProposalDropped)
)

// transferCtx marks the MsgVote of a leadership transfer: it bypasses
// leader stickiness on the receivers (thesis §3.10).
var transferCtx = []byte("skiff-transfer")

// Replica is the protocol state of one replica of one group. It is pure:
// no goroutines, clock or I/O. Time passes through Tick; input arrives
// through Step and the propose/read/transfer methods; output is collected
// with Ready and acknowledged with Advance.
//
// A Replica is not safe for concurrent use. The driver's loop is:
//
//	for {
//	    // Tick / Step / Propose ... as events arrive
//	    if r.HasReady() {
//	        rd := r.Ready()
//	        send(rd.Messages)              // may go before persisting
//	        persist(rd.HardState, rd.Entries, rd.Snapshot)
//	        send(rd.MessagesAfterPersist)  // only once durable
//	        apply(rd.CommittedEntries)     // after Entries are durable
//	        r.Advance(rd)
//	    }
//	}
//
// Between Ready and Advance the driver may Step messages, Propose (entries
// and config changes) and call TakeCommitted: what they produce waits for
// the next Ready, which comes only after Advance; the unstable log tells
// what is durable, so a leader still counts its own entries only once they
// are (Advance). Every other method waits for Advance.
type Replica struct {
	id    raftpb.ReplicaID
	group raftpb.GroupID
	cfg   Config

	// Persistent state (Raft Fig. 2).
	term uint64
	vote raftpb.ReplicaID
	log  *raftLog

	role Role
	lead raftpb.ReplicaID

	// membership is the configuration in effect: the last snapshot's plus
	// every config-change entry applied since.
	membership raftpb.Membership
	trk        *tracker.Tracker

	// Timers, in ticks. Invariant: electionElapsed counts since the last
	// contact with a leader (followers) or since the last check-quorum
	// round (leaders).
	electionElapsed           int
	heartbeatElapsed          int
	randomizedElectionTimeout int
	rng                       *rand.Rand

	// leadTransferee is the target of a leadership transfer in progress.
	leadTransferee raftpb.ReplicaID
	// leaseRevoked: this leader sent MsgTimeoutNow in this term. The
	// target's vote requests bypass leader stickiness, so another leader
	// may exist before our lease would expire; reads then need a heartbeat
	// quorum. Invariant: false after reset (a new term or role).
	leaseRevoked bool
	// ticks counts every Tick since New. Heartbeats carry it (LogTerm) and
	// responses echo it, so a leader knows when each follower last heard
	// from it in its own clock (lease reads).
	ticks uint64
	// restartGuard: until this replica hears from a leader or an election
	// timeout passes after New, it treats vote requests as if it had just
	// heard from a leader. A replica that crashed has forgotten its leader
	// contact; without the guard it could vote at once after a restart and
	// cut short a lease the old leader still relies on. Only lease reads
	// rely on it, so it is on only with ReadOnlyLeaseBased.
	restartGuard bool
	// pendingConfIndex: a config change may only be proposed once the
	// log is applied up to here (one pending change at a time).
	pendingConfIndex uint64

	readOnly readOnly
	// pendingReadIndex holds reads received before the leader committed
	// an entry of its own term; they are served once it has (§6.4 step 1).
	pendingReadIndex []raftpb.Message

	// installing is the snapshot a follower is fetching (nil if none);
	// installingFrom is the leader that asked for it.
	installing     *raftpb.SnapshotMeta
	installingFrom raftpb.ReplicaID
	fetch          *SnapshotFetch

	// Output not yet collected by Ready.
	msgs             []raftpb.Message
	msgsAfterPersist []raftpb.Message
	selfMsgs         []raftpb.Message
	readStates       []ReadState
	// pendingBcast: new entries or a new commit index must be sent to
	// every follower; done once per Ready so that proposals batch.
	pendingBcast bool

	prevHardState raftpb.HardState
	prevSoftState SoftState
	readyOut      bool

	// stepping holds the message being stepped. NB: handlers are called
	// through a table, so escape analysis cannot see that they do not
	// keep the *Message; passing Step's own argument would move every
	// stepped message to the heap.
	stepping raftpb.Message
}

// New returns a Replica whose durable state is read from reader.
func New(cfg Config, reader LogReader) (*Replica, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	hs, snap, err := reader.InitialState()
	if err != nil {
		return nil, fmt.Errorf("raft: initial state: %w", err)
	}
	if err := confchange.Validate(snap.Membership); err != nil {
		return nil, fmt.Errorf("raft: snapshot membership: %w", err)
	}
	log, err := newLog(reader, cfg.MaxCommittedBytesPerReady)
	if err != nil {
		return nil, fmt.Errorf("raft: log: %w", err)
	}
	seed := cfg.Seed
	if seed == 0 {
		seed = uint64(cfg.ID)*0x9E3779B97F4A7C15 ^ uint64(cfg.Group)
	}
	r := &Replica{
		id:         cfg.ID,
		group:      cfg.Group,
		cfg:        cfg,
		log:        log,
		membership: snap.Membership.Clone(),
		trk:        tracker.New(cfg.MaxInflightMsgs, cfg.MaxInflightBytes),
		rng:        rand.New(rand.NewPCG(seed, seed>>1|1)),
	}
	r.readOnly.init()
	if err := r.loadState(hs); err != nil {
		return nil, err
	}
	if err := r.restoreMembership(snap.Index, cfg.Applied); err != nil {
		return nil, err
	}
	r.becomeFollower(r.term, raftpb.None)
	r.restartGuard = cfg.ReadOnly == ReadOnlyLeaseBased
	r.prevHardState = r.hardState()
	r.prevSoftState = r.softState()
	return r, nil
}

// loadState checks and installs the durable HardState.
func (r *Replica) loadState(hs raftpb.HardState) error {
	if hs.Commit < r.log.committed {
		// The snapshot's index is committed by definition (a snapshot is
		// of applied, hence committed, state); the stored commit may lag
		// it because a commit-only change need not be synced.
		hs.Commit = r.log.committed
	}
	if hs.Commit > r.log.lastIndex() {
		return fmt.Errorf("raft: hard state commit %d outside log [%d, %d]",
			hs.Commit, r.log.committed, r.log.lastIndex())
	}
	r.log.committed = hs.Commit
	r.term, r.vote = hs.Term, hs.Vote
	return nil
}

// restoreMembership replays the config changes in (snapIndex, applied] on
// top of the snapshot's membership, and sets the applied index.
func (r *Replica) restoreMembership(snapIndex, applied uint64) error {
	if applied == 0 {
		applied = snapIndex
	}
	if applied > r.log.committed && applied <= r.log.lastIndex() {
		// The commit index is persisted lazily (a commit-only HardState
		// change need not be synced), so a durable state machine may be
		// ahead of it. It only ever applies committed entries, so its
		// applied index is a commit index too.
		r.log.commitTo(applied)
	}
	if applied < snapIndex || applied > r.log.committed {
		return fmt.Errorf("raft: applied index %d outside [%d, %d]", applied, snapIndex, r.log.committed)
	}
	for lo := snapIndex + 1; lo <= applied; {
		ents, err := r.log.slice(lo, applied+1, r.cfg.MaxCommittedBytesPerReady)
		if err != nil {
			return fmt.Errorf("raft: replay config changes: %w", err)
		}
		for i := range ents {
			if ents[i].Type == raftpb.EntryConfigChange {
				r.membership, _ = r.nextMembership(&ents[i])
			}
		}
		lo += uint64(len(ents))
	}
	r.log.applied = applied
	r.installMembershipInTracker()
	return nil
}

func (r *Replica) hardState() raftpb.HardState {
	return raftpb.HardState{Term: r.term, Vote: r.vote, Commit: r.log.committed}
}

// promotable reports whether this replica may campaign: it is a voter.
func (r *Replica) promotable() bool {
	pr := r.trk.Progress(r.id)
	return pr != nil && !pr.IsLearner && r.trk.Voters.Contains(r.id)
}

func (r *Replica) resetRandomizedElectionTimeout() {
	r.randomizedElectionTimeout = r.cfg.ElectionTicks + r.rng.IntN(r.cfg.ElectionTicks)
}

// reset prepares for a new role in term.
func (r *Replica) reset(term uint64) {
	if r.term != term {
		r.term = term
		r.vote = raftpb.None
	}
	r.lead = raftpb.None
	r.electionElapsed = 0
	r.heartbeatElapsed = 0
	r.resetRandomizedElectionTimeout()
	r.abortLeaderTransfer()
	r.leaseRevoked = false
	r.restartGuard = false
	r.trk.ResetVotes()
	last := r.log.lastIndex()
	r.trk.Visit(func(id raftpb.ReplicaID, pr *tracker.Progress) {
		*pr = tracker.Progress{
			Next:      last + 1,
			Inflights: pr.Inflights,
			IsLearner: pr.IsLearner,
		}
		pr.Inflights.Reset()
		if id == r.id {
			// Only what is durable counts towards the leader's own match;
			// the rest is acknowledged in Advance once persisted.
			pr.Match = min(last, r.log.unstable.offset-1)
		}
	})
	r.pendingConfIndex = 0
	r.readOnly.reset()
	r.pendingReadIndex = nil
	r.pendingBcast = false
}

func (r *Replica) becomeFollower(term uint64, lead raftpb.ReplicaID) {
	r.reset(term)
	r.role = Follower
	r.lead = lead
}

func (r *Replica) becomePreCandidate() {
	// A pre-candidate changes neither term nor vote (thesis §9.6).
	r.role = PreCandidate
	r.lead = raftpb.None
	r.trk.ResetVotes()
}

func (r *Replica) becomeCandidate() {
	r.reset(r.term + 1)
	r.vote = r.id
	r.role = Candidate
}

func (r *Replica) becomeLeader() {
	r.reset(r.term)
	r.role = Leader
	r.lead = r.id
	// Replicas are probed from the leader's last index; the leader's own
	// progress starts in StateReplicate (it never sends to itself).
	if pr := r.trk.Progress(r.id); pr != nil {
		pr.BecomeReplicate()
		pr.RecentActive = true
	}
	// Conservatively, no config change until everything before this
	// term is applied: an unapplied change may still be in the log.
	r.pendingConfIndex = r.log.lastIndex()
	// A no-op of the new term lets the leader commit entries of earlier
	// terms (Raft §5.4.2) and learn the commit index (§8).
	r.appendEntries([]raftpb.Entry{{Type: raftpb.EntryNoOp}})
}

// Tick advances the logical clock by one tick.
func (r *Replica) Tick() {
	r.ticks++
	if r.role == Leader {
		r.tickHeartbeat()
	} else {
		r.tickElection()
	}
}

func (r *Replica) pastElectionTimeout() bool {
	return r.electionElapsed >= r.randomizedElectionTimeout
}

func (r *Replica) tickElection() {
	r.electionElapsed++
	if r.electionElapsed >= r.cfg.ElectionTicks {
		// An election timeout has passed since New without word from a
		// leader: any lease that relied on us has expired.
		r.restartGuard = false
	}
	if !r.promotable() || !r.pastElectionTimeout() {
		return
	}
	r.electionElapsed = 0
	if r.installing != nil && r.installing.Index > r.log.committed {
		// A follower fetching a snapshot does not campaign: its log is
		// about to be replaced and it would only disrupt the group. Once
		// its commit index has reached the snapshot by replication, the
		// fetch no longer matters (installing it will be a no-op).
		return
	}
	r.campaign(campaignPreElection)
}

func (r *Replica) tickHeartbeat() {
	r.heartbeatElapsed++
	r.electionElapsed++
	if r.electionElapsed >= r.cfg.ElectionTicks {
		r.electionElapsed = 0
		if r.cfg.CheckQuorum && !r.checkQuorumActive() {
			r.cfg.Logger.Info("raft: stepping down: no quorum contact for an election timeout",
				"group", r.group, "replica", r.id, "term", r.term)
			r.becomeFollower(r.term, raftpb.None)
			return
		}
		if r.leadTransferee != raftpb.None {
			// The target did not take over within an election timeout.
			r.abortLeaderTransfer()
		}
	}
	if r.role != Leader {
		return
	}
	r.tickSnapshotProgress()
	if r.heartbeatElapsed >= r.cfg.HeartbeatTicks {
		r.heartbeatElapsed = 0
		r.bcastHeartbeat()
	}
}

// checkQuorumActive reports whether a quorum was heard from since the last
// round, and starts a new round.
func (r *Replica) checkQuorumActive() bool {
	active := r.trk.QuorumActive()
	r.trk.Visit(func(id raftpb.ReplicaID, pr *tracker.Progress) {
		pr.RecentActive = id == r.id
	})
	return active
}

// Campaign starts an election now (pre-vote first if configured), as if the
// election timeout had passed.
func (r *Replica) Campaign() {
	if r.role == Leader || !r.promotable() {
		return
	}
	r.campaign(campaignPreElection)
}

type campaignKind uint8

const (
	// campaignPreElection runs the pre-vote phase if PreVote is on, else
	// an election.
	campaignPreElection campaignKind = iota
	// campaignElection raises the term and asks for votes.
	campaignElection
	// campaignTransfer is an election started by MsgTimeoutNow; its vote
	// requests bypass the receivers' leader stickiness.
	campaignTransfer
)

// campaign starts a pre-vote or vote round.
func (r *Replica) campaign(kind campaignKind) {
	var voteMsg raftpb.MessageType
	var term uint64
	if r.cfg.PreVote && kind == campaignPreElection {
		r.becomePreCandidate()
		voteMsg, term = raftpb.MsgPreVote, r.term+1
		// Pre-votes change no durable state: count our own at once.
		r.trk.RecordVote(r.id, true)
		if _, _, res := r.trk.TallyVotes(); res == quorum.VoteWon {
			r.campaign(campaignElection) // a single voter
			return
		}
	} else {
		r.becomeCandidate()
		voteMsg, term = raftpb.MsgVote, r.term
		// Our own vote counts only once it is durable: it is delivered to
		// ourselves in Advance, after the HardState is persisted.
		r.send(raftpb.Message{To: r.id, Type: raftpb.MsgVoteResp})
	}
	var ctx []byte
	if kind == campaignTransfer {
		ctx = transferCtx
	}
	for _, id := range r.trk.Voters.IDs() {
		if id == r.id {
			continue
		}
		r.send(raftpb.Message{To: id, Type: voteMsg, Term: term,
			Index: r.log.lastIndex(), LogTerm: r.log.lastTerm(), Context: ctx})
	}
}

// send queues m, filling in From, Group and Term. Responses that promise
// durable state wait until the Ready they were produced in is persisted;
// messages to ourselves are stepped in Advance.
func (r *Replica) send(m raftpb.Message) {
	m.From = r.id
	m.Group = r.group
	if m.Term == 0 && m.Type != raftpb.MsgPropose && m.Type != raftpb.MsgReadIndex {
		m.Term = r.term
	}
	switch {
	case m.To == r.id:
		r.selfMsgs = append(r.selfMsgs, m)
	case m.Type == raftpb.MsgReplicateResp || m.Type == raftpb.MsgVoteResp || m.Type == raftpb.MsgPreVoteResp:
		r.msgsAfterPersist = append(r.msgsAfterPersist, m)
	default:
		if r.msgs == nil {
			// One allocation per Ready for a broadcast, not one per
			// doubling (the slice goes to the driver with the Ready).
			r.msgs = make([]raftpb.Message, 0, max(r.trk.Len(), 1))
		}
		r.msgs = append(r.msgs, m)
	}
}

// Step feeds a message from another replica (or a local report such as
// MsgUnreachable) into the core. Messages for another group are rejected.
func (r *Replica) Step(m raftpb.Message) error {
	if int(m.Type) >= raftpb.NumMessageTypes {
		return fmt.Errorf("raft: unknown message type %d", m.Type)
	}
	if m.Group != r.group {
		return fmt.Errorf("raft: message for group %d stepped into group %d", m.Group, r.group)
	}
	if m.Type == raftpb.MsgInstallSnapshot && m.Snapshot == nil {
		return fmt.Errorf("raft: %s without snapshot meta", m.Type)
	}
	switch {
	case m.Term == 0:
		// Local messages and forwarded proposals/reads carry no term.
	case m.Term > r.term:
		if !r.stepHigherTerm(&m) {
			return nil
		}
	case m.Term < r.term:
		r.stepLowerTerm(&m)
		return nil
	}
	if h := handlers[r.role][m.Type]; h != nil {
		// Saved and restored, should a handler ever re-enter Step.
		saved := r.stepping
		r.stepping = m
		err := h(r, &r.stepping)
		r.stepping = saved
		return err
	}
	return nil
}

// stepHigherTerm handles a message from a later term; it returns false if
// the message is to be ignored.
func (r *Replica) stepHigherTerm(m *raftpb.Message) bool {
	if m.Type == raftpb.MsgVote || m.Type == raftpb.MsgPreVote {
		force := bytes.Equal(m.Context, transferCtx)
		inLease := r.cfg.CheckQuorum && (r.lead != raftpb.None || r.restartGuard) &&
			r.electionElapsed < r.cfg.ElectionTicks
		if !force && inLease {
			// Leader stickiness (thesis §4.2.3): we heard from a live
			// leader within the minimum election timeout.
			return false
		}
	}
	switch {
	case m.Type == raftpb.MsgPreVote:
		// A pre-vote never changes our term.
	case m.Type == raftpb.MsgPreVoteResp && !m.Reject:
		// A granted pre-vote carries the term we would campaign in.
	case m.Type == raftpb.MsgReplicate || m.Type == raftpb.MsgHeartbeat || m.Type == raftpb.MsgInstallSnapshot:
		r.becomeFollower(m.Term, m.From)
	default:
		r.becomeFollower(m.Term, raftpb.None)
	}
	return true
}

// stepLowerTerm answers a message from an earlier term where that helps the
// sender catch up, and otherwise drops it.
func (r *Replica) stepLowerTerm(m *raftpb.Message) {
	switch {
	case (r.cfg.CheckQuorum || r.cfg.PreVote) && (m.Type == raftpb.MsgHeartbeat || m.Type == raftpb.MsgReplicate):
		// A stale leader (say, after a partition heals) learns our term
		// and steps down. Without this, with pre-vote or check-quorum a
		// replica whose term was raised could never get the leader's
		// attention (etcd's issue 5451 family).
		r.send(raftpb.Message{To: m.From, Type: raftpb.MsgReplicateResp})
	case m.Type == raftpb.MsgPreVote:
		r.send(raftpb.Message{To: m.From, Type: raftpb.MsgPreVoteResp, Reject: true})
	}
}

// handler handles one message type in one role.
type handler func(r *Replica, m *raftpb.Message) error

var handlers [numRoles][raftpb.NumMessageTypes]handler

func init() {
	for role := range handlers {
		handlers[role][raftpb.MsgVote] = (*Replica).handleVoteRequest
		handlers[role][raftpb.MsgPreVote] = (*Replica).handleVoteRequest
	}
	l := &handlers[Leader]
	l[raftpb.MsgReplicateResp] = (*Replica).handleLeaderReplicateResp
	l[raftpb.MsgHeartbeatResp] = (*Replica).handleLeaderHeartbeatResp
	l[raftpb.MsgSnapshotStatus] = (*Replica).handleLeaderSnapshotStatus
	l[raftpb.MsgUnreachable] = (*Replica).handleLeaderUnreachable
	l[raftpb.MsgPropose] = (*Replica).handleLeaderPropose
	l[raftpb.MsgReadIndex] = (*Replica).handleLeaderReadIndex
	l[raftpb.MsgTransferLeader] = (*Replica).handleLeaderTransferLeader

	for _, role := range []Role{PreCandidate, Candidate} {
		c := &handlers[role]
		c[raftpb.MsgReplicate] = (*Replica).handleCandidateLeaderMsg
		c[raftpb.MsgHeartbeat] = (*Replica).handleCandidateLeaderMsg
		c[raftpb.MsgInstallSnapshot] = (*Replica).handleCandidateLeaderMsg
		c[raftpb.MsgPropose] = (*Replica).handleDropNoLeader
		c[raftpb.MsgReadIndex] = (*Replica).handleDropNoLeader
	}
	handlers[PreCandidate][raftpb.MsgPreVoteResp] = (*Replica).handleVoteResp
	handlers[Candidate][raftpb.MsgVoteResp] = (*Replica).handleVoteResp

	f := &handlers[Follower]
	f[raftpb.MsgReplicate] = (*Replica).handleFollowerReplicate
	f[raftpb.MsgHeartbeat] = (*Replica).handleFollowerHeartbeat
	f[raftpb.MsgInstallSnapshot] = (*Replica).handleFollowerInstallSnapshot
	f[raftpb.MsgTimeoutNow] = (*Replica).handleFollowerTimeoutNow
	f[raftpb.MsgPropose] = (*Replica).handleFollowerForward
	f[raftpb.MsgReadIndex] = (*Replica).handleFollowerForward
	f[raftpb.MsgTransferLeader] = (*Replica).handleFollowerForward
	f[raftpb.MsgReadIndexResp] = (*Replica).handleFollowerReadIndexResp
}
