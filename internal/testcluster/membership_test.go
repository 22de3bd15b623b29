package testcluster

import (
	"context"
	"maps"
	"slices"
	"testing"
	"testing/synctest"
	"time"

	"github.com/skiffdb/skiff"
	"github.com/skiffdb/skiff/statemachine"
)

func memberIDs(m map[skiff.ReplicaID]string) []skiff.ReplicaID {
	return slices.Sorted(maps.Keys(m))
}

// A removed replica restarts from its own disk, whose snapshot and log
// still list it as a voter: it never rejoins, never leads, never
// disturbs the group's term, and receives nothing written after its
// removal. A replica added later on the same host (new ID, new disk)
// joins with a membership that does not contain it.
func TestRemovedReplicaNeverComesBackFromStaleSnapshot(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := New(t, Config{Seed: 41, Group: compacting})
		c.WaitLeader(1)
		write(t, c, 1, "a", 30, value(1, 16))
		gone := 2
		c.WaitApplied(1, 30)
		if st, _ := c.Status(gone, 1); st.Snapshot.Index == 0 {
			t.Fatal("the replica to remove has no snapshot")
		}
		c.Stop(gone)
		c.RemoveReplica(1, gone)
		write(t, c, 1, "b", 50, value(2, 16))
		l := c.WaitLeader(1)
		st, _ := c.Status(l, 1)
		term, want := st.Term, []skiff.ReplicaID{1, 2}
		if got := memberIDs(st.Members); !slices.Equal(got, want) {
			t.Fatalf("members after the removal: %v, want %v", got, want)
		}

		c.Restart(gone)
		stop := writers(c, 1, 1, value(3, 16))
		// Ten election timeouts for the removed replica to try.
		deadline := time.Now().Add(100 * 10 * TickInterval)
		for time.Now().Before(deadline) {
			if l, ok := c.Leader(1); ok && l == gone {
				t.Fatal("the removed replica leads")
			}
			<-time.After(TickInterval)
		}
		acked := stop()
		for i := 0; i < c.N(); i++ {
			if i == gone {
				continue
			}
			st, _ := c.Status(i, 1)
			if got := memberIDs(st.Members); !slices.Equal(got, want) {
				t.Errorf("host %d: members %v, want %v", i, got, want)
			}
			if st.Term != term {
				t.Errorf("host %d: term %d, was %d: the removed replica disturbed the group", i, st.Term, term)
			}
		}
		if v, _ := c.StaleRead(gone, 1, []byte("b49")); v != nil {
			t.Errorf("the removed replica applied an entry written after its removal")
		}
		if len(acked) == 0 {
			t.Error("no write was acknowledged while the removed replica ran")
		}

		// The host gets a new disk and a new replica of the group.
		c.StopGroup(gone, 1)
		c.Wipe(gone)
		c.Restart(gone)
		id := c.AddReplica(1, gone)
		c.WaitConverged(1)
		st, _ = c.Status(gone, 1)
		if got, want := memberIDs(st.Members), []skiff.ReplicaID{1, 2, id}; !slices.Equal(got, want) {
			t.Fatalf("new replica %d sees members %v, want %v", id, got, want)
		}
		noFailures(t, c)
	})
}

