package skiff

import (
	"context"
	"fmt"
	"time"

	"github.com/skiffdb/skiff/internal/engine"
	"github.com/skiffdb/skiff/raftpb"
	"github.com/skiffdb/skiff/statemachine"
	"github.com/skiffdb/skiff/transport"
)

// Host runs replicas of many groups in one process. Its methods are safe
// for concurrent use. Every blocking method takes a context: when it ends
// first, the method returns an error wrapping ErrTimeout, and a proposal's
// outcome is then unknown.
type Host struct {
	e   *engine.Engine
	cfg HostConfig
}

// Open starts a host: it opens (and recovers) the log in cfg.Dir and
// starts the transport. Groups are started with StartGroup.
func Open(cfg HostConfig) (*Host, error) {
	if cfg.Dir == "" {
		return nil, fmt.Errorf("%w: Dir is required", ErrInvalidConfig)
	}
	tr := cfg.Transport
	if tr == nil {
		if cfg.RaftAddr == "" {
			return nil, fmt.Errorf("%w: RaftAddr (or Transport) is required", ErrInvalidConfig)
		}
		// With ListenAddr unset the host listens on RaftAddr and
		// advertises the listener's address (so "127.0.0.1:0" works).
		listen, advertise := cfg.ListenAddr, cfg.RaftAddr
		if listen == "" {
			listen, advertise = cfg.RaftAddr, ""
		}
		t, err := transport.NewTCP(transport.TCPConfig{ListenAddr: listen, AdvertiseAddr: advertise,
			DeploymentID: cfg.DeploymentID, TLS: cfg.TLS, Logger: cfg.Logger})
		if err != nil {
			return nil, err
		}
		tr = t
	}
	var listener engine.Listener
	if cfg.Listener != nil {
		listener = listenerFunc(cfg.Listener)
	}
	e, err := engine.Open(engine.Config{
		Dir: cfg.Dir, FS: cfg.FS, Transport: tr,
		TickInterval: cfg.TickInterval,
		StepWorkers:  cfg.StepWorkers, ApplyWorkers: cfg.ApplyWorkers,
		Snapshot: engine.SnapshotLimits{
			SendBytesPerSec:          cfg.MaxSnapshotSendBytesPerSec,
			RecvBytesPerSec:          cfg.MaxSnapshotRecvBytesPerSec,
			MaxConcurrentSends:       cfg.MaxConcurrentSnapshotSends,
			MaxConcurrentRecvs:       cfg.MaxConcurrentSnapshotRecvs,
			MaxConcurrentGenerations: cfg.MaxConcurrentSnapshotGenerations,
			GenerateBytesPerSec:      cfg.MaxSnapshotGenerateBytesPerSec,
			BackgroundShare:          cfg.SnapshotBackgroundShare,
		},
		SnapshotChunkTimeout: cfg.SnapshotChunkTimeout,
		LogDB: engine.LogOptions{SegmentSize: cfg.LogSegmentBytes, CacheBytes: cfg.LogCacheBytes,
			MaxLogBytes: cfg.MaxLogBytes, UnsafeNoSync: cfg.UnsafeNoSync, Logger: cfg.Logger},
		Listener: listener,
		Metrics:  cfg.Metrics,
		Logger:   cfg.Logger,
	})
	if err != nil {
		if cfg.Transport == nil {
			tr.Close()
		}
		return nil, err
	}
	return &Host{e: e, cfg: cfg}, nil
}

// Close stops every group and the host; requests in flight fail.
func (h *Host) Close() error { return h.e.Close() }

// RaftAddr returns the address other hosts reach this one at.
func (h *Host) RaftAddr() string { return h.e.Addr() }

