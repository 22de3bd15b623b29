package snapshot

import (
	"context"
	"hash/fnv"
	"math/rand/v2"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/skiffdb/skiff/raftpb"
)

// faultSource misbehaves as the fuzzer's script says: chunks truncated,
// extended past the range, bit-flipped, lost, duplicated from another
// offset or empty; checksums that lie. The fault of a call depends only on
// (attempt, file, offset), never on goroutine scheduling, so a failing
// input replays.
type faultSource struct {
	FileSource
	script  []byte
	attempt int
}

const fuzzChunk = 512

func (f *faultSource) op(salt, name string, off int64) byte {
	if len(f.script) == 0 {
		return 0
	}
	h := fnv.New32a()
	h.Write([]byte{byte(f.attempt)})
	h.Write([]byte(salt + name))
	h.Write([]byte{byte(off), byte(off >> 8), byte(off >> 16)})
	return f.script[h.Sum32()%uint32(len(f.script))]
}

func (f *faultSource) GetFile(ctx context.Context, id ReaderID, name string, off, n int64, buf []byte) ([]byte, error) {
	switch f.op("get", name, off) % 12 {
	case 4:
		b, err := f.FileSource.GetFile(ctx, id, name, off, n, buf)
		return b[:len(b)/2], err
	case 5:
		b, err := f.FileSource.GetFile(ctx, id, name, off, n, buf)
		return append(b, 1, 2, 3), err
	case 6:
		b, err := f.FileSource.GetFile(ctx, id, name, off, n, buf)
		if len(b) > 0 {
			b[int(off)%len(b)] ^= 0x10
		}
		return b, err
	case 7:
		return nil, errConnReset
	case 8:
		// A duplicate of a neighbouring chunk, where it fits.
		other := off + fuzzChunk
		if off >= fuzzChunk {
			other = off - fuzzChunk
		}
		if b, err := f.FileSource.GetFile(ctx, id, name, other, n, buf); err == nil {
			return b, nil
		}
		return f.FileSource.GetFile(ctx, id, name, off, n, buf)
	case 9:
		return buf[:0], nil
	}
	return f.FileSource.GetFile(ctx, id, name, off, n, buf)
}

func (f *faultSource) Checksum(ctx context.Context, id ReaderID, name string, n int64) (uint32, error) {
	crc, err := f.FileSource.Checksum(ctx, id, name, n)
	switch f.op("sum", name, n) % 8 {
	case 1:
		return crc ^ 1, err
	case 2:
		return 0, errConnReset
	}
	return crc, err
}

// FuzzSnapshotReceiver: whatever the chunks a source returns (reordered,
// duplicated, lost, truncated, extended, corrupted) and wherever the
// receiver crashes between attempts, a published snapshot is never corrupt,
// nothing panics, and a final attempt from an honest source publishes the
// exact snapshot.
func FuzzSnapshotReceiver(f *testing.F) {
	f.Add([]byte{0, 0, 0, 0})
	f.Add([]byte{1, 3, 0, 4, 0, 5, 0, 6, 0, 7, 0, 8, 0, 9})
	f.Add([]byte{2, 1, 7, 7, 7, 0, 0, 0, 0, 6})
	f.Add([]byte{0, 2, 8, 8, 8, 8, 1, 0, 0, 0, 0})
	f.Add([]byte{0, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7, 0xff, 0xfe})
	files := []testFile{
		{"a", testData(1, 5*fuzzChunk+100)},
		{"b", testData(2, 3*fuzzChunk)},
		{"empty", nil},
		{"c", testData(3, 700)},
	}
	f.Fuzz(func(t *testing.T, script []byte) {
		if len(script) < 2 {
			return
		}
		comp := raftpb.Compression(script[0] % 3)
		inflight := 1 + int(script[1]%4)
		p := newPair(t, files, comp)
		req := p.register(t)
		cfg := ReceiverConfig{ChunkSize: fuzzChunk, InFlight: inflight, SyncBytes: fuzzChunk * 2}
		r := newTestReceiver(t, cfg)
		mem := p.followerFS.(*vfs.MemFS)
		st := p.follower
		src := &faultSource{FileSource: p.sender, script: script[2:]}
		for attempt := range 4 {
			src.attempt = attempt
			if _, err := r.Receive(context.Background(), st, req, src); err == nil {
				break
			}
			if _, ok := st.Latest(); ok {
				t.Fatalf("attempt %d failed but published", attempt)
			}
			if x := src.op("crash", "", int64(attempt)); x%3 == 0 {
				mem = mem.CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: int(x % 101), RNG: rand.New(rand.NewPCG(uint64(x), 3))})
				st = openStore(t, mem, "follower")
			}
		}
		if _, ok := st.Latest(); ok {
			checkPublished(t, mem, st, 100, files)
		}
		if _, err := r.Receive(context.Background(), st, req, p.sender); err != nil && !isStale(err) {
			t.Fatalf("honest source after faults: %v", err)
		}
		checkPublished(t, mem, st, 100, files)
		// Published means durable: a power loss now keeps it.
		after := mem.CrashClone(vfs.CrashCloneCfg{})
		checkPublished(t, after, openStore(t, after, "follower"), 100, files)
	})
}
