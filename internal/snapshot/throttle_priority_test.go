package snapshot

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/skiffdb/skiff/raftpb"
)

const mib = 1 << 20

// classLoad runs `workers` goroutines per class, each waiting for 64 KiB
// chunks in one direction of th (as the copier's in-flight fetches do)
// until the end of the run, and adds each chunk granted to the byte count
// of its class and of the phase in which it was granted: phases[i] is the
// end of phase i, counted from the start. It runs inside a synctest bubble,
// so the clock is the bubble's and the rates are exact.
type classLoad struct {
	th      *Throttle
	recv    bool // the receive direction, else send
	workers int
	phases  []time.Duration
	// at, if set, runs at the given offset from the start (SetLimits at
	// runtime, with chunks in flight).
	at   time.Duration
	atFn func()
}

// run returns bytes[phase][class].
func (l classLoad) run(t *testing.T, classes ...Priority) [][2]int64 {
	t.Helper()
	start := time.Now()
	end := l.phases[len(l.phases)-1]
	ctx, cancel := context.WithDeadline(context.Background(), start.Add(end))
	defer cancel()
	got := make([][2]atomic.Int64, len(l.phases))
	if l.atFn != nil {
		tm := time.AfterFunc(l.at, l.atFn)
		defer tm.Stop()
	}
	var wg sync.WaitGroup
	for _, p := range classes {
		for range l.workers {
			wg.Go(func() {
				for {
					wait := l.th.WaitSend
					if l.recv {
						wait = l.th.WaitRecv
					}
					// A wait that would end past the deadline fails at
					// once: the run ends at `end` for every worker.
					if err := wait(ctx, p, 64<<10); err != nil {
						return
					}
					el := time.Since(start)
					for i, e := range l.phases {
						if el <= e {
							got[i][p].Add(64 << 10)
							break
						}
					}
				}
			})
		}
	}
	wg.Wait()
	out := make([][2]int64, len(got))
	for i := range got {
		out[i] = [2]int64{got[i][0].Load(), got[i][1].Load()}
	}
	return out
}

// within fails unless lo ≤ v ≤ hi.
func within(t *testing.T, what string, v, lo, hi float64) {
	t.Helper()
	if v < lo || v > hi {
		t.Errorf("%s = %.2f MiB, want in [%.2f, %.2f]", what, v/mib, lo/mib, hi/mib)
	}
}

// With a catch-up and a background transfer pulling at once, catch-up gets
// at least 1 − share of the rate, background at most the share and the sum
// never more than the rate; alone, background gets the whole rate.
func TestThrottlePriorityShare(t *testing.T) {
	for _, dir := range []string{"send", "recv"} {
		t.Run(dir, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				const limit, secs = 1 * mib, 20.0
				th := NewThrottle(Limits{SendBytesPerSec: limit, RecvBytesPerSec: limit})
				begin := th.beginSend
				if dir == "recv" {
					begin = th.beginRecv
				}
				load := classLoad{th: th, recv: dir == "recv", workers: 4, phases: []time.Duration{secs * time.Second}}

				end := begin(PriorityCatchUp)
				both := load.run(t, PriorityCatchUp, PriorityBackground)[0]
				cu, bg := float64(both[PriorityCatchUp]), float64(both[PriorityBackground])
				L := float64(limit) * secs
				within(t, "catch-up bytes", cu, (1-DefaultBackgroundShare)*L*0.9, L*1.1)
				within(t, "background bytes", bg, 0, DefaultBackgroundShare*L*1.1)
				within(t, "total bytes", cu+bg, 0, L*1.1)
				t.Logf("%.0f s at %d MiB/s: catch-up %.2f MiB, background %.2f MiB", secs, limit/mib, cu/mib, bg/mib)

				// The catch-up transfer ends: background alone may take
				// everything.
				end()
				alone := load.run(t, PriorityBackground)[0]
				within(t, "background alone", float64(alone[PriorityBackground]), L*0.9, L*1.1)
				t.Logf("background alone: %.2f MiB", float64(alone[PriorityBackground])/mib)
			})
		})
	}
}

