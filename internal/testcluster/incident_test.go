package testcluster

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/skiffdb/skiff"
	"github.com/skiffdb/skiff/statemachine"
)

// F2 (hashicorp/raft#697): a replica with a divergent, uncommitted tail
// (a leader cut off right after it appended proposals) gets a snapshot
// past that tail: the tail is discarded, one install, and its log does
// not grow beyond the leader's.
func TestDivergentTailDiscardedByOneSnapshotInstall(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := New(t, Config{Seed: 31, Group: compacting})
		old := c.WaitLeader(1)
		write(t, c, 1, "a", 10, value(1, 16))
		c.Isolate(old)
		// Proposals the cut-off leader appends but can never commit.
		h := c.Host(old)
		var wg sync.WaitGroup
		for j := 0; j < 5; j++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				ctx, cancel := context.WithTimeout(context.Background(), time.Second)
				defer cancel()
				h.Propose(ctx, 1, Set(fmt.Sprintf("div%d", j), []byte("x")))
			}()
		}
		wg.Wait()
		st, _ := c.Status(old, 1)
		if st.LastIndex <= st.Commit {
			t.Fatalf("the cut-off leader has no uncommitted tail: last %d commit %d", st.LastIndex, st.Commit)
		}
		t.Logf("divergent tail (%d, %d] on host %d", st.Commit, st.LastIndex, old)
		// The rest elect a leader and compact well past the tail.
		write(t, c, 1, "b", 100, value(2, 16))
		c.Heal()
		c.WaitConverged(1)
		for j := 0; j < 5; j++ {
			if v, _ := c.StaleRead(old, 1, fmt.Appendf(nil, "div%d", j)); v != nil {
				t.Fatalf("uncommitted div%d survived on host %d", j, old)
			}
		}
		if n := hostEvents(c, old, skiff.SnapshotInstalled, 1); n != 1 {
			t.Fatalf("host %d installed %d snapshots, want 1", old, n)
		}
		l, _ := c.Leader(1)
		lst, _ := c.Status(l, 1)
		ost, _ := c.Status(old, 1)
		if ost.LastIndex > lst.LastIndex {
			t.Fatalf("host %d's log ends at %d, past the leader's %d", old, ost.LastIndex, lst.LastIndex)
		}
		noFailures(t, c)
	})
}

// slowRestoreKV is a KV whose Restore takes restoreDelay of (fake) time
// while slow is set: a big state machine loading a snapshot.
type slowRestoreKV struct {
	*KV
	slow *atomic.Bool
}

const restoreDelay = 20 * time.Second

func (s slowRestoreKV) Restore(ctx context.Context, r io.Reader, files []statemachine.SnapshotFile) error {
	if s.slow.Load() {
		select {
		case <-time.After(restoreDelay):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return s.KV.Restore(ctx, r, files)
}

// F5 (NuRaft#121): applying a received snapshot takes 20 s, far longer
// than any election or heartbeat timeout; the install is acknowledged
// once and the follower then follows the log.
func TestSlowSnapshotRestoreInstalledOnceAndFollowerCatchesUp(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var slow atomic.Bool
		c := New(t, Config{Seed: 32, Group: compacting,
			StateMachine: func(g, r uint64) statemachine.StateMachine {
				return slowRestoreKV{KV: NewKV(g, r).(*KV), slow: &slow}
			}})
		c.WaitLeader(1)
		lag := 2
		stopBehind(c, lag)
		write(t, c, 1, "a", 100, value(1, 64))
		c.Restart(lag)
		slow.Store(true)
		start := time.Now()
		c.Eventually("the follower installed a snapshot", func() bool {
			return hostEvents(c, lag, skiff.SnapshotInstalled, 1) > 0
		})
		if d := time.Since(start); d < restoreDelay {
			t.Fatalf("install took %v, less than the restore delay %v", d, restoreDelay)
		}
		slow.Store(false)
		write(t, c, 1, "b", 10, value(2, 64))
		c.WaitConverged(1)
		if n := hostEvents(c, lag, skiff.SnapshotInstalled, 1); n != 1 {
			t.Fatalf("follower installed %d snapshots, want 1", n)
		}
		if n := sentTo(c, 1, c.ReplicaID(lag, 1)); n != 1 {
			t.Fatalf("%d snapshots offered to the follower, want 1", n)
		}
		noFailures(t, c)
	})
}

