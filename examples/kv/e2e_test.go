package kv_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/skiffdb/skiff"
	"github.com/skiffdb/skiff/examples/kv"
	"github.com/skiffdb/skiff/transport/memnet"
)

const (
	deploymentID = 0x6b76
	group        = skiff.GroupID(1)
	tick         = 10 * time.Millisecond
	waitLimit    = 60 * time.Second // fake time under synctest
)

// cluster is three hosts on memnet, each with its own in-memory disk that
// holds both the host's data and the kv databases.
type cluster struct {
	t     *testing.T
	net   *memnet.Network
	nodes []*node

	mu        sync.Mutex
	installed map[int]int // SnapshotInstalled events by host
}

type node struct {
	addr string
	fs   *vfs.MemFS
	host *skiff.Host
}

func newCluster(t *testing.T) *cluster {
	c := &cluster{t: t, net: memnet.New(memnet.Config{Seed: 1}), installed: map[int]int{}}
	for i := range 3 {
		c.nodes = append(c.nodes, &node{addr: fmt.Sprintf("host-%d:7000", i), fs: vfs.NewMem()})
		c.open(i)
	}
	return c
}

func (c *cluster) open(i int) {
	c.t.Helper()
	n := c.nodes[i]
	h, err := skiff.Open(skiff.HostConfig{
		Dir:             "/skiff",
		FS:              n.fs,
		DeploymentID:    deploymentID,
		Transport:       c.net.Endpoint(n.addr, deploymentID),
		TickInterval:    tick,
		LogSegmentBytes: 1 << 20,
		Listener: func(e skiff.Event) {
			if e.Kind == skiff.SnapshotInstalled {
				c.mu.Lock()
				c.installed[i]++
				c.mu.Unlock()
			}
		},
	})
	if err != nil {
		c.t.Fatalf("open host %d: %v", i, err)
	}
	n.host = h
}

func (c *cluster) start(i int, id skiff.ReplicaID, members map[skiff.ReplicaID]string, join bool) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	n := c.nodes[i]
	err := n.host.StartGroup(ctx, skiff.GroupConfig{
		GroupID: group, ReplicaID: id, Members: members, Join: join,
		PreVote: true, CheckQuorum: true,
		// Metadata-only snapshots (kv is OnDisk) every 50 entries keep
		// the log short: a replica that comes later needs a full one.
		SnapshotEntries: 50, CompactionOverhead: 5,
	}, kv.New(kv.Options{Dir: "/kv", FS: n.fs}))
	if err != nil {
		c.t.Fatalf("start group on host %d: %v", i, err)
	}
}

func (c *cluster) close() {
	for _, n := range c.nodes {
		if n.host != nil {
			if err := n.host.Close(); err != nil {
				c.t.Errorf("close host %s: %v", n.addr, err)
			}
			n.host = nil
		}
	}
	c.net.Close()
}

// leader returns the host whose replica leads the group.
func (c *cluster) leader() int {
	c.t.Helper()
	l := -1
	c.eventually("a leader", func() bool {
		for i, n := range c.nodes {
			if n.host == nil {
				continue
			}
			if st, err := n.host.GroupStatus(group); err == nil && st.Leader != 0 && st.Leader == st.ReplicaID {
				l = i
				return true
			}
		}
		return false
	})
	return l
}

// eventually polls cond every tick of fake time.
func (c *cluster) eventually(what string, cond func() bool) {
	c.t.Helper()
	deadline := time.Now().Add(waitLimit)
	for !cond() {
		if time.Now().After(deadline) {
			c.t.Fatalf("timed out waiting for %s", what)
		}
		<-time.After(tick)
	}
}

// propose proposes cmd through any live host until it is applied, and
// returns the result value.
func (c *cluster) propose(cmd []byte) uint64 {
	c.t.Helper()
	for attempt := 0; ; attempt++ {
		h := c.nodes[c.leader()].host
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		res, err := h.Propose(ctx, group, cmd)
		cancel()
		if err == nil {
			return res.Value
		}
		if attempt == 20 || !(errors.Is(err, skiff.ErrRejected) || errors.Is(err, skiff.ErrTimeout)) {
			c.t.Fatalf("propose: %v", err)
		}
	}
}

// scan reads every key on host i, linearizably or locally.
func (c *cluster) scan(i int, stale bool) map[string]string {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	read := c.nodes[i].host.Read
	if stale {
		read = c.nodes[i].host.StaleRead
	}
	resp, err := read(ctx, group, kv.EncodeScan(nil, 0))
	if err != nil {
		c.t.Fatalf("scan on host %d: %v", i, err)
	}
	pairs, err := kv.DecodeScan(resp)
	if err != nil {
		c.t.Fatal(err)
	}
	out := map[string]string{}
	for _, p := range pairs {
		out[string(p.Key)] = string(p.Value)
	}
	return out
}

func (c *cluster) status(i int) skiff.GroupStatus {
	c.t.Helper()
	st, err := c.nodes[i].host.GroupStatus(group)
	if err != nil {
		c.t.Fatalf("status of host %d: %v", i, err)
	}
	return st
}

