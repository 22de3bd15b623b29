package raft

import (
	"errors"
	"fmt"

	"github.com/skiffdb/skiff/raftpb"
)

// raftLog is the core's view of the log: the durable part behind a
// LogReader plus the unstable part the host has not persisted yet.
//
// Invariants:
//   - applied <= committed <= lastIndex().
//   - unstable.offset == (durable last index) + 1, or less after a conflict
//     truncated a suffix not yet overwritten on disk.
type raftLog struct {
	reader   LogReader
	unstable unstable

	// committed is the highest index known to be committed.
	committed uint64
	// applied is the highest index handed out in Ready.CommittedEntries
	// and acknowledged by Advance.
	applied uint64
	// applying is the highest index handed out, by Ready or by
	// TakeCommitted, whether Advanced or not. Invariant: applied <=
	// applying <= committed, or applying < applied after a restore (then
	// applied counts).
	applying uint64
	// maxApplyBytes bounds Ready.CommittedEntries.
	maxApplyBytes uint64
}

// unstable holds entries (and possibly a snapshot) that the core has
// accepted and the host has not yet persisted.
type unstable struct {
	// snapshot, if set, replaces the whole durable log when persisted.
	snapshot *raftpb.SnapshotMeta
	// entries[i] has index offset+i.
	entries []raftpb.Entry
	offset  uint64
}

func newLog(reader LogReader, maxApplyBytes uint64) (*raftLog, error) {
	first, err := reader.FirstIndex()
	if err != nil {
		return nil, err
	}
	last, err := reader.LastIndex()
	if err != nil {
		return nil, err
	}
	return &raftLog{
		reader:        reader,
		unstable:      unstable{offset: last + 1},
		committed:     first - 1,
		applied:       first - 1,
		maxApplyBytes: maxApplyBytes,
	}, nil
}

func (l *raftLog) String() string {
	return fmt.Sprintf("committed=%d applied=%d unstable.offset=%d len(unstable)=%d",
		l.committed, l.applied, l.unstable.offset, len(l.unstable.entries))
}

// mustOK panics on an error from the LogReader that the core cannot handle:
// a storage failure while the core is running. The host stops the group on a
// storage failure before the core sees one (logdb.ErrStorageFailed), so
// reaching this is a bug in the host or the LogReader.
func mustOK(err error) {
	if err != nil {
		panic(fmt.Sprintf("raft: unexpected log reader error: %v", err))
	}
}

func (l *raftLog) firstIndex() uint64 {
	if l.unstable.snapshot != nil {
		return l.unstable.snapshot.Index + 1
	}
	i, err := l.reader.FirstIndex()
	mustOK(err)
	return i
}

func (l *raftLog) lastIndex() uint64 {
	if n := len(l.unstable.entries); n > 0 {
		return l.unstable.offset + uint64(n) - 1
	}
	if l.unstable.snapshot != nil {
		return l.unstable.snapshot.Index
	}
	i, err := l.reader.LastIndex()
	mustOK(err)
	// NB: after a conflict truncated everything unstable, offset-1 may be
	// below the durable last index; the durable suffix is dead.
	return min(i, l.unstable.offset-1)
}

// term returns the term of entry i, or ErrCompacted / ErrUnavailable.
func (l *raftLog) term(i uint64) (uint64, error) {
	if s := l.unstable.snapshot; s != nil {
		if i == s.Index {
			return s.Term, nil
		}
		if i < s.Index {
			return 0, ErrCompacted
		}
	}
	if i > l.lastIndex() {
		return 0, ErrUnavailable
	}
	if i >= l.unstable.offset {
		return l.unstable.entries[i-l.unstable.offset].Term, nil
	}
	if l.unstable.snapshot != nil {
		// Everything durable above the snapshot is being discarded.
		return 0, ErrUnavailable
	}
	t, err := l.reader.Term(i)
	if err == nil || errors.Is(err, ErrCompacted) || errors.Is(err, ErrUnavailable) {
		return t, err
	}
	panic(fmt.Sprintf("raft: log reader Term(%d): %v", i, err))
}

// zeroTermOnOutOfBounds maps ErrCompacted/ErrUnavailable to term 0, which
// matches no real entry.
func (l *raftLog) termOrZero(i uint64) uint64 {
	t, err := l.term(i)
	if err != nil {
		return 0
	}
	return t
}

