package snapshot

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"syscall"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/cockroachdb/pebble/v2/vfs/errorfs"
)

// DoSnapshot and save done, rule for rule (SOFAJRaft doSnapshot and
// onSnapshotSaveDone, seed 000; braft do_snapshot, seed 003).

func TestDoSnapshotSavesPublishesAndCompacts(t *testing.T) {
	env := newExecEnv(t)
	env.sm.apply(100, "state@100")
	idx, err := env.e.DoSnapshot(context.Background())
	if err != nil || idx != 100 {
		t.Fatalf("DoSnapshot = %d, %v", idx, err)
	}
	if i, term := env.e.LastSnapshot(); i != 100 || term != 1 {
		t.Fatalf("last snapshot %d/%d", i, term)
	}
	if got := readData(t, env.store, 100); got != "state@100" {
		t.Fatalf("snapshot holds %q", got)
	}
	snaps, compacted, _ := env.log.state()
	if len(snaps) != 1 || snaps[0] != 100 || len(compacted) != 1 || compacted[0] != 90 {
		t.Fatalf("log told snapshots %v, compacted %v; want [100], [90] (index − overhead)", snaps, compacted)
	}
}

// Rule: downloading or loading → EBUSY "is loading another snapshot".
func TestDoSnapshotBusyWhileInstalling(t *testing.T) {
	env := newExecEnv(t)
	env.fetch.started = make(chan uint64, 1)
	m := env.leaderSnapshot(200, "x")
	g := env.fetch.gate(200)
	resp := env.install(5, m)
	recv(t, env.fetch.started, "fetch start")
	env.sm.apply(100, "s")
	_, err := env.e.DoSnapshot(context.Background())
	wantErr(t, err, ErrBusy, "is loading another snapshot")
	close(g)
	if r := recv(t, resp, "install response"); !r.Success {
		t.Fatalf("install: %+v", r)
	}
}

// Rule: saving → EBUSY "is saving another snapshot".
func TestDoSnapshotBusyWhileSaving(t *testing.T) {
	env := newExecEnv(t)
	env.sm.apply(100, "s")
	env.sm.saveGate = make(chan struct{})
	env.sm.saveStarted = make(chan uint64, 1)
	done := make(chan error, 1)
	go func() { _, err := env.e.DoSnapshot(context.Background()); done <- err }()
	recv(t, env.sm.saveStarted, "save start")
	env.sm.apply(150, "t")
	_, err := env.e.DoSnapshot(context.Background())
	wantErr(t, err, ErrBusy, "is saving another snapshot")
	close(env.sm.saveGate)
	if err := recv(t, done, "first save"); err != nil {
		t.Fatal(err)
	}
}

// Rule: lastApplied == lastSnapshotIndex → success without a new snapshot,
// and the buffered logs are cleared.
func TestDoSnapshotNothingApplied(t *testing.T) {
	env := newExecEnv(t)
	env.sm.apply(100, "s")
	if _, err := env.e.DoSnapshot(context.Background()); err != nil {
		t.Fatal(err)
	}
	idx, err := env.e.DoSnapshot(context.Background())
	if err != nil || idx != 100 {
		t.Fatalf("DoSnapshot with nothing new = %d, %v; want success at 100", idx, err)
	}
	if n := len(env.store.List()); n != 1 {
		t.Fatalf("%d snapshots, want 1", n)
	}
	if _, _, cleared := env.log.state(); cleared != 1 {
		t.Fatalf("buffered logs cleared %d times, want 1", cleared)
	}
}

