package engine

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/skiffdb/skiff/raftpb"
	"github.com/skiffdb/skiff/transport"
)

// syncGate holds the fsyncs of one host's log while armed: each sync that
// starts reports on blocked and waits for a token on release, or for
// disarm. It lets a test look at a host while its SaveBatch is in flight.
type syncGate struct {
	mu      sync.Mutex
	armed   bool
	blocked chan struct{}
	release chan struct{}
	open    chan struct{} // closed by disarm
	once    sync.Once
}

func newSyncGate() *syncGate {
	return &syncGate{blocked: make(chan struct{}, 64), release: make(chan struct{}), open: make(chan struct{})}
}

func (g *syncGate) arm() {
	g.mu.Lock()
	g.armed = true
	g.mu.Unlock()
}

// disarm lets every waiting and future sync through.
func (g *syncGate) disarm() {
	g.mu.Lock()
	g.armed = false
	g.mu.Unlock()
	g.once.Do(func() { close(g.open) })
}

func (g *syncGate) wait() {
	g.mu.Lock()
	armed := g.armed
	g.mu.Unlock()
	if !armed {
		return
	}
	g.blocked <- struct{}{}
	select {
	case <-g.release:
	case <-g.open:
	}
}

// awaitBlocked waits until a sync is held by the gate.
func (g *syncGate) awaitBlocked(ctx context.Context, t *testing.T, what string) {
	t.Helper()
	select {
	case <-g.blocked:
	case <-ctx.Done():
		t.Fatalf("%s: no fsync reached the gate: %v", what, ctx.Err())
	}
}

// gatedFS is an in-memory FS whose log files' syncs go through a gate.
type gatedFS struct {
	vfs.FS
	g *syncGate
}

func (fs gatedFS) Create(name string, c vfs.DiskWriteCategory) (vfs.File, error) {
	f, err := fs.FS.Create(name, c)
	if err != nil {
		return nil, err
	}
	return gatedFile{File: f, g: fs.g}, nil
}

func (fs gatedFS) OpenReadWrite(name string, c vfs.DiskWriteCategory, opts ...vfs.OpenOption) (vfs.File, error) {
	f, err := fs.FS.OpenReadWrite(name, c, opts...)
	if err != nil {
		return nil, err
	}
	return gatedFile{File: f, g: fs.g}, nil
}

type gatedFile struct {
	vfs.File
	g *syncGate
}

func (f gatedFile) Sync() error {
	f.g.wait()
	return f.File.Sync()
}

func (f gatedFile) SyncData() error {
	f.g.wait()
	return f.File.SyncData()
}

func (f gatedFile) SyncTo(length int64) (bool, error) {
	f.g.wait()
	return f.File.SyncTo(length)
}

// ackTransport records the append acknowledgements a host sends and, while
// holding, keeps them back until the test releases them.
type ackTransport struct {
	*transport.TCP
	mu   sync.Mutex
	hold bool
	held []heldAck
	// sent are the acks that left, in order (accepted ones only).
	sent []raftpb.Message
}

type heldAck struct {
	addr string
	m    raftpb.Message
}

func isAck(m *raftpb.Message) bool { return m.Type == raftpb.MsgReplicateResp && !m.Reject }

func (a *ackTransport) Send(addr string, msgs []raftpb.Message) bool {
	a.mu.Lock()
	var out []raftpb.Message
	for _, m := range msgs {
		switch {
		case isAck(&m) && a.hold:
			a.held = append(a.held, heldAck{addr, m})
		case isAck(&m):
			a.sent = append(a.sent, m)
			out = append(out, m)
		default:
			out = append(out, m)
		}
	}
	a.mu.Unlock()
	if len(out) == 0 {
		return true
	}
	return a.TCP.Send(addr, out)
}

// maxHeld returns the highest index acknowledged by a held ack (0: none).
func (a *ackTransport) maxHeld() uint64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	var hi uint64
	for _, h := range a.held {
		hi = max(hi, h.m.Index)
	}
	return hi
}

// maxSent returns the highest index acknowledged by an ack that left.
func (a *ackTransport) maxSent() uint64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	var hi uint64
	for _, m := range a.sent {
		hi = max(hi, m.Index)
	}
	return hi
}

// releaseUpTo sends the held acks for indexes <= hi and keeps the rest.
func (a *ackTransport) releaseUpTo(hi uint64) {
	a.mu.Lock()
	keep := a.held[:0]
	var out []heldAck
	for _, h := range a.held {
		if h.m.Index <= hi {
			out = append(out, h)
			a.sent = append(a.sent, h.m)
		} else {
			keep = append(keep, h)
		}
	}
	a.held = keep
	a.mu.Unlock()
	for _, h := range out {
		a.TCP.Send(h.addr, []raftpb.Message{h.m})
	}
}