// latestSnapshotDir returns the newest published snapshot directory of
// group g on host i.
func latestSnapshotDir(t *testing.T, c *Cluster, i int, g skiff.GroupID) string {
	t.Helper()
	fs := c.FS(i)
	dir := fs.PathJoin(dataDir, "snapshots", fmt.Sprintf("%020d", g))
	names, err := fs.List(dir)
	if err != nil {
		t.Fatalf("list %s: %v", dir, err)
	}
	var pub []string
	for _, n := range names {
		if strings.HasPrefix(n, "snapshot-") && !strings.Contains(n, ".") {
			pub = append(pub, n)
		}
	}
	if len(pub) == 0 {
		t.Fatalf("no published snapshot in %s (%v)", dir, names)
	}
	slices.Sort(pub)
	return fs.PathJoin(dir, pub[len(pub)-1])
}

// waitSnapshotsSettled waits until every snapshot that the writes so
// far triggered is published: the group has applied everything
// everywhere (so every trigger has fired), then the bubble settles (so
// every save has finished); none may be left generating.
func waitSnapshotsSettled(t *testing.T, c *Cluster, i int, g skiff.GroupID) {
	t.Helper()
	c.WaitConverged(g)
	synctest.Wait()
	fs := c.FS(i)
	dir := fs.PathJoin(dataDir, "snapshots", fmt.Sprintf("%020d", g))
	names, err := fs.List(dir)
	if err != nil {
		t.Fatalf("list %s: %v", dir, err)
	}
	for _, n := range names {
		if strings.HasSuffix(n, ".generating") {
			t.Fatalf("host %d: snapshot %s still generating after the bubble settled", i, n)
		}
	}
}

// damage flips a byte of, truncates or deletes file path on host i.
func damage(t *testing.T, c *Cluster, i int, path, how string) {
	t.Helper()
	fs := c.FS(i)
	switch how {
	case "delete":
		if err := fs.Remove(path); err != nil {
			t.Fatal(err)
		}
		return
	}
	f, err := fs.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	data, err := io.ReadAll(f)
	f.Close()
	if err != nil || len(data) < 2 {
		t.Fatalf("read %s: %d bytes, %v", path, len(data), err)
	}
	switch how {
	case "flip":
		data[len(data)/2] ^= 0x40
	case "truncate":
		data = data[:len(data)/2]
	}
	w, err := fs.Create(path, "test")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := w.Sync(); err != nil {
		t.Fatal(err)
	}
	w.Close()
}

// F10 (canonical/raft#201, camunda#14594): the latest snapshot's data
// file of a stopped follower has a flipped byte, is truncated or is gone.
// On restart the damage is detected: the replica either refuses to start
// (loudly, naming the snapshot) or falls back; either way it ends up with
// the group's state once the leader re-sends (after a wipe when it
// refused), never with damaged data.
func TestDamagedSnapshotOnFollowerDetected(t *testing.T) {
	for _, how := range []string{"flip", "truncate", "delete"} {
		t.Run(how, func(t *testing.T) {
			var bug engineBug
			defer bug.skip(t)
			synctest.Test(t, func(t *testing.T) {
				c := New(t, Config{Seed: 33, Group: compacting})
				c.WaitLeader(1)
				write(t, c, 1, "a", 70, value(1, 256))
				c.WaitConverged(1)
				f := (c.WaitLeader(1) + 1) % c.N()
				c.Stop(f)
				damage(t, c, f, c.FS(f).PathJoin(latestSnapshotDir(t, c, f, 1), "data"), how)
				err := c.TryRestart(f)
				var unnamed error
				if err != nil {
					t.Logf("restart refused: %v", err)
					if !strings.Contains(err.Error(), "snapshot") {
						unnamed = err
					}
					if h := c.Host(f); h != nil {
						c.Stop(f)
					}
					c.Wipe(f)
					c.Restart(f)
				} else {
					t.Logf("restart succeeded (fell back)")
				}
				write(t, c, 1, "b", 30, value(2, 256))
				c.WaitConverged(1)
				if unnamed != nil {
					bug.found("snapshot.Open quarantines a truncated or deleted latest snapshot "+
						"(a warning in the log only), and openNode then restores the previous snapshot "+
						"(index 40) below the compacted log without consulting Store.Skipped (the gap check "+
						"NewExecutor would do runs later), so StartGroup fails (seed 33) with %q: it refuses, but its "+
						"error names neither the damaged snapshot nor snapshot.ErrNoValidSnapshot", unnamed)
				}
			})
		})
	}
}

