package main

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"

	"github.com/skiffdb/skiff"
)

// The network-chaos test: three skiffkv processes, each in its own Linux
// network namespace (see chaosNet), driven by concurrent clients while a
// seeded nemesis partitions, degrades and kills them; the history is
// checked with porcupine and the replicas must agree at the end. It needs
// root, so it runs only with SKIFF_CHAOS=1 (the README names it).

const (
	chaosReplicas  = 3
	chaosClients   = 8
	chaosRaftPort  = 7000 // each namespace has its own ports: no free-port race
	chaosHTTPPort  = 8000
	chaosOpTimeout = 3 * time.Second // a little over the replicas' --request-timeout
)

// chaosKeys are the registers; few enough that operations contend.
var chaosKeys = []string{"r0", "r1", "r2", "r3", "r4", "r5"}

// chaosDuration is SKIFF_CHAOS_SECONDS (default 30).
func chaosDuration(t *testing.T) time.Duration {
	s := os.Getenv("SKIFF_CHAOS_SECONDS")
	if s == "" {
		return 30 * time.Second
	}
	n, err := strconv.Atoi(s)
	if err != nil || n <= 0 {
		t.Fatalf("SKIFF_CHAOS_SECONDS=%q: want a positive integer", s)
	}
	return time.Duration(n) * time.Second
}

// chaosSeed is SKIFF_CHAOS_SEED, to replay a run's nemesis schedule (the
// interleaving with the clients still depends on timing), or a fresh one.
func chaosSeed(t *testing.T) uint64 {
	if s := os.Getenv("SKIFF_CHAOS_SEED"); s != "" {
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("SKIFF_CHAOS_SEED=%q: want an unsigned integer", s)
		}
		return n
	}
	return uint64(time.Now().UnixNano())
}

// chaosCluster is a localCluster whose replicas live in chaosNet's
// namespaces: the HTTP helpers (do, status, scan, snapshot, waitFor,
// leader, stop) work unchanged on the namespace addresses, and start runs
// the binary under `ip netns exec`.
type chaosCluster struct {
	*localCluster
	net *chaosNet
}

func newChaosCluster(bin, dir string, cn *chaosNet, extra []string) (*chaosCluster, error) {
	cl, err := newLocalCluster(bin, dir, chaosReplicas, extra)
	if err != nil {
		return nil, err
	}
	for id, n := range cl.nodes {
		n.raftAddr = net.JoinHostPort(cn.ip(id), strconv.Itoa(chaosRaftPort))
		n.httpAddr = net.JoinHostPort(cn.ip(id), strconv.Itoa(chaosHTTPPort))
	}
	return &chaosCluster{localCluster: cl, net: cn}, nil
}

