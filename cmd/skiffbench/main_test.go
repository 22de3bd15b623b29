package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"
)

// TestMain lets the test binary play the catch-up workload's child
// process, as the skiffbench binary does.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == childCommand {
		os.Exit(childMain(os.Args[2:], os.Stdin, os.Stdout, os.Stderr))
	}
	os.Exit(m.Run())
}

// TestLatencyWorkloadJSON runs the smallest workload end to end through
// the command line and checks the JSON lines: a machine header, then
// every metric of the workload with its DESIGN.md §9 target and ratio.
func TestLatencyWorkloadJSON(t *testing.T) {
	leakCheck(t)
	var stdout, stderr bytes.Buffer
	args := []string{"--workload", "latency", "--duration", "300ms", "--repeat", "1", "--json", "--dir", t.TempDir()}
	if code := run(args, &stdout, &stderr); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	s := bufio.NewScanner(&stdout)
	if !s.Scan() {
		t.Fatal("no output")
	}
	var m machine
	if err := json.Unmarshal(s.Bytes(), &m); err != nil || m.Kind != "machine" || m.Cores < 1 {
		t.Fatalf("header %q: %+v, %v", s.Text(), m, err)
	}
	got := map[string]result{}
	for s.Scan() {
		var r result
		if err := json.Unmarshal(s.Bytes(), &r); err != nil {
			t.Fatalf("line %q: %v", s.Text(), err)
		}
		if r.Kind != "result" || r.Workload != "latency" || r.MedianOf != 1 || r.Value <= 0 {
			t.Errorf("result %+v", r)
		}
		got[r.Metric] = r
	}
	for _, metric := range []string{"writes", "p50", "p99", "p99.9", "log-saves", "entries/save", "save-mean"} {
		if _, ok := got[metric]; !ok {
			t.Errorf("no %s in %v", metric, got)
		}
	}
	p50, p99, p999 := got["p50"], got["p99"], got["p99.9"]
	if p50.Value > p99.Value || p99.Value > p999.Value {
		t.Errorf("percentiles out of order: %v %v %v", p50.Value, p99.Value, p999.Value)
	}
	if p50.Target != 350 || p50.TargetKind != "<=" || p50.Ratio != p50.Value/350 {
		t.Errorf("p50 target: %+v", p50)
	}
	// One proposer waits for each entry: every log save carries about
	// one (a follower's may carry a commit index only, or two entries).
	if e := got["entries/save"].Value; e < 0.5 || e > 2 {
		t.Errorf("entries per log save with one proposer: %v", e)
	}
	if p999.Target != 0 || p999.Ratio != 0 {
		t.Errorf("p99.9 has no DESIGN target, got %+v", p999)
	}
}

// TestCatchupWorkload runs the catch-up workload on a small state: the
// new replica's process joins, receives and checks the snapshot, and
// reports its phases and peak RSS.
func TestCatchupWorkload(t *testing.T) {
	leakCheck(t)
	ms, err := runCatchup(8<<20)(context.Background(), env{dir: t.TempDir(), duration: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, m := range ms {
		got[m.metric] = m.value
	}
	for _, metric := range []string{"catchup", "generate", "transfer", "load", "transfer-rate", "peak-rss"} {
		if got[metric] <= 0 {
			t.Errorf("%s = %v, want > 0 (all: %v)", metric, got[metric], got)
		}
	}
	if got["catchup"] < got["load"] {
		t.Errorf("catch-up %vs shorter than its load phase %vs", got["catchup"], got["load"])
	}
}

// TestBulkSnapshotChecked: Restore accepts what Save wrote and adopts its
// size, and rejects a stream with one bit flipped or cut short.
func TestBulkSnapshotChecked(t *testing.T) {
	const size = 1<<20 + 24 // not a multiple of the block
	var buf bytes.Buffer
	if err := (bulkSnap{size: size, seed: 7}).Save(context.Background(), &buf, nil); err != nil {
		t.Fatal(err)
	}
	if buf.Len() != 24+size+4 {
		t.Fatalf("snapshot is %d bytes, want %d", buf.Len(), 24+size+4)
	}
	var sm bulkSM
	if err := sm.Restore(context.Background(), bytes.NewReader(buf.Bytes()), nil); err != nil {
		t.Fatal(err)
	}
	if sm.size != size || sm.seed != 7 {
		t.Fatalf("restored size %d seed %d", sm.size, sm.seed)
	}
	flipped := bytes.Clone(buf.Bytes())
	flipped[24+size/2] ^= 1
	if err := new(bulkSM).Restore(context.Background(), bytes.NewReader(flipped), nil); !errors.Is(err, errBadSnapshot) {
		t.Errorf("flipped bit: %v, want errBadSnapshot", err)
	}
	if err := new(bulkSM).Restore(context.Background(), bytes.NewReader(buf.Bytes()[:buf.Len()-1]), nil); !errors.Is(err, errBadSnapshot) {
		t.Errorf("short stream: %v, want errBadSnapshot", err)
	}
}

// TestMediansAndTargets: a figure is the median of its runs, and a
// 16-group figure's target is the 1-group figure of the same run when
// there is one, else the 1-group shape's DESIGN target.
func TestMediansAndTargets(t *testing.T) {
	ws := workloads()
	find := func(name string) workload {
		for _, w := range ws {
			if w.name == name {
				return w
			}
		}
		t.Fatalf("no workload %s", name)
		return workload{}
	}
	runs := func(vs ...float64) [][]measurement {
		var out [][]measurement
		for _, v := range vs {
			out = append(out, []measurement{{"writes", v, "/s"}})
		}
		return out
	}
	done := map[string]result{}
	r := medians(find("g16-16B-p256"), runs(3, 1, 2), done)[0]
	if r.Value != 2 || r.MedianOf != 3 || r.Target != 105e3 {
		t.Errorf("without the 1-group figure: %+v", r)
	}
	one := medians(find("g1-16B-p256"), runs(40e3, 50e3), done)[0]
	if one.Value != 45e3 || one.Ratio != 45e3/105e3 {
		t.Errorf("1 group: %+v", one)
	}
	done["g1-16B-p256/writes"] = one
	r = medians(find("g16-16B-p256"), runs(90e3), done)[0]
	if r.Target != 45e3 || r.Ratio != 2 || !strings.Contains(r.TargetFrom, "this run") {
		t.Errorf("with the 1-group figure: %+v", r)
	}
}

// leakCheck fails the test if, once it is over, a goroutine still runs
// skiff code (the hosts' workers, transports, the child's pipes).
func leakCheck(t *testing.T) {
	t.Cleanup(func() {
		deadline := time.Now().Add(5 * time.Second)
		buf := make([]byte, 16<<20)
		for {
			var leaked []string
			for g := range strings.SplitSeq(string(buf[:runtime.Stack(buf, true)]), "\n\n") {
				if strings.Contains(g, "github.com/skiffdb/skiff") && !strings.Contains(g, "_test.go") {
					leaked = append(leaked, g)
				}
			}
			if len(leaked) == 0 {
				return
			}
			if time.Now().After(deadline) {
				t.Errorf("goroutines left running:\n%s", strings.Join(leaked, "\n\n"))
				return
			}
			runtime.Gosched()
		}
	})
}
