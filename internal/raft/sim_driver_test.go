package raft

import (
	"encoding/binary"
	"fmt"
	"strings"

	"github.com/skiffdb/skiff/internal/raft/tracker"
	"github.com/skiffdb/skiff/raftpb"
)

// This file is the simulation's workload and fault generator: once per tick
// it proposes, reads, crashes and restarts replicas, partitions the network,
// compacts logs, changes the membership and transfers leadership; after the
// chaos phase it heals everything and waits for the group to converge.

// driverTick runs once per tick.
func (c *simCluster) driverTick() {
	if c.calm {
		c.calmTick()
	} else {
		c.chaosTick()
	}
	for _, id := range c.ids {
		c.maybeReady(c.nodes[id])
	}
}

func (c *simCluster) chaosTick() {
	for range c.rng.IntN(c.o.proposeRate + 1) {
		c.propose()
	}
	if c.rng.IntN(2) == 0 {
		c.read()
	}
	if c.rng.Float64() < c.o.pCrash {
		c.maybeCrash()
	}
	if c.rng.Float64() < c.o.pPartition {
		c.partition()
	}
	c.maybePartitionJoint()
	for _, id := range c.ids {
		if n := c.nodes[id]; n.idle() && c.rng.IntN(10) == 0 {
			c.compact(n)
		}
	}
	if c.rng.IntN(60) == 0 {
		// The leader's snapshot is "being generated" for a few requests.
		if l := c.leader(); l != nil {
			l.log.mu.Lock()
			l.log.SnapshotUnavailable = 1 + c.rng.IntN(3)
			l.log.mu.Unlock()
		}
	}
	if c.rng.IntN(80) == 0 {
		c.transfer()
	}
	if c.rng.IntN(25) == 0 {
		c.changeMembership()
	}
	if c.rng.IntN(150) == 0 {
		if n := c.randomIdle(); n != nil {
			n.r.Campaign()
		}
	}
}

// leader returns the live leader with the highest term, or nil.
func (c *simCluster) leader() *simNode {
	var l *simNode
	for _, id := range c.ids {
		n := c.nodes[id]
		if n.up() && n.r.role == Leader && (l == nil || n.r.term > l.r.term) {
			l = n
		}
	}
	return l
}

// randomIdle returns a random idle replica, or nil.
func (c *simCluster) randomIdle() *simNode {
	start := c.rng.IntN(len(c.ids))
	for i := range c.ids {
		if n := c.nodes[c.ids[(start+i)%len(c.ids)]]; n.idle() {
			return n
		}
	}
	return nil
}

// proposer picks where a client request lands: mostly a replica that
// believes it leads (a stale leader is where reads and writes go wrong),
// else any replica (which forwards).
func (c *simCluster) proposer() *simNode {
	if c.rng.IntN(3) != 0 {
		// Any replica that believes it leads, stale leaders included.
		start := c.rng.IntN(len(c.ids))
		for i := range c.ids {
			if n := c.nodes[c.ids[(start+i)%len(c.ids)]]; n.idle() && n.r.role == Leader {
				return n
			}
		}
	}
	return c.randomIdle()
}

func (c *simCluster) propose() {
	if l := c.leader(); l != nil && l.r.log.lastIndex() > l.r.log.committed+64 {
		// Back-pressure, as a host applies: the group is not keeping up.
		return
	}
	n := c.proposer()
	if n == nil {
		return
	}
	batch := 1
	if c.rng.IntN(5) == 0 {
		batch = 2 + c.rng.IntN(6)
	}
	ents := make([]raftpb.Entry, batch)
	for i := range ents {
		c.proposals++
		data := make([]byte, 8, 8+c.rng.IntN(3)*40)
		binary.BigEndian.PutUint64(data, uint64(c.proposals))
		ents[i].Data = data[:cap(data)]
	}
	err := n.r.Propose(ents...)
	if c.trace.on {
		c.trace.add(c.now, n.id, "propose", fmt.Sprintf("n=%d err=%v", batch, err))
	}
}

