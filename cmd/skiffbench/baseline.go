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
// growing file's metadata.
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
	return ms, nil
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
