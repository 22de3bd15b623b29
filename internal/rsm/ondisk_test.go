package rsm

import (
	"bytes"
	"context"
	"errors"
	"slices"
	"testing"

	"github.com/skiffdb/skiff/raftpb"
)

func TestOnDiskOpenReturnsDurableIndex(t *testing.T) {
	sm := &diskSM{durable: 42}
	s, err := New(Config{SM: sm})
	if err != nil {
		t.Fatal(err)
	}
	got, err := s.Open(context.Background())
	if err != nil || got != 42 {
		t.Fatalf("Open = %d, %v; want 42", got, err)
	}
	if _, err := s.Open(context.Background()); err == nil {
		t.Fatal("second Open accepted")
	}
	if idx, _ := s.LastApplied(); idx != 0 {
		t.Fatalf("LastApplied %d before replay", idx)
	}
	mem, _ := New(Config{SM: &memSM{}})
	if got, err := mem.Open(context.Background()); got != 0 || err != nil {
		t.Fatalf("in-memory Open = %d, %v", got, err)
	}
}

// A metadata-only capture syncs the state machine and writes no SM data
// (the stream is the header alone); a full one carries the data.
func TestOnDiskMetadataOnlyCapture(t *testing.T) {
	sm := &diskSM{typ: 9, ver: 1}
	s := newRSM(t, sm, 0)
	m := testMembership
	if _, err := s.Apply(Batch{Entries: sessionLog(), Membership: &m}, nil); err != nil {
		t.Fatal(err)
	}
	c, err := s.Capture(false)
	if err != nil {
		t.Fatal(err)
	}
	if sm.syncs != 1 || sm.snapshots != 0 || sm.durable != 4 {
		t.Fatalf("syncs %d snapshots %d durable %d; want 1, 0, 4", sm.syncs, sm.snapshots, sm.durable)
	}
	if c.Full() || !c.OnDisk() || c.Index() != 5 {
		t.Fatalf("capture full=%v ondisk=%v index=%d", c.Full(), c.OnDisk(), c.Index())
	}
	f := &files{}
	data := captureBytes(t, c, f)
	if len(data) != len(c.header) || len(f.added) != 0 {
		t.Fatalf("metadata-only snapshot wrote %d bytes (header %d) and %d files", len(data), len(c.header), len(f.added))
	}
	c.Release()

	full, err := s.Capture(true)
	if err != nil {
		t.Fatal(err)
	}
	if sm.snapshots != 1 || !full.Full() {
		t.Fatal("full capture did not snapshot the SM")
	}
	if d := captureBytes(t, full, nil); len(d) <= len(full.header) {
		t.Fatal("full snapshot has no SM data")
	}
	full.Release()
}

// The restart case: Open says the SM holds up to 5, the latest snapshot is
// metadata-only at 3. Restore takes only its sessions; ReplayOnDisk (3, 5]
// updates sessions and membership without SM.Apply; live entries follow.
func TestOnDiskRestartReplay(t *testing.T) {
	// Before the crash: a replica applies the log, snapshots at 3 (after
	// series 1), then applies series 2 and a config change.
	log := sessionLog()
	sm := &diskSM{}
	s := newRSM(t, sm, 0)
	mustApply(t, s, log[:3]...)
	c, err := s.Capture(false)
	if err != nil {
		t.Fatal(err)
	}
	snap := captureBytes(t, c, nil)
	m := testMembership
	if _, err := s.Apply(Batch{Entries: log[3:], Membership: &m}, nil); err != nil {
		t.Fatal(err)
	}
	sm.Sync() // durable at 4 (5 is a config change, not the SM's)

	// Restart: same SM data, fresh RSM.
	sm2 := &diskSM{durable: 5, memSM: memSM{cmds: slices.Clone(sm.cmds), indexes: slices.Clone(sm.indexes)}}
	r, err := New(Config{SM: sm2})
	if err != nil {
		t.Fatal(err)
	}
	applied, err := r.Open(context.Background())
	if err != nil || applied != 5 {
		t.Fatalf("Open = %d, %v", applied, err)
	}
	if err := CheckStart(c.Index(), applied, 5); err != nil {
		t.Fatal(err)
	}
	if err := r.Restore(context.Background(), metaOf(c), bytes.NewReader(snap), nil); err != nil {
		t.Fatal(err)
	}
	if sm2.applyCalls != 0 || len(sm2.cmds) != 3 {
		t.Fatal("metadata-only restore touched the SM")
	}
	if err := r.ReplayOnDisk(Batch{Entries: log[3:], Membership: &m}); err != nil {
		t.Fatal(err)
	}
	if sm2.applyCalls != 0 {
		t.Fatalf("replay called SM.Apply %d times", sm2.applyCalls)
	}
	if idx, term := r.LastApplied(); idx != 5 || term != 2 {
		t.Fatalf("LastApplied %d/%d after replay", idx, term)
	}
	if r.Membership().ConfigChangeIndex != 5 {
		t.Fatal("replay did not update the membership")
	}
	// Series 1 (before the snapshot) still has its result; series 2 was
	// replayed without one: its retry is expired, never applied twice.
	out := byKey(t, mustApply(t, r,
		sessionProp(6, 3, 6, Session{7, 1, 0}, "a"),
		sessionProp(7, 3, 7, Session{7, 2, 0}, "c"),
		sessionProp(8, 3, 8, Session{7, 3, 0}, "e")))
	if out[6].Err != nil || string(out[6].Result.Data) != "r:a" {
		t.Fatalf("series 1 retry: %+v", out[6])
	}
	if !errors.Is(out[7].Err, ErrSessionExpired) {
		t.Fatalf("series 2 retry: %+v", out[7])
	}
	if out[8].Err != nil || !slices.Equal(sm2.cmds, []string{"a", "b", "c", "e"}) {
		t.Fatalf("new series: %+v, SM %v", out[8], sm2.cmds)
	}
	// Replay beyond the SM's index is refused.
	if err := r.ReplayOnDisk(Batch{Entries: []raftpb.Entry{normal(9, 3, 9, "x")}}); err == nil {
		t.Fatal("replay beyond the SM's applied index accepted")
	}
}

