package engine

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/skiffdb/skiff/internal/logdb"
	"github.com/skiffdb/skiff/internal/raft"
	"github.com/skiffdb/skiff/internal/raft/tracker"
	"github.com/skiffdb/skiff/internal/rsm"
	"github.com/skiffdb/skiff/internal/snapshot"
	"github.com/skiffdb/skiff/raftpb"
	"github.com/skiffdb/skiff/statemachine"
)

// stepWorker drives the Raft cores of a shard of groups. One pass: drain
// every scheduled group's mailbox into its core (and tick them all when the
// ticker fired), collect the Readys, send the messages that may go before
// persisting, persist every group's entries and HardState with ONE
// logdb.SaveBatch (one fsync), send the rest, hand committed entries to the
// apply workers and Advance (DESIGN.md §6).
type stepWorker struct {
	e  *Engine
	id int

	mu    sync.Mutex
	runq  []*node
	nodes map[*node]struct{}
	// active are the nodes that tick: all but the quiesced ones, so that a
	// tick costs nothing per idle group.
	active map[*node]struct{}

	// passSeq numbers passes (under mu), to list a node once per pass.
	passSeq uint64
	// passMu is held for a whole pass, so remove can wait for a node to
	// leave the worker.
	passMu sync.Mutex
	notify chan struct{}
	quit   chan struct{}
	done   chan struct{}
	// save and saved hand a pass's updates to the saver goroutine and
	// its result back, so that the worker steps what arrives meanwhile
	// (stepDuringSave) instead of waiting in the fsync.
	save  chan []logdb.Update
	saved chan error
	// saverDone is closed when the saver goroutine has returned.
	saverDone chan struct{}

	// Scratch reused across passes.
	run     []*node
	during  []*node
	items   []readyItem
	updates []logdb.Update
	out     map[string][]raftpb.Message
}

type readyItem struct {
	n  *node
	rd raft.Ready
	// early is how many of rd.CommittedEntries went to the apply worker
	// before the pass's SaveBatch (applyDurable).
	early int
}

func newStepWorker(e *Engine, id int) *stepWorker {
	return &stepWorker{
		e: e, id: id,
		nodes:     make(map[*node]struct{}),
		active:    make(map[*node]struct{}),
		notify:    make(chan struct{}, 1),
		quit:      make(chan struct{}),
		done:      make(chan struct{}),
		out:       make(map[string][]raftpb.Message),
		save:      make(chan []logdb.Update),
		saved:     make(chan error, 1),
		saverDone: make(chan struct{}),
	}
}

func (w *stepWorker) start() {
	go w.saver()
	go w.loop()
}

func (w *stepWorker) close() {
	close(w.quit)
	<-w.done
	close(w.save) // the loop has ended: no save is in flight
	<-w.saverDone // Close returns with no goroutine of the worker left
}

// saver runs the SaveBatch of each pass (one at a time: the worker waits
// for the result before it hands over the next).
func (w *stepWorker) saver() {
	defer close(w.saverDone)
	for updates := range w.save {
		w.saved <- w.e.db.SaveBatch(updates)
	}
}

func (w *stepWorker) add(n *node) {
	w.mu.Lock()
	w.nodes[n] = struct{}{}
	w.active[n] = struct{}{}
	w.mu.Unlock()
	w.schedule(n)
}

// remove takes n out of the worker and waits for a pass using it to end.
func (w *stepWorker) remove(n *node) {
	w.mu.Lock()
	delete(w.nodes, n)
	delete(w.active, n)
	w.mu.Unlock()
	w.passMu.Lock()
	//lint:ignore SA2001 an empty critical section waits for the pass in progress
	w.passMu.Unlock()
}

// schedule queues n for the next pass. n.queued is guarded by w.mu.
func (w *stepWorker) schedule(n *node) {
	w.mu.Lock()
	if !n.queued {
		n.queued = true
		w.runq = append(w.runq, n)
	}
	w.mu.Unlock()
	select {
	case w.notify <- struct{}{}:
	default:
	}
}

