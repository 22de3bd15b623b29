package testcluster

import (
	"fmt"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/skiffdb/skiff"
)

// F17 (tikv#15972, braft#87): 100 groups on 3 hosts; one host comes back
// needing a snapshot in every group at once. The node-wide caps hold on
// every host at every tick (at most 2 sends and 2 receives in flight),
// the transfers do overlap up to the cap, and every group catches up
// with one install.
func TestHundredGroupsCatchUpWithinSnapshotConcurrencyCaps(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const (
			groups = 100
			sends  = 2
			recvs  = 2
		)
		var gs []skiff.GroupID
		for g := skiff.GroupID(1); g <= groups; g++ {
			gs = append(gs, g)
		}
		c := New(t, Config{Seed: 61, Groups: gs,
			Group: func(gc *skiff.GroupConfig) {
				gc.SnapshotEntries = 10
				gc.CompactionOverhead = 2
			},
			Host: func(hc *skiff.HostConfig) {
				hc.MaxConcurrentSnapshotSends = sends
				hc.MaxConcurrentSnapshotRecvs = recvs
				hc.MaxConcurrentSnapshotGenerations = 2
				// About 20 KiB per group: 80 ms each.
				hc.MaxSnapshotSendBytesPerSec = 256 << 10
			},
		})
		lag := 2
		for _, g := range gs {
			c.WaitLeader(g)
		}
		stopBehind(c, lag)
		for _, g := range gs {
			write(t, c, g, "k", 25, value(int(g), 1<<10))
		}
		c.Restart(lag)

		maxSend, maxRecv := make([]int, c.N()), make([]int, c.N())
		installed := 0
		defer func() {
			t.Logf("%d groups installed; most transfers in flight per host: sends %v, receives %v; %d snapshot failures",
				installed, maxSend, maxRecv, c.CountEvents(skiff.SnapshotFailed, 0))
			errs := map[string]int{}
			for _, e := range c.Events() {
				if e.Kind == skiff.SnapshotFailed {
					errs[fmt.Sprintf("host %d: %v", e.Host, e.Err)]++
				}
			}
			n := 0
			for k, v := range errs {
				if n++; n < 8 {
					t.Logf("%d× %s", v, k)
				}
			}
		}()
		start := time.Now()
		caughtUp := func() bool {
			for _, g := range gs {
				l, ok := c.Leader(g)
				if !ok {
					return false
				}
				lst, err1 := c.Status(l, g)
				fst, err2 := c.Status(lag, g)
				if err1 != nil || err2 != nil || fst.Applied < lst.Commit {
					return false
				}
			}
			return true
		}
		ok := c.poll(2*time.Minute, func() bool {
			for i := 0; i < c.N(); i++ {
				s, r := 0, 0
				for _, g := range gs {
					st, err := c.Status(i, g)
					if err != nil {
						continue
					}
					for _, tr := range st.Transfers {
						if tr.Phase == "done" || tr.Phase == "failed" {
							continue
						}
						if tr.Sending {
							s++
						} else {
							r++
						}
					}
				}
				maxSend[i], maxRecv[i] = max(maxSend[i], s), max(maxRecv[i], r)
			}
			return caughtUp()
		})
		installs := map[skiff.GroupID]int{}
		for _, e := range c.Events() {
			if e.Host == lag && e.Kind == skiff.SnapshotInstalled {
				installs[e.Group]++
			}
		}
		installed = len(installs)
		t.Logf("the restarted host caught up in %v (fake), %d groups by snapshot", time.Since(start), installed)
		if !ok {
			t.Fatalf("the restarted host did not catch up in every group within 2 minutes")
		}
		for i := 0; i < c.N(); i++ {
			if maxSend[i] > sends || maxRecv[i] > recvs {
				t.Errorf("host %d: %d sends and %d receives at once, caps %d and %d",
					i, maxSend[i], maxRecv[i], sends, recvs)
			}
		}
		if maxRecv[lag] < recvs {
			t.Errorf("the restarted host never received %d snapshots at once (%d): the caps were not exercised",
				recvs, maxRecv[lag])
		}
		// NB: a leader keeps the log a recently active follower needs when
		// it snapshots, so some groups catch up from the log.
		if installed < groups/2 {
			t.Errorf("only %d groups caught up by snapshot, want at least %d at once", installed, groups/2)
		}
		for g, n := range installs {
			if n != 1 {
				t.Errorf("group %d: %d installs, want 1", g, n)
			}
		}
		for _, g := range gs {
			c.WaitConverged(g)
		}
		// A receiver at its cap refuses an offer; the leader offers again
		// later. NB: the engine reports each refusal as SnapshotFailed.
		noFailures(t, c, func(e HostEvent) bool {
			return e.Kind == skiff.SnapshotFailed && strings.Contains(e.Err.Error(), "no free transfer slot")
		})
	})
}
