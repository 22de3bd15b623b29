package memnet

import (
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"
)

// Config configures a Network.
type Config struct {
	// Seed drives every random fault decision (drops, duplicates,
	// delays): the same seed and the same sequence of sends give the same
	// faults.
	Seed int64
}

// Network is an in-memory network of endpoints, one per host address,
// with faults the test sets at any time. It is safe for concurrent use.
type Network struct {
	done chan struct{} // closed by Close

	mu        sync.Mutex
	rng       *rand.Rand
	endpoints map[string]*Endpoint // the current endpoint of each address
	// side gives each address listed in the last Partition its side
	// (1-based); unlisted addresses share side 0. Empty: no partition.
	side     map[string]int
	isolated map[string]bool
	dropRate float64
	dupRate  float64
	minDelay time.Duration
	maxDelay time.Duration
	reorder  bool
	pairs    map[*connPair]struct{} // open snapshot-lane connections
	closed   bool

	stats netCounters
}

// connPair is a snapshot-lane connection: its two ends and hosts.
type connPair struct {
	from, to *Endpoint
	a, b     *conn
}

// Stats counts batches across the whole network since it was created.
type Stats struct {
	// Sent: batches accepted onto a link (duplicates included).
	Sent uint64
	// Delivered: batches handed to a handler.
	Delivered uint64
	// Dropped: batches lost to the drop rate.
	Dropped uint64
	// Duplicated: extra copies made by the duplicate rate.
	Duplicated uint64
	// Unreachable: batches refused or lost because the destination was
	// partitioned, isolated, absent, not started or closed (at send or at
	// delivery), or the link's queue was full.
	Unreachable uint64
	// Rejected: batches of another deployment, refused by the receiver.
	Rejected uint64
	// ConnsCut: snapshot-lane connections closed by a partition.
	ConnsCut uint64
}

type netCounters struct {
	sent, delivered, dropped, duplicated, unreachable, rejected, connsCut atomic.Uint64
}

// New returns an empty network.
func New(cfg Config) *Network {
	return &Network{
		done:      make(chan struct{}),
		rng:       rand.New(rand.NewPCG(uint64(cfg.Seed), 0x736b696666)),
		endpoints: make(map[string]*Endpoint),
		side:      make(map[string]int),
		isolated:  make(map[string]bool),
		pairs:     make(map[*connPair]struct{}),
	}
}

// Endpoint returns the endpoint of a host at addr in deployment
// deploymentID. If the address's previous endpoint was closed, a new one
// replaces it (a host restart: batches in flight to the old one are lost);
// if it is still open, that endpoint is returned.
func (n *Network) Endpoint(addr string, deploymentID uint64) *Endpoint {
	n.mu.Lock()
	defer n.mu.Unlock()
	if e := n.endpoints[addr]; e != nil && !e.closed.Load() {
		return e
	}
	e := newEndpoint(n, addr, deploymentID)
	if n.closed {
		e.closeLocked()
	}
	n.endpoints[addr] = e
	return e
}

// Partition splits the hosts: hosts on different sides cannot talk, on
// either lane (addresses in no side form one more side together).
// Snapshot-lane connections across the cut are closed. It replaces the
// previous partition; isolation stays.
func (n *Network) Partition(sides ...[]string) {
	n.mu.Lock()
	clear(n.side)
	for i, s := range sides {
		for _, a := range s {
			n.side[a] = i + 1
		}
	}
	cut := n.cutLocked()
	n.mu.Unlock()
	n.closePairs(cut)
}

// Isolate cuts addr off from every other host until Heal.
func (n *Network) Isolate(addr string) {
	n.mu.Lock()
	n.isolated[addr] = true
	cut := n.cutLocked()
	n.mu.Unlock()
	n.closePairs(cut)
}

// Heal removes every partition and isolation.
func (n *Network) Heal() {
	n.mu.Lock()
	clear(n.side)
	clear(n.isolated)
	n.mu.Unlock()
}

// SetDropRate makes each batch lost with probability p (silently, like
// packet loss: Send still reports true).
func (n *Network) SetDropRate(p float64) {
	n.mu.Lock()
	n.dropRate = p
	n.mu.Unlock()
}

// SetDuplicateRate makes each batch delivered twice with probability p.
func (n *Network) SetDuplicateRate(p float64) {
	n.mu.Lock()
	n.dupRate = p
	n.mu.Unlock()
}

// SetDelay delays each batch by a random duration in [lo, hi].
func (n *Network) SetDelay(lo, hi time.Duration) {
	n.mu.Lock()
	n.minDelay, n.maxDelay = lo, max(lo, hi)
	n.mu.Unlock()
}

// SetReorder lets batches on one link overtake each other (each is
// delivered at its own random delay). Off (the default), batches on a link
// keep their order even with delays.
func (n *Network) SetReorder(on bool) {
	n.mu.Lock()
	n.reorder = on
	n.mu.Unlock()
}

// Stats returns the network's counters.
func (n *Network) Stats() Stats {
	c := &n.stats
	return Stats{
		Sent:        c.sent.Load(),
		Delivered:   c.delivered.Load(),
		Dropped:     c.dropped.Load(),
		Duplicated:  c.duplicated.Load(),
		Unreachable: c.unreachable.Load(),
		Rejected:    c.rejected.Load(),
		ConnsCut:    c.connsCut.Load(),
	}
}

// Close closes every endpoint (waiting for their goroutines); endpoints
// made afterwards start closed.
func (n *Network) Close() error {
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return nil
	}
	n.closed = true
	close(n.done)
	eps := make([]*Endpoint, 0, len(n.endpoints))
	for _, e := range n.endpoints {
		eps = append(eps, e)
	}
	n.mu.Unlock()
	for _, e := range eps {
		e.Close()
	}
	return nil
}

// connectedLocked reports whether a and b can talk now.
func (n *Network) connectedLocked(a, b string) bool {
	if a == b {
		return true
	}
	return !n.isolated[a] && !n.isolated[b] && n.side[a] == n.side[b]
}

// reachableLocked reports whether src can reach dst, the current, open
// and started endpoint of its address.
func (n *Network) reachableLocked(src *Endpoint, dst *Endpoint) bool {
	return dst != nil && n.endpoints[dst.addr] == dst && !dst.closed.Load() &&
		dst.started.Load() && n.connectedLocked(src.addr, dst.addr)
}

// delayLocked draws a batch's delay.
func (n *Network) delayLocked() time.Duration {
	if n.maxDelay <= n.minDelay {
		return n.minDelay
	}
	return n.minDelay + time.Duration(n.rng.Int64N(int64(n.maxDelay-n.minDelay)+1))
}

// cutLocked removes and returns the snapshot-lane connections whose hosts
// can no longer talk.
func (n *Network) cutLocked() []*connPair {
	var cut []*connPair
	for p := range n.pairs {
		if !n.connectedLocked(p.from.addr, p.to.addr) {
			cut = append(cut, p)
			delete(n.pairs, p)
		}
	}
	n.stats.connsCut.Add(uint64(len(cut)))
	return cut
}

// closePairs closes both ends of each connection.
func (n *Network) closePairs(ps []*connPair) {
	for _, p := range ps {
		p.a.Close()
		p.b.Close()
	}
}

// forget removes p once one of its ends closed.
func (n *Network) forget(p *connPair) {
	n.mu.Lock()
	delete(n.pairs, p)
	n.mu.Unlock()
}