func (l *raftLog) lastTerm() uint64 {
	t, err := l.term(l.lastIndex())
	mustOK(err)
	return t
}

func (l *raftLog) matchTerm(i, term uint64) bool {
	t, err := l.term(i)
	return err == nil && t == term
}

// isUpToDate reports whether a log ending at (lastTerm, lastIndex) is at
// least as up to date as ours (Raft §5.4.1).
func (l *raftLog) isUpToDate(lastIndex, lastTerm uint64) bool {
	our := l.lastTerm()
	return lastTerm > our || (lastTerm == our && lastIndex >= l.lastIndex())
}

// maybeAppend handles the entries of a MsgReplicate whose previous entry is
// (prevIndex, prevTerm). It returns the index of the last new entry and true
// if the log matched, or false if it must be rejected.
func (l *raftLog) maybeAppend(prevIndex, prevTerm, committed uint64, ents []raftpb.Entry) (uint64, bool) {
	if !l.matchTerm(prevIndex, prevTerm) {
		return 0, false
	}
	lastNew := prevIndex + uint64(len(ents))
	ci := l.findConflict(ents)
	switch {
	case ci == 0: // everything already present
	case ci <= l.committed:
		panic(fmt.Sprintf("raft: entry %d conflicts with committed entry (committed %d)", ci, l.committed))
	default:
		l.append(ents[ci-(prevIndex+1):])
	}
	// Commit only what is known to match the leader's log (Raft Fig. 2:
	// min(leaderCommit, index of last new entry)).
	l.commitTo(min(committed, lastNew))
	return lastNew, true
}

// findConflict returns the index of the first entry of ents that is not in
// the log or has a different term, or 0 if all are present.
func (l *raftLog) findConflict(ents []raftpb.Entry) uint64 {
	for i := range ents {
		if !l.matchTerm(ents[i].Index, ents[i].Term) {
			return ents[i].Index
		}
	}
	return 0
}

// findConflictByTerm returns the largest index <= index whose term is <=
// term, and that term: the leader's next probe can start there (fast
// backtracking, thesis §5.3 optimization).
func (l *raftLog) findConflictByTerm(index, term uint64) (uint64, uint64) {
	for ; index > 0; index-- {
		t, err := l.term(index)
		if err != nil {
			// Compacted (or unavailable): we cannot look further back.
			return index, 0
		}
		if t <= term {
			return index, t
		}
	}
	return 0, 0
}

// append adds ents (contiguous) at ents[0].Index, truncating any
// conflicting suffix. Returns the new last index.
func (l *raftLog) append(ents []raftpb.Entry) uint64 {
	if len(ents) == 0 {
		return l.lastIndex()
	}
	after := ents[0].Index
	if after <= l.committed {
		panic(fmt.Sprintf("raft: append at %d is below committed %d", after, l.committed))
	}
	u := &l.unstable
	switch {
	case after == u.offset+uint64(len(u.entries)):
		u.entries = append(u.entries, ents...)
	case after <= u.offset:
		// Replace all unstable entries (and the durable suffix >= after).
		// Copy: messages still in flight may reference the old array.
		u.offset = after
		u.entries = append([]raftpb.Entry(nil), ents...)
	default:
		keep := u.entries[:after-u.offset]
		u.entries = append(append(make([]raftpb.Entry, 0, len(keep)+len(ents)), keep...), ents...)
	}
	return l.lastIndex()
}

// appendLeader appends copies of ents after the last index, stamped with
// term and consecutive indexes, and returns the first index. Each entry is
// copied once, straight into the unstable log; ents is not modified.
// Positions past len(unstable.entries) were never handed out, so appending
// in place cannot change a slice a message or Ready holds.
func (l *raftLog) appendLeader(term uint64, ents []raftpb.Entry) uint64 {
	u := &l.unstable
	first := l.lastIndex() + 1
	if u.snapshot != nil || first != u.offset+uint64(len(u.entries)) {
		// A leader never has a pending snapshot, and its unstable
		// entries always end at its last index.
		panic(fmt.Sprintf("raft: leader append at %d does not follow unstable log [%d, +%d)",
			first, u.offset, len(u.entries)))
	}
	n := len(u.entries)
	u.entries = append(u.entries, ents...)
	for i := n; i < len(u.entries); i++ {
		u.entries[i].Term = term
		u.entries[i].Index = first + uint64(i-n)
	}
	return first
}

