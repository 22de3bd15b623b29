package testcluster

import (
	"testing"
	"testing/synctest"

	"github.com/skiffdb/skiff"
)

// compacting makes groups snapshot every 20 entries and keep 5 below.
func compacting(gc *skiff.GroupConfig) {
	gc.SnapshotEntries = 20
	gc.CompactionOverhead = 5
}

// F1 (hashicorp/raft#212): a follower that was down while the leader
// compacted past its last index gets exactly one snapshot, then the log.
func TestFollowerDownPastCompactionGetsOneSnapshotThenLog(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := New(t, Config{Seed: 11, Group: compacting})
		c.WaitLeader(1)
		write(t, c, 1, "a", 10, value(1, 16))
		lag := 2
		stopBehind(c, lag)
		write(t, c, 1, "b", 200, value(2, 16))
		l := c.WaitLeader(1)
		st, err := c.Status(l, 1)
		if err != nil {
			t.Fatal(err)
		}
		if st.FirstIndex <= 12 {
			t.Fatalf("leader's log not compacted past the follower: first index %d", st.FirstIndex)
		}
		c.Restart(lag)
		c.WaitConverged(1)
		if n := hostEvents(c, lag, skiff.SnapshotInstalled, 1); n != 1 {
			t.Fatalf("follower installed %d snapshots, want 1", n)
		}
		if n := sentTo(c, 1, c.ReplicaID(lag, 1)); n != 1 {
			t.Fatalf("leader offered %d snapshots to the follower, want 1", n)
		}
		// After the install the follower follows the log: 10 more entries
		// (fewer than SnapshotEntries apart) need no second snapshot.
		write(t, c, 1, "c", 10, value(3, 16))
		c.WaitConverged(1)
		if n := hostEvents(c, lag, skiff.SnapshotInstalled, 1); n != 1 {
			t.Fatalf("follower installed %d snapshots after catching up, want 1", n)
		}
		noFailures(t, c)
	})
}

// A lagging replica catches up by snapshot while writes continue: the
// leader keeps taking newer snapshots, yet the replica gets one transfer.
func TestLaggingReplicaCatchesUpUnderSustainedWritesWithOneTransfer(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := New(t, Config{Seed: 12, Group: compacting})
		c.WaitLeader(1)
		lag := 1
		stopBehind(c, lag)
		write(t, c, 1, "a", 150, value(1, 64))
		stop := writers(c, 1, 2, value(2, 64))
		c.Restart(lag)
		c.Eventually("the lagging replica installed a snapshot", func() bool {
			return hostEvents(c, lag, skiff.SnapshotInstalled, 1) > 0
		})
		// Keep writing past a few more snapshot points after the install.
		write(t, c, 1, "b", 60, value(3, 64))
		acked := stop()
		c.WaitConverged(1)
		if len(acked) == 0 {
			t.Fatal("no background write was acknowledged")
		}
		if n := hostEvents(c, lag, skiff.SnapshotInstalled, 1); n != 1 {
			t.Fatalf("lagging replica installed %d snapshots, want 1", n)
		}
		if n := sentTo(c, 1, c.ReplicaID(lag, 1)); n != 1 {
			t.Fatalf("%d snapshots offered to the lagging replica, want 1", n)
		}
		noFailures(t, c)
	})
}

// F4 (consul#6186, etcd#4055): a snapshot whose transfer takes longer
// than the leader keeps snapshots (one retained, a new one every 20
// entries under sustained writes) still completes in one transfer.
func TestSlowTransferOutlivingRetentionCompletesInOneTransfer(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := New(t, Config{Seed: 13,
			Group: func(gc *skiff.GroupConfig) {
				compacting(gc)
				gc.SnapshotsRetained = 1
			},
			Host: func(hc *skiff.HostConfig) { hc.MaxSnapshotSendBytesPerSec = 128 << 10 },
		})
		c.WaitLeader(1)
		lag := 2
		stopBehind(c, lag)
		// About 512 KiB of state: 4 s of transfer at 128 KiB/s.
		write(t, c, 1, "big", 32, value(1, 16<<10))
		stop := writers(c, 1, 2, value(2, 32))
		c.Restart(lag)
		c.Eventually("the transfer started", func() bool {
			st, err := c.Status(lag, 1)
			return err == nil && len(st.Transfers) > 0
		})
		c.Eventually("the lagging replica installed a snapshot", func() bool {
			return hostEvents(c, lag, skiff.SnapshotInstalled, 1) > 0
		})
		acked := stop()
		c.WaitConverged(1)
		l, _ := c.Leader(1)
		st, _ := c.Status(l, 1)
		t.Logf("%d background writes during the transfer; leader snapshot %d, %d snapshots created",
			len(acked), st.Snapshot.Index, c.CountEvents(skiff.SnapshotCreated, 1))
		if c.CountEvents(skiff.SnapshotCreated, 1) < 3*2 {
			t.Fatalf("only %d snapshots created: the retention window was not outlived",
				c.CountEvents(skiff.SnapshotCreated, 1))
		}
		if n := hostEvents(c, lag, skiff.SnapshotInstalled, 1); n != 1 {
			t.Fatalf("lagging replica installed %d snapshots, want 1", n)
		}
		if n := sentTo(c, 1, c.ReplicaID(lag, 1)); n != 1 {
			t.Fatalf("%d snapshots offered to the lagging replica, want 1", n)
		}
		noFailures(t, c)
	})
}
