package main

import (
	"context"
	"fmt"
	"runtime"
	"runtime/debug"
	"time"

	"github.com/skiffdb/skiff"
)

// idleWindow is how long the idle workload measures CPU time; idleSettle
// is how long it first waits, once every group has a leader, for them to
// quiesce (QuiesceTicks defaults to 10 election timeouts: 10 × 10 ticks ×
// 100 ms = 10 s of idleness).
const (
	idleWindow = 10 * time.Second
	idleSettle = 15 * time.Second
)

// runIdle measures the CPU time and memory of groups idle groups, each
// with a replica on each of the three hosts and GroupConfig.Quiesce on:
// every group elects a leader, then goes quiet. The RSS is the whole
// process's (three hosts); above-start is what the cluster added to the
// RSS measured before it opened.
func runIdle(groups int) func(context.Context, env) ([]measurement, error) {
	return func(ctx context.Context, e env) ([]measurement, error) {
		debug.FreeOSMemory()
		before, err := readMemStatus("self")
		if err != nil {
			return nil, err
		}
		c, err := openCluster(e.dir, idleTickInterval, nil)
		if err != nil {
			return nil, err
		}
		defer c.close()
		setupCtx, cancel := context.WithTimeout(ctx, 10*time.Minute)
		defer cancel()
		t0 := time.Now()
		// The defaults a user would run idle groups with: 100 ms ticks
		// (the cluster's), a 10-tick election timeout.
		quiesce := func(gc *skiff.GroupConfig) { gc.Quiesce, gc.ElectionTicks = true, 0 }
		if err := c.startGroups(setupCtx, 1, groups, newNop, quiesce); err != nil {
			return nil, err
		}
		started := time.Since(t0)
		for g := 1; g <= groups; g++ {
			if _, err := c.leader(setupCtx, skiff.GroupID(g)); err != nil {
				return nil, err
			}
		}
		elected := time.Since(t0) - started
		if err := pause(ctx, idleSettle); err != nil {
			return nil, err
		}
		cpu0, err := cpuTime()
		if err != nil {
			return nil, err
		}
		stopProfile, err := e.startProfile()
		if err != nil {
			return nil, err
		}
		w0 := time.Now()
		err = pause(ctx, idleWindow)
		if perr := stopProfile(); err == nil {
			err = perr
		}
		if err != nil {
			return nil, err
		}
		cpu1, err := cpuTime()
		if err != nil {
			return nil, err
		}
		wall := time.Since(w0)
		mem, err := readMemStatus("self")
		if err != nil {
			return nil, err
		}
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		const mib = 1 << 20
		return []measurement{
			{"cpu", 100 * float64(cpu1-cpu0) / float64(wall), "% of a core"},
			{"rss", float64(mem.rss) / mib, "MiB"},
			{"rss-above-start", float64(mem.rss-before.rss) / mib, "MiB"},
			{"heap-in-use", float64(ms.HeapInuse) / mib, "MiB"},
			{"goroutines", float64(runtime.NumGoroutine()), ""},
			{"start-groups", started.Seconds(), "s"},
			{"then-elect", elected.Seconds(), "s"},
		}, nil
	}
}

// pause waits d unless ctx ends first.
func pause(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("%w: %w", errWorkload, ctx.Err())
	}
}
