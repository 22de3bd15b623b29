package memnet

import (
	"context"
	"fmt"
	"io"
	"net"
	"testing"

	"github.com/skiffdb/skiff/raftpb"
)

// BenchmarkSnapshotLane: bytes/s through a snapshot-lane connection, in
// writes of chunk bytes, against net.Pipe (unbuffered) as the baseline.
func BenchmarkSnapshotLane(b *testing.B) {
	for _, chunk := range []int{32 << 10, 1 << 20} {
		b.Run(fmt.Sprintf("memnet/chunk=%d", chunk), func(b *testing.B) {
			n := New(Config{Seed: 1})
			defer n.Close()
			x, y := n.Endpoint("x", 1), n.Endpoint("y", 1)
			x.Start(nopHandler{})
			y.Start(nopHandler{})
			c, err := x.DialSnapshot(context.Background(), "y")
			if err != nil {
				b.Fatal(err)
			}
			s, err := y.SnapshotListener().Accept()
			if err != nil {
				b.Fatal(err)
			}
			benchConn(b, c, s, chunk)
		})
		b.Run(fmt.Sprintf("netpipe/chunk=%d", chunk), func(b *testing.B) {
			c, s := net.Pipe()
			benchConn(b, c, s, chunk)
		})
	}
}

func benchConn(b *testing.B, c, s net.Conn, chunk int) {
	done := make(chan error)
	go func() {
		_, err := io.Copy(io.Discard, s)
		done <- err
	}()
	buf := make([]byte, chunk)
	b.SetBytes(int64(chunk))
	for b.Loop() {
		if _, err := c.Write(buf); err != nil {
			b.Fatal(err)
		}
	}
	c.Close()
	if err := <-done; err != nil {
		b.Fatal(err)
	}
	s.Close()
}

// BenchmarkSend: batches of one 16-byte-entry message per Send through a
// link (encode, queue, deliver, decode).
func BenchmarkSend(b *testing.B) {
	n := New(Config{Seed: 1})
	defer n.Close()
	x, y := n.Endpoint("x", 1), n.Endpoint("y", 1)
	got := make(chan struct{}, 1)
	x.Start(nopHandler{})
	y.Start(countHandler{got})
	m := []raftpb.Message{{Type: raftpb.MsgReplicate, Entries: []raftpb.Entry{{Data: make([]byte, 16)}}}}
	for b.Loop() {
		for !x.Send("y", m) { // link queue full: let it drain
			<-got
		}
	}
}

type nopHandler struct{}

func (nopHandler) HandleBatch(*raftpb.MessageBatch) {}
func (nopHandler) HandleUnreachable(string)         {}

type countHandler struct{ got chan struct{} }

func (h countHandler) HandleBatch(*raftpb.MessageBatch) {
	select {
	case h.got <- struct{}{}:
	default:
	}
}
func (countHandler) HandleUnreachable(string) {}
