package engine

import (
	"bytes"
	"cmp"
	"context"
	"fmt"
	"io"
	"iter"
	"log/slog"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/skiffdb/skiff/internal/logdb"
	"github.com/skiffdb/skiff/internal/raft"
	"github.com/skiffdb/skiff/internal/rsm"
	"github.com/skiffdb/skiff/internal/snapshot"
	"github.com/skiffdb/skiff/raftpb"
	"github.com/skiffdb/skiff/statemachine"
)

// node is one replica of one group on this host.
//
// Ownership: raft and everything marked "step" belong to the node's step
// worker; rsm, trigger and everything marked "apply" to its apply worker.
// The mailbox (mu) is how other goroutines hand work to the step worker;
// the apply queue (amu) how the step worker and snapshot goroutines hand
// work to the apply worker.
type node struct {
	e       *Engine
	cfg     GroupConfig
	group   raftpb.GroupID
	replica raftpb.ReplicaID
	log     *slog.Logger
	glog    *logdb.GroupLog
	store   *snapshot.Store
	// sendStore holds the full data snapshots generated on demand for
	// followers of an on-disk state machine, whose periodic snapshots
	// (in store) carry only metadata. nil for other state machines.
	sendStore  *snapshot.Store
	generating atomic.Bool
	exec       *snapshot.Executor
	sw         *stepWorker
	aw         *applyWorker

	// installCancels cancel the installs in progress (imu), by index.
	imu            sync.Mutex
	installCancels map[uint64]context.CancelFunc // by a host-unique key

	// ctx is canceled when the node stops; background goroutines use it.
	ctx    context.Context
	cancel context.CancelFunc
	bg     sync.WaitGroup

	// step
	raft      *raft.Replica
	addrs     map[raftpb.ReplicaID]string // from the membership in effect
	removed   map[raftpb.ReplicaID]bool
	readBatch map[uint64]*readBatch // ReadIndex contexts awaiting a ReadState
	sending   map[raftpb.ReplicaID]sentSnapshot
	tickCount uint64
	// idleTicks counts ticks without activity; quiesced stops ticking.
	idleTicks int
	quiesced  bool
	// unsyncedHS is the newest HardState whose only change was the commit
	// index: written with the next synced update (zero when none waits).
	unsyncedHS raftpb.HardState
	// parked proposals wait for a leader to be known.
	parked []*proposal
	// parkedReads wait for a leader, or for a ReadIndex to be asked again.
	parkedReads []*readRequest
	// holdTake: the Ready being persisted has committed entries that go
	// to the apply worker only after the save, so TakeCommitted must wait.
	holdTake bool
	// afterPersist run once the current pass's state is durable.
	afterPersist []func(error)

	// mailbox (mu)
	mu    sync.Mutex
	msgs  []raftpb.Message
	props []*proposal
	reads []*readRequest
	cmds  []func()
	// quietCmds run like cmds but do not end quiescence.
	quietCmds []func()
	queued    bool   // in the step worker's run queue (guarded by sw.mu)
	passSeq   uint64 // the last pass listing the node (guarded by sw.mu)
	// peerAddrs: the host each replica's messages came from, for replicas
	// the membership does not name yet (a joining replica hears from a
	// leader it has no address for).
	peerAddrs map[raftpb.ReplicaID]string
	stopErr   error
	stopping  bool

	// proposals waiting for apply (pmu), by key.
	pmu     sync.Mutex
	pending map[uint64]*proposal

	// apply
	rsm     *rsm.RSM
	trigger *snapshot.Trigger
	waiting []*readBatch // reads waiting for applied >= index
	// logBytes is the group's log size as last measured, at logBytesAt.
	// NB: GroupLog.LogBytes walks the group's runs, so its cost grows
	// with the log: measured on every applied batch it took 12 % of the
	// CPU of the latency benchmark. A byte cap in GiB cannot be overshot
	// by much in one tick.
	logBytes   uint64
	logBytesAt time.Time
	saving     atomic.Bool // a snapshot save goroutine is running
	// captureCtx is the context of a RequestSnapshot in progress, which
	// bounds its capture's wait for the apply worker.
	captureCtx atomic.Pointer[context.Context]
	// restored is the index of the last snapshot restored by an install,
	// so that SetSnapshot knows it completes an install, not a save.
	restored atomic.Uint64

	// apply queue (amu)
	amu     sync.Mutex
	atasks  []applyTask
	aqueued bool

	// status, published by the workers for readers on other goroutines.
	term, commit, applied, leader atomic.Uint64
	firstIndex, lastIndex         atomic.Uint64
	compactLimit                  atomic.Uint64
	nextTrigger                   atomic.Int64 // unix nanos; 0: none
	membership                    atomic.Pointer[raftpb.Membership]
	failed                        atomic.Pointer[error]
	stopped                       chan struct{}
	lmu                           sync.Mutex
	leaderCh                      chan struct{}
	closeOnce                     sync.Once
}

