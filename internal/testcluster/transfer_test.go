package testcluster

import (
	"fmt"
	"testing"
	"testing/synctest"

	"github.com/skiffdb/skiff"
)

// slowTransfers is a cluster config whose snapshots are sent at 1 MiB/s,
// so that the 7 MiB snapshot of lagBehindBigState takes 7 fake seconds.
func slowTransfers(seed int64) Config {
	return Config{Seed: seed, Group: compacting,
		Host: func(hc *skiff.HostConfig) { hc.MaxSnapshotSendBytesPerSec = 1 << 20 }}
}

// lagBehindBigState stops host lag, writes 8 MiB of state past the
// compaction point (the snapshot at index 60 holds about 7 MiB) and
// restarts it: it then needs a snapshot. NB: a transfer reports progress
// per 1 MiB chunk (snapshot.DefaultChunkSize), so a snapshot of a few
// chunks cannot show finer steps.
func lagBehindBigState(t *testing.T, c *Cluster, lag int) {
	t.Helper()
	c.WaitLeader(1)
	stopBehind(c, lag)
	write(t, c, 1, "big", 64, value(1, 128<<10))
	c.Restart(lag)
}

// chunk is the snapshot transfer's chunk size (snapshot.DefaultChunkSize).
const chunk = 1 << 20

// receiving returns host i's receiving transfer of group 1, if any.
func receiving(c *Cluster, i int) (skiff.Transfer, bool) {
	st, err := c.Status(i, 1)
	if err != nil {
		return skiff.Transfer{}, false
	}
	for _, tr := range st.Transfers {
		if !tr.Sending {
			return tr, true
		}
	}
	return skiff.Transfer{}, false
}

// waitReceived waits until host i has received at least frac of its
// snapshot transfer of group 1 and returns the progress seen then.
func waitReceived(c *Cluster, i int, frac float64) skiff.Transfer {
	c.t.Helper()
	var seen skiff.Transfer
	c.Eventually(fmt.Sprintf("host %d received %.0f%% of a snapshot", i, frac*100), func() bool {
		tr, ok := receiving(c, i)
		if !ok || tr.BytesTotal == 0 || float64(tr.BytesDone) < frac*float64(tr.BytesTotal) {
			return false
		}
		seen = tr
		return true
	})
	return seen
}

// waitLastChunk waits until host i's snapshot transfer of group 1 is
// within two chunks of its end (a transfer that ends with a short chunk
// finishes at once after the last full one, too fast to poll).
func waitLastChunk(c *Cluster, i int) skiff.Transfer {
	c.t.Helper()
	var seen, last skiff.Transfer
	ok := c.poll(WaitTimeout, func() bool {
		tr, ok := receiving(c, i)
		if ok {
			last = tr
		}
		if !ok || tr.BytesTotal == 0 || tr.BytesDone+2*chunk <= tr.BytesTotal {
			return false
		}
		seen = tr
		return true
	})
	if !ok {
		c.t.Fatalf("host %d never had less than two chunks to receive: last progress seen %+v, %d installs",
			i, last, hostEvents(c, i, skiff.SnapshotInstalled, 1))
	}
	return seen
}

// The leader crashes while it sends a snapshot; the replica that was
// receiving it gets one from the new leader and the group converges.
func TestLeaderCrashMidTransferNewLeaderCompletesIt(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := New(t, slowTransfers(21))
		lag := 2
		lagBehindBigState(t, c, lag)
		old := c.WaitLeader(1)
		seen := waitReceived(c, lag, 0.3)
		t.Logf("crash the leader (host %d) at %d of %d bytes", old, seen.BytesDone, seen.BytesTotal)
		c.Crash(old)
		now := c.WaitLeader(1)
		if now == old || now == lag {
			t.Fatalf("new leader is host %d (old %d, lagging %d)", now, old, lag)
		}
		c.Eventually("the lagging replica installed a snapshot", func() bool {
			return hostEvents(c, lag, skiff.SnapshotInstalled, 1) > 0
		})
		if n := hostEvents(c, now, skiff.SnapshotSent, 1); n == 0 {
			t.Fatalf("the new leader (host %d) sent no snapshot", now)
		}
		c.Restart(old)
		write(t, c, 1, "after", 5, value(2, 8))
		c.WaitConverged(1)
		if n := hostEvents(c, lag, skiff.SnapshotInstalled, 1); n != 1 {
			t.Fatalf("lagging replica installed %d snapshots, want 1", n)
		}
		// The transfer from the crashed leader failed on the receiver:
		// that is the one failure expected.
		noFailures(t, c, func(e HostEvent) bool { return e.Host == lag && e.Kind == skiff.SnapshotFailed })
	})
}