// stopHolding sends everything held and lets later acks through.
func (a *ackTransport) stopHolding() {
	a.mu.Lock()
	a.hold = false
	a.mu.Unlock()
	a.releaseUpTo(^uint64(0))
}

func (a *ackTransport) setHold(on bool) {
	a.mu.Lock()
	a.hold = on
	a.mu.Unlock()
}

// gatedCluster is three engines over loopback TCP, each with a sync gate
// on its log and an ack-recording transport, running group 1.
type gatedCluster struct {
	es    []*Engine
	gates []*syncGate
	acks  []*ackTransport
}

func newGatedCluster(t *testing.T) *gatedCluster {
	t.Helper()
	trs, members := tcpTransports(t, 3)
	c := &gatedCluster{}
	for i := 0; i < 3; i++ {
		g := newSyncGate()
		at := &ackTransport{TCP: trs[i]}
		e, err := Open(Config{Dir: "h", FS: gatedFS{FS: vfs.NewMem(), g: g}, Transport: at,
			TickInterval: 10 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		c.es, c.gates, c.acks = append(c.es, e), append(c.gates, g), append(c.acks, at)
		if err := e.StartGroup(context.Background(), GroupConfig{Group: 1, Replica: raftpb.ReplicaID(i + 1),
			Members: members, PreVote: true, CheckQuorum: true}, newKV); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		for _, g := range c.gates {
			g.disarm() // a held sync would block Close
		}
		for _, e := range c.es {
			e.Close()
		}
	})
	return c
}

// proposeAsync proposes cmd on e and delivers the outcome on the channel.
func proposeAsync(ctx context.Context, e *Engine, cmd string) <-chan error {
	ch := make(chan error, 1)
	go func() {
		_, err := e.Propose(ctx, 1, []byte(cmd))
		ch <- err
	}()
	return ch
}

// notDone fails the test if the proposal finished.
func notDone(t *testing.T, ch <-chan error, what string) {
	t.Helper()
	select {
	case err := <-ch:
		t.Fatalf("%s finished (err %v)", what, err)
	default:
	}
}

func done(ctx context.Context, t *testing.T, ch <-chan error, what string) {
	t.Helper()
	select {
	case err := <-ch:
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	case <-ctx.Done():
		t.Fatalf("%s: not done: %v", what, ctx.Err())
	}
}

// settle waits for a leader and one applied write, so that no election
// entry is in flight when the test starts holding things. It returns the
// leader's last index then.
func (c *gatedCluster) settle(ctx context.Context, t *testing.T) (leader int, followers []int, last uint64) {
	t.Helper()
	lead, err := c.es[0].WaitLeader(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	leader = int(lead) - 1
	if _, err := c.es[leader].Propose(ctx, 1, []byte("warm=up")); err != nil {
		t.Fatal(err)
	}
	for i := range c.es {
		if i != leader {
			followers = append(followers, i)
		}
	}
	st, _ := c.es[leader].GroupStatus(1)
	waitFor(ctx, t, "followers apply the warm-up write", func() bool {
		for _, f := range followers {
			if s, _ := c.es[f].GroupStatus(1); s.Applied < st.LastIndex {
				return false
			}
		}
		return true
	})
	return leader, followers, st.LastIndex
}

// ackDuringHeldSave proposes A on the leader with the followers' acks
// held (A becomes durable on all three), then B with the leader's save of
// it held at the gate, and releases the acks of A while that save is
// blocked. (An ack of an earlier commit-only append may be held too: only
// acks of A's index count.) It returns A's and B's outcomes.
func (c *gatedCluster) ackDuringHeldSave(ctx context.Context, t *testing.T, lead int, fs []int, last uint64) (a, b <-chan error) {
	t.Helper()
	le := c.es[lead]
	for _, f := range fs {
		c.acks[f].setHold(true)
	}
	a = proposeAsync(ctx, le, "a=1")
	var idxA uint64
	waitFor(ctx, t, "A in the leader's log", func() bool {
		st, _ := le.GroupStatus(1)
		idxA = st.LastIndex
		return idxA > last
	})
	waitFor(ctx, t, "both followers hold an ack of A", func() bool {
		return c.acks[fs[0]].maxHeld() >= idxA && c.acks[fs[1]].maxHeld() >= idxA
	})
	c.gates[lead].arm()
	b = proposeAsync(ctx, le, "b=2")
	c.gates[lead].awaitBlocked(ctx, t, "the leader's save of B")
	for _, f := range fs {
		c.acks[f].releaseUpTo(idxA)
	}
	return a, b
}

// TestAcksCountedDuringSave: acknowledgements that arrive while the
// leader's SaveBatch runs are counted at once, and an entry they commit
// that is durable on the leader is applied before that save returns; the
// entry being saved, which has no quorum, is not.
func TestAcksCountedDuringSave(t *testing.T) {
	c := newGatedCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	lead, fs, last := c.settle(ctx, t)
	a, b := c.ackDuringHeldSave(ctx, t, lead, fs, last)
	done(ctx, t, a, "A while B's save is in flight")
	notDone(t, b, "B before its own save returned (its acks are held)")

	c.gates[lead].disarm()
	for _, f := range fs {
		c.acks[f].stopHolding()
	}
	done(ctx, t, b, "B")
}

// TestAppendAckWaitsForFollowerSync: a follower acknowledges an append
// only after the SaveBatch that made it durable returned — also an append
// stepped while an earlier save was running, whose ack must wait for the
// next save — and the entries commit meanwhile through the other follower.
func TestAppendAckWaitsForFollowerSync(t *testing.T) {
	c := newGatedCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	lead, fs, _ := c.settle(ctx, t)
	slow := fs[0]
	c.gates[slow].arm()
	x := proposeAsync(ctx, c.es[lead], "x=1")
	c.gates[slow].awaitBlocked(ctx, t, "the slow follower's save of X")
	done(ctx, t, x, "X (committed by the leader and the other follower)")
	st, _ := c.es[lead].GroupStatus(1)
	idxX := st.Commit
	// Y reaches the slow follower while X's save is held: it is stepped
	// into the core, and its ack waits for a save of its own.
	y := proposeAsync(ctx, c.es[lead], "y=2")
	done(ctx, t, y, "Y")
	st, _ = c.es[lead].GroupStatus(1)
	idxY := st.Commit
	if got := c.acks[slow].maxSent(); got >= idxX {
		t.Fatalf("the slow follower acknowledged index %d (X is %d) while its save was held", got, idxX)
	}
	c.gates[slow].release <- struct{}{} // X's save returns
	c.gates[slow].awaitBlocked(ctx, t, "the slow follower's save of Y")
	waitFor(ctx, t, "the slow follower's ack of X after its save", func() bool {
		return c.acks[slow].maxSent() >= idxX
	})
	if got := c.acks[slow].maxSent(); got >= idxY {
		t.Fatalf("the slow follower acknowledged index %d (Y is %d) before Y's save returned", got, idxY)
	}
	c.gates[slow].disarm()
	waitFor(ctx, t, "the slow follower's ack of Y after its save", func() bool {
		return c.acks[slow].maxSent() >= idxY
	})
}

// TestLeaderCountsItselfOnlyWhenDurable: with one follower's acks held and
// the leader's own save held, the other follower's ack — stepped while the
// save runs — is no quorum: the proposal does not complete and the
// published commit does not move until the leader's save returns. (The
// core's rule itself, counting the leader's copy only at Advance, is
// raft's TestStepBetweenReadyAndAdvance.)
func TestLeaderCountsItselfOnlyWhenDurable(t *testing.T) {
	c := newGatedCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	lead, fs, _ := c.settle(ctx, t)
	le := c.es[lead]
	c.acks[fs[1]].setHold(true)
	c.gates[lead].arm()
	before, _ := le.GroupStatus(1)
	p := proposeAsync(ctx, le, "k=v")
	c.gates[lead].awaitBlocked(ctx, t, "the leader's save")
	waitFor(ctx, t, "the other follower acknowledges", func() bool {
		return c.acks[fs[0]].maxSent() > before.Commit
	})
	// The ack reached the leader's mailbox (or will): give the leader a
	// window in which a wrong count would commit.
	select {
	case err := <-p:
		t.Fatalf("committed with the leader's own copy not durable (err %v)", err)
	case <-time.After(100 * time.Millisecond):
	}
	if st, _ := le.GroupStatus(1); st.Commit > before.Commit {
		t.Fatalf("commit moved %d → %d with the leader's save held", before.Commit, st.Commit)
	}
	c.gates[lead].disarm()
	done(ctx, t, p, "the proposal after the leader's save")
	c.acks[fs[1]].stopHolding()
}

// TestLogBytesTriggerStillFires: the log-size trigger, now measured at
// most once per tick, still starts a snapshot once the log passes the cap.
func TestLogBytesTriggerStillFires(t *testing.T) {
	var events eventLog
	trs, members := tcpTransports(t, 1)
	e, err := Open(Config{Dir: "h", FS: vfs.NewMem(), Transport: trs[0], TickInterval: 10 * time.Millisecond,
		Listener: &events})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	if err := e.StartGroup(context.Background(), GroupConfig{Group: 1, Replica: 1, Members: members,
		MaxLogBytes: 64 << 10}, newKV); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	val := make([]byte, 1024)
	for i := range val {
		val[i] = 'x'
	}
	for i := 0; events.count(SnapshotCreated) == 0; i++ {
		if i > 10000 {
			t.Fatal("no snapshot after 10 MiB of writes with a 64 KiB log cap")
		}
		if _, err := e.Propose(ctx, 1, fmt.Appendf(nil, "k%d=%s", i, val)); err != nil {
			t.Fatal(err)
		}
	}
}