// Apply without ReplayOnDisk also never re-applies what the SM holds.
func TestOnDiskApplyBelowOpenIndexIsReplay(t *testing.T) {
	sm := &diskSM{durable: 2}
	s := newRSM(t, sm, 0)
	out := mustApply(t, s, normal(1, 1, 1, "a"), normal(2, 1, 2, "b"), normal(3, 1, 3, "c"))
	if !slices.Equal(sm.cmds, []string{"c"}) || len(out) != 1 || out[0].Key != 3 {
		t.Fatalf("SM %v, outcomes %+v", sm.cmds, out)
	}
}

func TestRestoreMetadataOnlyNeedsFullWhenBehind(t *testing.T) {
	sm := &diskSM{}
	s := newRSM(t, sm, 0)
	mustApply(t, s, sessionLog()[:4]...)
	c, err := s.Capture(false)
	if err != nil {
		t.Fatal(err)
	}
	data := captureBytes(t, c, nil)

	// An OnDisk SM whose data is older than the snapshot.
	behind := newRSM(t, &diskSM{durable: 2}, 0)
	if err := behind.Restore(context.Background(), metaOf(c), bytes.NewReader(data), nil); !errors.Is(err, ErrNeedFullSnapshot) {
		t.Fatalf("behind: err = %v, want ErrNeedFullSnapshot", err)
	}
	// An in-memory SM can never use a metadata-only snapshot.
	mem := newRSM(t, &memSM{}, 0)
	if err := mem.Restore(context.Background(), metaOf(c), bytes.NewReader(data), nil); !errors.Is(err, ErrNeedFullSnapshot) {
		t.Fatalf("in-memory: err = %v, want ErrNeedFullSnapshot", err)
	}
	// Current: sessions only.
	cur := &diskSM{durable: 4}
	r := newRSM(t, cur, 0)
	if err := r.Restore(context.Background(), metaOf(c), bytes.NewReader(data), nil); err != nil {
		t.Fatal(err)
	}
	if r.sessions.len() != 1 || cur.restoredFiles != nil {
		t.Fatal("metadata-only restore: wrong sessions or SM restored")
	}
	// Metadata-only followed by stray bytes is corrupt.
	r2 := newRSM(t, &diskSM{durable: 4}, 0)
	if err := r2.Restore(context.Background(), metaOf(c), bytes.NewReader(append(bytes.Clone(data), 'x')), nil); !errors.Is(err, ErrCorruptSnapshot) {
		t.Fatalf("trailing data: %v", err)
	}
}

// A full snapshot into an OnDisk SM replaces its data; later entries apply.
func TestOnDiskFullRestore(t *testing.T) {
	s := newRSM(t, &diskSM{}, 0)
	mustApply(t, s, sessionLog()[:4]...)
	c, err := s.Capture(true)
	if err != nil {
		t.Fatal(err)
	}
	data := captureBytes(t, c, nil)
	dst := &diskSM{durable: 1, memSM: memSM{cmds: []string{"stale"}, indexes: []uint64{1}}}
	r := newRSM(t, dst, 0)
	if err := r.Restore(context.Background(), metaOf(c), bytes.NewReader(data), nil); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(dst.cmds, []string{"a", "b", "c"}) {
		t.Fatalf("SM %v", dst.cmds)
	}
	mustApply(t, r, normal(5, 2, 5, "d"))
	if !slices.Equal(dst.cmds, []string{"a", "b", "c", "d"}) {
		t.Fatalf("SM %v after apply", dst.cmds)
	}
}