// sentSnapshot is a snapshot reader registered for a peer (leader side).
type sentSnapshot struct {
	index  uint64
	reader snapshot.ReaderID
}

// defaultMaxLogBytes is logdb's default MaxLogBytes.
const defaultMaxLogBytes = 4 << 30

func groupDir(e *Engine, g raftpb.GroupID) string {
	return e.cfg.FS.PathJoin(e.cfg.Dir, "snapshots", fmt.Sprintf("%020d", g))
}

// openNode opens a replica: its snapshot store, its log, its state machine
// (restored from the latest snapshot or, for an on-disk state machine,
// opened at its durable applied index), the Raft core and the executor.
func openNode(ctx context.Context, e *Engine, cfg GroupConfig, create statemachine.CreateFunc) (_ *node, err error) {
	n := &node{
		e:              e,
		cfg:            cfg,
		group:          cfg.Group,
		replica:        cfg.Replica,
		log:            e.cfg.Logger.With("group", uint64(cfg.Group), "replica", uint64(cfg.Replica)),
		glog:           e.db.Group(cfg.Group),
		readBatch:      make(map[uint64]*readBatch),
		sending:        make(map[raftpb.ReplicaID]sentSnapshot),
		pending:        make(map[uint64]*proposal),
		installCancels: make(map[uint64]context.CancelFunc),
		stopped:        make(chan struct{}),
	}
	n.compactLimit.Store(^uint64(0))
	if n.cfg.MaxLogBytes == 0 {
		// The host's cap: a group past it is forced to snapshot so that
		// one slow group never makes the shared log grow without bound.
		n.cfg.MaxLogBytes = defaultMaxLogBytes
		if e.cfg.LogDB.MaxLogBytes > 0 {
			n.cfg.MaxLogBytes = uint64(e.cfg.LogDB.MaxLogBytes)
		}
	}
	n.ctx, n.cancel = context.WithCancel(context.Background())
	defer func() {
		if err != nil {
			n.cancel()
			n.closeResources()
		}
	}()
	n.store, err = snapshot.Open(e.cfg.FS, groupDir(e, cfg.Group), snapshot.Options{
		Group: cfg.Group, Retained: cfg.SnapshotsRetained, Logger: n.log, Throttle: e.throttle})
	if err != nil {
		return nil, fmt.Errorf("engine: group %d: open snapshots: %w", cfg.Group, err)
	}
	if err := n.bootstrap(); err != nil {
		return nil, err
	}
	_, logSnap, err := n.glog.InitialState()
	if err != nil {
		return nil, fmt.Errorf("engine: group %d: %w", cfg.Group, err)
	}
	sm := create(uint64(cfg.Group), uint64(cfg.Replica))
	if sm == nil {
		return nil, fmt.Errorf("engine: group %d: create returned no state machine", cfg.Group)
	}
	// The rsm starts with the log's snapshot membership (a bootstrapped
	// group's initial one); a restore or config changes replace it.
	n.rsm, err = rsm.New(rsm.Config{Group: uint64(cfg.Group), Replica: uint64(cfg.Replica), SM: sm,
		Membership: logSnap.Membership, Logger: n.log})
	if err != nil {
		sm.Close()
		return nil, fmt.Errorf("engine: group %d: %w", cfg.Group, err)
	}
	if n.rsm.OnDisk() {
		n.sendStore, err = snapshot.Open(e.cfg.FS, groupDir(e, cfg.Group)+"-send", snapshot.Options{
			Group: cfg.Group, Retained: 1, Logger: n.log, Throttle: e.throttle})
		if err != nil {
			return nil, fmt.Errorf("engine: group %d: open send snapshots: %w", cfg.Group, err)
		}
	}
	applied, replayFrom, err := n.loadStateMachine(ctx)
	if err != nil {
		return nil, err
	}
	n.raft, err = raft.New(raft.Config{
		ID:              cfg.Replica,
		Group:           cfg.Group,
		ElectionTicks:   cfg.ElectionTicks,
		HeartbeatTicks:  cfg.HeartbeatTicks,
		Applied:         applied,
		MaxMsgBytes:     cfg.MaxMsgBytes,
		MaxInflightMsgs: cfg.MaxInflightMsgs,
		PreVote:         cfg.PreVote,
		CheckQuorum:     cfg.CheckQuorum || cfg.LeaseRead,
		ReadOnly:        readOnly(cfg.LeaseRead),
		Logger:          n.log,
	}, &logReader{GroupLog: n.glog, n: n})
	if err != nil {
		return nil, fmt.Errorf("engine: group %d: %w", cfg.Group, err)
	}
	if replayFrom < applied {
		// An on-disk state machine already holds (replayFrom, applied]:
		// only the rsm's bookkeeping replays them, with the membership
		// the core derived for the applied index.
		if err := n.replayOnDisk(replayFrom, applied, n.raft.Membership()); err != nil {
			return nil, err
		}
	}
	n.setMembership(n.raft.Membership())
	n.publishStatus()
	n.exec, err = snapshot.NewExecutor(snapshot.ExecutorConfig{
		Store:              n.store,
		Log:                execLog{n},
		Raft:               execRaft{n},
		StateMachine:       execSM{n},
		Fetch:              n.fetcher(e.receiver.Fetcher(n.store, n.sourceFor)),
		SnapshotMinGap:     cfg.SnapshotMinGap,
		CompactionOverhead: cfg.CompactionOverhead,
		Logger:             n.log,
		OnError:            func(err error) { n.log.Warn("snapshot error", "err", err) },
	})
	if err != nil {
		return nil, fmt.Errorf("engine: group %d: %w", cfg.Group, err)
	}
	now := time.Now()
	n.trigger = snapshot.NewTrigger(snapshot.Policy{
		SnapshotEntries:  cfg.SnapshotEntries,
		SnapshotInterval: cfg.SnapshotInterval,
		SnapshotMinGap:   cfg.SnapshotMinGap,
		MaxLogBytes:      n.cfg.MaxLogBytes,
	}, now, rand.New(rand.NewPCG(uint64(cfg.Group), uint64(cfg.Replica)^uint64(now.UnixNano()))))
	n.publishTrigger()
	n.sw = e.steps[int(uint64(cfg.Group)%uint64(len(e.steps)))]
	n.aw = e.apply[int(uint64(cfg.Group)%uint64(len(e.apply)))]
	return n, nil
}