// F3 (etcd#10225, dgraph#2707): kill -9 of the follower at 0, 50, 99 and
// 100 % of a snapshot receive; after a restart it catches up and the
// leader is not left waiting on the dead transfer. "99 %" is as late as
// 1 MiB chunks allow: less than two chunks left.
func TestFollowerKilledDuringSnapshotReceiveCatchesUp(t *testing.T) {
	for _, frac := range []float64{0, 0.5, 0.99, 1} {
		t.Run(fmt.Sprintf("at%.0f%%", frac*100), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				c := New(t, slowTransfers(22))
				lag := 1
				lagBehindBigState(t, c, lag)
				switch frac {
				case 0.99:
					seen := waitLastChunk(c, lag)
					t.Logf("kill at %d of %d bytes (%s)", seen.BytesDone, seen.BytesTotal, seen.Phase)
				case 0, 0.5:
					seen := waitReceived(c, lag, frac)
					t.Logf("kill at %d of %d bytes (%s)", seen.BytesDone, seen.BytesTotal, seen.Phase)
				default:
					c.Eventually("the follower received the snapshot", func() bool {
						return hostEvents(c, lag, skiff.SnapshotReceived, 1) > 0
					})
				}
				c.Kill(lag)
				c.Restart(lag)
				c.WaitConverged(1)
				// The leader still replicates to it: no stuck "snapshot
				// pending" state.
				write(t, c, 1, "after", 30, value(2, 8))
				c.WaitConverged(1)
				noFailures(t, c)
			})
		})
	}
}

// A follower restarted in the middle of a receive resumes the transfer:
// the bytes moved in all stay below 1.15 × the snapshot's size.
func TestFollowerRestartedMidReceiveResumes(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := New(t, slowTransfers(23))
		lag := 2
		lagBehindBigState(t, c, lag)
		before := waitReceived(c, lag, 0.5)
		c.Kill(lag)
		c.Restart(lag)
		// The first progress the restarted receiver reports says where it
		// resumed (to within the chunk that may complete before the first
		// poll).
		var first skiff.Transfer
		c.Eventually("the restarted follower receives again", func() bool {
			tr, ok := receiving(c, lag)
			if ok && tr.BytesTotal > 0 {
				first = tr
				return true
			}
			return hostEvents(c, lag, skiff.SnapshotInstalled, 1) > 0
		})
		c.WaitConverged(1)
		if first.BytesTotal == 0 {
			t.Fatal("the restarted follower installed without a visible transfer")
		}
		moved := before.BytesDone + (first.BytesTotal - first.BytesDone)
		t.Logf("received %d of %d before the restart; resumed at %d of %d; moved %d (%.2f×)",
			before.BytesDone, before.BytesTotal, first.BytesDone, first.BytesTotal, moved,
			float64(moved)/float64(first.BytesTotal))
		if float64(moved) > 1.15*float64(first.BytesTotal) {
			t.Errorf("moved %d bytes for a %d-byte snapshot: the transfer did not resume", moved, first.BytesTotal)
		}
		if n := hostEvents(c, lag, skiff.SnapshotInstalled, 1); n != 1 {
			t.Fatalf("follower installed %d snapshots, want 1", n)
		}
		noFailures(t, c)
	})
}
