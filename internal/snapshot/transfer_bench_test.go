package snapshot

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"runtime/metrics"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/skiffdb/skiff/raftpb"
)

// Transfer benchmarks. Figures are reported, never asserted. Run with
//
//	go test ./internal/snapshot -run '^$' -bench 'TransferVsRaw' -benchtime 6x
//	go test ./internal/snapshot -run '^$' -bench 'Transfer/' -benchtime 3x -count 3
//
// SKIFF_BENCH_SNAPSHOT_MB sets the large size (default 128; 1024 for the
// issue's 1 GiB figure); the peak-heap comparison also runs a quarter of it.
// SKIFF_BENCH_KEEP=1 keeps what every iteration wrote (the followers' and
// the raw baseline's files) until the benchmark ends, so that each write
// lands in page-cache memory not recently freed, as a new replica's does
// (skiffbench catchup). On this project's VMs such memory is cold at the
// hypervisor (the guest pages out idle page cache and reports free pages
// back): filling it ran at 250–600 MB/s where reused memory ran at
// 1.3–2 GB/s, and that, not the transfer code, bounds a catch-up there.
// Both ends use real files (vfs.Default under the test's temp dir); the
// receiver's bytes are durable when a transfer returns. The raw baselines
// move the same bytes in the same run: a durable sequential write (write in
// 1 MiB pieces, one fsync) and a plain loopback TCP copy.

func benchSize() int64 {
	mb := 128
	if s := os.Getenv("SKIFF_BENCH_SNAPSHOT_MB"); s != "" {
		if v, err := strconv.Atoi(s); err == nil && v > 0 {
			mb = v
		}
	}
	return int64(mb) << 20
}

// benchBlock fills p with data that compresses about 2:1 with zstd:
// random 4 KiB blocks alternating with a repeated pattern.
func benchBlock(rng *rand.ChaCha8, p []byte) {
	for i := 0; i < len(p); i += 8 << 10 {
		end := min(i+4<<10, len(p))
		_, _ = rng.Read(p[i:end])
		for k := end; k < min(i+8<<10, len(p)); k++ {
			p[k] = byte(k % 7)
		}
	}
}

// benchSnapshot publishes a snapshot of size bytes in four files into a
// store on disk, streaming so that the data is never whole in memory.
func benchSnapshot(b *testing.B, dir string, size int64, comp raftpb.Compression) *Store {
	b.Helper()
	st := openStore(b, vfs.Default, dir)
	w, err := st.Create(raftpb.SnapshotMeta{Group: 1, Index: 100, Term: 1, Compression: comp})
	if err != nil {
		b.Fatal(err)
	}
	defer w.Abort()
	rng := rand.NewChaCha8([32]byte{1})
	buf := make([]byte, 1<<20)
	for i, frac := range []int64{4, 3, 2, 1} {
		fw, err := w.CreateFile(fmt.Sprintf("file-%d", i))
		if err != nil {
			b.Fatal(err)
		}
		for left := size * frac / 10; left > 0; left -= int64(len(buf)) {
			p := buf[:min(left, int64(len(buf)))]
			benchBlock(rng, p)
			if _, err := fw.Write(p); err != nil {
				b.Fatal(err)
			}
		}
		if err := fw.Close(); err != nil {
			b.Fatal(err)
		}
	}
	if err := w.Commit(); err != nil {
		b.Fatal(err)
	}
	return st
}

// heapPeak samples the live heap while a benchmark iteration runs.
type heapPeak struct {
	stop chan struct{}
	done chan struct{}
	peak atomic.Uint64
}

func startHeapPeak() *heapPeak {
	runtime.GC()
	h := &heapPeak{stop: make(chan struct{}), done: make(chan struct{})}
	sample := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	read := func() {
		metrics.Read(sample)
		if v := sample[0].Value.Uint64(); v > h.peak.Load() {
			h.peak.Store(v)
		}
	}
	read()
	go func() {
		defer close(h.done)
		t := time.NewTicker(time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-h.stop:
				read()
				return
			case <-t.C:
				read()
			}
		}
	}()
	return h
}

func (h *heapPeak) end() float64 {
	close(h.stop)
	<-h.done
	return float64(h.peak.Load()) / (1 << 20)
}