// F10 on the sender: the leader's copy of the snapshot a follower needs
// is damaged. The follower's checksums catch it, and the follower still
// catches up from a later snapshot as writes continue.
func TestDamagedSnapshotOnLeaderNotInstalled(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := New(t, Config{Seed: 34, Group: compacting})
		l := c.WaitLeader(1)
		lag := (l + 1) % c.N()
		stopBehind(c, lag)
		write(t, c, 1, "a", 70, value(1, 256))
		waitSnapshotsSettled(t, c, l, 1)
		bad := latestSnapshotDir(t, c, l, 1)
		var badIndex uint64
		if _, err := fmt.Sscanf(c.FS(l).PathBase(bad), "snapshot-%d", &badIndex); err != nil {
			t.Fatalf("snapshot dir %s: %v", bad, err)
		}
		damage(t, c, l, c.FS(l).PathJoin(bad, "data"), "flip")
		c.Restart(lag)
		// No write until the follower has refused the damaged snapshot:
		// it is then the only one the leader can offer.
		if !c.poll(WaitTimeout, func() bool { return hostEvents(c, lag, skiff.SnapshotFailed, 1) > 0 }) {
			lst, _ := c.Status(l, 1)
			fst, _ := c.Status(lag, 1)
			t.Fatalf("the follower never reported the damaged snapshot %d: leader first %d last %d snap %d transfers %+v; follower applied %d last %d snap %d transfers %+v; offers %d, events %v",
				badIndex, lst.FirstIndex, lst.LastIndex, lst.Snapshot.Index, lst.Transfers, fst.Applied, fst.LastIndex, fst.Snapshot.Index, fst.Transfers,
				sentTo(c, 1, c.ReplicaID(lag, 1)), c.Events())
		}
		stop := writers(c, 1, 1, value(2, 16))
		c.Eventually("the follower installed a snapshot", func() bool {
			return hostEvents(c, lag, skiff.SnapshotInstalled, 1) > 0
		})
		stop()
		c.WaitConverged(1)
		t.Logf("follower: %d failed, %d installed", hostEvents(c, lag, skiff.SnapshotFailed, 1),
			hostEvents(c, lag, skiff.SnapshotInstalled, 1))
		for _, e := range c.Events() {
			if e.Host == lag && e.Kind == skiff.SnapshotInstalled && e.Index <= badIndex {
				t.Errorf("follower installed snapshot %d; the damaged one was %d", e.Index, badIndex)
			}
		}
	})
}

// F12 (etcd#3777): snapshot generation and rate-limited transfers of
// several groups at once cause no election in a healthy cluster: terms
// and leaders stay as they were.
func TestSnapshotTransfersCauseNoElections(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		groups := []skiff.GroupID{1, 2, 3, 4}
		c := New(t, Config{Seed: 35, Groups: groups, Group: compacting,
			Host: func(hc *skiff.HostConfig) { hc.MaxSnapshotSendBytesPerSec = 1 << 20 }})
		lag := 2
		stopBehind(c, lag)
		type view struct {
			leader int
			term   uint64
		}
		before := map[skiff.GroupID]view{}
		for _, g := range groups {
			c.WaitLeader(g)
			write(t, c, g, "big", 24, value(int(g), 128<<10))
			l := c.WaitLeader(g)
			st, _ := c.Status(l, g)
			before[g] = view{l, st.Term}
		}
		c.Restart(lag)
		for _, g := range groups {
			c.WaitConverged(g)
			if n := hostEvents(c, lag, skiff.SnapshotInstalled, g); n != 1 {
				t.Errorf("group %d: %d installs on host %d, want 1", g, n, lag)
			}
		}
		for _, g := range groups {
			l, _ := c.Leader(g)
			for i := 0; i < c.N(); i++ {
				st, _ := c.Status(i, g)
				if l != before[g].leader || st.Term != before[g].term {
					t.Errorf("group %d: host %d sees term %d (leader host %d), was %d (host %d)",
						g, i, st.Term, l, before[g].term, before[g].leader)
				}
			}
		}
		noFailures(t, c)
	})
}
