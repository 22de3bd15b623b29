package raft

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"

	"github.com/skiffdb/skiff/internal/raft/confchange"
	"github.com/skiffdb/skiff/raftpb"
)

// This file is the simulation's model of a host driving one replica of a
// group: a durable MemoryLog and snapshot store that survive crashes, an
// in-memory state machine that does not, and a Ready that is persisted at a
// random later time (messages in Ready.Messages go out at once,
// MessagesAfterPersist only once the Ready is durable). The network between
// hosts drops, duplicates, delays and reorders messages and can be
// partitioned. Everything is driven by one seeded event queue, so a seed
// replays exactly.

// Time is counted in micro-ticks: a replica ticks every simTick of them.
const simTick = 10

// simOptions are the per-seed knobs, drawn from the seed.
type simOptions struct {
	replicas    int   // initial voters, 3..7
	maxReplicas int   // most live members at once
	chaosTicks  int64 // ticks of faults and workload
	calmTicks   int64 // ticks allowed to converge after healing
	preVote     bool
	checkQuorum bool
	// leaseReads: ReadOnlyLeaseBased (with CheckQuorum), crashes
	// included: a restarted replica must not vote before an election
	// timeout, or a lease held on its acknowledgement would not hold.
	leaseReads   bool
	heartbeat    int
	maxInflight  int
	inflightB    uint64
	maxMsgBytes  uint64
	maxApplyB    uint64
	snapTimeout  int
	latency      int64   // max message latency, micro-ticks
	persistLat   int64   // max persist latency, micro-ticks
	pDrop        float64 // per message
	pDup         float64 // per message
	pDelay       float64 // per message: a long delay (reordering)
	pCrash       float64 // per driver tick
	pCrashSync   float64 // per persist: power loss before the Ready is durable
	pVoteCrash   float64 // per persist of a new term or vote: the same
	pNewLeader   float64 // per elected leader: a crash within 3 ticks
	pSlowSync    float64 // per persist: a slow fsync of up to 5 ticks
	pPartition   float64 // per driver tick
	pFetchFail   float64 // per snapshot fetch
	proposeRate  int     // up to this many proposals per driver tick
	compactEvery int     // entries applied beyond the snapshot before compacting
	// stepDuringPersist: per message arriving while a Ready is being
	// persisted, the probability that it is stepped at once (and the
	// entries it commits taken with TakeCommitted), as the engine does,
	// instead of waiting for Advance.
	stepDuringPersist float64
}

func drawSimOptions(rng *rand.Rand, chaosTicks int64) simOptions {
	o := simOptions{
		replicas:     3 + rng.IntN(5),
		chaosTicks:   chaosTicks,
		calmTicks:    1000,
		preVote:      rng.IntN(2) == 0,
		checkQuorum:  rng.IntN(2) == 0,
		heartbeat:    1 + rng.IntN(2),
		maxInflight:  []int{1, 2, 4, 16, 256}[rng.IntN(5)],
		maxMsgBytes:  []uint64{64, 300, 1 << 20}[rng.IntN(3)],
		latency:      2 + rng.Int64N(25),
		persistLat:   1 + rng.Int64N(20),
		pDrop:        []float64{0, 0.01, 0.05, 0.15}[rng.IntN(4)],
		pDup:         []float64{0, 0.02, 0.1}[rng.IntN(3)],
		pDelay:       []float64{0, 0.02, 0.08}[rng.IntN(3)],
		pCrash:       []float64{0, 0.003, 0.01}[rng.IntN(3)],
		pCrashSync:   []float64{0, 0.0002, 0.001}[rng.IntN(3)],
		pSlowSync:    []float64{0, 0.002, 0.01}[rng.IntN(3)],
		pPartition:   []float64{0, 0.01, 0.03}[rng.IntN(3)],
		pFetchFail:   []float64{0, 0.2, 0.5}[rng.IntN(3)],
		proposeRate:  1 + rng.IntN(4),
		compactEvery: []int{3, 10, 40}[rng.IntN(3)],
	}
	o.maxReplicas = 7
	if rng.IntN(3) == 0 {
		o.inflightB = 200 + rng.Uint64N(2000)
	}
	if rng.IntN(3) == 0 {
		o.maxApplyB = 100 + rng.Uint64N(500)
	}
	if rng.IntN(2) == 0 {
		o.snapTimeout = 15 + rng.IntN(30)
	}
	if rng.IntN(4) == 0 {
		o.leaseReads, o.checkQuorum = true, true
	}
	if rng.IntN(4) == 0 {
		o.pVoteCrash = 0.15
	}
	if rng.IntN(3) == 0 {
		// Leaders that crash soon after election leave entries of
		// their term on a minority: the paper's Figure 8.
		o.pNewLeader = 0.5
	}
	if rng.IntN(2) == 0 {
		o.stepDuringPersist = []float64{0.3, 1}[rng.IntN(2)]
	}
	return o
}

