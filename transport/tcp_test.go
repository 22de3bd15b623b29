package transport

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/skiffdb/skiff/raftpb"
)

func TestTCPExchangeInOrder(t *testing.T) {
	leakCheck(t)
	a, ra := startTCP(t, TCPConfig{})
	b, rb := startTCP(t, TCPConfig{})
	const n = 2000
	for i := range n {
		if !a.Send(b.Addr(), []raftpb.Message{msg(uint64(i), []byte("ab"))}) {
			t.Fatalf("send %d to b dropped", i)
		}
		if !b.Send(a.Addr(), []raftpb.Message{msg(uint64(i), []byte("ba"))}) {
			t.Fatalf("send %d to a dropped", i)
		}
	}
	rb.waitMessages(t, n)
	ra.waitMessages(t, n)
	checkOrder(t, rb.messages(), n)
	checkOrder(t, ra.messages(), n)
	rb.mu.Lock()
	for _, bt := range rb.batches {
		if bt.SourceAddress != a.Addr() || bt.DeploymentID != 7 {
			t.Fatalf("batch from %q deployment %d, want %q 7", bt.SourceAddress, bt.DeploymentID, a.Addr())
		}
	}
	if got := string(rb.msgs[5].Entries[0].Data); got != "ab" {
		t.Fatalf("entry data %q", got)
	}
	rb.mu.Unlock()
	if s := a.Stats(); s.MessagesSent != n || s.MessagesDropped != 0 || s.Connects != 1 {
		t.Fatalf("a stats %+v", s)
	}
	if s := b.Stats(); s.MessagesReceived != n {
		t.Fatalf("b stats %+v", s)
	}
}

// TestTCPSendDoesNotRetain: Send encodes at once, so the caller may reuse
// its messages' memory.
func TestTCPSendDoesNotRetain(t *testing.T) {
	leakCheck(t)
	a, _ := startTCP(t, TCPConfig{})
	b, rb := startTCP(t, TCPConfig{})
	data := []byte("original")
	msgs := []raftpb.Message{msg(0, data)}
	a.Send(b.Addr(), msgs)
	copy(data, "CLOBBER!")
	msgs[0].Index = 99
	rb.waitMessages(t, 1)
	m := rb.messages()[0]
	if m.Index != 0 || string(m.Entries[0].Data) != "original" {
		t.Fatalf("received %d %q: Send retained the caller's memory", m.Index, m.Entries[0].Data)
	}
}

// TestTCPCoalesces: messages sent one per Send while the sender is busy go
// out together, many per frame and write.
func TestTCPCoalesces(t *testing.T) {
	leakCheck(t)
	a, _ := startTCP(t, TCPConfig{QueueLen: 1 << 16})
	b, rb := startTCP(t, TCPConfig{})
	const n = 20000
	for i := range n {
		if !a.Send(b.Addr(), []raftpb.Message{msg(uint64(i), make([]byte, 16))}) {
			t.Fatalf("send %d dropped", i)
		}
	}
	rb.waitMessages(t, n)
	checkOrder(t, rb.messages(), n)
	s := a.Stats()
	t.Logf("%d messages in %d batches", s.MessagesSent, s.BatchesSent)
	if s.BatchesSent*4 > s.MessagesSent {
		t.Fatalf("%d batches for %d messages: not coalesced", s.BatchesSent, s.MessagesSent)
	}
	if got := b.Stats().BatchesReceived; got != s.BatchesSent {
		t.Fatalf("b received %d batches, a sent %d", got, s.BatchesSent)
	}
}

// TestTCPQueueFull: a peer that accepts but never reads fills the socket
// and then the queue; Send keeps returning at once, drops, counts, and the
// peer is reported unreachable once for the overflow.
func TestTCPQueueFull(t *testing.T) {
	leakCheck(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err == nil {
			accepted <- c
		}
	}()
	a, ra := startTCP(t, TCPConfig{QueueLen: 64})
	done := make(chan int)
	go func() {
		dropped := 0
		big := make([]byte, 64<<10)
		for i := range 4000 {
			if !a.Send(ln.Addr().String(), []raftpb.Message{msg(uint64(i), big)}) {
				dropped++
			}
		}
		done <- dropped
	}()
	var dropped int
	select {
	case dropped = <-done:
	case <-time.After(waitLimit):
		t.Fatal("Send blocked on a peer that does not read")
	}
	c := <-accepted
	defer c.Close()
	s := a.Stats()
	if dropped == 0 || s.MessagesDropped < uint64(dropped) {
		t.Fatalf("%d sends reported drops, stats %+v", dropped, s)
	}
	ra.waitFor(t, "unreachable report", func(r *recorder) bool { return r.unreachable[ln.Addr().String()] > 0 })
	t.Logf("dropped %d of 4000 (stats %+v), unreachable reports %d", dropped, s, ra.unreachableCount(ln.Addr().String()))
	if got := ra.unreachableCount(ln.Addr().String()); got > 2 {
		t.Fatalf("%d unreachable reports for one overflow", got)
	}
}

