package rsm

import (
	"errors"
	"slices"
	"testing"

	"github.com/skiffdb/skiff/raftpb"
)

// A run of normal entries is one SM.Apply call; NoOps inside it do not split
// it; results come back per key.
func TestApplyBatchesNormalEntries(t *testing.T) {
	sm := &memSM{}
	s := newRSM(t, sm, 0)
	out := mustApply(t, s, normal(1, 1, 101, "a"), normal(2, 1, 102, "b"), noop(3, 1), normal(4, 2, 104, "c"))
	if sm.applyCalls != 1 {
		t.Fatalf("SM.Apply called %d times, want 1", sm.applyCalls)
	}
	if !slices.Equal(sm.cmds, []string{"a", "b", "c"}) || !slices.Equal(sm.indexes, []uint64{1, 2, 4}) {
		t.Fatalf("SM got %v at %v", sm.cmds, sm.indexes)
	}
	if len(out) != 3 {
		t.Fatalf("%d outcomes, want 3: %+v", len(out), out)
	}
	for i, want := range []struct {
		index, term, key uint64
		data             string
	}{{1, 1, 101, "r:a"}, {2, 1, 102, "r:b"}, {4, 2, 104, "r:c"}} {
		a := out[i]
		if a.Index != want.index || a.Term != want.term || a.Key != want.key || string(a.Result.Data) != want.data || a.Err != nil {
			t.Fatalf("outcome %d = %+v, want %+v", i, a, want)
		}
	}
	if idx, term := s.LastApplied(); idx != 4 || term != 2 {
		t.Fatalf("LastApplied = %d, %d; want 4, 2", idx, term)
	}
}