// The rate and the share change at runtime, with chunks in flight, and
// hold from the next chunk on.
func TestThrottlePriorityRuntimeChange(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		th := NewThrottle(Limits{SendBytesPerSec: 1 * mib})
		defer th.beginSend(PriorityCatchUp)()
		const phase = 10 * time.Second
		load := classLoad{th: th, workers: 4,
			// Phase 1 at the first limits; a second to drain what was
			// reserved before the change; phase 3 at the new limits.
			phases: []time.Duration{phase, phase + time.Second, 2*phase + time.Second},
			at:     phase,
			atFn: func() {
				th.SetLimits(Limits{SendBytesPerSec: 4 * mib, BackgroundShare: 0.5})
			},
		}
		got := load.run(t, PriorityCatchUp, PriorityBackground)
		L1 := float64(1*mib) * phase.Seconds()
		within(t, "catch-up before", float64(got[0][PriorityCatchUp]), 0.75*L1*0.9, L1*1.1)
		within(t, "total before", float64(got[0][0]+got[0][1]), 0, L1*1.1)
		L3 := float64(4*mib) * phase.Seconds()
		cu, bg := float64(got[2][PriorityCatchUp]), float64(got[2][PriorityBackground])
		within(t, "catch-up after", cu, 0.5*L3*0.9, L3*1.1)
		within(t, "background after", bg, 0.5*L3*0.9, 0.5*L3*1.1) // it wants more: it gets its new share
		within(t, "total after", cu+bg, L3*0.9, L3*1.1)
		t.Logf("before (1 MiB/s, share 0.25): catch-up %.2f, background %.2f MiB; after (4 MiB/s, share 0.5): catch-up %.2f, background %.2f MiB",
			float64(got[0][PriorityCatchUp])/mib, float64(got[0][PriorityBackground])/mib, cu/mib, bg/mib)
		if l := th.Limits(); l.BackgroundShare != 0.5 || l.SendBytesPerSec != 4*mib {
			t.Fatalf("limits after the change: %+v", l)
		}
		// A share of 1 is no preference at all.
		th.SetLimits(Limits{SendBytesPerSec: 1 * mib, BackgroundShare: 7})
		if s := th.Limits().BackgroundShare; s != 1 {
			t.Fatalf("share 7 reported as %v, want 1", s)
		}
		load = classLoad{th: th, workers: 4, phases: []time.Duration{phase}}
		got = load.run(t, PriorityCatchUp, PriorityBackground)
		L := float64(1*mib) * phase.Seconds()
		within(t, "background at share 1", float64(got[0][PriorityBackground]), 0.3*L, 0.7*L)
	})
}

// Unlimited, the classes cost nothing: no wait and no allocation per
// chunk, whatever the class and whether a catch-up transfer is active.
func TestThrottlePriorityUnlimitedFree(t *testing.T) {
	th := NewThrottle(Limits{BackgroundShare: 0.1})
	defer th.beginSend(PriorityCatchUp)()
	defer th.beginRecv(PriorityCatchUp)()
	ctx := context.Background()
	for _, p := range []Priority{PriorityCatchUp, PriorityBackground} {
		allocs := testing.AllocsPerRun(1000, func() {
			if th.WaitSend(ctx, p, 1<<20) != nil || th.WaitRecv(ctx, p, 1<<20) != nil {
				t.Fatal("unlimited wait failed")
			}
		})
		if allocs != 0 {
			t.Fatalf("%v: %v allocations per unlimited wait, want 0", p, allocs)
		}
	}
	synctest.Test(t, func(t *testing.T) {
		th := NewThrottle(Limits{})
		defer th.beginSend(PriorityCatchUp)()
		start := time.Now()
		if err := th.WaitSend(context.Background(), PriorityBackground, 1<<40); err != nil || time.Since(start) != 0 {
			t.Fatalf("unlimited background wait took %v (%v)", time.Since(start), err)
		}
	})
}

// The sender marks a catch-up reader active from registration to its
// release on every path — Release, the idle timeout, Close — and a
// refused or background registration never.
func TestSenderPriorityAccounting(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := newPair(t, multiFile(21, 8<<10), raftpb.NoCompression)
		th := NewThrottle(Limits{MaxConcurrentSends: 3})
		s, err := NewSender(SenderConfig{FS: p.leaderFS, Throttle: th, IdleTimeout: time.Minute})
		if err != nil {
			t.Fatal(err)
		}
		register := func(prio Priority) (ReaderID, error) {
			t.Helper()
			h, err := p.leader.OpenReader(0)
			if err != nil {
				t.Fatal(err)
			}
			return s.RegisterPriority(2, h, prio)
		}
		active := func(want int) {
			t.Helper()
			if sends, recvs := th.CatchUpActive(); sends != want || recvs != 0 {
				t.Fatalf("catch-up active: %d sends, %d receives, want %d, 0", sends, recvs, want)
			}
		}
		released, err := register(PriorityCatchUp)
		if err != nil {
			t.Fatal(err)
		}
		idle, err := s.Register(2, mustReader(t, p.leader)) // Register is catch-up
		if err != nil {
			t.Fatal(err)
		}
		if _, err := register(PriorityBackground); err != nil {
			t.Fatal(err)
		}
		active(2)
		if _, err := register(PriorityCatchUp); !errors.Is(err, ErrNoSlot) {
			t.Fatalf("fourth send: %v, want ErrNoSlot", err)
		}
		active(2)
		s.Release(released)
		s.Release(released) // twice must not release another's class
		active(1)
		// A call in progress keeps the reader; its end restarts the idle
		// timer, which releases the reader and its class.
		if _, err := s.Meta(context.Background(), idle); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Minute + time.Second) // the bubble's clock
		active(0)
		if _, err := s.Meta(context.Background(), idle); !errors.Is(err, ErrReaderNotFound) {
			t.Fatalf("idle reader still served: %v", err)
		}
		if _, err := register(PriorityCatchUp); err != nil {
			t.Fatal(err)
		}
		active(1)
		s.Close()
		active(0)
		if _, err := register(PriorityCatchUp); !errors.Is(err, ErrReaderNotFound) {
			t.Fatalf("register after Close: %v", err)
		}
		active(0)
		if sends, _, _ := th.InUse(); sends != 0 {
			t.Fatalf("%d send slots held after Close", sends)
		}
	})
}