// StartGroup starts this host's replica of a group. create is called once
// for the replica's state machine; the state machine is then restored from
// the latest snapshot (or, for a statemachine.OnDisk, opened at its durable
// index) and the log after it is applied again.
func (h *Host) StartGroup(ctx context.Context, cfg GroupConfig, create CreateFunc) error {
	return h.e.StartGroup(ctx, engine.GroupConfig{
		Group: cfg.GroupID, Replica: cfg.ReplicaID, Members: cfg.Members, Join: cfg.Join,
		ElectionTicks: cfg.ElectionTicks, HeartbeatTicks: cfg.HeartbeatTicks,
		PreVote: cfg.PreVote, CheckQuorum: cfg.CheckQuorum, LeaseRead: cfg.LeaseRead,
		SnapshotEntries: cfg.SnapshotEntries, SnapshotInterval: cfg.SnapshotInterval,
		SnapshotMinGap: cfg.SnapshotMinGap, CompactionOverhead: cfg.CompactionOverhead,
		SnapshotsRetained: cfg.SnapshotsRetained, SnapshotCompression: cfg.SnapshotCompression,
		Quiesce: cfg.Quiesce, QuiesceTicks: cfg.QuiesceTicks,
		MaxLogBytes: cfg.MaxLogBytes, MaxInflightMsgs: cfg.MaxInflightMsgs, MaxMsgBytes: cfg.MaxMsgBytes,
	}, create)
}

// StopGroup stops this host's replica of group g; its data stays on disk.
func (h *Host) StopGroup(g GroupID) error { return h.e.StopGroup(g) }

// Propose replicates cmd in group g and returns the state machine's
// result once it is applied on this host. Any replica accepts proposals.
func (h *Host) Propose(ctx context.Context, g GroupID, cmd []byte) (statemachine.Result, error) {
	if err := h.checkSize(cmd); err != nil {
		return statemachine.Result{}, err
	}
	return h.e.Propose(ctx, g, cmd)
}

// checkSize refuses a command larger than MaxProposalBytes: a Raft entry
// travels whole in one transport frame, and one that can never reach a
// follower would be resent forever, stalling the group behind it.
func (h *Host) checkSize(cmd []byte) error {
	if max := h.maxProposal(); len(cmd) > max {
		return fmt.Errorf("%w: %d bytes, the most is %d (HostConfig.MaxProposalBytes)", ErrTooLarge, len(cmd), max)
	}
	return nil
}

func (h *Host) maxProposal() int {
	if h.cfg.MaxProposalBytes > 0 {
		return h.cfg.MaxProposalBytes
	}
	return DefaultMaxProposalBytes
}

// RegisterSession registers a client session in group g.
func (h *Host) RegisterSession(ctx context.Context, g GroupID, clientID uint64) error {
	return h.e.RegisterSession(ctx, g, clientID)
}

// UnregisterSession removes a client session from group g.
func (h *Host) UnregisterSession(ctx context.Context, g GroupID, clientID uint64) error {
	return h.e.UnregisterSession(ctx, g, clientID)
}

// ProposeSession proposes cmd in a client session: a retry with the same
// SeriesID is applied at most once and returns the first result.
func (h *Host) ProposeSession(ctx context.Context, g GroupID, s Session, cmd []byte) (statemachine.Result, error) {
	if err := h.checkSize(cmd); err != nil {
		return statemachine.Result{}, err
	}
	return h.e.ProposeSession(ctx, g, engine.Session{ClientID: s.ClientID, SeriesID: s.SeriesID, RespondedTo: s.RespondedTo}, cmd)
}

// Read answers query linearizably (ReadIndex, or the leader's lease with
// LeaseRead); it works on followers too.
func (h *Host) Read(ctx context.Context, g GroupID, query []byte) ([]byte, error) {
	return h.e.Read(ctx, g, query)
}

// StaleRead answers query from this replica as it is, which may be behind.
func (h *Host) StaleRead(ctx context.Context, g GroupID, query []byte) ([]byte, error) {
	return h.e.StaleRead(ctx, g, query)
}

// RequestSnapshot takes a snapshot of group g now and returns its index.
func (h *Host) RequestSnapshot(ctx context.Context, g GroupID, opt SnapshotOption) (uint64, error) {
	return h.e.RequestSnapshot(ctx, g, engine.SnapshotOption{
		Exported: opt.Exported, ExportPath: opt.ExportPath,
		CompactionOverhead: opt.CompactionOverhead, OverrideCompactionOverhead: opt.OverrideCompactionOverhead})
}

