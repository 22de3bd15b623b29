package engine

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/skiffdb/skiff/raftpb"
	"github.com/skiffdb/skiff/transport"
)

// quiesced reports whether group g's replica on e stopped ticking.
func quiesced(e *Engine, g raftpb.GroupID) bool {
	n, err := e.node(g)
	if err != nil {
		return false
	}
	n.sw.mu.Lock()
	defer n.sw.mu.Unlock()
	_, ticking := n.sw.active[n]
	return !ticking
}

// waitFor polls cond every tick until it holds or ctx ends.
func waitFor(ctx context.Context, t *testing.T, what string, cond func() bool) {
	t.Helper()
	tk := time.NewTicker(5 * time.Millisecond)
	defer tk.Stop()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatalf("%s: %v", what, ctx.Err())
		case <-tk.C:
		}
	}
}

// TestReviewWokenFollowerDisruptsQuiescedLeader: local housekeeping on a
// quiesced follower does not wake it (found by review: it ticked again
// while its leader stayed silent and, an election timeout later, deposed
// a healthy leader).
func TestReviewWokenFollowerDisruptsQuiescedLeader(t *testing.T) {
	es := tcpCluster(t, 3, func(gc *GroupConfig) {
		gc.PreVote, gc.CheckQuorum = true, false
		gc.Quiesce, gc.QuiesceTicks = true, 20
	})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	lead, err := es[0].WaitLeader(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := es[0].Propose(ctx, 1, []byte("a=1")); err != nil {
		t.Fatal(err)
	}
	waitFor(ctx, t, "all replicas quiesce", func() bool {
		return quiesced(es[0], 1) && quiesced(es[1], 1) && quiesced(es[2], 1)
	})
	st, _ := es[lead-1].GroupStatus(1)
	follower := es[lead%3]
	// Local housekeeping on the follower: no message reaches the leader.
	if err := follower.CancelSnapshotTransfers(ctx, 1, 0); err != nil {
		t.Fatal(err)
	}
	// Three election timeouts (10 ticks of 10ms each).
	wait, cancelWait := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancelWait()
	<-wait.Done()
	st2, _ := es[lead-1].GroupStatus(1)
	if st2.Term != st.Term || st2.Leader != lead {
		t.Fatalf("waking a follower disrupted the quiesced leader: term %d → %d, leader %d → %d",
			st.Term, st2.Term, lead, st2.Leader)
	}
}

// lossyTransport drops the leader's appends (MsgReplicate) while drop is
// set; heartbeats and everything else go through.
type lossyTransport struct {
	*transport.TCP
	drop atomic.Bool
}

func (l *lossyTransport) Send(addr string, msgs []raftpb.Message) bool {
	if !l.drop.Load() {
		return l.TCP.Send(addr, msgs)
	}
	kept := make([]raftpb.Message, 0, len(msgs))
	for _, m := range msgs {
		if m.Type != raftpb.MsgReplicate {
			kept = append(kept, m)
		}
	}
	return l.TCP.Send(addr, kept)
}

// TestReviewQuiesceWithUncommittedEntries: a leader whose appends were
// lost does not quiesce while an entry is uncommitted (heartbeats and
// their responses are no activity, so an activity-only rule let the whole
// group go silent with the proposal pending, and nothing retransmitted it
// — found by review); once the network recovers, the proposal completes.
func TestReviewQuiesceWithUncommittedEntries(t *testing.T) {
	trs, members := tcpTransports(t, 3)
	var lossy []*lossyTransport
	var es []*Engine
	for i := 0; i < 3; i++ {
		lt := &lossyTransport{TCP: trs[i]}
		lossy = append(lossy, lt)
		e, err := Open(Config{Dir: "h", FS: vfs.NewMem(), Transport: lt, TickInterval: 10 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		defer e.Close()
		es = append(es, e)
		if err := e.StartGroup(context.Background(), GroupConfig{Group: 1, Replica: raftpb.ReplicaID(i + 1),
			Members: members, PreVote: true, CheckQuorum: true, Quiesce: true, QuiesceTicks: 20}, newKV); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	lead, err := es[0].WaitLeader(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := es[lead-1].Propose(ctx, 1, []byte("a=1")); err != nil {
		t.Fatal(err)
	}
	for _, l := range lossy {
		l.drop.Store(true)
	}
	res := make(chan error, 1)
	go func() {
		_, err := es[lead-1].Propose(ctx, 1, []byte("b=2"))
		res <- err
	}()
	// The entry is in the leader's log and uncommitted before the clock
	// starts: on a loaded machine the proposal can take longer to arrive
	// than the wait below, and a leader with nothing pending may quiesce.
	for {
		st, err := es[lead-1].GroupStatus(1)
		if err != nil {
			t.Fatal(err)
		}
		if st.LastIndex > st.Commit {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatal("the proposal never reached the leader's log")
		case <-time.After(5 * time.Millisecond):
		}
	}
	// Three times the quiesce threshold without appends getting through.
	<-time.After(3 * 20 * 10 * time.Millisecond)
	if quiesced(es[lead-1], 1) {
		t.Fatal("the leader quiesced with an uncommitted entry")
	}
	for _, l := range lossy {
		l.drop.Store(false)
	}
	select {
	case err := <-res:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(2 * time.Second):
		st, _ := es[lead-1].GroupStatus(1)
		t.Fatalf("proposal still pending 2s after the network recovered: leader commit %d last %d", st.Commit, st.LastIndex)
	}
}
