package memnet

import (
	"io"
	"net"
	"os"
	"sync"
	"time"
)

// pipeBufSize bounds the bytes buffered in one direction of a snapshot-lane
// connection: enough that a writer of chunks rarely waits for the reader
// (net.Pipe, unbuffered, hands over one Write at a time), small enough
// that a stalled reader stops its writer.
const pipeBufSize = 1 << 20

// pipe is one direction of a conn: a bounded byte buffer between one
// writer end and one reader end.
//
// Waiting uses channels, not a sync.Cond: a blocked Read or Write must
// also wake for a deadline, the local Close and the other end's Close,
// which a select on channels expresses directly, and inside a synctest
// bubble a goroutine blocked in such a select is durably blocked, so the
// fake clock can advance to the deadline.
type pipe struct {
	mu   sync.Mutex
	data []byte // unread bytes are data[off:]
	off  int

	// readable and writable are level hints, not counts: a waiter that
	// wakes rechecks the buffer under mu, so a lost or extra token costs
	// a loop, never a missed byte.
	readable chan struct{} // cap 1: bytes were added
	writable chan struct{} // cap 1: bytes were taken
	rDone    chan struct{} // closed when the reading end closes
	wDone    chan struct{} // closed when the writing end closes
}

func newPipe() *pipe {
	return &pipe{
		readable: make(chan struct{}, 1),
		writable: make(chan struct{}, 1),
		rDone:    make(chan struct{}),
		wDone:    make(chan struct{}),
	}
}

func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

func isClosed(c chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// conn is one end of an in-memory snapshot-lane connection, a net.Conn
// with buffered directions and deadlines (the snapshot package unblocks
// reads and writes with SetDeadline). Deadlines use time.AfterFunc, so
// they follow the fake clock inside a testing/synctest bubble.
type conn struct {
	rd, wr        *pipe
	local, remote addr
	done          chan struct{} // closed by Close
	once          sync.Once
	rdl, wdl      deadline
	onClose       func()
}

// newConnPair returns the two ends of a connection from a to b.
func newConnPair(a, b string) (*conn, *conn) {
	ab, ba := newPipe(), newPipe()
	ca := &conn{rd: ba, wr: ab, local: addr(a), remote: addr(b), done: make(chan struct{})}
	cb := &conn{rd: ab, wr: ba, local: addr(b), remote: addr(a), done: make(chan struct{})}
	ca.rdl.init()
	ca.wdl.init()
	cb.rdl.init()
	cb.wdl.init()
	return ca, cb
}

// Read reads what the other end wrote; io.EOF once it closed and the
// buffer is drained; os.ErrDeadlineExceeded past the read deadline.
func (c *conn) Read(b []byte) (int, error) {
	p := c.rd
	for {
		// As with net.Conn, an expired deadline fails the call even when
		// bytes are buffered: the snapshot server stops its watcher
		// Read this way and must not consume the next request's bytes.
		if isClosed(c.done) {
			return 0, net.ErrClosed
		}
		if isClosed(c.rdl.wait()) {
			return 0, os.ErrDeadlineExceeded
		}
		p.mu.Lock()
		if len(p.data) > p.off {
			n := copy(b, p.data[p.off:])
			p.off += n
			more := len(p.data) > p.off
			if !more {
				p.data, p.off = p.data[:0], 0
			}
			p.mu.Unlock()
			signal(p.writable)
			if more {
				signal(p.readable) // for another reader
			}
			return n, nil
		}
		p.mu.Unlock()
		if isClosed(p.wDone) {
			return 0, io.EOF
		}
		if len(b) == 0 {
			return 0, nil
		}
		select {
		case <-p.readable:
		case <-p.wDone:
		case <-c.done:
		case <-c.rdl.wait():
		}
	}
}

// Write buffers b for the other end, waiting for room; io.ErrClosedPipe
// once the other end closed; os.ErrDeadlineExceeded past the write
// deadline (with what was written so far).
func (c *conn) Write(b []byte) (int, error) {
	p := c.wr
	n := 0
	for {
		if isClosed(c.done) {
			return n, net.ErrClosed
		}
		if isClosed(c.wdl.wait()) {
			return n, os.ErrDeadlineExceeded
		}
		if isClosed(p.rDone) {
			return n, io.ErrClosedPipe
		}
		if n == len(b) {
			return n, nil
		}
		p.mu.Lock()
		if k := min(pipeBufSize-(len(p.data)-p.off), len(b)-n); k > 0 {
			// Move the unread bytes to the front before append would
			// grow the array: the buffer then never exceeds about
			// pipeBufSize however long the stream.
			if p.off > 0 && len(p.data)+k > cap(p.data) {
				m := copy(p.data, p.data[p.off:])
				p.data, p.off = p.data[:m], 0
			}
			p.data = append(p.data, b[n:n+k]...)
			n += k
			p.mu.Unlock()
			signal(p.readable)
			continue
		}
		p.mu.Unlock()
		select {
		case <-p.writable:
		case <-p.rDone:
		case <-c.done:
		case <-c.wdl.wait():
		}
	}
}

// Close closes this end: the other end reads what was buffered, then
// io.EOF, and its writes fail.
func (c *conn) Close() error {
	c.once.Do(func() {
		close(c.done)
		close(c.rd.rDone)
		c.rd.mu.Lock()
		c.rd.data, c.rd.off = nil, 0
		c.rd.mu.Unlock()
		close(c.wr.wDone)
		c.rdl.stop()
		c.wdl.stop()
		if c.onClose != nil {
			c.onClose()
		}
	})
	return nil
}

func (c *conn) LocalAddr() net.Addr  { return c.local }
func (c *conn) RemoteAddr() net.Addr { return c.remote }

func (c *conn) SetDeadline(t time.Time) error {
	c.rdl.set(t)
	c.wdl.set(t)
	return nil
}

func (c *conn) SetReadDeadline(t time.Time) error  { c.rdl.set(t); return nil }
func (c *conn) SetWriteDeadline(t time.Time) error { c.wdl.set(t); return nil }

// addr is a memnet address.
type addr string

func (a addr) Network() string { return "memnet" }
func (a addr) String() string  { return string(a) }

// deadline is a channel closed when a deadline passes; setting a new
// deadline replaces a closed channel with a fresh one.
type deadline struct {
	mu    sync.Mutex
	ch    chan struct{}
	timer *time.Timer
}

func (d *deadline) init() { d.ch = make(chan struct{}) }

func (d *deadline) wait() chan struct{} {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.ch
}

// set arms the deadline at t; the zero time means none.
func (d *deadline) set(t time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.timer != nil {
		d.timer.Stop()
		d.timer = nil
	}
	if isClosed(d.ch) {
		d.ch = make(chan struct{})
	}
	if t.IsZero() {
		return
	}
	dur := time.Until(t)
	if dur <= 0 {
		close(d.ch)
		return
	}
	ch := d.ch
	d.timer = time.AfterFunc(dur, func() {
		d.mu.Lock()
		defer d.mu.Unlock()
		// A later set may have replaced ch: then this timer is stale.
		if d.ch == ch && !isClosed(ch) {
			close(ch)
		}
	})
}

func (d *deadline) stop() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.timer != nil {
		d.timer.Stop()
		d.timer = nil
	}
}
