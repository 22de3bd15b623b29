package testcluster

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/skiffdb/skiff"
)

// A proposal in a client session is applied once even when the leader
// crashes around it and the client retries the same SeriesID on the new
// leader: sometimes before the entry committed (the retry may be the
// first copy), sometimes after it was applied everywhere (the retry is a
// second copy in the log, answered from the session's cache).
func TestSessionRetryAcrossLeaderCrashAppliesOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := New(t, Config{Seed: 51, Group: compacting})
		c.WaitLeader(1)
		const client = 7
		c.RegisterSession(1, client)
		const series = 16
		results := make(map[uint64]uint64)
		for s := uint64(1); s <= series; s++ {
			sess := skiff.Session{ClientID: client, SeriesID: s, RespondedTo: s - 1}
			cmd := Set(fmt.Sprintf("s%d", s), []byte(strconv.FormatUint(s, 10)))
			if s%3 == 0 {
				l := c.WaitLeader(1)
				first := make(chan error, 1)
				h := c.Host(l)
				go func() {
					ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
					defer cancel()
					_, err := h.ProposeSession(ctx, 1, sess, cmd)
					first <- err
				}()
				if s%2 == 0 {
					// Crash only once the first copy is applied everywhere.
					before, _ := c.Status(l, 1)
					c.WaitApplied(1, before.Applied+1)
				}
				c.Crash(l)
				t.Logf("series %d: first attempt on crashed host %d: %v", s, l, <-first)
				c.Restart(l)
			}
			res, err := c.TryProposeSession(1, sess, cmd)
			if err != nil {
				t.Fatalf("series %d: %v", s, err)
			}
			results[s] = res.Value
		}
		c.WaitConverged(1)
		for i := 0; i < c.N(); i++ {
			v, err := c.StaleRead(i, 1, []byte(QueryCount))
			if err != nil || string(v) != strconv.Itoa(series) {
				t.Errorf("host %d applied %s commands (%v), want %d: a retry was applied twice", i, v, err, series)
			}
		}
		// Each series' result is the count when it was applied: 1..16 in
		// order, whichever attempt returned it.
		for s := uint64(1); s <= series; s++ {
			if results[s] != s {
				t.Errorf("series %d: result %d, want %d", s, results[s], s)
			}
		}
		noFailures(t, c)
	})
}

// A retry of a series the client already acknowledged is refused, and an
// unregistered client is refused, without applying anything.
func TestSessionRejectsExpiredAndUnknown(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := New(t, Config{Seed: 52})
		c.WaitLeader(1)
		c.RegisterSession(1, 9)
		for s := uint64(1); s <= 3; s++ {
			if _, err := c.TryProposeSession(1, skiff.Session{ClientID: 9, SeriesID: s, RespondedTo: s - 1},
				Set("k", []byte("v"))); err != nil {
				t.Fatal(err)
			}
		}
		_, err := c.TryProposeSession(1, skiff.Session{ClientID: 9, SeriesID: 2, RespondedTo: 3}, Set("k", []byte("x")))
		if !errors.Is(err, skiff.ErrSessionExpired) {
			t.Fatalf("expired series: %v, want ErrSessionExpired", err)
		}
		_, err = c.TryProposeSession(1, skiff.Session{ClientID: 10, SeriesID: 1}, Set("k", []byte("y")))
		if !errors.Is(err, skiff.ErrSessionNotFound) {
			t.Fatalf("unknown client: %v, want ErrSessionNotFound", err)
		}
		c.WaitConverged(1)
		if v, _ := c.StaleRead(0, 1, []byte("k")); string(v) != "v" {
			t.Fatalf("k = %q: a refused proposal was applied", v)
		}
	})
}

// Power cuts at random points under writes, one host at a time, each
// dropping a random share of its unsynced data: after the restarts every
// acknowledged write is on every replica ("nothing acknowledged is lost").
func TestRandomCrashesUnderWritesLoseNoAcknowledgedWrite(t *testing.T) {
	var bug engineBug
	defer bug.skip(t)
	synctest.Test(t, func(t *testing.T) {
		c := New(t, Config{Seed: 53, Group: compacting})
		randomCrashes(t, c, rand.New(rand.NewPCG(53, 1)), &bug)
	})
}

