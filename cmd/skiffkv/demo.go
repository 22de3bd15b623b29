package main

import (
	"context"
	"crypto/sha256"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/skiffdb/skiff"
)

const demoUsage = `Usage: skiffkv demo [--dir DIR] [--keep] [--keys N] [--value-size BYTES]

Starts a 3-replica skiffkv cluster on 127.0.0.1 (child processes of this
binary, free ports), loads keys, takes a snapshot, stops a replica, writes
past its log so its entries are compacted away, wipes it, restarts it and
shows it catching up by snapshot install, checks every replica holds the
same data, and prints a summary.

Flags:
`

type demoConfig struct {
	dir        string
	keep       bool
	keys       int
	valueSize  int
	clients    int
	timeout    time.Duration
	serveFlags []string
}

func parseDemo(args []string, stderr io.Writer) (c demoConfig, err error) {
	c = demoConfig{clients: 32}
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	// A flag error is one line (runDemo prints it); --help prints usage.
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	defer func() {
		if errors.Is(err, flag.ErrHelp) {
			fs.SetOutput(stderr)
			fmt.Fprint(stderr, demoUsage)
			fs.PrintDefaults()
		}
	}()
	fs.StringVar(&c.dir, "dir", "", "keep the cluster's data in `DIR` (must be empty or absent; default a temporary directory, removed at the end)")
	fs.BoolVar(&c.keep, "keep", false, "leave the cluster running at the end and print URLs to try (Ctrl-C stops it)")
	fs.IntVar(&c.keys, "keys", 20000, "keys to load (`N`); as many again are written while a replica is down")
	fs.IntVar(&c.valueSize, "value-size", 1024, "value size in `BYTES`")
	fs.DurationVar(&c.timeout, "timeout", 3*time.Minute, "give up on the demo's steps after this long (--keep then runs until Ctrl-C)")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	switch {
	case fs.NArg() > 0:
		return c, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	case c.keys < 100:
		return c, errors.New("--keys must be at least 100")
	case c.valueSize < 1 || c.valueSize > 1<<20:
		return c, errors.New("--value-size must be between 1 and 1048576")
	}
	// Small snapshot spacing so the demo's writes compact the log well past
	// the stopped replica within seconds.
	// The overhead stays below the writes made while the replica is down,
	// and one scan holds every key (1.5 × --keys distinct ones).
	c.serveFlags = []string{"--snapshot-entries", strconv.Itoa(max(c.keys/4, 1000)),
		"--compaction-overhead", strconv.Itoa(min(1000, c.keys/4)),
		"--max-scan-keys", strconv.Itoa(max(100000, 2*c.keys))}
	return c, nil
}

func runDemo(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	c, err := parseDemo(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return exitOK
	}
	if err != nil {
		fmt.Fprintf(stderr, "skiffkv demo: %v (see --help)\n", err)
		return exitUsage
	}
	if err := demo(ctx, c, stdout); err != nil {
		fmt.Fprintf(stderr, "skiffkv demo: FAILED: %v\n", err)
		return exitFail
	}
	return exitOK
}

// demoStats is what the summary reports.
type demoStats struct {
	writes         int
	writeTime      time.Duration
	latencies      []time.Duration
	snapIndex      uint64
	snapTime       time.Duration
	compactedTo    uint64 // the leader's first index after the writes
	stoppedAt      uint64 // the stopped replica's last index
	catchUp        time.Duration
	installBytes   int64
	installIndex   uint64
	generate       time.Duration // the leader's on-demand data snapshot
	transfer       time.Duration // fetched, verified and published by the replica
	load           time.Duration // restored into the state machine, log reset
	keys           int           // distinct keys every replica holds
	identicalBytes int
}