// TestTCPReconnect: after the peer restarts on the same address, the
// sender reports the failure, redials and delivers again.
func TestTCPReconnect(t *testing.T) {
	leakCheck(t)
	a, ra := startTCP(t, TCPConfig{})
	b, rb := startTCP(t, TCPConfig{})
	addr := b.Addr()
	a.Send(addr, []raftpb.Message{msg(0, nil)})
	rb.waitMessages(t, 1)
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	// The sender notices the close without sending (its reader sees EOF).
	ra.waitFor(t, "unreachable after the peer closed", func(r *recorder) bool { return r.unreachable[addr] > 0 })

	_, rb2 := startTCP(t, TCPConfig{ListenAddr: addr})
	// Sends during the backoff are dropped; keep sending until one lands.
	deadline := time.Now().Add(waitLimit)
	for i := uint64(1); ; i++ {
		a.Send(addr, []raftpb.Message{msg(i, nil)})
		got := false
		select {
		case <-rb2.changed:
			got = true
		case <-time.After(20 * time.Millisecond):
		}
		if got && len(rb2.messages()) > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no delivery after the peer restarted")
		}
	}
	if s := a.Stats(); s.Connects < 2 {
		t.Fatalf("stats %+v: want a second connect", s)
	}
}

// validFrame returns a frame holding a batch of deployment dep.
func validFrame(dep uint64, msgs ...raftpb.Message) []byte {
	mb := raftpb.MessageBatch{DeploymentID: dep, SourceAddress: "raw", Messages: msgs}
	p := mb.Marshal()
	var buf bytes.Buffer
	w := bufio.NewWriter(&buf)
	writeFrame(w, p, nil)
	w.Flush()
	return buf.Bytes()
}

func TestTCPCorruptFrame(t *testing.T) {
	leakCheck(t)
	b, rb := startTCP(t, TCPConfig{MaxFrameBytes: 1 << 20})
	a, _ := startTCP(t, TCPConfig{})
	pre := appendPreamble(nil, laneRaft, 7)
	good := validFrame(7, msg(0, []byte("x")))

	// Both damages below leave a payload that decodes: only the CRC
	// check can catch them.
	badCRC := bytes.Clone(good)
	badCRC[4] ^= 1 // the CRC field
	flipped := bytes.Clone(good)
	flipped[bytes.LastIndexByte(flipped, 'x')] = 'y' // the entry's data
	tooLong := binary.LittleEndian.AppendUint32(nil, 1<<20+1)
	tooLong = append(tooLong, 0, 0, 0, 0)
	zero := make([]byte, 8)
	undecodable := func() []byte { // right CRC over bytes that are no batch
		var buf bytes.Buffer
		w := bufio.NewWriter(&buf)
		writeFrame(w, []byte{raftpb.CodecVersion, 0xff}, nil)
		w.Flush()
		return buf.Bytes()
	}()
	cut := good[:len(good)-2]

	cases := []struct {
		name string
		data []byte
	}{
		{"bad crc", badCRC},
		{"payload bit flip", flipped},
		{"too long", tooLong},
		{"zero length", zero},
		{"undecodable", undecodable},
		{"cut short", cut},
	}
	for i, tc := range cases {
		c := rawDial(t, b.Addr(), append(bytes.Clone(pre), tc.data...))
		if tc.name == "cut short" {
			c.(*net.TCPConn).CloseWrite()
		}
		waitClosed(t, c)
		if got := b.Stats().CorruptFrames; got != uint64(i+1) {
			t.Fatalf("%s: CorruptFrames = %d, want %d", tc.name, got, i+1)
		}
	}
	// A good frame then a corrupt one: the first is delivered, nothing after.
	c := rawDial(t, b.Addr(), append(append(bytes.Clone(pre), good...), badCRC...))
	waitClosed(t, c)
	rb.waitMessages(t, 1)
	if n := len(rb.messages()); n != 1 {
		t.Fatalf("%d messages delivered, want only the good frame's", n)
	}
	// Other connections are unaffected.
	a.Send(b.Addr(), []raftpb.Message{msg(1, nil)})
	rb.waitMessages(t, 2)
}

