package rsm

import (
	"encoding/binary"
	"fmt"
	"slices"

	"github.com/skiffdb/skiff/statemachine"
)

// session is one registered client's state. Every replica holds the same
// sessions at the same applied index: all changes are driven by entries, and
// "recently used" means the index of the last entry that named the client,
// never a clock.
type session struct {
	clientID uint64
	// respondedTo: results of series <= respondedTo are dropped and such
	// series are answered ErrSessionExpired. Only increases.
	respondedTo uint64
	// lastUsed is the index of the last entry that named this client.
	lastUsed uint64
	// history holds the result of every applied series above respondedTo.
	// Invariant: every key is > respondedTo.
	history map[uint64]cachedResult
	// prev/next link the table's LRU list, oldest first. Because entries
	// are applied in index order, list order is lastUsed order.
	prev, next *session
}

// cachedResult is a kept result. lost marks a series applied during an
// OnDisk replay, whose result the state machine never returned to us.
type cachedResult struct {
	result statemachine.Result
	lost   bool
}

// sessionTable is the set of registered clients, bounded by max with
// least-recently-used eviction (dragonboat lrusession, keyed by index).
type sessionTable struct {
	max        int
	byID       map[uint64]*session
	head, tail *session // oldest, newest
}

func newSessionTable(max int) *sessionTable {
	return &sessionTable{max: max, byID: make(map[uint64]*session)}
}

func (t *sessionTable) len() int { return len(t.byID) }

func (t *sessionTable) unlink(s *session) {
	if s.prev != nil {
		s.prev.next = s.next
	} else {
		t.head = s.next
	}
	if s.next != nil {
		s.next.prev = s.prev
	} else {
		t.tail = s.prev
	}
	s.prev, s.next = nil, nil
}

func (t *sessionTable) pushBack(s *session) {
	s.prev = t.tail
	if t.tail != nil {
		t.tail.next = s
	} else {
		t.head = s
	}
	t.tail = s
}

// get returns the client's session, marking it used at index.
func (t *sessionTable) get(clientID, index uint64) *session {
	s := t.byID[clientID]
	if s == nil {
		return nil
	}
	s.lastUsed = index
	if t.tail != s {
		t.unlink(s)
		t.pushBack(s)
	}
	return s
}

// register adds the client at index, evicting the least recently used
// session first when the table is full. Registering a registered client
// only marks it used: a retried registration must not wipe the results the
// client may already depend on.
func (t *sessionTable) register(clientID, index uint64) {
	if t.get(clientID, index) != nil {
		return
	}
	for len(t.byID) >= t.max && t.head != nil {
		old := t.head
		t.unlink(old)
		delete(t.byID, old.clientID)
	}
	s := &session{clientID: clientID, lastUsed: index, history: make(map[uint64]cachedResult)}
	t.byID[clientID] = s
	t.pushBack(s)
}

// unregister removes the client; it reports whether it was registered.
func (t *sessionTable) unregister(clientID uint64) bool {
	s := t.byID[clientID]
	if s == nil {
		return false
	}
	t.unlink(s)
	delete(t.byID, clientID)
	return true
}

// clearTo raises respondedTo and drops the results it covers.
func (s *session) clearTo(to uint64) {
	if to <= s.respondedTo {
		return
	}
	s.respondedTo = to
	for series := range s.history {
		if series <= to {
			delete(s.history, series)
		}
	}
}

// record keeps the result of series unless the client already said it has
// seen it. r.Data is copied: the state machine may reuse its buffer, and the
// cached result must stay identical on every replica until dropped.
func (s *session) record(series uint64, r statemachine.Result, lost bool) {
	if series <= s.respondedTo {
		return
	}
	if len(r.Data) == 0 {
		r.Data = nil // as decodeSessions restores it
	} else {
		r.Data = slices.Clone(r.Data)
	}
	s.history[series] = cachedResult{result: r, lost: lost}
}

// The session table's encoding inside the snapshot header (see doc.go):
//
//	count uvarint, then per session, in LRU order (oldest first):
//	  clientID, respondedTo, lastUsed uvarint; n uvarint,
//	  then n × (series uvarint, lost byte, value uvarint, len uvarint, data)
//	  in increasing series order.
//
// LRU order makes the restored list identical; sorted history makes the
// bytes identical on every replica.

