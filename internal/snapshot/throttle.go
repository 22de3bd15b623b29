package snapshot

import (
	"context"
	"math"
	"strconv"
	"sync"
	"sync/atomic"

	"golang.org/x/time/rate"
)

// Priority is a transfer's class in the node-wide byte buckets
// (REQUIREMENTS §9: catch-up before rebalancing). The zero value is
// PriorityCatchUp, so a caller that says nothing is never slowed down by
// the classes.
type Priority uint8

const (
	// PriorityCatchUp is a snapshot for a voter that fell behind: the
	// group's liveness (its quorum) may depend on it.
	PriorityCatchUp Priority = iota
	// PriorityBackground is a snapshot for a new learner or non-voter, or
	// one moved by rebalancing: nobody's quorum waits for it.
	PriorityBackground
)

func (p Priority) String() string {
	switch p {
	case PriorityCatchUp:
		return "catch-up"
	case PriorityBackground:
		return "background"
	}
	return "priority(" + strconv.Itoa(int(p)) + ")"
}

// DefaultBackgroundShare is the part of a direction's rate that background
// transfers may use while a catch-up transfer is active in that direction.
const DefaultBackgroundShare = 0.25

// Limits are the node-wide snapshot limits shared by every group on a host
// (REQUIREMENTS §9, §10). Zero means unlimited.
type Limits struct {
	// SendBytesPerSec and RecvBytesPerSec cap snapshot bytes leaving and
	// entering this host, across all groups and transfers. They are
	// separate buckets so that a host sending to eight peers does not
	// starve its own catch-up (tikv#14275, tikv#10059).
	SendBytesPerSec int64
	RecvBytesPerSec int64
	// GenerateBytesPerSec caps the bytes written by snapshot saves
	// (Writer, through a Store opened with this Throttle), across all
	// groups, so that generating snapshots does not starve the WAL's disk.
	GenerateBytesPerSec int64
	// BackgroundShare is the most of a direction's rate that
	// PriorityBackground transfers may take while at least one
	// PriorityCatchUp transfer is active in that direction, so that
	// catch-up keeps at least 1 − BackgroundShare of it. With no catch-up
	// active, background transfers may use the whole rate. 0 means
	// DefaultBackgroundShare; values above 1 are 1 (no preference);
	// negative or NaN ones are 0 (the default). It only matters for a
	// direction whose rate is limited.
	BackgroundShare float64
	// MaxConcurrentSends, MaxConcurrentRecvs and MaxConcurrentGenerations
	// cap transfers and snapshot saves in progress at once.
	MaxConcurrentSends       int
	MaxConcurrentRecvs       int
	MaxConcurrentGenerations int
}

// backgroundShare returns the effective share of l (l's field normalized).
func (l Limits) backgroundShare() float64 {
	switch s := l.BackgroundShare; {
	case s > 1:
		return 1
	case s > 0:
		return s
	}
	return DefaultBackgroundShare
}

// normalShare is the BackgroundShare that Limits reports for a given one:
// out-of-range values as they are applied, 0 kept as "the default".
func normalShare(s float64) float64 {
	switch {
	case s > 1:
		return 1
	case s > 0:
		return s
	}
	return 0
}

// minBurst keeps the token bucket able to pass a whole chunk-sized wait at
// low rates without splitting it into tiny waits.
const minBurst = 64 << 10

// Throttle holds a host's snapshot token buckets and concurrency slots. One
// Throttle is shared by every Sender and Receiver of the host; SetLimits
// changes it at runtime and takes effect for the next byte waited for.
// It is safe for concurrent use.
type Throttle struct {
	send, recv bucket
	gen        bucket // no classes: nobody begins a catch-up in it
	sends      slots
	recvs      slots
	gens       slots

	mu    sync.Mutex // serializes SetLimits, so both limiters of a bucket agree
	share float64    // as Limits reports it
}

