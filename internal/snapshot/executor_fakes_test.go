package snapshot

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/skiffdb/skiff/raftpb"
)

// In-memory fakes of the executor's neighbours: the log, Raft, the state
// machine and the fetch (the copier).

type fakeLog struct {
	mu        sync.Mutex
	snapshots []uint64 // SetSnapshot calls, by index
	compacted []uint64 // Compact calls
	cleared   int      // ClearBufferedLogs calls
	setErr    error
}

func (l *fakeLog) SetSnapshot(m raftpb.SnapshotMeta) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.setErr != nil {
		return l.setErr
	}
	l.snapshots = append(l.snapshots, m.Index)
	return nil
}

func (l *fakeLog) Compact(index uint64) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.compacted = append(l.compacted, index)
	return nil
}

func (l *fakeLog) ClearBufferedLogs() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.cleared++
}

func (l *fakeLog) state() (snaps, compacted []uint64, cleared int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]uint64(nil), l.snapshots...), append([]uint64(nil), l.compacted...), l.cleared
}

// rangeLog adds LogRange.
type rangeLog struct {
	fakeLog
	first uint64
}

func (l *rangeLog) FirstIndex() uint64 { return l.first }

type fakeRaft struct{ term atomic.Uint64 }

func (r *fakeRaft) Term() uint64 { return r.term.Load() }

// limitedRaft adds CompactionLimiter.
type limitedRaft struct {
	fakeRaft
	limit uint64
}

func (r *limitedRaft) CompactionLimit() uint64 { return r.limit }

// fakeSM is a state machine whose state is a string and an applied index.
type fakeSM struct {
	mu      sync.Mutex
	applied uint64
	term    uint64
	data    string
	// saveGate, if set, holds Save until closed; saveStarted is told when
	// a Save begins.
	saveGate    chan struct{}
	saveStarted chan uint64
	saveErr     error
	captureErr  error
	// restoreGate holds Restore likewise.
	restoreGate    chan struct{}
	restoreStarted chan uint64
	restored       []uint64
}

func (sm *fakeSM) apply(index uint64, data string) {
	sm.mu.Lock()
	defer sm.mu.Unlock()
	sm.applied, sm.data = index, data
}

func (sm *fakeSM) LastApplied() uint64 {
	sm.mu.Lock()
	defer sm.mu.Unlock()
	return sm.applied
}

func (sm *fakeSM) Capture(bool) (Capture, error) {
	sm.mu.Lock()
	defer sm.mu.Unlock()
	if sm.captureErr != nil {
		return nil, sm.captureErr
	}
	m := testMeta(sm.applied)
	m.Term = max(sm.term, 1)
	return &fakeCapture{sm: sm, meta: m, data: sm.data}, nil
}