// smState is the replicated state machine: the index it has applied and a
// hash chain over the applied entries. A snapshot's data is an smState.
type smState struct {
	index uint64
	hash  uint64
}

// simNode is one host's replica of the group.
type simNode struct {
	id  raftpb.ReplicaID
	r   *Replica // nil while down
	inc int      // incarnation, bumped by every crash
	// Durable state: survives crashes.
	log   *MemoryLog
	snaps map[uint64]smState // snapshot store: index -> data
	hs    raftpb.HardState   // last durable HardState (checked for regressions)
	// Volatile state.
	sm      smState
	rd      *Ready           // taken and not yet persisted
	early   int              // rd.CommittedEntries applied when it was taken
	inbox   []raftpb.Message // arrived while rd was outstanding
	ticks   int              // ticks that arrived while rd was outstanding
	down    bool
	retired bool // removed from the group and shut down for good
}

func (n *simNode) up() bool   { return !n.down && !n.retired }
func (n *simNode) idle() bool { return n.up() && n.rd == nil }

type simEventKind uint8

const (
	evTick simEventKind = iota
	evDriver
	evDeliver
	evPersist
	evFetchDone
	evRestart
	evUnreachable
	evCrash
)

type simEvent struct {
	at   int64
	seq  uint64
	kind simEventKind
	node raftpb.ReplicaID
	inc  int
	msg  raftpb.Message
	meta *raftpb.SnapshotMeta
}

// simHeap is a min-heap of events by (at, seq); hand-written so that pushes
// do not box events in interfaces.
type simHeap []simEvent

func (h simHeap) less(i, j int) bool {
	return h[i].at < h[j].at || (h[i].at == h[j].at && h[i].seq < h[j].seq)
}

func (h *simHeap) push(e simEvent) {
	*h = append(*h, e)
	s := *h
	for i := len(s) - 1; i > 0; {
		p := (i - 1) / 2
		if !s.less(i, p) {
			break
		}
		s[i], s[p] = s[p], s[i]
		i = p
	}
}

func (h *simHeap) pop() simEvent {
	s := *h
	top := s[0]
	last := len(s) - 1
	s[0] = s[last]
	s[last] = simEvent{}
	s = s[:last]
	for i := 0; ; {
		l, r, m := 2*i+1, 2*i+2, i
		if l < len(s) && s.less(l, m) {
			m = l
		}
		if r < len(s) && s.less(r, m) {
			m = r
		}
		if m == i {
			break
		}
		s[i], s[m] = s[m], s[i]
		i = m
	}
	*h = s
	return top
}

// simCluster is the simulated group: hosts, network, workload and checker.
type simCluster struct {
	seed   uint64
	rng    *rand.Rand
	o      simOptions
	now    int64
	seq    uint64
	events simHeap
	nodes  map[raftpb.ReplicaID]*simNode
	ids    []raftpb.ReplicaID // every node ever created, sorted
	nextID raftpb.ReplicaID
	// cuts[{from, to}] is the time until which that link drops everything.
	cuts  map[[2]raftpb.ReplicaID]int64
	calm  bool // faults stopped; converging
	chk   *simChecker
	trace simTrace
	err   error

	proposals, reads int
	// members are the live members found converged, for the final check.
	members []raftpb.ReplicaID
	// jointCut is the joint configuration maybePartitionJoint last saw.
	jointCut uint64
	// lastProbe is when the calm phase last proposed its probe entry.
	lastProbe int64
	// stats for the report and for tuning.
	stats simStats
}