func readOnly(lease bool) raft.ReadOnlyOption {
	if lease {
		return raft.ReadOnlyLeaseBased
	}
	return raft.ReadOnlySafe
}

// bootstrap writes the initial membership of a new group into its log, as
// etcd does: entries 1..n at term 1, one config change adding each initial
// voter, committed. Every initial replica writes the same entries, and a
// replica that joins later receives them from the leader like any other
// entries, so it derives the same membership. (A bootstrap snapshot would
// leave a joiner with entries but no base membership to apply them to.)
// A joining replica starts empty.
func (n *node) bootstrap() error {
	hs, snap, err := n.glog.InitialState()
	if err != nil {
		return fmt.Errorf("engine: group %d: %w", n.group, err)
	}
	last, _ := n.glog.LastIndex()
	if !hs.IsEmpty() || !snap.IsEmpty() || last > 0 {
		return nil // existing replica: its state wins over cfg.Members
	}
	if _, ok := n.store.Latest(); ok {
		return nil // a snapshot (installed or imported) will set the state
	}
	if n.cfg.Join {
		return nil
	}
	voters := membersOf(n.cfg.Members)
	ents := make([]raftpb.Entry, len(voters))
	for i, m := range voters {
		cc := raftpb.ConfChange{Changes: []raftpb.ConfChangeSingle{{Type: raftpb.AddVoter, Replica: m.ID, Addr: m.Addr}}}
		ents[i] = raftpb.Entry{Term: 1, Index: uint64(i + 1), Type: raftpb.EntryConfigChange, Data: cc.Marshal()}
	}
	return n.e.db.SaveBatch([]logdb.Update{{Group: n.group, Entries: ents,
		HardState: raftpb.HardState{Term: 1, Commit: uint64(len(ents))}}})
}

