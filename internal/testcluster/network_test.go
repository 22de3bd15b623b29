package testcluster

import (
	"testing"
	"testing/synctest"
	"time"
)

// A leader cut off in a minority of a five-host cluster, on a lossy,
// duplicating, reordering network: the majority elects a new leader and
// keeps committing, the old one commits nothing alone, and after the
// partition heals all five converge on the majority's history.
func TestMinorityPartitionOnLossyNetworkConvergesAfterHeal(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := New(t, Config{Hosts: 5, Seed: 71, Group: compacting})
		net := c.Network()
		net.SetDropRate(0.05)
		net.SetDuplicateRate(0.05)
		net.SetDelay(time.Millisecond, 5*time.Millisecond)
		net.SetReorder(true)
		old := c.WaitLeader(1)
		write(t, c, 1, "a", 20, value(1, 32))
		other := (old + 1) % c.N()
		var minority, majority []int
		for i := 0; i < c.N(); i++ {
			if i == old || i == other {
				minority = append(minority, i)
			} else {
				majority = append(majority, i)
			}
		}
		c.Partition(minority, majority)
		before, _ := c.Status(old, 1)
		stop := writers(c, 1, 2, value(2, 32))
		c.Eventually("the majority elects its own leader", func() bool {
			l, ok := c.Leader(1)
			return ok && l != old && l != other
		})
		<-time.After(2 * time.Second)
		after, _ := c.Status(old, 1)
		if after.Commit != before.Commit {
			t.Errorf("the cut-off leader committed %d → %d without a majority", before.Commit, after.Commit)
		}
		c.Heal()
		acked := stop()
		net.SetDropRate(0)
		c.WaitConverged(1)
		if len(acked) == 0 {
			t.Fatal("no write was acknowledged during the partition")
		}
		for _, k := range acked {
			if v, _ := c.StaleRead(old, 1, []byte(k)); v == nil {
				t.Fatalf("the old leader lacks acknowledged write %s after the heal", k)
			}
		}
		st := net.Stats()
		t.Logf("network: %+v", st)
		if st.Dropped == 0 || st.Duplicated == 0 {
			t.Errorf("faults did not happen: %+v", st)
		}
		noFailures(t, c)
	})
}
