package rsm

import (
	"fmt"
	"testing"

	"github.com/skiffdb/skiff/raftpb"
	"github.com/skiffdb/skiff/statemachine"
)

// nopSM applies nothing: the benchmark measures this package's cost.
type nopSM struct{ memSM }

func (nopSM) Apply(ents []statemachine.Entry) error {
	for i := range ents {
		ents[i].Result.Value = ents[i].Index
	}
	return nil
}

// BenchmarkApply applies batches of 16-byte commands. The no-session path
// must not allocate per entry (out and the run buffers are reused; commands
// are sub-slices of the entry data); the session path allocates only the
// cached result's copy.
func BenchmarkApply(b *testing.B) {
	for _, batch := range []int{1, 64} {
		for _, withSession := range []bool{false, true} {
			name := fmt.Sprintf("batch=%d/session=%v", batch, withSession)
			b.Run(name, func(b *testing.B) {
				s := newRSM(b, &nopSM{}, 0)
				mustApply(b, s, register(1, 1, 1, 7))
				cmd := make([]byte, 16)
				ents := make([]raftpb.Entry, batch)
				var out []Applied
				next, series := uint64(2), uint64(0)
				b.SetBytes(int64(batch * len(cmd)))
				b.ReportAllocs()
				for b.Loop() {
					// Re-encode in place (the buffers are reused) so that
					// only Apply's allocations are counted.
					for i := range ents {
						e := &ents[i]
						e.Index, e.Term, e.Type = next, 1, raftpb.EntryNormal
						if withSession {
							series++
							e.Data = EncodeSessionProposal(e.Data[:0], next, Session{7, series, series - 1}, cmd)
						} else {
							e.Data = EncodeProposal(e.Data[:0], next, cmd)
						}
						next++
					}
					var err error
					if out, err = s.Apply(Batch{Entries: ents}, out); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*batch), "ns/entry")
			})
		}
	}
}

// TestApplyNoSessionPathAllocates nothing per entry, asserted (not only
// reported by the benchmark).
func TestApplyNoSessionPathAllocatesNothing(t *testing.T) {
	s := newRSM(t, &nopSM{}, 0)
	ents := make([]raftpb.Entry, 64)
	for i := range ents {
		ents[i] = normal(uint64(i+1), 1, uint64(i+1), "0123456789abcdef")
	}
	out, err := s.Apply(Batch{Entries: ents}, nil) // warm the buffers
	if err != nil {
		t.Fatal(err)
	}
	allocs := testing.AllocsPerRun(100, func() {
		for i := range ents {
			ents[i].Index += 64
		}
		if out, err = s.Apply(Batch{Entries: ents}, out); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Fatalf("%.1f allocations per batch of 64, want 0", allocs)
	}
}
