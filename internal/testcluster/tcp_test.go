package testcluster

import (
	"context"
	"errors"
	"fmt"
	"net"
	"runtime"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/skiffdb/skiff"
)

// checkGoroutines fails t if, once the test's cleanups ran, more
// goroutines run than before it started. Outside synctest there is no
// bubble to do this: it waits (up to 10 s of real time) for goroutines
// that are on their way out.
func checkGoroutines(t *testing.T) {
	t.Helper()
	before := runtime.NumGoroutine()
	t.Cleanup(func() {
		deadline := time.Now().Add(10 * time.Second)
		for runtime.NumGoroutine() > before {
			if time.Now().After(deadline) {
				buf := make([]byte, 1<<20)
				t.Errorf("%d goroutines left after the test, %d before:\n%s",
					runtime.NumGoroutine(), before, buf[:runtime.Stack(buf, true)])
				return
			}
			runtime.Gosched()
			<-time.After(10 * time.Millisecond)
		}
	})
}

// Three hosts over real TCP on 127.0.0.1, each on its own in-memory
// disk: a leader is elected, proposals through every host apply in
// order, linearizable reads on every host see the last write, and a
// host stopped and reopened on its disk and port catches up.
func TestThreeHostsOverTCP(t *testing.T) {
	checkGoroutines(t)
	const n = 3
	fss := make([]vfs.FS, n)
	members := map[skiff.ReplicaID]string{}
	open := func(i int, addr string) *skiff.Host {
		t.Helper()
		h, err := skiff.Open(skiff.HostConfig{Dir: "/skiff", FS: fss[i], RaftAddr: addr,
			DeploymentID: DeploymentID, TickInterval: 10 * time.Millisecond, LogSegmentBytes: logSegmentBytes})
		if err != nil {
			t.Fatalf("open host %d on %s: %v", i, addr, err)
		}
		return h
	}
	// Port 0: the kernel picks, and the members map takes the real
	// addresses, so every host is open before any group starts.
	hosts := make([]*skiff.Host, n)
	for i := range hosts {
		fss[i] = vfs.NewMem()
		hosts[i] = open(i, "127.0.0.1:0")
		members[skiff.ReplicaID(i+1)] = hosts[i].RaftAddr()
	}
	defer func() {
		for _, h := range hosts {
			if h != nil {
				h.Close()
			}
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	start := func(i int) {
		t.Helper()
		err := hosts[i].StartGroup(ctx, skiff.GroupConfig{GroupID: 1, ReplicaID: skiff.ReplicaID(i + 1),
			Members: members, PreVote: true, CheckQuorum: true}, NewKV)
		if err != nil {
			t.Fatalf("start group on host %d: %v", i, err)
		}
	}
	for i := range hosts {
		start(i)
	}
	if _, err := hosts[0].WaitLeader(ctx, 1); err != nil {
		t.Fatal(err)
	}
	// propose retries while the outcome is "nothing happened" or unknown
	// (a proposal forwarded to a leader that just went away is lost).
	propose := func(j int, on []int) uint64 {
		t.Helper()
		for k := 0; ; k++ {
			actx, acancel := context.WithTimeout(ctx, 2*time.Second)
			res, err := hosts[on[k%len(on)]].Propose(actx, 1, Set(fmt.Sprintf("k%d", j), []byte(fmt.Sprint(j))))
			acancel()
			switch {
			case err == nil:
				return res.Value
			case ctx.Err() != nil:
				t.Fatalf("propose %d: %v", j, err)
			case errors.Is(err, skiff.ErrRejected) || errors.Is(err, skiff.ErrTimeout):
				<-time.After(10 * time.Millisecond)
			default:
				t.Fatalf("propose %d: %v", j, err)
			}
		}
	}
	for j := 0; j < 60; j++ {
		// Results are the apply count: a retried proposal may apply
		// twice, so only check that they increase.
		if v := propose(j, []int{j % n}); v < uint64(j+1) {
			t.Fatalf("propose %d: result %d, want at least %d", j, v, j+1)
		}
	}
	for i, h := range hosts {
		v, err := h.Read(ctx, 1, []byte("k59"))
		if err != nil || string(v) != "59" {
			t.Fatalf("host %d read k59: %q, %v", i, v, err)
		}
	}
	// Host 2 stops, misses writes, and comes back on its disk and port.
	addr := hosts[2].RaftAddr()
	if err := hosts[2].Close(); err != nil {
		t.Fatal(err)
	}
	hosts[2] = nil
	for j := 60; j < 80; j++ {
		propose(j, []int{0, 1})
	}
	hosts[2] = open(2, addr)
	start(2)
	for {
		v, err := hosts[2].Read(ctx, 1, []byte("k79"))
		if err == nil && string(v) == "79" {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("host 2 did not catch up: %q, %v", v, err)
		}
		<-time.After(10 * time.Millisecond)
	}
}

// HostConfig.RaftAddr with port 0 advertises the port the host listens
// on, so that a test (or a user) need not pick free ports.
func TestOpenOnPortZeroAdvertisesTheRealPort(t *testing.T) {
	checkGoroutines(t)
	h, err := skiff.Open(skiff.HostConfig{Dir: "/skiff", FS: vfs.NewMem(), RaftAddr: "127.0.0.1:0", DeploymentID: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	host, port, err := net.SplitHostPort(h.RaftAddr())
	if err != nil || host != "127.0.0.1" || port == "0" {
		t.Fatalf("RaftAddr %q (%v), want 127.0.0.1 and the port it listens on", h.RaftAddr(), err)
	}
	c, err := net.Dial("tcp", h.RaftAddr())
	if err != nil {
		t.Fatalf("dial the advertised address: %v", err)
	}
	c.Close()
}