func (c *simCluster) read() {
	n := c.proposer()
	if n == nil {
		return
	}
	c.reads++
	c.stats.reads++
	ctx := fmt.Sprintf("r%d", c.reads)
	c.chk.readStarted(ctx)
	if c.trace.on {
		c.trace.add(c.now, n.id, "read", ctx)
	}
	n.r.ReadIndex([]byte(ctx))
}

// refMembership is the most recent membership any live replica has applied.
func (c *simCluster) refMembership() raftpb.Membership {
	var m raftpb.Membership
	found := false
	for _, id := range c.ids {
		if n := c.nodes[id]; n.up() && (!found || n.r.membership.ConfigChangeIndex > m.ConfigChangeIndex) {
			m, found = n.r.membership, true
		}
	}
	return m
}

// maybeCrash crashes a replica — often the leader, or one in the middle of
// persisting — if a quorum of every voting half stays up.
func (c *simCluster) maybeCrash() {
	n := c.nodes[c.ids[c.rng.IntN(len(c.ids))]]
	switch c.rng.IntN(3) {
	case 0:
		if l := c.leader(); l != nil {
			n = l
		}
	case 1:
		for _, id := range c.ids {
			if m := c.nodes[id]; m.up() && m.rd != nil && c.rng.IntN(2) == 0 {
				n = m
			}
		}
	}
	if n.up() && c.canCrash(n) {
		c.crash(n, false /* quick */)
	}
}

// canCrash reports whether a quorum of every voting half would stay up
// without n.
func (c *simCluster) canCrash(n *simNode) bool {
	m := c.refMembership()
	for _, half := range [][]raftpb.Member{m.Voters, m.VotersOutgoing} {
		up := 0
		for _, x := range half {
			if x.ID != n.id && c.nodes[x.ID] != nil && c.nodes[x.ID].up() {
				up++
			}
		}
		if len(half) > 0 && up <= len(half)/2 {
			return false
		}
	}
	return true
}

// partition cuts links for a while: one replica isolated, a random split,
// or one direction of a few links.
func (c *simCluster) partition() {
	c.stats.partitions++
	until := c.now + (5+c.rng.Int64N(60))*simTick
	cut := func(a, b raftpb.ReplicaID) {
		if a != b {
			c.cuts[[2]raftpb.ReplicaID{a, b}] = until
		}
	}
	kind := c.rng.IntN(4)
	switch kind {
	case 0, 3:
		// One replica (with kind 3, the leader and perhaps a follower)
		// on the minority side.
		side := map[raftpb.ReplicaID]bool{c.ids[c.rng.IntN(len(c.ids))]: true}
		if l := c.leader(); kind == 3 && l != nil {
			side = map[raftpb.ReplicaID]bool{l.id: true, c.ids[c.rng.IntN(len(c.ids))]: true}
		}
		for _, a := range c.ids {
			for _, b := range c.ids {
				if side[a] != side[b] {
					cut(a, b)
				}
			}
		}
	case 1:
		side := map[raftpb.ReplicaID]bool{}
		for _, id := range c.ids {
			side[id] = c.rng.IntN(2) == 0
		}
		for _, a := range c.ids {
			for _, b := range c.ids {
				if side[a] != side[b] {
					cut(a, b)
				}
			}
		}
	default:
		for range 1 + c.rng.IntN(4) {
			cut(c.ids[c.rng.IntN(len(c.ids))], c.ids[c.rng.IntN(len(c.ids))])
		}
	}
	if c.trace.on {
		c.trace.add(c.now, 0, "partition", fmt.Sprintf("kind=%d until=%d cuts=%v", kind, until, c.activeCuts()))
	}
}