// start launches replica id inside its namespace. `ip netns exec` execs
// the binary after entering the namespace, so the child is skiffkv itself
// and localCluster.stop's SIGKILL reaches it.
func (c *chaosCluster) start(id uint64) error {
	n := c.nodes[id]
	args := []string{"netns", "exec", c.net.ns[id-1], c.bin, "serve", "--id", strconv.FormatUint(id, 10),
		"--data", n.dataDir, "--raft-addr", n.raftAddr, "--http-addr", n.httpAddr, "--members", c.members()}
	args = append(args, c.extra...)
	logf, err := os.OpenFile(n.logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	cmd := exec.Command("ip", args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("start replica %d in %s: %w", id, c.net.ns[id-1], err)
	}
	exited := make(chan struct{})
	n.cmd, n.exited, n.exitErr = cmd, exited, nil
	go func() {
		err := cmd.Wait()
		logf.Close()
		n.exitErr = err
		close(exited)
	}()
	return nil
}

// fault is one nemesis action on one replica, undone by chaosNet.heal
// (and, for a kill, by restarting the replica).
type fault struct {
	kind   string
	target uint64
	p      float64 // probability, for loss / duplicate / reorder
	oneWay string  // "in" or "out", for a one-way partition
}

func (f fault) String() string {
	switch {
	case f.p > 0:
		return fmt.Sprintf("%s replica %d p=%.2f", f.kind, f.target, f.p)
	case f.oneWay != "":
		return fmt.Sprintf("%s replica %d (drop %s)", f.kind, f.target, f.oneWay)
	}
	return fmt.Sprintf("%s replica %d", f.kind, f.target)
}

// chaosNemesis picks faults from its seeded source and applies them.
type chaosNemesis struct {
	cl   *chaosCluster
	r    *rand.Rand
	logf func(string, ...any)
}

// kinds lists the faults this machine supports.
func (nm *chaosNemesis) kinds() []string {
	k := []string{"link-down", "kill"}
	if nm.cl.net.haveIptables {
		k = append(k, "isolate", "isolate-leader", "one-way", "loss", "duplicate")
	}
	if nm.cl.net.haveShaping && nm.cl.net.haveIptables {
		k = append(k, "reorder", "delay")
	}
	return k
}

// pick chooses the next fault; isolate-leader asks the replicas who leads
// (falling back to a random replica when none answers).
func (nm *chaosNemesis) pick(ctx context.Context, kinds []string) fault {
	f := fault{kind: kinds[nm.r.IntN(len(kinds))], target: uint64(nm.r.IntN(chaosReplicas)) + 1}
	switch f.kind {
	case "isolate-leader":
		sctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		for id := uint64(1); id <= chaosReplicas; id++ {
			if st, err := nm.cl.status(sctx, id); err == nil && st.Leader != 0 {
				f.target = st.Leader
				break
			}
		}
	case "one-way":
		f.oneWay = []string{"in", "out"}[nm.r.IntN(2)]
	case "loss":
		f.p = 0.1 + 0.3*nm.r.Float64()
	case "duplicate":
		f.p = 0.1 + 0.4*nm.r.Float64()
	case "reorder":
		f.p = 0.05 + 0.25*nm.r.Float64()
	}
	return f
}

// peers are the addresses replica id talks Raft with.
func (nm *chaosNemesis) peers(id uint64) []string {
	var out []string
	for p := uint64(1); p <= chaosReplicas; p++ {
		if p != id {
			out = append(out, nm.cl.net.ip(p))
		}
	}
	return out
}

// apply starts fault f. Partitions cut a replica from its peers only: the
// clients still reach it, so they exercise a minority replica (reads must
// not be served stale, writes must not be acknowledged).
func (nm *chaosNemesis) apply(ctx context.Context, f fault) error {
	cn, id := nm.cl.net, f.target
	prob := strconv.FormatFloat(f.p, 'f', 3, 64)
	var rules [][]string
	switch f.kind {
	case "link-down":
		return cn.setLink(ctx, id, false)
	case "kill":
		return nm.cl.stop(id, true)
	case "isolate", "isolate-leader":
		for _, p := range nm.peers(id) {
			rules = append(rules, []string{"-A", "INPUT", "-s", p, "-j", "DROP"}, []string{"-A", "OUTPUT", "-d", p, "-j", "DROP"})
		}
	case "one-way":
		for _, p := range nm.peers(id) {
			if f.oneWay == "in" {
				rules = append(rules, []string{"-A", "INPUT", "-s", p, "-j", "DROP"})
			} else {
				rules = append(rules, []string{"-A", "OUTPUT", "-d", p, "-j", "DROP"})
			}
		}
	case "loss":
		for _, chain := range []string{"INPUT", "OUTPUT"} {
			rules = append(rules, []string{"-A", chain, "-m", "statistic", "--mode", "random", "--probability", prob, "-j", "DROP"})
		}
	case "duplicate":
		// TEE routes a clone to the packet's own destination.
		for _, dst := range append(nm.peers(id), cn.clientIP()) {
			rules = append(rules, []string{"-t", "mangle", "-A", "POSTROUTING", "-o", "eth0", "-d", dst,
				"-m", "statistic", "--mode", "random", "--probability", prob, "-j", "TEE", "--gateway", dst})
		}
	case "reorder":
		rules = append(rules, []string{"-t", "mangle", "-A", "POSTROUTING", "-o", "eth0",
			"-m", "statistic", "--mode", "random", "--probability", prob, "-j", "CLASSIFY", "--set-class", classReorder})
	case "delay":
		rules = append(rules, []string{"-t", "mangle", "-A", "POSTROUTING", "-o", "eth0", "-j", "CLASSIFY", "--set-class", classDelay})
	default:
		return fmt.Errorf("chaos: unknown fault %q", f.kind)
	}
	for _, r := range rules {
		if err := cn.iptables(ctx, id, r...); err != nil {
			return err
		}
	}
	return nil
}

// heal undoes every fault and restarts the replicas that are down.
func (nm *chaosNemesis) heal(ctx context.Context) error {
	errs := []error{nm.cl.net.heal(ctx)}
	for id := uint64(1); id <= chaosReplicas; id++ {
		if nm.cl.nodes[id].cmd == nil {
			errs = append(errs, nm.cl.start(id))
		}
	}
	return errors.Join(errs...)
}

// run applies faults until ctx ends: each held for 1–4 s, then healed,
// then 0.5–1.5 s of calm; snapshots are requested now and then, during
// faults and between them. It returns how many of each fault it applied.
func (nm *chaosNemesis) run(ctx context.Context, begin time.Time) (map[string]int, error) {
	counts := map[string]int{}
	kinds := nm.kinds()
	nm.logf("nemesis: faults %v", kinds)
	wait := func(d time.Duration) bool {
		select {
		case <-ctx.Done():
			return false
		case <-time.After(d):
			return true
		}
	}
	snapshot := func() {
		id := uint64(nm.r.IntN(chaosReplicas)) + 1
		if nm.cl.nodes[id].cmd == nil || ctx.Err() != nil {
			return
		}
		sctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		idx, err := nm.cl.snapshot(sctx, id)
		nm.logf("nemesis %7.2fs: snapshot on replica %d: index %d, err %v", time.Since(begin).Seconds(), id, idx, err)
		counts["snapshot"]++
	}
	for ctx.Err() == nil {
		// A replica that died on its own must fail the test, not be
		// restarted by the next heal as if the nemesis had killed it.
		for id := uint64(1); id <= chaosReplicas; id++ {
			if err := nm.cl.running(id); err != nil {
				return counts, err
			}
		}
		f := nm.pick(ctx, kinds)
		hold := time.Duration(1000+nm.r.IntN(3000)) * time.Millisecond
		nm.logf("nemesis %7.2fs: %s for %s", time.Since(begin).Seconds(), f, hold)
		if err := nm.apply(ctx, f); err != nil {
			return counts, fmt.Errorf("apply %s: %w", f, err)
		}
		counts[f.kind]++
		if nm.r.IntN(2) == 0 {
			snapshot()
		}
		wait(hold)
		if nm.cl.net.haveIptables {
			hctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			hits, err := nm.cl.net.ruleHits(hctx, f.target)
			cancel()
			if err != nil {
				return counts, err
			}
			if hits > 0 {
				nm.logf("nemesis %7.2fs: the rules matched %d packets", time.Since(begin).Seconds(), hits)
			}
		}
		// Healing must happen even when ctx has ended: use a fresh one.
		hctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		err := nm.heal(hctx)
		cancel()
		if err != nil {
			return counts, fmt.Errorf("heal after %s: %w", f, err)
		}
		nm.logf("nemesis %7.2fs: healed", time.Since(begin).Seconds())
		if nm.r.IntN(3) == 0 {
			snapshot()
		}
		wait(time.Duration(500+nm.r.IntN(1000)) * time.Millisecond)
	}
	return counts, nil
}

// chaosOp runs one operation against replica id (see linOp); with stale,
// a read is served from the replica's local state.
func chaosOp(ctx context.Context, cl *chaosCluster, id uint64, in regInput, stale bool) (regOutput, error) {
	return regOp(ctx, cl.localCluster, id, in, stale)
}

// notSent reports whether err says the request never reached a replica:
// the connection could not be made. Such a write certainly did not happen
// (net/http resends a PUT on a new connection only when nothing of it was
// written on the old one), so it can leave the history instead of adding
// an unknown outcome for the checker to place.
func notSent(err error) bool {
	var oe *net.OpError
	return errors.As(err, &oe) && oe.Op == "dial"
}

// outcome names how an operation ended, for the per-outcome counts.
func outcome(err error) string {
	var he *httpError
	switch {
	case err == nil:
		return "ok"
	case notSent(err):
		return "not sent"
	case errors.As(err, &he):
		return fmt.Sprintf("%d %s", he.Status, he.Code)
	case errors.Is(err, context.DeadlineExceeded):
		return "client timeout"
	}
	return "connection error"
}

// TestChaosLinearizability runs reads, writes and compare-and-sets from
// concurrent clients against three replicas in separate network
// namespaces while a seeded nemesis isolates replicas (the leader among
// them), cuts links one way, takes them down, drops, duplicates, delays and
// reorders packets, kills replicas with SIGKILL and requests snapshots. At
// the end, with everything healed, the replicas must converge to the same
// applied index and the same contents, and the history (including a final
// read of every key) must be linearizable.
func TestChaosLinearizability(t *testing.T) {
	if os.Getenv("SKIFF_CHAOS") != "1" {
		t.Skip("network-chaos test: run as root with SKIFF_CHAOS=1 (see README)")
	}
	if why := chaosPrereqs(); why != "" {
		t.Skip(why)
	}
	goroutines := runtime.NumGoroutine()
	dur, seed := chaosDuration(t), chaosSeed(t)
	// SKIFF_CHAOS_STALE_READS=1 sends the reads with ?stale=true (served
	// from the replica's own state, no ReadIndex): a run must then fail,
	// which shows the nemesis and the checker catch stale reads.
	staleReads := os.Getenv("SKIFF_CHAOS_STALE_READS") == "1"
	if staleReads {
		t.Logf("SKIFF_CHAOS_STALE_READS=1: reads are local; this run is expected to fail")
	}
	t.Logf("seed %d (SKIFF_CHAOS_SEED=%d replays the nemesis schedule), %s", seed, seed, dur)
	bin := skiffkvBinary(t)

	// The replicas' data and logs outlive a failed run (t.TempDir would
	// not), so that the failure can be investigated.
	dir, err := os.MkdirTemp("", "skiff-chaos-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("replicas' data and logs kept in %s", dir)
			return
		}
		os.RemoveAll(dir)
	})
	setupCtx, cancelSetup := context.WithTimeout(context.Background(), time.Minute)
	defer cancelSetup()
	cn, err := newChaosNet(setupCtx, chaosReplicas, t.Logf)
	if err != nil {
		t.Fatal(err)
	}
	cl, err := newChaosCluster(bin, dir, cn, []string{"--snapshot-entries", "200", "--compaction-overhead", "20", "--request-timeout", "2s"})
	if err != nil {
		t.Fatal(errors.Join(err, cn.close(context.Background())))
	}
	// Cleanups run last-registered first: stop the replicas, delete the
	// network, check no goroutine of ours is left, remove the data.
	t.Cleanup(func() {
		cl.http.CloseIdleConnections()
		deadline := time.Now().Add(10 * time.Second)
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for runtime.NumGoroutine() > goroutines {
			if time.Now().After(deadline) {
				buf := make([]byte, 1<<20)
				t.Errorf("%d goroutines before, %d after:\n%s", goroutines, runtime.NumGoroutine(), buf[:runtime.Stack(buf, true)])
				return
			}
			<-tick.C
		}
	})
	t.Cleanup(func() {
		if err := cn.close(context.Background()); err != nil {
			t.Errorf("deleting the chaos network: %v", err)
		}
	})
	t.Cleanup(func() {
		for id := uint64(1); id <= chaosReplicas; id++ {
			// Replicas may be unreachable or mid-fault: kill, the data
			// is only kept for a failure's investigation.
			_ = cl.stop(id, true)
		}
		if t.Failed() {
			for id, n := range cl.nodes {
				t.Logf("replica %d log tail (%s):\n%s", id, n.logPath, tail(n.logPath, 40))
			}
		}
	})

	for id := uint64(1); id <= chaosReplicas; id++ {
		if err := cl.start(id); err != nil {
			t.Fatal(err)
		}
	}
	all := []uint64{1, 2, 3}
	if _, err := cl.leader(setupCtx, all); err != nil {
		t.Fatal(err)
	}

	var (
		mu      sync.Mutex
		history []porcupine.Operation
		counts  = map[string]int{}
	)
	begin := time.Now()
	now := func() int64 { return int64(time.Since(begin)) }
	runCtx, stopRun := context.WithTimeout(context.Background(), dur)
	defer stopRun()
	var wg sync.WaitGroup
	for c := range chaosClients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(seed, uint64(c)))
			lastSeen := map[string]string{} // CAS from the value last read, so that some succeed
			for seq := 0; runCtx.Err() == nil; seq++ {
				in := randomRegInput(r, chaosKeys, c, seq, lastSeen)
				// Not runCtx: an operation cut by the end of the run would
				// count as unknown for no reason.
				opCtx, cancel := context.WithTimeout(context.Background(), chaosOpTimeout)
				call := now()
				out, err := chaosOp(opCtx, cl, uint64(r.IntN(chaosReplicas))+1, in, staleReads)
				ret := now()
				cancel()
				mu.Lock()
				counts[in.op+" "+outcome(err)]++
				switch {
				case err == nil:
					if in.op == "get" && out.found {
						lastSeen[in.key] = out.value
					}
				case in.op == "get" || notSent(err):
					mu.Unlock()
					continue // a failed read, or a request never sent, changed nothing
				default:
					// Whatever the error, the write may have happened.
					out, ret = regOutput{unknown: true}, 1<<62
				}
				history = append(history, porcupine.Operation{ClientId: c, Input: in, Call: call, Output: out, Return: ret})
				mu.Unlock()
			}
		}()
	}

	nm := &chaosNemesis{cl: cl, r: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)), logf: t.Logf}
	faults, nemErr := nm.run(runCtx, begin)
	stopRun() // early if the nemesis failed
	wg.Wait()
	// Heal everything even if the nemesis stopped on an error.
	healCtx, cancelHeal := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancelHeal()
	if err := nm.heal(healCtx); err != nil {
		nemErr = errors.Join(nemErr, err)
	}
	if nemErr != nil {
		t.Fatalf("nemesis: %v", nemErr)
	}
	t.Logf("%d operations in %s; faults %v", len(history), dur, faults)
	t.Logf("outcomes: %s", formatCounts(counts))

	// Every replica's linearizable scan must be the same; each scan is also
	// a read of every key, added to the history. NB: a write whose client
	// gave up can still commit after the replicas look converged (a
	// proposal held up in a replica that was cut off is forwarded once its
	// connection recovers), so the scans count only if the applied index
	// did not move while they were taken; otherwise they are taken again.
	retried := false
	for round := 1; ; round++ {
		before, err := chaosConverge(healCtx, cl)
		if err != nil {
			t.Fatal(err)
		}
		scans := map[uint64]map[string]string{}
		for _, id := range all {
			// Retried: a replica whose link was just brought back up
			// may still be waiting out TCP's retransmission backoff.
			var call, ret int64
			err := cl.waitFor(healCtx, fmt.Sprintf("a scan on replica %d", id), all, func(ctx context.Context) (bool, error) {
				var err error
				call = now()
				scans[id], _, err = cl.scan(ctx, id, "r", false)
				ret = now()
				if err != nil {
					t.Logf("final scan on replica %d: %v (retrying)", id, err)
					retried = true
				}
				return err == nil, err
			})
			if err != nil {
				t.Fatal(err)
			}
			for _, k := range chaosKeys {
				v, found := scans[id][k]
				history = append(history, porcupine.Operation{ClientId: chaosClients + int(id),
					Input: regInput{op: "get", key: k}, Call: call, Output: regOutput{value: v, found: found}, Return: ret})
			}
		}
		after, err := chaosConverge(healCtx, cl)
		if err != nil {
			t.Fatal(err)
		}
		if after != before {
			t.Logf("the applied index moved from %d to %d during the final scans (a late write): scanning again", before, after)
			retried = true
			if round == 10 {
				t.Fatalf("the applied index is still moving after %d rounds of final scans", round)
			}
			continue
		}
		t.Logf("converged: every replica applied index %d", after)
		for _, id := range all[1:] {
			if !maps.Equal(scans[1], scans[id]) {
				t.Errorf("at applied index %d, replica %d's scan %v differs from replica 1's %v", after, id, scans[id], scans[1])
			}
		}
		break
	}
	if retried {
		// Why a converged replica could not serve a read, or the
		// index moved: the replicas' view of the leadership.
		chaosLeaderEvents(healCtx, t, cl, begin)
	}
	if counts["put ok"] == 0 || counts["get ok"] == 0 || counts["cas ok"] == 0 {
		t.Fatalf("too few successful operations to check anything: %v", counts)
	}
	checkFor := max(time.Minute, dur)
	checkStart := time.Now()
	res, info := porcupine.CheckOperationsVerbose(registerModel.ToModel(), history, checkFor)
	t.Logf("porcupine: %s in %s", res, time.Since(checkStart).Round(time.Millisecond))
	switch res {
	case porcupine.Illegal:
		path := filepath.Join(os.TempDir(), fmt.Sprintf("skiff-chaos-%d.html", seed))
		if f, err := os.Create(path); err == nil {
			_ = porcupine.Visualize(registerModel.ToModel(), info, f)
			f.Close()
		}
		t.Fatalf("seed %d: history is not linearizable; visualization in %s", seed, path)
	case porcupine.Unknown:
		t.Logf("the checker timed out after %s (no violation found)", checkFor)
	default:
		t.Logf("history of %d operations is linearizable", len(history))
	}
}