// bucket is one direction's byte budget. Every byte waits on total, so the
// direction never exceeds its rate; a background byte also waits on
// background while a catch-up transfer of the direction is active, which
// caps background at its share and leaves the rest of total to catch-up.
type bucket struct {
	total      *rate.Limiter
	background *rate.Limiter // share × total's rate; Inf when total is
	// catchUps counts the active PriorityCatchUp transfers of the
	// direction (begin/end). Invariant: ≥ 0; a leak would cap background
	// transfers forever, so every begin's release runs on every path.
	catchUps atomic.Int64
}

func newBucket() bucket {
	return bucket{total: rate.NewLimiter(rate.Inf, minBurst), background: rate.NewLimiter(rate.Inf, minBurst)}
}

// begin marks a transfer of class p active until the returned release,
// which is safe to call more than once.
func (b *bucket) begin(p Priority) (release func()) {
	if p != PriorityCatchUp {
		return func() {}
	}
	b.catchUps.Add(1)
	var done atomic.Bool
	return func() {
		if done.CompareAndSwap(false, true) {
			b.catchUps.Add(-1)
		}
	}
}

// wait takes n tokens for a transfer of class p, in pieces no larger than
// the bursts (WaitN refuses more than the burst). Limits and bursts are
// re-read per piece because SetLimits may change them concurrently, and so
// is whether a catch-up transfer is active: a change takes effect for the
// next piece. Unlimited, it neither waits nor allocates.
func (b *bucket) wait(ctx context.Context, p Priority, n int) error {
	for n > 0 {
		if b.total.Limit() == rate.Inf {
			return ctx.Err()
		}
		k := min(n, max(b.total.Burst(), 1))
		// NB: background waits on its share first and on the total after,
		// never holding a total reservation while it waits for its share.
		if p != PriorityCatchUp && b.catchUps.Load() > 0 && b.background.Limit() != rate.Inf {
			k = min(k, max(b.background.Burst(), 1))
			if err := b.background.WaitN(ctx, k); err != nil {
				return err
			}
		}
		if err := b.total.WaitN(ctx, k); err != nil {
			return err
		}
		n -= k
	}
	return nil
}

func (b *bucket) setRate(bytesPerSec int64, share float64) {
	setRate(b.total, bytesPerSec)
	bg := int64(float64(bytesPerSec) * share)
	switch {
	case bytesPerSec <= 0 || share >= 1:
		bg = 0 // unlimited: total alone bounds background
	case bg < 1:
		bg = 1 // a positive rate, however small: 0 would mean unlimited
	}
	setRate(b.background, bg)
}

// NewThrottle returns a Throttle with the given limits.
func NewThrottle(l Limits) *Throttle {
	t := &Throttle{send: newBucket(), recv: newBucket(), gen: newBucket()}
	t.SetLimits(l)
	return t
}

// SetLimits replaces all limits. Transfers already holding a slot keep it
// when a cap is lowered; new ones wait until the count is below the cap.
// Rates and the background share take effect for the next piece of a
// wait (at most a burst, a quarter second of the rate).
func (t *Throttle) SetLimits(l Limits) {
	t.mu.Lock()
	share := l.backgroundShare()
	t.send.setRate(l.SendBytesPerSec, share)
	t.recv.setRate(l.RecvBytesPerSec, share)
	t.gen.setRate(l.GenerateBytesPerSec, 1)
	t.share = normalShare(l.BackgroundShare)
	t.mu.Unlock()
	t.sends.setCap(l.MaxConcurrentSends)
	t.recvs.setCap(l.MaxConcurrentRecvs)
	t.gens.setCap(l.MaxConcurrentGenerations)
}

// Limits returns the limits in effect.
func (t *Throttle) Limits() Limits {
	t.mu.Lock()
	share := t.share
	t.mu.Unlock()
	return Limits{
		SendBytesPerSec:          rateOf(t.send.total),
		RecvBytesPerSec:          rateOf(t.recv.total),
		GenerateBytesPerSec:      rateOf(t.gen.total),
		BackgroundShare:          share,
		MaxConcurrentSends:       t.sends.capacity(),
		MaxConcurrentRecvs:       t.recvs.capacity(),
		MaxConcurrentGenerations: t.gens.capacity(),
	}
}