func (w *stepWorker) loop() {
	defer close(w.done)
	ticker := time.NewTicker(w.e.cfg.TickInterval)
	defer ticker.Stop()
	for {
		tick := false
		select {
		case <-w.quit:
			return
		case <-w.notify:
		case <-ticker.C:
			tick = true
		}
		w.pass(tick)
	}
}

func (w *stepWorker) pass(tick bool) {
	w.passMu.Lock()
	defer w.passMu.Unlock()
	w.mu.Lock()
	w.passSeq++
	run := w.run[:0]
	for _, n := range w.runq {
		n.queued = false
		n.passSeq = w.passSeq
		run = append(run, n)
	}
	w.runq = w.runq[:0]
	if tick {
		// Scheduled nodes plus every ticking one, each once: a node must
		// not hand out two Readys in one pass.
		for n := range w.active {
			if n.passSeq != w.passSeq {
				n.passSeq = w.passSeq
				run = append(run, n)
			}
		}
	}
	w.mu.Unlock()
	w.run = run

	items := w.items[:0]
	now := time.Now()
	for _, n := range run {
		if !n.drainMailbox() {
			continue
		}
		if tick {
			n.onTick(now)
		}
		if n.raft.HasReady() {
			items = append(items, readyItem{n: n, rd: n.raft.Ready()})
		}
	}
	w.items = items
	if len(items) > 0 {
		w.handleReadies(items)
	}
	for i := range items {
		items[i] = readyItem{}
	}
}

// handleReadies persists and sends the Readys of one pass.
func (w *stepWorker) handleReadies(items []readyItem) {
	e := w.e
	// 1. Messages that may go before persisting (thesis §10.2.1).
	for i := range items {
		it := &items[i]
		w.queueMessages(it.n, it.rd.Messages)
	}
	w.flush()
	// Committed entries this replica already holds durably need not wait
	// for this pass's fsync: on a loaded leader they are the acks of the
	// previous pass, and waiting for the next append to be synced made
	// every proposal pay one more fsync before it was applied.
	for i := range items {
		items[i].applyDurable()
	}

	// 2. Persist: installed snapshots reset their logs first, then one
	// batch, one fsync, for every group.
	updates := w.updates[:0]
	var failed map[*node]error // nil unless something failed: no allocation per pass
	fail := func(n *node, err error) {
		if failed == nil {
			failed = make(map[*node]error)
		}
		failed[n] = err
	}
	for i := range items {
		it := &items[i]
		n := it.n
		if it.rd.Snapshot != nil {
			if err := e.db.ResetToSnapshot(n.group, *it.rd.Snapshot, false); err != nil {
				fail(n, fmt.Errorf("reset log to snapshot %d: %w", it.rd.Snapshot.Index, err))
				continue
			}
		}
		hs := it.rd.HardState
		if !hs.IsEmpty() && !it.rd.MustSync && len(it.rd.Entries) == 0 {
			// Only the commit index moved: nothing a crash may lose
			// (Raft recomputes commit; a durable state machine may be
			// ahead of it). Keep it for the next synced write instead of
			// paying an fsync on the commit path.
			n.unsyncedHS = hs
			continue
		}
		if hs.IsEmpty() && len(it.rd.Entries) > 0 && !n.unsyncedHS.IsEmpty() {
			hs = n.unsyncedHS
		}
		if len(it.rd.Entries) > 0 || !hs.IsEmpty() {
			n.unsyncedHS = raftpb.HardState{}
			updates = append(updates, logdb.Update{Group: n.group, Entries: it.rd.Entries, HardState: hs})
		}
	}
	if len(updates) > 0 {
		start := time.Now()
		err := w.saveAndStep(items, updates)
		e.metrics.saveLatency.Observe(since(start))
		e.metrics.saveGroups.Observe(float64(len(updates)))
		entries := 0
		for i := range updates {
			entries += len(updates[i].Entries)
		}
		e.metrics.saveEntries.Observe(float64(entries))
		if err != nil {
			e.metrics.failures.WithLabelValues("storage").Inc()
			for _, u := range updates {
				for i := range items {
					if items[i].n.group == u.Group {
						fail(items[i].n, fmt.Errorf("save log: %w", err))
					}
				}
			}
		}
	}
	for i := range updates {
		updates[i] = logdb.Update{}
	}
	w.updates = updates[:0]

	// 3. What promises durable state, then apply and Advance.
	for i := range items {
		it := &items[i]
		if err := failed[it.n]; err != nil {
			it.n.runAfterPersist(err)
			it.n.fail(err)
			continue
		}
		w.queueMessages(it.n, it.rd.MessagesAfterPersist)
	}
	w.flush()
	for i := range items {
		it := &items[i]
		if failed[it.n] != nil {
			continue
		}
		it.n.afterReady(&it.rd, it.early)
	}
}

