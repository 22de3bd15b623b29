package memnet

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/skiffdb/skiff/raftpb"
	"github.com/skiffdb/skiff/transport"
)

// recorder is a Handler that keeps what it is given.
type recorder struct {
	mu          sync.Mutex
	msgs        []raftpb.Message
	at          []time.Time // arrival time of each message
	unreachable map[string]int
	changed     chan struct{}
}

func newRecorder() *recorder {
	return &recorder{unreachable: make(map[string]int), changed: make(chan struct{}, 1)}
}

func (r *recorder) HandleBatch(b *raftpb.MessageBatch) {
	r.mu.Lock()
	for _, m := range b.Messages {
		r.msgs = append(r.msgs, m)
		r.at = append(r.at, time.Now())
	}
	r.mu.Unlock()
	signal(r.changed)
}

func (r *recorder) HandleUnreachable(addr string) {
	r.mu.Lock()
	r.unreachable[addr]++
	r.mu.Unlock()
	signal(r.changed)
}

// indexes returns the Index of every message received, in arrival order.
func (r *recorder) indexes() []uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []uint64
	for _, m := range r.msgs {
		out = append(out, m.Index)
	}
	return out
}

func (r *recorder) unreachableCount(addr string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.unreachable[addr]
}

// waitMessages blocks until n messages arrived. Inside a bubble the fake
// clock runs on while it blocks, so delayed batches arrive; a hang fails
// after a minute of fake time.
func (r *recorder) waitMessages(t *testing.T, n int) {
	t.Helper()
	timeout := time.After(time.Minute)
	for {
		r.mu.Lock()
		got := len(r.msgs)
		r.mu.Unlock()
		if got >= n {
			return
		}
		select {
		case <-r.changed:
		case <-timeout:
			t.Fatalf("got %d messages, want %d", got, n)
		}
	}
}

func msg(i uint64) raftpb.Message {
	return raftpb.Message{Type: raftpb.MsgReplicate, Group: 1, From: 1, To: 2, Index: i,
		Entries: []raftpb.Entry{{Term: 1, Index: i + 1, Data: []byte("data")}}}
}

// host is an endpoint and what its handler received.
type host struct {
	*Endpoint
	rec *recorder
}

func start(t *testing.T, n *Network, addr string) host {
	t.Helper()
	e := n.Endpoint(addr, 1)
	r := newRecorder()
	if err := e.Start(r); err != nil {
		t.Fatal(err)
	}
	return host{e, r}
}

// sendN sends batches with indexes [from, from+count), one per Send.
func sendN(h host, to string, from, count int) (refused int) {
	for i := from; i < from+count; i++ {
		if !h.Send(to, []raftpb.Message{msg(uint64(i))}) {
			refused++
		}
	}
	return refused
}

func TestPartitionHeal(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := New(Config{Seed: 1})
		defer n.Close()
		a, b, c := start(t, n, "a"), start(t, n, "b"), start(t, n, "c")
		sendN(a, "b", 0, 1)
		b.rec.waitMessages(t, 1)

		n.Partition([]string{"a"}, []string{"b", "c"})
		if sendN(a, "b", 1, 1) != 1 || sendN(b, "a", 0, 1) != 1 {
			t.Fatal("Send across the partition was accepted")
		}
		if sendN(b, "c", 0, 1) != 0 {
			t.Fatal("Send within a side refused")
		}
		c.rec.waitMessages(t, 1)
		synctest.Wait()
		if a.rec.unreachableCount("b") != 1 || b.rec.unreachableCount("a") != 1 {
			t.Fatalf("unreachable reports: a %v b %v", a.rec.unreachable, b.rec.unreachable)
		}
		if got := b.rec.indexes(); !slices.Equal(got, []uint64{0}) {
			t.Fatalf("b got %v across the partition", got)
		}

		n.Heal()
		n.Isolate("c")
		if sendN(b, "c", 1, 1) != 1 || sendN(a, "b", 1, 1) != 0 {
			t.Fatal("isolation: wrong hosts cut")
		}
		b.rec.waitMessages(t, 2)
		n.Heal()
		if sendN(b, "c", 1, 1) != 0 {
			t.Fatal("Send refused after Heal")
		}
		c.rec.waitMessages(t, 2)
		if s := n.Stats(); s.Unreachable != 3 || s.Delivered != 4 {
			t.Fatalf("stats %+v", s)
		}
	})
}