func TestApplyNoOpAndConfigChangeDoNotCallSM(t *testing.T) {
	sm := &memSM{}
	s := newRSM(t, sm, 0)
	m := raftpb.Membership{ConfigChangeIndex: 2, Voters: []raftpb.Member{{ID: 1, Addr: "h1"}, {ID: 4, Addr: "h4"}}}
	out, err := s.Apply(Batch{Entries: []raftpb.Entry{noop(1, 3), confChange(2, 3, 55, true), confChange(3, 3, 0, false)}, Membership: &m}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if sm.applyCalls != 0 {
		t.Fatalf("SM.Apply called %d times", sm.applyCalls)
	}
	if idx, term := s.LastApplied(); idx != 3 || term != 3 {
		t.Fatalf("LastApplied = %d, %d; want 3, 3", idx, term)
	}
	if len(out) != 1 || out[0].Key != 55 || out[0].Index != 2 {
		t.Fatalf("outcomes %+v, want one for the tagged conf change", out)
	}
	got := s.Membership()
	if got.ConfigChangeIndex != 2 || len(got.Voters) != 2 {
		t.Fatalf("membership %+v", got)
	}
	m.Voters[0].Addr = "changed"
	if s.Membership().Voters[0].Addr != "h1" {
		t.Fatal("membership aliases the batch's")
	}
	// A config change without the membership it produced is a contract violation.
	if _, err := s.Apply(Batch{Entries: []raftpb.Entry{confChange(4, 3, 0, false)}}, nil); err == nil {
		t.Fatal("config change without membership accepted")
	}
}

func TestApplySkipsAppliedEntries(t *testing.T) {
	sm := &memSM{}
	s := newRSM(t, sm, 0)
	mustApply(t, s, normal(1, 1, 1, "a"), normal(2, 1, 2, "b"))
	// The engine may hand an overlapping batch again (a retry after restart).
	out := mustApply(t, s, normal(1, 1, 1, "a"), normal(2, 1, 2, "b"), normal(3, 1, 3, "c"))
	if !slices.Equal(sm.cmds, []string{"a", "b", "c"}) {
		t.Fatalf("SM got %v", sm.cmds)
	}
	if len(out) != 1 || out[0].Key != 3 {
		t.Fatalf("outcomes %+v, want only key 3", out)
	}
	out = mustApply(t, s, normal(2, 1, 2, "b"))
	if len(out) != 0 || sm.applyCalls != 2 {
		t.Fatalf("fully applied batch: %d outcomes, %d SM calls", len(out), sm.applyCalls)
	}
}

func TestApplyGap(t *testing.T) {
	sm := &memSM{}
	s := newRSM(t, sm, 0)
	_, err := s.Apply(Batch{Entries: []raftpb.Entry{normal(1, 1, 1, "a"), normal(3, 1, 3, "c")}}, nil)
	if !errors.Is(err, ErrIndexGap) {
		t.Fatalf("err = %v, want ErrIndexGap", err)
	}
	// What preceded the gap is applied.
	if idx, _ := s.LastApplied(); idx != 1 || !slices.Equal(sm.cmds, []string{"a"}) {
		t.Fatalf("applied %d, SM %v", idx, sm.cmds)
	}
}

func TestApplyCorruptEntryIsFatalNotPanic(t *testing.T) {
	sm := &memSM{}
	s := newRSM(t, sm, 0)
	bad := raftpb.Entry{Index: 2, Term: 1, Type: raftpb.EntryNormal, Data: []byte("not ours")}
	_, err := s.Apply(Batch{Entries: []raftpb.Entry{normal(1, 1, 1, "a"), bad, normal(3, 1, 3, "c")}}, nil)
	if !errors.Is(err, ErrCorruptEntry) {
		t.Fatalf("err = %v, want ErrCorruptEntry", err)
	}
	if idx, _ := s.LastApplied(); idx != 1 || !slices.Equal(sm.cmds, []string{"a"}) {
		t.Fatalf("applied %d, SM %v; want 1, [a]", idx, sm.cmds)
	}
	// Fatal: a later batch (even a valid one) is refused, not applied.
	if _, err := s.Apply(Batch{Entries: []raftpb.Entry{normal(2, 1, 2, "b")}}, nil); !errors.Is(err, ErrCorruptEntry) {
		t.Fatalf("apply after a corrupt entry: %v", err)
	}
	if len(sm.cmds) != 1 {
		t.Fatalf("SM %v", sm.cmds)
	}
}

func TestApplySMErrorIsFatal(t *testing.T) {
	boom := errors.New("boom")
	sm := &memSM{failApply: boom}
	s := newRSM(t, sm, 0)
	if _, err := s.Apply(Batch{Entries: []raftpb.Entry{normal(1, 1, 1, "a")}}, nil); !errors.Is(err, boom) {
		t.Fatalf("err = %v, want boom", err)
	}
	if idx, _ := s.LastApplied(); idx != 0 {
		t.Fatalf("applied %d after a failed apply", idx)
	}
	sm.failApply = nil
	// The state machine's state is unknown: the replica stays failed.
	if _, err := s.Apply(Batch{Entries: []raftpb.Entry{normal(1, 1, 1, "a")}}, nil); !errors.Is(err, boom) {
		t.Fatalf("second apply err = %v, want the first failure", err)
	}
	if sm.applyCalls != 1 {
		t.Fatalf("SM.Apply called %d times after a failure", sm.applyCalls)
	}
	if _, err := s.Capture(true); !errors.Is(err, boom) {
		t.Fatalf("capture after failure: %v", err)
	}
}

// out is reused: Apply returns out[:0] extended.
func TestApplyReusesOut(t *testing.T) {
	s := newRSM(t, &memSM{}, 0)
	buf := make([]Applied, 0, 8)
	out, err := s.Apply(Batch{Entries: []raftpb.Entry{normal(1, 1, 1, "a"), normal(2, 1, 2, "b")}}, buf)
	if err != nil {
		t.Fatal(err)
	}
	if &out[0] != &buf[:1][0] {
		t.Fatal("out not reused")
	}
	out, err = s.Apply(Batch{Entries: []raftpb.Entry{normal(3, 1, 3, "c")}}, out)
	if err != nil || len(out) != 1 || out[0].Key != 3 {
		t.Fatalf("second apply: %+v, %v", out, err)
	}
}

func TestLookupAndClose(t *testing.T) {
	sm := &memSM{}
	s := newRSM(t, sm, 0)
	mustApply(t, s, normal(1, 1, 1, "a"))
	v, err := s.Lookup([]byte("n"))
	if err != nil || string(v) != "1" {
		t.Fatalf("Lookup = %q, %v", v, err)
	}
	if s.ConcurrentLookup() || s.OnDisk() {
		t.Fatal("memSM is neither concurrent nor on disk")
	}
	if err := s.Close(); err != nil || !sm.closed {
		t.Fatalf("Close: %v, closed=%v", err, sm.closed)
	}
	d := newRSM(t, &diskSM{}, 0)
	if !d.ConcurrentLookup() || !d.OnDisk() {
		t.Fatal("diskSM is concurrent and on disk")
	}
}

func TestNewRejects(t *testing.T) {
	if _, err := New(Config{}); err == nil {
		t.Fatal("nil SM accepted")
	}
	if _, err := New(Config{SM: &memSM{}, MaxSessions: -1}); err == nil {
		t.Fatal("negative MaxSessions accepted")
	}
}

func TestCheckStart(t *testing.T) {
	for _, tc := range []struct {
		snap, applied, last uint64
		want                error
	}{
		{0, 0, 0, nil},
		{10, 10, 10, nil},
		{10, 15, 20, nil},
		{10, 20, 20, nil},
		{50, 1, 60, ErrAppliedBehindSnapshot}, // REQUIREMENTS: on-disk SM at 1, snapshot at 50
		{50, 49, 60, ErrAppliedBehindSnapshot},
		{10, 21, 20, ErrAppliedAheadOfLog},
		{0, 5, 0, ErrAppliedAheadOfLog},
	} {
		err := CheckStart(tc.snap, tc.applied, tc.last)
		if !errors.Is(err, tc.want) || (tc.want == nil) != (err == nil) {
			t.Errorf("CheckStart(%d, %d, %d) = %v, want %v", tc.snap, tc.applied, tc.last, err, tc.want)
			continue
		}
		if err == nil {
			continue
		}
		var se *StartError
		if !errors.As(err, &se) || se.SnapshotIndex != tc.snap || se.Applied != tc.applied || se.LastLogIndex != tc.last {
			t.Errorf("CheckStart(%d, %d, %d): %#v", tc.snap, tc.applied, tc.last, err)
		}
	}
}
