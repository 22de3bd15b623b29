package snapshot

import (
	"context"
	"math"
	"sync"

	"golang.org/x/time/rate"
)

// Limits are the node-wide snapshot limits shared by every group on a host
// (REQUIREMENTS §9, §10). Zero means unlimited.
type Limits struct {
	// SendBytesPerSec and RecvBytesPerSec cap snapshot bytes leaving and
	// entering this host, across all groups and transfers. They are
	// separate buckets so that a host sending to eight peers does not
	// starve its own catch-up (tikv#14275, tikv#10059).
	SendBytesPerSec int64
	RecvBytesPerSec int64
	// MaxConcurrentSends, MaxConcurrentRecvs and MaxConcurrentGenerations
	// cap transfers and snapshot saves in progress at once.
	MaxConcurrentSends       int
	MaxConcurrentRecvs       int
	MaxConcurrentGenerations int
}

// minBurst keeps the token bucket able to pass a whole chunk-sized wait at
// low rates without splitting it into tiny waits.
const minBurst = 64 << 10

// Throttle holds a host's snapshot token buckets and concurrency slots. One
// Throttle is shared by every Sender and Receiver of the host; SetLimits
// changes it at runtime and takes effect for the next byte waited for.
// It is safe for concurrent use.
type Throttle struct {
	send, recv *rate.Limiter
	sends      slots
	recvs      slots
	gens       slots
}

// NewThrottle returns a Throttle with the given limits.
func NewThrottle(l Limits) *Throttle {
	t := &Throttle{
		send: rate.NewLimiter(rate.Inf, minBurst),
		recv: rate.NewLimiter(rate.Inf, minBurst),
	}
	t.SetLimits(l)
	return t
}

// SetLimits replaces all limits. Transfers already holding a slot keep it
// when a cap is lowered; new ones wait until the count is below the cap.
func (t *Throttle) SetLimits(l Limits) {
	setRate(t.send, l.SendBytesPerSec)
	setRate(t.recv, l.RecvBytesPerSec)
	t.sends.setCap(l.MaxConcurrentSends)
	t.recvs.setCap(l.MaxConcurrentRecvs)
	t.gens.setCap(l.MaxConcurrentGenerations)
}

// Limits returns the limits in effect.
func (t *Throttle) Limits() Limits {
	return Limits{
		SendBytesPerSec:          rateOf(t.send),
		RecvBytesPerSec:          rateOf(t.recv),
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

// WaitSend blocks until n bytes may be sent, or ctx is done.
func (t *Throttle) WaitSend(ctx context.Context, n int) error { return waitBytes(ctx, t.send, n) }

// WaitRecv blocks until n bytes may be received, or ctx is done.
func (t *Throttle) WaitRecv(ctx context.Context, n int) error { return waitBytes(ctx, t.recv, n) }

// waitBytes takes n tokens in pieces no larger than the burst (WaitN refuses
// more than the burst). The burst is re-read per piece because SetLimits may
// change it concurrently.
func waitBytes(ctx context.Context, l *rate.Limiter, n int) error {
	for n > 0 {
		if l.Limit() == rate.Inf {
			return ctx.Err()
		}
		k := min(n, max(l.Burst(), 1))
		if err := l.WaitN(ctx, k); err != nil {
			return err
		}
		n -= k
	}
	return nil
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