// AddReplica adds replica id, reachable at addr, to group g as a voter
// (or promotes a non-voter). Then start it on its host with Join.
func (h *Host) AddReplica(ctx context.Context, g GroupID, id ReplicaID, addr string) error {
	return h.e.AddReplica(ctx, g, id, addr)
}

// AddNonVoting adds replica id as a non-voter: it receives the log but
// does not vote. Promote it later with AddReplica.
func (h *Host) AddNonVoting(ctx context.Context, g GroupID, id ReplicaID, addr string) error {
	return h.e.AddNonVoting(ctx, g, id, addr)
}

// RemoveReplica removes replica id from group g; the ID is never reused.
func (h *Host) RemoveReplica(ctx context.Context, g GroupID, id ReplicaID) error {
	return h.e.RemoveReplica(ctx, g, id)
}

// TransferLeadership makes target the leader of g and waits for it.
func (h *Host) TransferLeadership(ctx context.Context, g GroupID, target ReplicaID) error {
	return h.e.TransferLeadership(ctx, g, target)
}

// WaitLeader waits until group g has a known leader and returns it.
func (h *Host) WaitLeader(ctx context.Context, g GroupID) (ReplicaID, error) {
	return h.e.WaitLeader(ctx, g)
}

// SnapshotLimits are the node-wide snapshot limits (0: unlimited), as in
// HostConfig.
type SnapshotLimits struct {
	SendBytesPerSec, RecvBytesPerSec, GenerateBytesPerSec            int64
	MaxConcurrentSends, MaxConcurrentRecvs, MaxConcurrentGenerations int
	BackgroundShare                                                  float64
}

// SetSnapshotLimits replaces the node-wide snapshot limits at runtime; the
// next chunk of every transfer and save obeys them.
func (h *Host) SetSnapshotLimits(l SnapshotLimits) {
	h.e.SetSnapshotLimits(engine.SnapshotLimits{
		SendBytesPerSec: l.SendBytesPerSec, RecvBytesPerSec: l.RecvBytesPerSec,
		GenerateBytesPerSec: l.GenerateBytesPerSec,
		MaxConcurrentSends:  l.MaxConcurrentSends, MaxConcurrentRecvs: l.MaxConcurrentRecvs,
		MaxConcurrentGenerations: l.MaxConcurrentGenerations, BackgroundShare: l.BackgroundShare})
}

// GroupStatus is a replica's state, for monitoring and tests.
type GroupStatus struct {
	GroupID    GroupID
	ReplicaID  ReplicaID
	Leader     ReplicaID // 0: none known
	Term       uint64
	Commit     uint64
	Applied    uint64
	FirstIndex uint64 // the log holds [FirstIndex, LastIndex]
	LastIndex  uint64
	LogBytes   int64
	Snapshot   SnapshotInfo // the latest published snapshot (Index 0: none)
	Members    map[ReplicaID]string
	NonVoters  map[ReplicaID]string
	Transfers  []Transfer
	// Failed is why the group stopped, if it failed.
	Failed error
}

// SnapshotInfo describes a published snapshot.
type SnapshotInfo struct {
	Index, Term uint64
	Bytes       int64
	Files       int
}

// Transfer is a snapshot transfer in flight.
type Transfer struct {
	Sending     bool
	Peer        ReplicaID
	Index       uint64
	Phase       string
	BytesDone   int64
	BytesTotal  int64
	BytesPerSec float64
	Started     time.Time
}

// GroupStatus returns group g's state on this host.
func (h *Host) GroupStatus(g GroupID) (GroupStatus, error) {
	st, err := h.e.GroupStatus(g)
	if err != nil {
		return GroupStatus{}, err
	}
	out := GroupStatus{
		GroupID: st.Group, ReplicaID: st.Replica, Leader: st.Leader, Term: st.Term,
		Commit: st.Commit, Applied: st.Applied, FirstIndex: st.FirstIndex, LastIndex: st.LastIndex,
		LogBytes: st.LogBytes, Failed: st.Failed,
		Snapshot:  SnapshotInfo{Index: st.Snapshot.Index, Term: st.Snapshot.Term, Files: len(st.Snapshot.Files)},
		Members:   members(st.Membership.Voters),
		NonVoters: members(st.Membership.NonVoters),
	}
	for _, f := range st.Snapshot.Files {
		out.Snapshot.Bytes += int64(f.Size)
	}
	for _, t := range st.Transfers {
		out.Transfers = append(out.Transfers, Transfer{
			Sending: t.Direction == engine.Sending, Peer: t.Peer, Index: t.Index, Phase: t.Phase.String(),
			BytesDone: t.BytesDone, BytesTotal: t.BytesTotal, BytesPerSec: t.BytesPerSec, Started: t.Started})
	}
	return out, nil
}