// maybePartitionJoint sometimes cuts a leader that has just entered a joint
// configuration, with the voters only the new configuration has, off from
// everyone else: the old configuration's majority must not be able to
// decide alone, nor the new one's.
func (c *simCluster) maybePartitionJoint() {
	l := c.leader()
	if c.o.pPartition == 0 || l == nil || !l.r.membership.IsJoint() || l.r.membership.ConfigChangeIndex == c.jointCut {
		return
	}
	m := l.r.membership
	c.jointCut = m.ConfigChangeIndex
	if c.rng.IntN(2) == 0 {
		return
	}
	side := map[raftpb.ReplicaID]bool{l.id: true}
	for _, x := range m.Voters {
		if !memberOf(raftpb.Membership{Voters: m.VotersOutgoing}, x.ID) {
			side[x.ID] = true
		}
	}
	until := c.now + (5+c.rng.Int64N(40))*simTick
	for _, a := range c.ids {
		for _, b := range c.ids {
			if side[a] != side[b] {
				c.cuts[[2]raftpb.ReplicaID{a, b}] = until
			}
		}
	}
	c.stats.partitions++
	if c.trace.on {
		c.trace.add(c.now, 0, "partition", fmt.Sprintf("joint %s until=%d cuts=%v", membershipFingerprint(m), until, c.activeCuts()))
	}
}

func (c *simCluster) activeCuts() string {
	var b strings.Builder
	for _, a := range c.ids {
		for _, z := range c.ids {
			if until, ok := c.cuts[[2]raftpb.ReplicaID{a, z}]; ok && until > c.now {
				fmt.Fprintf(&b, "%d>%d ", a, z)
			}
		}
	}
	return b.String()
}

func (c *simCluster) transfer() {
	n := c.randomIdle()
	m := c.refMembership()
	if n == nil || len(m.Voters) == 0 {
		return
	}
	target := m.Voters[c.rng.IntN(len(m.Voters))].ID
	c.stats.transfers++
	if c.trace.on {
		c.trace.add(c.now, n.id, "transfer", fmt.Sprintf("to=%d", target))
	}
	n.r.TransferLeader(target)
}

// newReplica starts an empty replica with a fresh ID, to be added.
func (c *simCluster) newReplica() raftpb.ReplicaID {
	id := c.nextID
	c.nextID++
	c.start(c.addNode(id))
	return id
}

// changeMembership proposes a random valid-looking membership change at
// the leader (or, sometimes, via a follower): add a non-voter or voter,
// promote a non-voter, remove a replica (perhaps the leader), or replace a
// voter through a joint configuration.
func (c *simCluster) changeMembership() {
	l := c.leader()
	if l == nil || !l.idle() {
		return
	}
	via := l
	if c.rng.IntN(4) == 0 {
		if n := c.randomIdle(); n != nil {
			via = n
		}
	}
	m := l.r.Membership()
	var cc raftpb.ConfChange
	members := len(m.Voters) + len(m.NonVoters)
	pick := func(ms []raftpb.Member) raftpb.ReplicaID { return ms[c.rng.IntN(len(ms))].ID }
	switch op := c.rng.IntN(8); {
	case m.IsJoint():
		if m.AutoLeave {
			return
		}
		// Leave an explicitly entered joint configuration.
	case op == 0 && members < c.o.maxReplicas:
		cc.Changes = []raftpb.ConfChangeSingle{{Type: raftpb.AddNonVoter, Replica: c.newReplica()}}
	case op == 1 && members < c.o.maxReplicas:
		cc.Changes = []raftpb.ConfChangeSingle{{Type: raftpb.AddVoter, Replica: c.newReplica()}}
	case op == 2 && len(m.NonVoters) > 0:
		cc.Changes = []raftpb.ConfChangeSingle{{Type: raftpb.AddVoter, Replica: pick(m.NonVoters)}}
	case op == 3 && len(m.Voters) > 3:
		cc.Changes = []raftpb.ConfChangeSingle{{Type: raftpb.RemoveReplica, Replica: pick(m.Voters)}}
	case op == 4 && len(m.NonVoters) > 0:
		cc.Changes = []raftpb.ConfChangeSingle{{Type: raftpb.RemoveReplica, Replica: pick(m.NonVoters)}}
	case op == 7 && len(m.NonVoters) > 0:
		// Promote a non-voter in place of a voter, jointly.
		cc.Transition = raftpb.ConfChangeTransition(c.rng.IntN(3))
		cc.Changes = []raftpb.ConfChangeSingle{
			{Type: raftpb.AddVoter, Replica: pick(m.NonVoters)},
			{Type: raftpb.RemoveReplica, Replica: pick(m.Voters)},
		}
	case op >= 5 && members < c.o.maxReplicas:
		cc.Transition = raftpb.ConfChangeTransition(c.rng.IntN(3))
		cc.Changes = []raftpb.ConfChangeSingle{
			{Type: raftpb.AddVoter, Replica: c.newReplica()},
			{Type: raftpb.RemoveReplica, Replica: pick(m.Voters)},
		}
	default:
		return
	}
	c.stats.confChanges++
	err := via.r.ProposeConfigChange(cc)
	if c.trace.on {
		c.trace.add(c.now, via.id, "conf-change", fmt.Sprintf("%+v err=%v", cc, err))
	}
}