// The same power cuts on a network that delivers at once. NB: about one
// run in fifty then meets the livelock randomCrashes describes, which
// keeps the synctest bubble busy so that fake time stops and the test
// hangs; set SKIFF_TEST_LIVELOCK=1 to run 200 seeds, with a watchdog that
// prints the stuck cluster and exits after 20 s of real time.
func TestRandomCrashesOnInstantNetwork(t *testing.T) {
	if os.Getenv("SKIFF_TEST_LIVELOCK") == "" {
		t.Skip("engine bug: after power cuts (Crash or Kill alike) the leader's Match for a restarted " +
			"follower can exceed the follower's last index, and the pair then livelocks: seed 82 of " +
			"this test, leader replica 3 log [182, 193] sends MsgReplicate(index 186, logterm 2, 7 " +
			"entries) to replica 1 (log [162, 184]), which rejects with hint 184; in StateProbe " +
			"tracker.MaybeDecrTo sets Next = max(min(186, 185), Match+1) = 187 (Match = 186), so the " +
			"leader resends the same probe at once, for ever (tens of thousands of batches per " +
			"second; in seed 53 the leader had even compacted to 479 past the follower's 476). The " +
			"clamp is right only if acks are durable: the follower acknowledged entries or a snapshot " +
			"(up to 186) that its restart did not find; seed 53 does the same with Kill in place of " +
			"Crash, which keeps every written byte, so the ack went out before the write. With instant delivery this keeps the " +
			"synctest bubble busy and hangs the test (about one seed in 40): set " +
			"SKIFF_TEST_LIVELOCK=1 to reproduce (a watchdog prints the stuck cluster)")
	}
	var current atomic.Pointer[Cluster]
	var progress atomic.Int64
	done := make(chan struct{})
	defer close(done)
	go watchdog(&current, &progress, done)
	for seed := uint64(1); seed <= 200; seed++ {
		var bug engineBug
		synctest.Test(t, func(t *testing.T) {
			c := New(t, Config{Seed: int64(seed), Group: compacting})
			c.Network().SetDelay(0, 0)
			current.Store(c)
			progress.Add(1)
			randomCrashes(t, c, rand.New(rand.NewPCG(seed, 1)), &bug)
			current.Store(nil)
		})
		bug.skip(t)
	}
}

// watchdog runs outside the bubble: if a run makes no progress for 20 s
// of real time, it prints the cluster's state and exits the process (a
// busy bubble cannot be stopped from outside).
func watchdog(current *atomic.Pointer[Cluster], progress *atomic.Int64, done chan struct{}) {
	last, since := int64(-1), time.Now()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-done:
			return
		case <-tick.C:
		}
		if p := progress.Load(); p != last {
			last, since = p, time.Now()
			continue
		}
		c := current.Load()
		if c == nil || time.Since(since) < 20*time.Second {
			continue
		}
		fmt.Fprintf(os.Stderr, "livelock in run %d: %s\n", last, stuckBehindCompaction(c, 1))
		for i := 0; i < c.N(); i++ {
			st, err := c.Status(i, 1)
			fmt.Fprintf(os.Stderr, "  host %d: replica %d term %d leader %d log [%d, %d] applied %d snapshot %d transfers %v (%v)\n",
				i, st.ReplicaID, st.Term, st.Leader, st.FirstIndex, st.LastIndex, st.Applied, st.Snapshot.Index, st.Transfers, err)
		}
		os.Exit(3)
	}
}

