package raft

import (
	"errors"
	"sync"

	"github.com/skiffdb/skiff/raftpb"
)

var (
	// ErrCompacted: the requested index is compacted (raftpb.ErrCompacted,
	// the same value logdb returns).
	ErrCompacted = raftpb.ErrCompacted
	// ErrUnavailable: the requested index is above the last index
	// (raftpb.ErrUnavailable).
	ErrUnavailable = raftpb.ErrUnavailable
	// ErrSnapshotTemporarilyUnavailable: a snapshot is being generated;
	// the core retries on a later tick (raftpb's value).
	ErrSnapshotTemporarilyUnavailable = raftpb.ErrSnapshotTemporarilyUnavailable
	// ErrSnapshotOutOfDate: an applied snapshot is older than the log's.
	ErrSnapshotOutOfDate = errors.New("raft: snapshot is out of date")
)

// LogReader is how the core reads the durable log. It follows raft-rs
// Storage exactly (seed 002). All methods are called from the goroutine that
// drives the core. Entries returned are owned by the caller and are not
// modified by the core.
//
// The log covers [FirstIndex, LastIndex]; the term of FirstIndex-1 (the
// snapshot's index) stays readable through Term.
type LogReader interface {
	// InitialState returns the durable HardState and the latest snapshot's
	// meta (zero if none). The membership in effect is the snapshot's
	// membership plus the config-change entries after it.
	InitialState() (raftpb.HardState, raftpb.SnapshotMeta, error)
	// Entries returns entries in [lo, hi), at most maxSize bytes
	// (raftpb.Entry.Size) but always at least one if any is in range.
	// ErrCompacted if lo < FirstIndex; hi must be <= LastIndex+1.
	Entries(lo, hi, maxSize uint64) ([]raftpb.Entry, error)
	// Term returns the term of entry i, valid on [FirstIndex-1, LastIndex];
	// ErrCompacted below, ErrUnavailable above.
	Term(i uint64) (uint64, error)
	// FirstIndex is the snapshot index + 1 (1 for a new log).
	FirstIndex() (uint64, error)
	// LastIndex is the index of the last durable entry (the snapshot index
	// if the log is empty).
	LastIndex() (uint64, error)
	// Snapshot returns the meta of a snapshot whose index is at least
	// requestIndex, to be sent to a replica that needs entries below
	// FirstIndex. ErrSnapshotTemporarilyUnavailable if one is being
	// generated; the core then asks again on a later tick.
	Snapshot(requestIndex uint64) (raftpb.SnapshotMeta, error)
}

// MemoryLog is a LogReader over memory, with the write side a host
// provides. It is used by tests, the rafttest harness and benchmarks; it is
// safe for concurrent use.
type MemoryLog struct {
	mu   sync.Mutex
	hs   raftpb.HardState
	snap raftpb.SnapshotMeta
	// ents[0] is a dummy whose Index/Term are the snapshot's.
	ents []raftpb.Entry
	// SnapshotUnavailable makes Snapshot return
	// ErrSnapshotTemporarilyUnavailable while it is > 0, decrementing it
	// on each call; tests use it to model asynchronous generation.
	SnapshotUnavailable int
}

// NewMemoryLog returns an empty log.
func NewMemoryLog() *MemoryLog { return &MemoryLog{ents: make([]raftpb.Entry, 1)} }

func (ml *MemoryLog) InitialState() (raftpb.HardState, raftpb.SnapshotMeta, error) {
	ml.mu.Lock()
	defer ml.mu.Unlock()
	return ml.hs, ml.snap, nil
}

func (ml *MemoryLog) SetHardState(hs raftpb.HardState) {
	ml.mu.Lock()
	defer ml.mu.Unlock()
	ml.hs = hs
}

func (ml *MemoryLog) HardState() raftpb.HardState {
	ml.mu.Lock()
	defer ml.mu.Unlock()
	return ml.hs
}

func (ml *MemoryLog) firstIndex() uint64 { return ml.ents[0].Index + 1 }
func (ml *MemoryLog) lastIndex() uint64  { return ml.ents[0].Index + uint64(len(ml.ents)) - 1 }

func (ml *MemoryLog) Entries(lo, hi, maxSize uint64) ([]raftpb.Entry, error) {
	ml.mu.Lock()
	defer ml.mu.Unlock()
	if lo < ml.firstIndex() {
		return nil, ErrCompacted
	}
	if hi > ml.lastIndex()+1 {
		return nil, ErrUnavailable
	}
	off := ml.ents[0].Index
	ents := limitSize(ml.ents[lo-off:hi-off], maxSize)
	// Copy so that a later truncation cannot change what the caller holds.
	return append([]raftpb.Entry(nil), ents...), nil
}

func (ml *MemoryLog) Term(i uint64) (uint64, error) {
	ml.mu.Lock()
	defer ml.mu.Unlock()
	off := ml.ents[0].Index
	if i < off {
		return 0, ErrCompacted
	}
	if i > ml.lastIndex() {
		return 0, ErrUnavailable
	}
	return ml.ents[i-off].Term, nil
}

