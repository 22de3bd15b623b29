package testcluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/skiffdb/skiff"
	"github.com/skiffdb/skiff/statemachine"
	"github.com/skiffdb/skiff/transport/memnet"
)

// DeploymentID is the deployment every host of a Cluster belongs to.
const DeploymentID = 0x5eed

// Host directories and timing shared by every host of a Cluster.
const (
	dataDir = "/skiff"
	smDir   = "/sm"
	// TickInterval is the hosts' Raft tick. Under synctest it costs no
	// real time; an election takes about 10 ticks.
	TickInterval = 10 * time.Millisecond
	// WaitTimeout bounds every wait of the harness (in fake time under
	// synctest): WaitLeader, WaitApplied, Eventually and the retries of
	// Propose.
	WaitTimeout = 60 * time.Second
	// attemptTimeout bounds one attempt of a proposal or read.
	attemptTimeout = 2 * time.Second
	// retryPause is the wait between two attempts (about an election).
	retryPause = 100 * time.Millisecond
	// minDelay and maxDelay bound the network's default delay.
	minDelay = 100 * time.Microsecond
	maxDelay = time.Millisecond
	// logSegmentBytes is the hosts' default WAL segment size.
	logSegmentBytes = 1 << 20
)

// Config describes a Cluster.
type Config struct {
	// Hosts is the number of hosts (default 3).
	Hosts int
	// Groups are started on every host with the hosts as initial members
	// (default {1}). The replica of a group on host i has ID i+1.
	Groups []skiff.GroupID
	// Seed drives the network's faults and the crash clones.
	Seed int64
	// Group tweaks every replica's GroupConfig before it starts (PreVote
	// and CheckQuorum are on by default).
	Group func(*skiff.GroupConfig)
	// Host tweaks every host's HostConfig before it opens.
	Host func(*skiff.HostConfig)
	// StateMachine creates the replicas' state machines (default NewKV,
	// or an OnDiskKV on the host's file system when OnDisk is set).
	StateMachine skiff.CreateFunc
	// OnDisk makes the default state machine an OnDiskKV that keeps its
	// data in the host's (crashable) file system.
	OnDisk bool
	// Provision lists directories, relative to the host's data directory,
	// created durably on every new disk before the host first opens (the
	// data directory itself always is, as an operator would create it).
	Provision []string
}

// HostEvent is an event and the index of the host that reported it.
type HostEvent struct {
	Host int
	skiff.Event
}

// Cluster is N hosts on one memnet network, each on its own crashable
// in-memory file system. Its methods are safe for concurrent use, except
// that Crash, Stop, Restart and Wipe of one host must not race each
// other. Methods that fail the test (New, Propose, WaitLeader, ...) must
// be called from the test's goroutine; the Try variants return errors
// and may be called from any goroutine.
type Cluster struct {
	t   testing.TB
	cfg Config
	net *memnet.Network
	log *slog.Logger

	mu          sync.Mutex
	rng         *rand.Rand // crash clones
	hosts       []*hostState
	events      []HostEvent
	nextReplica map[skiff.GroupID]skiff.ReplicaID
	closed      bool
}

// hostState is one host: its disk survives Crash and Stop.
type hostState struct {
	addr string
	fs   *vfs.MemFS
	host *skiff.Host // nil while down
	// groups this host runs, or ran when it went down (Restart starts
	// them again), by group.
	groups map[skiff.GroupID]*replica
	// sms is the state machine last created for each group.
	sms map[skiff.GroupID]statemachine.StateMachine
	// incarnation counts the host's opens and crashes: events of an
	// incarnation that crashed are not recorded (a crashed host does
	// nothing after the crash instant; its teardown is not history).
	incarnation int
}

// replica is a group's replica on a host.
type replica struct {
	cfg     skiff.GroupConfig
	running bool
}

// New starts a cluster: the hosts on memnet, then every group of
// cfg.Groups on every host. Call it inside synctest.Test so that time is
// fake; Close runs at t.Cleanup.
func New(t testing.TB, cfg Config) *Cluster {
	t.Helper()
	if cfg.Hosts == 0 {
		cfg.Hosts = 3
	}
	if len(cfg.Groups) == 0 {
		cfg.Groups = []skiff.GroupID{1}
	}
	c := &Cluster{
		t:           t,
		cfg:         cfg,
		net:         memnet.New(memnet.Config{Seed: cfg.Seed}),
		log:         newLogger(t),
		rng:         rand.New(rand.NewPCG(uint64(cfg.Seed), 0x63726173)),
		nextReplica: make(map[skiff.GroupID]skiff.ReplicaID),
	}
	t.Cleanup(c.Close)
	members := make(map[skiff.ReplicaID]string, cfg.Hosts)
	for i := 0; i < cfg.Hosts; i++ {
		addr := fmt.Sprintf("host%d", i+1)
		c.hosts = append(c.hosts, &hostState{
			addr:   addr,
			fs:     c.newDisk(),
			groups: make(map[skiff.GroupID]*replica),
			sms:    make(map[skiff.GroupID]statemachine.StateMachine),
		})
		members[skiff.ReplicaID(i+1)] = addr
	}
	// Every message takes a little fake time: a message loop between
	// hosts (a livelock) then consumes fake time and fails a wait,
	// instead of keeping the bubble busy so that time never advances.
	c.net.SetDelay(minDelay, maxDelay)
	for i := range c.hosts {
		host, err := c.open(i)
		if err != nil {
			t.Fatalf("open host %d: %v", i, err)
		}
		c.publish(i, host)
	}
	for _, g := range cfg.Groups {
		c.nextReplica[g] = skiff.ReplicaID(cfg.Hosts + 1)
		for i := range c.hosts {
			gc := c.groupConfig(g, skiff.ReplicaID(i+1))
			gc.Members = members
			if err := c.startGroup(i, c.Host(i), gc); err != nil {
				t.Fatalf("start group %d on host %d: %v", g, i, err)
			}
		}
	}
	return c
}

// newLogger discards the hosts' logs unless SKIFF_TEST_LOG is set (to
// "debug" or anything else for warnings), then they go to t.Log.
func newLogger(t testing.TB) *slog.Logger {
	lvl, ok := os.LookupEnv("SKIFF_TEST_LOG")
	if !ok {
		return slog.New(slog.DiscardHandler)
	}
	level := slog.LevelWarn
	if lvl == "debug" {
		level = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: level}))
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(string(p))
	return len(p), nil
}

func (c *Cluster) groupConfig(g skiff.GroupID, id skiff.ReplicaID) skiff.GroupConfig {
	gc := skiff.GroupConfig{GroupID: g, ReplicaID: id, PreVote: true, CheckQuorum: true}
	if c.cfg.Group != nil {
		c.cfg.Group(&gc)
	}
	gc.GroupID, gc.ReplicaID = g, id
	return gc
}

// provision makes a new disk's directories durable, as an operator's
// mkdir on a real disk followed by a sync would: the host's data
// directory, the on-disk state machines' directory and extra (under the
// data directory).
func provision(fs *vfs.MemFS, extra []string) error {
	dirs := []string{dataDir, smDir}
	for _, d := range extra {
		dirs = append(dirs, fs.PathJoin(dataDir, d))
	}
	for _, dir := range dirs {
		if err := fs.MkdirAll(dir, 0o755); err != nil {
			return err
		}
	}
	// Sync every directory that gained an entry, children first.
	synced := map[string]bool{}
	for _, dir := range dirs {
		for d := dir; d != "/" && d != "."; d = fs.PathDir(d) {
			p := fs.PathDir(d)
			if synced[p] {
				continue
			}
			synced[p] = true
			f, err := fs.OpenDir(p)
			if err != nil {
				return err
			}
			err = f.Sync()
			f.Close()
			if err != nil {
				return err
			}
		}
	}
	return nil
}

// newDisk returns a provisioned, empty crashable file system.
func (c *Cluster) newDisk() *vfs.MemFS {
	fs := vfs.NewCrashableMem()
	if err := provision(fs, c.cfg.Provision); err != nil {
		c.t.Fatalf("provision a disk: %v", err)
	}
	return fs
}

// open opens host i on its current file system; publish makes it
// visible to Host(i).
func (c *Cluster) open(i int) (*skiff.Host, error) {
	c.mu.Lock()
	h := c.hosts[i]
	if h.host != nil {
		c.mu.Unlock()
		return nil, fmt.Errorf("host %d is running", i)
	}
	fs := h.fs
	c.mu.Unlock()
	hc := skiff.HostConfig{
		Dir:          dataDir,
		DeploymentID: DeploymentID,
		FS:           fs,
		TickInterval: TickInterval,
		// NB: a crashable MemFS copies a whole file on every Sync, so the
		// default 64 MiB preallocated WAL segment would make each fsync a
		// 64 MiB copy.
		LogSegmentBytes: logSegmentBytes,
		Logger:          c.log,
	}
	if c.cfg.Host != nil {
		c.cfg.Host(&hc)
	}
	// The harness owns these: the disk, the network and the event log.
	hc.Dir, hc.FS = dataDir, fs
	hc.Transport = c.net.Endpoint(h.addr, DeploymentID)
	user := hc.Listener
	c.mu.Lock()
	h.incarnation++
	inc := h.incarnation
	c.mu.Unlock()
	hc.Listener = func(e skiff.Event) {
		c.mu.Lock()
		if c.hosts[i].incarnation != inc {
			c.mu.Unlock()
			return
		}
		c.events = append(c.events, HostEvent{Host: i, Event: e})
		c.mu.Unlock()
		if user != nil {
			user(e)
		}
	}
	return skiff.Open(hc)
}

func (c *Cluster) publish(i int, host *skiff.Host) {
	c.mu.Lock()
	c.hosts[i].host = host
	c.mu.Unlock()
}

// create returns the CreateFunc for replicas on host i: the configured
// one, recorded so that StateMachine can find what it made.
func (c *Cluster) create(i int) skiff.CreateFunc {
	c.mu.Lock()
	fs := c.hosts[i].fs
	c.mu.Unlock()
	inner := c.cfg.StateMachine
	if inner == nil {
		inner = NewKV
		if c.cfg.OnDisk {
			inner = NewOnDiskKV(fs, smDir)
		}
	}
	return func(group, r uint64) statemachine.StateMachine {
		sm := inner(group, r)
		c.mu.Lock()
		c.hosts[i].sms[skiff.GroupID(group)] = sm
		c.mu.Unlock()
		return sm
	}
}

// startGroup starts a replica on host i (opened, maybe not yet
// published).
func (c *Cluster) startGroup(i int, host *skiff.Host, gc skiff.GroupConfig) error {
	if host == nil {
		return fmt.Errorf("host %d is down", i)
	}
	ctx, cancel := context.WithTimeout(context.Background(), WaitTimeout)
	defer cancel()
	if err := host.StartGroup(ctx, gc, c.create(i)); err != nil {
		return err
	}
	c.mu.Lock()
	c.hosts[i].groups[gc.GroupID] = &replica{cfg: gc, running: true}
	c.mu.Unlock()
	return nil
}

// N returns the number of hosts.
func (c *Cluster) N() int { return len(c.hosts) }

// Host returns host i, or nil while it is down.
func (c *Cluster) Host(i int) *skiff.Host {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.hosts[i].host
}

// Addr returns host i's address on the network.
func (c *Cluster) Addr(i int) string { return c.hosts[i].addr }

// Network returns the network, for fault rates (SetDropRate, SetDelay...).
func (c *Cluster) Network() *memnet.Network { return c.net }

// FS returns host i's current file system (replaced by Crash and Wipe).
func (c *Cluster) FS(i int) *vfs.MemFS {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.hosts[i].fs
}

// ReplicaID returns the ID of group g's replica on host i (0: none).
func (c *Cluster) ReplicaID(i int, g skiff.GroupID) skiff.ReplicaID {
	c.mu.Lock()
	defer c.mu.Unlock()
	if r := c.hosts[i].groups[g]; r != nil {
		return r.cfg.ReplicaID
	}
	return 0
}

// StateMachine returns the state machine last created for group g on host
// i (nil if none): a *KV or *OnDiskKV with the default state machines.
func (c *Cluster) StateMachine(i int, g skiff.GroupID) statemachine.StateMachine {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.hosts[i].sms[g]
}

// Partition splits the hosts into sides (hosts listed nowhere form one
// more side); snapshot-lane connections across the cut are closed.
func (c *Cluster) Partition(sides ...[]int) {
	addrs := make([][]string, len(sides))
	for s, side := range sides {
		for _, i := range side {
			addrs[s] = append(addrs[s], c.Addr(i))
		}
	}
	c.net.Partition(addrs...)
}

// Isolate cuts host i off from every other host until Heal.
func (c *Cluster) Isolate(i int) { c.net.Isolate(c.Addr(i)) }

// Heal removes every partition and isolation.
func (c *Cluster) Heal() { c.net.Heal() }

// Crash simulates a power loss on host i: its file system is replaced by
// a crash clone that keeps every synced byte and a seeded random share
// (0–100 %) of the unsynced ones, then the host is closed abruptly (what
// it writes while closing goes to the discarded file system). Restart
// brings it back on the clone.
func (c *Cluster) Crash(i int) {
	c.t.Helper()
	c.crash(i, -1)
}

// crash clones host i's disk keeping pct % of its unsynced data (-1: a
// seeded random share) and closes the host.
func (c *Cluster) crash(i, pct int) {
	c.t.Helper()
	c.mu.Lock()
	h := c.hosts[i]
	host := h.host
	if host == nil {
		c.mu.Unlock()
		c.t.Fatalf("crash host %d: it is down", i)
	}
	if pct < 0 {
		pct = c.rng.IntN(101)
	}
	rng := rand.New(rand.NewPCG(c.rng.Uint64(), c.rng.Uint64()))
	// Cut the network first, then clone: from here on nothing the host
	// does reaches the clone, which is what a power cut at this instant
	// leaves on the disk — and nothing it does reaches the other hosts
	// either. (Cloning first let the host, until Close, fsync to the old
	// disk and acknowledge entries the clone does not hold: a follower
	// then came back below the Match the leader had recorded for it.)
	h.incarnation++
	c.net.Endpoint(h.addr, DeploymentID).Close()
	h.fs = h.fs.CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: pct, RNG: rng})
	h.host = nil
	c.mu.Unlock()
	c.t.Logf("crash host %d (keeping %d%% of unsynced data)", i, pct)
	host.Close()
}

// Kill simulates kill -9 of host i's process: the operating system
// keeps every byte written, synced or not (a crash clone keeping all
// unsynced data), and the host stops without a clean shutdown.
func (c *Cluster) Kill(i int) {
	c.t.Helper()
	c.crash(i, 100)
}

// Stop closes host i cleanly; Restart reopens it.
func (c *Cluster) Stop(i int) {
	c.t.Helper()
	c.mu.Lock()
	h := c.hosts[i]
	host := h.host
	h.host = nil
	c.mu.Unlock()
	if host == nil {
		c.t.Fatalf("stop host %d: it is down", i)
	}
	if err := host.Close(); err != nil {
		c.t.Errorf("close host %d: %v", i, err)
	}
}

// Restart reopens host i on its file system and starts the replicas it
// ran when it went down (with the same configuration; a replica with
// state on disk ignores its initial Members).
func (c *Cluster) Restart(i int) {
	c.t.Helper()
	if err := c.TryRestart(i); err != nil {
		c.t.Fatalf("restart host %d: %v", i, err)
	}
}

// TryRestart is Restart returning its error.
//
// The host becomes visible to Host(i) (and so to Propose, Leader and the
// other helpers) only once its replicas started, so that helpers running
// on other goroutines do not see a half-started host. (Host methods
// called during StartGroup used to panic: see
// TestStatusDuringStartGroupDoesNotPanic.)
func (c *Cluster) TryRestart(i int) error {
	host, err := c.open(i)
	if err != nil {
		return err
	}
	defer c.publish(i, host)
	c.mu.Lock()
	var gcs []skiff.GroupConfig
	for _, r := range c.hosts[i].groups {
		if r.running {
			gcs = append(gcs, r.cfg)
		}
	}
	c.mu.Unlock()
	slices.SortFunc(gcs, func(a, b skiff.GroupConfig) int { return int(a.GroupID) - int(b.GroupID) })
	for _, gc := range gcs {
		if err := c.startGroup(i, host, gc); err != nil {
			return fmt.Errorf("group %d: %w", gc.GroupID, err)
		}
	}
	return nil
}

// Wipe stops host i (if it runs) and gives it a new, empty disk: Restart
// then starts its replicas with no state, as a replaced machine would.
func (c *Cluster) Wipe(i int) {
	c.t.Helper()
	if c.Host(i) != nil {
		c.Stop(i)
	}
	fs := c.newDisk()
	c.mu.Lock()
	c.hosts[i].fs = fs
	c.mu.Unlock()
}

// Running reports whether host i is up.
func (c *Cluster) Running(i int) bool { return c.Host(i) != nil }

// StopGroup stops group g's replica on host i (its data stays; Restart
// of the host does not start it again).
func (c *Cluster) StopGroup(i int, g skiff.GroupID) {
	c.t.Helper()
	host := c.Host(i)
	if host == nil {
		c.t.Fatalf("stop group %d on host %d: host is down", g, i)
	}
	if err := host.StopGroup(g); err != nil {
		c.t.Fatalf("stop group %d on host %d: %v", g, i, err)
	}
	c.mu.Lock()
	if r := c.hosts[i].groups[g]; r != nil {
		r.running = false
	}
	c.mu.Unlock()
}

// StartGroup starts group g's replica on host i again after StopGroup.
func (c *Cluster) StartGroup(i int, g skiff.GroupID) {
	c.t.Helper()
	c.mu.Lock()
	r := c.hosts[i].groups[g]
	c.mu.Unlock()
	if r == nil {
		c.t.Fatalf("start group %d on host %d: no replica there", g, i)
	}
	if err := c.startGroup(i, c.Host(i), r.cfg); err != nil {
		c.t.Fatalf("start group %d on host %d: %v", g, i, err)
	}
}

// AddReplica adds a new voting replica of group g on host i (a new
// replica ID, proposed through any live replica) and starts it with Join.
// It returns the new replica's ID.
func (c *Cluster) AddReplica(g skiff.GroupID, i int) skiff.ReplicaID {
	c.t.Helper()
	return c.add(g, i, false)
}

// AddNonVoting is AddReplica for a non-voting replica.
func (c *Cluster) AddNonVoting(g skiff.GroupID, i int) skiff.ReplicaID {
	c.t.Helper()
	return c.add(g, i, true)
}

func (c *Cluster) add(g skiff.GroupID, i int, nonVoting bool) skiff.ReplicaID {
	c.t.Helper()
	c.mu.Lock()
	if old := c.hosts[i].groups[g]; old != nil && old.running {
		c.mu.Unlock()
		c.t.Fatalf("add group %d on host %d: replica %d runs there", g, i, old.cfg.ReplicaID)
	}
	id := c.nextReplica[g]
	c.nextReplica[g]++
	c.mu.Unlock()
	err := c.retry(g, func(ctx context.Context, h *skiff.Host) error {
		if nonVoting {
			return h.AddNonVoting(ctx, g, id, c.Addr(i))
		}
		return h.AddReplica(ctx, g, id, c.Addr(i))
	})
	if err != nil {
		c.t.Fatalf("add replica %d of group %d on host %d: %v", id, g, i, err)
	}
	gc := c.groupConfig(g, id)
	gc.Join = true
	if err := c.startGroup(i, c.Host(i), gc); err != nil {
		c.t.Fatalf("start replica %d of group %d on host %d: %v", id, g, i, err)
	}
	return id
}

// RemoveReplica removes group g's replica on host i from the group's
// membership (the replica keeps running until StopGroup).
func (c *Cluster) RemoveReplica(g skiff.GroupID, i int) {
	c.t.Helper()
	id := c.ReplicaID(i, g)
	if id == 0 {
		c.t.Fatalf("remove group %d on host %d: no replica there", g, i)
	}
	err := c.retry(g, func(ctx context.Context, h *skiff.Host) error {
		return h.RemoveReplica(ctx, g, id)
	})
	if err != nil {
		c.t.Fatalf("remove replica %d of group %d: %v", id, g, err)
	}
}

// Leader returns the host whose replica of g leads it, as that replica
// sees itself (the highest term wins if two think so).
func (c *Cluster) Leader(g skiff.GroupID) (int, bool) {
	best, term := -1, uint64(0)
	for i := range c.hosts {
		h := c.Host(i)
		if h == nil {
			continue
		}
		st, err := h.GroupStatus(g)
		if err != nil || st.Leader == 0 || st.Leader != st.ReplicaID {
			continue
		}
		if best < 0 || st.Term > term {
			best, term = i, st.Term
		}
	}
	return best, best >= 0
}

// WaitLeader waits until group g has a leader that every running replica
// of g agrees on, and returns its host.
func (c *Cluster) WaitLeader(g skiff.GroupID) int {
	c.t.Helper()
	leader := -1
	c.Eventually(fmt.Sprintf("group %d has a leader", g), func() bool {
		l, ok := c.Leader(g)
		if !ok {
			return false
		}
		lid := c.ReplicaID(l, g)
		for i := range c.hosts {
			h := c.Host(i)
			if h == nil {
				continue
			}
			st, err := h.GroupStatus(g)
			if err == nil && st.Leader != lid {
				return false
			}
		}
		leader = l
		return true
	})
	return leader
}

// WaitApplied waits until every running replica of g applied index.
func (c *Cluster) WaitApplied(g skiff.GroupID, index uint64) {
	c.t.Helper()
	c.Eventually(fmt.Sprintf("group %d applied %d everywhere", g, index), func() bool {
		for i := range c.hosts {
			h := c.Host(i)
			if h == nil {
				continue
			}
			st, err := h.GroupStatus(g)
			if errors.Is(err, skiff.ErrGroupNotFound) {
				continue
			}
			if err != nil || st.Applied < index {
				return false
			}
		}
		return true
	})
}

// WaitConverged waits until every running replica of g has applied the
// same index, at least the leader's commit, and holds the same state
// (QueryDigest, so the state machines must be KV or OnDiskKV). It returns
// that applied index.
func (c *Cluster) WaitConverged(g skiff.GroupID) uint64 {
	c.t.Helper()
	applied, err := c.TryWaitConverged(g)
	if err != nil {
		c.t.Fatal(err)
	}
	return applied
}

// TryWaitConverged is WaitConverged returning an error that says why the
// group did not converge.
func (c *Cluster) TryWaitConverged(g skiff.GroupID) (uint64, error) {
	var applied uint64
	var why string
	ok := c.poll(WaitTimeout, func() bool {
		l, ok := c.Leader(g)
		if !ok {
			why = "no leader"
			return false
		}
		lst, err := c.Status(l, g)
		if err != nil {
			why = err.Error()
			return false
		}
		// Compare applied indexes first: a digest reads the whole state.
		var live []int
		for i := range c.hosts {
			st, err := c.Status(i, g)
			if errors.Is(err, skiff.ErrClosed) || errors.Is(err, skiff.ErrGroupNotFound) {
				continue
			}
			if err != nil || st.Applied < lst.Commit || st.Applied != lst.Applied {
				why = fmt.Sprintf("host %d applied %d, leader (host %d) commit %d applied %d (err %v)",
					i, st.Applied, l, lst.Commit, lst.Applied, err)
				return false
			}
			live = append(live, i)
		}
		var digest string
		for _, i := range live {
			d, err := c.StaleRead(i, g, []byte(QueryDigest))
			if err != nil {
				why = fmt.Sprintf("host %d digest: %v", i, err)
				return false
			}
			if digest == "" {
				digest = string(d)
			} else if digest != string(d) {
				why = fmt.Sprintf("host %d digest %s, others %s", i, d, digest)
				return false
			}
		}
		applied = lst.Applied
		return true
	})
	if !ok {
		return 0, fmt.Errorf("group %d did not converge within %v: %s", g, WaitTimeout, why)
	}
	return applied, nil
}

// Eventually polls cond every tick (fake time under synctest) and fails
// the test if it is not true within WaitTimeout.
func (c *Cluster) Eventually(what string, cond func() bool) {
	c.t.Helper()
	if !c.poll(WaitTimeout, cond) {
		c.t.Fatalf("timed out after %v waiting until %s", WaitTimeout, what)
	}
}

func (c *Cluster) poll(limit time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		<-time.After(TickInterval)
	}
	return true
}

// retryable reports whether a request may be retried elsewhere or later:
// nothing happened (ErrRejected), the outcome is unknown (ErrTimeout),
// or the replica asked is down or gone.
func retryable(err error) bool {
	return errors.Is(err, skiff.ErrRejected) || errors.Is(err, skiff.ErrTimeout) ||
		errors.Is(err, skiff.ErrClosed) || errors.Is(err, skiff.ErrGroupStopped) ||
		errors.Is(err, skiff.ErrGroupNotFound)
}

// retry runs op against live replicas of g, the leader's host first,
// until it succeeds, fails for good, or WaitTimeout passes.
func (c *Cluster) retry(g skiff.GroupID, op func(context.Context, *skiff.Host) error) error {
	deadline := time.Now().Add(WaitTimeout)
	next := 0
	var last error
	for time.Now().Before(deadline) {
		i, ok := c.Leader(g)
		if !ok {
			i = next % len(c.hosts)
			next++
		}
		h := c.Host(i)
		if h == nil {
			last = fmt.Errorf("host %d: %w", i, skiff.ErrClosed)
			<-time.After(retryPause)
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), attemptTimeout)
		err := op(ctx, h)
		cancel()
		if err == nil || !retryable(err) {
			return err
		}
		last = err
		<-time.After(retryPause)
	}
	return fmt.Errorf("gave up after %v: %w", WaitTimeout, last)
}

// TryPropose proposes cmd to group g through a live replica, retrying
// while the outcome is "nothing happened" or unknown. NB: a retry after
// ErrTimeout may apply cmd twice; use TryProposeSession when that
// matters (KV commands are idempotent sets, only Result.Value differs).
func (c *Cluster) TryPropose(g skiff.GroupID, cmd []byte) (statemachine.Result, error) {
	var res statemachine.Result
	err := c.retry(g, func(ctx context.Context, h *skiff.Host) error {
		var err error
		res, err = h.Propose(ctx, g, cmd)
		return err
	})
	return res, err
}

// Propose is TryPropose failing the test on error.
func (c *Cluster) Propose(g skiff.GroupID, cmd []byte) statemachine.Result {
	c.t.Helper()
	res, err := c.TryPropose(g, cmd)
	if err != nil {
		c.t.Fatalf("propose to group %d: %v", g, err)
	}
	return res
}

// TryProposeSession proposes cmd in client session s, retrying the same
// SeriesID (so it is applied once) like TryPropose.
func (c *Cluster) TryProposeSession(g skiff.GroupID, s skiff.Session, cmd []byte) (statemachine.Result, error) {
	var res statemachine.Result
	err := c.retry(g, func(ctx context.Context, h *skiff.Host) error {
		var err error
		res, err = h.ProposeSession(ctx, g, s, cmd)
		return err
	})
	return res, err
}

// RegisterSession registers client session clientID in group g.
func (c *Cluster) RegisterSession(g skiff.GroupID, clientID uint64) {
	c.t.Helper()
	err := c.retry(g, func(ctx context.Context, h *skiff.Host) error {
		return h.RegisterSession(ctx, g, clientID)
	})
	if err != nil {
		c.t.Fatalf("register session %d in group %d: %v", clientID, g, err)
	}
}

// Read reads query linearizably from group g's replica on host i,
// retrying while the replica has no leader to confirm with.
func (c *Cluster) Read(i int, g skiff.GroupID, query []byte) ([]byte, error) {
	deadline := time.Now().Add(WaitTimeout)
	for {
		h := c.Host(i)
		if h == nil {
			return nil, fmt.Errorf("host %d: %w", i, skiff.ErrClosed)
		}
		ctx, cancel := context.WithTimeout(context.Background(), attemptTimeout)
		v, err := h.Read(ctx, g, query)
		cancel()
		if err == nil || !(errors.Is(err, skiff.ErrRejected) || errors.Is(err, skiff.ErrTimeout)) ||
			time.Now().After(deadline) {
			return v, err
		}
		<-time.After(retryPause)
	}
}

// StaleRead reads query from group g's replica on host i as it is.
func (c *Cluster) StaleRead(i int, g skiff.GroupID, query []byte) ([]byte, error) {
	h := c.Host(i)
	if h == nil {
		return nil, fmt.Errorf("host %d: %w", i, skiff.ErrClosed)
	}
	return h.StaleRead(context.Background(), g, query)
}

// Status returns group g's status on host i.
func (c *Cluster) Status(i int, g skiff.GroupID) (skiff.GroupStatus, error) {
	h := c.Host(i)
	if h == nil {
		return skiff.GroupStatus{}, fmt.Errorf("host %d: %w", i, skiff.ErrClosed)
	}
	return h.GroupStatus(g)
}

// Events returns every event reported so far, in order.
func (c *Cluster) Events() []HostEvent {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.events)
}

// CountEvents counts the events of kind in group g (g 0: any group).
func (c *Cluster) CountEvents(kind skiff.EventKind, g skiff.GroupID) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, e := range c.events {
		if e.Kind == kind && (g == 0 || e.Group == g) {
			n++
		}
	}
	return n
}

// Close closes every host and the network. It is idempotent and runs at
// t.Cleanup; once it returns no goroutine of the cluster is left.
func (c *Cluster) Close() {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	c.closed = true
	var hosts []*skiff.Host
	for _, h := range c.hosts {
		if h.host != nil {
			hosts = append(hosts, h.host)
			h.host = nil
		}
	}
	c.mu.Unlock()
	for _, h := range hosts {
		if err := h.Close(); err != nil {
			c.t.Errorf("close host: %v", err)
		}
	}
	c.net.Close()
}
