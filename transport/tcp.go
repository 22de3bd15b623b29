package transport

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/skiffdb/skiff/raftpb"
)

// Defaults of TCPConfig.
const (
	DefaultQueueLen    = 4096
	DefaultDialTimeout = 2 * time.Second

	// preambleTimeout bounds how long an accepted connection may take to
	// finish the TLS handshake and send its preamble, so that a silent
	// client does not hold a goroutine.
	preambleTimeout = 5 * time.Second
	// writeTimeout bounds one round of writes to a peer: a peer that stops
	// reading for that long is treated as failed and redialed.
	writeTimeout = 10 * time.Second
	// ioBufferSize is the bufio size of both ends of a Raft-lane connection.
	ioBufferSize = 64 << 10
)

// TCPConfig configures a TCP transport.
type TCPConfig struct {
	// ListenAddr is the address to listen on; "127.0.0.1:0" picks a free
	// port, which Addr then returns.
	ListenAddr string
	// AdvertiseAddr is what peers dial to reach this host and what batches
	// carry as their source (default: the listener's address).
	AdvertiseAddr string
	// DeploymentID identifies the cluster: connections and batches of
	// another deployment are rejected.
	DeploymentID uint64
	// TLS, when set, secures both lanes. The same config serves both ends:
	// as a server (Certificates, ClientCAs, ClientAuth) and as a client
	// (Certificates, RootCAs). Mutual TLS is the caller's choice: set
	// ClientAuth to tls.RequireAndVerifyClientCert. When ServerName is
	// empty, the host part of the dialed address is verified.
	TLS *tls.Config
	// QueueLen bounds the messages queued for one peer (default 4096);
	// when full, Send drops, counts and reports the peer unreachable.
	QueueLen int
	// MaxFrameBytes bounds a Raft-lane frame (default 64 MiB); a longer
	// frame is corrupt. Both ends must agree.
	MaxFrameBytes int
	// DialTimeout bounds a dial, TLS handshake included (default 2s).
	DialTimeout time.Duration
	// Logger receives connection-level events (default: discarded).
	Logger *slog.Logger
}

// TCP is the production Transport: one listening port for both lanes,
// one outgoing Raft-lane connection per remote host with a sender goroutine
// that coalesces its queue into one frame per write, and a connection per
// DialSnapshot on the snapshot lane.
type TCP struct {
	cfg   TCPConfig
	ln    net.Listener
	addr  string
	snap  *laneListener
	rep   *reporter
	stats counters

	// ctx is canceled by Close, so that dials in progress end.
	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{} // closed by Close
	wg     sync.WaitGroup

	mu      sync.Mutex
	handler Handler // set by Start
	closed  bool
	peers   map[string]*peer
	// sources orders deliveries per sending host (by SourceAddress).
	sources map[string]*source
	// conns holds every open connection, accepted or dialed, so that Close
	// can end them; each is removed when it closes.
	conns map[net.Conn]struct{}
}

var _ Transport = (*TCP)(nil)

// counters are Stats' atomics.
type counters struct {
	batchesSent, batchesReceived   atomic.Uint64
	messagesSent, messagesReceived atomic.Uint64
	messagesDropped                atomic.Uint64
	rejectedDeployment             atomic.Uint64
	corruptFrames                  atomic.Uint64
	connects                       atomic.Uint64
	snapshotConns                  atomic.Uint64
	rejectedConns                  atomic.Uint64
}

// errStartedTwice: Start was called again.
var errStartedTwice = errors.New("transport: started twice")

// NewTCP listens at once, so that Addr is known before Start; connections
// are accepted from Start on.
func NewTCP(cfg TCPConfig) (*TCP, error) {
	if cfg.QueueLen <= 0 {
		cfg.QueueLen = DefaultQueueLen
	}
	if cfg.MaxFrameBytes <= 0 {
		cfg.MaxFrameBytes = DefaultMaxFrameBytes
	}
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = DefaultDialTimeout
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	ln, err := net.Listen("tcp", cfg.ListenAddr)
	if err != nil {
		return nil, fmt.Errorf("transport: listen %s: %w", cfg.ListenAddr, err)
	}
	t := &TCP{
		cfg:     cfg,
		ln:      ln,
		addr:    cfg.AdvertiseAddr,
		snap:    newLaneListener(ln.Addr()),
		rep:     newReporter(),
		done:    make(chan struct{}),
		peers:   make(map[string]*peer),
		sources: make(map[string]*source),
		conns:   make(map[net.Conn]struct{}),
	}
	if t.addr == "" {
		t.addr = ln.Addr().String()
	}
	t.ctx, t.cancel = context.WithCancel(context.Background())
	return t, nil
}

// Addr returns the address peers dial (AdvertiseAddr, or the listener's).
func (t *TCP) Addr() string { return t.addr }

// Start starts accepting connections and delivering batches to h.
func (t *TCP) Start(h Handler) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return ErrClosed
	}
	if t.handler != nil {
		return errStartedTwice
	}
	t.handler = h
	t.wg.Add(2)
	go func() {
		defer t.wg.Done()
		t.rep.run(h, t.done)
	}()
	go func() {
		defer t.wg.Done()
		t.acceptLoop()
	}()
	return nil
}

