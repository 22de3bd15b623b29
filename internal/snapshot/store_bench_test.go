package snapshot

import (
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// benchSnapshotBytes is the size of the saved stream: 128 MiB unless
// SKIFF_BENCH_SNAPSHOT_MB says otherwise (1024 for the 1 GiB
// figure) — the same variable the transfer benchmarks read.
func benchSnapshotBytes(b *testing.B) int64 {
	if s := os.Getenv("SKIFF_BENCH_SNAPSHOT_MB"); s != "" {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil || n <= 0 {
			b.Fatalf("SKIFF_BENCH_SNAPSHOT_MB=%q", s)
		}
		return n << 20
	}
	return 128 << 20
}

// BenchmarkSaveVsRawWrite saves a stream through the store (Writer, CRC32C,
// fsyncs, meta, rename, directory fsyncs) and, in the same run on the same
// disk, writes the same bytes raw (create, 1 MiB writes, fsync). It
// reports both rates and save/raw (issue 4 target: ≥ 0.70). The order
// alternates between iterations so that neither always runs on a warmer
// disk. Reported, not asserted.
func BenchmarkSaveVsRawWrite(b *testing.B) {
	n := benchSnapshotBytes(b)
	fs := vfs.Default
	root := b.TempDir()
	chunk := make([]byte, 1<<20)
	rng := rand.New(rand.NewPCG(1, 1))
	for i := range chunk {
		chunk[i] = byte(rng.Uint32())
	}
	stream := func(w io.Writer) {
		for left := n; left > 0; {
			k := min(left, int64(len(chunk)))
			if _, err := w.Write(chunk[:k]); err != nil {
				b.Fatal(err)
			}
			left -= k
		}
	}
	raw := func(dir string) time.Duration {
		start := time.Now()
		if err := fs.MkdirAll(dir, 0o755); err != nil {
			b.Fatal(err)
		}
		f, err := fs.Create(filepath.Join(dir, "data"), vfs.WriteCategoryUnspecified)
		if err != nil {
			b.Fatal(err)
		}
		stream(f)
		if err := f.Sync(); err != nil {
			b.Fatal(err)
		}
		f.Close()
		if err := syncDir(fs, dir); err != nil {
			b.Fatal(err)
		}
		return time.Since(start)
	}
	saved := func(dir string) time.Duration {
		s, err := Open(fs, dir, Options{Group: 1})
		if err != nil {
			b.Fatal(err)
		}
		start := time.Now()
		w, err := s.Create(testMeta(100))
		if err != nil {
			b.Fatal(err)
		}
		stream(w)
		if err := w.Commit(); err != nil {
			b.Fatal(err)
		}
		return time.Since(start)
	}
	var rawTime, saveTime time.Duration
	var ratios []float64
	i := 0
	for b.Loop() {
		i++
		rawDir, saveDir := filepath.Join(root, "raw"), filepath.Join(root, "save")
		var r, s time.Duration
		if i%2 == 0 {
			r = raw(rawDir)
			s = saved(saveDir)
		} else {
			s = saved(saveDir)
			r = raw(rawDir)
		}
		rawTime, saveTime = rawTime+r, saveTime+s
		ratios = append(ratios, r.Seconds()/s.Seconds())
		if os.Getenv("SKIFF_BENCH_VERBOSE") != "" {
			b.Logf("iteration %d: raw %v, save %v", i, r, s)
		}
		os.RemoveAll(rawDir)
		os.RemoveAll(saveDir)
	}
	slices.Sort(ratios)
	mbps := func(d time.Duration) float64 { return float64(n) * float64(i) / d.Seconds() / 1e6 }
	b.ReportMetric(mbps(rawTime), "raw-MB/s")
	b.ReportMetric(mbps(saveTime), "save-MB/s")
	b.ReportMetric(mbps(saveTime)/mbps(rawTime), "save/raw")
	// The median of the per-iteration ratios resists a shared disk's noise.
	b.ReportMetric(ratios[len(ratios)/2], "median-save/raw")
	b.ReportMetric(float64(n)/(1<<20), "MiB")
}
