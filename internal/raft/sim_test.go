package raft

import (
	"flag"
	"fmt"
	"math/rand/v2"
	"runtime"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/skiffdb/skiff/raftpb"
)

// TestSimulation runs a randomized, seeded, deterministic simulation of a
// group of 3–7 replicas (sim_cluster_test.go: the hosts and network;
// sim_driver_test.go: workload and faults; sim_check_test.go: the safety
// checks). Each seed draws its configuration (PreVote, CheckQuorum, lease
// or quorum reads, flow-control limits, fault rates) and runs a chaos phase
// — partitions (also around a leader or a joint configuration), drops,
// duplicates, reordering and delays, crashes that lose unpersisted state
// (also power loss during an fsync, and leaders crashing just after their
// election), slow fsyncs, proposals (also via followers and to stale
// leaders), ReadIndex, membership changes (add, non-voter, promote,
// remove, joint), leader transfers, log compaction and snapshot catch-up
// with failing fetches — checking the Raft safety properties after every
// step (sim_check_test.go lists them), then heals everything and requires
// the group to converge within a bounded number of ticks.
//
// A failing seed is replayed with tracing on, and its trace tail printed.
// Under -race 200 seeds run, with -short 60.
//
//	go test ./internal/raft -run TestSimulation            # 500 seeds
//	go test ./internal/raft -run TestSimulation -long      # 20,000 seeds
//	go test ./internal/raft -run TestSimulation -seed=N -v # replay one, with a trace
var (
	simLong = flag.Bool("long", false, "TestSimulation: run 20,000 seeds instead of 500")
	simSeed = flag.Int64("seed", -1, "TestSimulation: replay only this seed and print its trace tail")
)

// simChaosTicks is how long each seed's chaos phase lasts.
const simChaosTicks = 600

func TestSimulation(t *testing.T) {
	seeds := 500
	switch {
	case *simLong:
		seeds = 20000
	case testing.Short():
		seeds = 60
	case raceEnabled:
		// The race detector makes the simulation ~5x slower.
		seeds = 200
	}
	first := uint64(0)
	if *simSeed >= 0 {
		first, seeds = uint64(*simSeed), 1
	}
	start := time.Now()
	var (
		next     atomic.Uint64
		failures atomic.Int32
		mu       sync.Mutex
		failed   []uint64
		total    simStats
	)
	next.Store(first)
	var wg sync.WaitGroup
	for range runtime.GOMAXPROCS(0) {
		wg.Go(func() {
			for failures.Load() < 3 {
				seed := next.Add(1) - 1
				if seed >= first+uint64(seeds) {
					return
				}
				res := runSimSeed(seed, false)
				mu.Lock()
				total.add(res.stats)
				if res.err != nil {
					failures.Add(1)
					failed = append(failed, seed)
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	for _, seed := range failed {
		// Replay deterministically, this time with a trace.
		res := runSimSeed(seed, true)
		t.Errorf("simulation seed %d failed: %v\noptions: %+v\nreplay: go test ./internal/raft -run TestSimulation -seed=%d -v\nstate:%s\ntrace tail:\n%s",
			seed, res.err, res.opts, seed, res.state, res.trace)
	}
	if *simSeed >= 0 && len(failed) == 0 {
		res := runSimSeed(first, true)
		t.Logf("seed %d passed; options: %+v\ntrace tail:\n%s", first, res.opts, res.trace)
	}
	t.Logf("%d seeds in %v: %+v", seeds, time.Since(start).Round(time.Millisecond), total)
}

type simResult struct {
	err   error
	opts  simOptions
	stats simStats
	state string
	trace string
}

// runSimSeed runs one seed. A panic in the core is reported as a failure
// of that seed.
func runSimSeed(seed uint64, trace bool) (res simResult) {
	rng := rand.New(rand.NewPCG(seed, 0x5EED))
	res.opts = drawSimOptions(rng, simChaosTicks)
	c := newSimCluster(seed, res.opts, rng, trace)
	defer func() {
		if p := recover(); p != nil {
			res.err = fmt.Errorf("panic: %v\n%s", p, debug.Stack())
		}
		res.stats = c.stats
		if res.err != nil && trace {
			res.state = c.convergence()
			res.trace = c.trace.tail(150)
		} else if trace {
			res.trace = c.trace.tail(40)
		}
	}()
	res.err = c.err
	if res.err == nil {
		res.err = c.run()
	}
	return res
}

func (s *simStats) add(o simStats) {
	s.events += o.events
	s.appliedEarly += o.appliedEarly
	s.taken += o.taken
	s.msgs += o.msgs
	s.crashes += o.crashes
	s.partitions += o.partitions
	s.elections += o.elections
	s.snapshots += o.snapshots
	s.installs += o.installs
	s.fetchFails += o.fetchFails
	s.confChanges += o.confChanges
	s.transfers += o.transfers
	s.reads += o.reads
	s.readsServed += o.readsServed
	s.applied += o.applied
}

// simTrace keeps the last lines of a seed's trace. It is only switched on
// when replaying a seed, so fast runs do not pay for formatting.
type simTrace struct {
	on    bool
	lines []string
	next  int
}

const simTraceLines = 400

func (t *simTrace) add(at int64, id raftpb.ReplicaID, what, detail string) {
	if !t.on {
		return
	}
	line := fmt.Sprintf("%5d.%d r%-2d %-12s %s", at/simTick, at%simTick, id, what, detail)
	if len(t.lines) < simTraceLines {
		t.lines = append(t.lines, line)
		return
	}
	t.lines[t.next] = line
	t.next = (t.next + 1) % simTraceLines
}

func (t *simTrace) msg(at int64, id raftpb.ReplicaID, what string, m *raftpb.Message) {
	if !t.on {
		return
	}
	s := fmt.Sprintf("%s %d->%d term=%d logterm=%d index=%d commit=%d", m.Type, m.From, m.To, m.Term, m.LogTerm, m.Index, m.Commit)
	if m.Reject {
		s += fmt.Sprintf(" reject hint=%d", m.RejectHint)
	}
	if n := len(m.Entries); n > 0 {
		s += fmt.Sprintf(" ents=[%d/%d..%d/%d]", m.Entries[0].Index, m.Entries[0].Term, m.Entries[n-1].Index, m.Entries[n-1].Term)
	}
	if m.Snapshot != nil {
		s += fmt.Sprintf(" snap=%d/%d", m.Snapshot.Index, m.Snapshot.Term)
	}
	if len(m.Context) > 0 {
		s += fmt.Sprintf(" ctx=%q", m.Context)
	}
	t.add(at, id, what, s)
}

// tail returns the last n lines.
func (t *simTrace) tail(n int) string {
	lines := append(append([]string(nil), t.lines[t.next:]...), t.lines[:t.next]...)
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