func members(ms []raftpb.Member) map[ReplicaID]string {
	out := make(map[ReplicaID]string, len(ms))
	for _, m := range ms {
		out[m.ID] = m.Addr
	}
	return out
}

// EventKind says what an Event reports.
type EventKind uint8

// Event kinds.
const (
	// LeaderChanged: Leader (0: none known) leads in Term.
	LeaderChanged = EventKind(engine.LeaderChanged)
	// SnapshotCreated: a snapshot at Index was saved and published; Bytes
	// is its size.
	SnapshotCreated = EventKind(engine.SnapshotCreated)
	// SnapshotSent: the snapshot at Index was offered to replica Peer.
	SnapshotSent = EventKind(engine.SnapshotSent)
	// SnapshotReceived: the snapshot at Index (Bytes) was received from
	// Peer, verified and published.
	SnapshotReceived = EventKind(engine.SnapshotReceived)
	// SnapshotInstalled: the state machine was restored from the snapshot
	// at Index and the log reset to it.
	SnapshotInstalled = EventKind(engine.SnapshotInstalled)
	// LogCompacted: entries up to Index were discarded.
	LogCompacted = EventKind(engine.LogCompacted)
	// SnapshotFailed: taking or installing a snapshot failed (Err). A
	// refusal that passes by itself (busy saving, no free transfer slot,
	// the host stopping) is not reported.
	SnapshotFailed = EventKind(engine.SnapshotFailed)
	// GroupFailed: the replica stopped on an error it cannot continue
	// from (state machine, storage): Err.
	GroupFailed = EventKind(engine.GroupFailed)
)

func (k EventKind) String() string { return engine.EventKind(k).String() }

// Event is something that happened to a replica of this host. Listeners
// are called from the host's goroutines, possibly concurrently, and must
// not block or call the Host.
type Event struct {
	Kind    EventKind
	Group   GroupID
	Replica ReplicaID // this host's replica
	Leader  ReplicaID // LeaderChanged
	Peer    ReplicaID // the other end of a snapshot transfer
	Term    uint64
	Index   uint64
	Bytes   int64
	Err     error
}

type listenerFunc func(Event)

func (f listenerFunc) OnEvent(e engine.Event) {
	f(Event{Kind: EventKind(e.Kind), Group: e.Group, Replica: e.Replica, Leader: e.Leader, Peer: e.Peer,
		Term: e.Term, Index: e.Index, Bytes: e.Bytes, Err: e.Err})
}

// ImportSnapshot rebuilds this host's replica of group g from a snapshot
// exported with RequestSnapshot(Exported), with a new membership (replica
// ID → Raft address): offline disaster recovery when a group lost its
// quorum. The host must be stopped. Import on every host of the new
// membership, then start them; the config-change index of the export is
// kept, and replicas of the old membership that are not in the new one
// are marked removed for good.
func ImportSnapshot(cfg HostConfig, exportDir string, g GroupID, members map[ReplicaID]string) error {
	_, err := engine.ImportSnapshot(cfg.FS, cfg.Dir, exportDir, g, members,
		engine.LogOptions{SegmentSize: cfg.LogSegmentBytes, Logger: cfg.Logger})
	return err
}

// CancelSnapshotTransfers cancels group g's snapshot transfers on this
// host: an install in progress stops (keeping its partial data for a
// resume) and the snapshots served to peer (0: every peer) are released.
// The leader offers a snapshot again later; pause catch-ups longer by
// setting the snapshot rate limits (SetSnapshotLimits).
func (h *Host) CancelSnapshotTransfers(ctx context.Context, g GroupID, peer ReplicaID) error {
	return h.e.CancelSnapshotTransfers(ctx, g, peer)
}
