package rafttest

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/skiffdb/skiff/internal/raft"
	"github.com/skiffdb/skiff/internal/raft/confchange"
	"github.com/skiffdb/skiff/raftpb"
)

// Group is the group every replica of an Env belongs to.
const Group raftpb.GroupID = 1

// Node is one replica and the host-side state the Env keeps for it.
type Node struct {
	*raft.Replica
	// Log is the replica's durable log; it survives Restart.
	Log *raft.MemoryLog
	// Config is what the replica was created with (Applied aside).
	Config raft.Config
	// Applied is the state machine: every entry handed out for applying,
	// in order, since the last restart (or installed snapshot).
	Applied []raftpb.Entry
	// AppliedIndex is the index of the last applied entry or snapshot.
	AppliedIndex uint64
	// Fetch is the snapshot the replica asked to fetch and that is not
	// yet installed or failed.
	Fetch *raft.SnapshotFetch
	// ReadStates collects every ReadState the replica produced.
	ReadStates []raft.ReadState
}

// Env is a set of replicas of one group, a message queue between them, and
// the output of the last commands. It is not safe for concurrent use.
type Env struct {
	// Nodes[i] is replica i+1.
	Nodes []*Node
	// Messages are sent and not yet delivered or dropped, in send order.
	Messages []raftpb.Message
	// Out collects what commands print; Handle returns and resets it.
	Out strings.Builder

	// partition maps a replica to its side; replicas on different sides
	// (or one on no side while a partition is set) cannot talk.
	partition map[raftpb.ReplicaID]int
	// leaders records the leader seen in each term (election safety).
	leaders map[uint64]raftpb.ReplicaID
	// applied records the entry applied at each index by any replica
	// (state machine safety).
	applied map[uint64]raftpb.Entry
}

// New returns an empty Env.
func New() *Env {
	return &Env{leaders: map[uint64]raftpb.ReplicaID{}, applied: map[uint64]raftpb.Entry{}}
}

func (env *Env) printf(format string, args ...any) { fmt.Fprintf(&env.Out, format, args...) }

// Node returns replica id, or nil.
func (env *Env) Node(id raftpb.ReplicaID) *Node {
	if id == 0 || int(id) > len(env.Nodes) {
		return nil
	}
	return env.Nodes[id-1]
}

// NodeOptions configure AddNodes.
type NodeOptions struct {
	// Voters and Learners form the initial membership, held in a snapshot
	// at Index (term 1). Without voters, the new replicas start with an
	// empty log and no membership: they wait to be added and caught up.
	Voters, Learners []raftpb.ReplicaID
	// Index is the initial snapshot's index (default 1).
	Index uint64
	// Config is the template for each replica's config; ID and Seed are
	// set per replica. Zero ElectionTicks/HeartbeatTicks mean 6 and 2.
	Config raft.Config
}

// AddNodes adds n replicas with the next free IDs.
func (env *Env) AddNodes(n int, opts NodeOptions) error {
	for range n {
		id := raftpb.ReplicaID(len(env.Nodes) + 1)
		cfg := opts.Config
		cfg.ID, cfg.Group, cfg.Seed = id, Group, uint64(id)
		if cfg.ElectionTicks == 0 {
			cfg.ElectionTicks = 6
		}
		if cfg.HeartbeatTicks == 0 {
			cfg.HeartbeatTicks = 2
		}
		ml := raft.NewMemoryLog()
		if len(opts.Voters) > 0 {
			var m raftpb.Membership
			for _, v := range opts.Voters {
				m.Voters = append(m.Voters, raftpb.Member{ID: v})
			}
			for _, l := range opts.Learners {
				m.NonVoters = append(m.NonVoters, raftpb.Member{ID: l})
			}
			index := max(opts.Index, 1)
			meta := raftpb.SnapshotMeta{FormatVersion: raftpb.SnapshotFormatVersion, Group: Group,
				Index: index, Term: 1, Membership: m}
			if err := ml.ApplySnapshot(meta); err != nil {
				return err
			}
			ml.SetHardState(raftpb.HardState{Term: 1, Commit: index})
		}
		r, err := raft.New(cfg, tracingLog{MemoryLog: ml, env: env, id: id})
		if err != nil {
			return err
		}
		snap := ml.SnapshotMeta()
		env.Nodes = append(env.Nodes, &Node{Replica: r, Log: ml, Config: cfg, AppliedIndex: snap.Index})
	}
	return nil
}