// A replica added to a running group with a compacted log joins and
// catches up (by snapshot), and can be removed again.
func TestAddedReplicaCatchesUpAndIsRemoved(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := New(t, Config{Hosts: 4, Seed: 42, Group: compacting})
		// Host 3 leaves the initial group at once: it is the spare.
		c.WaitLeader(1)
		c.StopGroup(3, 1)
		c.RemoveReplica(1, 3)
		write(t, c, 1, "a", 60, value(1, 32))
		c.Stop(3)
		c.Wipe(3)
		c.Restart(3)
		id := c.AddNonVoting(1, 3)
		c.WaitConverged(1)
		st, _ := c.Status(3, 1)
		if _, ok := st.NonVoters[id]; !ok {
			t.Fatalf("replica %d is not a non-voter: voters %v non-voters %v", id, st.Members, st.NonVoters)
		}
		// Promote it, then take another voter out.
		if err := c.retry(1, func(ctx context.Context, h *skiff.Host) error {
			return h.AddReplica(ctx, 1, id, c.Addr(3))
		}); err != nil {
			t.Fatalf("promote replica %d: %v", id, err)
		}
		c.RemoveReplica(1, 0)
		c.StopGroup(0, 1)
		write(t, c, 1, "b", 10, value(2, 32))
		c.WaitConverged(1)
		st, _ = c.Status(3, 1)
		if got, want := memberIDs(st.Members), []skiff.ReplicaID{2, 3, id}; !slices.Equal(got, want) {
			t.Fatalf("members %v, want %v", got, want)
		}
		if hostEvents(c, 3, skiff.SnapshotInstalled, 1) == 0 {
			t.Error("the added replica caught up without a snapshot past the compacted log")
		}
		noFailures(t, c)
	})
}

// Leadership moves on request, and every replica follows the new leader.
func TestTransferLeadershipMovesTheLeader(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := New(t, Config{Seed: 43})
		l := c.WaitLeader(1)
		write(t, c, 1, "a", 5, value(1, 8))
		target := (l + 1) % c.N()
		ctx, cancel := context.WithTimeout(context.Background(), WaitTimeout)
		defer cancel()
		if err := c.Host(l).TransferLeadership(ctx, 1, c.ReplicaID(target, 1)); err != nil {
			t.Fatalf("transfer to host %d: %v", target, err)
		}
		if now := c.WaitLeader(1); now != target {
			t.Fatalf("leader is host %d, want %d", now, target)
		}
		if got := c.Propose(1, Set("after", []byte("1"))).Value; got != 6 {
			t.Fatalf("result %d after the transfer, want 6", got)
		}
		c.WaitConverged(1)
	})
}

// blockingOpen is an OnDiskKV whose Open waits for release: StartGroup
// stays in progress until the test lets it finish.
type blockingOpen struct {
	*OnDiskKV
	release chan struct{}
}

func (b blockingOpen) Open(ctx context.Context) (uint64, error) {
	select {
	case <-b.release:
	case <-ctx.Done():
		return 0, ctx.Err()
	}
	return b.OnDiskKV.Open(ctx)
}

// Host methods called for a group whose StartGroup is still opening it
// return an error (or wait); they do not crash the process.
func TestStatusDuringStartGroupDoesNotPanic(t *testing.T) {
	var bug engineBug
	defer bug.skip(t)
	synctest.Test(t, func(t *testing.T) {
		c := New(t, Config{Hosts: 1, Seed: 44})
		c.WaitLeader(1)
		h := c.Host(0)
		release := make(chan struct{})
		started := make(chan error, 1)
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), WaitTimeout)
			defer cancel()
			started <- h.StartGroup(ctx, skiff.GroupConfig{GroupID: 2, ReplicaID: 1,
				Members: map[skiff.ReplicaID]string{1: c.Addr(0)}},
				func(g, r uint64) statemachine.StateMachine {
					return blockingOpen{OnDiskKV: NewOnDiskKV(c.FS(0), smDir)(g, r).(*OnDiskKV), release: release}
				})
		}()
		synctest.Wait() // StartGroup is now blocked in Open
		var panicked any
		func() {
			defer func() { panicked = recover() }()
			_, err := h.GroupStatus(2)
			t.Logf("GroupStatus during StartGroup: %v", err)
		}()
		close(release)
		if err := <-started; err != nil {
			t.Fatalf("StartGroup: %v", err)
		}
		if panicked != nil {
			bug.found("Engine.node returns a nil *node (and no error) for a group whose StartGroup is "+
				"in progress (StartGroup reserves e.nodes[g] = nil while openNode runs), so GroupStatus, "+
				"Propose, Read... on that group dereference nil and panic the process: %v "+
				"(fix: treat a nil entry as not found, or as a typed \"starting\" error)", panicked)
			return
		}
		if _, err := h.GroupStatus(2); err != nil {
			t.Fatalf("GroupStatus after StartGroup: %v", err)
		}
	})
}
