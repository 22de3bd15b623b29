package main

import (
	"context"
	"fmt"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestReviewDemoSmallKeys: --keys accepts any N >= 100, so the demo must
// succeed with a small N. It fails for every N below about 1000: the
// snapshot spacing is max(N/4, 1000) and the compaction overhead a fixed
// 1000 entries, so after 2×N writes the leader's log is never compacted
// past the stopped replica (index ~N) and step 5 gives up with "the
// leader's log still starts at 1".
func TestReviewDemoSmallKeys(t *testing.T) {
	reviewBug(t, "demo.go parseDemo: --compaction-overhead is a fixed 1000 while --keys may be as low as 100, "+
		"so 'skiffkv demo --keys 500' always fails at step 5 (the leader's log still starts at 1)")
	bin := skiffkvBinary(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, "demo", "--keys", "500", "--value-size", "64",
		"--dir", filepath.Join(t.TempDir(), "d")).CombinedOutput()
	if err != nil {
		t.Fatalf("demo --keys 500: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "installed the snapshot") || !strings.Contains(string(out), "\nOK") {
		t.Fatalf("demo output:\n%s", out)
	}
}

// TestReviewDemoCheckAgreeBeyondScanCap: the demo's final check reads
// every replica with one scan of "key-", but every scan is capped by
// serve's --max-scan-keys (default 100000) and the demo does not raise it,
// so with --keys N > 66666 (1.5×N distinct keys) the check fails on a
// correct cluster ("replica 1 holds 100000 keys, want ..."). Here the cap
// is 3 (startInProcess) and the store holds 4 keys.
func TestReviewDemoCheckAgreeBeyondScanCap(t *testing.T) {
	reviewBug(t, "demo.go checkAgree reads each replica with one scan and ignores X-Skiffkv-Truncated; "+
		"serve caps scans at --max-scan-keys (100000), so 'skiffkv demo --keys 70000' fails on a correct cluster")
	p := startInProcess(t, nil)
	expect := map[string]string{}
	for i := range 4 {
		k := fmt.Sprintf("key-%07d", i)
		p.expect("PUT", "/v1/kv/"+k, []byte("v"+k), 204, "")
		expect[k] = "v" + k
	}
	cl := &localCluster{
		nodes: map[uint64]*replicaProc{1: {id: 1, httpAddr: strings.TrimPrefix(p.base, "http://")}},
		http:  &http.Client{},
	}
	defer cl.http.CloseIdleConnections()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var st demoStats
	var out strings.Builder
	if err := checkAgree(ctx, cl, &out, []uint64{1}, expect, &st); err != nil {
		t.Fatalf("checkAgree on a correct replica holding more keys than one scan returns: %v", err)
	}
}