func mustReader(t *testing.T, st *Store) Handle {
	t.Helper()
	h, err := st.OpenReader(0)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// The receiver marks a catch-up Receive active while it runs and releases
// it on completion, cancellation and error; a background one is never
// counted, and the request's class reaches the receive bucket.
func TestReceiverPriorityAccounting(t *testing.T) {
	p := newPair(t, multiFile(22, 256<<10), raftpb.NoCompression)
	th := NewThrottle(Limits{})
	r := newTestReceiver(t, ReceiverConfig{Throttle: th, ChunkSize: 16 << 10})
	active := func(want int) {
		t.Helper()
		if sends, recvs := th.CatchUpActive(); sends != 0 || recvs != want {
			t.Fatalf("catch-up active: %d sends, %d receives, want 0, %d", sends, recvs, want)
		}
	}
	// gated runs a Receive of class prio through a gate, checks the count
	// while it is blocked there, then ends it by cancel (or by opening the
	// gate) and checks the count again.
	gated := func(prio Priority, cancelIt bool) error {
		t.Helper()
		req := p.register(t)
		req.Priority = prio
		gate := newGate(p.sender, p.files[1].name, 0)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		done := make(chan error, 1)
		go func() {
			_, err := r.Receive(ctx, p.follower, req, gate)
			done <- err
		}()
		recv(t, gate.reached, "a request to reach the gate")
		if prio == PriorityCatchUp {
			active(1)
		} else {
			active(0)
		}
		if cancelIt {
			cancel()
		} else {
			close(gate.open)
		}
		err := recv(t, done, "the transfer")
		active(0)
		return err
	}
	if err := gated(PriorityCatchUp, true); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled catch-up: %v, want context.Canceled", err)
	}
	if err := gated(PriorityBackground, true); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled background: %v, want context.Canceled", err)
	}
	// An error from the source.
	req := p.register(t)
	bad := &cutSource{FileSource: p.sender, moved: new(atomic.Int64)} // no byte gets through
	if _, err := r.Receive(context.Background(), p.follower, req, bad); !errors.Is(err, errConnReset) {
		t.Fatalf("transfer through a cut source: %v, want errConnReset", err)
	}
	active(0)
	// An unknown reader: the error comes before any byte.
	if _, err := r.Receive(context.Background(), p.follower, InstallRequest{From: 1, Reader: 999}, p.sender); !errors.Is(err, ErrReaderNotFound) {
		t.Fatalf("unknown reader: %v", err)
	}
	active(0)
	// Completion.
	if err := gated(PriorityCatchUp, false); err != nil {
		t.Fatal(err)
	}
	checkPublished(t, p.followerFS, p.follower, p.meta.Index, p.files)
}