// saveAndStep persists updates on the saver goroutine and, until that
// returns, steps the messages that arrive into the cores, so
// that acknowledgements are counted while the fsync runs rather than after
// it, and hands the entries they commit to the apply workers at once if
// they are durable here (raft.Replica.TakeCommitted).
//
// This is safe with the pass's Readys outstanding: the core allows Step
// between Ready and Advance; what it produces — appends, acknowledgements,
// votes — waits for the next Ready, so a message that promises durable
// state still leaves only after the SaveBatch that made it durable; and
// the leader counts its own entries only at Advance. Proposals, ticks,
// reads and other commands wait for the next pass (the nodes stay
// queued): stepping proposals here too cost ~10 % of the 64 × 16 in-flight
// throughput (more wake-ups, smaller batches) and gained nothing, as they
// leave with the next Ready either way.
func (w *stepWorker) saveAndStep(items []readyItem, updates []logdb.Update) error {
	for i := range items {
		// TakeCommitted may only follow a Ready whose committed entries
		// were all handed to the apply worker already.
		items[i].n.holdTake = items[i].early < len(items[i].rd.CommittedEntries)
	}
	defer func() {
		for i := range items {
			items[i].n.holdTake = false
		}
	}()
	w.save <- updates
	stepped := false
	for {
		select {
		case err := <-w.saved:
			if stepped {
				// The stepped nodes are still queued for the rest.
				select {
				case w.notify <- struct{}{}:
				default:
				}
			}
			return err
		case <-w.notify:
			stepped = true
			w.stepDuringSave()
		}
	}
}

// stepDuringSave steps the queued messages of the scheduled nodes
// (saveAndStep).
func (w *stepWorker) stepDuringSave() {
	w.mu.Lock()
	run := append(w.during[:0], w.runq...)
	w.mu.Unlock()
	w.during = run
	for _, n := range run {
		n.mu.Lock()
		if n.stopping {
			n.mu.Unlock()
			continue
		}
		msgs := n.msgs
		n.msgs = nil
		n.mu.Unlock()
		// Proposals wait for the next pass: they would only go out with
		// its Ready anyway, and there they are proposed in one batch.
		n.stepMessages(msgs)
		if n.holdTake {
			continue
		}
		if ents := n.raft.TakeCommitted(); len(ents) > 0 {
			n.wake()
			n.aw.submit(n, applyTask{batch: &rsm.Batch{Entries: ents}})
		}
	}
	clear(run)
}

// applyDurable hands the prefix of the Ready's committed entries that is
// already durable on this host to the apply worker, before the pass's
// SaveBatch. An entry is durable here once a SaveBatch of an earlier pass
// returned for it: every entry below the first of rd.Entries (the core's
// unstable log starts there, and everything before it was Advanced). An
// entry committed by the other replicas but not yet durable here is never
// applied early: an on-disk state machine must not get ahead of the local
// log (it would restart with applied > last index). Batches holding a
// config change keep the old path: the membership after them is known
// only after Advance. A Ready with a snapshot has no committed entries
// (the core hands them out after the snapshot is persisted).
func (it *readyItem) applyDurable() {
	ents := it.rd.CommittedEntries
	if len(ents) == 0 || it.rd.Snapshot != nil {
		return
	}
	k := len(ents)
	if len(it.rd.Entries) > 0 {
		first := it.rd.Entries[0].Index
		k = 0
		for k < len(ents) && ents[k].Index < first {
			k++
		}
	}
	if k == 0 {
		return
	}
	for i := range ents[:k] {
		if ents[i].Type == raftpb.EntryConfigChange {
			return
		}
	}
	it.early = k
	it.n.aw.submit(it.n, applyTask{batch: &rsm.Batch{Entries: ents[:k:k]}})
}