// TestPartitionLosesInFlight: batches already on a link when a partition
// starts are lost, not delivered late.
func TestPartitionLosesInFlight(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := New(Config{Seed: 1})
		defer n.Close()
		a, b := start(t, n, "a"), start(t, n, "b")
		n.SetDelay(10*time.Millisecond, 10*time.Millisecond)
		sendN(a, "b", 0, 5)
		n.Partition([]string{"a"}, []string{"b"})
		time.Sleep(time.Second) // fake time: every delay has passed
		synctest.Wait()
		if got := b.rec.indexes(); len(got) != 0 {
			t.Fatalf("delivered %v across a partition made while in flight", got)
		}
		if a.rec.unreachableCount("b") == 0 {
			t.Fatal("the loss was not reported")
		}
	})
}

// dropRun sends 1000 batches at drop rate 0.3 and returns what arrived.
func dropRun(t *testing.T, seed int64) []uint64 {
	var got []uint64
	synctest.Test(t, func(t *testing.T) {
		n := New(Config{Seed: seed})
		defer n.Close()
		a, b := start(t, n, "a"), start(t, n, "b")
		n.SetDropRate(0.3)
		if refused := sendN(a, "b", 0, 1000); refused != 0 {
			t.Fatalf("%d refused: random loss must be silent", refused)
		}
		synctest.Wait()
		got = b.rec.indexes()
		if s := n.Stats(); int(s.Dropped)+len(got) != 1000 {
			t.Fatalf("stats %+v, %d delivered", s, len(got))
		}
	})
	return got
}

func TestDropRateSeeded(t *testing.T) {
	one, again, other := dropRun(t, 1), dropRun(t, 1), dropRun(t, 2)
	if len(one) < 600 || len(one) > 800 {
		t.Fatalf("%d of 1000 delivered at drop rate 0.3", len(one))
	}
	if !slices.Equal(one, again) {
		t.Fatal("same seed, different drops")
	}
	if slices.Equal(one, other) {
		t.Fatal("different seeds, same drops")
	}
	if !slices.IsSorted(one) {
		t.Fatal("out of order without reordering")
	}
}

func TestDelayOrdering(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := New(Config{Seed: 3})
		defer n.Close()
		a, b := start(t, n, "a"), start(t, n, "b")
		const lo, hi = 5 * time.Millisecond, 50 * time.Millisecond
		n.SetDelay(lo, hi)
		t0 := time.Now()
		// Spread the sends over time so that delays, not send order,
		// decide arrival.
		for i := range 200 {
			sendN(a, "b", i, 1)
			time.Sleep(100 * time.Microsecond)
		}
		b.rec.waitMessages(t, 200)
		if got := b.rec.indexes(); !slices.IsSorted(got) {
			t.Fatalf("reordered without SetReorder: %v", got)
		}
		b.rec.mu.Lock()
		first, last := b.rec.at[0], b.rec.at[199]
		b.rec.mu.Unlock()
		if first.Sub(t0) < lo || last.Sub(t0) > 200*100*time.Microsecond+hi {
			t.Fatalf("arrivals at %v..%v after the first send, delays in [%v, %v]", first.Sub(t0), last.Sub(t0), lo, hi)
		}

		n.SetReorder(true)
		for i := 200; i < 400; i++ {
			sendN(a, "b", i, 1)
			time.Sleep(100 * time.Microsecond)
		}
		b.rec.waitMessages(t, 400)
		got := b.rec.indexes()[200:]
		if slices.IsSorted(got) {
			t.Fatal("no batch overtook another with reordering on")
		}
		slices.Sort(got)
		for i, x := range got {
			if x != uint64(200+i) {
				t.Fatalf("reordering lost or duplicated batches: %v", got)
			}
		}
	})
}

