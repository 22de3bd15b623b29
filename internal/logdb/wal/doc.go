// Package wal is skiff's write-ahead log: numbered, preallocated segment
// files holding CRC32C-framed records, a manifest naming the live segments,
// and the recovery rules that tell a torn tail from a corrupted middle.
//
// Stage ② of the pipeline, below logdb: logdb encodes one batch of updates
// (many groups) as one record, wal writes it with one write and one fsync.
// The payload of a chunk is opaque here; logdb gives it meaning.
//
// # Files
//
//	<dir>/MANIFEST        the live segments (replaced by MANIFEST.tmp + rename)
//	<dir>/000001.wal      segment 1, preallocated (zero-filled) to SegmentSize
//	<dir>/000002.wal      ...
//
// A segment file is written zero-filled and fsynced before it is listed in
// the manifest, so appending a record overwrites already-allocated blocks
// and fdatasync has no metadata to commit (measured here: 1.3–2× faster than
// appending to a growing file). A *.wal file not listed in the manifest is
// a leftover and is deleted at Open.
//
// # Record layout
//
// Records start at offset 0 of a segment and follow each other without
// padding. All integers are little-endian.
//
//	record:
//	+--------+--------+---------+---------------+---------+------------------------+
//	| CRC    | Length | Segment | Kind | Count  | Seq     | chunks (Length bytes)  |
//	| 4 B    | 4 B    | 4 B     | 1 B  | 3 B    | 8 B     |                        |
//	+--------+--------+---------+---------------+---------+------------------------+
//	 0        4        8         12             16        24
//
//	chunk:
//	+--------+--------+------------------+
//	| CRC    | Length | payload          |
//	| 4 B    | 4 B    | Length bytes     |
//	+--------+--------+------------------+
//
//	record CRC = CRC32C(header[4:24] ‖ chunk₁.CRC ‖ chunk₂.CRC ‖ …)   (CRCs as 4 LE bytes)
//	chunk CRC  = CRC32C(payload)
//
// Segment is the low 32 bits of the segment number, so stale records left
// in a recycled file never parse as records of the new segment. Kind is 1
// (batch) or 2 (seal: the segment ends here; Count and Length are 0). Count
// is the number of chunks (at most 2²⁴−1). Seq numbers every record, seals
// included: consecutive records have consecutive Seqs, across segments too.
// Chaining the chunk CRCs into the record CRC verifies a whole record with
// one pass over its bytes, and still lets a reader verify a single chunk
// (one group's update) read by offset without reading the whole record.
//
// # Recovery
//
// The writer issues at most one record at a time and fsyncs it before the
// next, and it seals a segment (with a synced seal record) before writing to
// the next one. So after a crash at most one record — the last written — may
// be partly on disk, and it is in the last segment that holds records.
// Reading therefore ends at the first position that does not hold the next
// record (zeros, a bad CRC, a wrong Seq or Segment). That position is a torn
// tail, and is sealed by the next writer, unless a valid record with a
// higher Seq exists after it — later in that segment or in a later segment —
// which proves that data the writer had already synced was lost: that is a
// *CorruptionError{Segment, Offset} and Open fails. Nothing is ever silently
// skipped.
//
// A write that fails (ENOSPC, EIO) consumes nothing: the next record is
// written at the same offset with the same Seq, overwriting whatever the
// failed write left. A failed fsync is final: the WAL refuses further writes
// (ErrFailed) because the kernel may have dropped the dirty pages.
//
// # Manifest layout
//
//	+------------+---------+-------+------------------------+--------+
//	| "skiffman" | version | count | segment numbers (u64)… | CRC32C |
//	| 8 B        | 4 B     | 4 B   | 8 B × count            | 4 B    |
//	+------------+---------+-------+------------------------+--------+
//
// Imports: pebble/vfs only. Never raftpb, logdb or anything above.
package wal