// queueMessages sorts msgs by destination host, intercepting snapshot
// offers to name the snapshot reader the follower must pull from.
func (w *stepWorker) queueMessages(n *node, msgs []raftpb.Message) {
	for i := range msgs {
		m := msgs[i]
		if m.Type == raftpb.MsgInstallSnapshot {
			if !n.offerSnapshot(&m) {
				continue
			}
		}
		addr := n.addrOf(m.To)
		if addr == "" {
			continue // unknown replica: Raft retries once it is known
		}
		w.out[addr] = append(w.out[addr], m)
	}
}

func (w *stepWorker) flush() {
	for addr, msgs := range w.out {
		if len(msgs) == 0 {
			continue
		}
		w.e.cfg.Transport.Send(addr, msgs)
		clear(msgs)
		w.out[addr] = msgs[:0]
	}
}

// drainMailbox moves queued input into the core. It reports false if the
// node is stopping (it is then skipped).
func (n *node) drainMailbox() bool {
	n.mu.Lock()
	if n.stopping {
		n.mu.Unlock()
		return false
	}
	msgs, props, reads, cmds, quiet := n.msgs, n.props, n.reads, n.cmds, n.quietCmds
	n.msgs, n.props, n.reads, n.cmds, n.quietCmds = nil, nil, nil, nil, nil
	n.mu.Unlock()

	if len(props) > 0 || len(reads) > 0 || len(cmds) > 0 {
		n.wake()
	}
	n.stepMessages(msgs)
	if len(props) > 0 {
		n.propose(props)
	}
	if len(reads) > 0 {
		n.parkedReads = append(n.parkedReads, reads...)
		if n.leader.Load() != 0 {
			n.issueReads()
		}
	}
	for _, fn := range cmds {
		fn()
	}
	for _, fn := range quiet {
		fn()
	}
	return true
}

// stepMessages steps messages from the network into the core.
func (n *node) stepMessages(msgs []raftpb.Message) {
	for i := range msgs {
		m := &msgs[i]
		if m.Type != raftpb.MsgHeartbeat && m.Type != raftpb.MsgHeartbeatResp {
			n.wake()
		}
		if n.removed[m.From] {
			n.e.rejectedNonMember.Add(1)
			continue
		}
		if err := n.raft.Step(*m); err != nil {
			n.log.Debug("step", "type", m.Type, "from", m.From, "err", err)
		}
	}
}

// propose hands proposals to the core: normal and session entries in one
// call, config changes one by one.
func (n *node) propose(props []*proposal) {
	ents := make([]raftpb.Entry, 0, len(props))
	batch := props[:0:0]
	for _, p := range props {
		if p.cc != nil {
			if err := n.raft.ProposeConfigChange(*p.cc); err != nil {
				n.reject(p, err)
			}
			continue
		}
		ents = append(ents, raftpb.Entry{Type: p.typ, Data: p.data})
		batch = append(batch, p)
	}
	if len(ents) == 0 {
		return
	}
	if err := n.raft.Propose(ents...); err != nil {
		if errors.Is(err, raft.ErrNoLeader) {
			// No leader known yet (an election, or a replica just
			// started): hold the proposals until one is, rather than
			// failing requests that any replica should serve. The
			// caller's context bounds the wait.
			n.parked = append(n.parked, batch...)
			return
		}
		for _, p := range batch {
			n.reject(p, err)
		}
	}
}

