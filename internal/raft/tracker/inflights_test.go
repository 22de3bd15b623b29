package tracker

import (
	"math/rand/v2"
	"testing"
)

// state returns (count, bytes, full) for compact assertions.
func state(in *Inflights) [3]any { return [3]any{in.Count(), in.Bytes(), in.Full()} }

// TestInflightsCountLimit: Full once maxCount messages are in flight,
// whatever their size; freeing some reopens the window.
func TestInflightsCountLimit(t *testing.T) {
	in := NewInflights(3, 0)
	for i := uint64(1); i <= 3; i++ {
		if in.Full() {
			t.Fatalf("full after %d of 3", i-1)
		}
		in.Add(i, 1000)
	}
	if got := state(in); got != [3]any{3, uint64(3000), true} {
		t.Fatalf("after 3 adds: %v", got)
	}
	in.FreeLE(1)
	if got := state(in); got != [3]any{2, uint64(2000), false} {
		t.Fatalf("after FreeLE(1): %v", got)
	}
}

// TestInflightsBytesLimit: Full once the bytes in flight reach maxBytes,
// even below the count limit; a single message above the limit is allowed
// (the caller checks Full before adding, not after).
func TestInflightsBytesLimit(t *testing.T) {
	in := NewInflights(10, 100)
	in.Add(1, 60)
	if in.Full() {
		t.Fatal("full at 60 of 100 bytes")
	}
	in.Add(2, 40)
	if got := state(in); got != [3]any{2, uint64(100), true} {
		t.Fatalf("at exactly 100 bytes: %v, want full", got)
	}
	in.FreeLE(1)
	if got := state(in); got != [3]any{1, uint64(40), false} {
		t.Fatalf("after FreeLE(1): %v", got)
	}
	in.Add(3, 500)
	if got := state(in); got != [3]any{2, uint64(540), true} {
		t.Fatalf("after an oversized message: %v", got)
	}
	in.FreeLE(3)
	if got := state(in); got != [3]any{0, uint64(0), false} {
		t.Fatalf("after freeing everything: %v", got)
	}
}

// TestInflightsFreeLE: frees exactly the messages whose last index is <= to;
// stale and repeated acknowledgements are harmless.
func TestInflightsFreeLE(t *testing.T) {
	in := NewInflights(8, 0)
	for _, idx := range []uint64{5, 7, 9, 11} {
		in.Add(idx, 10)
	}
	for _, tc := range []struct {
		to    uint64
		count int
		bytes uint64
	}{
		{4, 4, 40},  // below everything
		{6, 3, 30},  // frees 5 only
		{6, 3, 30},  // repeated
		{3, 3, 30},  // stale
		{10, 1, 10}, // frees 7 and 9
		{99, 0, 0},  // everything
		{99, 0, 0},  // on empty
	} {
		in.FreeLE(tc.to)
		if in.Count() != tc.count || in.Bytes() != tc.bytes {
			t.Fatalf("FreeLE(%d): count %d bytes %d, want %d and %d", tc.to, in.Count(), in.Bytes(), tc.count, tc.bytes)
		}
	}
}

// TestInflightsWraparound drives the ring around its end many times and
// checks it against a plain slice model.
func TestInflightsWraparound(t *testing.T) {
	const maxCount = 5
	in := NewInflights(maxCount, 0)
	var model []uint64 // last indexes in flight
	next := uint64(1)
	rng := rand.New(rand.NewPCG(7, 7))
	for step := 0; step < 10000; step++ {
		if !in.Full() && rng.IntN(2) == 0 {
			in.Add(next, next%7)
			model = append(model, next)
			next++
		} else if len(model) > 0 {
			to := model[rng.IntN(len(model))]
			in.FreeLE(to)
			for len(model) > 0 && model[0] <= to {
				model = model[1:]
			}
		}
		var bytes uint64
		for _, idx := range model {
			bytes += idx % 7
		}
		if in.Count() != len(model) || in.Bytes() != bytes || in.Full() != (len(model) >= maxCount) {
			t.Fatalf("step %d: count %d bytes %d full %v; model %v (bytes %d)", step, in.Count(), in.Bytes(), in.Full(), model, bytes)
		}
	}
	if len(in.buf) > maxCount {
		t.Errorf("ring grew to %d, beyond maxCount %d", len(in.buf), maxCount)
	}
}

// TestInflightsAddFullPanics: adding to a full Inflights is a caller bug.
func TestInflightsAddFullPanics(t *testing.T) {
	in := NewInflights(1, 0)
	in.Add(1, 1)
	defer func() {
		if recover() == nil {
			t.Error("Add on a full Inflights did not panic")
		}
	}()
	in.Add(2, 1)
}

func TestInflightsCloneAndReset(t *testing.T) {
	in := NewInflights(4, 0)
	in.Add(1, 10)
	in.Add(2, 10)
	c := in.Clone()
	in.FreeLE(2)
	if c.Count() != 2 || c.Bytes() != 20 {
		t.Errorf("clone changed with the original: count %d bytes %d", c.Count(), c.Bytes())
	}
	c.Reset()
	if c.Count() != 0 || c.Bytes() != 0 || c.Full() {
		t.Errorf("after Reset: %v", state(c))
	}
	c.Add(3, 5)
	c.FreeLE(3)
	if c.Count() != 0 {
		t.Errorf("reset ring does not work: %v", state(c))
	}
}
