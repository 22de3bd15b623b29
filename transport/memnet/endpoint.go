package memnet

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"

	"github.com/skiffdb/skiff/raftpb"
	"github.com/skiffdb/skiff/transport"
)

// ErrUnreachable: DialSnapshot's destination is absent, closed, not
// started, or cut off by a partition.
var ErrUnreachable = errors.New("memnet: host unreachable")

// errStartedTwice: Start was called again.
var errStartedTwice = errors.New("memnet: started twice")

// Bounds of an endpoint's queues.
const (
	// linkQueueLen bounds the batches in flight on one link (one sender,
	// one receiver); beyond it Send drops, like TCP's per-peer queue.
	linkQueueLen = 4096
	// snapBacklog is how many snapshot-lane connections may wait for
	// Accept, like a listen backlog.
	snapBacklog = 16
)

// Endpoint is one host's transport on a Network; it implements
// transport.Transport.
type Endpoint struct {
	n    *Network
	addr string
	dep  uint64
	snap *listener
	done chan struct{} // closed by Close

	// closed is set (under mu) by Close; started by Start.
	closed, started atomic.Bool

	// hmu fences the handler: deliveries and reports hold it for reading,
	// Close takes it for writing and clears handler, so the handler is
	// never called once Close returns. NB: a handler must not call Close
	// of its own endpoint.
	hmu     sync.RWMutex
	handler transport.Handler

	mu      sync.Mutex
	links   map[*Endpoint]*link // outgoing, by destination endpoint
	pending map[string]struct{} // unreachable addresses not yet reported
	order   []string
	wake    chan struct{} // cap 1: pending grew
	wg      sync.WaitGroup

	stats counters
}

var _ transport.Transport = (*Endpoint)(nil)

type counters struct {
	batchesSent, batchesReceived, messagesSent, messagesReceived atomic.Uint64
	messagesDropped, rejectedDeployment, corruptFrames           atomic.Uint64
	snapshotConns                                                atomic.Uint64
}

func newEndpoint(n *Network, a string, dep uint64) *Endpoint {
	return &Endpoint{
		n:       n,
		addr:    a,
		dep:     dep,
		snap:    &listener{addr: addr(a), ch: make(chan net.Conn, snapBacklog), done: make(chan struct{})},
		done:    make(chan struct{}),
		links:   make(map[*Endpoint]*link),
		pending: make(map[string]struct{}),
		wake:    make(chan struct{}, 1),
	}
}

// Addr returns the endpoint's address.
func (e *Endpoint) Addr() string { return e.addr }

// SnapshotListener returns the listener of the snapshot lane.
func (e *Endpoint) SnapshotListener() net.Listener { return e.snap }

// Start starts delivering batches to h; before Start the endpoint is
// unreachable.
func (e *Endpoint) Start(h transport.Handler) error {
	e.hmu.Lock()
	if e.closed.Load() {
		e.hmu.Unlock()
		return transport.ErrClosed
	}
	if e.handler != nil {
		e.hmu.Unlock()
		return errStartedTwice
	}
	e.handler = h
	e.hmu.Unlock()
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed.Load() {
		return transport.ErrClosed
	}
	e.wg.Add(1)
	go func() {
		defer e.wg.Done()
		e.runReports()
	}()
	e.started.Store(true)
	return nil
}