// Rule: lastApplied − lastSnapshotIndex < SnapshotMinGap → success without
// a snapshot.
func TestDoSnapshotBelowMinGap(t *testing.T) {
	env := newExecEnv(t, func(c *ExecutorConfig) { c.SnapshotMinGap = 50 })
	env.sm.apply(100, "s")
	if _, err := env.e.DoSnapshot(context.Background()); err != nil {
		t.Fatal(err)
	}
	env.sm.apply(149, "t")
	idx, err := env.e.DoSnapshot(context.Background())
	if err != nil || idx != 100 {
		t.Fatalf("DoSnapshot below the gap = %d, %v", idx, err)
	}
	env.sm.apply(150, "u")
	if idx, err := env.e.DoSnapshot(context.Background()); err != nil || idx != 150 {
		t.Fatalf("DoSnapshot at the gap = %d, %v", idx, err)
	}
}

// Rule: the writer cannot be created → an I/O error, returned and reported.
func TestDoSnapshotWriterCannotBeCreated(t *testing.T) {
	mem := vfs.NewMem()
	inj := errorfs.InjectorFunc(func(op errorfs.Op) error {
		if op.Kind == errorfs.OpMkdirAll && strings.Contains(op.Path, ".generating") {
			return syscall.EIO
		}
		return nil
	})
	s := mustOpen(t, errorfs.Wrap(mem, inj), "/g1")
	env := newExecEnv(t, func(c *ExecutorConfig) { c.Store = s })
	env.sm.apply(100, "s")
	_, err := env.e.DoSnapshot(context.Background())
	wantErr(t, err, syscall.EIO, "fail to create writer")
	if reported := recv(t, env.errs, "reported error"); !errors.Is(reported, syscall.EIO) {
		t.Fatalf("reported %v", reported)
	}
	// Not stuck in "saving".
	if _, err := env.e.DoSnapshot(context.Background()); !errors.Is(err, syscall.EIO) {
		t.Fatalf("second attempt: %v", err)
	}
}

// Save done: a newer snapshot was installed meanwhile → ESTALE, the writer
// is aborted, nothing is compacted or told to the log.
func TestSaveDoneStale(t *testing.T) {
	env := newExecEnv(t)
	env.sm.apply(100, "s")
	job, err := env.e.Prepare()
	if err != nil {
		t.Fatal(err)
	}
	// SOFAJRaft: "InstallSnapshot can break SaveSnapshot". The guards make
	// the race narrow; here an install is simulated completing meanwhile.
	env.e.mu.Lock()
	env.e.lastIndex, env.e.lastTerm = 200, 3
	env.e.mu.Unlock()
	_, err = job.Run(context.Background())
	wantErr(t, err, ErrStale, "")
	if n := len(env.store.List()); n != 0 {
		t.Fatalf("a stale snapshot was published")
	}
	names, _ := env.fs.List("/follower")
	if len(names) != 0 {
		t.Fatalf("the stale writer left %v", names)
	}
	if snaps, compacted, _ := env.log.state(); len(snaps)+len(compacted) != 0 {
		t.Fatalf("log told %v, compacted %v", snaps, compacted)
	}
	if i, _ := env.e.LastSnapshot(); i != 200 {
		t.Fatalf("last snapshot %d", i)
	}
	if _, err := env.e.DoSnapshot(context.Background()); err != nil {
		t.Fatalf("not stuck saving: %v", err)
	}
}

