package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/skiffdb/skiff"
	"github.com/skiffdb/skiff/statemachine"
)

// deploymentID is shared by every host of a run, including the catch-up
// child process.
const deploymentID = 0x5b1ff

// tickInterval is shorter than the 100ms default so that the elections
// at the start of a workload take a fraction of the measured time; it
// changes neither the commit path nor fsync. The idle workload keeps the
// default (idleTickInterval): 10 ms ticks for 30,000 replicas before they
// quiesce are 3 million ticks a second, more than two cores keep up with.
const (
	tickInterval     = 10 * time.Millisecond
	idleTickInterval = 100 * time.Millisecond
)

// errWorkload wraps every failure of a workload run.
var errWorkload = errors.New("skiffbench")

// nopSM is DESIGN.md §9's state machine: it applies nothing and its
// snapshot is empty.
type nopSM struct{ n uint64 }

func (s *nopSM) Apply(ents []statemachine.Entry) error {
	for i := range ents {
		s.n++
		ents[i].Result.Value = s.n
	}
	return nil
}
func (s *nopSM) Lookup([]byte) ([]byte, error)            { return nil, nil }
func (s *nopSM) Snapshot() (statemachine.Snapshot, error) { return nopSnap{}, nil }
func (s *nopSM) Restore(context.Context, io.Reader, []statemachine.SnapshotFile) error {
	return nil
}
func (s *nopSM) Close() error { return nil }

type nopSnap struct{}

func (nopSnap) Save(context.Context, io.Writer, statemachine.FileCollection) error { return nil }
func (nopSnap) Release()                                                           {}

func newNop(uint64, uint64) statemachine.StateMachine { return &nopSM{} }

// cluster is three hosts in this process over loopback TCP.
type cluster struct {
	hosts   []*skiff.Host
	metrics []*prometheus.Registry // each host's
	members map[skiff.ReplicaID]string
	dir     string
}

// openCluster opens three hosts, each in its own directory under dir
// (created, and removed by close), fsync on, ticking every tick.
// listener, when set, receives every host's events.
func openCluster(dir string, tick time.Duration, listener func(skiff.Event)) (*cluster, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("%w: %w", errWorkload, err)
	}
	c := &cluster{members: map[skiff.ReplicaID]string{}, dir: dir}
	for i := 0; i < 3; i++ {
		reg := prometheus.NewRegistry()
		h, err := skiff.Open(skiff.HostConfig{Dir: filepath.Join(dir, fmt.Sprintf("host%d", i+1)),
			RaftAddr: "127.0.0.1:0", DeploymentID: deploymentID, TickInterval: tick,
			Listener: listener, Metrics: reg})
		if err != nil {
			c.close()
			return nil, fmt.Errorf("%w: open host %d: %w", errWorkload, i+1, err)
		}
		c.hosts = append(c.hosts, h)
		c.metrics = append(c.metrics, reg)
		c.members[skiff.ReplicaID(i+1)] = h.RaftAddr()
	}
	return c, nil
}

// groupConfig is the configuration of every benchmarked group: pre-vote
// and check-quorum as recommended, no periodic snapshots.
func groupConfig(g skiff.GroupID, r skiff.ReplicaID, members map[skiff.ReplicaID]string) skiff.GroupConfig {
	return skiff.GroupConfig{GroupID: g, ReplicaID: r, Members: members,
		PreVote: true, CheckQuorum: true, ElectionTicks: 20}
}

// startGroups starts groups first..last (inclusive) on every host, from
// a few goroutines so that 10,000 groups start in seconds; cfg may adjust
// each replica's configuration.
func (c *cluster) startGroups(ctx context.Context, first, last int, create skiff.CreateFunc, cfg func(*skiff.GroupConfig)) error {
	const starters = 8
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
	)
	next := make(chan int)
	for w := 0; w < starters; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for g := range next {
				for i, h := range c.hosts {
					gc := groupConfig(skiff.GroupID(g), skiff.ReplicaID(i+1), c.members)
					if cfg != nil {
						cfg(&gc)
					}
					if err := h.StartGroup(ctx, gc, create); err != nil {
						mu.Lock()
						errs = append(errs, fmt.Errorf("start group %d on host %d: %w", g, i+1, err))
						mu.Unlock()
					}
				}
			}
		}()
	}
	for g := first; g <= last; g++ {
		next <- g
	}
	close(next)
	wg.Wait()
	if len(errs) > 0 {
		return fmt.Errorf("%w: %w", errWorkload, errors.Join(errs...))
	}
	return nil
}

// leader returns the host leading group g, waiting for an election.
func (c *cluster) leader(ctx context.Context, g skiff.GroupID) (*skiff.Host, error) {
	id, err := c.hosts[0].WaitLeader(ctx, g)
	if err != nil {
		return nil, fmt.Errorf("%w: group %d: wait for a leader: %w", errWorkload, g, err)
	}
	if id < 1 || int(id) > len(c.hosts) {
		return nil, fmt.Errorf("%w: group %d: leader %d is not one of the hosts", errWorkload, g, id)
	}
	return c.hosts[id-1], nil
}

// close closes the hosts and removes their directories.
func (c *cluster) close() error {
	var errs []error
	for _, h := range c.hosts {
		if err := h.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	if err := os.RemoveAll(c.dir); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// saveStats are the hosts' log saves (one WAL write and one fsync for
// every group of a step pass), summed over the hosts: they say whether a
// figure is bound by fsyncs or by how many entries share one.
type saveStats struct {
	saves, seconds, entries float64
}

// saveStats reads the hosts' skiff_log_save_seconds and
// skiff_log_save_entries histograms.
func (c *cluster) saveStats() (saveStats, error) {
	var st saveStats
	for _, reg := range c.metrics {
		mfs, err := reg.Gather()
		if err != nil {
			return st, fmt.Errorf("%w: metrics: %w", errWorkload, err)
		}
		for _, mf := range mfs {
			for _, m := range mf.GetMetric() {
				h := m.GetHistogram()
				switch mf.GetName() {
				case "skiff_log_save_seconds":
					st.saves += float64(h.GetSampleCount())
					st.seconds += h.GetSampleSum()
				case "skiff_log_save_entries":
					st.entries += h.GetSampleSum()
				}
			}
		}
	}
	return st, nil
}