// Send encodes msgs as one batch and queues it on the link to addr,
// applying the network's faults. It reports false when the batch was
// refused: addr absent, closed, not started or cut off (the handler then
// gets HandleUnreachable(addr), from another goroutine), the link's queue
// full, or this endpoint closed. A batch lost to the drop rate is lost
// silently, as on a real network.
func (e *Endpoint) Send(addr string, msgs []raftpb.Message) bool {
	if len(msgs) == 0 {
		return true
	}
	n := e.n
	n.mu.Lock()
	if e.closed.Load() {
		n.mu.Unlock()
		e.stats.messagesDropped.Add(uint64(len(msgs)))
		return false
	}
	dst := n.endpoints[addr]
	if !n.reachableLocked(e, dst) {
		n.mu.Unlock()
		e.unreachable(addr, len(msgs))
		return false
	}
	// Every random draw happens here, under n.mu, in Send order: the same
	// seed and the same sequence of Sends give the same faults. Draws are
	// made only for the faults that are on, so turning one on does not
	// shift the others' sequence in a test that never uses it.
	drop := n.dropRate > 0 && n.rng.Float64() < n.dropRate
	dup := !drop && n.dupRate > 0 && n.rng.Float64() < n.dupRate
	d1 := n.delayLocked()
	d2 := d1
	if dup {
		d2 = n.delayLocked()
	}
	reorder := n.reorder
	n.mu.Unlock()
	if drop {
		n.stats.dropped.Add(1)
		return true
	}
	// Encoding here and decoding at delivery gives the receiver a deep
	// copy and runs the codec on every message of every test.
	payload := (&raftpb.MessageBatch{DeploymentID: e.dep, SourceAddress: e.addr, Messages: msgs}).Marshal()
	l := e.link(dst)
	if l == nil || !l.push(payload, d1, reorder) {
		e.unreachable(addr, len(msgs))
		return false
	}
	n.stats.sent.Add(1)
	e.stats.batchesSent.Add(1)
	e.stats.messagesSent.Add(uint64(len(msgs)))
	// The duplicate gets its own bytes: each delivery decodes into a batch
	// that aliases its payload, and two handlers' batches must not share.
	if dup && l.push(bytes.Clone(payload), d2, reorder) {
		n.stats.sent.Add(1)
		n.stats.duplicated.Add(1)
	}
	return true
}

// unreachable counts a refused batch and reports addr.
func (e *Endpoint) unreachable(addr string, msgs int) {
	e.n.stats.unreachable.Add(1)
	e.stats.messagesDropped.Add(uint64(msgs))
	e.report(addr)
}

// link returns the link to dst, starting it on first use; nil once the
// endpoint is closed.
func (e *Endpoint) link(dst *Endpoint) *link {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed.Load() {
		return nil
	}
	l := e.links[dst]
	if l == nil {
		l = &link{src: e, dst: dst, wake: make(chan struct{}, 1)}
		e.links[dst] = l
		e.wg.Add(1)
		go func() {
			defer e.wg.Done()
			l.run()
		}()
	}
	return l
}

// forgetLink removes l once its destination closed.
func (e *Endpoint) forgetLink(l *link) {
	e.mu.Lock()
	if e.links[l.dst] == l {
		delete(e.links, l.dst)
	}
	e.mu.Unlock()
}

// deliver hands a batch that arrived on a link to e's handler.
func (e *Endpoint) deliver(payload []byte) {
	b := new(raftpb.MessageBatch)
	if err := b.Unmarshal(payload); err != nil {
		// Only a codec bug gets here: tests check CorruptFrames is zero.
		e.stats.corruptFrames.Add(1)
		return
	}
	if b.DeploymentID != e.dep {
		e.stats.rejectedDeployment.Add(1)
		e.n.stats.rejected.Add(1)
		return
	}
	e.hmu.RLock()
	defer e.hmu.RUnlock()
	if e.handler == nil || e.closed.Load() {
		e.n.stats.unreachable.Add(1)
		return
	}
	e.stats.batchesReceived.Add(1)
	e.stats.messagesReceived.Add(uint64(len(b.Messages)))
	e.n.stats.delivered.Add(1)
	e.handler.HandleBatch(b)
}

// report queues an unreachable report for addr; never blocks.
func (e *Endpoint) report(addr string) {
	e.mu.Lock()
	if _, ok := e.pending[addr]; !ok {
		e.pending[addr] = struct{}{}
		e.order = append(e.order, addr)
	}
	e.mu.Unlock()
	signal(e.wake)
}

// runReports calls HandleUnreachable from its own goroutine: Send runs on
// an engine worker and must not call back into the engine.
func (e *Endpoint) runReports() {
	for {
		select {
		case <-e.wake:
		case <-e.done:
			return
		}
		e.mu.Lock()
		addrs := e.order
		e.order = nil
		clear(e.pending)
		e.mu.Unlock()
		e.hmu.RLock()
		for _, a := range addrs {
			if e.handler == nil {
				break
			}
			e.handler.HandleUnreachable(a)
		}
		e.hmu.RUnlock()
	}
}