func (t *sessionTable) appendTo(b []byte) []byte {
	b = binary.AppendUvarint(b, uint64(len(t.byID)))
	var series []uint64
	for s := t.head; s != nil; s = s.next {
		b = binary.AppendUvarint(b, s.clientID)
		b = binary.AppendUvarint(b, s.respondedTo)
		b = binary.AppendUvarint(b, s.lastUsed)
		b = binary.AppendUvarint(b, uint64(len(s.history)))
		series = series[:0]
		for k := range s.history {
			series = append(series, k)
		}
		slices.Sort(series)
		for _, k := range series {
			c := s.history[k]
			b = binary.AppendUvarint(b, k)
			if c.lost {
				b = append(b, 1)
			} else {
				b = append(b, 0)
			}
			b = binary.AppendUvarint(b, c.result.Value)
			b = binary.AppendUvarint(b, uint64(len(c.result.Data)))
			b = append(b, c.result.Data...)
		}
	}
	return b
}

// reader decodes the snapshot header; the first error sticks.
type reader struct {
	b   []byte
	err error
}

func (r *reader) uvarint(what string) uint64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.err = fmt.Errorf("%s: bad varint: %w", what, ErrCorruptSnapshot)
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *reader) byte1(what string) byte {
	if r.err != nil {
		return 0
	}
	if len(r.b) == 0 {
		r.err = fmt.Errorf("%s: truncated: %w", what, ErrCorruptSnapshot)
		return 0
	}
	v := r.b[0]
	r.b = r.b[1:]
	return v
}

func (r *reader) bytes(what string) []byte {
	n := r.uvarint(what)
	if r.err != nil {
		return nil
	}
	if n > uint64(len(r.b)) {
		r.err = fmt.Errorf("%s: length %d beyond the %d bytes left: %w", what, n, len(r.b), ErrCorruptSnapshot)
		return nil
	}
	v := r.b[:n:n]
	r.b = r.b[n:]
	return v
}

// count reads an element count and bounds it by the bytes left (each
// element takes at least minSize bytes), so corrupt input cannot make us
// allocate more than its own size.
func (r *reader) count(what string, minSize int) int {
	n := r.uvarint(what)
	if r.err != nil {
		return 0
	}
	if n > uint64(len(r.b)/minSize) {
		r.err = fmt.Errorf("%s: count %d beyond the %d bytes left: %w", what, n, len(r.b), ErrCorruptSnapshot)
		return 0
	}
	return int(n)
}

// decodeSessions reads a table written by appendTo into a new table of the
// given capacity. A table larger than max keeps its most recently used
// sessions (the capacity may have been lowered since the snapshot).
func decodeSessions(r *reader, max int) *sessionTable {
	t := newSessionTable(max)
	n := r.count("session count", 4)
	for range n {
		s := &session{
			clientID:    r.uvarint("client id"),
			respondedTo: r.uvarint("responded to"),
			lastUsed:    r.uvarint("last used"),
		}
		h := r.count("history count", 4)
		s.history = make(map[uint64]cachedResult, h)
		for range h {
			series := r.uvarint("series")
			lost := r.byte1("lost flag")
			var c cachedResult
			c.lost = lost == 1
			c.result.Value = r.uvarint("result value")
			if d := r.bytes("result data"); len(d) > 0 {
				c.result.Data = slices.Clone(d)
			}
			if r.err != nil {
				return nil
			}
			if lost > 1 || series <= s.respondedTo {
				r.err = fmt.Errorf("session %d: bad history entry %d: %w", s.clientID, series, ErrCorruptSnapshot)
				return nil
			}
			s.history[series] = c
		}
		if r.err != nil {
			return nil
		}
		if _, dup := t.byID[s.clientID]; dup || (t.tail != nil && s.lastUsed < t.tail.lastUsed) {
			r.err = fmt.Errorf("session %d duplicated or out of LRU order: %w", s.clientID, ErrCorruptSnapshot)
			return nil
		}
		t.byID[s.clientID] = s
		t.pushBack(s)
	}
	for len(t.byID) > t.max {
		old := t.head
		t.unlink(old)
		delete(t.byID, old.clientID)
	}
	return t
}