// Restart rebuilds replica id from its MemoryLog, as after a crash:
// everything not persisted (unstable entries, queued output, a fetch in
// progress, the state machine) is lost, and the state machine is rebuilt
// from the snapshot and the committed log.
func (env *Env) Restart(id raftpb.ReplicaID) error {
	n := env.Node(id)
	r, err := raft.New(n.Config, tracingLog{MemoryLog: n.Log, env: env, id: id})
	if err != nil {
		return err
	}
	n.Replica, n.Fetch, n.Applied = r, nil, nil
	n.AppliedIndex = n.Log.SnapshotMeta().Index
	return nil
}

// CrashAfterSend takes replica id's Ready, sends only Ready.Messages (those
// that may go before persisting), and crashes before anything is
// persisted: the replica restarts from its MemoryLog (see Restart).
func (env *Env) CrashAfterSend(id raftpb.ReplicaID) error {
	n := env.Node(id)
	if n.HasReady() {
		rd := n.Ready()
		env.Out.WriteString(DescribeReady(rd))
		env.Messages = append(env.Messages, rd.Messages...)
	}
	env.printf("crashed before persisting; restarted\n")
	return env.Restart(id)
}

// ProcessReady handles one Ready of replica id as a host would: queue
// Messages, persist the snapshot, entries and HardState, queue
// MessagesAfterPersist, apply committed entries, record a fetch and read
// states, then Advance. It prints the Ready and reports whether there was
// one.
func (env *Env) ProcessReady(id raftpb.ReplicaID) (bool, error) {
	n := env.Node(id)
	if !n.HasReady() {
		return false, nil
	}
	rd := n.Ready()
	env.Out.WriteString(DescribeReady(rd))
	env.Messages = append(env.Messages, rd.Messages...)
	if rd.Snapshot != nil {
		if err := n.Log.ApplySnapshot(*rd.Snapshot); err != nil {
			return true, fmt.Errorf("apply snapshot: %w", err)
		}
		n.Applied, n.AppliedIndex = nil, rd.Snapshot.Index
	}
	if err := n.Log.Append(rd.Entries); err != nil {
		return true, fmt.Errorf("append: %w", err)
	}
	if !rd.HardState.IsEmpty() {
		n.Log.SetHardState(rd.HardState)
	}
	env.Messages = append(env.Messages, rd.MessagesAfterPersist...)
	for _, e := range rd.CommittedEntries {
		if e.Index != n.AppliedIndex+1 {
			env.printf("INVARIANT VIOLATED: %d applies %d/%d after %d\n", id, e.Term, e.Index, n.AppliedIndex)
		}
		if prev, ok := env.applied[e.Index]; ok &&
			(prev.Term != e.Term || prev.Type != e.Type || !bytes.Equal(prev.Data, e.Data)) {
			env.printf("INVARIANT VIOLATED: %d applies %s, another replica applied %s\n",
				id, DescribeEntry(e), DescribeEntry(prev))
		}
		env.applied[e.Index] = e
		n.Applied = append(n.Applied, e)
		n.AppliedIndex = e.Index
	}
	if rd.Fetch != nil {
		f := *rd.Fetch
		n.Fetch = &f
	}
	n.ReadStates = append(n.ReadStates, rd.ReadStates...)
	if ss := rd.SoftState; ss != nil && ss.Role == raft.Leader {
		term := n.Status().HardState.Term
		if prev, ok := env.leaders[term]; ok && prev != id {
			env.printf("INVARIANT VIOLATED: %d and %d both lead term %d\n", prev, id, term)
		}
		env.leaders[term] = id
	}
	n.Advance(rd)
	return true, nil
}

// canTalk reports whether the partition lets a message from a reach b.
func (env *Env) canTalk(a, b raftpb.ReplicaID) bool {
	if env.partition == nil {
		return true
	}
	sa, oka := env.partition[a]
	sb, okb := env.partition[b]
	return oka && okb && sa == sb
}

