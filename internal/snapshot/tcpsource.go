package snapshot

// A FileSource over TCP: enough to measure the transfer over a real socket
// until the transport package (DESIGN.md §5: separate connections for
// snapshot chunks) adapts the FileSource interface to its own lane.
//
// Every message is one frame; integers are little-endian:
//
//	frame    = len u32 | crc u32 | body[len]      crc = CRC32C(body)
//	request  = op u8 | reader u64 | offset u64 | length u64 | nameLen u16 | name
//	response = status u8 | payload
//
//	op      1 Meta      payload: raftpb SnapshotMeta.Marshal()
//	        2 GetFile   payload: the chunk, as the source encoded it
//	        3 Checksum  payload: crc u32
//	status  0 ok; else an error: payload = message, status names the
//	        sentinel (1 reader not found, 2 chunk past end, 3 corrupt chunk,
//	        4 no slot, 5 other)
//
// One request is outstanding per connection; the client keeps a connection
// per call in flight, so the copier's InFlight requests use InFlight
// connections. A frame longer than maxFrame or with a bad CRC ends the
// connection; the copier sees a broken connection, which is retryable.

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"time"

	"github.com/skiffdb/skiff/raftpb"
)

const (
	tcpOpMeta byte = 1 + iota
	tcpOpGetFile
	tcpOpChecksum
)

const (
	tcpOK byte = iota
	tcpErrReaderNotFound
	tcpErrChunkPastEnd
	tcpErrChunkCorrupt
	tcpErrNoSlot
	tcpErrOther
)

const (
	frameHeader = 8
	// maxFrame bounds any frame: a chunk plus compression overhead, or a
	// meta. Larger frames are refused before anything is allocated.
	maxFrame       = maxChunkSize + maxChunkSize/8 + 1<<10
	requestFixed   = 1 + 8 + 8 + 8 + 2
	maxRequestSize = requestFixed + maxFileName
)

var errFrame = errors.New("snapshot: bad transfer frame")

// readFrame reads one frame into buf (grown if needed) and checks its CRC.
func readFrame(r io.Reader, hdr *[frameHeader]byte, buf []byte, limit int) ([]byte, error) {
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, err
	}
	n := binary.LittleEndian.Uint32(hdr[:4])
	sum := binary.LittleEndian.Uint32(hdr[4:])
	if n == 0 || uint64(n) > uint64(limit) {
		return nil, fmt.Errorf("%w: length %d", errFrame, n)
	}
	if cap(buf) < int(n) {
		buf = make([]byte, n)
	}
	buf = buf[:n]
	if _, err := io.ReadFull(r, buf); err != nil {
		return nil, err
	}
	if crc32c(0, buf) != sum {
		return nil, fmt.Errorf("%w: checksum mismatch", errFrame)
	}
	return buf, nil
}

// writeFrame writes head and tail as one frame body without copying tail.
func writeFrame(w io.Writer, head, tail []byte) error {
	var hdr [frameHeader]byte
	binary.LittleEndian.PutUint32(hdr[:4], uint32(len(head)+len(tail)))
	binary.LittleEndian.PutUint32(hdr[4:], crc32c(crc32c(0, head), tail))
	bufs := net.Buffers{hdr[:], head, tail}
	_, err := bufs.WriteTo(w)
	return err
}

// TCPServer answers FileSource requests arriving on connections.
type TCPServer struct {
	src FileSource

	mu     sync.Mutex
	conns  map[net.Conn]context.CancelFunc
	closed bool
	wg     sync.WaitGroup
}

// NewTCPServer returns a server for src (usually a Sender).
func NewTCPServer(src FileSource) *TCPServer {
	return &TCPServer{src: src, conns: make(map[net.Conn]context.CancelFunc)}
}

// Serve accepts connections on l until l or the server is closed.
func (s *TCPServer) Serve(l net.Listener) error {
	for {
		c, err := l.Accept()
		if err != nil {
			s.mu.Lock()
			closed := s.closed
			s.mu.Unlock()
			if closed {
				return nil
			}
			return err
		}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			c.Close()
			return nil
		}
		// Close cancels the context so that a request blocked in the
		// source (a rate limit, a slow disk) ends with its connection.
		ctx, cancel := context.WithCancel(context.Background())
		s.conns[c] = cancel
		s.wg.Add(1)
		s.mu.Unlock()
		go s.serveConn(ctx, c)
	}
}