// End to end through Sender and Receiver: a background transfer shares a
// limited receive rate with a catch-up one and gets at most its share
// while both run, because InstallRequest.Priority reaches the copier's
// waits.
func TestTransferPriorityEndToEnd(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const limit = 1 * mib
		th := NewThrottle(Limits{RecvBytesPerSec: limit, BackgroundShare: 0.2})
		r := newTestReceiver(t, ReceiverConfig{Throttle: th, ChunkSize: 64 << 10, ChunkTimeout: time.Hour})
		cu := newPair(t, multiFile(23, 8*mib), raftpb.NoCompression)
		bg := newPair(t, multiFile(24, 8*mib), raftpb.NoCompression)
		start := time.Now()
		var cuTook time.Duration
		var wg sync.WaitGroup
		wg.Go(func() {
			if _, err := r.Receive(context.Background(), cu.follower, cu.register(t), cu.sender); err != nil {
				t.Error(err)
			}
			cuTook = time.Since(start)
		})
		bgReq := bg.register(t)
		bgReq.Priority = PriorityBackground
		wg.Go(func() {
			if _, err := r.Receive(context.Background(), bg.follower, bgReq, bg.sender); err != nil {
				t.Error(err)
			}
		})
		wg.Wait()
		// 8 MiB of catch-up at ≥ 80 % of 1 MiB/s: at most 10 s (+10 %),
		// and background moved at most 20 % of the rate meanwhile.
		if cuTook > 11*time.Second {
			t.Errorf("catch-up of 8 MiB took %v at 1 MiB/s with background share 0.2", cuTook)
		}
		total := filesSize(cu.files) + filesSize(bg.files)
		t.Logf("catch-up 8 MiB done after %v, both (16 MiB) after %v", cuTook, time.Since(start))
		if el := time.Since(start); float64(total)/el.Seconds() > limit*1.1 {
			t.Errorf("%d bytes in %v: above the limit", total, el)
		}
		checkPublished(t, cu.followerFS, cu.follower, cu.meta.Index, cu.files)
		checkPublished(t, bg.followerFS, bg.follower, bg.meta.Index, bg.files)
	})
}

// Snapshot saves through a Store opened with a Throttle write at most
// Limits.GenerateBytesPerSec, across stores; a change at runtime holds for
// the next buffer; a done context fails the save instead of waiting.
func TestThrottleGenerate(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		th := NewThrottle(Limits{GenerateBytesPerSec: 1 * mib})
		fs := vfs.NewMem()
		open := func(dir string, group raftpb.GroupID) *Store {
			st, err := Open(fs, dir, Options{Group: group, Throttle: th})
			if err != nil {
				t.Fatal(err)
			}
			return st
		}
		a, b := open("a", 1), open("b", 2)
		save := func(ctx context.Context, st *Store, group raftpb.GroupID, index uint64, n int) error {
			w, err := st.Create(raftpb.SnapshotMeta{Group: group, Index: index, Term: 1})
			if err != nil {
				t.Fatal(err)
			}
			defer w.Abort()
			w.SetContext(ctx)
			chunk := make([]byte, 64<<10)
			for range n / len(chunk) {
				if _, err := w.Write(chunk); err != nil {
					return err
				}
			}
			return w.Commit()
		}
		// Two groups save 4 MiB each at once: 8 MiB at 1 MiB/s, less the
		// initial burst of 256 KiB.
		start := time.Now()
		var wg sync.WaitGroup
		for i, st := range []*Store{a, b} {
			wg.Go(func() {
				if err := save(context.Background(), st, raftpb.GroupID(i+1), 10, 4*mib); err != nil {
					t.Error(err)
				}
			})
		}
		wg.Wait()
		if el := time.Since(start); el < 7*time.Second || el > 8*time.Second {
			t.Fatalf("8 MiB of saves at 1 MiB/s took %v", el)
		}
		if got := th.Limits().GenerateBytesPerSec; got != 1*mib {
			t.Fatalf("limits report %d bytes/s of generation", got)
		}
		th.SetLimits(Limits{GenerateBytesPerSec: 8 * mib})
		start = time.Now()
		if err := save(context.Background(), a, 1, 20, 16*mib); err != nil {
			t.Fatal(err)
		}
		if el := time.Since(start); el < 1500*time.Millisecond || el > 2100*time.Millisecond {
			t.Fatalf("16 MiB at 8 MiB/s took %v", el)
		}
		// A save whose context ends fails, publishes nothing and leaves no
		// directory behind.
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if err := save(ctx, b, 2, 30, 4*mib); !errors.Is(err, context.Canceled) {
			t.Fatalf("save with a cancelled context: %v, want context.Canceled", err)
		}
		if m, _ := b.Latest(); m.Index != 10 {
			t.Fatalf("latest snapshot of b is %d after the cancelled save, want 10", m.Index)
		}
		names, err := fs.List("b")
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range names {
			if strings.HasSuffix(n, ".generating") {
				t.Fatalf("cancelled save left %s", n)
			}
		}
		// Unlimited: no wait at all.
		th.SetLimits(Limits{})
		start = time.Now()
		if err := save(context.Background(), b, 2, 40, 16*mib); err != nil || time.Since(start) != 0 {
			t.Fatalf("unlimited save took %v (%v)", time.Since(start), err)
		}
	})
}