func demo(ctx context.Context, c demoConfig, out io.Writer) (err error) {
	// The steps have a deadline; a cluster kept running (--keep) runs until
	// the parent context ends (Ctrl-C).
	keepCtx := ctx
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	bin, err := os.Executable()
	if err != nil {
		return err
	}
	dir := c.dir
	if dir == "" {
		if dir, err = os.MkdirTemp("", "skiffkv-demo-"); err != nil {
			return err
		}
		if !c.keep {
			defer os.RemoveAll(dir)
		}
	} else if entries, rerr := os.ReadDir(dir); rerr == nil && len(entries) > 0 {
		return fmt.Errorf("--dir %s is not empty", dir)
	}
	cl, err := newLocalCluster(bin, dir, 3, c.serveFlags)
	if err != nil {
		return err
	}
	defer func() {
		if serr := cl.stopAll(); serr != nil && err == nil {
			err = serr
		}
	}()
	all := []uint64{1, 2, 3}
	fmt.Fprintf(out, "skiffkv demo: 3 replicas on 127.0.0.1, data in %s\n", dir)
	for _, id := range all {
		if err := cl.start(id, false); err != nil {
			return err
		}
		n := cl.nodes[id]
		fmt.Fprintf(out, "  replica %d  raft %s  http http://%s  log %s\n", id, n.raftAddr, n.httpAddr, n.logPath)
	}
	leader, err := cl.leader(ctx, all)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "\n1. elected replica %d leader\n", leader)

	var st demoStats
	fmt.Fprintf(out, "\n2. loading %d keys of %d bytes through every replica (%d clients)\n", c.keys, c.valueSize, c.clients)
	expect := map[string]string{}
	if err := loadKeys(ctx, cl, out, "load", all, 0, c.keys, 1, c, expect, &st); err != nil {
		return err
	}

	start := time.Now()
	if st.snapIndex, err = cl.snapshot(ctx, leader); err != nil {
		return fmt.Errorf("snapshot: %w", err)
	}
	st.snapTime = time.Since(start)
	fmt.Fprintf(out, "\n3. took a snapshot on the leader at index %d in %s\n", st.snapIndex, fmtDuration(st.snapTime))

	victim := all[0]
	for _, id := range all {
		if id != leader {
			victim = id
			break
		}
	}
	vst, err := cl.status(ctx, victim)
	if err != nil {
		return err
	}
	st.stoppedAt = vst.LastIndex
	if err := cl.stop(victim, false); err != nil {
		return err
	}
	fmt.Fprintf(out, "\n4. stopped replica %d (its log ends at index %d)\n", victim, st.stoppedAt)

	live := slices.DeleteFunc(slices.Clone(all), func(id uint64) bool { return id == victim })
	fmt.Fprintf(out, "\n5. writing %d more keys while it is down\n", c.keys)
	if err := loadKeys(ctx, cl, out, "write", live, c.keys/2, c.keys, 2, c, expect, &st); err != nil {
		return err
	}
	// The leader keeps what a follower it heard from within an election
	// timeout still needs: with few keys the writes are over before the
	// stopped replica counts as gone, so write a little more and snapshot
	// again until the log is compacted past it.
	var lst statusBody
	extra := 0
	for {
		for _, id := range live {
			if _, err := cl.snapshot(ctx, id); err != nil {
				return fmt.Errorf("snapshot on replica %d: %w", id, err)
			}
		}
		if lst, err = cl.status(ctx, leader); err != nil {
			return err
		}
		st.compactedTo = lst.FirstIndex
		if st.compactedTo > st.stoppedAt+1 {
			break
		}
		if ctx.Err() != nil {
			return fmt.Errorf("the leader's log still starts at %d, not past the stopped replica's %d", st.compactedTo, st.stoppedAt)
		}
		select {
		case <-ctx.Done():
		case <-time.After(200 * time.Millisecond):
		}
		n := 50
		if err := loadKeys(ctx, cl, io.Discard, "more", live, c.keys/2+c.keys+extra, n, 2, c, expect, &st); err != nil {
			return err
		}
		extra += n
	}
	fmt.Fprintf(out, "   snapshots taken; the leader's log now starts at index %d, past replica %d's %d:\n"+
		"   it can only catch up by snapshot\n", st.compactedTo, victim, st.stoppedAt)

	if err := os.RemoveAll(cl.nodes[victim].dataDir); err != nil {
		return err
	}
	target := lst.Commit
	// Whichever live replica leads when the victim returns generates its
	// snapshot: sum over them.
	genBefore, err := cl.sumSnapshotSeconds(ctx, live, "generate")
	if err != nil {
		return err
	}
	restart := time.Now()
	if err := cl.start(victim, true); err != nil {
		return err
	}
	fmt.Fprintf(out, "\n6. wiped replica %d's data and restarted it empty; it catches up by snapshot install\n", victim)
	if err := watchCatchUp(ctx, cl, out, victim, target, restart, &st); err != nil {
		return err
	}
	// The phases as the hosts timed them.
	gen, err := cl.sumSnapshotSeconds(ctx, live, "generate")
	if err != nil {
		return err
	}
	transfer, err := cl.snapshotSeconds(ctx, victim, "transfer")
	if err != nil {
		return err
	}
	load, err := cl.snapshotSeconds(ctx, victim, "install")
	if err != nil {
		return err
	}
	st.generate = seconds(gen - genBefore)
	st.transfer, st.load = seconds(transfer), seconds(load)

	fmt.Fprintf(out, "\n7. checking every replica returns the same data\n")
	if err := checkAgree(ctx, cl, out, all, expect, &st); err != nil {
		return err
	}
	printSummary(out, c, st, victim)
	if c.keep {
		printKeep(out, cl, dir)
		<-keepCtx.Done()
		fmt.Fprintln(out, "stopping the cluster")
	}
	return nil
}

