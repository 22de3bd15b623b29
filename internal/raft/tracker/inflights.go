package tracker

// Inflights bounds the MsgReplicate messages sent to one replica and not yet
// acknowledged, by count and by bytes. It is a ring of (last index, bytes)
// pairs in send order; an acknowledgement of index i frees every message
// whose last index is <= i.
type Inflights struct {
	start, count int
	bytes        uint64

	maxCount int
	maxBytes uint64 // 0 means unlimited

	buf []inflight // grows up to maxCount, then reused
}

type inflight struct {
	index uint64
	bytes uint64
}

// NewInflights returns an empty Inflights with the given limits.
func NewInflights(maxCount int, maxBytes uint64) *Inflights {
	return &Inflights{maxCount: maxCount, maxBytes: maxBytes}
}

// Clone returns an independent copy.
func (in *Inflights) Clone() *Inflights {
	c := *in
	c.buf = append([]inflight(nil), in.buf...)
	return &c
}

// Add records a message whose last entry is index and whose entries take
// bytes. The caller checks Full first.
func (in *Inflights) Add(index, bytes uint64) {
	if in.count >= in.maxCount {
		panic("tracker: Add on full Inflights") // a caller bug
	}
	if in.count == len(in.buf) {
		in.grow()
	}
	next := in.start + in.count
	if next >= len(in.buf) {
		next -= len(in.buf)
	}
	in.buf[next] = inflight{index: index, bytes: bytes}
	in.count++
	in.bytes += bytes
}

// grow doubles the ring (up to maxCount), unwrapping it so that it starts
// at 0. Growing lazily keeps idle replicas cheap.
func (in *Inflights) grow() {
	newSize := min(max(1, 2*len(in.buf)), in.maxCount)
	nb := make([]inflight, newSize)
	for i := 0; i < in.count; i++ {
		nb[i] = in.buf[(in.start+i)%len(in.buf)]
	}
	in.buf, in.start = nb, 0
}

// FreeLE frees every message whose last index is <= to.
func (in *Inflights) FreeLE(to uint64) {
	if in.count == 0 || to < in.buf[in.start].index {
		return
	}
	idx := in.start
	var i int
	var freed uint64
	for i = 0; i < in.count; i++ {
		if to < in.buf[idx].index {
			break
		}
		freed += in.buf[idx].bytes
		if idx++; idx >= len(in.buf) {
			idx = 0
		}
	}
	in.count -= i
	in.bytes -= freed
	in.start = idx
	if in.count == 0 {
		in.start = 0
	}
}

// Full reports whether no more messages may be sent: the count limit is
// reached, or the byte limit is reached or exceeded.
func (in *Inflights) Full() bool {
	return in.count >= in.maxCount || (in.maxBytes != 0 && in.bytes >= in.maxBytes)
}

// Count returns the number of messages in flight.
func (in *Inflights) Count() int { return in.count }

// Bytes returns the bytes in flight.
func (in *Inflights) Bytes() uint64 { return in.bytes }

// Reset frees everything.
func (in *Inflights) Reset() { in.start, in.count, in.bytes = 0, 0, 0 }
