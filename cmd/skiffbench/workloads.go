package main

import (
	"context"
	"fmt"
)

// workloads lists DESIGN.md §9's workloads in the order "all" runs them:
// the fsync baseline first, the 1-group shapes before the 16-group ones
// (whose target is the 1-group figure of the same run), the long ones
// last.
func workloads() []workload {
	ws := []workload{
		{name: "fsync", desc: "baseline: 64 B overwrite + fsync on --dir by 1 and by 3 writers; 256 MiB sequential write + fsync",
			run: runFsync},
		{name: "latency", desc: "commit latency, 1 group, 16 B, 1 proposer",
			run: func(ctx context.Context, e env) ([]measurement, error) {
				return runShape(ctx, e, shape{groups: 1, size: 16, proposers: 1, inflight: 1})
			},
			targets: map[string]target{"p50": {value: 350, atMost: true}, "p99": {value: 1000, atMost: true}}},
	}
	// DESIGN.md §9's targets for the 1-group throughput shapes.
	absolute := map[string]float64{"g1-16B-p256": 105e3, "g1-16B-p64x16": 275e3, "g1-1KiB-p256": 60e3}
	for _, groups := range []int{1, 16} {
		for _, size := range []int{16, 1024} {
			for _, p := range []struct{ proposers, inflight int }{{256, 1}, {64, 1}, {64, 16}} {
				s := shape{groups: groups, size: size, proposers: p.proposers, inflight: p.inflight}
				w := workload{name: s.name(), run: func(ctx context.Context, e env) ([]measurement, error) { return runShape(ctx, e, s) }}
				w.desc = fmt.Sprintf("%d group(s), %d B, %d proposers", groups, size, p.proposers)
				if p.inflight > 1 {
					w.desc += fmt.Sprintf(" × %d in flight", p.inflight)
				} else {
					w.desc += " waiting for each result"
				}
				one := s
				one.groups = 1
				if groups == 1 {
					if t, ok := absolute[s.name()]; ok {
						w.targets = map[string]target{"writes": {value: t}}
					}
				} else {
					// "≥ the 1-group figure: one shared WAL, one fsync per batch".
					w.targets = map[string]target{"writes": {value: absolute[one.name()], relTo: one.name() + "/writes"}}
				}
				ws = append(ws, w)
			}
		}
	}
	rss := target{value: 64, atMost: true} // MiB above idle, independent of state size
	ws = append(ws,
		workload{name: "catchup-256MiB", desc: "new replica catch-up by snapshot, 256 MiB state (child process)",
			run:     runCatchup(256 << 20),
			targets: map[string]target{"catchup": {value: 0.35, atMost: true}, "rss-above-idle": rss}},
		workload{name: "catchup-1GiB", desc: "new replica catch-up by snapshot, 1 GiB state (child process)",
			run:     runCatchup(1 << 30),
			targets: map[string]target{"catchup": {value: 3, atMost: true}, "rss-above-idle": rss}},
		workload{name: "idle-10k", desc: "CPU and RSS of 10,000 idle (quiesced) groups on 3 hosts, over 10 s",
			run: runIdle(10000)},
	)
	return ws
}
