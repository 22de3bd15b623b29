package kv

import (
	"fmt"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/skiffdb/skiff/statemachine"
)

// BenchmarkApply measures Apply of puts in batches of 64 entries (one
// Pebble batch and commit per call, as the host's apply worker makes
// them), on the OS file system in a temporary directory. It reports
// entries/s; allocs/op are per Apply call (64 entries).
func BenchmarkApply(b *testing.B) {
	const batch = 64
	for _, size := range []int{16, 1 << 10} {
		b.Run(fmt.Sprintf("value=%dB/batch=%d", size, batch), func(b *testing.B) {
			m := New(Options{Dir: b.TempDir(), FS: vfs.Default})(1, 1).(*machine)
			defer m.Close()
			if _, err := m.Open(b.Context()); err != nil {
				b.Fatal(err)
			}
			// 64k distinct keys, encoded once: the loop measures Apply
			// only. Keys cycle, so the database stays bounded.
			const keys = 1 << 16
			value := make([]byte, size)
			cmds := make([][]byte, keys)
			for i := range cmds {
				cmds[i] = EncodePut(fmt.Appendf(nil, "%08x", i), value)
			}
			ents := make([]statemachine.Entry, batch)
			n := uint64(0)
			b.SetBytes(int64(batch * size))
			b.ReportAllocs()
			for b.Loop() {
				for i := range ents {
					n++
					ents[i] = statemachine.Entry{Index: n, Cmd: cmds[n%keys]}
				}
				if err := m.Apply(ents); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N*batch)/b.Elapsed().Seconds(), "entries/s")
		})
	}
}
