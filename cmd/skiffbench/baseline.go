package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"
)

// fsyncWindow bounds each half of the fsync baseline.
const fsyncWindow = time.Second

// runFsync measures the disk under --dir the way the hosts use it: the
// latency of a 64 B overwrite + fsync by one writer (DESIGN.md §9 measured
// 0.17–0.25 ms here), then by three writers at once, each on its own
// file, as the three hosts of every workload do. Like the WAL's
// preallocated, zero-filled segments, each writer overwrites a file that
// was written and synced first, so that an fsync flushes data, not a
// growing file's metadata. Last, the durable sequential write rate.
func runFsync(ctx context.Context, e env) ([]measurement, error) {
	if err := os.MkdirAll(e.dir, 0o755); err != nil {
		return nil, fmt.Errorf("%w: %w", errWorkload, err)
	}
	window := min(e.duration, fsyncWindow)
	var ms []measurement
	for _, writers := range []int{1, 3} {
		lat := make([][]time.Duration, writers)
		errs := make([]error, writers)
		var wg sync.WaitGroup
		start := time.Now()
		for i := 0; i < writers; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				path := filepath.Join(e.dir, fmt.Sprintf("fsync-%d-%d", writers, i))
				lat[i], errs[i] = fsyncLoop(ctx, path, window)
			}()
		}
		wg.Wait()
		el := time.Since(start)
		var all []time.Duration
		for i := range lat {
			if errs[i] != nil {
				return nil, errs[i]
			}
			all = append(all, lat[i]...)
		}
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		slices.Sort(all)
		name := "serial"
		if writers > 1 {
			name = fmt.Sprintf("%d-writers", writers)
		}
		ms = append(ms,
			measurement{name + "-p50", micros(percentile(all, 0.50)), "µs"},
			measurement{name + "-p99", micros(percentile(all, 0.99)), "µs"},
			measurement{name + "-rate", float64(len(all)) / el.Seconds(), "fsyncs/s"})
	}
	// The first file usually lands in page-cache memory just freed by the
	// work before it, which is fast; the second, written while the first
	// is kept, needs memory the kernel must find (on this VM: memory
	// reported back to the host, faulted in again) — what a new replica
	// receiving a snapshot gets, so catch-up is judged against it.
	first, second := filepath.Join(e.dir, "seq"), filepath.Join(e.dir, "seq-fresh")
	defer os.Remove(first)
	defer os.Remove(second)
	rate, err := seqWrite(ctx, first, seqWriteBytes)
	if err != nil {
		return nil, err
	}
	fresh, err := seqWrite(ctx, second, seqWriteBytes)
	if err != nil {
		return nil, err
	}
	return append(ms, measurement{"seq-write", rate, "MiB/s"}, measurement{"seq-write-fresh", fresh, "MiB/s"}), nil
}

// seqWriteBytes is the size of the sequential-write baseline: large
// enough to leave the disk's cache, as a snapshot's files do.
const seqWriteBytes = 256 << 20

// seqWrite writes n bytes to a new file at path in 1 MiB writes, fsyncs
// it and returns the rate in MiB/s: the ceiling of generating and of
// receiving a snapshot (DESIGN.md §9: 1.0–1.45 GiB/s durable here).
// The file stays (the caller removes it).
func seqWrite(ctx context.Context, path string, n int64) (float64, error) {
	f, err := os.Create(path)
	if err != nil {
		return 0, fmt.Errorf("%w: %w", errWorkload, err)
	}
	defer f.Close()
	buf := make([]byte, 1<<20)
	state := uint64(1)
	fill(buf, &state) // incompressible, like snapshot data
	start := time.Now()
	for left := n; left > 0 && ctx.Err() == nil; left -= int64(len(buf)) {
		if _, err := f.Write(buf[:min(left, int64(len(buf)))]); err != nil {
			return 0, fmt.Errorf("%w: sequential write: %w", errWorkload, err)
		}
	}
	if err := f.Sync(); err != nil {
		return 0, fmt.Errorf("%w: fsync: %w", errWorkload, err)
	}
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	return float64(n) / (1 << 20) / time.Since(start).Seconds(), nil
}

// fsyncLoop overwrites 64 B records of a preallocated file at path and
// fsyncs after each, for d; it returns each write + fsync's latency.
func fsyncLoop(ctx context.Context, path string, d time.Duration) ([]time.Duration, error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errWorkload, err)
	}
	defer f.Close()
	const size = 4 << 20
	if _, err := f.Write(make([]byte, size)); err != nil {
		return nil, fmt.Errorf("%w: preallocate: %w", errWorkload, err)
	}
	if err := f.Sync(); err != nil {
		return nil, fmt.Errorf("%w: fsync: %w", errWorkload, err)
	}
	rec := make([]byte, 64)
	var lat []time.Duration
	start := time.Now()
	for off := int64(0); time.Since(start) < d && ctx.Err() == nil; off = (off + int64(len(rec))) % size {
		t0 := time.Now()
		if _, err := f.WriteAt(rec, off); err != nil {
			return nil, fmt.Errorf("%w: write: %w", errWorkload, err)
		}
		if err := f.Sync(); err != nil {
			return nil, fmt.Errorf("%w: fsync: %w", errWorkload, err)
		}
		lat = append(lat, time.Since(t0))
	}
	return lat, nil
}