// A metadata-only snapshot taken right after a config change (an entry the
// state machine never sees) is usable after a restart although Open returns
// an index below the snapshot's: the state machine holds every entry of the
// snapshot that reached it. One index less is a real gap.
func TestOnDiskSnapshotEndingWithConfigChange(t *testing.T) {
	sm := &diskSM{}
	s := newRSM(t, sm, 0)
	m := testMembership
	if _, err := s.Apply(Batch{Entries: sessionLog(), Membership: &m}, nil); err != nil {
		t.Fatal(err)
	}
	c, err := s.Capture(false)
	if err != nil {
		t.Fatal(err)
	}
	if c.Index() != 5 || sm.durable != 4 {
		t.Fatalf("capture at %d, SM durable at %d; want 5, 4", c.Index(), sm.durable)
	}
	data := captureBytes(t, c, nil)

	restart := func(durable uint64) (*RSM, error) {
		r := newRSM(t, &diskSM{durable: durable}, 0)
		return r, r.Restore(context.Background(), metaOf(c), bytes.NewReader(data), nil)
	}
	r, err := restart(4)
	if err != nil {
		t.Fatal(err)
	}
	applied, _ := r.LastApplied()
	if applied != 5 || CheckStart(c.Index(), max(4, applied), 5) != nil {
		t.Fatalf("LastApplied %d", applied)
	}
	out := mustApply(t, r, normal(6, 3, 6, "f"))
	if len(out) != 1 || out[0].Err != nil {
		t.Fatalf("apply after restart: %+v", out)
	}
	if _, err := restart(3); !errors.Is(err, ErrNeedFullSnapshot) {
		t.Fatalf("SM missing entry 4: err = %v, want ErrNeedFullSnapshot", err)
	}
}

// The index recorded as "the state machine's data" in a snapshot must be
// one the state machine itself reports from Open after a restart: the last
// entry it was given (or its restored data's). Restoring a snapshot must
// not raise it to the snapshot's index, or a later metadata-only snapshot
// claims data the state machine never held, and the replica refuses its own
// snapshot at the next restart. Found by skiffkv's linearizability test (a
// replica killed twice early, while the log held only config changes and
// no-ops).
func TestOnDiskSnapshotRecordsTheStateMachinesOwnIndex(t *testing.T) {
	m := testMembership
	t.Run("metadata-only", func(t *testing.T) {
		s := newRSM(t, &diskSM{}, 0)
		if _, err := s.Apply(Batch{Entries: []raftpb.Entry{noop(1, 1), confChange(2, 1, 0, false), noop(3, 1)}, Membership: &m}, nil); err != nil {
			t.Fatal(err)
		}
		c3, err := s.Capture(false)
		if err != nil {
			t.Fatal(err)
		}
		data3 := captureBytes(t, c3, nil)

		// Restart: the state machine never saw an entry.
		r := newRSM(t, &diskSM{}, 0)
		if err := r.Restore(context.Background(), metaOf(c3), bytes.NewReader(data3), nil); err != nil {
			t.Fatal(err)
		}
		mustApply(t, r, noop(4, 2), noop(5, 2))
		c5, err := r.Capture(false)
		if err != nil {
			t.Fatal(err)
		}
		if c5.smIndex != 0 {
			t.Fatalf("snapshot at 5 records state machine data at %d; the state machine holds nothing", c5.smIndex)
		}
		data5 := captureBytes(t, c5, nil)

		// Restart again: still nothing in the state machine, and that is
		// all the snapshot needs.
		r2 := newRSM(t, &diskSM{}, 0)
		if err := r2.Restore(context.Background(), metaOf(c5), bytes.NewReader(data5), nil); err != nil {
			t.Fatalf("restart refused its own snapshot: %v", err)
		}
		mustApply(t, r2, normal(6, 2, 6, "a"))
	})
	t.Run("full", func(t *testing.T) {
		src := newRSM(t, &diskSM{}, 0)
		mustApply(t, src, normal(1, 1, 1, "a"), noop(2, 1))
		full, err := src.Capture(true)
		if err != nil {
			t.Fatal(err)
		}
		data := captureBytes(t, full, nil)

		// A follower installs it: its data now says 1 (the last entry the
		// leader's state machine applied), not 2.
		sm := &diskSM{}
		dst := newRSM(t, sm, 0)
		if err := dst.Restore(context.Background(), metaOf(full), bytes.NewReader(data), nil); err != nil {
			t.Fatal(err)
		}
		mustApply(t, dst, noop(3, 2))
		c3, err := dst.Capture(false)
		if err != nil {
			t.Fatal(err)
		}
		if c3.smIndex != 1 || sm.durable != 1 {
			t.Fatalf("snapshot at 3 records state machine data at %d (state machine durable at %d), want 1", c3.smIndex, sm.durable)
		}
		data3 := captureBytes(t, c3, nil)
		r := newRSM(t, &diskSM{durable: 1, memSM: memSM{cmds: []string{"a"}, indexes: []uint64{1}}}, 0)
		if err := r.Restore(context.Background(), metaOf(c3), bytes.NewReader(data3), nil); err != nil {
			t.Fatalf("restart after an install refused its own snapshot: %v", err)
		}
	})
}