func TestDuplicates(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := New(Config{Seed: 4})
		defer n.Close()
		a, b := start(t, n, "a"), start(t, n, "b")
		n.SetDuplicateRate(1)
		sendN(a, "b", 0, 10)
		b.rec.waitMessages(t, 20)
		synctest.Wait()
		if got := b.rec.indexes(); len(got) != 20 {
			t.Fatalf("got %v, want each batch twice", got)
		}
		n.SetDuplicateRate(0.5)
		sendN(a, "b", 10, 1000)
		synctest.Wait()
		s := n.Stats()
		extra := len(b.rec.indexes()) - 20 - 1000
		if extra != int(s.Duplicated)-10 || extra < 400 || extra > 600 {
			t.Fatalf("%d extra deliveries at rate 0.5, stats %+v", extra, s)
		}
	})
}

// TestDeepCopy: the receiver's batch shares no memory with the sender's
// messages.
func TestDeepCopy(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := New(Config{Seed: 1})
		defer n.Close()
		a, b := start(t, n, "a"), start(t, n, "b")
		n.SetDelay(time.Millisecond, time.Millisecond)
		m := msg(7)
		a.Send("b", []raftpb.Message{m})
		m.Entries[0].Data[0] = 'X'
		b.rec.waitMessages(t, 1)
		b.rec.mu.Lock()
		got := b.rec.msgs[0]
		b.rec.mu.Unlock()
		if string(got.Entries[0].Data) != "data" || got.Index != 7 {
			t.Fatalf("received %+v: shares the sender's memory", got)
		}
		if s := b.Stats(); s.CorruptFrames != 0 || s.MessagesReceived != 1 {
			t.Fatalf("stats %+v", s)
		}
	})
}

func TestDeploymentMismatch(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := New(Config{Seed: 1})
		defer n.Close()
		b := start(t, n, "b")
		x := n.Endpoint("x", 2)
		if err := x.Start(newRecorder()); err != nil {
			t.Fatal(err)
		}
		x.Send("b", []raftpb.Message{msg(0)})
		synctest.Wait()
		if got := b.rec.indexes(); len(got) != 0 {
			t.Fatalf("delivered %v from another deployment", got)
		}
		if s := b.Stats(); s.RejectedDeployment != 1 {
			t.Fatalf("stats %+v", s)
		}
	})
}

// TestRestartEndpoint: a closed endpoint's address gets a new endpoint,
// which receives what is sent afterwards.
func TestRestartEndpoint(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := New(Config{Seed: 1})
		defer n.Close()
		a, b := start(t, n, "a"), start(t, n, "b")
		sendN(a, "b", 0, 1)
		b.rec.waitMessages(t, 1)
		if n.Endpoint("b", 1) != b.Endpoint {
			t.Fatal("Endpoint of an open address made a second endpoint")
		}
		b.Close()
		if sendN(a, "b", 1, 1) != 1 {
			t.Fatal("Send to a closed host accepted")
		}
		synctest.Wait()
		if a.rec.unreachableCount("b") != 1 {
			t.Fatal("closed host not reported unreachable")
		}
		if err := b.Start(newRecorder()); !errors.Is(err, transport.ErrClosed) {
			t.Fatalf("Start after Close: %v", err)
		}
		b2 := start(t, n, "b")
		if b2.Endpoint == b.Endpoint {
			t.Fatal("restart returned the closed endpoint")
		}
		sendN(a, "b", 2, 1)
		b2.rec.waitMessages(t, 1)
		if got := b2.rec.indexes(); !slices.Equal(got, []uint64{2}) {
			t.Fatalf("restarted host got %v", got)
		}
		if got := b.rec.indexes(); len(got) != 1 {
			t.Fatalf("closed host got %v", got)
		}
	})
}