// loadStateMachine brings the state machine to a point the log continues
// from and returns the applied index for Raft: restore the latest
// snapshot (completing an install or save that a crash interrupted), or
// for an on-disk state machine open it at its durable index and replay
// only the session bookkeeping of the entries it already has.
func (n *node) loadStateMachine(ctx context.Context) (applied, replayFrom uint64, err error) {
	_, logSnap, err := n.glog.InitialState()
	if err != nil {
		return 0, 0, err
	}
	smApplied, err := n.rsm.Open(ctx)
	if err != nil {
		return 0, 0, fmt.Errorf("engine: group %d: open state machine: %w", n.group, err)
	}
	latest, ok := n.store.Latest()
	if ok && latest.Index > logSnap.Index {
		// The snapshot was published but the log never learned of it
		// (a crash between publish and SetSnapshot, after a save or an
		// install): finish the job. Raft Fig. 13 rule 7 decides whether
		// the log after it is kept.
		t, terr := n.glog.Term(latest.Index)
		keep := terr == nil && t == latest.Term
		if err := n.e.db.ResetToSnapshot(n.group, latest, keep); err != nil {
			return 0, 0, fmt.Errorf("engine: group %d: record snapshot %d: %w", n.group, latest.Index, err)
		}
		logSnap = latest
	}
	if ok && latest.Index < logSnap.Index {
		// The log's snapshot failed verification and the store fell back
		// to an older one (Store.Skipped): usable only while the log
		// still holds every entry after it.
		first, _ := n.glog.FirstIndex()
		if latest.Index+1 < first {
			return 0, 0, fmt.Errorf("engine: group %d: %w: the newest valid snapshot is %d but the log starts at %d%s",
				n.group, snapshot.ErrNoValidSnapshot, latest.Index, first, n.skippedSnapshots())
		}
		t, terr := n.glog.Term(latest.Index)
		if terr != nil || t != latest.Term {
			return 0, 0, fmt.Errorf("engine: group %d: %w: fallback snapshot %d does not match the log (term %d, %v)%s",
				n.group, snapshot.ErrNoValidSnapshot, latest.Index, t, terr, n.skippedSnapshots())
		}
		if err := n.e.db.ResetToSnapshot(n.group, latest, true); err != nil {
			return 0, 0, fmt.Errorf("engine: group %d: fall back to snapshot %d%s: %w",
				n.group, latest.Index, n.skippedSnapshots(), err)
		}
		n.log.Warn("fell back to an older snapshot; the log covers the gap", "snapshot", latest.Index)
		logSnap = latest
	}
	last, err := n.glog.LastIndex()
	if err != nil {
		return 0, 0, err
	}
	snapIndex := logSnap.Index
	if !ok {
		if snapIndex > 0 {
			return 0, 0, fmt.Errorf("engine: group %d: %w: the log starts after snapshot %d but no valid snapshot is stored%s",
				n.group, snapshot.ErrNoValidSnapshot, snapIndex, n.skippedSnapshots())
		}
		if err := rsm.CheckStart(0, smApplied, last); err != nil {
			return 0, 0, fmt.Errorf("engine: group %d: %w", n.group, err)
		}
		return smApplied, 0, nil
	}
	if err := n.restoreFrom(ctx, latest.Index); err != nil {
		return 0, 0, err
	}
	if !n.rsm.OnDisk() {
		if err := rsm.CheckStart(latest.Index, latest.Index, last); err != nil {
			return 0, 0, fmt.Errorf("engine: group %d: %w", n.group, err)
		}
		return latest.Index, latest.Index, nil
	}
	// An on-disk state machine: the rsm restored only the sessions if
	// its data was current, else the data too (rsm.Restore decides).
	restored, _ := n.rsm.LastApplied()
	applied = max(smApplied, restored)
	if err := rsm.CheckStart(latest.Index, applied, last); err != nil {
		return 0, 0, fmt.Errorf("engine: group %d: %w", n.group, err)
	}
	return applied, restored, nil
}