// Partition splits the replicas into sides that cannot talk to each other;
// replicas on no side are isolated. Heal (a nil or empty sides) ends it.
func (env *Env) Partition(sides [][]raftpb.ReplicaID) {
	if len(sides) == 0 {
		env.partition = nil
		return
	}
	env.partition = map[raftpb.ReplicaID]int{}
	for i, side := range sides {
		for _, id := range side {
			env.partition[id] = i
		}
	}
}

// MsgFilter selects queued messages: to one of To and from one of From
// (either: all if empty) and of type Type (all if nil); at most Limit of
// them (all if 0), oldest first.
type MsgFilter struct {
	To, From []raftpb.ReplicaID
	Type     *raftpb.MessageType
	Limit    int
}

func (f MsgFilter) match(m raftpb.Message) bool {
	return (len(f.To) == 0 || slices.Contains(f.To, m.To)) &&
		(len(f.From) == 0 || slices.Contains(f.From, m.From)) &&
		(f.Type == nil || *f.Type == m.Type)
}

// take removes and returns the queued messages that f selects.
func (env *Env) take(f MsgFilter) []raftpb.Message {
	var out, keep []raftpb.Message
	for _, m := range env.Messages {
		if f.match(m) && (f.Limit == 0 || len(out) < f.Limit) {
			out = append(out, m)
		} else {
			keep = append(keep, m)
		}
	}
	env.Messages = keep
	return out
}

// DeliverMsgs delivers the messages f selects, in send order, printing each
// (and dropping those a partition blocks). It returns how many it handled.
func (env *Env) DeliverMsgs(f MsgFilter) int {
	msgs := env.take(f)
	for _, m := range msgs {
		n := env.Node(m.To)
		switch {
		case n == nil:
			env.printf("%s DROPPED (no such replica)\n", DescribeMessage(m))
		case !env.canTalk(m.From, m.To):
			env.printf("%s DROPPED (partition)\n", DescribeMessage(m))
		default:
			env.printf("%s\n", DescribeMessage(m))
			if err := n.Step(m); err != nil {
				env.printf("  error: %v\n", err)
			}
		}
	}
	return len(msgs)
}

// DropMsgs drops the messages f selects, printing each.
func (env *Env) DropMsgs(f MsgFilter) int {
	msgs := env.take(f)
	for _, m := range msgs {
		env.printf("%s DROPPED\n", DescribeMessage(m))
	}
	return len(msgs)
}

// DuplicateMsgs appends a copy of every message f selects to the queue.
func (env *Env) DuplicateMsgs(f MsgFilter) int {
	var dups []raftpb.Message
	for _, m := range env.Messages {
		if f.match(m) && (f.Limit == 0 || len(dups) < f.Limit) {
			dups = append(dups, m)
		}
	}
	for _, m := range dups {
		env.printf("%s DUPLICATED\n", DescribeMessage(m))
	}
	env.Messages = append(env.Messages, dups...)
	return len(dups)
}

// Stabilize alternates handling every Ready of ids and delivering every
// message to them until nothing happens; all replicas if ids is empty.
func (env *Env) Stabilize(ids ...raftpb.ReplicaID) error {
	if len(ids) == 0 {
		for i := range env.Nodes {
			ids = append(ids, raftpb.ReplicaID(i+1))
		}
	}
	for range 1000 {
		moved := false
		for _, id := range ids {
			if !env.Node(id).HasReady() {
				continue
			}
			env.printf("> %d handling Ready\n", id)
			sub := env.Out.Len()
			if _, err := env.ProcessReady(id); err != nil {
				return err
			}
			env.indentFrom(sub)
			moved = true
		}
		for _, id := range ids {
			if !slices.ContainsFunc(env.Messages, func(m raftpb.Message) bool { return m.To == id }) {
				continue
			}
			env.printf("> %d receiving messages\n", id)
			sub := env.Out.Len()
			env.DeliverMsgs(MsgFilter{To: []raftpb.ReplicaID{id}})
			env.indentFrom(sub)
			moved = true
		}
		if !moved {
			return nil
		}
	}
	return errors.New("did not stabilize in 1000 rounds")
}

// indentFrom indents everything printed since offset by two spaces.
func (env *Env) indentFrom(offset int) {
	s := env.Out.String()
	tail := s[offset:]
	if tail == "" {
		return
	}
	lines := strings.SplitAfter(tail, "\n")
	var b strings.Builder
	b.WriteString(s[:offset])
	for _, l := range lines {
		if l != "" {
			b.WriteString("  " + l)
		}
	}
	env.Out.Reset()
	env.Out.WriteString(b.String())
}