// A failed save (ENOSPC) compacts nothing, leaves the previous snapshot
// intact, and the next save succeeds without a restart (braft#461).
func TestSaveFailureCompactsNothing(t *testing.T) {
	mem := vfs.NewMem()
	inj := &enospc{match: ".generating"}
	s := mustOpen(t, errorfs.Wrap(mem, inj), "/g1")
	env := newExecEnv(t, func(c *ExecutorConfig) { c.Store = s })
	env.sm.apply(100, "first")
	if _, err := env.e.DoSnapshot(context.Background()); err != nil {
		t.Fatal(err)
	}
	inj.on = true
	env.sm.apply(200, string(bytes.Repeat([]byte("y"), 2*writeBufferSize)))
	_, err := env.e.DoSnapshot(context.Background())
	wantErr(t, err, syscall.ENOSPC, "")
	if snaps, compacted, _ := env.log.state(); len(snaps) != 1 || len(compacted) != 1 || compacted[0] != 90 {
		t.Fatalf("after a failed save: log told %v, compacted %v", snaps, compacted)
	}
	if i, _ := env.e.LastSnapshot(); i != 100 {
		t.Fatalf("last snapshot %d", i)
	}
	if got := readData(t, s, 0); got != "first" {
		t.Fatalf("previous snapshot %q", got)
	}
	inj.on = false
	if idx, err := env.e.DoSnapshot(context.Background()); err != nil || idx != 200 {
		t.Fatalf("next save = %d, %v", idx, err)
	}
	if _, compacted, _ := env.log.state(); compacted[len(compacted)-1] != 190 {
		t.Fatalf("compacted %v", compacted)
	}
	// A failing Save of the state machine is the same.
	env.sm.saveErr = errors.New("boom")
	env.sm.apply(300, "z")
	if _, err := env.e.DoSnapshot(context.Background()); err == nil {
		t.Fatal("save error swallowed")
	}
	if _, compacted, _ := env.log.state(); len(compacted) != 2 {
		t.Fatalf("compacted %v after a failed save", compacted)
	}
}

// Compaction never passes a snapshot that a transfer is still sending: the
// follower needs the entries after it (etcd#4055).
func TestCompactionNotPastInFlightTransfer(t *testing.T) {
	env := newExecEnv(t)
	env.sm.apply(30, "a")
	env.e.DoSnapshot(context.Background())
	sending, err := env.store.OpenReader(30) // the sender's reference
	if err != nil {
		t.Fatal(err)
	}
	env.sm.apply(100, "b")
	env.e.DoSnapshot(context.Background())
	sending.Close()
	env.sm.apply(200, "c")
	env.e.DoSnapshot(context.Background())
	if _, compacted, _ := env.log.state(); len(compacted) != 3 || compacted[1] != 30 || compacted[2] != 190 {
		t.Fatalf("compacted %v, want [20 30 190]", compacted)
	}
}

// Compaction never passes what Raft keeps for live followers.
func TestCompactionLimitFromRaft(t *testing.T) {
	lr := &limitedRaft{limit: 42}
	lr.term.Store(5)
	env := newExecEnv(t, func(c *ExecutorConfig) { c.Raft = lr })
	env.sm.apply(100, "a")
	if idx, err := env.e.DoSnapshot(context.Background()); err != nil || idx != 100 {
		t.Fatalf("DoSnapshot = %d, %v", idx, err) // else "nothing compacted" proves nothing
	}
	if _, compacted, _ := env.log.state(); len(compacted) != 1 || compacted[0] != 42 {
		t.Fatalf("compacted %v, want [42]", compacted)
	}
}

func TestCompactionOverheadCoversEverything(t *testing.T) {
	env := newExecEnv(t, func(c *ExecutorConfig) { c.CompactionOverhead = 1000 })
	env.sm.apply(100, "a")
	if idx, err := env.e.DoSnapshot(context.Background()); err != nil || idx != 100 {
		t.Fatalf("DoSnapshot = %d, %v", idx, err) // else "nothing compacted" proves nothing
	}
	if _, compacted, _ := env.log.state(); len(compacted) != 0 {
		t.Fatalf("compacted %v with an overhead above the index", compacted)
	}
}

// RequestSnapshot options (dragonboat).

func TestRequestSnapshotNoNewEntries(t *testing.T) {
	env := newExecEnv(t)
	env.sm.apply(100, "a")
	if idx, err := env.e.RequestSnapshot(context.Background(), SnapshotOption{}); err != nil || idx != 100 {
		t.Fatalf("RequestSnapshot = %d, %v", idx, err)
	}
	_, err := env.e.RequestSnapshot(context.Background(), SnapshotOption{})
	wantErr(t, err, ErrNoNewEntries, "")
}