func BenchmarkTransfer(b *testing.B) {
	large := benchSize()
	for _, size := range []int64{large / 4, large} {
		for _, comp := range []raftpb.Compression{raftpb.NoCompression, raftpb.Zstd} {
			for _, via := range []string{"mem", "tcp"} {
				name := fmt.Sprintf("size=%dMiB/comp=%s/source=%s", size>>20, compName[comp], via)
				b.Run(name, func(b *testing.B) { benchTransfer(b, size, comp, via) })
			}
		}
		b.Run(fmt.Sprintf("size=%dMiB/raw=disk", size>>20), func(b *testing.B) {
			root := b.TempDir()
			b.SetBytes(size)
			for i := 0; i < b.N; i++ {
				rawDiskOnce(b, root, size)
			}
		})
		b.Run(fmt.Sprintf("size=%dMiB/raw=tcp", size>>20), func(b *testing.B) {
			addr := rawTCPServer(b, size)
			b.SetBytes(size)
			for i := 0; i < b.N; i++ {
				rawTCPOnce(b, addr, size)
			}
		})
	}
}

// BenchmarkTransferVsRaw measures, in every iteration and back to back, a
// raw durable disk write, a raw loopback TCP copy and an uncompressed
// transfer through each source, all of the same size, and reports the
// medians and the ratio of each transfer to the slower raw baseline. On a
// shared machine whose load drifts, interleaving keeps the ratio honest.
//
// The two transfers swap places every iteration, and every iteration's
// figures are logged. On a shared virtual disk one of the two transfers of
// an iteration often runs at a third of the other's rate, whichever the
// source (the receiver's writes stall; the fetchers sit idle): with a fixed
// order, a median of 3 could charge that to one source, as when mem
// looked slower than TCP. Use an even -benchtime and read the log when the
// two sources differ.
func BenchmarkTransferVsRaw(b *testing.B) {
	size := benchSize()
	e := newBenchEnv(b, size, raftpb.NoCompression)
	addr := rawTCPServer(b, size)
	rate := func(d time.Duration) float64 { return float64(size) / d.Seconds() / 1e6 }
	var disk, tcp, mem, overTCP []float64
	var peak float64
	for i := 0; i < b.N; i++ {
		disk = append(disk, rate(timed(func() { rawDiskOnce(b, e.root, size) })))
		tcp = append(tcp, rate(timed(func() { rawTCPOnce(b, addr, size) })))
		memRun := func() {
			d, p := e.once(b, e.sender)
			mem, peak = append(mem, rate(d)), max(peak, p)
		}
		tcpRun := func() {
			d, p := e.once(b, e.tcp)
			overTCP, peak = append(overTCP, rate(d)), max(peak, p)
		}
		first := "mem"
		if i%2 == 0 {
			memRun()
			tcpRun()
		} else {
			first = "tcp"
			tcpRun()
			memRun()
		}
		b.Logf("iteration %d (%s first): raw-disk %.0f raw-tcp %.0f mem %.0f tcp %.0f MB/s",
			i, first, disk[i], tcp[i], mem[i], overTCP[i])
	}
	md, mt, mm, mo := median(disk), median(tcp), median(mem), median(overTCP)
	b.ReportMetric(md, "raw-disk-MB/s")
	b.ReportMetric(mt, "raw-tcp-MB/s")
	b.ReportMetric(mm, "mem-MB/s")
	b.ReportMetric(mo, "tcp-MB/s")
	b.ReportMetric(mm/min(md, mt), "mem/raw")
	b.ReportMetric(mo/min(md, mt), "tcp/raw")
	b.ReportMetric(peak, "peak-heap-MiB")
}

func timed(f func()) time.Duration {
	start := time.Now()
	f()
	return time.Since(start)
}

func median(xs []float64) float64 {
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	return s[len(s)/2]
}

// benchEnv is a leader's published snapshot on disk, served in process and
// over loopback TCP, and a receiver.
type benchEnv struct {
	root   string
	leader *Store
	sender *Sender
	tcp    *TCPSource
	recv   *Receiver
	n      int
}