// Three hosts run kv through the public API. One host is wiped while the
// others write far past its log; its replica is replaced by a new one,
// which can only catch up by installing a full snapshot (a Pebble
// checkpoint). Afterwards every replica holds the same data, and writes
// continue everywhere.
func TestReplicaCatchesUpBySnapshotInstall(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := newCluster(t)
		defer c.close()
		members := map[skiff.ReplicaID]string{}
		for i, n := range c.nodes {
			members[skiff.ReplicaID(i+1)] = n.addr
		}
		for i := range c.nodes {
			c.start(i, skiff.ReplicaID(i+1), members, false)
		}

		model := map[string]string{}
		put := func(k, v string) {
			if r := c.propose(kv.EncodePut([]byte(k), []byte(v))); r != kv.ResultOK {
				t.Fatalf("put %s: result %d", k, r)
			}
			model[k] = v
		}
		for i := range 100 {
			put(fmt.Sprintf("key%04d", i), fmt.Sprintf("first-%d", i))
		}

		// Host 2 goes away for good: its replica is removed, its disk
		// wiped, and the group writes on.
		const lag = 2
		if c.leader() == lag {
			ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
			if err := c.nodes[lag].host.TransferLeadership(ctx, group, 1); err != nil {
				t.Fatalf("transfer leadership away from host %d: %v", lag, err)
			}
			cancel()
			c.eventually("leadership moved", func() bool { return c.leader() != lag })
		}
		if err := c.nodes[lag].host.Close(); err != nil {
			t.Fatal(err)
		}
		c.nodes[lag].host = nil
		c.nodes[lag].fs = vfs.NewMem()
		ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
		defer cancel()
		if err := c.nodes[c.leader()].host.RemoveReplica(ctx, group, 3); err != nil {
			t.Fatalf("remove replica 3: %v", err)
		}
		for i := range 300 {
			put(fmt.Sprintf("key%04d", i%150), fmt.Sprintf("second-%d", i))
		}
		if r := c.propose(kv.EncodeDelete([]byte("key0001"))); r != kv.ResultOK {
			t.Fatalf("delete: result %d", r)
		}
		delete(model, "key0001")
		if r := c.propose(kv.EncodeCAS([]byte("key0002"), []byte("wrong"), []byte("x"))); r != kv.ResultMismatch {
			t.Fatalf("CAS with a stale value: result %d, want ResultMismatch", r)
		}
		if r := c.propose(kv.EncodeCAS([]byte("key0002"), []byte(model["key0002"]), []byte("cas"))); r != kv.ResultOK {
			t.Fatalf("CAS: result %d, want ResultOK", r)
		}
		model["key0002"] = "cas"
		l := c.leader()
		// A periodic snapshot may be saving (ErrBusy): retry until ours
		// is taken, or there is nothing new to take.
		c.eventually("a snapshot that compacts the whole log", func() bool {
			_, err := c.nodes[l].host.RequestSnapshot(ctx, group, skiff.SnapshotOption{OverrideCompactionOverhead: true})
			if err != nil && !errors.Is(err, skiff.ErrNoNewEntries) && !errors.Is(err, skiff.ErrBusy) {
				t.Fatalf("request snapshot: %v", err)
			}
			return !errors.Is(err, skiff.ErrBusy)
		})
		if st := c.status(l); st.FirstIndex <= 100 {
			t.Fatalf("leader's log starts at %d: not compacted past the removed replica", st.FirstIndex)
		}

		// A new replica on the wiped host joins.
		if err := c.nodes[l].host.AddReplica(ctx, group, 4, c.nodes[lag].addr); err != nil {
			t.Fatalf("add replica 4: %v", err)
		}
		c.open(lag)
		c.start(lag, 4, nil, true)
		commit := c.status(l).Commit
		c.eventually("the new replica caught up", func() bool { return c.status(lag).Applied >= commit })
		c.mu.Lock()
		installs := c.installed[lag]
		c.mu.Unlock()
		if installs == 0 {
			t.Fatal("the new replica caught up without installing a snapshot")
		}

		// Writes continue on top of the installed snapshot.
		for i := range 20 {
			put(fmt.Sprintf("after%02d", i), "x")
		}
		commit = c.status(c.leader()).Commit
		for i := range c.nodes {
			c.eventually(fmt.Sprintf("host %d applied %d", i, commit), func() bool { return c.status(i).Applied >= commit })
		}
		for i := range c.nodes {
			for _, stale := range []bool{true, false} {
				if got := c.scan(i, stale); !maps.Equal(got, model) {
					t.Fatalf("host %d (stale read %v) holds %d keys, want %d; first difference: %s",
						i, stale, len(got), len(model), firstDiff(got, model))
				}
			}
		}
		ctxGet, cancelGet := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancelGet()
		resp, err := c.nodes[lag].host.Read(ctxGet, group, kv.EncodeGet([]byte("key0002")))
		if err != nil {
			t.Fatal(err)
		}
		if v, found, err := kv.DecodeGet(resp); err != nil || !found || string(v) != "cas" {
			t.Fatalf("get key0002 on the new replica = %q, %v, %v; want cas", v, found, err)
		}
		t.Logf("new replica installed %d snapshot(s); %d keys on every replica", installs, len(model))
	})
}

func firstDiff(got, want map[string]string) string {
	keys := slices.Sorted(maps.Keys(want))
	for k := range got {
		if _, ok := want[k]; !ok {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	for _, k := range keys {
		g, gok := got[k]
		w, wok := want[k]
		if g != w || gok != wok {
			return fmt.Sprintf("%q: got %q (%v), want %q (%v)", k, g, gok, w, wok)
		}
	}
	return "none"
}
