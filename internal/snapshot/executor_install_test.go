package snapshot

import (
	"context"
	"errors"
	"testing"

	"github.com/skiffdb/skiff/raftpb"
)

// Install registration: SOFAJRaft registerDownloadingSnapshot exactly, one
// test per rule (seed 000); load done: braft on_snapshot_load_done (seed 003).

// The plain path: fetch, verify, load, then lastSnapshotIndex/Term advance,
// the log is handed the meta and the request is answered with the index.
func TestInstallLoadDone(t *testing.T) {
	env := newExecEnv(t)
	m := env.leaderSnapshot(200, "leader@200")
	r := recv(t, env.install(5, m), "response")
	if !r.Success || r.Index != 200 || r.Term != 5 || r.Err != nil {
		t.Fatalf("response %+v", r)
	}
	if i, term := env.e.LastSnapshot(); i != 200 || term != m.Term {
		t.Fatalf("last snapshot %d/%d", i, term)
	}
	if snaps, compacted, _ := env.log.state(); len(snaps) != 1 || snaps[0] != 200 || len(compacted) != 0 {
		t.Fatalf("log: set_snapshot %v, compacted %v", snaps, compacted)
	}
	if env.sm.LastApplied() != 200 || env.sm.data != "leader@200" {
		t.Fatalf("state machine at %d holds %q", env.sm.applied, env.sm.data)
	}
}

// Rule: stopped → EHOSTDOWN.
func TestInstallStopped(t *testing.T) {
	env := newExecEnv(t)
	m := env.leaderSnapshot(200, "x")
	env.e.Stop()
	r := recv(t, env.install(5, m), "response")
	wantErr(t, r.Err, ErrHostDown, "")
	if env.fetch.callCount() != 0 {
		t.Fatal("fetched while stopped")
	}
}

// Rule: saving → EBUSY.
func TestInstallWhileSaving(t *testing.T) {
	env := newExecEnv(t)
	m := env.leaderSnapshot(200, "x")
	env.sm.apply(100, "s")
	job, err := env.e.Prepare()
	if err != nil {
		t.Fatal(err)
	}
	r := recv(t, env.install(5, m), "response")
	wantErr(t, r.Err, ErrBusy, "saving")
	if _, err := job.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	if r := recv(t, env.install(5, m), "retry"); !r.Success {
		t.Fatalf("retry after the save: %+v", r)
	}
}

// Rule: request term ≠ current term → success=false, nothing done.
func TestInstallTermMismatch(t *testing.T) {
	env := newExecEnv(t)
	m := env.leaderSnapshot(200, "x")
	for _, term := range []uint64{4, 6} {
		r := recv(t, env.install(term, m), "response")
		if r.Success || r.Err != nil || r.Term != 5 {
			t.Fatalf("term %d: %+v, want success=false in term 5", term, r)
		}
	}
	if env.fetch.callCount() != 0 {
		t.Fatal("fetched on a term mismatch")
	}
}

// Rule: not newer than the local snapshot → success=true, nothing done.
func TestInstallNotNewer(t *testing.T) {
	env := newExecEnv(t)
	env.sm.apply(300, "local")
	env.e.DoSnapshot(context.Background())
	for _, index := range []uint64{200, 300} {
		m := env.leaderSnapshot(index, "x")
		r := recv(t, env.install(5, m), "response")
		if !r.Success || r.Err != nil || r.Index != 300 {
			t.Fatalf("index %d: %+v", index, r)
		}
	}
	if env.fetch.callCount() != 0 || len(env.sm.restored) != 0 {
		t.Fatal("did something for an old snapshot")
	}
}

// Rule: same index as the download in progress → the new request takes
// over, the old one is answered EINTR; the session answers the new one.
func TestInstallRetryTakesOver(t *testing.T) {
	env := newExecEnv(t)
	env.fetch.started = make(chan uint64, 2)
	m := env.leaderSnapshot(200, "x")
	g := env.fetch.gate(200)
	first := env.install(5, m)
	recv(t, env.fetch.started, "fetch")
	second := env.install(5, m)
	r := recv(t, first, "first response")
	wantErr(t, r.Err, ErrInterrupted, "")
	noRecv(t, second, "second response before the fetch is done")
	close(g)
	if r := recv(t, second, "second response"); !r.Success || r.Index != 200 {
		t.Fatalf("second: %+v", r)
	}
	if n := env.fetch.callCount(); n != 1 {
		t.Fatalf("%d fetches, want 1: the retry continues the same one", n)
	}
}

// Rule: older than the one in progress → EINVAL.
func TestInstallOlderThanInProgress(t *testing.T) {
	env := newExecEnv(t)
	env.fetch.started = make(chan uint64, 2)
	older := env.leaderSnapshot(200, "x")
	newer := env.leaderSnapshot(300, "y")
	g := env.fetch.gate(300)
	inProgress := env.install(5, newer)
	recv(t, env.fetch.started, "fetch")
	r := recv(t, env.install(5, older), "older response")
	wantErr(t, r.Err, ErrInvalid, "newer snapshot")
	close(g)
	if r := recv(t, inProgress, "response"); !r.Success || r.Index != 300 {
		t.Fatalf("in progress: %+v", r)
	}
}