// chaosConverge waits until every replica is up, agrees on the leader, and
// has applied everything committed, at one index; it returns that index.
func chaosConverge(ctx context.Context, cl *chaosCluster) (uint64, error) {
	var applied uint64
	all := []uint64{1, 2, 3}
	err := cl.waitFor(ctx, "convergence", all, func(ctx context.Context) (bool, error) {
		var sts []statusBody
		for _, id := range all {
			st, err := cl.status(ctx, id)
			if err != nil {
				return false, err
			}
			if st.Failed != "" {
				return false, fmt.Errorf("replica %d failed: %s", id, st.Failed)
			}
			sts = append(sts, st)
		}
		applied = sts[0].Applied
		for _, st := range sts {
			if st.Leader == 0 || st.Leader != sts[0].Leader || st.Applied != applied || st.Commit != applied {
				return false, nil
			}
		}
		return true, nil
	})
	return applied, err
}

// chaosLeaderEvents logs each replica's recent leader changes (from the
// events in /v1/status), timed from begin.
func chaosLeaderEvents(ctx context.Context, t *testing.T, cl *chaosCluster, begin time.Time) {
	for id := uint64(1); id <= chaosReplicas; id++ {
		st, err := cl.status(ctx, id)
		if err != nil {
			t.Logf("replica %d: status: %v", id, err)
			continue
		}
		var evs []string
		for _, e := range st.Events {
			if e.Kind == skiff.LeaderChanged.String() {
				evs = append(evs, fmt.Sprintf("%.2fs term %d leader %d", e.Time.Sub(begin).Seconds(), e.Term, e.Peer))
			}
		}
		t.Logf("replica %d (now term %d, leader %d) leader changes: %s", id, st.Term, st.Leader, strings.Join(evs, "; "))
	}
}

// formatCounts prints counts sorted by name, for a stable log line.
func formatCounts(counts map[string]int) string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(counts)) {
		parts = append(parts, fmt.Sprintf("%s=%d", k, counts[k]))
	}
	return strings.Join(parts, " ")
}