// skippedSnapshots names the snapshots Open quarantined, for errors.
func (n *node) skippedSnapshots() string {
	var b strings.Builder
	for _, sk := range n.store.Skipped() {
		fmt.Fprintf(&b, "; snapshot %d failed verification: %v", sk.Index, sk.Err)
	}
	return b.String()
}

// restoreFrom restores the state machine from the published snapshot at
// index, verifying every file first.
func (n *node) restoreFrom(ctx context.Context, index uint64) error {
	r, err := n.store.OpenReader(index)
	if err != nil {
		return fmt.Errorf("engine: group %d: %w", n.group, err)
	}
	defer r.Close()
	if err := r.Verify(); err != nil {
		return fmt.Errorf("engine: group %d: snapshot %d: %w", n.group, index, err)
	}
	return restoreRSM(ctx, n.rsm, r)
}

// restoreRSM hands a snapshot's stream and files to the rsm.
func restoreRSM(ctx context.Context, s *rsm.RSM, r *snapshot.Reader) error {
	meta := r.Meta()
	var data io.Reader = bytes.NewReader(nil) // no stream: empty
	var files []statemachine.SnapshotFile
	for _, f := range meta.Files {
		if f.Name == snapshot.DataFile {
			df, err := r.OpenFile(f.Name)
			if err != nil {
				return err
			}
			defer df.Close()
			data = io.NewSectionReader(df, 0, int64(f.Size))
			continue
		}
		p, err := r.Path(f.Name)
		if err != nil {
			return err
		}
		files = append(files, statemachine.SnapshotFile{Name: f.Name, Path: p, Size: int64(f.Size)})
	}
	if err := s.Restore(ctx, meta, data, files); err != nil {
		return fmt.Errorf("restore snapshot %d: %w", meta.Index, err)
	}
	return nil
}

// replayOnDisk feeds the entries (from, to] to the rsm's session
// bookkeeping in one batch (an on-disk state machine already applied them);
// m is the membership in effect at to.
func (n *node) replayOnDisk(from, to uint64, m raftpb.Membership) error {
	var ents []raftpb.Entry
	for lo := from + 1; lo <= to; {
		part, err := n.glog.Entries(lo, to+1, 8<<20)
		if err != nil {
			return fmt.Errorf("engine: group %d: replay (%d, %d]: %w", n.group, from, to, err)
		}
		ents = append(ents, part...)
		lo += uint64(len(part))
	}
	if err := n.rsm.ReplayOnDisk(rsm.Batch{Entries: ents, Membership: &m}); err != nil {
		return fmt.Errorf("engine: group %d: replay: %w", n.group, err)
	}
	return nil
}

// membersOf returns members as raftpb members sorted by ID (membership
// lists are sorted).
func membersOf(members map[raftpb.ReplicaID]string) []raftpb.Member {
	out := make([]raftpb.Member, 0, len(members))
	for id, addr := range members {
		out = append(out, raftpb.Member{ID: id, Addr: addr})
	}
	slices.SortFunc(out, func(a, b raftpb.Member) int { return cmp.Compare(a.ID, b.ID) })
	return out
}

// setMembership records the membership in effect (step worker).
func (n *node) setMembership(m raftpb.Membership) {
	addrs := make(map[raftpb.ReplicaID]string)
	for mb := range allMembers(&m) {
		addrs[mb.ID] = mb.Addr
	}
	removed := make(map[raftpb.ReplicaID]bool, len(m.Removed))
	for _, id := range m.Removed {
		removed[id] = true
	}
	n.addrs, n.removed = addrs, removed
	c := m.Clone()
	n.membership.Store(&c)
}

