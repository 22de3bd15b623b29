package logdb

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"

	"github.com/skiffdb/skiff/internal/logdb/wal"
	"github.com/skiffdb/skiff/raftpb"
)

// Chunk ops.
const (
	opUpdate  = 1
	opCompact = 2
	opReset   = 3
	opRemove  = 4
	opState   = 5
)

// Update flags.
const (
	flagHardState = 1 << iota
	flagSnapshot
	flagEntries
)

var errBadChunk = errors.New("logdb: bad chunk")

// op is one decoded chunk. Slices alias the chunk payload.
type op struct {
	kind  byte
	group raftpb.GroupID
	flags byte
	hs    raftpb.HardState
	snap  []byte // encoded SnapshotMeta, nil if none
	// compact: index, term. state: first, compactTerm(term), last.
	index, term, last uint64
	keep              bool
	// entries: first index, count, and their encoding.
	entFirst, entCount uint64
	ents               []byte
}

func appendHardState(b []byte, hs *raftpb.HardState) []byte {
	b = binary.AppendUvarint(b, hs.Term)
	b = binary.AppendUvarint(b, uint64(hs.Vote))
	return binary.AppendUvarint(b, hs.Commit)
}

func appendSnap(b []byte, m *raftpb.SnapshotMeta) []byte {
	if m == nil {
		return binary.AppendUvarint(b, 0)
	}
	// Length-prefixed versioned encoding. The length is not known until
	// encoded; encode after a maximal varint gap and move it back.
	start := len(b)
	b = append(b, 0, 0, 0, 0, 0)
	b = append(b, raftpb.CodecVersion)
	b = m.AppendTo(b)
	n := len(b) - start - 5
	var lb [binary.MaxVarintLen64]byte
	ln := binary.PutUvarint(lb[:], uint64(n))
	copy(b[start:], lb[:ln])
	copy(b[start+ln:], b[start+5:])
	return b[:start+ln+n]
}

// appendEntries encodes ents (contiguous indexes).
func appendEntries(b []byte, ents []raftpb.Entry) []byte {
	b = binary.AppendUvarint(b, ents[0].Index)
	b = binary.AppendUvarint(b, uint64(len(ents)))
	for i := range ents {
		e := &ents[i]
		b = binary.AppendUvarint(b, e.Term)
		b = append(b, byte(e.Type))
		b = binary.AppendUvarint(b, uint64(len(e.Data)))
		b = append(b, e.Data...)
	}
	return b
}

func encodeUpdate(wb *wal.Batch, g raftpb.GroupID, hs *raftpb.HardState, snap *raftpb.SnapshotMeta, ents []raftpb.Entry) {
	wb.BeginChunk()
	b := binary.AppendUvarint(wb.Buf, uint64(g))
	var flags byte
	if hs != nil {
		flags |= flagHardState
	}
	if snap != nil {
		flags |= flagSnapshot
	}
	if len(ents) > 0 {
		flags |= flagEntries
	}
	b = append(b, opUpdate, flags)
	if hs != nil {
		b = appendHardState(b, hs)
	}
	if snap != nil {
		b = appendSnap(b, snap)
	}
	if len(ents) > 0 {
		b = appendEntries(b, ents)
	}
	wb.Buf = b
	wb.EndChunk()
}

func encodeCompact(wb *wal.Batch, g raftpb.GroupID, index, term uint64) {
	wb.BeginChunk()
	b := binary.AppendUvarint(wb.Buf, uint64(g))
	b = append(b, opCompact)
	b = binary.AppendUvarint(b, index)
	wb.Buf = binary.AppendUvarint(b, term)
	wb.EndChunk()
}

func encodeReset(wb *wal.Batch, g raftpb.GroupID, keep bool, hs *raftpb.HardState, snap *raftpb.SnapshotMeta) {
	wb.BeginChunk()
	b := binary.AppendUvarint(wb.Buf, uint64(g))
	b = append(b, opReset)
	if keep {
		b = append(b, 1)
	} else {
		b = append(b, 0)
	}
	b = appendHardState(b, hs)
	wb.Buf = appendSnap(b, snap)
	wb.EndChunk()
}

func encodeRemove(wb *wal.Batch, g raftpb.GroupID) {
	wb.BeginChunk()
	b := binary.AppendUvarint(wb.Buf, uint64(g))
	wb.Buf = append(b, opRemove)
	wb.EndChunk()
}

// encodeState writes a group's whole metadata: HardState, snapshot and log
// bounds. Replaying it clips the group's entries to [first, last].
func encodeState(wb *wal.Batch, g raftpb.GroupID, hs *raftpb.HardState, snap *raftpb.SnapshotMeta, first, compactTerm, last uint64) {
	wb.BeginChunk()
	b := binary.AppendUvarint(wb.Buf, uint64(g))
	b = append(b, opState)
	b = appendHardState(b, hs)
	b = appendSnap(b, snap)
	b = binary.AppendUvarint(b, first)
	b = binary.AppendUvarint(b, compactTerm)
	wb.Buf = binary.AppendUvarint(b, last)
	wb.EndChunk()
}

