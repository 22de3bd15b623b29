package main

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
)

// The register-per-key model: reads, writes and compare-and-sets on a few
// keys from concurrent clients. An operation whose outcome is unknown (a
// timeout, a connection cut by a kill) may or may not have happened:
// porcupine places it anywhere after its call (Return is the end of
// history) and the model lets it take effect or not.

type regInput struct {
	op         string // "get", "put", "cas"
	key        string
	value, old string
}

type regOutput struct {
	value   string // get
	found   bool   // get
	ok      bool   // cas: swapped
	unknown bool   // put/cas with an unknown outcome
}

type regState struct {
	value  string
	exists bool
}

var registerModel = porcupine.NondeterministicModel{
	Partition: func(history []porcupine.Operation) [][]porcupine.Operation {
		byKey := map[string][]porcupine.Operation{}
		var keys []string
		for _, op := range history {
			k := op.Input.(regInput).key
			if _, ok := byKey[k]; !ok {
				keys = append(keys, k)
			}
			byKey[k] = append(byKey[k], op)
		}
		out := make([][]porcupine.Operation, 0, len(keys))
		for _, k := range keys {
			out = append(out, byKey[k])
		}
		return out
	},
	Init: func() []any { return []any{regState{}} },
	Step: func(state, input, output any) []any {
		s, in, out := state.(regState), input.(regInput), output.(regOutput)
		switch in.op {
		case "get":
			if out.found == s.exists && (!out.found || out.value == s.value) {
				return []any{s}
			}
			return nil
		case "put":
			next := regState{value: in.value, exists: true}
			if out.unknown {
				return []any{s, next}
			}
			return []any{next}
		default: // cas
			matches := s.exists && s.value == in.old
			next := regState{value: in.value, exists: true}
			switch {
			case out.unknown && matches:
				return []any{s, next}
			case out.unknown:
				return []any{s}
			case out.ok && matches:
				return []any{next}
			case !out.ok && !matches:
				return []any{s}
			}
			return nil
		}
	},
	DescribeOperation: func(input, output any) string {
		in, out := input.(regInput), output.(regOutput)
		switch {
		case out.unknown:
			return fmt.Sprintf("%s(%s,%q,%q) -> ?", in.op, in.key, in.old, in.value)
		case in.op == "get":
			return fmt.Sprintf("get(%s) -> %q,%v", in.key, out.value, out.found)
		case in.op == "put":
			return fmt.Sprintf("put(%s,%q)", in.key, in.value)
		}
		return fmt.Sprintf("cas(%s,%q,%q) -> %v", in.key, in.old, in.value, out.ok)
	},
}

// linearizabilityDuration is short by default; SKIFF_LINEARIZABILITY_SECONDS
// runs it longer (the README names it).
func linearizabilityDuration(t *testing.T) time.Duration {
	if s := os.Getenv("SKIFF_LINEARIZABILITY_SECONDS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n <= 0 {
			t.Fatalf("SKIFF_LINEARIZABILITY_SECONDS=%q: want a positive integer", s)
		}
		return time.Duration(n) * time.Second
	}
	return 6 * time.Second
}

// TestLinearizability drives reads, writes and compare-and-sets from
// concurrent clients against every replica while one replica at a time is
// killed with SIGKILL and restarted and snapshots are requested, and checks
// the history with porcupine.
func TestLinearizability(t *testing.T) {
	cl, _ := startCluster(t, "--snapshot-entries", "200", "--compaction-overhead", "20", "--request-timeout", "2s")
	dur := linearizabilityDuration(t)
	ctx, cancel := context.WithTimeout(context.Background(), dur+2*time.Minute)
	defer cancel()
	keys := []string{"r0", "r1", "r2", "r3"}
	var (
		mu      sync.Mutex
		history []porcupine.Operation
		counts  = map[string]int{}
	)
	begin := time.Now()
	now := func() int64 { return int64(time.Since(begin)) }
	end := time.Now().Add(dur)
	const clients = 8
	var wg sync.WaitGroup
	for c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(c), 42))
			lastSeen := map[string]string{} // CAS from the value last read, so that some succeed
			for seq := 0; time.Now().Before(end); seq++ {
				in := randomRegInput(r, keys, c, seq, lastSeen)
				call := now()
				out, err := linOp(ctx, cl, uint64(r.IntN(3))+1, in)
				ret := now()
				mu.Lock()
				switch {
				case err == nil:
					counts[in.op+" ok"]++
					if in.op == "get" && out.found {
						lastSeen[in.key] = out.value
					}
				case in.op == "get":
					counts["get failed"]++
					mu.Unlock()
					continue // a failed read changed nothing
				default:
					counts[in.op+" unknown"]++
					out, ret = regOutput{unknown: true}, 1<<62
				}
				history = append(history, porcupine.Operation{ClientId: c, Input: in, Call: call, Output: out, Return: ret})
				mu.Unlock()
			}
		}()
	}

	// The nemesis: kill -9 and restart one replica at a time, and request
	// snapshots, until the clients stop.
	nr := rand.New(rand.NewPCG(7, 7))
	kills := 0
	for time.Now().Before(end) {
		id := uint64(nr.IntN(3)) + 1
		if err := cl.stop(id, true); err != nil {
			t.Fatal(err)
		}
		kills++
		_, _ = cl.snapshot(ctx, id%3+1)
		if err := cl.start(id, false); err != nil {
			t.Fatal(err)
		}
		if _, err := cl.leader(ctx, []uint64{1, 2, 3}); err != nil {
			t.Fatal(err)
		}
		_, _ = cl.snapshot(ctx, (id+1)%3+1)
	}
	wg.Wait()
	t.Logf("%d operations in %s, %d kills: %v", len(history), dur, kills, counts)
	if counts["put ok"] == 0 || counts["get ok"] == 0 || counts["cas ok"] == 0 {
		t.Fatalf("too few successful operations to check anything: %v", counts)
	}
	res, info := porcupine.CheckOperationsVerbose(registerModel.ToModel(), history, time.Minute)
	switch res {
	case porcupine.Illegal:
		path := fmt.Sprintf("%s/linearizability-%d.html", os.TempDir(), time.Now().UnixNano())
		if f, err := os.Create(path); err == nil {
			_ = porcupine.Visualize(registerModel.ToModel(), info, f)
			f.Close()
		}
		t.Fatalf("history is not linearizable; visualization in %s", path)
	case porcupine.Unknown:
		t.Logf("the checker timed out (no violation found within a minute)")
	}
}

