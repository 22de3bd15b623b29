package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/skiffdb/skiff"
)

var (
	buildOnce sync.Once
	builtBin  string
	buildErr  error
)

// skiffkvBinary builds this command once per test run, as a user would.
func skiffkvBinary(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds and runs skiffkv processes")
	}
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "skiffkv-bin-")
		if err != nil {
			buildErr = err
			return
		}
		// `go test` puts the go command that runs it first on PATH.
		goTool, err := exec.LookPath("go")
		if err != nil {
			buildErr = err
			return
		}
		builtBin = filepath.Join(dir, "skiffkv")
		out, err := exec.Command(goTool, "build", "-o", builtBin, ".").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return builtBin
}

func TestMain(m *testing.M) {
	code := m.Run()
	if builtBin != "" {
		os.RemoveAll(filepath.Dir(builtBin))
	}
	os.Exit(code)
}

// startCluster starts a 3-process cluster and stops it at the end of t.
func startCluster(t *testing.T, extra ...string) (*localCluster, uint64) {
	t.Helper()
	cl, err := newLocalCluster(skiffkvBinary(t), t.TempDir(), 3, extra)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := cl.stopAll(); err != nil {
			t.Error(err)
		}
		if t.Failed() {
			for id, n := range cl.nodes {
				t.Logf("replica %d log tail:\n%s", id, tail(n.logPath, 30))
			}
		}
	})
	for id := uint64(1); id <= 3; id++ {
		if err := cl.start(id, false); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	leader, err := cl.leader(ctx, []uint64{1, 2, 3})
	if err != nil {
		t.Fatal(err)
	}
	return cl, leader
}

// writeKeys PUTs n keys through the replicas ids and returns what was
// acknowledged (a write with an unknown outcome is retried: PUT is
// idempotent).
func writeKeys(ctx context.Context, t *testing.T, cl *localCluster, ids []uint64, from, n int, tag string, acked map[string]string) {
	t.Helper()
	var mu sync.Mutex
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for w := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += 16 {
				key := fmt.Sprintf("key-%06d", from+i)
				v := fmt.Sprintf("%s-%d", tag, from+i)
				var err error
				for attempt := range 10 {
					if err = cl.put(ctx, ids[(i+attempt)%len(ids)], key, []byte(v)); err == nil {
						break
					}
				}
				if err != nil {
					errs <- fmt.Errorf("PUT %s: %w", key, err)
					return
				}
				mu.Lock()
				acked[key] = v
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

// checkAll reads every key linearizably from every replica in ids.
func checkAll(ctx context.Context, t *testing.T, cl *localCluster, ids []uint64, acked map[string]string) {
	t.Helper()
	for _, id := range ids {
		got, _, err := cl.scan(ctx, id, "key-", false)
		if err != nil {
			t.Fatalf("scan on replica %d: %v", id, err)
		}
		if len(got) != len(acked) {
			t.Errorf("replica %d holds %d keys, want %d", id, len(got), len(acked))
		}
		for k, v := range acked {
			if got[k] != v {
				t.Fatalf("replica %d: %s = %q, acknowledged %q", id, k, got[k], v)
			}
		}
	}
}

// TestEndToEndSnapshotCatchUp is issue 6's end-to-end scenario: a
// replica killed with SIGKILL misses writes past its log, is wiped and
// restarted empty, catches up by snapshot install, and every acknowledged
// write is readable from every replica — also after all three are killed
// with SIGKILL and restarted.
func TestEndToEndSnapshotCatchUp(t *testing.T) {
	cl, leader := startCluster(t, "--snapshot-entries", "300", "--compaction-overhead", "50")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	all := []uint64{1, 2, 3}
	acked := map[string]string{}
	writeKeys(ctx, t, cl, all, 0, 600, "a", acked)

	victim := uint64(1)
	if victim == leader {
		victim = 2
	}
	vst, err := cl.status(ctx, victim)
	if err != nil {
		t.Fatal(err)
	}
	if err := cl.stop(victim, true); err != nil {
		t.Fatal(err)
	}
	var live []uint64
	for _, id := range all {
		if id != victim {
			live = append(live, id)
		}
	}
	writeKeys(ctx, t, cl, live, 300, 900, "b", acked)
	for _, id := range live {
		if _, err := cl.snapshot(ctx, id); err != nil {
			t.Fatalf("snapshot on %d: %v", id, err)
		}
	}
	lst, err := cl.status(ctx, leader)
	if err != nil {
		t.Fatal(err)
	}
	if lst.FirstIndex <= vst.LastIndex+1 {
		t.Fatalf("leader's log starts at %d: not compacted past the victim's %d", lst.FirstIndex, vst.LastIndex)
	}
	if err := os.RemoveAll(cl.nodes[victim].dataDir); err != nil {
		t.Fatal(err)
	}
	if err := cl.start(victim, true); err != nil {
		t.Fatal(err)
	}
	var vs statusBody
	err = cl.waitFor(ctx, "catch-up", all, func(ctx context.Context) (bool, error) {
		s, err := cl.status(ctx, victim)
		vs = s
		return err == nil && s.Applied >= lst.Commit && hasEvent(s, skiff.SnapshotInstalled), err
	})
	if err != nil {
		t.Fatal(err)
	}
	if vs.Snapshot.Index < lst.FirstIndex || vs.FirstIndex <= vst.LastIndex {
		t.Fatalf("the victim caught up without installing a snapshot: %+v", vs)
	}
	// The hosts timed the phases: the leader generated a data snapshot on
	// demand, the victim fetched and installed it.
	for _, m := range []struct {
		id    uint64
		phase string
	}{{leader, "generate"}, {victim, "transfer"}, {victim, "install"}} {
		if s, err := cl.snapshotSeconds(ctx, m.id, m.phase); err != nil || s <= 0 {
			t.Errorf("replica %d: %s time %v (%v), want > 0", m.id, m.phase, s, err)
		}
	}
	checkAll(ctx, t, cl, all, acked)

	// kill -9 every replica: nothing acknowledged is lost.
	for _, id := range all {
		if err := cl.stop(id, true); err != nil {
			t.Fatal(err)
		}
	}
	for _, id := range all {
		if err := cl.start(id, false); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := cl.leader(ctx, all); err != nil {
		t.Fatal(err)
	}
	checkAll(ctx, t, cl, all, acked)
}

// TestDemo runs the demo end to end with few keys.
func TestDemo(t *testing.T) {
	bin := skiffkvBinary(t)
	out, err := exec.Command(bin, "demo", "--keys", "2000", "--value-size", "256", "--dir", filepath.Join(t.TempDir(), "d")).CombinedOutput()
	if err != nil {
		t.Fatalf("demo: %v\n%s", err, out)
	}
	for _, want := range []string{"installed the snapshot", "every acknowledged write present", "summary", "OK"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("demo output lacks %q:\n%s", want, out)
		}
	}
}