func setRate(l *rate.Limiter, bytesPerSec int64) {
	if bytesPerSec <= 0 {
		l.SetLimit(rate.Inf)
		return
	}
	// A burst of a quarter second smooths chunk-sized waits without letting
	// a transfer exceed the rate by more than that over any window.
	burst := max(bytesPerSec/4, minBurst)
	l.SetBurst(int(min(burst, math.MaxInt32)))
	l.SetLimit(rate.Limit(bytesPerSec))
}

func rateOf(l *rate.Limiter) int64 {
	if l.Limit() == rate.Inf {
		return 0
	}
	return int64(l.Limit())
}

// WaitSend blocks until n bytes of a transfer of class p may be sent, or
// ctx is done.
func (t *Throttle) WaitSend(ctx context.Context, p Priority, n int) error {
	return t.send.wait(ctx, p, n)
}

// WaitRecv blocks until n bytes of a transfer of class p may be received,
// or ctx is done.
func (t *Throttle) WaitRecv(ctx context.Context, p Priority, n int) error {
	return t.recv.wait(ctx, p, n)
}

// WaitGenerate blocks until n bytes of a snapshot save may be written, or
// ctx is done.
func (t *Throttle) WaitGenerate(ctx context.Context, n int) error {
	return t.gen.wait(ctx, PriorityCatchUp, n)
}

// beginSend and beginRecv mark a transfer of class p active in a direction
// until the returned release (safe to call more than once). While a
// catch-up transfer is active, background ones of the direction are held to
// their share. The Sender calls beginSend per registered reader, the
// Receiver beginRecv per Receive.
func (t *Throttle) beginSend(p Priority) (release func()) { return t.send.begin(p) }
func (t *Throttle) beginRecv(p Priority) (release func()) { return t.recv.begin(p) }

// CatchUpActive returns the catch-up transfers active per direction: the
// ones that hold background transfers to their share.
func (t *Throttle) CatchUpActive() (sends, recvs int) {
	return int(t.send.catchUps.Load()), int(t.recv.catchUps.Load())
}

// TryReserveSend takes a send slot if one is free. The caller must call the
// returned release exactly once; it is safe to call more than once.
func (t *Throttle) TryReserveSend() (release func(), ok bool) { return t.sends.tryAcquire() }

// TryReserveRecv takes a receive slot if one is free: the receiver's
// reservation, granted before any byte is requested from the sender.
func (t *Throttle) TryReserveRecv() (release func(), ok bool) { return t.recvs.tryAcquire() }

// TryReserveGeneration takes a snapshot-generation slot if one is free.
func (t *Throttle) TryReserveGeneration() (release func(), ok bool) { return t.gens.tryAcquire() }

// InUse returns the slots held: sends, receives, generations.
func (t *Throttle) InUse() (sends, recvs, gens int) {
	return t.sends.inUse(), t.recvs.inUse(), t.gens.inUse()
}

// slots is a counting semaphore whose capacity may change at runtime.
// Acquisition never blocks: a refused peer retries later, which keeps a
// flood of requests from queueing memory on this host (frugalos#54).
type slots struct {
	mu  sync.Mutex
	cap int // 0: unlimited
	n   int // Invariant: 0 <= n; n may exceed cap after a lowering.
}

func (s *slots) setCap(c int) {
	s.mu.Lock()
	s.cap = max(c, 0)
	s.mu.Unlock()
}

func (s *slots) capacity() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cap
}

func (s *slots) inUse() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.n
}

func (s *slots) tryAcquire() (func(), bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cap > 0 && s.n >= s.cap {
		return func() {}, false
	}
	s.n++
	var once sync.Once
	return func() {
		once.Do(func() {
			s.mu.Lock()
			s.n--
			s.mu.Unlock()
		})
	}, true
}