func TestTCPRejectsPreamble(t *testing.T) {
	leakCheck(t)
	b, rb := startTCP(t, TCPConfig{})

	// Another deployment in the preamble.
	c := rawDial(t, b.Addr(), append(appendPreamble(nil, laneRaft, 99), validFrame(99, msg(0, nil))...))
	waitClosed(t, c)
	if s := b.Stats(); s.RejectedDeployment != 1 {
		t.Fatalf("stats %+v", s)
	}
	// The right preamble, then a batch claiming another deployment.
	c = rawDial(t, b.Addr(), append(appendPreamble(nil, laneRaft, 7), validFrame(99, msg(0, nil))...))
	waitClosed(t, c)
	if s := b.Stats(); s.RejectedDeployment != 2 {
		t.Fatalf("stats %+v", s)
	}
	// Bad magic, version, lane.
	for i, pre := range [][]byte{
		append([]byte("HTTP"), appendPreamble(nil, laneRaft, 7)[4:]...),
		func() []byte { p := appendPreamble(nil, laneRaft, 7); p[4] = 9; return p }(),
		appendPreamble(nil, 3, 7),
	} {
		c := rawDial(t, b.Addr(), pre)
		waitClosed(t, c)
		if s := b.Stats(); s.RejectedConns != uint64(i+1) {
			t.Fatalf("preamble %d: stats %+v", i, s)
		}
	}
	// A whole transport of another deployment: rejected, and it learns
	// the peer is unreachable.
	x, rx := startTCP(t, TCPConfig{DeploymentID: 99})
	x.Send(b.Addr(), []raftpb.Message{msg(0, nil)})
	rx.waitFor(t, "unreachable", func(r *recorder) bool { return r.unreachable[b.Addr()] > 0 })
	if n := len(rb.messages()); n != 0 {
		t.Fatalf("%d messages of other deployments delivered", n)
	}
}

// TestTCPSnapshotLane: bytes flow both ways on a snapshot-lane connection
// at the same time as Raft traffic on the Raft lane.
func TestTCPSnapshotLane(t *testing.T) {
	leakCheck(t)
	a, _ := startTCP(t, TCPConfig{})
	b, rb := startTCP(t, TCPConfig{})
	testSnapshotLane(t, a, b, rb)
}

func testSnapshotLane(t *testing.T, a, b *TCP, rb *recorder) {
	t.Helper()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := b.SnapshotListener().Accept()
		if err == nil {
			accepted <- c
		}
		close(accepted)
	}()
	ca, err := a.DialSnapshot(context.Background(), b.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer ca.Close()
	cb := <-accepted
	if cb == nil {
		t.Fatal("no snapshot connection accepted")
	}
	defer cb.Close()

	const size = 8 << 20
	payload := func(seed byte) []byte {
		p := make([]byte, size)
		for i := range p {
			p[i] = byte(i*7) ^ seed
		}
		return p
	}
	pa, pb := payload(1), payload(2)
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	var gotA, gotB [32]byte
	transfer := func(w net.Conn, p []byte) {
		defer wg.Done()
		if _, err := w.Write(p); err != nil {
			errs <- err
		}
	}
	receive := func(r net.Conn, sum *[32]byte) {
		defer wg.Done()
		h := sha256.New()
		if _, err := io.CopyN(h, r, size); err != nil {
			errs <- err
		}
		copy(sum[:], h.Sum(nil))
	}
	wg.Add(4)
	go transfer(ca, pa)
	go transfer(cb, pb)
	go receive(cb, &gotB)
	go receive(ca, &gotA)
	// Raft traffic during the transfer.
	const n = 500
	for i := range n {
		a.Send(b.Addr(), []raftpb.Message{msg(uint64(i), nil)})
	}
	rb.waitMessages(t, n)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if gotB != sha256.Sum256(pa) || gotA != sha256.Sum256(pb) {
		t.Fatal("snapshot lane bytes differ")
	}
	checkOrder(t, rb.messages(), n)
	if s := b.Stats(); s.SnapshotConns != 1 {
		t.Fatalf("stats %+v", s)
	}
}

func TestTCPClose(t *testing.T) {
	leakCheck(t)
	a, ra := startTCP(t, TCPConfig{})
	b, rb := startTCP(t, TCPConfig{})
	a.Send(b.Addr(), []raftpb.Message{msg(0, nil)})
	b.Send(a.Addr(), []raftpb.Message{msg(0, nil)})
	rb.waitMessages(t, 1)
	ra.waitMessages(t, 1)
	// An accepted snapshot conn and one waiting in the lane.
	sc, err := a.DialSnapshot(context.Background(), b.Addr())
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := sc.Write([]byte("x")); err == nil {
		t.Fatal("snapshot conn still open after Close")
	}
	if a.Send(b.Addr(), []raftpb.Message{msg(1, nil)}) {
		t.Fatal("Send after Close reported success")
	}
	if _, err := b.SnapshotListener().Accept(); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Accept after Close: %v", err)
	}
	if _, err := a.DialSnapshot(context.Background(), b.Addr()); err == nil {
		t.Fatal("DialSnapshot after Close worked")
	}
	if err := a.Start(ra); !errors.Is(err, ErrClosed) {
		t.Fatalf("Start after Close: %v", err)
	}
	checkNoGoroutines(t)
}