// randomCrashes cuts the power of a random host at random points under
// writes, twelve times, restarting it each time, then checks that every
// acknowledged write is on every replica.
func randomCrashes(t *testing.T, c *Cluster, rng *rand.Rand, bug *engineBug) {
	c.WaitLeader(1)
	stop := writers(c, 1, 3, value(1, 100))
	for round := 0; round < 12; round++ {
		<-time.After(time.Duration(10+rng.IntN(400)) * time.Millisecond)
		victim := rng.IntN(c.N())
		c.Crash(victim)
		<-time.After(time.Duration(rng.IntN(300)) * time.Millisecond)
		if err := c.TryRestart(victim); err != nil {
			t.Fatalf("round %d: host %d does not restart after a power cut: %v", round, victim, err)
		}
	}
	acked := stop()
	if _, err := c.TryWaitConverged(1); err != nil {
		if stuck := stuckBehindCompaction(c, 1); stuck != "" {
			bug.found("a restarted follower whose log ends below the leader's first index gets no "+
				"snapshot: no transfer, no SnapshotSent, and leader and follower exchange message "+
				"batches with no pause (with instant delivery, tens of thousands per second of real "+
				"time, which keeps the synctest bubble busy forever; seen about once in 50 runs of "+
				"seed 53, with Crash and with Kill alike, so not lost unsynced data): %s", stuck)
			return
		}
		t.Fatal(err)
	}
	t.Logf("%d acknowledged writes across 12 power cuts", len(acked))
	// Enough writes that the check means something (the writers wait
	// through every election the cuts cause).
	if len(acked) < 20 {
		t.Fatalf("only %d writes acknowledged", len(acked))
	}
	for i := 0; i < c.N(); i++ {
		for _, k := range acked {
			if v, _ := c.StaleRead(i, 1, []byte(k)); v == nil {
				t.Fatalf("host %d lost acknowledged write %s", i, k)
			}
		}
	}
	noFailures(t, c)
}

// Linearizable reads on followers see every acknowledged write, even
// when the network delays messages so that followers apply late.
func TestFollowerReadsSeeAcknowledgedWrites(t *testing.T) {
	for _, lease := range []bool{false, true} {
		t.Run(fmt.Sprintf("lease=%v", lease), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				c := New(t, Config{Seed: 54, Group: func(gc *skiff.GroupConfig) { gc.LeaseRead = lease }})
				c.WaitLeader(1)
				c.Network().SetDelay(time.Millisecond, 8*time.Millisecond)
				stale := 0
				for j := 1; j <= 60; j++ {
					want := strconv.Itoa(j)
					c.Propose(1, Set("x", []byte(want)))
					l, _ := c.Leader(1)
					f := (l + 1 + j%2) % c.N()
					if v, _ := c.StaleRead(f, 1, []byte("x")); string(v) != want {
						stale++
					}
					v, err := c.Read(f, 1, []byte("x"))
					if err != nil || string(v) != want {
						t.Fatalf("write %d: follower host %d read %q (%v)", j, f, v, err)
					}
				}
				// The check means something only if followers lag.
				t.Logf("%d of 60 stale reads on followers were behind", stale)
				if stale == 0 {
					t.Fatal("followers never lagged: the delay did not take")
				}
			})
		})
	}
}

// The on-disk state machine: a replica whose data is current when it
// restarts is opened at its durable index and never restored from a
// snapshot, after a clean stop and after a power cut.
func TestOnDiskStateMachineRestartsWithoutRestore(t *testing.T) {
	for _, crash := range []bool{false, true} {
		t.Run(fmt.Sprintf("crash=%v", crash), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				c := New(t, Config{Seed: 55, OnDisk: true, Group: compacting})
				c.WaitLeader(1)
				write(t, c, 1, "a", 50, value(1, 64))
				c.WaitConverged(1)
				i := 1
				st, _ := c.Status(i, 1)
				if st.Snapshot.Index == 0 {
					t.Fatal("no snapshot taken: the restart would not choose between snapshot and data")
				}
				index := c.StateMachine(i, 1).(*OnDiskKV).Index()
				if crash {
					c.Crash(i)
				} else {
					c.Stop(i)
				}
				c.Restart(i)
				sm := c.StateMachine(i, 1).(*OnDiskKV)
				t.Logf("snapshot %d, state machine at %d, opened at %d", st.Snapshot.Index, index, sm.Opened())
				if !crash && sm.Opened() != index {
					t.Errorf("opened at %d, want %d (clean stop)", sm.Opened(), index)
				}
				if sm.Opened() < st.Snapshot.Index {
					t.Errorf("opened at %d, below snapshot %d: the data was not synced before the snapshot",
						sm.Opened(), st.Snapshot.Index)
				}
				write(t, c, 1, "b", 5, value(2, 64))
				c.WaitConverged(1)
				if n := sm.Restores(); n != 0 {
					t.Errorf("the current on-disk state machine was restored %d times", n)
				}
				noFailures(t, c)
			})
		})
	}
}