// Close closes every connection and waits for their handlers.
func (s *TCPServer) Close() {
	s.mu.Lock()
	s.closed = true
	for c, cancel := range s.conns {
		cancel()
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
}

func (s *TCPServer) serveConn(ctx context.Context, c net.Conn) {
	defer func() {
		c.Close()
		s.mu.Lock()
		s.conns[c]()
		delete(s.conns, c)
		s.mu.Unlock()
		s.wg.Done()
	}()
	var hdr [frameHeader]byte
	var req, chunk []byte
	for {
		var err error
		if req, err = readFrame(c, &hdr, req, maxRequestSize); err != nil {
			return
		}
		status, payload, ok := s.handleWatched(ctx, c, req, &chunk)
		if !ok {
			return
		}
		if err := writeFrame(c, []byte{status}, payload); err != nil {
			return
		}
	}
}

// handleWatched runs one request while watching its connection. One request
// is outstanding per connection, so a client that sends anything, closes or
// resets the connection meanwhile has given up on it (a canceled call
// closes its connection): the request's context then ends, so that a
// source blocked in a rate limit or on a slow disk does not outlive its
// client, and ok is false (the connection is done). Without this, only the
// source returning or Close ended such a handler.
func (s *TCPServer) handleWatched(ctx context.Context, c net.Conn, req []byte, chunk *[]byte) (status byte, payload []byte, ok bool) {
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		var b [1]byte
		if _, err := c.Read(b[:]); !errors.Is(err, os.ErrDeadlineExceeded) {
			cancel() // data, EOF or a reset: the client is gone
		}
	}()
	status, payload = s.handle(rctx, req, chunk)
	// Stop the watcher: its Read returns at once with a deadline error (or
	// with the connection's end, if the deadline cannot be set).
	if err := c.SetReadDeadline(time.Unix(1, 0)); err != nil {
		c.Close()
	}
	<-watched
	if rctx.Err() != nil || c.SetReadDeadline(time.Time{}) != nil {
		return 0, nil, false
	}
	return status, payload, true
}

// handle runs one request. chunk is the connection's reusable buffer.
func (s *TCPServer) handle(ctx context.Context, req []byte, chunk *[]byte) (byte, []byte) {
	if len(req) < requestFixed {
		return tcpErrOther, []byte("short request")
	}
	op := req[0]
	reader := ReaderID(binary.LittleEndian.Uint64(req[1:]))
	off := int64(binary.LittleEndian.Uint64(req[9:]))
	n := int64(binary.LittleEndian.Uint64(req[17:]))
	nameLen := int(binary.LittleEndian.Uint16(req[25:]))
	if len(req) != requestFixed+nameLen {
		return tcpErrOther, []byte("bad request length")
	}
	name := string(req[requestFixed:])
	switch op {
	case tcpOpMeta:
		m, err := s.src.Meta(ctx, reader)
		if err != nil {
			return errorStatus(err)
		}
		return tcpOK, m.Marshal()
	case tcpOpGetFile:
		b, err := s.src.GetFile(ctx, reader, name, off, n, *chunk)
		if err != nil {
			return errorStatus(err)
		}
		if cap(b) > cap(*chunk) {
			*chunk = b[:0]
		}
		return tcpOK, b
	case tcpOpChecksum:
		crc, err := s.src.Checksum(ctx, reader, name, n)
		if err != nil {
			return errorStatus(err)
		}
		return tcpOK, binary.LittleEndian.AppendUint32(nil, crc)
	}
	return tcpErrOther, []byte("unknown op")
}

func errorStatus(err error) (byte, []byte) {
	msg := []byte(err.Error())
	switch {
	case errors.Is(err, ErrReaderNotFound):
		return tcpErrReaderNotFound, msg
	case errors.Is(err, ErrChunkPastEnd):
		return tcpErrChunkPastEnd, msg
	case errors.Is(err, ErrChunkCorrupt):
		return tcpErrChunkCorrupt, msg
	case errors.Is(err, ErrNoSlot):
		return tcpErrNoSlot, msg
	}
	return tcpErrOther, msg
}

func statusError(status byte, msg []byte) error {
	var base error
	switch status {
	case tcpErrReaderNotFound:
		base = ErrReaderNotFound
	case tcpErrChunkPastEnd:
		base = ErrChunkPastEnd
	case tcpErrChunkCorrupt:
		base = ErrChunkCorrupt
	case tcpErrNoSlot:
		base = ErrNoSlot
	default:
		return fmt.Errorf("snapshot: remote source: %s", msg)
	}
	return fmt.Errorf("%w (remote: %s)", base, msg)
}

// TCPSource is a FileSource that asks a TCPServer. It keeps idle
// connections for reuse; a connection that saw an error or a cancelled call
// is closed, never reused. Safe for concurrent use.
type TCPSource struct {
	dial func(ctx context.Context) (net.Conn, error)

	mu     sync.Mutex
	idle   []net.Conn
	closed bool
}

var _ FileSource = (*TCPSource)(nil)

// NewTCPSource returns a source that dials addr.
func NewTCPSource(addr string) *TCPSource {
	d := net.Dialer{Timeout: 10 * time.Second}
	return NewDialSource(func(ctx context.Context) (net.Conn, error) {
		return d.DialContext(ctx, "tcp", addr)
	})
}