func (sm *fakeSM) Restore(ctx context.Context, r *Reader) error {
	if sm.restoreStarted != nil {
		sm.restoreStarted <- r.Index()
	}
	if sm.restoreGate != nil {
		select {
		case <-sm.restoreGate:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	f, err := r.OpenFile(DataFile)
	if err != nil {
		return err
	}
	defer f.Close()
	b, err := io.ReadAll(f)
	if err != nil {
		return err
	}
	sm.mu.Lock()
	defer sm.mu.Unlock()
	sm.applied, sm.data = r.Index(), string(b)
	sm.restored = append(sm.restored, r.Index())
	return nil
}

type fakeCapture struct {
	sm       *fakeSM
	meta     raftpb.SnapshotMeta
	data     string
	released bool
}

func (c *fakeCapture) Meta() raftpb.SnapshotMeta { return c.meta }

func (c *fakeCapture) Save(ctx context.Context, w *Writer) error {
	if c.sm.saveStarted != nil {
		c.sm.saveStarted <- c.meta.Index
	}
	if c.sm.saveGate != nil {
		select {
		case <-c.sm.saveGate:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if c.sm.saveErr != nil {
		return c.sm.saveErr
	}
	_, err := io.WriteString(w, c.data)
	return err
}

func (c *fakeCapture) Release() { c.released = true }

// fakeFetch copies snapshots from a leader's store into the follower's,
// through a ReceiveTx, like the copier. A fetch of index i waits for
// gates[i] when there is one, and honours ctx.
type fakeFetch struct {
	leader, follower *Store
	mu               sync.Mutex
	gates            map[uint64]chan struct{}
	started          chan uint64
	calls            []uint64
}

func (f *fakeFetch) gate(index uint64) chan struct{} {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.gates == nil {
		f.gates = map[uint64]chan struct{}{}
	}
	g := make(chan struct{})
	f.gates[index] = g
	return g
}

func (f *fakeFetch) Fetch(ctx context.Context, req InstallRequest) (raftpb.SnapshotMeta, error) {
	f.mu.Lock()
	f.calls = append(f.calls, req.Meta.Index)
	g := f.gates[req.Meta.Index]
	f.mu.Unlock()
	if f.started != nil {
		f.started <- req.Meta.Index
	}
	if g != nil {
		select {
		case <-g:
		case <-ctx.Done():
			return raftpb.SnapshotMeta{}, ctx.Err()
		}
	}
	r, err := f.leader.OpenReader(req.Meta.Index)
	if err != nil {
		return raftpb.SnapshotMeta{}, err
	}
	defer r.Close()
	tx, err := f.follower.Receive(r.Meta())
	if err != nil {
		return raftpb.SnapshotMeta{}, err
	}
	defer tx.Close()
	for _, st := range tx.Files() {
		if st.Complete() {
			continue
		}
		src, _ := r.OpenFile(st.Name)
		b, _ := io.ReadAll(src)
		src.Close()
		w, err := tx.OpenFile(st.Name, 0)
		if err != nil {
			return raftpb.SnapshotMeta{}, err
		}
		w.Write(b)
		if err := w.Close(); err != nil {
			return raftpb.SnapshotMeta{}, err
		}
	}
	if err := tx.Commit(); err != nil {
		return raftpb.SnapshotMeta{}, err
	}
	return r.Meta(), nil
}

func (f *fakeFetch) callCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.calls)
}

// execEnv is an executor over fakes: a follower store it owns and a leader
// store with snapshots to install.
type execEnv struct {
	t      *testing.T
	fs     vfs.FS
	store  *Store
	leader *Store
	log    *fakeLog
	raft   *fakeRaft
	sm     *fakeSM
	fetch  *fakeFetch
	e      *Executor
	errs   chan error
}

func newExecEnv(t *testing.T, mutate ...func(*ExecutorConfig)) *execEnv {
	t.Helper()
	fs := vfs.NewMem()
	env := &execEnv{t: t, fs: fs, log: &fakeLog{}, raft: &fakeRaft{}, sm: &fakeSM{}, errs: make(chan error, 16)}
	env.raft.term.Store(5)
	env.store = mustOpen(t, fs, "/follower")
	env.leader = mustOpen(t, fs, "/leader")
	env.fetch = &fakeFetch{leader: env.leader, follower: env.store}
	cfg := ExecutorConfig{
		Store: env.store, Log: env.log, Raft: env.raft, StateMachine: env.sm,
		Fetch:              env.fetch.Fetch,
		CompactionOverhead: 10,
		OnError:            func(err error) { env.errs <- err },
	}
	for _, m := range mutate {
		m(&cfg)
	}
	e, err := NewExecutor(cfg)
	if err != nil {
		t.Fatal(err)
	}
	env.e = e
	t.Cleanup(e.Stop)
	return env
}

// leaderSnapshot publishes a snapshot at index holding data on the leader.
func (env *execEnv) leaderSnapshot(index uint64, data string) raftpb.SnapshotMeta {
	env.t.Helper()
	save(env.t, env.leader, index, data)
	r, err := env.leader.OpenReader(index)
	if err != nil {
		env.t.Fatal(err)
	}
	defer r.Close()
	return r.Meta()
}

// install runs Install in a goroutine and returns the channel its
// request's response arrives on.
func (env *execEnv) install(term uint64, m raftpb.SnapshotMeta) <-chan InstallResponse {
	return env.installCtx(context.Background(), term, m)
}

func (env *execEnv) installCtx(ctx context.Context, term uint64, m raftpb.SnapshotMeta) <-chan InstallResponse {
	ch := make(chan InstallResponse, 1)
	var once atomic.Bool
	go env.e.Install(ctx, term, InstallRequest{From: 1, Meta: m, Reader: ReaderID(m.Index)}, func(r InstallResponse) {
		if once.Swap(true) {
			panic(fmt.Sprintf("request for %d answered twice", m.Index))
		}
		ch <- r
	})
	return ch
}

func recv[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(10 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
		panic("unreachable")
	}
}

func noRecv[T any](t *testing.T, ch <-chan T, what string) {
	t.Helper()
	select {
	case v := <-ch:
		t.Fatalf("unexpected %s: %+v", what, v)
	default:
	}
}

func wantErr(t *testing.T, err, target error, substr string) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Fatalf("error %v, want %v", err, target)
	}
	if substr != "" && !strings.Contains(err.Error(), substr) {
		t.Fatalf("error %q does not say %q", err, substr)
	}
}
