package testcluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/skiffdb/skiff"
)

// write proposes n sets "<prefix><j>" = value (j from 0) to group g and
// returns the last result.
func write(t *testing.T, c *Cluster, g skiff.GroupID, prefix string, n int, value []byte) uint64 {
	t.Helper()
	var last uint64
	for j := 0; j < n; j++ {
		last = c.Propose(g, Set(fmt.Sprintf("%s%d", prefix, j), value)).Value
	}
	return last
}

// hostEvents counts the events of kind in group g reported by host i.
func hostEvents(c *Cluster, i int, kind skiff.EventKind, g skiff.GroupID) int {
	n := 0
	for _, e := range c.Events() {
		if e.Host == i && e.Kind == kind && e.Group == g {
			n++
		}
	}
	return n
}

// sentTo counts SnapshotSent events of group g to replica peer.
func sentTo(c *Cluster, g skiff.GroupID, peer skiff.ReplicaID) int {
	n := 0
	for _, e := range c.Events() {
		if e.Kind == skiff.SnapshotSent && e.Group == g && e.Peer == peer {
			n++
		}
	}
	return n
}

// abandoned reports whether a SnapshotFailed event is a snapshot given
// up because its host or group was closing (a Crash, Kill or Stop).
// NB: the engine reports some of these with its internal executor's
// "stopped" error, which has no public sentinel.
func abandoned(e HostEvent) bool {
	return e.Kind == skiff.SnapshotFailed && (errors.Is(e.Err, context.Canceled) ||
		errors.Is(e.Err, skiff.ErrClosed) || errors.Is(e.Err, skiff.ErrGroupStopped) ||
		strings.Contains(e.Err.Error(), "node is stopped"))
}

// noFailures fails the test on any SnapshotFailed or GroupFailed event,
// except a snapshot abandoned because its host was closing (abandoned)
// and the events the test expects (allow).
func noFailures(t *testing.T, c *Cluster, allow ...func(HostEvent) bool) {
	t.Helper()
	for _, e := range c.Events() {
		if abandoned(e) ||
			slices.ContainsFunc(allow, func(f func(HostEvent) bool) bool { return f(e) }) {
			continue
		}
		if e.Kind == skiff.SnapshotFailed || e.Kind == skiff.GroupFailed {
			t.Errorf("host %d group %d: %v: %v", e.Host, e.Group, e.Kind, e.Err)
		}
	}
}

// writePace is the pause of each background writer between proposals.
// NB: without it the writers would keep the synctest bubble busy, and
// fake time (ticks, rate limits) would never advance.
const writePace = TickInterval

// writers runs n goroutines proposing unique keys to g, each one per
// writePace, until stop is called; stop returns the keys whose proposals
// were acknowledged.
func writers(c *Cluster, g skiff.GroupID, n int, value []byte) (stop func() []string) {
	var (
		wg    sync.WaitGroup
		done  atomic.Bool
		mu    sync.Mutex
		acked []string
	)
	for w := 0; w < n; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; !done.Load(); j++ {
				k := fmt.Sprintf("w%d-%d", w, j)
				if _, err := c.TryPropose(g, Set(k, value)); err != nil {
					continue
				}
				mu.Lock()
				acked = append(acked, k)
				mu.Unlock()
				<-time.After(writePace)
			}
		}()
	}
	stop = func() []string {
		done.Store(true)
		wg.Wait()
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(acked)
	}
	// A test that fails stops its writers before the cluster closes (a
	// writer still running would outlive the synctest bubble).
	c.t.Cleanup(func() { stop() })
	return stop
}

// value returns n bytes derived from seed, so that a wrong value shows.
func value(seed, n int) []byte {
	return bytes.Repeat([]byte{byte('a' + seed%26)}, n)
}

// engineBug carries an engine bug found inside a synctest bubble out of
// it: a t.Skip inside the bubble would not mark the test skipped.
type engineBug struct{ msg string }

// found records the bug; the bubble's function should return after it.
func (b *engineBug) found(format string, args ...any) {
	b.msg = "engine bug: " + fmt.Sprintf(format, args...)
}

// skip skips the (outer) test if a bug was found.
func (b *engineBug) skip(t *testing.T) {
	t.Helper()
	if b.msg != "" {
		t.Skip(b.msg)
	}
}

// stopBehind stops host i and waits until the leaders have noticed:
// a leader keeps the log that a recently active follower still needs
// when it compacts, so writes made at once would reach the follower
// from the log instead of by snapshot. CheckQuorum clears a silent
// follower's activity every election timeout (10 ticks).
func stopBehind(c *Cluster, i int) {
	c.t.Helper()
	c.Stop(i)
	<-time.After(30 * TickInterval)
}
