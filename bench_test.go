package skiff_test

import (
	"context"
	"fmt"
	"io"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/skiffdb/skiff"
	"github.com/skiffdb/skiff/statemachine"
)

// nopSM is DESIGN.md §9's benchmark state machine: it applies nothing.
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

// benchCluster opens 3 hosts over loopback TCP, each with its own
// directory on the real disk, fsync on, and starts groups 1..groups.
func benchCluster(b *testing.B, groups int) []*skiff.Host {
	b.Helper()
	var hosts []*skiff.Host
	for i := 0; i < 3; i++ {
		h, err := skiff.Open(skiff.HostConfig{Dir: b.TempDir(), RaftAddr: "127.0.0.1:0", DeploymentID: 1,
			TickInterval: 10 * time.Millisecond})
		if err != nil {
			b.Fatal(err)
		}
		hosts = append(hosts, h)
	}
	members := map[skiff.ReplicaID]string{}
	for i, h := range hosts {
		members[skiff.ReplicaID(i+1)] = h.RaftAddr()
	}
	for g := 1; g <= groups; g++ {
		for i, h := range hosts {
			err := h.StartGroup(context.Background(), skiff.GroupConfig{GroupID: skiff.GroupID(g),
				ReplicaID: skiff.ReplicaID(i + 1), Members: members, PreVote: true, CheckQuorum: true,
				ElectionTicks: 20},
				func(uint64, uint64) statemachine.StateMachine { return &nopSM{} })
			if err != nil {
				b.Fatal(err)
			}
		}
	}
	b.Cleanup(func() {
		for _, h := range hosts {
			h.Close()
		}
	})
	return hosts
}

// leaderHost returns the host leading group g.
func leaderHost(b *testing.B, hosts []*skiff.Host, g skiff.GroupID) *skiff.Host {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	id, err := hosts[0].WaitLeader(ctx, g)
	if err != nil {
		b.Fatal(err)
	}
	return hosts[id-1]
}

// BenchmarkHost measures DESIGN.md §9's workloads: proposers each waiting
// for their result, on the leader, 3 hosts over loopback TCP with fsync.
func BenchmarkHost(b *testing.B) {
	for _, c := range []struct {
		groups, proposers, size int
	}{{1, 256, 16}, {1, 256, 1024}, {16, 256, 16}, {1, 1, 16}} {
		b.Run(fmt.Sprintf("groups=%d/proposers=%d/size=%d", c.groups, c.proposers, c.size), func(b *testing.B) {
			hosts := benchCluster(b, c.groups)
			leaders := make([]*skiff.Host, c.groups+1)
			for g := 1; g <= c.groups; g++ {
				leaders[g] = leaderHost(b, hosts, skiff.GroupID(g))
			}
			cmd := make([]byte, c.size)
			var wg sync.WaitGroup
			per := b.N / c.proposers
			if per == 0 {
				per = 1
			}
			lat := make([][]time.Duration, c.proposers)
			b.ResetTimer()
			start := time.Now()
			for p := 0; p < c.proposers; p++ {
				wg.Add(1)
				go func(p int) {
					defer wg.Done()
					g := skiff.GroupID(p%c.groups + 1)
					h := leaders[g]
					ctx := context.Background()
					for i := 0; i < per; i++ {
						t0 := time.Now()
						if _, err := h.Propose(ctx, g, cmd); err != nil {
							b.Error(err)
							return
						}
						lat[p] = append(lat[p], time.Since(t0))
					}
				}(p)
			}
			wg.Wait()
			el := time.Since(start)
			b.StopTimer()
			total := per * c.proposers
			b.ReportMetric(float64(total)/el.Seconds(), "writes/s")
			all := make([]time.Duration, 0, total)
			for _, l := range lat {
				all = append(all, l...)
			}
			if len(all) > 0 {
				sortDurations(all)
				b.ReportMetric(float64(all[len(all)/2].Microseconds()), "p50-µs")
				b.ReportMetric(float64(all[len(all)*99/100].Microseconds()), "p99-µs")
			}
		})
	}
}

func sortDurations(d []time.Duration) { slices.Sort(d) }