// dec is a minimal sticky-error reader.
type dec struct {
	b   []byte
	bad bool
}

func (d *dec) uvarint() uint64 {
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.bad, d.b = true, nil
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *dec) byte1() byte {
	if len(d.b) == 0 {
		d.bad = true
		return 0
	}
	v := d.b[0]
	d.b = d.b[1:]
	return v
}

func (d *dec) bytes() []byte {
	n := d.uvarint()
	if n > uint64(len(d.b)) {
		d.bad, d.b = true, nil
		return nil
	}
	v := d.b[:n:n]
	d.b = d.b[n:]
	return v
}

func (d *dec) hardState() raftpb.HardState {
	return raftpb.HardState{Term: d.uvarint(), Vote: raftpb.ReplicaID(d.uvarint()), Commit: d.uvarint()}
}

func decodeOp(p []byte) (op, error) {
	d := dec{b: p}
	o := op{group: raftpb.GroupID(d.uvarint()), kind: d.byte1()}
	switch o.kind {
	case opUpdate:
		o.flags = d.byte1()
		if o.flags&flagHardState != 0 {
			o.hs = d.hardState()
		}
		if o.flags&flagSnapshot != 0 {
			o.snap = d.bytes()
		}
		if o.flags&flagEntries != 0 {
			o.entFirst = d.uvarint()
			o.entCount = d.uvarint()
			o.ents = d.b
			d.b = nil
			if o.entCount == 0 || o.entCount > uint64(len(o.ents)) || o.entFirst == 0 {
				d.bad = true
			}
		}
	case opCompact:
		o.index, o.term = d.uvarint(), d.uvarint()
	case opReset:
		o.keep = d.byte1() == 1
		o.hs = d.hardState()
		o.snap = d.bytes()
	case opRemove:
	case opState:
		o.hs = d.hardState()
		o.snap = d.bytes()
		o.index, o.term, o.last = d.uvarint(), d.uvarint(), d.uvarint()
	default:
		d.bad = true
	}
	if d.bad || len(d.b) != 0 {
		return op{}, fmt.Errorf("%w: op %d", errBadChunk, o.kind)
	}
	return o, nil
}

// entryIter walks an encoded entries region.
type entryIter struct {
	d     dec
	index uint64
	left  uint64
}

func newEntryIter(o *op) entryIter {
	return entryIter{d: dec{b: o.ents}, index: o.entFirst, left: o.entCount}
}

// next decodes the next entry into e (Data aliases the chunk).
func (it *entryIter) next(e *raftpb.Entry) bool {
	if it.left == 0 {
		return false
	}
	e.Index = it.index
	e.Term = it.d.uvarint()
	e.Type = raftpb.EntryType(it.d.byte1())
	e.Data = it.d.bytes()
	if len(e.Data) == 0 {
		e.Data = nil
	}
	if it.d.bad {
		it.left = 0
		return false
	}
	it.index++
	it.left--
	return true
}

func (it *entryIter) err() error {
	if it.d.bad || (it.left == 0 && len(it.d.b) != 0) {
		return fmt.Errorf("%w: entries", errBadChunk)
	}
	return nil
}

func decodeSnap(b []byte) (raftpb.SnapshotMeta, error) {
	var m raftpb.SnapshotMeta
	if len(b) == 0 {
		return m, nil
	}
	err := m.Unmarshal(b)
	return m, err
}

// uvarintLen is the size of binary.AppendUvarint(nil, x).
func uvarintLen(x uint64) int { return (bits.Len64(x|1) + 6) / 7 }

// entriesLen is the size of appendEntries(nil, ents).
func entriesLen(ents []raftpb.Entry) int {
	n := uvarintLen(ents[0].Index) + uvarintLen(uint64(len(ents)))
	for i := range ents {
		e := &ents[i]
		n += uvarintLen(e.Term) + 1 + uvarintLen(uint64(len(e.Data))) + len(e.Data)
	}
	return n
}

// updateLen is the size of the chunk, header included, that encodeUpdate
// writes for an update without a snapshot. It lets SaveBatch reserve its
// bytes in the record before encoding them (see saveRegion).
func updateLen(g raftpb.GroupID, hs *raftpb.HardState, ents []raftpb.Entry) int {
	n := wal.ChunkHeaderSize + uvarintLen(uint64(g)) + 2 // op, flags
	if hs != nil {
		n += uvarintLen(hs.Term) + uvarintLen(uint64(hs.Vote)) + uvarintLen(hs.Commit)
	}
	if len(ents) > 0 {
		n += entriesLen(ents)
	}
	return n
}
