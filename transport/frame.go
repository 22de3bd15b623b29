package transport

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"

	"github.com/skiffdb/skiff/raftpb"
)

// The connection preamble and the Raft-lane frame (layout in doc.go).
const (
	preambleLen = 16
	// preambleVersion changes when the preamble or the frame layout does;
	// a receiver closes connections of versions it does not know.
	preambleVersion byte = 1

	frameHeaderLen = 8 // length u32 | crc32c u32

	laneRaft     byte = 1
	laneSnapshot byte = 2

	// DefaultMaxFrameBytes bounds a Raft-lane frame unless configured.
	DefaultMaxFrameBytes = 64 << 20
	// readChunk bounds how much a frame reader allocates ahead of the bytes
	// that actually arrived, so that a garbage length does not make every
	// connection allocate MaxFrameBytes.
	readChunk = 1 << 20
)

var preambleMagic = [4]byte{'S', 'K', 'F', 'T'}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// errBadPreamble: the connection did not start with our magic, a version we
// know, a known lane and zero reserved bytes.
var errBadPreamble = errors.New("transport: bad preamble")

// appendPreamble appends the 16-byte preamble of a connection on lane.
func appendPreamble(b []byte, lane byte, deploymentID uint64) []byte {
	b = append(b, preambleMagic[:]...)
	b = append(b, preambleVersion, lane, 0, 0)
	return binary.LittleEndian.AppendUint64(b, deploymentID)
}

// readPreamble reads and checks a preamble, returning its lane and
// deployment ID. A bad magic, version, lane or reserved field is
// errBadPreamble; the deployment ID is for the caller to check.
func readPreamble(r io.Reader) (lane byte, deploymentID uint64, err error) {
	var p [preambleLen]byte
	if _, err := io.ReadFull(r, p[:]); err != nil {
		return 0, 0, fmt.Errorf("read preamble: %w", err)
	}
	if [4]byte(p[:4]) != preambleMagic {
		return 0, 0, fmt.Errorf("%w: magic %q", errBadPreamble, p[:4])
	}
	if p[4] != preambleVersion {
		return 0, 0, fmt.Errorf("%w: version %d", errBadPreamble, p[4])
	}
	lane = p[5]
	if lane != laneRaft && lane != laneSnapshot {
		return 0, 0, fmt.Errorf("%w: lane %d", errBadPreamble, lane)
	}
	if p[6] != 0 || p[7] != 0 {
		return 0, 0, fmt.Errorf("%w: reserved bytes %x", errBadPreamble, p[6:8])
	}
	return lane, binary.LittleEndian.Uint64(p[8:]), nil
}

// batchHeader appends the encoding of a MessageBatch's fields before its
// messages, so that a sender can frame messages it encoded one by one at
// Send time (raftpb.MessageBatch.AppendTo writes the same bytes).
func appendBatchHeader(b []byte, deploymentID uint64, source string, count int) []byte {
	b = append(b, raftpb.CodecVersion)
	b = binary.AppendUvarint(b, deploymentID)
	b = binary.AppendUvarint(b, uint64(len(source)))
	b = append(b, source...)
	return binary.AppendUvarint(b, uint64(count))
}

// batchHeaderMax is an upper bound of appendBatchHeader's length.
func batchHeaderMax(source string) int {
	return 1 + 3*binary.MaxVarintLen64 + len(source)
}

// writeFrame writes one frame whose payload is head followed by body, so
// that the body (the encoded messages) is never copied to prepend the
// header.
func writeFrame(w *bufio.Writer, head, body []byte) error {
	var h [frameHeaderLen]byte
	binary.LittleEndian.PutUint32(h[:4], uint32(len(head)+len(body)))
	crc := crc32.Update(crc32.Update(0, castagnoli, head), castagnoli, body)
	binary.LittleEndian.PutUint32(h[4:], crc)
	if _, err := w.Write(h[:]); err != nil {
		return err
	}
	if _, err := w.Write(head); err != nil {
		return err
	}
	_, err := w.Write(body)
	return err
}

// frameReader reads the frames of one Raft-lane connection.
type frameReader struct {
	r   *bufio.Reader
	max int
}

// next returns the payload of the next frame in a fresh slice (the decoded
// batch aliases it and is handed to the Handler, which owns it). It returns
// io.EOF at a clean end between frames, an error wrapping ErrCorruptFrame
// for a bad length, a bad CRC or a frame cut short, and other read errors
// as they are.
func (fr *frameReader) next() ([]byte, error) {
	var h [frameHeaderLen]byte
	if _, err := io.ReadFull(fr.r, h[:]); err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, fmt.Errorf("%w: header cut short", ErrCorruptFrame)
		}
		return nil, err
	}
	n := binary.LittleEndian.Uint32(h[:4])
	if n == 0 || uint64(n) > uint64(fr.max) {
		return nil, fmt.Errorf("%w: length %d (max %d)", ErrCorruptFrame, n, fr.max)
	}
	// Grow the buffer as bytes arrive rather than trusting the length:
	// doubling keeps the allocation within twice what was received.
	p := make([]byte, 0, min(int(n), readChunk))
	for len(p) < int(n) {
		if len(p) == cap(p) {
			p = append(make([]byte, 0, min(int(n), 2*cap(p))), p...)
		}
		k := cap(p) - len(p)
		p = p[:cap(p)]
		if _, err := io.ReadFull(fr.r, p[len(p)-k:]); err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				return nil, fmt.Errorf("%w: payload cut short", ErrCorruptFrame)
			}
			return nil, err
		}
	}
	if got, want := crc32.Checksum(p, castagnoli), binary.LittleEndian.Uint32(h[4:]); got != want {
		return nil, fmt.Errorf("%w: crc %08x, header says %08x", ErrCorruptFrame, got, want)
	}
	return p, nil
}

// readBatches reads frames from r until an error, decodes each into a
// batch and hands it to deliver. A frame that does not decode is
// ErrCorruptFrame; a batch of another deployment ends the connection with
// ErrDeploymentMismatch. Nothing from a bad frame is delivered. It returns
// the error that ended the connection (io.EOF for a clean end, or what
// deliver returned).
func readBatches(r *bufio.Reader, deploymentID uint64, maxFrame int, deliver func(*raftpb.MessageBatch) error) error {
	fr := frameReader{r: r, max: maxFrame}
	for {
		p, err := fr.next()
		if err != nil {
			return err
		}
		b := new(raftpb.MessageBatch)
		if err := b.Unmarshal(p); err != nil {
			return fmt.Errorf("%w: %w", ErrCorruptFrame, err)
		}
		if b.DeploymentID != deploymentID {
			return fmt.Errorf("%w: batch from %q has %d, want %d",
				ErrDeploymentMismatch, b.SourceAddress, b.DeploymentID, deploymentID)
		}
		if err := deliver(b); err != nil {
			return err
		}
	}
}