// TestTCPFrameSizes: a queue larger than the frame target goes out as
// several frames in order; a message larger than MaxFrameBytes is dropped
// alone, and a message alone may exceed the target.
func TestTCPFrameSizes(t *testing.T) {
	leakCheck(t)
	a, _ := startTCP(t, TCPConfig{MaxFrameBytes: 4 << 20})
	b, rb := startTCP(t, TCPConfig{MaxFrameBytes: 4 << 20})
	const n = 3000
	msgs := make([]raftpb.Message, n)
	for i := range msgs {
		msgs[i] = msg(uint64(i), make([]byte, 1024))
	}
	if !a.Send(b.Addr(), msgs) {
		t.Fatal("dropped")
	}
	rb.waitMessages(t, n)
	checkOrder(t, rb.messages(), n)
	// The receiver's count: the sender counts a frame after its write
	// returns, which may be after the receiver has handled it.
	if s := b.Stats(); s.BatchesReceived < 3 {
		t.Fatalf("3 MiB of messages in %d frames: want several frames of about 1 MiB", s.BatchesReceived)
	}
	rb.reset()
	big := []raftpb.Message{msg(0, make([]byte, 3<<20)), msg(1, make([]byte, 5<<20)), msg(2, nil)}
	if a.Send(b.Addr(), big) {
		t.Fatal("a message over MaxFrameBytes was not reported dropped")
	}
	rb.waitMessages(t, 2)
	if got := rb.messages(); len(got) != 2 || got[0].Index != 0 || got[1].Index != 2 {
		t.Fatalf("got %d messages", len(got))
	}
	if s := a.Stats(); s.MessagesDropped != 1 {
		t.Fatalf("stats %+v", s)
	}
}

// TestTCPUnreachableOncePerFailure: messages to a host nobody listens on
// are dropped and counted; the failure is reported once per failed dial,
// not once per message.
func TestTCPUnreachableOncePerFailure(t *testing.T) {
	leakCheck(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	ln.Close()
	a, ra := startTCP(t, TCPConfig{})
	const n = 1000
	accepted := 0
	for i := range n {
		if a.Send(dead, []raftpb.Message{msg(uint64(i), nil)}) {
			accepted++
		}
	}
	ra.waitFor(t, "unreachable", func(r *recorder) bool { return r.unreachable[dead] > 0 })
	// Everything accepted was queued for the failed dial and dropped.
	ra.waitFor(t, "drops counted", func(*recorder) bool { return a.Stats().MessagesDropped == n })
	if got := ra.unreachableCount(dead); got > 5 {
		t.Fatalf("%d reports for %d messages and one dial (%d accepted)", got, n, accepted)
	}
	if s := a.Stats(); s.Connects != 0 || s.MessagesSent != 0 {
		t.Fatalf("stats %+v", s)
	}
}

// TestTCPNewerConnectionSupersedes: when a host's newer connection
// delivers, its older connections stop (what they still carry is dropped),
// so one host's batches are never delivered out of order or concurrently.
func TestTCPNewerConnectionSupersedes(t *testing.T) {
	leakCheck(t)
	b, rb := startTCP(t, TCPConfig{})
	pre := appendPreamble(nil, laneRaft, 7)
	old := rawDial(t, b.Addr(), append(bytes.Clone(pre), validFrame(7, msg(0, nil))...))
	rb.waitMessages(t, 1)
	// Accepted after old and before newer, but silent until newer
	// delivered: it must not take the host back from newer.
	idle := rawDial(t, b.Addr(), pre)
	newer := rawDial(t, b.Addr(), append(bytes.Clone(pre), validFrame(7, msg(1, nil))...))
	rb.waitMessages(t, 2)
	for _, c := range []net.Conn{idle, old} {
		if _, err := c.Write(validFrame(7, msg(2, nil))); err != nil {
			t.Fatal(err)
		}
		waitClosed(t, c)
	}
	if _, err := newer.Write(validFrame(7, msg(3, nil))); err != nil {
		t.Fatal(err)
	}
	rb.waitMessages(t, 3)
	got := rb.messages()
	if len(got) != 3 || got[0].Index != 0 || got[1].Index != 1 || got[2].Index != 3 {
		t.Fatalf("delivered %v", got)
	}
}