// issueReads asks one ReadIndex for every parked read whose caller still
// waits (step worker).
func (n *node) issueReads() {
	reads := n.parkedReads[:0]
	for _, r := range n.parkedReads {
		if !r.abandoned.Load() {
			reads = append(reads, r)
		}
	}
	n.parkedReads = nil
	if len(reads) == 0 {
		return
	}
	key := n.e.nextKey()
	n.readBatch[key] = &readBatch{reqs: reads, tick: n.tickCount}
	n.raft.ReadIndex(binary.BigEndian.AppendUint64(nil, key))
}

// unpark proposes again what waited for a leader (step worker).
func (n *node) unpark() {
	parked := n.parked
	n.parked = nil
	live := parked[:0]
	for _, p := range parked {
		if !p.abandoned.Load() {
			live = append(live, p)
		}
	}
	if len(live) > 0 {
		n.propose(live)
	}
}

func (n *node) reject(p *proposal, err error) {
	n.e.metrics.proposalsRejected.Inc()
	n.removePending(p.key)
	p.complete(statemachine.Result{}, fmt.Errorf("%w: %w", ErrRejected, err))
}

// onTick advances the core's clock and does the periodic housekeeping.
func (n *node) onTick(now time.Time) {
	if n.quiesced {
		return
	}
	n.raft.Tick()
	n.tickCount++
	n.idleTicks++
	if n.cfg.Quiesce && n.idleTicks > n.cfg.QuiesceTicks && len(n.sending) == 0 &&
		len(n.readBatch) == 0 && len(n.parked) == 0 && len(n.parkedReads) == 0 && n.settled() {
		// Every replica of the group counts the same activity, so they
		// quiesce within a tick of each other, well inside an election
		// timeout: nobody campaigns against a silent leader.
		n.quiesced = true
		n.sw.setActive(n, false)
		return
	}
	if next := n.nextTrigger.Load(); next != 0 && now.UnixNano() >= next {
		n.nextTrigger.Store(0)
		n.aw.submit(n, applyTask{fn: n.checkTrigger})
	}
	every := uint64(n.cfg.ElectionTicks)
	if n.tickCount%every != 0 {
		return
	}
	// A ReadIndex never answered (the leader changed or the message was
	// lost) is asked again; the callers' contexts bound the wait.
	for key, b := range n.readBatch {
		if n.tickCount-b.tick >= every {
			delete(n.readBatch, key)
			n.parkedReads = append(n.parkedReads, b.reqs...)
		}
	}
	if len(n.parkedReads) > 0 && n.leader.Load() != 0 {
		n.issueReads()
	}
	st := n.raft.Status()
	if st.SoftState.Role != raft.Leader {
		n.compactLimit.Store(^uint64(0))
		for peer, s := range n.sending {
			n.e.sender.Release(s.reader)
			delete(n.sending, peer)
		}
		return
	}
	limit := ^uint64(0)
	for id, pr := range st.Progress {
		if id == n.replica {
			continue
		}
		// Live followers that replicate normally keep the entries they
		// still need (unless the log is over its byte cap: then the
		// snapshot forced by the trigger compacts regardless).
		if pr.RecentActive && pr.State != tracker.StateSnapshot && pr.Match+1 < limit {
			limit = pr.Match + 1
		}
		if s, ok := n.sending[id]; ok && pr.State != tracker.StateSnapshot {
			n.e.sender.Release(s.reader)
			delete(n.sending, id)
		}
	}
	if limit != ^uint64(0) {
		limit-- // entries ≤ Match may go; Match+1 onwards are needed
	}
	if n.cfg.MaxLogBytes > 0 && uint64(n.glog.LogBytes()) > n.cfg.MaxLogBytes {
		limit = ^uint64(0)
	}
	n.compactLimit.Store(limit)
}