// heal ends the chaos: links are restored, crashed replicas restarted, and
// the network stops losing messages.
func (c *simCluster) heal() {
	c.calm = true
	clear(c.cuts)
	if c.trace.on {
		c.trace.add(c.now, 0, "heal", "")
	}
	for _, id := range c.ids {
		if n := c.nodes[id]; n.down && !n.retired {
			c.start(n)
		}
	}
}

// calmTick keeps the group busy enough to show it works: a probe proposal
// until one is applied, and leaving an explicit joint configuration.
func (c *simCluster) calmTick() {
	l := c.leader()
	if l == nil || !l.idle() {
		return
	}
	if m := l.r.membership; m.IsJoint() && !m.AutoLeave && l.r.pendingConfIndex <= l.r.log.applied {
		_ = l.r.ProposeConfigChange(raftpb.ConfChange{})
		return
	}
	if c.chk.finalIndex == 0 && c.now >= c.lastProbe+5*simTick {
		// Retried until applied: a proposal may be dropped (say, during
		// a leader transfer) or lost with a crashed leader.
		c.lastProbe = c.now
		_ = l.r.Propose(raftpb.Entry{Data: []byte(finalData)})
	}
}

// converged reports whether a leader exists and every live member follows
// it in its term and has applied everything it committed, including the
// probe entry.
func (c *simCluster) converged() bool {
	l := c.leader()
	if l == nil || c.chk.finalIndex == 0 {
		return false
	}
	m := l.r.membership
	if m.IsJoint() || l.r.log.committed != l.r.log.lastIndex() || l.r.log.committed < c.chk.finalIndex {
		return false
	}
	c.members = c.members[:0]
	for _, list := range [][]raftpb.Member{m.Voters, m.NonVoters} {
		for _, x := range list {
			n := c.nodes[x.ID]
			if n == nil || !n.up() || n.r.term != l.r.term || n.r.lead != l.id || n.sm.index != l.r.log.committed {
				return false
			}
			c.members = append(c.members, x.ID)
		}
	}
	return true
}

// convergence describes every replica, for a liveness failure.
func (c *simCluster) convergence() string {
	var b strings.Builder
	for _, id := range c.ids {
		n := c.nodes[id]
		fmt.Fprintf(&b, "\n  replica %d: ", id)
		switch {
		case n.retired:
			b.WriteString("retired")
			continue
		case n.down:
			b.WriteString("down")
			continue
		}
		r := n.r
		fmt.Fprintf(&b, "%s term=%d lead=%d vote=%d applied=%d committed=%d log=[%d,%d] busy=%v installing=%v membership={%s}",
			r.role, r.term, r.lead, r.vote, n.sm.index, r.log.committed, r.log.firstIndex(), r.log.lastIndex(),
			n.rd != nil, r.installing != nil, membershipFingerprint(r.membership))
		if r.role == Leader {
			r.trk.Visit(func(id raftpb.ReplicaID, pr *tracker.Progress) { fmt.Fprintf(&b, "\n    %d: %s", id, pr) })
		}
	}
	fmt.Fprintf(&b, "\n  probe entry index: %d", c.chk.finalIndex)
	return b.String()
}