// TestCloseStopsDelivery: once Close returns, queued batches are not
// delivered and the handler is not called; Send is refused.
func TestCloseStopsDelivery(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := New(Config{Seed: 1})
		a, b := start(t, n, "a"), start(t, n, "b")
		n.SetDelay(time.Second, time.Second)
		sendN(a, "b", 0, 10)
		b.Close()
		time.Sleep(2 * time.Second) // fake time
		synctest.Wait()
		if got := b.rec.indexes(); len(got) != 0 {
			t.Fatalf("closed endpoint's handler got %v", got)
		}
		a.Close()
		if sendN(a, "b", 0, 1) != 1 {
			t.Fatal("Send after Close accepted")
		}
		if _, err := a.DialSnapshot(context.Background(), "b"); !errors.Is(err, transport.ErrClosed) {
			t.Fatalf("DialSnapshot after Close: %v", err)
		}
		n.Close()
		// synctest.Test fails if any goroutine of the network is left.
	})
}

// snapPair dials a snapshot-lane connection from a to b and accepts it.
func snapPair(t *testing.T, a, b host) (net.Conn, net.Conn) {
	t.Helper()
	ca, err := a.DialSnapshot(context.Background(), b.Addr())
	if err != nil {
		t.Fatal(err)
	}
	cb, err := b.SnapshotListener().Accept()
	if err != nil {
		t.Fatal(err)
	}
	return ca, cb
}

func TestSnapshotLane(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := New(Config{Seed: 1})
		defer n.Close()
		a, b := start(t, n, "a"), start(t, n, "b")
		ca, cb := snapPair(t, a, b)
		if ca.RemoteAddr().String() != "b" || cb.RemoteAddr().String() != "a" {
			t.Fatalf("addresses %v %v", ca.RemoteAddr(), cb.RemoteAddr())
		}
		const size = 8 << 20
		pa := bytes.Repeat([]byte("abcdefg"), size/7)
		pb := bytes.Repeat([]byte("1234567"), size/7)
		var wg sync.WaitGroup
		var gotA, gotB []byte
		var errs [4]error
		wg.Go(func() { _, errs[0] = ca.Write(pa) })
		wg.Go(func() { _, errs[1] = cb.Write(pb) })
		wg.Go(func() { gotB, errs[2] = readN(cb, len(pa)) })
		wg.Go(func() { gotA, errs[3] = readN(ca, len(pb)) })
		// Raft traffic at the same time.
		sendN(a, "b", 0, 100)
		wg.Wait()
		for _, err := range errs {
			if err != nil {
				t.Fatal(err)
			}
		}
		if !bytes.Equal(gotB, pa) || !bytes.Equal(gotA, pb) {
			t.Fatal("bytes differ")
		}
		b.rec.waitMessages(t, 100)
		// Close: the other end reads EOF, its writes fail.
		ca.Close()
		if _, err := cb.Read(make([]byte, 1)); err != io.EOF {
			t.Fatalf("read after the peer closed: %v", err)
		}
		if _, err := cb.Write([]byte("x")); err == nil {
			t.Fatal("write after the peer closed worked")
		}
		cb.Close()
		if s := b.Stats(); s.SnapshotConns != 1 {
			t.Fatalf("stats %+v", s)
		}
	})
}

func readN(c net.Conn, n int) ([]byte, error) {
	b := make([]byte, n)
	_, err := io.ReadFull(c, b)
	return b, err
}