type simStats struct {
	events, msgs, crashes, partitions, elections, snapshots, installs, fetchFails, confChanges int
	transfers, reads, readsServed, applied                                                     int
	// appliedEarly: entries applied before their Ready's persist
	// (durable ones) or taken with TakeCommitted during it.
	appliedEarly, taken int
}

func newSimCluster(seed uint64, o simOptions, rng *rand.Rand, trace bool) *simCluster {
	c := &simCluster{
		trace: simTrace{on: trace},
		seed:  seed,
		rng:   rng,
		o:     o,
		nodes: map[raftpb.ReplicaID]*simNode{},
		cuts:  map[[2]raftpb.ReplicaID]int64{},
	}
	c.chk = newSimChecker(c)
	// Bootstrap: every initial replica starts from a snapshot at index 1
	// holding the initial membership, so that replicas added later learn
	// it from a snapshot (the log below index 2 never exists).
	var members []raftpb.Member
	for i := 1; i <= o.replicas; i++ {
		members = append(members, raftpb.Member{ID: raftpb.ReplicaID(i)})
	}
	boot := raftpb.SnapshotMeta{FormatVersion: raftpb.SnapshotFormatVersion, Group: 1, Index: 1, Term: 1,
		Membership: raftpb.Membership{Voters: members}}
	bootSM := smState{index: 1, hash: c.chk.bootstrap(boot)}
	for i := 1; i <= o.replicas; i++ {
		n := c.addNode(raftpb.ReplicaID(i))
		if err := n.log.ApplySnapshot(boot); err != nil {
			panic(err)
		}
		n.log.SetHardState(raftpb.HardState{Term: 1, Commit: 1})
		n.hs = n.log.HardState()
		n.snaps[1] = bootSM
		c.start(n)
	}
	c.nextID = raftpb.ReplicaID(o.replicas + 1)
	c.schedule(simEvent{at: simTick, kind: evDriver})
	return c
}

// addNode creates a host for id with an empty durable state; start boots it.
func (c *simCluster) addNode(id raftpb.ReplicaID) *simNode {
	n := &simNode{id: id, log: NewMemoryLog(), snaps: map[uint64]smState{0: {}}, down: true}
	c.nodes[id] = n
	c.ids = append(c.ids, id)
	slices.Sort(c.ids)
	return n
}

// start boots n from its durable state: the state machine is rebuilt from
// the latest durable snapshot, so Config.Applied is the snapshot's index and
// the committed entries after it are applied again.
func (c *simCluster) start(n *simNode) {
	snap := n.log.SnapshotMeta()
	sm, ok := n.snaps[snap.Index]
	if !ok {
		c.fail("replica %d: snapshot %d is in the log but its data is not durable", n.id, snap.Index)
		return
	}
	cfg := Config{
		ID:                        n.id,
		Group:                     1,
		ElectionTicks:             10,
		HeartbeatTicks:            c.o.heartbeat,
		Applied:                   snap.Index,
		MaxMsgBytes:               c.o.maxMsgBytes,
		MaxInflightMsgs:           c.o.maxInflight,
		MaxInflightBytes:          c.o.inflightB,
		MaxCommittedBytesPerReady: c.o.maxApplyB,
		PreVote:                   c.o.preVote,
		CheckQuorum:               c.o.checkQuorum,
		ReadOnly:                  ReadOnlySafe,
		SnapshotTimeoutTicks:      c.o.snapTimeout,
		Seed:                      c.seed*1000003 + uint64(n.id)*101 + uint64(n.inc) + 1,
	}
	if c.o.leaseReads {
		cfg.ReadOnly = ReadOnlyLeaseBased
	}
	r, err := New(cfg, n.log)
	if err != nil {
		c.fail("replica %d: restart: %v", n.id, err)
		return
	}
	n.r, n.sm, n.down = r, sm, false
	n.rd, n.inbox, n.ticks = nil, nil, 0
	c.chk.restored(n, snap, sm)
	c.schedule(simEvent{at: c.now + 1 + c.rng.Int64N(simTick), kind: evTick, node: n.id, inc: n.inc})
	if c.trace.on {
		c.trace.add(c.now, n.id, "start", fmt.Sprintf("inc=%d snap=%d hs=%+v last=%d", n.inc, snap.Index, n.hs, r.log.lastIndex()))
	}
}