func TestRequestSnapshotIgnoresMinGap(t *testing.T) {
	env := newExecEnv(t, func(c *ExecutorConfig) { c.SnapshotMinGap = 1000 })
	env.sm.apply(5, "a")
	if idx, err := env.e.RequestSnapshot(context.Background(), SnapshotOption{}); err != nil || idx != 5 {
		t.Fatalf("RequestSnapshot = %d, %v", idx, err)
	}
}

func TestRequestSnapshotOverrideCompactionOverhead(t *testing.T) {
	env := newExecEnv(t)
	env.sm.apply(100, "a")
	if _, err := env.e.RequestSnapshot(context.Background(), SnapshotOption{CompactionOverhead: 0, OverrideCompactionOverhead: true}); err != nil {
		t.Fatal(err)
	}
	env.sm.apply(200, "b")
	if _, err := env.e.RequestSnapshot(context.Background(), SnapshotOption{CompactionOverhead: 75}); err != nil {
		t.Fatal(err) // not overridden: the group's 10
	}
	if _, compacted, _ := env.log.state(); len(compacted) != 2 || compacted[0] != 100 || compacted[1] != 190 {
		t.Fatalf("compacted %v, want [100 190]", compacted)
	}
}

func TestRequestSnapshotExportPathMustExist(t *testing.T) {
	env := newExecEnv(t)
	env.sm.apply(100, "a")
	_, err := env.e.RequestSnapshot(context.Background(), SnapshotOption{Exported: true, ExportPath: "/nope"})
	wantErr(t, err, ErrDirNotExist, "/nope")
}

// An exported snapshot is complete and self-contained under the path and
// changes neither the group's snapshot index nor its log.
func TestRequestSnapshotExported(t *testing.T) {
	env := newExecEnv(t)
	env.sm.apply(100, "a")
	env.e.DoSnapshot(context.Background())
	env.fs.MkdirAll("/backup", 0o755)
	for _, applied := range []uint64{100, 150} { // even with nothing new
		env.sm.apply(applied, "state")
		idx, err := env.e.RequestSnapshot(context.Background(), SnapshotOption{Exported: true, ExportPath: "/backup"})
		if err != nil || idx != applied {
			t.Fatalf("export = %d, %v", idx, err)
		}
		m, err := VerifyExport(env.fs, ExportDir(env.fs, "/backup", idx))
		if err != nil || m.Index != applied {
			t.Fatalf("VerifyExport: %+v, %v", m, err)
		}
	}
	if i, _ := env.e.LastSnapshot(); i != 100 {
		t.Fatalf("an export moved the snapshot index to %d", i)
	}
	if snaps, compacted, _ := env.log.state(); len(snaps) != 1 || len(compacted) != 1 {
		t.Fatalf("an export touched the log: %v %v", snaps, compacted)
	}
	if n := len(env.store.List()); n != 1 {
		t.Fatalf("an export added to the store: %d", n)
	}
	names, _ := env.fs.List("/backup")
	if len(names) != 2 {
		t.Fatalf("/backup holds %v", names)
	}
}

// A path without Exported is ignored with a warning: a normal snapshot.
func TestRequestSnapshotExportPathWithoutExported(t *testing.T) {
	var logs bytes.Buffer
	env := newExecEnv(t, func(c *ExecutorConfig) { c.Logger = slog.New(slog.NewTextHandler(&logs, nil)) })
	env.fs.MkdirAll("/backup", 0o755)
	env.sm.apply(100, "a")
	idx, err := env.e.RequestSnapshot(context.Background(), SnapshotOption{ExportPath: "/backup"})
	if err != nil || idx != 100 {
		t.Fatalf("RequestSnapshot = %d, %v", idx, err)
	}
	if i, _ := env.e.LastSnapshot(); i != 100 {
		t.Fatal("not a normal snapshot")
	}
	if names, _ := env.fs.List("/backup"); len(names) != 0 {
		t.Fatalf("exported anyway: %v", names)
	}
	if !strings.Contains(logs.String(), "ExportPath set without Exported") {
		t.Fatalf("no warning logged: %q", logs.String())
	}
}