// randomRegInput is client c's operation number seq on one of keys: 40 %
// reads, 30 % writes of a unique value, 30 % compare-and-sets from the
// value the client last read (so that some succeed).
func randomRegInput(r *rand.Rand, keys []string, c, seq int, lastSeen map[string]string) regInput {
	in := regInput{key: keys[r.IntN(len(keys))]}
	switch x := r.IntN(10); {
	case x < 4:
		in.op = "get"
	case x < 7:
		in.op, in.value = "put", fmt.Sprintf("c%d-%d", c, seq)
	default:
		in.op, in.value, in.old = "cas", fmt.Sprintf("c%d-%d", c, seq), lastSeen[in.key]
	}
	return in
}

// linOp runs one operation against replica id.
func linOp(ctx context.Context, cl *localCluster, id uint64, in regInput) (regOutput, error) {
	return regOp(ctx, cl, id, in, false)
}

// regOp is linOp with reads served from the replica's local state when
// stale is set (a history that must then fail the check).
func regOp(ctx context.Context, cl *localCluster, id uint64, in regInput, stale bool) (regOutput, error) {
	u := cl.url(id, "/v1/kv/"+url.PathEscape(in.key))
	switch in.op {
	case "get":
		if stale {
			u += "?stale=true"
		}
		b, err := cl.do(ctx, http.MethodGet, u, nil)
		var he *httpError
		if errors.As(err, &he) && he.Status == http.StatusNotFound {
			return regOutput{}, nil
		}
		if err != nil {
			return regOutput{}, err
		}
		return regOutput{value: string(b), found: true}, nil
	case "put":
		_, err := cl.do(ctx, http.MethodPut, u, []byte(in.value))
		return regOutput{}, err
	default:
		_, err := cl.do(ctx, http.MethodPut, u+"?prev="+url.QueryEscape(in.old), []byte(in.value))
		var he *httpError
		if errors.As(err, &he) && he.Status == http.StatusPreconditionFailed {
			return regOutput{ok: false}, nil
		}
		if err != nil {
			return regOutput{}, err
		}
		return regOutput{ok: true}, nil
	}
}

// TestRegisterModel shows the checker can fail: a stale read after an
// acknowledged write, and a lost CAS, are flagged; an unknown outcome is
// allowed either way.
func TestRegisterModel(t *testing.T) {
	op := func(c int, in regInput, call int64, out regOutput, ret int64) porcupine.Operation {
		return porcupine.Operation{ClientId: c, Input: in, Call: call, Output: out, Return: ret}
	}
	put := regInput{op: "put", key: "k", value: "1"}
	get := regInput{op: "get", key: "k"}
	cas := regInput{op: "cas", key: "k", old: "1", value: "2"}
	m := registerModel.ToModel()
	cases := []struct {
		name    string
		history []porcupine.Operation
		want    bool
	}{
		{"read after write", []porcupine.Operation{op(0, put, 0, regOutput{}, 10), op(1, get, 20, regOutput{value: "1", found: true}, 30)}, true},
		{"stale read after write", []porcupine.Operation{op(0, put, 0, regOutput{}, 10), op(1, get, 20, regOutput{}, 30)}, false},
		{"concurrent read may miss", []porcupine.Operation{op(0, put, 0, regOutput{}, 30), op(1, get, 10, regOutput{}, 20)}, true},
		{"cas after write must swap", []porcupine.Operation{op(0, put, 0, regOutput{}, 10), op(1, cas, 20, regOutput{ok: false}, 30)}, false},
		{"cas then read", []porcupine.Operation{op(0, put, 0, regOutput{}, 10), op(1, cas, 20, regOutput{ok: true}, 30),
			op(0, get, 40, regOutput{value: "2", found: true}, 50)}, true},
		{"unknown write seen", []porcupine.Operation{op(0, put, 0, regOutput{unknown: true}, 1<<62), op(1, get, 20, regOutput{value: "1", found: true}, 30)}, true},
		{"unknown write unseen", []porcupine.Operation{op(0, put, 0, regOutput{unknown: true}, 1<<62), op(1, get, 20, regOutput{}, 30)}, true},
		{"value from nowhere", []porcupine.Operation{op(1, get, 20, regOutput{value: "9", found: true}, 30)}, false},
	}
	for _, c := range cases {
		if got := porcupine.CheckOperations(m, c.history); got != c.want {
			t.Errorf("%s: linearizable = %v, want %v", c.name, got, c.want)
		}
	}
}
