package main

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/skiffdb/skiff"
)

// shape is a throughput workload: proposers spread over groups, each
// keeping inflight proposals outstanding (1: it waits for each result).
type shape struct {
	groups, size, proposers, inflight int
}

func (s shape) name() string {
	size := fmt.Sprintf("%dB", s.size)
	if s.size >= 1024 && s.size%1024 == 0 {
		size = fmt.Sprintf("%dKiB", s.size/1024)
	}
	p := fmt.Sprintf("p%d", s.proposers)
	if s.inflight > 1 {
		p += fmt.Sprintf("x%d", s.inflight)
	}
	return fmt.Sprintf("g%d-%s-%s", s.groups, size, p)
}

// warmup runs before the measured window: elections are over, the WAL
// segment is preallocated and the connections are up.
func warmup(d time.Duration) time.Duration { return min(time.Second, max(d/5, 50*time.Millisecond)) }

// runShape measures s for env.duration after a warm-up: the writes/s
// completed inside the window and the latency of the proposals started
// inside it.
func runShape(ctx context.Context, e env, s shape) ([]measurement, error) {
	c, err := openCluster(e.dir, tickInterval, nil)
	if err != nil {
		return nil, err
	}
	defer c.close()
	setupCtx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	if err := c.startGroups(setupCtx, 1, s.groups, newNop, nil); err != nil {
		return nil, err
	}
	leaders := make([]*skiff.Host, s.groups+1)
	for g := 1; g <= s.groups; g++ {
		if leaders[g], err = c.leader(setupCtx, skiff.GroupID(g)); err != nil {
			return nil, err
		}
	}

	// Proposals use their own context, cancelled only if the run hangs
	// after its window, so that a slow engine shows as a low figure and a
	// stuck one as an error.
	propCtx, cancelProps := context.WithCancel(ctx)
	defer cancelProps()
	var (
		measuring atomic.Bool
		stopped   atomic.Bool
		completed atomic.Int64
		errMu     sync.Mutex
		firstErr  error
	)
	fail := func(err error) {
		errMu.Lock()
		if firstErr == nil {
			firstErr = err
		}
		errMu.Unlock()
		stopped.Store(true)
	}
	cmd := make([]byte, s.size)
	lats := make([]latencies, s.proposers)
	// propose sends one proposal and records it if it started inside the
	// window.
	propose := func(h *skiff.Host, g skiff.GroupID, l *latencies) {
		in := measuring.Load()
		t0 := time.Now()
		if _, err := h.Propose(propCtx, g, cmd); err != nil {
			fail(fmt.Errorf("propose in group %d: %w", g, err))
			return
		}
		if in {
			l.add(time.Since(t0))
		}
		completed.Add(1)
	}
	var wg sync.WaitGroup
	for p := 0; p < s.proposers; p++ {
		g := skiff.GroupID(p%s.groups + 1)
		h, l := leaders[g], &lats[p]
		wg.Add(1)
		go func() {
			defer wg.Done()
			if s.inflight <= 1 {
				for !stopped.Load() {
					propose(h, g, l)
				}
				return
			}
			// Pipelined: a goroutine per proposal, at most inflight at once.
			slots := make(chan struct{}, s.inflight)
			var pw sync.WaitGroup
			for !stopped.Load() {
				slots <- struct{}{}
				pw.Add(1)
				go func() {
					defer pw.Done()
					propose(h, g, l)
					<-slots
				}()
			}
			pw.Wait()
		}()
	}

	var n0, n1 int64
	var t0, t1 time.Time
	timer := time.NewTimer(warmup(e.duration))
	select {
	case <-timer.C:
	case <-ctx.Done():
	}
	stopProfile, err := e.startProfile()
	if err != nil {
		stopped.Store(true)
		wg.Wait()
		return nil, err
	}
	s0, err := c.saveStats()
	if err != nil {
		fail(err)
	}
	measuring.Store(true)
	n0, t0 = completed.Load(), time.Now()
	timer.Reset(e.duration)
	select {
	case <-timer.C:
	case <-ctx.Done():
	}
	n1, t1 = completed.Load(), time.Now()
	measuring.Store(false)
	s1, err := c.saveStats()
	if err != nil {
		fail(err)
	}
	stopped.Store(true)
	if err := stopProfile(); err != nil {
		fail(err)
	}

	// Proposals in flight finish; a stuck one is an error, not a hang.
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	timer.Reset(30 * time.Second)
	select {
	case <-done:
	case <-timer.C:
		cancelProps()
		<-done
		fail(fmt.Errorf("%w: proposals still outstanding 30s after the window", errWorkload))
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if firstErr != nil {
		return nil, fmt.Errorf("%w: %s: %w", errWorkload, s.name(), firstErr)
	}
	var all []time.Duration
	for i := range lats {
		all = append(all, lats[i].d...)
	}
	if len(all) == 0 {
		return nil, fmt.Errorf("%w: %s: no proposal completed in the window", errWorkload, s.name())
	}
	slices.Sort(all)
	ms := []measurement{
		{"writes", float64(n1-n0) / t1.Sub(t0).Seconds(), "/s"},
		{"p50", micros(percentile(all, 0.50)), "µs"},
		{"p99", micros(percentile(all, 0.99)), "µs"},
	}
	if s.proposers == 1 {
		ms = append(ms, measurement{"p99.9", micros(percentile(all, 0.999)), "µs"})
	}
	// The log saves of the three hosts in the window: how many, how many
	// entries each carried, and how long each write + fsync took.
	if saves := s1.saves - s0.saves; saves > 0 {
		ms = append(ms,
			measurement{"log-saves", saves / t1.Sub(t0).Seconds(), "/s 3 hosts"},
			measurement{"entries/save", (s1.entries - s0.entries) / saves, ""},
			measurement{"save-mean", 1e6 * (s1.seconds - s0.seconds) / saves, "µs"})
	}
	return ms, nil
}

// latencies are one proposer's; pipelined proposers add concurrently.
type latencies struct {
	mu sync.Mutex
	d  []time.Duration
}

func (l *latencies) add(d time.Duration) {
	l.mu.Lock()
	l.d = append(l.d, d)
	l.mu.Unlock()
}

// percentile of sorted durations (nearest rank).
func percentile(sorted []time.Duration, q float64) time.Duration {
	i := int(q*float64(len(sorted))+0.5) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

func micros(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }
