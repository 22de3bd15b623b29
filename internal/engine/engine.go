package engine

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/skiffdb/skiff/internal/logdb"
	"github.com/skiffdb/skiff/internal/snapshot"
	"github.com/skiffdb/skiff/raftpb"
	"github.com/skiffdb/skiff/statemachine"
)

// Engine is one host: the groups it runs, their shared log, the workers
// that move work between the stages, and the snapshot lanes.
//
// Goroutines:
//   - step workers (Config.StepWorkers), each owning a shard of groups: they
//     tick, step messages, collect Ready from every group with work, send
//     what may go before persisting, save one logdb batch for all of them
//     (one fsync), send the rest and hand committed entries to apply;
//   - apply workers (Config.ApplyWorkers), each owning a shard of groups:
//     they apply committed entries, serve reads, complete proposals, and run
//     snapshot captures and restores (serialized with applies);
//   - snapshot goroutines, started per save, install and full-snapshot
//     generation, bounded by the node-wide snapshot.Throttle;
//   - the transport's own goroutines, which only queue incoming messages.
//
// No worker ever waits for another: step and apply workers hand work over
// through queues; snapshot goroutines wait for workers, never the reverse.
type Engine struct {
	cfg       Config
	db        *logdb.DB
	throttle  *snapshot.Throttle
	transfers *snapshot.Transfers
	sender    *snapshot.Sender
	receiver  *snapshot.Receiver
	server    *snapshot.TCPServer
	rng       *rand.Rand // proposal-key salt
	metrics   *metrics

	steps  []*stepWorker
	apply  []*applyWorker
	keySeq atomic.Uint64

	mu      sync.RWMutex
	nodes   map[raftpb.GroupID]*node
	closed  bool
	sources map[string]*snapshot.TCPSource

	// rejected counts messages refused: unknown group, removed sender.
	rejectedUnknownGroup atomic.Uint64
	rejectedNonMember    atomic.Uint64

	wg sync.WaitGroup
}

// Open opens the host's log and starts its workers and transport.
func Open(cfg Config) (*Engine, error) {
	if err := cfg.fill(); err != nil {
		return nil, err
	}
	if err := mkdirDurable(cfg.FS, cfg.Dir); err != nil {
		return nil, err
	}
	dbOpts := cfg.LogDB
	if dbOpts.Logger == nil {
		dbOpts.Logger = cfg.Logger
	}
	db, err := logdb.Open(cfg.FS, cfg.FS.PathJoin(cfg.Dir, "logdb"), dbOpts)
	if err != nil {
		return nil, fmt.Errorf("engine: open log: %w", err)
	}
	e := &Engine{
		cfg:       cfg,
		db:        db,
		throttle:  snapshot.NewThrottle(cfg.Snapshot),
		transfers: snapshot.NewTransfers(nil),
		nodes:     make(map[raftpb.GroupID]*node),
		sources:   make(map[string]*snapshot.TCPSource),
		rng:       rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64())),
	}
	// Proposal keys: a random 32-bit host salt in the high half so that
	// keys of different hosts (and of this host before a restart) do not
	// collide; a counter below.
	e.keySeq.Store(e.rng.Uint64() << 32)
	e.metrics = newMetrics(e, cfg.Metrics)
	e.sender, err = snapshot.NewSender(snapshot.SenderConfig{FS: cfg.FS, Throttle: e.throttle, Transfers: e.transfers})
	if err != nil {
		db.Close()
		return nil, err
	}
	e.receiver, err = snapshot.NewReceiver(snapshot.ReceiverConfig{
		ChunkTimeout: cfg.SnapshotChunkTimeout, Throttle: e.throttle, Transfers: e.transfers})
	if err != nil {
		e.sender.Close()
		db.Close()
		return nil, err
	}
	e.server = snapshot.NewTCPServer(e.sender)
	for i := 0; i < cfg.StepWorkers; i++ {
		e.steps = append(e.steps, newStepWorker(e, i))
	}
	for i := 0; i < cfg.ApplyWorkers; i++ {
		e.apply = append(e.apply, newApplyWorker(e, i))
	}
	if err := cfg.Transport.Start(handler{e}); err != nil {
		e.server.Close()
		e.receiver.Close()
		e.sender.Close()
		db.Close()
		return nil, fmt.Errorf("engine: start transport: %w", err)
	}
	e.wg.Add(1)
	go func() {
		defer e.wg.Done()
		err := e.server.Serve(cfg.Transport.SnapshotListener())
		if err != nil && !errors.Is(err, net.ErrClosed) {
			cfg.Logger.Warn("snapshot lane stopped", "err", err)
		}
	}()
	for _, w := range e.steps {
		w.start()
	}
	for _, w := range e.apply {
		w.start()
	}
	return e, nil
}

// Close stops every group and the host. Requests in flight fail with
// ErrClosed (or ErrGroupStopped).
func (e *Engine) Close() error {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return nil
	}
	e.closed = true
	nodes := make([]*node, 0, len(e.nodes))
	for _, n := range e.nodes {
		if n != nil { // nil: a StartGroup still opening; it sees closed
			nodes = append(nodes, n)
		}
	}
	e.mu.Unlock()
	for _, n := range nodes {
		n.stop(ErrClosed)
	}
	e.cfg.Transport.Close()
	e.server.Close()
	for _, w := range e.steps {
		w.close()
	}
	for _, w := range e.apply {
		w.close()
	}
	for _, n := range nodes {
		n.closeResources()
	}
	e.receiver.Close()
	e.sender.Close()
	e.mu.Lock()
	for _, s := range e.sources {
		s.Close()
	}
	e.mu.Unlock()
	e.wg.Wait()
	return e.db.Close()
}

// Addr returns the address other hosts reach this one at.
func (e *Engine) Addr() string { return e.cfg.Transport.Addr() }

// nextKey returns a host-unique proposal or read key.
func (e *Engine) nextKey() uint64 { return e.keySeq.Add(1) }

func (e *Engine) node(g raftpb.GroupID) (*node, error) {
	e.mu.RLock()
	n, ok := e.nodes[g]
	closed := e.closed
	e.mu.RUnlock()
	switch {
	case closed:
		return nil, ErrClosed
	case !ok:
		return nil, fmt.Errorf("%w: %d", ErrGroupNotFound, g)
	case n == nil:
		// Reserved by a StartGroup still opening it.
		return nil, fmt.Errorf("%w: %d is starting", ErrGroupNotFound, g)
	}
	return n, nil
}

// StartGroup starts a replica of a group on this host.
func (e *Engine) StartGroup(ctx context.Context, cfg GroupConfig, create statemachine.CreateFunc) error {
	if err := cfg.fill(); err != nil {
		return err
	}
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return ErrClosed
	}
	if _, ok := e.nodes[cfg.Group]; ok {
		e.mu.Unlock()
		return fmt.Errorf("%w: %d", ErrGroupExists, cfg.Group)
	}
	// Reserve the ID while the node opens (outside the lock: it reads
	// disk and restores the state machine).
	e.nodes[cfg.Group] = nil
	e.mu.Unlock()
	n, err := openNode(ctx, e, cfg, create)
	e.mu.Lock()
	defer e.mu.Unlock()
	if err != nil || e.closed {
		delete(e.nodes, cfg.Group)
		if err == nil {
			n.stop(ErrClosed)
			n.closeResources()
			return ErrClosed
		}
		return err
	}
	e.nodes[cfg.Group] = n
	n.sw.add(n)
	return nil
}

// StopGroup stops the replica of group g on this host; its data stays.
func (e *Engine) StopGroup(g raftpb.GroupID) error {
	e.mu.Lock()
	n, ok := e.nodes[g]
	if ok && n == nil {
		ok = false
	}
	if ok {
		delete(e.nodes, g)
	}
	e.mu.Unlock()
	if !ok {
		return fmt.Errorf("%w: %d", ErrGroupNotFound, g)
	}
	n.stop(ErrGroupStopped)
	n.sw.remove(n)
	n.aw.drain(n)
	n.closeResources()
	return nil
}

// snapshotSource returns the FileSource of the host at addr (the snapshot
// lane of the transport), shared by the transfers from that host.
func (e *Engine) snapshotSource(addr string) *snapshot.TCPSource {
	e.mu.Lock()
	defer e.mu.Unlock()
	if s, ok := e.sources[addr]; ok {
		return s
	}
	t := e.cfg.Transport
	s := snapshot.NewDialSource(func(ctx context.Context) (net.Conn, error) {
		return t.DialSnapshot(ctx, addr)
	})
	e.sources[addr] = s
	return s
}

// handler receives the transport's batches.
type handler struct{ e *Engine }

func (h handler) HandleBatch(b *raftpb.MessageBatch) {
	e := h.e
	e.mu.RLock()
	defer e.mu.RUnlock()
	if e.closed {
		return
	}
	for i := range b.Messages {
		m := &b.Messages[i]
		n := e.nodes[m.Group]
		if n == nil {
			e.rejectedUnknownGroup.Add(1)
			continue
		}
		n.deliver(*m, b.SourceAddress)
	}
}

func (h handler) HandleUnreachable(addr string) {
	e := h.e
	e.mu.RLock()
	defer e.mu.RUnlock()
	for _, n := range e.nodes {
		if n != nil {
			n.unreachable(addr)
		}
	}
}

// Transfers lists the snapshot transfers in flight on this host.
func (e *Engine) Transfers() []snapshot.Progress { return e.transfers.List() }

// SetSnapshotLimits changes the node-wide snapshot limits at runtime.
func (e *Engine) SetSnapshotLimits(l snapshot.Limits) { e.throttle.SetLimits(l) }

// ImportSnapshot rebuilds a replica of group g on a stopped host from an
// exported snapshot with a new membership (offline disaster recovery after
// a lost quorum): the export is verified completely before anything is
// touched, the snapshot becomes the group's only one, and the group's log
// is reset to it. Start the host and the group afterwards (the Members of
// GroupConfig are then ignored: the imported membership wins).
func ImportSnapshot(fs vfs.FS, dir string, exportDir string, g raftpb.GroupID, members map[raftpb.ReplicaID]string, opts logdb.Options) (raftpb.SnapshotMeta, error) {
	if fs == nil {
		fs = vfs.Default
	}
	voters := membersOf(members)
	tmp := &Engine{cfg: Config{FS: fs, Dir: dir}}
	if err := fs.MkdirAll(dir, 0o755); err != nil {
		return raftpb.SnapshotMeta{}, err
	}
	// The log first: it holds the host's lock, so an import into the
	// directory of a running host fails before the snapshot store is
	// touched.
	db, err := logdb.Open(fs, fs.PathJoin(dir, "logdb"), opts)
	if err != nil {
		return raftpb.SnapshotMeta{}, fmt.Errorf("engine: open log: %w", err)
	}
	defer db.Close()
	meta, err := snapshot.Import(fs, exportDir, groupDir(tmp, g), g, voters)
	if err != nil {
		return raftpb.SnapshotMeta{}, err
	}
	if err := db.ResetToSnapshot(g, meta, false); err != nil {
		return raftpb.SnapshotMeta{}, fmt.Errorf("engine: reset log of group %d: %w", g, err)
	}
	// The term must not be below the snapshot's: a fresh directory has
	// term 0, and a replica elected in a term below its log's last term
	// would append entries whose terms go backwards.
	hs, _, err := db.Group(g).InitialState()
	if err != nil {
		return raftpb.SnapshotMeta{}, fmt.Errorf("engine: read state of group %d: %w", g, err)
	}
	if hs.Term < meta.Term {
		hs = raftpb.HardState{Term: meta.Term, Commit: max(hs.Commit, meta.Index)}
		if err := db.SaveBatch([]logdb.Update{{Group: g, HardState: hs}}); err != nil {
			return raftpb.SnapshotMeta{}, fmt.Errorf("engine: save state of group %d: %w", g, err)
		}
	}
	return meta, nil
}

// mkdirDurable creates dir and every missing parent, and syncs the parent
// of each directory it created: a new directory's entry is durable only
// once its parent is synced, and everything acknowledged lives below Dir.
func mkdirDurable(fs vfs.FS, dir string) error {
	var created []string
	for p := dir; ; p = fs.PathDir(p) {
		if _, err := fs.Stat(p); err == nil {
			break
		}
		created = append(created, p)
		if fs.PathDir(p) == p {
			break
		}
	}
	if err := fs.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("engine: create %s: %w", dir, err)
	}
	for _, d := range created {
		parent := fs.PathDir(d)
		f, err := fs.OpenDir(parent)
		if err != nil {
			return fmt.Errorf("engine: open %s: %w", parent, err)
		}
		err = f.Sync()
		f.Close()
		if err != nil {
			return fmt.Errorf("engine: sync %s: %w", parent, err)
		}
	}
	return nil
}