func (c *simCluster) fail(format string, args ...any) {
	if c.err == nil {
		c.err = fmt.Errorf(format, args...)
	}
}

func (c *simCluster) schedule(e simEvent) {
	c.seq++
	e.seq = c.seq
	c.events.push(e)
}

// run drives the simulation to the end; it returns the first violation.
func (c *simCluster) run() error {
	chaosEnd := c.o.chaosTicks * simTick
	end := chaosEnd + c.o.calmTicks*simTick
	for c.err == nil && len(c.events) > 0 {
		e := c.events.pop()
		if !c.calm && e.at >= chaosEnd {
			c.now = chaosEnd
			c.heal()
		}
		if e.at > end {
			return fmt.Errorf("liveness: no convergence within %d ticks after healing: %s", c.o.calmTicks, c.convergence())
		}
		c.now = e.at
		c.stats.events++
		c.handle(e)
		if c.err != nil {
			break
		}
		c.chk.afterStep()
		if c.calm && e.kind == evDriver && c.converged() {
			c.chk.final()
			return c.err
		}
	}
	return c.err
}

func (c *simCluster) handle(e simEvent) {
	n := c.nodes[e.node]
	switch e.kind {
	case evDriver:
		c.driverTick()
		c.schedule(simEvent{at: c.now + simTick, kind: evDriver})
		return
	case evTick:
		if n.inc != e.inc || !n.up() {
			return
		}
		c.schedule(simEvent{at: c.now + simTick - 1 + c.rng.Int64N(3), kind: evTick, node: n.id, inc: n.inc})
		if n.rd != nil {
			n.ticks++
			return
		}
		n.r.Tick()
	case evDeliver:
		c.deliver(e.msg)
	case evPersist:
		if n.inc != e.inc || !n.up() {
			return
		}
		p := c.o.pCrashSync
		if hs := n.rd.HardState; hs.Term != n.hs.Term || hs.Vote != n.hs.Vote {
			// Power loss is made likelier while a vote or a new term is
			// being made durable: it is the narrowest, most important
			// window (a vote sent but not persisted could be cast twice).
			p = max(p*10, c.o.pVoteCrash)
		}
		if !c.calm && c.rng.Float64() < p && c.canCrash(n) {
			// Power loss during the fsync: the Ready is lost, though
			// its Messages may already be out. The host reboots at once.
			c.crash(n, true /* quick */)
			return
		}
		c.persist(n)
	case evFetchDone:
		c.fetchDone(n, e)
	case evRestart:
		if n.inc != e.inc || n.retired || !n.down {
			return
		}
		c.start(n)
	case evCrash:
		if n.inc == e.inc && n.up() && c.canCrash(n) {
			c.crash(n, c.rng.IntN(2) == 0 /* quick */)
		}
		return
	case evUnreachable:
		if n.inc != e.inc || !n.idle() {
			return
		}
		c.trace.msg(c.now, n.id, "unreachable", &e.msg)
		c.step(n, e.msg)
	}
	if n != nil {
		c.maybeReady(n)
	}
}

// step feeds m into n, which must be idle.
func (c *simCluster) step(n *simNode, m raftpb.Message) {
	if err := n.r.Step(m); err != nil && !errors.Is(err, ErrProposalDropped) && !errors.Is(err, confchange.ErrInvalid) {
		c.fail("replica %d: step %s from %d: %v", n.id, m.Type, m.From, err)
	}
}