// Rule: newer, and the one in progress is already loading → EBUSY.
func TestInstallNewerWhileLoading(t *testing.T) {
	env := newExecEnv(t)
	env.sm.restoreGate = make(chan struct{})
	env.sm.restoreStarted = make(chan uint64, 1)
	older := env.leaderSnapshot(200, "x")
	newer := env.leaderSnapshot(300, "y")
	loading := env.install(5, older)
	recv(t, env.sm.restoreStarted, "load start")
	r := recv(t, env.install(5, newer), "newer response")
	wantErr(t, r.Err, ErrBusy, "loading")
	close(env.sm.restoreGate)
	if r := recv(t, loading, "response"); !r.Success || r.Index != 200 {
		t.Fatalf("loading one: %+v", r)
	}
	if n := env.fetch.callCount(); n != 1 {
		t.Fatalf("%d fetches", n)
	}
}

// Rule: newer, the one in progress still downloading → its copy is
// canceled and the newer request is answered EBUSY so that the leader
// retries it.
func TestInstallNewerCancelsDownload(t *testing.T) {
	env := newExecEnv(t)
	env.fetch.started = make(chan uint64, 2)
	older := env.leaderSnapshot(200, "x")
	newer := env.leaderSnapshot(300, "y")
	env.fetch.gate(200) // never opened: only a cancel ends it
	old := env.install(5, older)
	recv(t, env.fetch.started, "fetch")
	r := recv(t, env.install(5, newer), "newer response")
	wantErr(t, r.Err, ErrBusy, "trying to cancel")
	r = recv(t, old, "old response")
	if r.Success || !errors.Is(r.Err, ErrInterrupted) {
		t.Fatalf("old: %+v", r)
	}
	// The leader retries: now it goes through.
	if r := recv(t, env.install(5, newer), "retry"); !r.Success || r.Index != 300 {
		t.Fatalf("retry: %+v", r)
	}
	if i, _ := env.e.LastSnapshot(); i != 300 {
		t.Fatalf("last snapshot %d", i)
	}
}

// Canceling the Install call's context (the host cancels a transfer)
// stops the fetch and answers with context.Canceled — not ErrInterrupted,
// which means a retry took over and will answer — and a later request
// installs normally.
func TestInstallCallerCancel(t *testing.T) {
	env := newExecEnv(t)
	env.fetch.started = make(chan uint64, 2)
	m := env.leaderSnapshot(200, "x")
	gate := env.fetch.gate(200) // opened only after the cancel
	ctx, cancel := context.WithCancel(context.Background())
	ch := env.installCtx(ctx, 5, m)
	recv(t, env.fetch.started, "fetch")
	cancel()
	r := recv(t, ch, "response")
	if r.Success || !errors.Is(r.Err, context.Canceled) || errors.Is(r.Err, ErrInterrupted) {
		t.Fatalf("canceled install answered %+v", r)
	}
	close(gate)
	if r := recv(t, env.install(5, m), "retry"); !r.Success || r.Index != 200 {
		t.Fatalf("retry: %+v", r)
	}
}

// A snapshot fetched and published by an attempt whose load was cut off
// is loaded by the next request, not fetched again (the store would refuse
// the same index as stale, and the replica would never install).
func TestInstallReloadsPublishedSnapshot(t *testing.T) {
	env := newExecEnv(t)
	env.sm.restoreGate = make(chan struct{}) // never opened: the load is cut off
	env.sm.restoreStarted = make(chan uint64, 2)
	m := env.leaderSnapshot(200, "x")
	ctx, cancel := context.WithCancel(context.Background())
	ch := env.installCtx(ctx, 5, m)
	recv(t, env.sm.restoreStarted, "first load")
	cancel()
	if r := recv(t, ch, "first response"); r.Success {
		t.Fatalf("cut-off load answered %+v", r)
	}
	env.sm.restoreGate = nil
	if r := recv(t, env.install(5, m), "retry"); !r.Success || r.Index != 200 {
		t.Fatalf("retry: %+v", r)
	}
	if n := env.fetch.callCount(); n != 1 {
		t.Fatalf("%d fetches, want 1 (the published copy is reloaded)", n)
	}
}

// A failed fetch answers the request with the error and leaves the
// executor free; a failed verification at load answers with ErrChecksum
// and advances nothing.
func TestInstallFailures(t *testing.T) {
	env := newExecEnv(t)
	m := env.leaderSnapshot(200, "x")
	fetchErr := errors.New("connection reset")
	env.e.cfg.Fetch = func(context.Context, InstallRequest) (raftpb.SnapshotMeta, error) {
		return raftpb.SnapshotMeta{}, fetchErr
	}
	r := recv(t, env.install(5, m), "response")
	if r.Success || !errors.Is(r.Err, fetchErr) {
		t.Fatalf("failed fetch: %+v", r)
	}
	// Corrupted on disk between the fetch and the load.
	env.e.cfg.Fetch = func(ctx context.Context, req InstallRequest) (raftpb.SnapshotMeta, error) {
		got, err := env.fetch.Fetch(ctx, req)
		if err == nil {
			writeFileSync(env.fs, "/follower/"+publishedName(got.Index)+"/data", []byte("y"))
		}
		return got, err
	}
	r = recv(t, env.install(5, m), "response")
	if r.Success || !errors.Is(r.Err, ErrChecksum) {
		t.Fatalf("corrupt snapshot: %+v", r)
	}
	if i, _ := env.e.LastSnapshot(); i != 0 || len(env.sm.restored) != 0 {
		t.Fatalf("a failed install advanced the snapshot to %d / loaded %v", i, env.sm.restored)
	}
	if snaps, _, _ := env.log.state(); len(snaps) != 0 {
		t.Fatalf("log told %v", snaps)
	}
	if _, err := env.e.Prepare(); err != nil {
		t.Fatalf("executor not free after failures: %v", err)
	}
}