// An on-disk replica that fell behind the compacted log is restored once
// from a full data snapshot the leader generates for it.
func TestOnDiskLaggingReplicaRestoredFromGeneratedSnapshot(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := New(t, Config{Seed: 56, OnDisk: true, Group: compacting})
		c.WaitLeader(1)
		lag := 2
		stopBehind(c, lag)
		write(t, c, 1, "a", 100, value(1, 64))
		c.Restart(lag)
		c.WaitConverged(1)
		if n := c.StateMachine(lag, 1).(*OnDiskKV).Restores(); n != 1 {
			t.Fatalf("lagging on-disk replica restored %d times, want 1", n)
		}
		noFailures(t, c)
	})
}

// F6 (consul#3362, etcd#8082): a power cut that keeps no unsynced data,
// right after a replica took its first snapshot and compacted its log:
// the replica restarts from that snapshot (the snapshot directories a
// fresh host creates must be durable too).
func TestPowerCutRightAfterFirstSnapshotKeepsIt(t *testing.T) {
	var bug engineBug
	defer bug.skip(t)
	synctest.Test(t, func(t *testing.T) {
		c := New(t, Config{Seed: 57, Group: compacting})
		c.WaitLeader(1)
		// Write until host 1 has snapshotted and compacted (a snapshot
		// keeps the entries a recently active follower still needs).
		var st skiff.GroupStatus
		for round := 0; st.Snapshot.Index == 0 || st.FirstIndex <= 1; round++ {
			if round == 10 {
				t.Fatalf("host 1 has no snapshot or did not compact: %+v", st)
			}
			write(t, c, 1, fmt.Sprintf("r%d-", round), 20, value(1, 64))
			c.WaitConverged(1)
			st, _ = c.Status(1, 1)
		}
		c.crash(1, 0)
		if err := c.TryRestart(1); err != nil {
			if strings.Contains(err.Error(), "no valid snapshot") {
				bug.found("snapshot.mkdirDurable (store.go) creates <Dir>/snapshots/<group> "+
					"with MkdirAll but fsyncs only the group directory's parent, so the new "+
					"\"snapshots\" entry in <Dir> is never synced; a power cut after the first snapshot "+
					"(log compacted to it, seed 57, crash clone keeping 0%% of unsynced data) loses "+
					"every snapshot and the replica cannot start: %v", err)
				return
			}
			t.Fatalf("restart after a power cut: %v", err)
		}
		write(t, c, 1, "b", 5, value(2, 64))
		c.WaitConverged(1)
	})
}

// stuckBehindCompaction describes a replica of g whose log ends before
// the leader's first index while no snapshot transfer runs ("" if none).
func stuckBehindCompaction(c *Cluster, g skiff.GroupID) string {
	l, ok := c.Leader(g)
	if !ok {
		return ""
	}
	lst, err := c.Status(l, g)
	if err != nil || len(lst.Transfers) > 0 {
		return ""
	}
	for i := 0; i < c.N(); i++ {
		st, err := c.Status(i, g)
		if err != nil || i == l || st.LastIndex+1 >= lst.FirstIndex || len(st.Transfers) > 0 {
			continue
		}
		return fmt.Sprintf("leader host %d (replica %d) log [%d, %d] snapshot %d; host %d (replica %d) log [%d, %d] applied %d; network %+v",
			l, lst.ReplicaID, lst.FirstIndex, lst.LastIndex, lst.Snapshot.Index,
			i, st.ReplicaID, st.FirstIndex, st.LastIndex, st.Applied, c.Network().Stats())
	}
	return ""
}