// offerSnapshot registers a reader of the offered snapshot with the host's
// sender and names it in the message. It reports false if the offer cannot
// be made now (Raft then retries after its snapshot timeout).
func (n *node) offerSnapshot(m *raftpb.Message) bool {
	if s, ok := n.sending[m.To]; ok {
		if s.index == m.Snapshot.Index {
			m.Context = binary.BigEndian.AppendUint64(nil, uint64(s.reader))
			return true
		}
		n.e.sender.Release(s.reader)
		delete(n.sending, m.To)
	}
	r, err := n.offerStore().OpenReader(m.Snapshot.Index)
	if err != nil {
		n.log.Warn("snapshot offer: open reader", "index", m.Snapshot.Index, "to", m.To, "err", err)
		return false
	}
	// Catching up a voter keeps the group's quorum healthy; a non-voter
	// (a new learner, a rebalance target) yields bandwidth to it
	// (REQUIREMENTS §9).
	prio := snapshot.PriorityCatchUp
	if n.isNonVoter(m.To) {
		prio = snapshot.PriorityBackground
	}
	id, err := n.e.sender.RegisterPriority(m.To, r, prio)
	if err != nil {
		r.Close()
		n.log.Warn("snapshot offer: register", "index", m.Snapshot.Index, "to", m.To, "err", err)
		return false
	}
	n.sending[m.To] = sentSnapshot{index: m.Snapshot.Index, reader: id}
	m.Context = binary.BigEndian.AppendUint64(nil, uint64(id))
	n.e.cfg.Listener.OnEvent(Event{Kind: SnapshotSent, Group: n.group, Replica: n.replica, Peer: m.To, Index: m.Snapshot.Index})
	return true
}

// transientInstallError reports whether an install was refused for a
// reason that passes by itself (the seeds' EBUSY, a full receive slot, the
// host or group stopping), as opposed to a failed transfer or load.
// A transfer canceled by CancelSnapshotTransfers is reported.
func (n *node) transientInstallError(err error) bool {
	return errors.Is(err, snapshot.ErrBusy) || errors.Is(err, snapshot.ErrNoSlot) ||
		errors.Is(err, snapshot.ErrHostDown) || n.ctx.Err() != nil
}

// isNonVoter reports whether id is a non-voter in the membership in
// effect (step worker).
func (n *node) isNonVoter(id raftpb.ReplicaID) bool {
	m := n.membership.Load()
	if m == nil {
		return false
	}
	for _, mb := range m.NonVoters {
		if mb.ID == id {
			return true
		}
	}
	return false
}

// setActive adds n to or removes it from the ticking set.
func (w *stepWorker) setActive(n *node, on bool) {
	w.mu.Lock()
	if _, member := w.nodes[n]; member {
		if on {
			w.active[n] = struct{}{}
		} else {
			delete(w.active, n)
		}
	}
	w.mu.Unlock()
}

// settled reports whether the group has nothing in flight that needs
// ticks to finish: no install, everything committed, and on a leader every
// follower holding the whole log (else a lost append would never be
// retried by a quiesced leader).
func (n *node) settled() bool {
	st := n.raft.Status()
	if st.Installing != 0 || st.LastIndex > st.HardState.Commit {
		return false
	}
	for _, pr := range st.Progress {
		if pr.Match < st.LastIndex {
			return false
		}
	}
	return true
}

// wake ends quiescence: the group is active (step worker).
func (n *node) wake() {
	n.idleTicks = 0
	if n.quiesced {
		n.quiesced = false
		n.sw.setActive(n, true)
	}
}