func (ml *MemoryLog) FirstIndex() (uint64, error) {
	ml.mu.Lock()
	defer ml.mu.Unlock()
	return ml.firstIndex(), nil
}

func (ml *MemoryLog) LastIndex() (uint64, error) {
	ml.mu.Lock()
	defer ml.mu.Unlock()
	return ml.lastIndex(), nil
}

func (ml *MemoryLog) Snapshot(requestIndex uint64) (raftpb.SnapshotMeta, error) {
	ml.mu.Lock()
	defer ml.mu.Unlock()
	if ml.SnapshotUnavailable > 0 {
		ml.SnapshotUnavailable--
		return raftpb.SnapshotMeta{}, ErrSnapshotTemporarilyUnavailable
	}
	if ml.snap.Index < requestIndex {
		return raftpb.SnapshotMeta{}, ErrSnapshotTemporarilyUnavailable
	}
	return ml.snap, nil
}

// SnapshotMeta returns the latest snapshot's meta.
func (ml *MemoryLog) SnapshotMeta() raftpb.SnapshotMeta {
	ml.mu.Lock()
	defer ml.mu.Unlock()
	return ml.snap
}

// Append appends ents, overwriting any conflicting suffix. ents must be
// contiguous and start at or below LastIndex+1 and above the snapshot.
func (ml *MemoryLog) Append(ents []raftpb.Entry) error {
	if len(ents) == 0 {
		return nil
	}
	ml.mu.Lock()
	defer ml.mu.Unlock()
	first := ents[0].Index
	if first <= ml.ents[0].Index {
		// Already covered by the snapshot: skip that part.
		skip := ml.ents[0].Index + 1 - first
		if skip >= uint64(len(ents)) {
			return nil
		}
		ents, first = ents[skip:], first+skip
	}
	if first > ml.lastIndex()+1 {
		return ErrUnavailable
	}
	ml.ents = append(ml.ents[:first-ml.ents[0].Index], ents...)
	return nil
}

// ApplySnapshot resets the log to meta: entries after it are kept only if
// the entry at meta.Index has meta.Term (Raft Fig. 13 rule 7).
func (ml *MemoryLog) ApplySnapshot(meta raftpb.SnapshotMeta) error {
	ml.mu.Lock()
	defer ml.mu.Unlock()
	if meta.Index <= ml.snap.Index {
		return ErrSnapshotOutOfDate
	}
	off := ml.ents[0].Index
	var rest []raftpb.Entry
	if meta.Index <= ml.lastIndex() && ml.ents[meta.Index-off].Term == meta.Term {
		rest = ml.ents[meta.Index-off+1:]
	}
	ents := make([]raftpb.Entry, 1, 1+len(rest))
	ents[0] = raftpb.Entry{Index: meta.Index, Term: meta.Term}
	ml.ents = append(ents, rest...)
	ml.snap = meta
	return nil
}

// CreateSnapshot records a snapshot at index (which must be in the log) and
// compacts nothing; use Compact for that.
func (ml *MemoryLog) CreateSnapshot(index uint64, m raftpb.Membership) (raftpb.SnapshotMeta, error) {
	ml.mu.Lock()
	defer ml.mu.Unlock()
	if index <= ml.snap.Index {
		return raftpb.SnapshotMeta{}, ErrSnapshotOutOfDate
	}
	if index > ml.lastIndex() {
		return raftpb.SnapshotMeta{}, ErrUnavailable
	}
	ml.snap = raftpb.SnapshotMeta{
		FormatVersion: raftpb.SnapshotFormatVersion,
		Index:         index,
		Term:          ml.ents[index-ml.ents[0].Index].Term,
		Membership:    m.Clone(),
	}
	return ml.snap, nil
}

// Compact discards entries up to and including index, which must not be
// above the latest snapshot (so that the compacted part stays reachable).
func (ml *MemoryLog) Compact(index uint64) error {
	ml.mu.Lock()
	defer ml.mu.Unlock()
	off := ml.ents[0].Index
	if index <= off {
		return ErrCompacted
	}
	if index > ml.lastIndex() {
		return ErrUnavailable
	}
	ents := make([]raftpb.Entry, 1, 1+ml.lastIndex()-index)
	ents[0] = raftpb.Entry{Index: index, Term: ml.ents[index-off].Term}
	ml.ents = append(ents, ml.ents[index-off+1:]...)
	return nil
}

// limitSize returns the longest prefix of ents within maxSize bytes, but at
// least one entry.
func limitSize(ents []raftpb.Entry, maxSize uint64) []raftpb.Entry {
	if len(ents) == 0 {
		return ents
	}
	size := ents[0].Size()
	for i := 1; i < len(ents); i++ {
		size += ents[i].Size()
		if size > maxSize {
			return ents[:i]
		}
	}
	return ents
}