// value is the deterministic value of key in round r.
func value(key string, r, size int) []byte {
	b := make([]byte, size)
	h := sha256.Sum256([]byte(fmt.Sprintf("%s/%d", key, r)))
	const letters = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
	for i := range b {
		b[i] = letters[int(h[i%len(h)]+byte(i/len(h)))%len(letters)]
	}
	return b
}

// loadKeys writes keys [from, from+n) in round r through the replicas ids
// (round robin), retrying a write that failed with an unknown outcome
// (PUT is idempotent), and records every acknowledged value in expect.
func loadKeys(ctx context.Context, cl *localCluster, out io.Writer, label string, ids []uint64,
	from, n, r int, c demoConfig, expect map[string]string, st *demoStats) error {
	var (
		next, done atomic.Int64
		mu         sync.Mutex
		firstErr   error
		wg         sync.WaitGroup
	)
	lat := make([][]time.Duration, c.clients)
	bar := newProgress(out, label, int64(n), false)
	start := time.Now()
	stop := make(chan struct{})
	go func() {
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				bar.set(done.Load())
			}
		}
	}()
	for w := range c.clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				key := fmt.Sprintf("key-%07d", from+i)
				v := value(key, r, c.valueSize)
				id := ids[i%len(ids)]
				for attempt := 0; ; attempt++ {
					t0 := time.Now()
					err := cl.put(ctx, id, key, v)
					if err == nil {
						lat[w] = append(lat[w], time.Since(t0))
						break
					}
					if ctx.Err() != nil || attempt == 20 {
						mu.Lock()
						if firstErr == nil {
							firstErr = fmt.Errorf("PUT %s on replica %d: %w", key, id, err)
						}
						mu.Unlock()
						return
					}
					id = ids[(i+attempt+1)%len(ids)]
					select { // an election takes a few hundred ms
					case <-ctx.Done():
					case <-time.After(time.Duration(attempt+1) * 20 * time.Millisecond):
					}
				}
				mu.Lock()
				expect[key] = string(v)
				mu.Unlock()
				done.Add(1)
			}
		}()
	}
	wg.Wait()
	close(stop)
	bar.set(done.Load())
	bar.finish()
	if firstErr != nil {
		return firstErr
	}
	st.writes += n
	st.writeTime += time.Since(start)
	for _, l := range lat {
		st.latencies = append(st.latencies, l...)
	}
	return nil
}

// watchCatchUp shows the restarted replica's snapshot transfer until it
// has installed a snapshot and applied target.
func watchCatchUp(ctx context.Context, cl *localCluster, out io.Writer, id, target uint64,
	restart time.Time, st *demoStats) error {
	bar := newProgress(out, "install", 0, true)
	var fst statusBody
	err := cl.waitFor(ctx, "the restarted replica to catch up", []uint64{id}, func(ctx context.Context) (bool, error) {
		s, err := cl.status(ctx, id)
		if err != nil {
			return false, err
		}
		fst = s
		for _, t := range s.Transfers {
			if t.Direction == "receiving" && t.BytesTotal > 0 {
				bar.setTotal(t.BytesTotal)
				bar.set(t.BytesDone)
			}
		}
		return s.Applied >= target && hasEvent(s, skiff.SnapshotInstalled), nil
	})
	if err != nil {
		return err
	}
	st.catchUp = time.Since(restart)
	for _, e := range fst.Events {
		if e.Kind == skiff.SnapshotReceived.String() {
			st.installBytes, st.installIndex = e.Bytes, e.Index
		}
	}
	bar.setTotal(st.installBytes)
	bar.set(st.installBytes)
	bar.finish()
	fmt.Fprintf(out, "   installed the snapshot at index %d (%s) and applied up to %d in %s\n",
		st.installIndex, fmtBytes(st.installBytes), fst.Applied, fmtDuration(st.catchUp))
	return nil
}

// hasEvent reports whether st lists an event of kind k. The install is
// complete (state machine restored and log reset) only once the
// SnapshotInstalled event fired; the applied index moves before that.
func hasEvent(st statusBody, k skiff.EventKind) bool {
	for _, e := range st.Events {
		if e.Kind == k.String() {
			return true
		}
	}
	return false
}

