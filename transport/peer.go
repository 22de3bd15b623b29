package transport

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"sync"
	"time"

	"github.com/skiffdb/skiff/raftpb"
)

// Reconnect backoff: doubled after each failure, jittered, capped so that a
// restarted peer is reached again within about a second.
const (
	minBackoff = 10 * time.Millisecond
	maxBackoff = time.Second
	// frameTarget: a batch grows past this only with its first message.
	// Frames of about 1 MiB still carry about a thousand 1 KiB entries
	// each, while their buffers stay small enough to reuse and the
	// receiver allocates no more than that per frame; everything queued
	// still goes out in one write (several frames, one flush).
	frameTarget = 1 << 20
	// maxFreeBuf and maxFree bound the batch buffers kept for reuse, so
	// that one burst (or one huge message) does not pin memory for the
	// peer's lifetime.
	maxFreeBuf = 2 * frameTarget
	maxFree    = 8
)

var errPeerClosedConn = errors.New("transport: peer closed the connection")

// outBatch is a run of messages encoded at Send time, framed as one batch.
type outBatch struct {
	buf []byte // the messages' encodings, back to back
	n   int    // how many
}

// peer is the outgoing side towards one remote host: a bounded queue that
// Send fills and one sender goroutine (run) that dials, writes and redials.
//
// States: connecting (queue accepted, a dial in progress or about to be),
// up (connected, queue drained by the writer), down (the last dial or
// connection failed: Send drops until the backoff has passed).
type peer struct {
	t    *TCP
	addr string
	// limit bounds the messages' bytes in one frame.
	limit int
	wake  chan struct{} // cap 1: the queue went non-empty

	mu sync.Mutex
	// Invariant: count == sum of n over queue, and count <= QueueLen.
	queue []*outBatch
	count int
	free  []*outBatch
	down  bool
	// fullReported: the queue overflowed and that was reported; reset when
	// the writer drains it, so a full queue is reported once, not per Send.
	fullReported bool
}

func newPeer(t *TCP, addr string) *peer {
	return &peer{
		t:     t,
		addr:  addr,
		limit: t.cfg.MaxFrameBytes - batchHeaderMax(t.addr),
		wake:  make(chan struct{}, 1),
	}
}

// enqueue encodes msgs onto the queue (so the caller's memory is not
// retained) and reports whether all of them were queued.
func (p *peer) enqueue(msgs []raftpb.Message) bool {
	dropped := 0
	report := false
	p.mu.Lock()
	if p.down {
		dropped = len(msgs)
	} else {
		for i := range msgs {
			if p.count >= p.t.cfg.QueueLen {
				dropped += len(msgs) - i
				if !p.fullReported {
					p.fullReported, report = true, true
				}
				break
			}
			if !p.appendLocked(&msgs[i]) {
				dropped++ // larger than a frame: it can never be sent
			}
		}
	}
	queued := p.count > 0
	p.mu.Unlock()
	if queued {
		select {
		case p.wake <- struct{}{}:
		default:
		}
	}
	if dropped > 0 {
		p.t.stats.messagesDropped.Add(uint64(dropped))
	}
	if report {
		p.t.cfg.Logger.Debug("transport: queue full", "peer", p.addr)
		p.t.rep.report(p.addr)
	}
	return dropped == 0
}

// appendLocked encodes m at the end of the last batch, starting a new batch
// when that one would pass frameTarget; a message alone may fill a frame up
// to the limit, and one larger than that is dropped (false).
func (p *peer) appendLocked(m *raftpb.Message) bool {
	var b *outBatch
	if n := len(p.queue); n > 0 {
		b = p.queue[n-1]
	} else {
		b = p.newBatchLocked()
	}
	start := len(b.buf)
	b.buf = m.AppendTo(b.buf)
	size := len(b.buf) - start
	switch {
	case size > p.limit:
		b.buf = b.buf[:start]
		if b.n == 0 {
			p.queue = p.queue[:len(p.queue)-1]
			p.recycleLocked(b)
		}
		return false
	case start > 0 && len(b.buf) > frameTarget:
		nb := p.newBatchLocked()
		nb.buf = append(nb.buf, b.buf[start:]...)
		b.buf = b.buf[:start]
		b = nb
	}
	b.n++
	p.count++
	return true
}

// newBatchLocked appends an empty batch to the queue.
func (p *peer) newBatchLocked() *outBatch {
	var b *outBatch
	if n := len(p.free); n > 0 {
		b, p.free = p.free[n-1], p.free[:n-1]
	} else {
		b = new(outBatch)
	}
	p.queue = append(p.queue, b)
	return b
}

