package transport

import (
	"bufio"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"sync"
	"time"

	"github.com/skiffdb/skiff/raftpb"
)

// The receiving side of the TCP transport: one goroutine accepts, and one
// goroutine per connection reads its preamble and then either hands it to
// the snapshot lane or reads its frames and delivers their batches.

// acceptLoop accepts until Close. It only accepts: the handshake and the
// preamble run on the connection's own goroutine, so that a slow or silent
// client never delays another host's connection.
func (t *TCP) acceptLoop() {
	var backoff time.Duration
	// seq numbers connections in accept order, which for one sending host
	// is the order it dialed them (the kernel's accept queue is FIFO);
	// deliver uses it so that an older connection never overtakes a newer
	// one.
	var seq uint64
	for {
		c, err := t.ln.Accept()
		if err != nil {
			select {
			case <-t.done:
				return
			default:
			}
			// Out of file descriptors and the like: wait and retry rather
			// than spin or give up on the host's only listener.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			t.cfg.Logger.Warn("transport: accept", "err", err, "retry_in", backoff)
			select {
			case <-time.After(backoff):
				continue
			case <-t.done:
				return
			}
		}
		backoff = 0
		if !t.track(c) {
			return
		}
		seq++
		t.wg.Add(1)
		go func(seq uint64) {
			defer t.wg.Done()
			t.serveConn(c, seq)
		}(seq)
	}
}

// serveConn reads an accepted connection's preamble (after the TLS
// handshake) and runs its lane. raw is what t.conns tracks: closing it
// ends the TLS connection on top too.
func (t *TCP) serveConn(raw net.Conn, seq uint64) {
	c := raw
	if t.cfg.TLS != nil {
		// The handshake runs inside the first Read, under the preamble
		// deadline; a client without a valid certificate fails there
		// (when the config requires one) and is counted as rejected.
		c = tls.Server(raw, t.cfg.TLS)
	}
	log := t.cfg.Logger.With("remote", raw.RemoteAddr().String())
	c.SetDeadline(time.Now().Add(preambleTimeout))
	lane, dep, err := readPreamble(c)
	if err != nil {
		t.stats.rejectedConns.Add(1)
		log.Warn("transport: connection rejected", "err", err)
		t.closeConn(raw)
		return
	}
	if dep != t.cfg.DeploymentID {
		t.stats.rejectedDeployment.Add(1)
		log.Warn("transport: connection rejected", "err", ErrDeploymentMismatch,
			"deployment_id", dep, "want", t.cfg.DeploymentID)
		t.closeConn(raw)
		return
	}
	// No deadline from here: a Raft-lane connection is idle whenever its
	// sender has nothing to send (the sender's own write timeout and its
	// peer-closed watcher end it), and snapshot-lane deadlines belong to
	// the snapshot protocol.
	if c.SetDeadline(time.Time{}) != nil {
		t.closeConn(raw)
		return
	}
	if lane == laneSnapshot {
		// Counted before the handoff, so that the counter is up to date
		// by the time Accept returns; taken back if nobody accepts.
		t.stats.snapshotConns.Add(1)
		if !t.snap.offer(&laneConn{Conn: c, t: t, raw: raw}, t.done) {
			t.stats.snapshotConns.Add(^uint64(0))
			t.closeConn(raw)
		}
		return
	}
	defer t.closeConn(raw)
	rc := &recvConn{seq: seq}
	defer t.releaseSource(rc)
	err = readBatches(bufio.NewReaderSize(c, ioBufferSize), t.cfg.DeploymentID, t.cfg.MaxFrameBytes,
		func(b *raftpb.MessageBatch) error { return t.deliver(rc, b) })
	switch {
	case errors.Is(err, errSuperseded):
		log.Debug("transport: closing connection", "err", err)
	case errors.Is(err, ErrCorruptFrame):
		t.stats.corruptFrames.Add(1)
		log.Warn("transport: closing connection", "err", err)
	case errors.Is(err, ErrDeploymentMismatch):
		t.stats.rejectedDeployment.Add(1)
		log.Warn("transport: closing connection", "err", err)
	case errors.Is(err, io.EOF), errors.Is(err, net.ErrClosed):
	default:
		log.Debug("transport: connection ended", "err", err)
	}
}

// errSuperseded: a newer Raft-lane connection from the same host took over.
var errSuperseded = errors.New("transport: superseded by a newer connection from the same host")

// source orders the deliveries of one sending host. A sender redials after
// a failure, and the old connection's last frames may still be in the
// receiver's buffers while the new one's arrive: two goroutines would then
// deliver one host's batches concurrently and out of order. Instead, the
// newest connection of a host owns its source: the older one stops
// (its frames not yet delivered are dropped — "in order, or not at all"),
// and deliveries hold mu, so they never overlap.
type source struct {
	mu  sync.Mutex
	cur *recvConn // the connection that owns the source; nil when none
	// newest is the accept sequence of the newest connection that owned
	// the source: an older one never takes it back (the kernel accepts a
	// host's connections in the order it dialed them).
	newest uint64
}

// recvConn is one accepted Raft-lane connection's state.
type recvConn struct {
	seq uint64  // accept order, from 1
	src *source // set by its first batch
}

// deliver hands b to the handler in the order of its source.
func (t *TCP) deliver(rc *recvConn, b *raftpb.MessageBatch) error {
	src := rc.src
	if src == nil {
		t.mu.Lock()
		src = t.sources[b.SourceAddress]
		if src == nil {
			src = new(source)
			t.sources[b.SourceAddress] = src
		}
		t.mu.Unlock()
		rc.src = src
		src.mu.Lock()
		if rc.seq < src.newest {
			src.mu.Unlock()
			return errSuperseded
		}
		src.cur, src.newest = rc, rc.seq // the newest connection takes over
	} else {
		src.mu.Lock()
		if src.cur != rc {
			src.mu.Unlock()
			return errSuperseded
		}
	}
	defer src.mu.Unlock()
	t.stats.batchesReceived.Add(1)
	t.stats.messagesReceived.Add(uint64(len(b.Messages)))
	t.handler.HandleBatch(b)
	return nil
}

// releaseSource gives up rc's source when rc still owns it.
func (t *TCP) releaseSource(rc *recvConn) {
	if rc.src == nil {
		return
	}
	rc.src.mu.Lock()
	if rc.src.cur == rc {
		rc.src.cur = nil
	}
	rc.src.mu.Unlock()
}
