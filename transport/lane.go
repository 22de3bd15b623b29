package transport

import (
	"net"
	"sync"
)

// laneListener is the snapshot lane's net.Listener: the accept loop hands it
// connections whose preamble named the snapshot lane, and the snapshot
// subsystem's server accepts them from here. Closing it only stops the
// lane; the transport keeps running.
type laneListener struct {
	addr net.Addr
	ch   chan net.Conn
	done chan struct{}
	once sync.Once
}

func newLaneListener(addr net.Addr) *laneListener {
	return &laneListener{addr: addr, ch: make(chan net.Conn), done: make(chan struct{})}
}

// Accept returns the next snapshot-lane connection, or net.ErrClosed once
// the listener (or its transport) is closed.
func (l *laneListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

// Close stops Accept; connections offered later are closed by their offerer.
func (l *laneListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *laneListener) Addr() net.Addr { return l.addr }

// offer hands c to Accept, waiting until it is taken or stop or the
// listener closes; it reports whether c was taken (if not, the caller
// still owns c).
func (l *laneListener) offer(c net.Conn, stop <-chan struct{}) bool {
	select {
	case l.ch <- c:
		return true
	case <-l.done:
	case <-stop:
	}
	return false
}

// reporter calls Handler.HandleUnreachable from its own goroutine, once per
// pending address: Send runs on the caller's goroutine (an engine worker)
// and must not call back into the engine, and a sender blocked in a write
// must not delay the report. Reports for an address already pending merge
// into one.
type reporter struct {
	mu      sync.Mutex
	pending map[string]struct{}
	order   []string
	wake    chan struct{}
}

func newReporter() *reporter {
	return &reporter{pending: make(map[string]struct{}), wake: make(chan struct{}, 1)}
}

// report queues addr; it never blocks.
func (r *reporter) report(addr string) {
	r.mu.Lock()
	if _, ok := r.pending[addr]; !ok {
		r.pending[addr] = struct{}{}
		r.order = append(r.order, addr)
	}
	r.mu.Unlock()
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// run delivers reports to h until stop is closed.
func (r *reporter) run(h Handler, stop <-chan struct{}) {
	for {
		select {
		case <-r.wake:
		case <-stop:
			return
		}
		r.mu.Lock()
		addrs := r.order
		r.order = nil
		clear(r.pending)
		r.mu.Unlock()
		for _, a := range addrs {
			select {
			case <-stop:
				return
			default:
			}
			h.HandleUnreachable(a)
		}
	}
}