// NewDialSource returns a source whose connections come from dial: the
// host passes its transport's snapshot lane (TLS, or the in-memory network
// of tests), so snapshot chunks never share a connection with Raft messages.
func NewDialSource(dial func(ctx context.Context) (net.Conn, error)) *TCPSource {
	return &TCPSource{dial: dial}
}

// Close closes the idle connections; calls in progress close theirs.
func (t *TCPSource) Close() {
	t.mu.Lock()
	t.closed = true
	idle := t.idle
	t.idle = nil
	t.mu.Unlock()
	for _, c := range idle {
		c.Close()
	}
}

func (t *TCPSource) conn(ctx context.Context) (net.Conn, error) {
	t.mu.Lock()
	if n := len(t.idle); n > 0 {
		c := t.idle[n-1]
		t.idle = t.idle[:n-1]
		t.mu.Unlock()
		return c, nil
	}
	t.mu.Unlock()
	return t.dial(ctx)
}

func (t *TCPSource) put(c net.Conn) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		c.Close()
		return
	}
	t.idle = append(t.idle, c)
}

// call sends one request and reads its response payload into buf.
func (t *TCPSource) call(ctx context.Context, op byte, reader ReaderID, name string, off, n int64, buf []byte) ([]byte, error) {
	if len(name) > maxFileName {
		return nil, fmt.Errorf("%w: name of %d bytes", ErrBadFileName, len(name))
	}
	c, err := t.conn(ctx)
	if err != nil {
		return nil, err
	}
	// A cancelled context unblocks the socket at once: the per-chunk
	// timeout and cancellation from outside need no polling.
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Unix(1, 0)) })
	req := make([]byte, requestFixed, requestFixed+len(name))
	req[0] = op
	binary.LittleEndian.PutUint64(req[1:], uint64(reader))
	binary.LittleEndian.PutUint64(req[9:], uint64(off))
	binary.LittleEndian.PutUint64(req[17:], uint64(n))
	binary.LittleEndian.PutUint16(req[25:], uint16(len(name)))
	req = append(req, name...)
	var status byte
	var payload []byte
	if err = writeFrame(c, req, nil); err == nil {
		status, payload, err = readResponse(c, buf)
	}
	if !stop() || err != nil {
		c.Close()
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, err
	}
	t.put(c)
	if status != tcpOK {
		return nil, statusError(status, payload)
	}
	return payload, nil
}

// readResponse reads one response frame, its payload into buf (grown if
// needed) so that a chunk lands at the start of the caller's buffer.
func readResponse(r io.Reader, buf []byte) (byte, []byte, error) {
	var hdr [frameHeader + 1]byte
	if _, err := io.ReadFull(r, hdr[:frameHeader]); err != nil {
		return 0, nil, err
	}
	n := binary.LittleEndian.Uint32(hdr[:4])
	sum := binary.LittleEndian.Uint32(hdr[4:8])
	if n == 0 || n > maxFrame {
		return 0, nil, fmt.Errorf("%w: length %d", errFrame, n)
	}
	if _, err := io.ReadFull(r, hdr[frameHeader:]); err != nil {
		return 0, nil, err
	}
	if cap(buf) < int(n-1) {
		buf = make([]byte, n-1)
	}
	buf = buf[:n-1]
	if _, err := io.ReadFull(r, buf); err != nil {
		return 0, nil, err
	}
	if crc32c(crc32c(0, hdr[8:]), buf) != sum {
		return 0, nil, fmt.Errorf("%w: checksum mismatch", errFrame)
	}
	return hdr[8], buf, nil
}

// Meta implements FileSource.
func (t *TCPSource) Meta(ctx context.Context, reader ReaderID) (raftpb.SnapshotMeta, error) {
	var m raftpb.SnapshotMeta
	b, err := t.call(ctx, tcpOpMeta, reader, "", 0, 0, nil)
	if err != nil {
		return m, err
	}
	if err := m.Unmarshal(b); err != nil {
		return m, fmt.Errorf("%w: meta: %v", errFrame, err)
	}
	return m, nil
}

// GetFile implements FileSource.
func (t *TCPSource) GetFile(ctx context.Context, reader ReaderID, name string, offset, length int64, buf []byte) ([]byte, error) {
	return t.call(ctx, tcpOpGetFile, reader, name, offset, length, buf)
}

// Checksum implements FileSource.
func (t *TCPSource) Checksum(ctx context.Context, reader ReaderID, name string, length int64) (uint32, error) {
	b, err := t.call(ctx, tcpOpChecksum, reader, name, 0, length, nil)
	if err != nil {
		return 0, err
	}
	if len(b) != 4 {
		return 0, fmt.Errorf("%w: checksum of %d bytes", errFrame, len(b))
	}
	return binary.LittleEndian.Uint32(b), nil
}
