package snapshot

import (
	"fmt"

	"github.com/klauspost/compress/s2"
	"github.com/klauspost/compress/zstd"
	"github.com/skiffdb/skiff/raftpb"
)

// chunkCodec compresses and decompresses transfer chunks. Compression is a
// property of the stream, not of the files at rest: a snapshot's files stay
// raw on both ends (so CRC32C, hard links and loading never decode), and the
// meta's Compression tells the receiver how each GetFile block is encoded.
// Each chunk is one independent block, so a resumed transfer can start at
// any chunk boundary.
//
// One chunkCodec per Sender or Receiver; it is safe for concurrent use
// (zstd's EncodeAll/DecodeAll are).
type chunkCodec struct {
	enc *zstd.Encoder
	dec *zstd.Decoder
}

func newChunkCodec(concurrency int) (*chunkCodec, error) {
	// Fastest level and low-memory modes: the point is to save network
	// bytes without making a transfer slower than the disk (the OpenBao
	// gzip lesson, REQUIREMENTS §21).
	enc, err := zstd.NewWriter(nil,
		zstd.WithEncoderLevel(zstd.SpeedFastest),
		zstd.WithEncoderConcurrency(max(concurrency, 1)),
		zstd.WithLowerEncoderMem(true))
	if err != nil {
		return nil, fmt.Errorf("snapshot: zstd encoder: %w", err)
	}
	dec, err := zstd.NewReader(nil,
		zstd.WithDecoderConcurrency(max(concurrency, 1)),
		zstd.WithDecoderLowmem(true),
		// A chunk never decodes to more than the largest chunk we request;
		// a hostile frame cannot make us allocate more.
		zstd.WithDecoderMaxMemory(maxChunkSize))
	if err != nil {
		return nil, fmt.Errorf("snapshot: zstd decoder: %w", err)
	}
	return &chunkCodec{enc: enc, dec: dec}, nil
}

// close releases the decoder's goroutines.
func (c *chunkCodec) close() {
	c.dec.Close()
	_ = c.enc.Close()
}

// encode appends src encoded with comp to dst[:0].
func (c *chunkCodec) encode(comp raftpb.Compression, dst, src []byte) ([]byte, error) {
	switch comp {
	case raftpb.NoCompression:
		return append(dst[:0], src...), nil
	case raftpb.Snappy:
		n := s2.MaxEncodedLen(len(src))
		if n < 0 {
			return nil, fmt.Errorf("snapshot: chunk of %d bytes too large to compress", len(src))
		}
		if cap(dst) < n {
			dst = make([]byte, n)
		}
		return s2.EncodeSnappy(dst[:n], src), nil
	case raftpb.Zstd:
		return c.enc.EncodeAll(src, dst[:0]), nil
	}
	return nil, fmt.Errorf("snapshot: unknown compression %d", comp)
}

// decode decodes src (encoded with comp) into dst[:0] and checks that it is
// exactly want bytes long: a block that decodes to anything else is corrupt
// (or claims bytes past the requested range).
func (c *chunkCodec) decode(comp raftpb.Compression, dst, src []byte, want int) ([]byte, error) {
	var out []byte
	switch comp {
	case raftpb.NoCompression:
		out = src
	case raftpb.Snappy:
		n, err := s2.DecodedLen(src)
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrChunkCorrupt, err)
		}
		if n > want {
			return nil, fmt.Errorf("%w: snappy block decodes to %d bytes, %d were asked for", ErrChunkPastEnd, n, want)
		}
		if n < want {
			return nil, fmt.Errorf("%w: snappy block decodes to %d bytes, want %d", ErrChunkCorrupt, n, want)
		}
		if cap(dst) < n {
			dst = make([]byte, n)
		}
		if out, err = s2.Decode(dst[:n], src); err != nil {
			return nil, fmt.Errorf("%w: %v", ErrChunkCorrupt, err)
		}
	case raftpb.Zstd:
		var err error
		if out, err = c.dec.DecodeAll(src, dst[:0]); err != nil {
			return nil, fmt.Errorf("%w: %v", ErrChunkCorrupt, err)
		}
	default:
		return nil, fmt.Errorf("snapshot: unknown compression %d", comp)
	}
	if len(out) > want {
		return nil, fmt.Errorf("%w: chunk holds %d bytes, %d were asked for", ErrChunkPastEnd, len(out), want)
	}
	if len(out) < want {
		return nil, fmt.Errorf("%w: chunk holds %d bytes, want %d", ErrChunkCorrupt, len(out), want)
	}
	return out, nil
}