// DialSnapshot opens a snapshot-lane connection to addr, which its
// SnapshotListener accepts. It fails with ErrUnreachable when addr is
// absent, closed, not started or cut off.
func (e *Endpoint) DialSnapshot(ctx context.Context, addr string) (net.Conn, error) {
	n := e.n
	n.mu.Lock()
	if e.closed.Load() {
		n.mu.Unlock()
		return nil, transport.ErrClosed
	}
	dst := n.endpoints[addr]
	if !n.reachableLocked(e, dst) {
		n.mu.Unlock()
		return nil, fmt.Errorf("%w: %s", ErrUnreachable, addr)
	}
	a, b := newConnPair(e.addr, addr)
	p := &connPair{from: e, to: dst, a: a, b: b}
	a.onClose = func() { n.forget(p) }
	b.onClose = a.onClose
	n.pairs[p] = struct{}{}
	n.mu.Unlock()
	fail := func(err error) (net.Conn, error) {
		a.Close()
		b.Close()
		return nil, err
	}
	select {
	case dst.snap.ch <- b:
		// A listener closed meanwhile may have drained the backlog
		// already: then b is ours to close.
		if isClosed(dst.snap.done) {
			return fail(fmt.Errorf("%w: %s", ErrUnreachable, addr))
		}
		dst.stats.snapshotConns.Add(1)
		return a, nil
	case <-dst.snap.done:
		return fail(fmt.Errorf("%w: %s", ErrUnreachable, addr))
	case <-ctx.Done():
		return fail(ctx.Err())
	case <-e.done:
		return fail(transport.ErrClosed)
	}
}

// Stats returns the endpoint's counters.
func (e *Endpoint) Stats() transport.Stats {
	c := &e.stats
	return transport.Stats{
		BatchesSent:        c.batchesSent.Load(),
		BatchesReceived:    c.batchesReceived.Load(),
		MessagesSent:       c.messagesSent.Load(),
		MessagesReceived:   c.messagesReceived.Load(),
		MessagesDropped:    c.messagesDropped.Load(),
		RejectedDeployment: c.rejectedDeployment.Load(),
		CorruptFrames:      c.corruptFrames.Load(),
		SnapshotConns:      c.snapshotConns.Load(),
	}
}

// Close stops the endpoint's goroutines, closes its snapshot-lane
// connections and listener; its handler is not called once Close returns.
// The address can then get a new endpoint (a restart).
func (e *Endpoint) Close() error {
	e.mu.Lock()
	if e.closed.Load() {
		e.mu.Unlock()
		return nil
	}
	e.closed.Store(true)
	close(e.done)
	e.mu.Unlock()

	e.hmu.Lock()
	e.handler = nil
	e.hmu.Unlock()
	e.snap.Close()

	n := e.n
	var mine []*connPair
	n.mu.Lock()
	for p := range n.pairs {
		if p.from == e || p.to == e {
			mine = append(mine, p)
			delete(n.pairs, p)
		}
	}
	n.mu.Unlock()
	n.closePairs(mine)
	e.wg.Wait()
	return nil
}

// closeLocked closes an endpoint made after the network closed: it has no
// goroutines yet.
func (e *Endpoint) closeLocked() {
	e.closed.Store(true)
	close(e.done)
	e.snap.Close()
}

// listener is the snapshot lane's net.Listener.
type listener struct {
	addr addr
	ch   chan net.Conn
	done chan struct{}
	once sync.Once
}

// Accept returns the next snapshot-lane connection, or net.ErrClosed.
func (l *listener) Accept() (net.Conn, error) {
	if isClosed(l.done) {
		return nil, net.ErrClosed
	}
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

// Close stops Accept and closes the connections waiting for it.
func (l *listener) Close() error {
	l.once.Do(func() { close(l.done) })
	for {
		select {
		case c := <-l.ch:
			c.Close()
		default:
			return nil
		}
	}
}

func (l *listener) Addr() net.Addr { return l.addr }
