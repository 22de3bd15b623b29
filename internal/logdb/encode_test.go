package logdb

import (
	"math/rand/v2"
	"testing"

	"github.com/skiffdb/skiff/internal/logdb/wal"
	"github.com/skiffdb/skiff/raftpb"
)

// TestUpdateLen: the size saveRegion reserves is exactly what
// encodeUpdate writes, across varint boundaries of every field.
func TestUpdateLen(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	big := func() uint64 { return rng.Uint64() >> rng.IntN(64) }
	for i := 0; i < 2000; i++ {
		g := raftpb.GroupID(big())
		var hs *raftpb.HardState
		if rng.IntN(2) == 0 {
			hs = &raftpb.HardState{Term: big(), Vote: raftpb.ReplicaID(big()), Commit: big()}
		}
		var ents []raftpb.Entry
		first := big()>>1 + 1
		for k := range rng.IntN(5) {
			ents = append(ents, raftpb.Entry{Index: first + uint64(k), Term: big(), Type: raftpb.EntryType(rng.IntN(3)),
				Data: make([]byte, rng.IntN(300))})
		}
		var wb wal.Batch
		wb.Reset()
		encodeUpdate(&wb, g, hs, nil, ents)
		if got, want := updateLen(g, hs, ents), wb.Size()-wal.HeaderSize; got != want {
			t.Fatalf("updateLen(%d, %+v, %d entries) = %d, encoded %d", g, hs, len(ents), got, want)
		}
	}
}