// deliver hands m to its recipient unless the network loses it.
func (c *simCluster) deliver(m raftpb.Message) {
	n := c.nodes[m.To]
	if n == nil || !n.up() {
		return
	}
	if until, ok := c.cuts[[2]raftpb.ReplicaID{m.From, m.To}]; ok && until > c.now {
		if m.Type == raftpb.MsgReplicate && c.rng.IntN(4) == 0 {
			// The sender's transport notices the broken link.
			c.schedule(simEvent{at: c.now + 1 + c.rng.Int64N(c.o.latency), kind: evUnreachable, node: m.From,
				inc: c.nodes[m.From].inc, msg: raftpb.Message{Type: raftpb.MsgUnreachable, Group: 1, From: m.To, To: m.From}})
		}
		return
	}
	if n.rd != nil {
		if len(n.inbox) > 0 || c.rng.Float64() >= c.o.stepDuringPersist {
			n.inbox = append(n.inbox, m)
			return
		}
		c.trace.msg(c.now, n.id, "recv during persist", &m)
		c.step(n, m)
		if n.early == len(n.rd.CommittedEntries) {
			// Everything the outstanding Ready committed is applied.
			for _, e := range n.r.TakeCommitted() {
				c.chk.apply(n, &e)
				c.stats.taken++
			}
		}
		return
	}
	c.trace.msg(c.now, n.id, "recv", &m)
	c.step(n, m)
}

// send puts ms on the network: each message may be dropped, duplicated or
// delayed (which reorders it).
func (c *simCluster) send(ms []raftpb.Message) {
	for _, m := range ms {
		c.stats.msgs++
		copies := 1
		if !c.calm {
			if c.rng.Float64() < c.o.pDrop {
				continue
			}
			if c.rng.Float64() < c.o.pDup {
				copies = 2
			}
		}
		for range copies {
			lat := 1 + c.rng.Int64N(c.o.latency)
			if !c.calm && c.rng.Float64() < c.o.pDelay {
				lat += c.rng.Int64N(40 * simTick)
			}
			c.schedule(simEvent{at: c.now + lat, kind: evDeliver, node: m.To, msg: m})
		}
	}
}

// maybeReady takes n's next Ready if it is idle and has one: messages that
// may precede persistence go out now; the rest waits for the persist event.
func (c *simCluster) maybeReady(n *simNode) {
	if !n.idle() || !n.r.HasReady() {
		return
	}
	rd := n.r.Ready()
	n.rd = &rd
	if c.trace.on {
		c.trace.add(c.now, n.id, "ready", readySummary(&rd))
	}
	c.chk.readStates(n, rd.ReadStates)
	c.send(rd.Messages)
	// As the engine does: committed entries already durable here are
	// applied at once, not after this Ready's persist (the checker fails
	// an entry that is not durable, or one applied out of order).
	n.early = durablePrefix(&rd)
	for i := range rd.CommittedEntries[:n.early] {
		c.chk.apply(n, &rd.CommittedEntries[i])
	}
	c.stats.appliedEarly += n.early
	if rd.Fetch != nil {
		meta := rd.Fetch.Meta
		c.schedule(simEvent{at: c.now + simTick + c.rng.Int64N(20*simTick), kind: evFetchDone, node: n.id, inc: n.inc,
			msg: raftpb.Message{From: rd.Fetch.From}, meta: &meta})
	}
	lat := c.rng.Int64N(c.o.persistLat + 1)
	if !c.calm && c.rng.Float64() < c.o.pSlowSync {
		lat += c.rng.Int64N(5 * simTick)
	}
	c.schedule(simEvent{at: c.now + lat, kind: evPersist, node: n.id, inc: n.inc})
}

