package transport

import (
	"net"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/skiffdb/skiff/raftpb"
)

// waitLimit bounds every wait on real sockets: a test that needs longer is
// broken, and failing beats hanging.
const waitLimit = 10 * time.Second

// recorder is a Handler that keeps what it is given.
type recorder struct {
	mu          sync.Mutex
	batches     []*raftpb.MessageBatch
	msgs        []raftpb.Message
	unreachable map[string]int
	changed     chan struct{} // cap 1
}

func newRecorder() *recorder {
	return &recorder{unreachable: make(map[string]int), changed: make(chan struct{}, 1)}
}

func (r *recorder) HandleBatch(b *raftpb.MessageBatch) {
	r.mu.Lock()
	r.batches = append(r.batches, b)
	r.msgs = append(r.msgs, b.Messages...)
	r.mu.Unlock()
	r.signal()
}

func (r *recorder) HandleUnreachable(addr string) {
	r.mu.Lock()
	r.unreachable[addr]++
	r.mu.Unlock()
	r.signal()
}

func (r *recorder) signal() {
	select {
	case r.changed <- struct{}{}:
	default:
	}
}

// waitFor waits until cond (called under the lock) holds, failing the test
// after waitLimit.
func (r *recorder) waitFor(t testing.TB, what string, cond func(r *recorder) bool) {
	t.Helper()
	deadline := time.NewTimer(waitLimit)
	defer deadline.Stop()
	for {
		r.mu.Lock()
		ok := cond(r)
		r.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-r.changed:
		case <-deadline.C:
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

func (r *recorder) waitMessages(t testing.TB, n int) {
	t.Helper()
	r.waitFor(t, "messages", func(r *recorder) bool { return len(r.msgs) >= n })
}

func (r *recorder) messages() []raftpb.Message {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]raftpb.Message(nil), r.msgs...)
}

// reset forgets the batches received so far.
func (r *recorder) reset() {
	r.mu.Lock()
	r.batches, r.msgs = nil, nil
	r.mu.Unlock()
}

func (r *recorder) unreachableCount(addr string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.unreachable[addr]
}

// startTCP starts a transport on a free loopback port (or cfg.ListenAddr)
// and closes it at cleanup.
func startTCP(t testing.TB, cfg TCPConfig) (*TCP, *recorder) {
	t.Helper()
	if cfg.ListenAddr == "" {
		cfg.ListenAddr = "127.0.0.1:0"
	}
	if cfg.DeploymentID == 0 {
		cfg.DeploymentID = 7
	}
	tr, err := NewTCP(cfg)
	if err != nil {
		t.Fatal(err)
	}
	r := newRecorder()
	if err := tr.Start(r); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tr.Close() })
	return tr, r
}

// checkNoGoroutines fails if a goroutine runs code of this package's
// non-test files: call it after closing every transport. A goroutine that
// has called wg.Done may not have exited yet, so it retries (yielding the
// processor, not sleeping) for up to a second before failing.
func checkNoGoroutines(t testing.TB) {
	t.Helper()
	deadline := time.Now().Add(time.Second)
	buf := make([]byte, 16<<20)
	for {
		var leaked []string
		for g := range strings.SplitSeq(string(buf[:runtime.Stack(buf, true)]), "\n\n") {
			if strings.Contains(g, "skiff/transport.") && !strings.Contains(g, "_test.go") {
				leaked = append(leaked, g)
			}
		}
		if len(leaked) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("goroutines left running:\n%s", strings.Join(leaked, "\n\n"))
			return
		}
		runtime.Gosched()
	}
}

// leakCheck checks, at the end of the test, that no goroutine of the
// transports is left. Call it first: cleanups run last-in first-out, so
// it runs after startTCP's Closes.
func leakCheck(t testing.TB) {
	t.Helper()
	t.Cleanup(func() { checkNoGoroutines(t) })
}

// msg is a MsgReplicate whose Index identifies it.
func msg(i uint64, data []byte) raftpb.Message {
	return raftpb.Message{
		Type: raftpb.MsgReplicate, Group: 1, From: 1, To: 2, Term: 3, Index: i,
		Entries: []raftpb.Entry{{Term: 3, Index: i + 1, Data: data}},
	}
}

// checkOrder fails unless msgs are exactly indexes 0..n-1 in order.
func checkOrder(t testing.TB, msgs []raftpb.Message, n int) {
	t.Helper()
	if len(msgs) != n {
		t.Fatalf("got %d messages, want %d", len(msgs), n)
	}
	for i, m := range msgs {
		if m.Index != uint64(i) {
			t.Fatalf("message %d has index %d: out of order", i, m.Index)
		}
	}
}

// rawDial opens a plain connection to addr and writes pre.
func rawDial(t testing.TB, addr string, pre []byte) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, waitLimit)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if _, err := c.Write(pre); err != nil {
		t.Fatal(err)
	}
	return c
}

// waitClosed fails unless the remote end closes c (a read returns an
// error) within waitLimit.
func waitClosed(t testing.TB, c net.Conn) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(waitLimit))
	var b [64]byte
	for {
		_, err := c.Read(b[:])
		if err == nil {
			continue
		}
		if ne, ok := err.(net.Error); ok && ne.Timeout() {
			t.Fatal("connection not closed by the transport")
		}
		return
	}
}