// publishStatus copies the core's state for readers on other goroutines
// (step worker).
func (n *node) publishStatus() {
	st := n.raft.BasicStatus() // after every Ready: no clones
	n.term.Store(st.HardState.Term)
	n.commit.Store(st.HardState.Commit)
	if lead := uint64(st.SoftState.Lead); n.leader.Swap(lead) != lead {
		n.leaderUpdated(lead, st.HardState.Term)
	}
	if st.SoftState.Lead != raftpb.None && len(n.parked) > 0 {
		n.unpark()
	}
	if st.SoftState.Lead != raftpb.None && len(n.parkedReads) > 0 {
		n.issueReads()
	}
	n.firstIndex.Store(st.FirstIndex)
	n.lastIndex.Store(st.LastIndex)
}

// leaderUpdated wakes the waiters for a leader change and tells the
// listener (step worker).
func (n *node) leaderUpdated(lead, term uint64) {
	n.notifyLeader()
	n.e.metrics.leaderChanges.Inc()
	n.e.cfg.Listener.OnEvent(Event{Kind: LeaderChanged, Group: n.group, Replica: n.replica,
		Leader: raftpb.ReplicaID(lead), Term: term})
}

// deliver queues a message from the network (transport goroutine).
func (n *node) deliver(m raftpb.Message, from string) {
	n.mu.Lock()
	if n.stopping {
		n.mu.Unlock()
		return
	}
	n.msgs = append(n.msgs, m)
	if from != "" && n.peerAddrs[m.From] != from {
		if n.peerAddrs == nil {
			n.peerAddrs = make(map[raftpb.ReplicaID]string)
		}
		n.peerAddrs[m.From] = from
	}
	n.mu.Unlock()
	n.sw.schedule(n)
}

// unreachable tells Raft that the replicas at addr did not get messages.
func (n *node) unreachable(addr string) {
	if !n.hasMemberAt(addr) {
		return // most groups of a host have no replica there: no work queued
	}
	n.doQuiet(func() {
		for id, a := range n.addrs {
			if a == addr && id != n.replica {
				_ = n.raft.Step(raftpb.Message{Type: raftpb.MsgUnreachable, From: id, Group: n.group})
			}
		}
	})
}

// hasMemberAt reports whether the membership in effect has a replica at
// addr (any goroutine).
func (n *node) hasMemberAt(addr string) bool {
	for mb := range allMembers(n.membership.Load()) {
		if mb.Addr == addr {
			return true
		}
	}
	return false
}

// allMembers yields every voter (incoming and outgoing) and non-voter of
// m; nothing for nil.
func allMembers(m *raftpb.Membership) iter.Seq[raftpb.Member] {
	return func(yield func(raftpb.Member) bool) {
		if m == nil {
			return
		}
		for _, l := range [][]raftpb.Member{m.Voters, m.VotersOutgoing, m.NonVoters} {
			for _, mb := range l {
				if !yield(mb) {
					return
				}
			}
		}
	}
}

// mailbox queues work for the step worker: add runs under the mailbox
// lock unless the node is stopping, and the node is scheduled. It reports
// false if the node is stopping.
func (n *node) mailbox(add func()) bool {
	n.mu.Lock()
	if n.stopping {
		n.mu.Unlock()
		return false
	}
	add()
	n.mu.Unlock()
	n.sw.schedule(n)
	return true
}

// do runs fn on the step worker with the core (asynchronously).
func (n *node) do(fn func()) bool {
	return n.mailbox(func() { n.cmds = append(n.cmds, fn) })
}

// doQuiet is do for housekeeping that is no group activity: it does not
// wake a quiesced group (a peer host being down must not wake every group
// at every reconnect attempt).
func (n *node) doQuiet(fn func()) bool {
	return n.mailbox(func() { n.quietCmds = append(n.quietCmds, fn) })
}

// doWait runs fn on the step worker and waits for it. It is for the
// engine's own housekeeping (recording snapshots, compacting, canceling
// transfers), which is no group activity: it does not wake a quiesced
// group (a follower woken alone would campaign against its silent leader).
func (n *node) doWait(ctx context.Context, fn func() error) error {
	done := make(chan error, 1)
	if !n.doQuiet(func() { done <- fn() }) {
		return n.stoppedErr()
	}
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	case <-n.stopped:
		return n.stoppedErr()
	}
}