// afterReady hands a persisted Ready's results on and advances the core.
// The first early committed entries were handed to the apply worker
// before the save (applyDurable).
func (n *node) afterReady(rd *raft.Ready, early int) {
	if !rd.HardState.IsEmpty() {
		// Before startInstall: the executor checks an offer's term
		// against this (an older value made it refuse a valid offer).
		n.term.Store(rd.HardState.Term)
	}
	if len(rd.Entries) > 0 || len(rd.CommittedEntries) > 0 || rd.Snapshot != nil || rd.Fetch != nil {
		n.wake()
	}
	if rd.Snapshot != nil {
		n.setMembership(rd.Snapshot.Membership)
		n.e.cfg.Listener.OnEvent(Event{Kind: SnapshotInstalled, Group: n.group, Replica: n.replica,
			Index: rd.Snapshot.Index, Term: rd.Snapshot.Term})
	}
	for _, rs := range rd.ReadStates {
		if len(rs.RequestCtx) != 8 {
			continue
		}
		key := binary.BigEndian.Uint64(rs.RequestCtx)
		if b, ok := n.readBatch[key]; ok {
			delete(n.readBatch, key)
			n.aw.submit(n, applyTask{read: b, readIndex: rs.Index})
		}
	}
	if rd.Fetch != nil {
		n.startInstall(*rd.Fetch)
	}
	n.raft.Advance(*rd)
	if late := rd.CommittedEntries[early:]; len(late) > 0 {
		// The core applies config changes as it hands them out (in
		// Advance): the membership after them is the batch's.
		b := &rsm.Batch{Entries: late}
		for i := range late {
			if late[i].Type == raftpb.EntryConfigChange {
				m := n.raft.Membership()
				n.setMembership(m)
				b.Membership = &m
				break
			}
		}
		n.aw.submit(n, applyTask{batch: b})
	}
	n.runAfterPersist(nil)
	n.publishStatus()
	if n.raft.HasReady() {
		// Advance can make more work: the leader's own durable entries
		// may complete a quorum (a single replica commits only here).
		n.sw.schedule(n)
	}
}

// runAfterPersist releases waiters for this pass's persisted state.
func (n *node) runAfterPersist(err error) {
	fns := n.afterPersist
	n.afterPersist = nil
	for _, fn := range fns {
		fn(err)
	}
}

// startInstall begins fetching and installing the snapshot a leader
// offered, on a goroutine: the executor applies the registration rules,
// pulls the files over the snapshot lane, restores the state machine on
// the apply worker and resets the log through the step worker.
func (n *node) startInstall(f raft.SnapshotFetch) {
	if len(f.Context) != 8 {
		n.log.Warn("snapshot offer without a reader", "index", f.Meta.Index, "from", f.From)
		meta := f.Meta
		n.do(func() { n.raft.InstallFailed(meta) }) // not between Ready and Advance
		return
	}
	req := snapshot.InstallRequest{From: f.From, Meta: f.Meta,
		Reader: snapshot.ReaderID(binary.BigEndian.Uint64(f.Context))}
	if n.isNonVoter(n.replica) || len(n.addrs) == 0 {
		// A learner, or a replica joining with no membership yet.
		req.Priority = snapshot.PriorityBackground
	}
	meta := f.Meta
	ctx, cancel := context.WithCancel(n.ctx)
	key := n.e.nextKey() // a retry of the same snapshot has its own entry
	n.imu.Lock()
	n.installCancels[key] = cancel
	n.imu.Unlock()
	n.bg.Add(1)
	go func() {
		defer n.bg.Done()
		defer func() {
			n.imu.Lock()
			delete(n.installCancels, key)
			n.imu.Unlock()
			cancel()
		}()
		start := time.Now()
		n.exec.Install(ctx, f.Term, req, func(resp snapshot.InstallResponse) {
			switch {
			case resp.Success:
				n.e.metrics.snapshotSeconds.WithLabelValues("install").Observe(since(start))
				n.do(func() {
					if n.raft.Status().Installing == meta.Index {
						_ = n.raft.InstallSnapshot(meta)
					}
				})
			case errors.Is(resp.Err, snapshot.ErrInterrupted):
				// A retry of the same snapshot took over; it answers.
			default:
				err := resp.Err
				if err == nil {
					err = fmt.Errorf("term changed (leader term %d, ours %d)", f.Term, resp.Term)
				}
				if n.transientInstallError(err) {
					// Busy saving, no free slot, or shutting down: the
					// leader offers it again; not a failure to report.
					n.log.Debug("snapshot install deferred", "index", meta.Index, "from", f.From, "err", err)
				} else {
					n.log.Info("snapshot install failed", "index", meta.Index, "from", f.From, "err", err)
					n.e.metrics.failures.WithLabelValues("snapshot_install").Inc()
					n.e.cfg.Listener.OnEvent(Event{Kind: SnapshotFailed, Group: n.group, Replica: n.replica, Index: meta.Index, Err: err})
				}
				n.do(func() { n.raft.InstallFailed(meta) })
			}
		})
	}()
}