// Compact snapshots replica id's log at index (which must be applied) and
// discards the entries up to it. The snapshot's membership is the one in
// effect at index: the previous snapshot's plus the config changes up to it.
func (env *Env) Compact(id raftpb.ReplicaID, index uint64) error {
	n := env.Node(id)
	if index > n.AppliedIndex {
		return fmt.Errorf("compact %d: only %d is applied", index, n.AppliedIndex)
	}
	prev := n.Log.SnapshotMeta()
	m := prev.Membership
	if index > prev.Index {
		ents, err := n.Log.Entries(prev.Index+1, index+1, ^uint64(0))
		if err != nil {
			return err
		}
		for _, e := range ents {
			if e.Type != raftpb.EntryConfigChange {
				continue
			}
			var cc raftpb.ConfChange
			if err := cc.Unmarshal(e.Data); err != nil {
				continue
			}
			if next, err := confchange.Apply(m, cc, e.Index); err == nil {
				m = next
			}
		}
	}
	if _, err := n.Log.CreateSnapshot(index, m); err != nil {
		return err
	}
	return n.Log.Compact(index)
}

// InstallSnapshot completes replica id's fetch: the data is now durable,
// so the replica installs the snapshot. It returns the replica's verdict.
func (env *Env) InstallSnapshot(id raftpb.ReplicaID) error {
	n := env.Node(id)
	if n.Fetch == nil {
		return errors.New("no snapshot fetch in progress")
	}
	meta := n.Fetch.Meta
	n.Fetch = nil
	return n.Replica.InstallSnapshot(meta)
}

// InstallFailed reports that replica id's fetch failed.
func (env *Env) InstallFailed(id raftpb.ReplicaID) error {
	n := env.Node(id)
	if n.Fetch == nil {
		return errors.New("no snapshot fetch in progress")
	}
	meta := n.Fetch.Meta
	n.Fetch = nil
	n.Replica.InstallFailed(meta)
	return nil
}

// Leader returns the replica that believes it leads in the highest term,
// or 0.
func (env *Env) Leader() raftpb.ReplicaID {
	var lead raftpb.ReplicaID
	var term uint64
	for i, n := range env.Nodes {
		st := n.Status()
		if st.SoftState.Role == raft.Leader && st.HardState.Term >= term {
			lead, term = raftpb.ReplicaID(i+1), st.HardState.Term
		}
	}
	return lead
}

// RaftLog renders replica id's durable log: the snapshot, then one entry a
// line.
func (env *Env) RaftLog(id raftpb.ReplicaID) (string, error) {
	n := env.Node(id)
	var b strings.Builder
	snap := n.Log.SnapshotMeta()
	if snap.Index > 0 {
		fmt.Fprintf(&b, "snapshot %s\n", DescribeSnapshot(snap))
	}
	first, _ := n.Log.FirstIndex()
	last, _ := n.Log.LastIndex()
	if first > last {
		if b.Len() == 0 {
			return "log is empty\n", nil
		}
		return b.String(), nil
	}
	ents, err := n.Log.Entries(first, last+1, ^uint64(0))
	if err != nil {
		return "", err
	}
	for _, e := range ents {
		b.WriteString(DescribeEntry(e) + "\n")
	}
	return b.String(), nil
}

func sortedIDs[V any](m map[raftpb.ReplicaID]V) []raftpb.ReplicaID {
	return slices.Sorted(maps.Keys(m))
}

// tracingLog is the LogReader a replica reads its MemoryLog through. It
// prints every snapshot request, so scripts show when the leader asks for a
// snapshot and how often it retries one that is being generated.
type tracingLog struct {
	*raft.MemoryLog
	env *Env
	id  raftpb.ReplicaID
}

func (l tracingLog) Snapshot(requestIndex uint64) (raftpb.SnapshotMeta, error) {
	meta, err := l.MemoryLog.Snapshot(requestIndex)
	if err != nil {
		l.env.printf("%d: LogReader.Snapshot(%d): %v\n", l.id, requestIndex, err)
	} else {
		l.env.printf("%d: LogReader.Snapshot(%d): %s\n", l.id, requestIndex, DescribeSnapshot(meta))
	}
	return meta, err
}