func newBenchEnv(b *testing.B, size int64, comp raftpb.Compression) *benchEnv {
	e := &benchEnv{root: b.TempDir()}
	e.leader = benchSnapshot(b, filepath.Join(e.root, "leader"), size, comp)
	var err error
	if e.sender, err = NewSender(SenderConfig{FS: vfs.Default}); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(e.sender.Close)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	srv := NewTCPServer(e.sender)
	go srv.Serve(l)
	e.tcp = NewTCPSource(l.Addr().String())
	b.Cleanup(func() { e.tcp.Close(); l.Close(); srv.Close() })
	cfg := ReceiverConfig{SyncBytes: benchSyncBytes(), ChunkSize: envInt("SKIFF_BENCH_CHUNK_KB") << 10,
		InFlight: envInt("SKIFF_BENCH_INFLIGHT")}
	if e.recv, err = NewReceiver(cfg); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(e.recv.Close)
	return e
}

// once runs one transfer into a fresh follower directory and returns its
// duration (the bytes are durable when it returns) and the peak heap.
func (e *benchEnv) once(b *testing.B, src FileSource) (time.Duration, float64) {
	b.StopTimer()
	defer b.StartTimer()
	e.n++
	dir := filepath.Join(e.root, fmt.Sprintf("follower-%d", e.n))
	follower := openStore(b, vfs.Default, dir)
	defer func() {
		follower.Close()
		if !benchKeep() {
			os.RemoveAll(dir)
		}
	}()
	h, err := e.leader.OpenReader(0)
	if err != nil {
		b.Fatal(err)
	}
	id, err := e.sender.Register(2, h)
	if err != nil {
		b.Fatal(err)
	}
	defer e.sender.Release(id)
	hp := startHeapPeak()
	b.StartTimer()
	start := time.Now()
	if _, err := e.recv.Receive(context.Background(), follower, InstallRequest{From: 1, Meta: h.Meta(), Reader: id}, src); err != nil {
		b.Fatal(err)
	}
	d := time.Since(start)
	b.StopTimer()
	return d, hp.end()
}

func benchTransfer(b *testing.B, size int64, comp raftpb.Compression, via string) {
	e := newBenchEnv(b, size, comp)
	var src FileSource = e.sender
	if via == "tcp" {
		src = e.tcp
	}
	b.SetBytes(size)
	var peak float64
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		_, p := e.once(b, src)
		peak = max(peak, p)
	}
	b.ReportMetric(peak, "peak-heap-MiB")
}

// rawDiskOnce writes size bytes to a new file in 1 MiB pieces and fsyncs
// it once: the durable sequential write a transfer is compared with.
func rawDiskOnce(b *testing.B, root string, size int64) {
	buf := make([]byte, 1<<20)
	benchBlock(rand.NewChaCha8([32]byte{2}), buf)
	f, err := os.CreateTemp(root, "raw-*")
	if err != nil {
		b.Fatal(err)
	}
	for left := size; left > 0; left -= int64(len(buf)) {
		if _, err := f.Write(buf[:min(left, int64(len(buf)))]); err != nil {
			b.Fatal(err)
		}
	}
	if err := f.Sync(); err != nil {
		b.Fatal(err)
	}
	f.Close()
	if !benchKeep() {
		os.Remove(f.Name())
	}
}

// rawTCPServer serves size zero-cost bytes to each connection.
func rawTCPServer(b *testing.B, size int64) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	var wg sync.WaitGroup
	b.Cleanup(func() { l.Close(); wg.Wait() })
	wg.Go(func() {
		buf := make([]byte, 1<<20)
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			for left := size; left > 0; left -= int64(len(buf)) {
				if _, err := c.Write(buf[:min(left, int64(len(buf)))]); err != nil {
					break
				}
			}
			c.Close()
		}
	})
	return l.Addr().String()
}

// rawTCPOnce copies size bytes over a fresh loopback connection.
func rawTCPOnce(b *testing.B, addr string, size int64) {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	n, err := io.CopyBuffer(io.Discard, struct{ io.Reader }{c}, make([]byte, 1<<20))
	if err != nil || n != size {
		b.Fatalf("copied %d of %d: %v", n, size, err)
	}
}

// benchKeep: SKIFF_BENCH_KEEP=1, keep every iteration's files (above).
func benchKeep() bool { return envInt("SKIFF_BENCH_KEEP") == 1 }

// benchSyncBytes, envInt: receiver knobs for tuning runs (0: default).
func benchSyncBytes() int64 { return int64(envInt("SKIFF_BENCH_SYNC_MB")) << 20 }

func envInt(name string) int {
	v, err := strconv.Atoi(os.Getenv(name))
	if err != nil || v < 0 {
		return 0
	}
	return v
}
