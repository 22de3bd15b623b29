package memnet

import (
	"container/heap"
	"sync"
	"time"
)

// link carries batches from one endpoint to another, each at its delivery
// time, from one goroutine, so that deliveries on a link never overlap:
// the Handler contract (one host's batches in order, never concurrently)
// holds as with TCP. A heap ordered by delivery time serves both modes:
// with reorder off, push never queues an item before the last one, so
// the heap is a FIFO; with reorder on, independent delays let a later
// batch come out first.
type link struct {
	src, dst *Endpoint
	wake     chan struct{} // cap 1: an item was pushed

	// mu guards the fields below (src.mu is not needed).
	mu  sync.Mutex
	q   itemHeap
	seq uint64
	// last is the latest delivery time queued. Invariant, with reorder
	// off: every new item's time is >= last, so the heap yields FIFO.
	last time.Time
}

// item is one batch waiting on a link.
type item struct {
	at      time.Time
	seq     uint64 // ties on at: push order
	payload []byte
}

// push queues payload for delivery after delay (no earlier than the batches
// already queued, unless reorder); false when the link's queue is full.
func (l *link) push(payload []byte, delay time.Duration, reorder bool) bool {
	l.mu.Lock()
	if len(l.q) >= linkQueueLen {
		l.mu.Unlock()
		return false
	}
	at := time.Now().Add(delay)
	if !reorder && at.Before(l.last) {
		at = l.last
	}
	if at.After(l.last) {
		l.last = at
	}
	l.seq++
	heap.Push(&l.q, item{at: at, seq: l.seq, payload: payload})
	l.mu.Unlock()
	signal(l.wake)
	return true
}

// run delivers items when due until either endpoint closes.
func (l *link) run() {
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	for {
		var due *item
		wait := time.Duration(-1)
		l.mu.Lock()
		if len(l.q) > 0 {
			if d := time.Until(l.q[0].at); d > 0 {
				wait = d
			} else {
				it := heap.Pop(&l.q).(item)
				due = &it
			}
		}
		l.mu.Unlock()
		if due != nil {
			l.deliver(due.payload)
			continue
		}
		// Sleep until the head is due, or until a push (which may bring
		// an earlier item when reordering) or a close. Inside a synctest
		// bubble this is where the fake clock advances.
		var tc <-chan time.Time
		if wait >= 0 {
			timer.Reset(wait)
			tc = timer.C
		}
		select {
		case <-tc:
		case <-l.wake:
		case <-l.src.done:
			return
		case <-l.dst.done:
			l.src.forgetLink(l)
			return
		}
	}
}

// deliver checks, at delivery time, that the hosts can still talk (a
// partition cuts batches in flight, as a broken connection loses them)
// and hands the batch over.
func (l *link) deliver(payload []byte) {
	n := l.src.n
	n.mu.Lock()
	ok := n.reachableLocked(l.src, l.dst)
	n.mu.Unlock()
	if !ok {
		n.stats.unreachable.Add(1)
		l.src.report(l.dst.addr)
		return
	}
	l.dst.deliver(payload)
}

// itemHeap orders items by delivery time, then push order.
type itemHeap []item

func (h itemHeap) Len() int { return len(h) }
func (h itemHeap) Less(i, j int) bool {
	if !h[i].at.Equal(h[j].at) {
		return h[i].at.Before(h[j].at)
	}
	return h[i].seq < h[j].seq
}
func (h itemHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *itemHeap) Push(x any)   { *h = append(*h, x.(item)) }
func (h *itemHeap) Pop() any {
	old := *h
	it := old[len(old)-1]
	old[len(old)-1] = item{}
	*h = old[:len(old)-1]
	return it
}
