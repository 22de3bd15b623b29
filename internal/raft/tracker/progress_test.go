package tracker

import (
	"strings"
	"testing"
)

func newProgress(state StateType, match, next uint64) *Progress {
	return &Progress{State: state, Match: match, Next: next, Inflights: NewInflights(4, 0), RecentActive: true}
}

// TestProgressMaybeDecrTo covers rejections in probe and replicate state,
// stale ones included.
func TestProgressMaybeDecrTo(t *testing.T) {
	for _, tc := range []struct {
		name           string
		state          StateType
		match, next    uint64
		rejected, hint uint64
		ok             bool
		wantNext       uint64
	}{
		{"replicate: stale, at or below match", StateReplicate, 5, 10, 5, 0, false, 10},
		{"replicate: back to match+1", StateReplicate, 5, 10, 8, 2, true, 6},
		{"probe: not the outstanding probe", StateProbe, 0, 10, 5, 0, false, 10},
		{"probe: use the hint", StateProbe, 0, 10, 9, 4, true, 5},
		{"probe: hint beyond rejected", StateProbe, 0, 10, 9, 20, true, 9},
		{"probe: never below match+1", StateProbe, 3, 10, 9, 1, true, 4},
	} {
		pr := newProgress(tc.state, tc.match, tc.next)
		pr.MsgAppFlowPaused = true
		if ok := pr.MaybeDecrTo(tc.rejected, tc.hint); ok != tc.ok || pr.Next != tc.wantNext {
			t.Errorf("%s: ok %v next %d, want %v %d", tc.name, ok, pr.Next, tc.ok, tc.wantNext)
		}
		if tc.ok && tc.state == StateProbe && pr.MsgAppFlowPaused {
			t.Errorf("%s: still paused after a current rejection", tc.name)
		}
	}
}

// TestProgressStates covers the transitions and what they reset.
func TestProgressStates(t *testing.T) {
	pr := newProgress(StateProbe, 3, 4)
	pr.SentEntries(0, 0)
	if !pr.IsPaused() {
		t.Fatal("a probe in flight does not pause")
	}
	if !pr.MaybeUpdate(5) || pr.Match != 5 || pr.Next != 6 || pr.IsPaused() {
		t.Fatalf("MaybeUpdate(5): %s", pr)
	}
	if pr.MaybeUpdate(4) {
		t.Fatal("MaybeUpdate accepted old news")
	}
	pr.BecomeReplicate()
	pr.SentEntries(2, 50)
	pr.SentEntries(1, 50)
	if pr.Next != 9 || pr.Inflights.Count() != 2 || pr.Inflights.Bytes() != 100 {
		t.Fatalf("after sending 3 entries in 2 messages: %s", pr)
	}
	pr.BecomeSnapshot(20)
	if !pr.IsPaused() || pr.PendingSnapshot != 20 || pr.Inflights.Count() != 0 {
		t.Fatalf("BecomeSnapshot: %s", pr)
	}
	// Back to probing after the snapshot: from past the snapshot.
	pr.BecomeProbe()
	if pr.State != StateProbe || pr.Next != 21 || pr.PendingSnapshot != 0 {
		t.Fatalf("BecomeProbe after a snapshot: %s", pr)
	}
	// A failed snapshot (PendingSnapshot cleared first) probes from Match.
	pr.BecomeSnapshot(20)
	pr.PendingSnapshot = 0
	pr.BecomeProbe()
	if pr.Next != pr.Match+1 {
		t.Fatalf("BecomeProbe after a failed snapshot: %s", pr)
	}
	defer func() {
		if recover() == nil {
			t.Error("sending entries in StateSnapshot did not panic")
		}
	}()
	pr.BecomeSnapshot(20)
	pr.SentEntries(1, 1)
}

// TestProgressReplicatePausesWhenInflightsFull: in StateReplicate the
// pause follows the Inflights window.
func TestProgressReplicatePausesWhenInflightsFull(t *testing.T) {
	pr := newProgress(StateReplicate, 0, 1)
	for i := 0; i < 4; i++ {
		if pr.IsPaused() {
			t.Fatalf("paused after %d of 4 messages", i)
		}
		pr.SentEntries(1, 10)
	}
	if !pr.IsPaused() {
		t.Fatal("not paused with Inflights full")
	}
	pr.Inflights.FreeLE(2)
	pr.MaybeUpdate(2)
	if pr.IsPaused() {
		t.Fatal("still paused after an ack freed the window")
	}
}

func TestProgressString(t *testing.T) {
	pr := newProgress(StateSnapshot, 3, 4)
	pr.PendingSnapshot = 9
	pr.IsLearner = true
	pr.RecentActive = false
	s := pr.String()
	for _, want := range []string{"StateSnapshot", "match=3", "next=4", "learner", "paused", "pendingSnap=9", "inactive"} {
		if !strings.Contains(s, want) {
			t.Errorf("%q lacks %q", s, want)
		}
	}
	if StateType(7).String() != "StateType(7)" {
		t.Errorf("unknown state renders as %q", StateType(7).String())
	}
}