func (n *node) stoppedErr() error {
	if p := n.failed.Load(); p != nil {
		return fmt.Errorf("%w: %w", ErrGroupFailed, *p)
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.stopErr != nil {
		return n.stopErr
	}
	return ErrGroupStopped
}

// fail stops the group on an error it cannot continue from.
func (n *node) fail(err error) {
	if n.failed.CompareAndSwap(nil, &err) {
		n.log.Error("group failed", "err", err)
		n.e.metrics.failures.WithLabelValues("group").Inc()
		n.e.cfg.Listener.OnEvent(Event{Kind: GroupFailed, Group: n.group, Replica: n.replica, Err: err})
		n.stop(fmt.Errorf("%w: %w", ErrGroupFailed, err))
	}
}

// stop marks the node stopping: no new work is queued, waiters are
// released with err, background goroutines are canceled.
func (n *node) stop(err error) {
	n.mu.Lock()
	if n.stopping {
		n.mu.Unlock()
		return
	}
	n.stopping = true
	n.stopErr = err
	props, reads := n.props, n.reads
	n.props, n.reads, n.msgs, n.cmds, n.quietCmds = nil, nil, nil, nil, nil
	n.mu.Unlock()
	close(n.stopped)
	n.cancel()
	if n.exec != nil {
		n.exec.Stop()
	}
	for _, p := range props {
		p.complete(statemachine.Result{}, err)
	}
	for _, r := range reads {
		r.complete(nil, err)
	}
	n.pmu.Lock()
	pending := n.pending
	n.pending = map[uint64]*proposal{}
	n.pmu.Unlock()
	for _, p := range pending {
		p.complete(statemachine.Result{}, err)
	}
}

// closeResources releases what the node holds once no worker runs it.
func (n *node) closeResources() {
	n.closeOnce.Do(func() {
		n.bg.Wait()
		// No worker runs the node any more: release the snapshots it
		// still offered, so that they are not pinned until the sender's
		// idle timeout.
		for peer, s := range n.sending {
			n.e.sender.Release(s.reader)
			delete(n.sending, peer)
		}
		if n.rsm != nil {
			if err := n.rsm.Close(); err != nil {
				n.log.Warn("close state machine", "err", err)
			}
		}
		if n.store != nil {
			n.store.Close()
		}
		if n.sendStore != nil {
			n.sendStore.Close()
		}
	})
}

// sourceFor returns the leader's snapshot lane for an install request.
func (n *node) sourceFor(req snapshot.InstallRequest) (snapshot.FileSource, error) {
	for mb := range allMembers(n.membership.Load()) {
		if mb.ID == req.From {
			return n.e.snapshotSource(mb.Addr), nil
		}
	}
	n.mu.Lock()
	addr := n.peerAddrs[req.From]
	n.mu.Unlock()
	if addr != "" {
		return n.e.snapshotSource(addr), nil
	}
	return nil, fmt.Errorf("engine: group %d: no address for replica %d", n.group, req.From)
}

// fetcher wraps the receiver's fetch to report received snapshots.
func (n *node) fetcher(fetch func(context.Context, snapshot.InstallRequest) (raftpb.SnapshotMeta, error)) func(context.Context, snapshot.InstallRequest) (raftpb.SnapshotMeta, error) {
	return func(ctx context.Context, req snapshot.InstallRequest) (raftpb.SnapshotMeta, error) {
		start := time.Now()
		m, err := fetch(ctx, req)
		if err != nil {
			return m, err
		}
		var bytes int64
		for _, f := range m.Files {
			bytes += int64(f.Size)
		}
		n.e.metrics.snapshotBytes.WithLabelValues("received").Add(float64(bytes))
		n.e.metrics.snapshotSeconds.WithLabelValues("transfer").Observe(since(start))
		n.e.cfg.Listener.OnEvent(Event{Kind: SnapshotReceived, Group: n.group, Replica: n.replica,
			Peer: req.From, Index: m.Index, Term: m.Term, Bytes: bytes})
		return m, nil
	}
}

// addrOf returns the address of replica id (step worker).
func (n *node) addrOf(id raftpb.ReplicaID) string {
	if a, ok := n.addrs[id]; ok {
		return a
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.peerAddrs[id]
}
