package wal

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"hash/crc32"
)

// HeaderSize is the size of a record header; ChunkHeaderSize of a chunk
// header (see the package doc for both layouts).
const (
	HeaderSize      = 24
	ChunkHeaderSize = 8
	// MaxChunks is the largest number of chunks in one record.
	MaxChunks = 1<<24 - 1
)

// Record kinds.
const (
	kindBatch = 1
	kindSeal  = 2
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// CorruptionError reports data that was acknowledged as durable and is not
// readable any more: a bad record before the tail of the log, or a chunk
// that fails its checksum when read back.
type CorruptionError struct {
	Segment uint64
	Offset  int64
	// Reason says what was found, for humans.
	Reason string
}

func (e *CorruptionError) Error() string {
	return fmt.Sprintf("wal: corruption in segment %06d at offset %d: %s", e.Segment, e.Offset, e.Reason)
}

// Batch builds one record in memory. The zero value is ready to use after
// Reset. A Batch is not safe for concurrent use.
//
//	b.Reset()
//	b.BeginChunk()
//	b.Buf = append(b.Buf, payload...)
//	off := b.EndChunk() // offset of the chunk within the record
type Batch struct {
	// Buf holds the record being built; append chunk payload to it between
	// BeginChunk and EndChunk and do not touch it otherwise.
	Buf   []byte
	count int
	open  int // offset of the open chunk's header, or -1
	// region: b is a part of another Batch's Buf returned by Reserve, to
	// be filled with chunks chunk (see Reserve and Filled).
	region bool
	chunks int
}

// Reserve appends n bytes to b to hold chunks chunks, and returns the
// region as a Batch of its own, empty, with room for exactly n bytes: the
// caller fills it with BeginChunk, appends and EndChunk, then checks
// Filled. Regions of one Batch may be filled concurrently with each other,
// with the owner of b holding no lock, because each writes only its own
// bytes of b.Buf — but nothing else may touch b until every region is
// filled (no Write, no append or Grow that could move b.Buf). n must fit
// in b's spare capacity (see Grow).
func (b *Batch) Reserve(n, chunks int) Batch {
	if b.open >= 0 {
		panic("wal: Reserve with a chunk open")
	}
	if !b.region && len(b.Buf) < HeaderSize {
		b.Reset()
	}
	start := len(b.Buf)
	if cap(b.Buf)-start < n {
		panic("wal: Reserve beyond the capacity of the batch")
	}
	b.Buf = b.Buf[:start+n]
	b.count += chunks
	return Batch{Buf: b.Buf[start : start : start+n], open: -1, region: true, chunks: chunks}
}

// Reserved returns the bytes and chunks a region from Reserve was reserved
// for. A region can itself be split by Reserve.
func (b *Batch) Reserved() (size, chunks int) { return cap(b.Buf), b.chunks }

// Filled reports whether a region from Reserve holds exactly the bytes and
// chunks reserved. An append past the reserved size would have moved the
// region's bytes to a new array (never into the neighbour's bytes, since
// the region's capacity ends where it does): then len exceeds it.
func (b *Batch) Filled() bool {
	return b.region && b.open < 0 && len(b.Buf) == cap(b.Buf) && b.count == b.chunks
}

// Spare returns how many bytes can be appended or reserved without moving
// Buf.
func (b *Batch) Spare() int { return cap(b.Buf) - len(b.Buf) }

// Grow makes room for n more bytes, moving Buf to a larger array if
// needed (at least doubling it, so that a batch grows in few copies).
func (b *Batch) Grow(n int) {
	if len(b.Buf) < HeaderSize {
		b.Reset()
	}
	if b.Spare() >= n {
		return
	}
	nb := make([]byte, len(b.Buf), max(len(b.Buf)+n, 2*cap(b.Buf)))
	copy(nb, b.Buf)
	b.Buf = nb
}

// Reset empties b, keeping its memory.
func (b *Batch) Reset() {
	if cap(b.Buf) < HeaderSize {
		b.Buf = make([]byte, HeaderSize, 4096)
	}
	b.Buf = b.Buf[:HeaderSize]
	clear(b.Buf)
	b.count = 0
	b.open = -1
}

// Empty reports whether b has no chunks.
func (b *Batch) Empty() bool { return b.count == 0 }

// Count returns the number of chunks in b.
func (b *Batch) Count() int { return b.count }

// Size returns the encoded size of the record.
func (b *Batch) Size() int { return len(b.Buf) }

// BeginChunk starts a chunk.
func (b *Batch) BeginChunk() {
	if b.open >= 0 {
		panic("wal: BeginChunk with a chunk open")
	}
	if !b.region && len(b.Buf) < HeaderSize {
		b.Reset()
	}
	b.open = len(b.Buf)
	b.Buf = append(b.Buf, 0, 0, 0, 0, 0, 0, 0, 0)
}

// EndChunk closes the open chunk and returns the offset of its header
// relative to the start of the record.
func (b *Batch) EndChunk() int {
	off := b.open
	if off < 0 {
		panic("wal: EndChunk without BeginChunk")
	}
	payload := b.Buf[off+ChunkHeaderSize:]
	binary.LittleEndian.PutUint32(b.Buf[off:], crc32.Checksum(payload, castagnoli))
	binary.LittleEndian.PutUint32(b.Buf[off+4:], uint32(len(payload)))
	b.count++
	b.open = -1
	return off
}

// CancelChunk drops the open chunk.
func (b *Batch) CancelChunk() {
	if b.open >= 0 {
		b.Buf = b.Buf[:b.open]
		b.open = -1
	}
}

// finish fills in the record header for segment seg and sequence seq.
func (b *Batch) finish(seg, seq uint64) {
	if b.open >= 0 {
		panic("wal: write with a chunk open")
	}
	if b.region {
		panic("wal: write of a reserved region instead of its batch")
	}
	h := b.Buf[:HeaderSize]
	binary.LittleEndian.PutUint32(h[4:], uint32(len(b.Buf)-HeaderSize))
	binary.LittleEndian.PutUint32(h[8:], uint32(seg))
	binary.LittleEndian.PutUint32(h[12:], uint32(kindBatch)|uint32(b.count)<<8)
	binary.LittleEndian.PutUint64(h[16:], seq)
	crc := crc32.Checksum(h[4:], castagnoli)
	for off := HeaderSize; off < len(b.Buf); {
		crc = crc32.Update(crc, castagnoli, b.Buf[off:off+4])
		off += ChunkHeaderSize + int(binary.LittleEndian.Uint32(b.Buf[off+4:]))
	}
	binary.LittleEndian.PutUint32(h, crc)
}

// appendSeal appends a seal record for segment seg with sequence seq.
func appendSeal(dst []byte, seg, seq uint64) []byte {
	var h [HeaderSize]byte
	binary.LittleEndian.PutUint32(h[8:], uint32(seg))
	binary.LittleEndian.PutUint32(h[12:], kindSeal)
	binary.LittleEndian.PutUint64(h[16:], seq)
	binary.LittleEndian.PutUint32(h[:], crc32.Checksum(h[4:], castagnoli))
	return append(dst, h[:]...)
}

// Record is one record read from a segment. Its slices alias the reader's
// buffer and are valid until the next call to Next.
type Record struct {
	Segment uint64
	Offset  int64 // of the record header within the segment
	Seq     uint64
	// Seal: the segment ends with this record; it has no chunks.
	Seal  bool
	Count int
	body  []byte
}

// Size returns the record's encoded size.
func (r *Record) Size() int64 { return int64(HeaderSize + len(r.body)) }

// Chunks calls fn for each chunk with the chunk's offset in the segment
// (of its header; pass it to ReadChunk) and its payload. It stops at the
// first error fn returns.
func (r *Record) Chunks(fn func(off int64, payload []byte) error) error {
	for off := 0; off < len(r.body); {
		n := int(binary.LittleEndian.Uint32(r.body[off+4:]))
		p := r.body[off+ChunkHeaderSize : off+ChunkHeaderSize+n]
		if err := fn(r.Offset+HeaderSize+int64(off), p); err != nil {
			return err
		}
		off += ChunkHeaderSize + n
	}
	return nil
}

// parse checks whether a valid record of segment seg starts at buf[0]. It
// returns the record (Segment and Offset unset) and true, or false. A valid
// record is never longer than buf.
func parse(buf []byte, seg uint64) (Record, bool) {
	if len(buf) < HeaderSize {
		return Record{}, false
	}
	h := buf[:HeaderSize]
	if binary.LittleEndian.Uint32(h[8:]) != uint32(seg) {
		return Record{}, false
	}
	length := uint64(binary.LittleEndian.Uint32(h[4:]))
	kc := binary.LittleEndian.Uint32(h[12:])
	kind, count := kc&0xff, int(kc>>8)
	switch kind {
	case kindBatch:
	case kindSeal:
		if length != 0 || count != 0 {
			return Record{}, false
		}
	default:
		return Record{}, false
	}
	if length > uint64(len(buf)-HeaderSize) || uint64(count)*ChunkHeaderSize > length {
		return Record{}, false
	}
	body := buf[HeaderSize : HeaderSize+int(length)]
	crc := crc32.Checksum(h[4:], castagnoli)
	off, n := 0, 0
	for off < len(body) {
		if len(body)-off < ChunkHeaderSize {
			return Record{}, false
		}
		cl := int(binary.LittleEndian.Uint32(body[off+4:]))
		if cl > len(body)-off-ChunkHeaderSize {
			return Record{}, false
		}
		want := binary.LittleEndian.Uint32(body[off:])
		if crc32.Checksum(body[off+ChunkHeaderSize:off+ChunkHeaderSize+cl], castagnoli) != want {
			return Record{}, false
		}
		crc = crc32.Update(crc, castagnoli, body[off:off+4])
		off += ChunkHeaderSize + cl
		n++
	}
	if n != count || crc != binary.LittleEndian.Uint32(h) {
		return Record{}, false
	}
	return Record{
		Seq:   binary.LittleEndian.Uint64(h[16:]),
		Seal:  kind == kindSeal,
		Count: count,
		body:  body,
	}, true
}

// Reader reads the records of one segment held in memory.
//
// Next returns records while each is valid and has the expected Seq (the
// first record may have any Seq unless SetNext was called). At the first
// position that does not hold the next record it stops: End then says where
// and whether the bytes there were all zero (an unused tail) or not (a torn
// write), unless a valid record with a higher Seq follows later in the
// segment, in which case Next returns a *CorruptionError.
type Reader struct {
	buf  []byte
	seg  uint64
	off  int64
	next uint64 // expected Seq; 0 = any
	done bool
	end  int64
	torn bool
	seal bool
}

// NewReader returns a reader over the contents buf of segment seg.
func NewReader(buf []byte, seg uint64) *Reader {
	return &Reader{buf: buf, seg: seg}
}

// SetNext sets the Seq the next record must have (0: any).
func (r *Reader) SetNext(seq uint64) { r.next = seq }

// NextSeq returns the Seq the next record must have (0 if still unknown).
func (r *Reader) NextSeq() uint64 { return r.next }

// End reports where reading stopped, whether the segment ended with a seal
// record, and whether the bytes at the end were a torn write (not zeros).
// Valid after Next returned ok=false and no error.
func (r *Reader) End() (off int64, sealed, torn bool) { return r.end, r.seal, r.torn }

// Next returns the next record. ok is false at the end of the segment;
// err is non-nil only for corruption.
func (r *Reader) Next() (rec Record, ok bool, err error) {
	if r.done {
		return Record{}, false, nil
	}
	rec, valid := parse(r.buf[r.off:], r.seg)
	if valid && (r.next == 0 || rec.Seq == r.next) {
		rec.Segment, rec.Offset = r.seg, r.off
		r.off += rec.Size()
		r.next = rec.Seq + 1
		if rec.Seal {
			r.done, r.seal, r.end = true, true, r.off
		}
		return rec, true, nil
	}
	r.done, r.end = true, r.off
	r.torn = !allZero(r.buf[r.off:min(int64(len(r.buf)), r.off+HeaderSize)])
	if off, found := ScanFrom(r.buf, r.seg, r.off+1, r.next); found {
		return Record{}, false, &CorruptionError{Segment: r.seg, Offset: r.off,
			Reason: fmt.Sprintf("unreadable record followed by a valid later record at offset %d", off)}
	}
	return Record{}, false, nil
}

// ScanFrom reports the offset of the first valid record of segment seg at
// or after from whose Seq is at least minSeq (any Seq when minSeq is 0).
// It is what tells a torn tail (nothing valid follows) from lost data.
func ScanFrom(buf []byte, seg uint64, from int64, minSeq uint64) (int64, bool) {
	var tag [4]byte
	binary.LittleEndian.PutUint32(tag[:], uint32(seg))
	for pos := from + 8; pos+4 <= int64(len(buf)); {
		i := bytes.Index(buf[pos:], tag[:])
		if i < 0 {
			return 0, false
		}
		start := pos + int64(i) - 8
		if rec, ok := parse(buf[start:], seg); ok && rec.Seq >= minSeq {
			return start, true
		}
		pos += int64(i) + 1
	}
	return 0, false
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// Truncate drops the chunks added since b had size bytes and count chunks
// (undoing a caller's partial encoding).
func (b *Batch) Truncate(size, count int) {
	b.Buf = b.Buf[:size]
	b.count = count
	b.open = -1
}

// ChunkPayload returns the payload of the chunk whose header starts p (as
// built by a Batch).
func ChunkPayload(p []byte) []byte {
	n := int(binary.LittleEndian.Uint32(p[4:]))
	return p[ChunkHeaderSize : ChunkHeaderSize+n]
}
