package snapshot

import (
	"math/rand/v2"
	"testing"
	"time"
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func TestTriggerEntries(t *testing.T) {
	tr := NewTrigger(Policy{SnapshotEntries: 100}, t0, rand.New(rand.NewPCG(1, 1)))
	if r := tr.Check(t0, TriggerState{Applied: 99}); r != ReasonNone {
		t.Fatalf("99 entries: %v", r)
	}
	if r := tr.Check(t0, TriggerState{Applied: 150, LastSnapshotIndex: 50}); r != ReasonEntries {
		t.Fatalf("100 entries: %v", r)
	}
	// Level-based: after a restart the same state gives the same answer.
	tr = NewTrigger(Policy{SnapshotEntries: 100}, t0, rand.New(rand.NewPCG(2, 2)))
	if r := tr.Check(t0, TriggerState{Applied: 150, LastSnapshotIndex: 50}); r != ReasonEntries {
		t.Fatalf("after restart: %v", r)
	}
}

// The first interval fires at a random point of the first period, spread
// over it across groups (braft#87); later ones are jittered ±10 %.
func TestTriggerIntervalFirstFireRandomized(t *testing.T) {
	const interval = time.Minute
	rng := rand.New(rand.NewPCG(7, 7))
	var first []time.Duration
	for range 1000 {
		tr := NewTrigger(Policy{SnapshotInterval: interval}, t0, rng)
		d := tr.Next().Sub(t0)
		if d <= 0 || d > interval {
			t.Fatalf("first fire after %v", d)
		}
		first = append(first, d)
	}
	buckets := make([]int, 10)
	for _, d := range first {
		buckets[int(d*10/(interval+1))]++
	}
	for i, n := range buckets {
		if n < 50 { // 100 expected per bucket
			t.Fatalf("first fires bunched: bucket %d has %d of 1000: %v", i, n, buckets)
		}
	}
	tr := NewTrigger(Policy{SnapshotInterval: interval}, t0, rng)
	for range 100 {
		now := tr.Next()
		if r := tr.Check(now, TriggerState{Applied: 10}); r != ReasonInterval {
			t.Fatalf("at the fire time: %v", r)
		}
		tr.Done(now)
		if d := tr.Next().Sub(now); d < 54*time.Second || d > 66*time.Second {
			t.Fatalf("next interval %v, want 60s ± 10%%", d)
		}
	}
}

// The interval fires only with SnapshotMinGap new entries; otherwise it is
// re-armed.
func TestTriggerIntervalMinGap(t *testing.T) {
	tr := NewTrigger(Policy{SnapshotInterval: time.Minute, SnapshotMinGap: 10, Jitter: -1}, t0, rand.New(rand.NewPCG(1, 2)))
	at := tr.Next()
	if r := tr.Check(at.Add(-time.Nanosecond), TriggerState{Applied: 100}); r != ReasonNone {
		t.Fatalf("before the fire time: %v", r)
	}
	if r := tr.Check(at, TriggerState{Applied: 105, LastSnapshotIndex: 100}); r != ReasonNone {
		t.Fatalf("below the gap: %v", r)
	}
	if got := tr.Next(); !got.Equal(at.Add(time.Minute)) {
		t.Fatalf("re-armed at %v, want %v", got, at.Add(time.Minute))
	}
	if r := tr.Check(tr.Next(), TriggerState{Applied: 110, LastSnapshotIndex: 100}); r != ReasonInterval {
		t.Fatalf("at the gap: %v", r)
	}
}

func TestTriggerUserRequest(t *testing.T) {
	tr := NewTrigger(Policy{}, t0, rand.New(rand.NewPCG(1, 3)))
	if r := tr.Check(t0, TriggerState{Applied: 5}); r != ReasonNone {
		t.Fatalf("no policy: %v", r)
	}
	tr.Request()
	if r := tr.Check(t0, TriggerState{Applied: 5, LastSnapshotIndex: 5}); r != ReasonRequested {
		t.Fatalf("requested: %v", r)
	}
	tr.Done(t0)
	if r := tr.Check(t0, TriggerState{Applied: 5}); r != ReasonNone {
		t.Fatalf("after Done: %v", r)
	}
}

// The log-bytes cap forces a snapshot whatever the entry policy says
// (REQUIREMENTS §12, §19 "Never ... unless the disk cap forces one").
func TestTriggerLogBytesCap(t *testing.T) {
	tr := NewTrigger(Policy{SnapshotEntries: 1 << 40, MaxLogBytes: 1 << 20}, t0, rand.New(rand.NewPCG(1, 4)))
	if r := tr.Check(t0, TriggerState{Applied: 3, LogBytes: 1<<20 - 1}); r != ReasonNone {
		t.Fatalf("below the cap: %v", r)
	}
	if r := tr.Check(t0, TriggerState{Applied: 3, LogBytes: 1 << 20}); r != ReasonLogBytes {
		t.Fatalf("at the cap: %v", r)
	}
	if r := tr.Check(t0, TriggerState{Applied: 3, LastSnapshotIndex: 3, LogBytes: 1 << 30}); r != ReasonNone {
		t.Fatalf("nothing new to snapshot: %v", r)
	}
}
