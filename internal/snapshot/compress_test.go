package snapshot

import (
	"bytes"
	"errors"
	"testing"

	"github.com/skiffdb/skiff/raftpb"
)

// Each compression round-trips a chunk, and a block that decodes to any
// other length than asked for is refused: longer is a chunk past the end,
// shorter or undecodable is corrupt.
func TestChunkCodec(t *testing.T) {
	c, err := newChunkCodec(2)
	if err != nil {
		t.Fatal(err)
	}
	defer c.close()
	src := testData(1, 100_000)
	for _, comp := range []raftpb.Compression{raftpb.NoCompression, raftpb.Snappy, raftpb.Zstd} {
		t.Run(compName[comp], func(t *testing.T) {
			enc, err := c.encode(comp, nil, src)
			if err != nil {
				t.Fatal(err)
			}
			if comp != raftpb.NoCompression && len(enc) >= len(src) {
				t.Fatalf("%d bytes compressed to %d", len(src), len(enc))
			}
			dec, err := c.decode(comp, nil, enc, len(src))
			if err != nil || !bytes.Equal(dec, src) {
				t.Fatalf("round trip: %v", err)
			}
			if _, err := c.decode(comp, nil, enc, len(src)-1); !errors.Is(err, ErrChunkPastEnd) {
				t.Fatalf("longer than asked: %v", err)
			}
			if _, err := c.decode(comp, nil, enc, len(src)+1); !errors.Is(err, ErrChunkCorrupt) {
				t.Fatalf("shorter than asked: %v", err)
			}
			if comp != raftpb.NoCompression {
				bad := append([]byte(nil), enc...)
				bad[len(bad)/2] ^= 0xff
				bad = bad[:len(bad)-3]
				if _, err := c.decode(comp, nil, bad, len(src)); !errors.Is(err, ErrChunkCorrupt) {
					t.Fatalf("damaged block: %v", err)
				}
			}
		})
	}
	if _, err := c.encode(raftpb.Compression(9), nil, src); err == nil {
		t.Fatal("unknown compression accepted")
	}
}