// SnapshotListener returns the snapshot lane's listener.
func (t *TCP) SnapshotListener() net.Listener { return t.snap }

// Stats returns the counters.
func (t *TCP) Stats() Stats {
	c := &t.stats
	return Stats{
		BatchesSent:        c.batchesSent.Load(),
		BatchesReceived:    c.batchesReceived.Load(),
		MessagesSent:       c.messagesSent.Load(),
		MessagesReceived:   c.messagesReceived.Load(),
		MessagesDropped:    c.messagesDropped.Load(),
		RejectedDeployment: c.rejectedDeployment.Load(),
		CorruptFrames:      c.corruptFrames.Load(),
		Connects:           c.connects.Load(),
		SnapshotConns:      c.snapshotConns.Load(),
		RejectedConns:      c.rejectedConns.Load(),
	}
}

// Close stops accepting, closes every connection, drops what is queued and
// waits for every goroutine of the transport, so the Handler is not called
// once it returns.
func (t *TCP) Close() error {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return nil
	}
	t.closed = true
	close(t.done)
	t.cancel()
	conns := make([]net.Conn, 0, len(t.conns))
	for c := range t.conns {
		conns = append(conns, c)
	}
	t.mu.Unlock()
	err := t.ln.Close()
	t.snap.Close()
	for _, c := range conns {
		c.Close()
	}
	t.wg.Wait()
	if err != nil && !errors.Is(err, net.ErrClosed) {
		return fmt.Errorf("transport: close listener: %w", err)
	}
	return nil
}

// Send queues msgs for addr; it never blocks (see Transport).
func (t *TCP) Send(addr string, msgs []raftpb.Message) bool {
	p := t.peer(addr)
	if p == nil {
		t.stats.messagesDropped.Add(uint64(len(msgs)))
		return false
	}
	return p.enqueue(msgs)
}

// peer returns addr's peer, starting its sender on first use, or nil once
// the transport is closed.
func (t *TCP) peer(addr string) *peer {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return nil
	}
	p := t.peers[addr]
	if p == nil {
		p = newPeer(t, addr)
		t.peers[addr] = p
		t.wg.Add(1)
		go func() {
			defer t.wg.Done()
			p.run()
		}()
	}
	return p
}

// track registers c for Close; it reports false (and closes c) when the
// transport is already closed.
func (t *TCP) track(c net.Conn) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		c.Close()
		return false
	}
	t.conns[c] = struct{}{}
	return true
}

// closeConn closes c and forgets it.
func (t *TCP) closeConn(c net.Conn) {
	c.Close()
	t.mu.Lock()
	delete(t.conns, c)
	t.mu.Unlock()
}

// DialSnapshot opens a snapshot-lane connection to addr (TLS when
// configured). The caller owns it; Close of the transport also closes it.
func (t *TCP) DialSnapshot(ctx context.Context, addr string) (net.Conn, error) {
	c, raw, err := t.dial(ctx, addr, laneSnapshot)
	if err != nil {
		return nil, err
	}
	return &laneConn{Conn: c, t: t, raw: raw}, nil
}

// dial connects to addr, completes the TLS handshake when configured and
// writes the preamble of lane. The raw connection is tracked for Close.
func (t *TCP) dial(ctx context.Context, addr string, lane byte) (c, raw net.Conn, err error) {
	ctx, cancel := context.WithTimeout(ctx, t.cfg.DialTimeout)
	defer cancel()
	// Close ends the dial too.
	stop := context.AfterFunc(t.ctx, cancel)
	defer stop()
	var d net.Dialer
	raw, err = d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, nil, fmt.Errorf("transport: dial %s: %w", addr, err)
	}
	if !t.track(raw) {
		return nil, nil, ErrClosed
	}
	c = raw
	if t.cfg.TLS != nil {
		cfg := t.cfg.TLS.Clone()
		if cfg.ServerName == "" {
			if host, _, err := net.SplitHostPort(addr); err == nil {
				cfg.ServerName = host
			}
		}
		tc := tls.Client(raw, cfg)
		if err := tc.HandshakeContext(ctx); err != nil {
			t.closeConn(raw)
			return nil, nil, fmt.Errorf("transport: tls handshake with %s: %w", addr, err)
		}
		c = tc
	}
	if dl, ok := ctx.Deadline(); ok {
		c.SetWriteDeadline(dl)
	}
	if _, err := c.Write(appendPreamble(nil, lane, t.cfg.DeploymentID)); err != nil {
		t.closeConn(raw)
		return nil, nil, fmt.Errorf("transport: write preamble to %s: %w", addr, err)
	}
	if err := c.SetWriteDeadline(time.Time{}); err != nil {
		t.closeConn(raw)
		return nil, nil, fmt.Errorf("transport: %s: %w", addr, err)
	}
	return c, raw, nil
}

// laneConn is a snapshot-lane connection; closing it also forgets it in
// the transport's set.
type laneConn struct {
	net.Conn
	t    *TCP
	raw  net.Conn
	once sync.Once
}

func (c *laneConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { c.t.closeConn(c.raw) })
	return err
}