// persist makes n's outstanding Ready durable, sends what had to wait for
// that, applies the committed entries and advances.
func (c *simCluster) persist(n *simNode) {
	rd := n.rd
	if rd.Snapshot != nil {
		meta := *rd.Snapshot
		sm, ok := n.snaps[meta.Index]
		if !ok {
			c.fail("replica %d: Ready.Snapshot %d whose data was never fetched", n.id, meta.Index)
			return
		}
		if err := n.log.ApplySnapshot(meta); err != nil {
			c.fail("replica %d: apply snapshot %d: %v", n.id, meta.Index, err)
			return
		}
		c.chk.installed(n, meta, sm)
		n.sm = sm
		c.stats.installs++
	}
	if err := n.log.Append(rd.Entries); err != nil {
		c.fail("replica %d: append %d entries at %d: %v", n.id, len(rd.Entries), rd.Entries[0].Index, err)
		return
	}
	c.chk.appended(n, rd.Entries)
	if !rd.HardState.IsEmpty() {
		c.chk.hardState(n, rd.HardState)
		n.log.SetHardState(rd.HardState)
		n.hs = rd.HardState
	}
	c.trace.add(c.now, n.id, "persisted", "")
	c.send(rd.MessagesAfterPersist)
	confChanged := false
	for i := n.early; i < len(rd.CommittedEntries); i++ {
		e := &rd.CommittedEntries[i]
		c.chk.apply(n, e)
		confChanged = confChanged || e.Type == raftpb.EntryConfigChange
	}
	n.rd = nil
	n.r.Advance(*rd)
	if confChanged {
		c.retireRemoved(n.r.Membership())
	}
	// What arrived while the Ready was outstanding.
	for n.up() && n.rd == nil && (len(n.inbox) > 0 || n.ticks > 0) {
		if n.ticks > 0 {
			n.ticks--
			n.r.Tick()
			continue
		}
		m := n.inbox[0]
		n.inbox = n.inbox[1:]
		c.trace.msg(c.now, n.id, "recv", &m)
		c.step(n, m)
	}
}

// durablePrefix is how many of rd's committed entries were durable when
// it was taken: those below its first new entry, unless one of them is a
// config change (the engine's applyDurable).
func durablePrefix(rd *Ready) int {
	ents := rd.CommittedEntries
	if rd.Snapshot != nil {
		return 0
	}
	k := len(ents)
	if len(rd.Entries) > 0 {
		k = 0
		for k < len(ents) && ents[k].Index < rd.Entries[0].Index {
			k++
		}
	}
	for i := range ents[:k] {
		if ents[i].Type == raftpb.EntryConfigChange {
			return 0
		}
	}
	return k
}

// retireRemoved shuts down replicas that an applied membership says were
// removed, as their hosts would once they learn it.
func (c *simCluster) retireRemoved(m raftpb.Membership) {
	for _, id := range m.Removed {
		n := c.nodes[id]
		if n == nil || n.retired || memberOf(m, id) {
			continue
		}
		n.retired, n.r, n.rd, n.inbox = true, nil, nil, nil
		c.trace.add(c.now, id, "retired", "")
	}
}

func memberOf(m raftpb.Membership, id raftpb.ReplicaID) bool {
	for _, list := range [][]raftpb.Member{m.Voters, m.VotersOutgoing, m.NonVoters} {
		for _, x := range list {
			if x.ID == id {
				return true
			}
		}
	}
	return false
}

// fetchDone completes (or fails) a snapshot fetch: the data is copied from
// the leader's snapshot store if it still has that snapshot and can reach
// us, made durable, then handed to the core.
func (c *simCluster) fetchDone(n *simNode, e simEvent) {
	if n.inc != e.inc || !n.up() {
		return
	}
	if n.rd != nil {
		e.at = c.now + 1
		c.schedule(e)
		return
	}
	meta := *e.meta
	src := c.nodes[e.msg.From]
	ok := src != nil && src.up() && (c.calm || c.rng.Float64() >= c.o.pFetchFail)
	var data smState
	if ok {
		data, ok = src.snaps[meta.Index]
		ok = ok && src.log.SnapshotMeta().Index >= meta.Index
	}
	if until, cut := c.cuts[[2]raftpb.ReplicaID{e.msg.From, n.id}]; cut && until > c.now {
		ok = false
	}
	if !ok {
		c.stats.fetchFails++
		if c.trace.on {
			c.trace.add(c.now, n.id, "fetch-failed", fmt.Sprintf("snap=%d from=%d", meta.Index, e.msg.From))
		}
		n.r.InstallFailed(meta)
		return
	}
	c.chk.fetched(n, meta, data)
	n.snaps[meta.Index] = data // durable before the core is told
	err := n.r.InstallSnapshot(meta)
	if c.trace.on {
		c.trace.add(c.now, n.id, "install", fmt.Sprintf("snap=%d/%d from=%d err=%v", meta.Index, meta.Term, e.msg.From, err))
	}
	if err != nil && !errors.Is(err, ErrSnapshotOutOfDate) {
		c.fail("replica %d: install snapshot %d: %v", n.id, meta.Index, err)
	}
}