func TestSnapshotLaneCutByPartition(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := New(Config{Seed: 1})
		defer n.Close()
		a, b, c := start(t, n, "a"), start(t, n, "b"), start(t, n, "c")
		ab, ba := snapPair(t, a, b)
		ac, ca := snapPair(t, a, c)
		readErr := make(chan error, 1)
		go func() { // blocked in Read when the partition comes
			_, err := ba.Read(make([]byte, 1))
			readErr <- err
		}()
		synctest.Wait()
		n.Partition([]string{"a", "c"}, []string{"b"})
		if err := <-readErr; err == nil {
			t.Fatal("read across the cut did not fail")
		}
		if _, err := ab.Write([]byte("x")); err == nil {
			t.Fatal("write across the cut worked")
		}
		// The connection within a side is untouched.
		if _, err := ac.Write([]byte("y")); err != nil {
			t.Fatal(err)
		}
		if got, err := readN(ca, 1); err != nil || string(got) != "y" {
			t.Fatalf("read %q %v", got, err)
		}
		if _, err := a.DialSnapshot(context.Background(), "b"); !errors.Is(err, ErrUnreachable) {
			t.Fatalf("dial across the cut: %v", err)
		}
		if s := n.Stats(); s.ConnsCut != 1 {
			t.Fatalf("stats %+v", s)
		}
		n.Heal()
		ab2, ba2 := snapPair(t, a, b)
		ab2.Write([]byte("z"))
		if got, err := readN(ba2, 1); err != nil || string(got) != "z" {
			t.Fatalf("after Heal: read %q %v", got, err)
		}
		// Closing an endpoint closes its snapshot connections.
		b.Close()
		if _, err := ab2.Write([]byte("w")); err == nil {
			t.Fatal("write to a closed endpoint's connection worked")
		}
		ac.Close()
		ca.Close()
	})
}

func TestConnDeadlines(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		x, y := newConnPair("x", "y")
		defer x.Close()
		defer y.Close()
		// A deadline in the past fails at once (the snapshot server stops
		// its watcher this way).
		x.SetReadDeadline(time.Unix(1, 0))
		if _, err := x.Read(make([]byte, 1)); !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("read past the deadline: %v", err)
		}
		// A future deadline fails after its time, on the fake clock.
		t0 := time.Now()
		x.SetReadDeadline(t0.Add(time.Second))
		if _, err := x.Read(make([]byte, 1)); !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("read: %v", err)
		}
		if d := time.Since(t0); d != time.Second {
			t.Fatalf("deadline fired after %v", d)
		}
		// A deadline that unblocks a Read already waiting.
		x.SetReadDeadline(time.Time{})
		done := make(chan error)
		go func() {
			_, err := x.Read(make([]byte, 1))
			done <- err
		}()
		synctest.Wait()
		x.SetReadDeadline(time.Unix(1, 0))
		if err := <-done; !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("blocked read: %v", err)
		}
		// Cleared, reads work again.
		x.SetDeadline(time.Time{})
		y.Write([]byte("ok"))
		if got, err := readN(x, 2); err != nil || string(got) != "ok" {
			t.Fatalf("read %q %v", got, err)
		}
		// A writer blocked on a full buffer is released by its deadline.
		y.SetWriteDeadline(time.Now().Add(time.Millisecond))
		n, err := y.Write(make([]byte, 2*pipeBufSize))
		if !errors.Is(err, os.ErrDeadlineExceeded) || n != pipeBufSize {
			t.Fatalf("write into a full buffer: %d %v", n, err)
		}
		var ne net.Error
		if !errors.As(err, &ne) || !ne.Timeout() {
			t.Fatalf("%v is not a net timeout", err)
		}
	})
}

// TestLinkQueueFull: a link holds at most linkQueueLen batches in flight;
// beyond that Send refuses, counts and reports, and never blocks.
func TestLinkQueueFull(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := New(Config{Seed: 1})
		defer n.Close()
		a, b := start(t, n, "a"), start(t, n, "b")
		n.SetDelay(time.Second, time.Second)
		if refused := sendN(a, "b", 0, linkQueueLen+100); refused != 100 {
			t.Fatalf("%d refused, want 100", refused)
		}
		if s := a.Stats(); s.MessagesDropped != 100 || s.MessagesSent != linkQueueLen {
			t.Fatalf("stats %+v", s)
		}
		b.rec.waitMessages(t, linkQueueLen)
		if got := b.rec.indexes(); !slices.IsSorted(got) || len(got) != linkQueueLen {
			t.Fatalf("got %d messages", len(got))
		}
		if a.rec.unreachableCount("b") == 0 {
			t.Fatal("overflow not reported")
		}
	})
}
