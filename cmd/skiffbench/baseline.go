package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"time"
)

// runFsync measures the disk's serial fsync latency under --dir: the
// floor of every commit (DESIGN.md §9 measured 0.17–0.25 ms here). Like
// the WAL's preallocated segments, it overwrites a preallocated file, so
// that each fsync flushes data, not a growing file's metadata.
func runFsync(ctx context.Context, e env) ([]measurement, error) {
	if err := os.MkdirAll(e.dir, 0o755); err != nil {
		return nil, fmt.Errorf("%w: %w", errWorkload, err)
	}
	f, err := os.Create(filepath.Join(e.dir, "fsync"))
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
	window := min(e.duration, time.Second)
	var lat []time.Duration
	start := time.Now()
	for off := int64(0); time.Since(start) < window && ctx.Err() == nil; off = (off + int64(len(rec))) % size {
		t0 := time.Now()
		if _, err := f.WriteAt(rec, off); err != nil {
			return nil, fmt.Errorf("%w: write: %w", errWorkload, err)
		}
		if err := f.Sync(); err != nil {
			return nil, fmt.Errorf("%w: fsync: %w", errWorkload, err)
		}
		lat = append(lat, time.Since(t0))
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	slices.Sort(lat)
	return []measurement{
		{"p50", micros(percentile(lat, 0.50)), "µs"},
		{"p99", micros(percentile(lat, 0.99)), "µs"},
		{"serial", float64(len(lat)) / time.Since(start).Seconds(), "fsyncs/s"},
	}, nil
}