// checkAgree reads every key from every replica (linearizable scans) and
// compares them with every acknowledged write.
func checkAgree(ctx context.Context, cl *localCluster, out io.Writer, ids []uint64, expect map[string]string, st *demoStats) error {
	var first []byte
	for _, id := range ids {
		got, raw, err := cl.scan(ctx, id, "key-", false)
		if err != nil {
			return fmt.Errorf("scan on replica %d: %w", id, err)
		}
		if len(got) != len(expect) {
			return fmt.Errorf("replica %d holds %d keys, want %d", id, len(got), len(expect))
		}
		for k, v := range expect {
			if got[k] != v {
				return fmt.Errorf("replica %d: key %s has a value other than the acknowledged one", id, k)
			}
		}
		if first == nil {
			first = raw
		} else if string(raw) != string(first) {
			return fmt.Errorf("replica %d's data differs from replica %d's", id, ids[0])
		}
		fmt.Fprintf(out, "   replica %d: %d keys, every acknowledged write present, sha256 %x\n",
			id, len(got), sha256.Sum256(raw))
	}
	st.identicalBytes = len(first)
	st.keys = len(expect)
	return nil
}

func seconds(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }

func percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[min(int(float64(len(s))*p), len(s)-1)]
}

func printSummary(out io.Writer, c demoConfig, st demoStats, victim uint64) {
	fmt.Fprintf(out, "\nsummary\n")
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	rate := float64(st.writes) / st.writeTime.Seconds()
	fmt.Fprintf(tw, "  writes\t%d × %d B in %s\t%.0f writes/s over HTTP, %d clients\n",
		st.writes, c.valueSize, fmtDuration(st.writeTime), rate, c.clients)
	fmt.Fprintf(tw, "  write latency\tp50 %s\tp99 %s\n",
		fmtDuration(percentile(st.latencies, 0.50)), fmtDuration(percentile(st.latencies, 0.99)))
	fmt.Fprintf(tw, "  snapshot request\tindex %d\t%s (metadata only: Pebble already holds the data)\n",
		st.snapIndex, fmtDuration(st.snapTime))
	fmt.Fprintf(tw, "  log compacted\tleader's log starts at %d\treplica %d stopped at %d\n", st.compactedTo, victim, st.stoppedAt)
	fmt.Fprintf(tw, "  snapshot sent\tindex %d\t%s (Pebble checkpoint files)\n", st.installIndex, fmtBytes(st.installBytes))
	fmt.Fprintf(tw, "  save\t%s\tthe leader generated the data snapshot on demand (a Pebble checkpoint)\n", fmtDuration(st.generate))
	transferRate := ""
	if st.transfer > 0 {
		transferRate = fmtBytes(int64(float64(st.installBytes)/st.transfer.Seconds())) + "/s"
	}
	fmt.Fprintf(tw, "  transfer\t%s\t%s\n", fmtDuration(st.transfer), transferRate)
	fmt.Fprintf(tw, "  load\t%s\trestore into Pebble and log reset\n", fmtDuration(st.load))
	fmt.Fprintf(tw, "  catch-up total\t%s\tfrom the restart (process start, first contact, save, transfer, load)\n", fmtDuration(st.catchUp))
	fmt.Fprintf(tw, "  replicas agree\tyes\t3 × %d keys identical (%s each)\n", st.keys, fmtBytes(int64(st.identicalBytes)))
	tw.Flush()
	fmt.Fprintln(out, "\nOK")
}

func printKeep(out io.Writer, cl *localCluster, dir string) {
	fmt.Fprintf(out, "\nthe cluster keeps running (data in %s); try:\n", dir)
	for id := uint64(1); id <= 3; id++ {
		fmt.Fprintf(out, "  replica %d: http://%s\n", id, cl.nodes[id].httpAddr)
	}
	u := "http://" + cl.nodes[1].httpAddr
	fmt.Fprintf(out, "  curl -X PUT --data-binary hello %s/v1/kv/greeting\n", u)
	fmt.Fprintf(out, "  curl %s/v1/kv/greeting\n", "http://"+cl.nodes[2].httpAddr)
	fmt.Fprintf(out, "  curl '%s/v1/kv?prefix=key-000001'\n", u)
	fmt.Fprintf(out, "  curl %s/v1/status\n", u)
	fmt.Fprintf(out, "press Ctrl-C to stop it\n")
}
