package snapshot

import (
	"context"
	"encoding/binary"
	"errors"
	"net"
	"testing"

	"github.com/skiffdb/skiff/raftpb"
)

// serveTCP serves src on a loopback port until the test ends.
func serveTCP(t testing.TB, src FileSource) (*TCPServer, string) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := NewTCPServer(src)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = s.Serve(l)
	}()
	t.Cleanup(func() {
		l.Close()
		s.Close()
		<-done
	})
	return s, l.Addr().String()
}

// A snapshot moves over loopback TCP intact, with and without compression,
// and errors keep their meaning across the wire.
func TestTCPSourceRoundTrip(t *testing.T) {
	for _, comp := range []raftpb.Compression{raftpb.NoCompression, raftpb.Zstd} {
		t.Run(compName[comp], func(t *testing.T) {
			p := newPair(t, multiFile(30, 2<<20), comp)
			req := p.register(t)
			_, addr := serveTCP(t, p.sender)
			src := NewTCPSource(addr)
			defer src.Close()
			r := newTestReceiver(t, ReceiverConfig{InFlight: 4})
			if _, err := r.Receive(context.Background(), p.follower, req, src); err != nil {
				t.Fatal(err)
			}
			checkPublished(t, p.followerFS, p.follower, 100, p.files)

			ctx := context.Background()
			if _, err := src.GetFile(ctx, req.Reader, "tail", 0, 1<<30, nil); !errors.Is(err, ErrChunkPastEnd) {
				t.Fatalf("past the end over TCP: %v", err)
			}
			if _, err := src.Meta(ctx, req.Reader+1); !errors.Is(err, ErrReaderNotFound) {
				t.Fatalf("unknown reader over TCP: %v", err)
			}
			crc, err := src.Checksum(ctx, req.Reader, "data", int64(len(p.files[0].data)))
			if err != nil || crc != p.meta.Files[0].CRC32C {
				t.Fatalf("checksum over TCP: %08x %v, want %08x", crc, err, p.meta.Files[0].CRC32C)
			}
		})
	}
}

// The server goes away mid-transfer (its connections are closed): the
// receiver sees a retryable error and, against a new server, resumes.
func TestTCPSourceServerLost(t *testing.T) {
	p := newPair(t, multiFile(31, 2<<20), raftpb.NoCompression)
	req := p.register(t)
	counter := &countingSource{FileSource: p.sender}
	gate := newGate(counter, "index", 0)
	srv, addr := serveTCP(t, gate)
	src := NewTCPSource(addr)
	defer src.Close()
	r := newTestReceiver(t, ReceiverConfig{InFlight: 4})
	done := make(chan error, 1)
	go func() {
		_, err := r.Receive(context.Background(), p.follower, req, src)
		done <- err
	}()
	recv(t, gate.reached, "a request to reach the gate")
	srv.Close()
	err := recv(t, done, "the transfer to fail")
	if err == nil || !IsRetryable(err) {
		t.Fatalf("err = %v, want a retryable broken connection", err)
	}
	close(gate.open)
	_, addr2 := serveTCP(t, counter)
	src2 := NewTCPSource(addr2)
	defer src2.Close()
	if _, err := r.Receive(context.Background(), p.follower, req, src2); err != nil {
		t.Fatal(err)
	}
	checkPublished(t, p.followerFS, p.follower, 100, p.files)
	if got, size := counter.wire.Load(), filesSize(p.files); float64(got) > 1.15*float64(size) {
		t.Fatalf("moved %d bytes of %d: not resumed", got, size)
	}
}

// Cancelling the context unblocks a call waiting on the server at once,
// and the server's handler, blocked in its source, ends with it: a
// canceled transfer leaves nothing running on the sender.
func TestTCPSourceCancel(t *testing.T) {
	p := newPair(t, multiFile(32, 64<<10), raftpb.NoCompression)
	req := p.register(t)
	gate := newGate(p.sender, "data", 0)
	_, addr := serveTCP(t, gate)
	src := NewTCPSource(addr)
	defer src.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := src.GetFile(ctx, req.Reader, "data", 0, 100, nil)
		done <- err
	}()
	recv(t, gate.reached, "the request to reach the server")
	cancel()
	if err := recv(t, done, "the canceled call"); !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	// The gate stays shut: only the client's going away can end the handler.
	recv(t, gate.gaveUp, "the server's handler to end with its client")
}

// A frame with a bad CRC or an absurd length is refused (no allocation of
// the claimed length) and reported as a retryable broken connection.
func TestTCPSourceBadFrames(t *testing.T) {
	for _, c := range []struct {
		name  string
		frame func() []byte
	}{
		{"bad crc", func() []byte {
			b := binary.LittleEndian.AppendUint32(nil, 5)
			b = binary.LittleEndian.AppendUint32(b, 12345)
			return append(b, 0, 1, 2, 3, 4)
		}},
		{"too long", func() []byte {
			b := binary.LittleEndian.AppendUint32(nil, 1<<31)
			return binary.LittleEndian.AppendUint32(b, 0)
		}},
		{"truncated", func() []byte {
			b := binary.LittleEndian.AppendUint32(nil, 100)
			return append(binary.LittleEndian.AppendUint32(b, 0), 0, 1)
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			l, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			go func() {
				conn, err := l.Accept()
				if err != nil {
					return
				}
				defer conn.Close()
				var hdr [frameHeader]byte
				if _, err := readFrame(conn, &hdr, nil, maxRequestSize); err != nil {
					return
				}
				// The stream ends after the frame: a peer that stays silent
				// instead is the watchdog's business (TestTransferChunkTimeout).
				conn.Write(c.frame())
			}()
			src := NewTCPSource(l.Addr().String())
			defer src.Close()
			_, err = src.GetFile(context.Background(), 1, "f", 0, 10, nil)
			if err == nil || !IsRetryable(wrapSourceErr(err)) {
				t.Fatalf("err = %v, want a retryable error", err)
			}
		})
	}
}
