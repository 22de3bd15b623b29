package snapshot

import (
	"context"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// Concurrency caps refuse beyond the cap, give slots back once, and follow
// a cap changed at runtime.
func TestThrottleSlots(t *testing.T) {
	th := NewThrottle(Limits{MaxConcurrentSends: 2, MaxConcurrentGenerations: 1})
	r1, ok1 := th.TryReserveSend()
	r2, ok2 := th.TryReserveSend()
	_, ok3 := th.TryReserveSend()
	if !ok1 || !ok2 || ok3 {
		t.Fatalf("send slots: %v %v %v, want true true false", ok1, ok2, ok3)
	}
	r1()
	r1() // a second call must not free a slot it does not hold
	if s, _, _ := th.InUse(); s != 1 {
		t.Fatalf("%d sends in use, want 1", s)
	}
	if _, ok := th.TryReserveSend(); !ok {
		t.Fatal("freed slot refused")
	}
	if _, ok := th.TryReserveSend(); ok {
		t.Fatal("third concurrent send admitted")
	}
	// Lowering the cap keeps the holders and admits nobody new.
	th.SetLimits(Limits{MaxConcurrentSends: 1})
	r2()
	if _, ok := th.TryReserveSend(); ok {
		t.Fatal("admitted above a lowered cap")
	}
	// Zero means unlimited.
	th.SetLimits(Limits{})
	for range 100 {
		if _, ok := th.TryReserveRecv(); !ok {
			t.Fatal("unlimited receive refused")
		}
	}
	if got := th.Limits(); got != (Limits{}) {
		t.Fatalf("limits %+v after SetLimits(zero)", got)
	}
}

// The byte limits hold across concurrent callers (all groups share one
// bucket) and a change at runtime takes effect at once. synctest's clock
// makes the rates exact and the test instant.
func TestThrottleRates(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		th := NewThrottle(Limits{RecvBytesPerSec: 1 << 20})
		ctx := context.Background()
		start := time.Now()
		var wg sync.WaitGroup
		for range 8 { // eight transfers of 1 MiB in chunks of 64 KiB
			wg.Go(func() {
				for range 16 {
					if err := th.WaitRecv(ctx, PriorityCatchUp, 64<<10); err != nil {
						t.Error(err)
					}
				}
			})
		}
		wg.Wait()
		// 8 MiB at 1 MiB/s, less the initial burst of 256 KiB.
		if el := time.Since(start); el < 7*time.Second || el > 8*time.Second {
			t.Fatalf("8 MiB at 1 MiB/s took %v", el)
		}
		th.SetLimits(Limits{RecvBytesPerSec: 8 << 20})
		start = time.Now()
		if err := th.WaitRecv(ctx, PriorityCatchUp, 16<<20); err != nil { // more than a burst: split
			t.Fatal(err)
		}
		if el := time.Since(start); el < 1500*time.Millisecond || el > 2100*time.Millisecond {
			t.Fatalf("16 MiB at 8 MiB/s took %v", el)
		}
		// The send bucket is separate and unlimited.
		start = time.Now()
		if err := th.WaitSend(ctx, PriorityBackground, 1<<30); err != nil || time.Since(start) != 0 {
			t.Fatalf("unlimited send waited %v (%v)", time.Since(start), err)
		}
		// A cancelled context stops a wait.
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		if err := th.WaitRecv(cctx, PriorityCatchUp, 64<<20); err == nil {
			t.Fatal("wait with a cancelled context succeeded")
		}
	})
}