// slice returns entries in [lo, hi) within maxSize bytes (at least one).
func (l *raftLog) slice(lo, hi, maxSize uint64) ([]raftpb.Entry, error) {
	if lo >= hi {
		return nil, nil
	}
	if lo < l.firstIndex() {
		return nil, ErrCompacted
	}
	if hi > l.lastIndex()+1 {
		panic(fmt.Sprintf("raft: slice [%d,%d) out of bound (last %d)", lo, hi, l.lastIndex()))
	}
	var ents []raftpb.Entry
	if lo < l.unstable.offset {
		stored, err := l.reader.Entries(lo, min(hi, l.unstable.offset), maxSize)
		if errors.Is(err, ErrCompacted) {
			return nil, err
		}
		mustOK(err)
		if uint64(len(stored)) < min(hi, l.unstable.offset)-lo {
			return stored, nil // hit maxSize
		}
		ents = stored
	}
	if hi > l.unstable.offset {
		from := max(lo, l.unstable.offset)
		un := l.unstable.entries[from-l.unstable.offset : hi-l.unstable.offset]
		if len(ents) == 0 {
			return capped(limitSize(un, maxSize)), nil
		}
		// Combine, respecting maxSize.
		size := raftpb.EntriesSize(ents)
		for i := range un {
			size += un[i].Size()
			if size > maxSize {
				break
			}
			ents = append(ents, un[i])
		}
	}
	return ents, nil
}

// commitTo raises committed to tocommit (never lowers it).
func (l *raftLog) commitTo(tocommit uint64) {
	if tocommit <= l.committed {
		return
	}
	if tocommit > l.lastIndex() {
		panic(fmt.Sprintf("raft: commit %d beyond last index %d", tocommit, l.lastIndex()))
	}
	l.committed = tocommit
}

// maybeCommit commits up to maxIndex if that entry has the given term:
// a leader commits only entries of its own term by counting replicas
// (Raft §5.4.2).
func (l *raftLog) maybeCommit(maxIndex, term uint64) bool {
	if maxIndex > l.committed && l.termOrZero(maxIndex) == term {
		l.commitTo(maxIndex)
		return true
	}
	return false
}

func (l *raftLog) hasNextCommittedEnts() bool {
	return l.committed > l.handedOut() && l.unstable.snapshot == nil
}

// nextCommittedEnts returns the committed entries not yet handed out.
func (l *raftLog) nextCommittedEnts() []raftpb.Entry {
	if !l.hasNextCommittedEnts() {
		return nil
	}
	ents, err := l.slice(l.handedOut()+1, l.committed+1, l.maxApplyBytes)
	mustOK(err)
	return ents
}

// handedOut is the highest index given to the driver for applying.
func (l *raftLog) handedOut() uint64 { return max(l.applied, l.applying) }

// appliedTo records that entries up to i were handed out for applying.
func (l *raftLog) appliedTo(i uint64) {
	if i == 0 {
		return
	}
	if i > l.committed || i < l.applied {
		panic(fmt.Sprintf("raft: applied %d out of range [%d, %d]", i, l.applied, l.committed))
	}
	l.applied = i
}

// stableTo records that unstable entries up to (i, t) were persisted.
func (l *raftLog) stableTo(i, t uint64) {
	u := &l.unstable
	if i < u.offset || i >= u.offset+uint64(len(u.entries)) {
		return
	}
	// Only if the entry was not replaced meanwhile.
	if u.entries[i-u.offset].Term != t {
		return
	}
	u.entries = u.entries[i+1-u.offset:]
	u.offset = i + 1
	if len(u.entries) == 0 {
		u.entries = nil // release the array
	}
}

// stableSnapTo records that the unstable snapshot at i was persisted.
func (l *raftLog) stableSnapTo(i uint64) {
	if l.unstable.snapshot != nil && l.unstable.snapshot.Index == i {
		l.unstable.snapshot = nil
	}
}

// restore resets the log to a snapshot: everything is discarded (Raft
// Fig. 13 rule 8; the caller has already ruled out rule 7).
func (l *raftLog) restore(meta *raftpb.SnapshotMeta) {
	l.committed = meta.Index
	l.applied = meta.Index
	l.applying = meta.Index
	l.unstable = unstable{snapshot: meta, offset: meta.Index + 1}
}