// leaderElected is called when n becomes the first leader of its term.
func (c *simCluster) leaderElected(n *simNode) {
	if !c.calm && c.rng.Float64() < c.o.pNewLeader {
		c.schedule(simEvent{at: c.now + c.rng.Int64N(3*simTick), kind: evCrash, node: n.id, inc: n.inc})
	}
}

// crash loses everything n has not persisted. A quick crash (power lost
// during an fsync) restarts within a tick or two.
func (c *simCluster) crash(n *simNode, quick bool) {
	c.stats.crashes++
	n.r, n.rd, n.inbox, n.ticks, n.sm = nil, nil, nil, 0, smState{}
	n.down = true
	n.inc++
	c.trace.add(c.now, n.id, "crash", "")
	down := (1 + c.rng.Int64N(3)) * simTick
	switch {
	case quick:
		down = 1 + c.rng.Int64N(simTick)
	case c.rng.IntN(3) != 0:
		down = (5 + c.rng.Int64N(50)) * simTick
	}
	c.schedule(simEvent{at: c.now + down, kind: evRestart, node: n.id, inc: n.inc})
}

// compact takes a snapshot of n's state machine at its applied index, with
// the membership as of that index, and compacts the log behind it.
func (c *simCluster) compact(n *simNode) {
	snap := n.log.SnapshotMeta()
	if n.sm.index < snap.Index+uint64(c.o.compactEvery) {
		return
	}
	if n.sm.index != n.r.log.applied {
		c.fail("replica %d: state machine applied %d, core says %d", n.id, n.sm.index, n.r.log.applied)
		return
	}
	meta, err := n.log.CreateSnapshot(n.sm.index, n.r.Membership())
	if err != nil {
		c.fail("replica %d: create snapshot at %d: %v", n.id, n.sm.index, err)
		return
	}
	meta.Group = 1
	n.snaps[meta.Index] = n.sm
	c.chk.created(n, meta)
	// Keep a few entries behind the snapshot for slow followers, sometimes.
	keep := c.rng.Uint64N(4)
	if to := meta.Index - min(keep, meta.Index-snap.Index-1); to > snap.Index {
		if err := n.log.Compact(to); err != nil {
			c.fail("replica %d: compact to %d: %v", n.id, to, err)
			return
		}
	}
	c.stats.snapshots++
	if c.trace.on {
		c.trace.add(c.now, n.id, "snapshot", fmt.Sprintf("index=%d term=%d first=%d", meta.Index, meta.Term, n.r.log.firstIndex()))
	}
}

// readySummary is a one-line description of rd for the trace.
func readySummary(rd *Ready) string {
	s := ""
	if rd.SoftState != nil {
		s += fmt.Sprintf(" soft=%s/lead=%d", rd.SoftState.Role, rd.SoftState.Lead)
	}
	if !rd.HardState.IsEmpty() {
		s += fmt.Sprintf(" hs=%d/%d/%d", rd.HardState.Term, rd.HardState.Vote, rd.HardState.Commit)
	}
	if n := len(rd.Entries); n > 0 {
		s += fmt.Sprintf(" ents=[%d/%d..%d/%d]", rd.Entries[0].Index, rd.Entries[0].Term, rd.Entries[n-1].Index, rd.Entries[n-1].Term)
	}
	if n := len(rd.CommittedEntries); n > 0 {
		s += fmt.Sprintf(" apply=[%d..%d]", rd.CommittedEntries[0].Index, rd.CommittedEntries[n-1].Index)
	}
	if rd.Snapshot != nil {
		s += fmt.Sprintf(" snap=%d/%d", rd.Snapshot.Index, rd.Snapshot.Term)
	}
	if rd.Fetch != nil {
		s += fmt.Sprintf(" fetch=%d/%d from=%d", rd.Fetch.Meta.Index, rd.Fetch.Meta.Term, rd.Fetch.From)
	}
	s += fmt.Sprintf(" msgs=%d+%d", len(rd.Messages), len(rd.MessagesAfterPersist))
	for _, rs := range rd.ReadStates {
		s += fmt.Sprintf(" read=%s@%d", rs.RequestCtx, rs.Index)
	}
	return s
}