func (p *peer) recycleLocked(b *outBatch) {
	if cap(b.buf) > maxFreeBuf || len(p.free) >= maxFree {
		return
	}
	b.buf, b.n = b.buf[:0], 0
	p.free = append(p.free, b)
}

// take removes everything queued.
func (p *peer) take() []*outBatch {
	p.mu.Lock()
	defer p.mu.Unlock()
	q := p.queue
	p.queue, p.count, p.fullReported = nil, 0, false
	return q
}

func (p *peer) recycle(bs []*outBatch) {
	p.mu.Lock()
	for _, b := range bs {
		p.recycleLocked(b)
	}
	p.mu.Unlock()
}

// setDown marks the peer down (or not). Going down drops the queue.
func (p *peer) setDown(down bool) {
	var dropped int
	p.mu.Lock()
	p.down = down
	if down {
		dropped = p.count
		for _, b := range p.queue {
			p.recycleLocked(b)
		}
		p.queue, p.count, p.fullReported = nil, 0, false
	}
	p.mu.Unlock()
	p.t.stats.messagesDropped.Add(uint64(dropped))
}

// run is the sender goroutine: it waits for messages, dials, writes until
// the connection fails, and backs off before dialing again.
func (p *peer) run() {
	backoff := minBackoff
	for {
		select {
		case <-p.wake:
		case <-p.t.done:
			return
		}
		c, raw, err := p.t.dial(p.t.ctx, p.addr, laneRaft)
		if err == nil {
			p.t.stats.connects.Add(1)
			since := time.Now()
			err = p.serve(c, raw)
			p.t.closeConn(raw)
			// Only a connection that lasted resets the backoff: a peer
			// that accepts and then closes at once (another deployment,
			// a TLS refusal seen late) must not be redialed in a loop.
			if time.Since(since) > maxBackoff {
				backoff = minBackoff
			}
		}
		select {
		case <-p.t.done:
			return
		default:
		}
		// Down: drop what is queued and what comes during the backoff,
		// and tell the engine once for this failure. Dropping rather than
		// holding messages for a dead peer keeps memory bounded and lets
		// Raft's own retries (probe, heartbeats) decide what to resend
		// once the peer is back, instead of replaying stale messages.
		p.setDown(true)
		p.t.cfg.Logger.Debug("transport: peer unreachable", "peer", p.addr, "err", err)
		p.t.rep.report(p.addr)
		// Jitter (a random half of the backoff) keeps the hosts that lost
		// the same peer from redialing it in lockstep.
		d := backoff/2 + rand.N(backoff/2+1)
		backoff = min(2*backoff, maxBackoff)
		select {
		case <-time.After(d):
		case <-p.t.done:
			return
		}
		p.setDown(false)
	}
}

// serve writes the queue to c until an error. Each round takes everything
// queued (one frame per batch of about frameTarget bytes) and writes it
// into the bufio.Writer; it flushes only when a round finds the queue
// empty, so messages queued while a write was in the kernel go out with
// the next write rather than one syscall each. The batches it took are
// lost if the connection fails: counted as sent, never as dropped (Raft
// retransmits either way).
func (p *peer) serve(c, raw net.Conn) error {
	// The receiver never writes on the Raft lane: a read that returns
	// means the peer closed or reset the connection, which a writer with
	// nothing to write would otherwise learn only at its next write.
	dead := make(chan struct{})
	p.t.wg.Add(1)
	go func() {
		defer p.t.wg.Done()
		defer close(dead)
		io.Copy(io.Discard, c)
	}()
	defer func() {
		raw.Close()
		<-dead
	}()
	w := bufio.NewWriterSize(c, ioBufferSize)
	var head []byte
	for {
		q := p.take()
		if len(q) == 0 {
			if w.Buffered() > 0 {
				c.SetWriteDeadline(time.Now().Add(writeTimeout))
				if err := w.Flush(); err != nil {
					return fmt.Errorf("flush: %w", err)
				}
			}
			select {
			case <-p.wake:
				continue
			case <-dead:
				return errPeerClosedConn
			case <-p.t.done:
				return ErrClosed
			}
		}
		// A deadline per round, not per frame: a receiver that stops
		// reading for writeTimeout fails the connection, and the queue
		// meanwhile fills and drops rather than Send blocking.
		c.SetWriteDeadline(time.Now().Add(writeTimeout))
		for _, b := range q {
			// Counted as sent when handed to the connection: the receiver
			// may handle a frame before this write returns.
			p.t.stats.batchesSent.Add(1)
			p.t.stats.messagesSent.Add(uint64(b.n))
			head = appendBatchHeader(head[:0], p.t.cfg.DeploymentID, p.t.addr, b.n)
			if err := writeFrame(w, head, b.buf); err != nil {
				return fmt.Errorf("write: %w", err)
			}
		}
		p.recycle(q)
	}
}