// Open fell back past a corrupt snapshot: accepted only if the log covers
// the gap.
func TestNewExecutorFallbackNeedsLogCoverage(t *testing.T) {
	fs := vfs.NewMem()
	s := mustOpen(t, fs, "/g1")
	save(t, s, 10, "ten")
	save(t, s, 20, "twenty")
	writeFileSync(fs, "/g1/"+publishedName(20)+"/data", []byte("x"))
	for _, tc := range []struct {
		log Log
		ok  bool
	}{
		{&fakeLog{}, false},           // cannot tell
		{&rangeLog{first: 30}, false}, // entries 11..29 are gone
		{&rangeLog{first: 11}, true},  // the log covers 11..
		{&rangeLog{first: 5}, true},
	} {
		s := mustOpen(t, fs, "/g1")
		raft := &fakeRaft{}
		_, err := NewExecutor(ExecutorConfig{Store: s, Log: tc.log, Raft: raft, StateMachine: &fakeSM{}})
		if tc.ok != (err == nil) || (err != nil && !errors.Is(err, ErrNoValidSnapshot)) {
			t.Errorf("log %+v: %v", tc.log, err)
		}
	}
}

// A prepared job that will not run can be canceled; the executor is then
// free again and nothing was written.
func TestSaveJobCancel(t *testing.T) {
	env := newExecEnv(t)
	env.sm.apply(100, "s")
	job, err := env.e.Prepare()
	if err != nil {
		t.Fatal(err)
	}
	job.Cancel()
	if names, _ := env.fs.List("/follower"); len(names) != 0 {
		t.Fatalf("left %v", names)
	}
	if _, err := job.Run(context.Background()); !errors.Is(err, ErrClosed) {
		t.Fatalf("Run after Cancel: %v", err)
	}
	if idx, err := env.e.DoSnapshot(context.Background()); err != nil || idx != 100 {
		t.Fatalf("DoSnapshot after Cancel = %d, %v", idx, err)
	}
}

// REQUIREMENTS §29: a damaged latest snapshot is quarantined and rebuilt
// from the state machine, at the same index if nothing new was applied.
func TestRebuildDamagedSnapshot(t *testing.T) {
	env := newExecEnv(t)
	env.sm.apply(100, "good")
	env.e.DoSnapshot(context.Background())
	if idx, err := env.e.RebuildSnapshot(context.Background()); err != nil || idx != 100 {
		t.Fatalf("healthy: %d, %v", idx, err)
	}
	writeFileSync(env.fs, "/follower/"+publishedName(100)+"/data", []byte("baad"))
	sending, _ := env.store.OpenReader(100)
	if _, err := env.e.RebuildSnapshot(context.Background()); !errors.Is(err, ErrBusy) {
		t.Fatalf("while sent: %v", err)
	}
	sending.Close()
	idx, err := env.e.RebuildSnapshot(context.Background())
	if err != nil || idx != 100 {
		t.Fatalf("rebuild: %d, %v", idx, err)
	}
	if got := readData(t, env.store, 100); got != "good" {
		t.Fatalf("rebuilt snapshot holds %q", got)
	}
	if sk := env.store.Skipped(); len(sk) != 1 || sk[0].Index != 100 || !errors.Is(sk[0].Err, ErrChecksum) {
		t.Fatalf("skipped %+v", sk)
	}
	// Still strict otherwise: a normal save at the same index is stale.
	if _, err := env.e.RequestSnapshot(context.Background(), SnapshotOption{}); !errors.Is(err, ErrNoNewEntries) {
		t.Fatalf("RequestSnapshot: %v", err)
	}
}
