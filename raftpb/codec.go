package raftpb

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// CodecVersion is the version byte that starts every encoded top-level
// value. Decoders reject versions they do not know with ErrUnknownVersion.
const CodecVersion byte = 1

var (
	// ErrCorrupt: the bytes are not a valid encoding (truncated, overlong,
	// out-of-range enum, trailing garbage).
	ErrCorrupt = errors.New("raftpb: corrupt encoding")
	// ErrUnknownVersion: the encoding has a codec version this build does
	// not understand (written by a newer release).
	ErrUnknownVersion = errors.New("raftpb: unknown codec version")
)

// Minimum encoded sizes, used to bound slice counts by the input length.
const (
	minEntrySize        = 4  // term index type len(data)
	minMemberSize       = 2  // id len(addr)
	minFileSize         = 6  // len(name) size crc32c(4)
	minChangeSize       = 3  // type replica len(addr)
	minMessageSize      = 13 // type + 7 varints + reject + rejectHint + len(context) + count(entries) + hasSnapshot
	maxEncodedSliceSize = 1 << 31
)

// ---- encoding ----

func appendUvarint(b []byte, v uint64) []byte { return binary.AppendUvarint(b, v) }

func appendBytes(b, p []byte) []byte {
	b = binary.AppendUvarint(b, uint64(len(p)))
	return append(b, p...)
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func appendBool(b []byte, v bool) []byte {
	if v {
		return append(b, 1)
	}
	return append(b, 0)
}

// AppendTo appends e's encoding (without a version byte) to b.
func (e *Entry) AppendTo(b []byte) []byte {
	b = appendUvarint(b, e.Term)
	b = appendUvarint(b, e.Index)
	b = append(b, byte(e.Type))
	return appendBytes(b, e.Data)
}

// AppendTo appends hs's encoding (without a version byte) to b.
func (hs *HardState) AppendTo(b []byte) []byte {
	b = appendUvarint(b, hs.Term)
	b = appendUvarint(b, uint64(hs.Vote))
	return appendUvarint(b, hs.Commit)
}

func appendMembers(b []byte, ms []Member) []byte {
	b = appendUvarint(b, uint64(len(ms)))
	for i := range ms {
		b = appendUvarint(b, uint64(ms[i].ID))
		b = appendString(b, ms[i].Addr)
	}
	return b
}

// AppendTo appends m's encoding (without a version byte) to b.
func (m *Membership) AppendTo(b []byte) []byte {
	b = appendUvarint(b, m.ConfigChangeIndex)
	b = appendMembers(b, m.Voters)
	b = appendMembers(b, m.VotersOutgoing)
	b = appendMembers(b, m.NonVoters)
	b = appendUvarint(b, uint64(len(m.Removed)))
	for _, id := range m.Removed {
		b = appendUvarint(b, uint64(id))
	}
	return appendBool(b, m.AutoLeave)
}

// AppendTo appends m's encoding (without a version byte) to b.
func (m *SnapshotMeta) AppendTo(b []byte) []byte {
	b = appendUvarint(b, uint64(m.FormatVersion))
	b = appendUvarint(b, uint64(m.Group))
	b = appendUvarint(b, m.Index)
	b = appendUvarint(b, m.Term)
	b = m.Membership.AppendTo(b)
	b = appendUvarint(b, m.StateMachineType)
	b = appendUvarint(b, m.StateMachineVersion)
	b = appendBool(b, m.OnDisk)
	b = append(b, byte(m.Compression))
	b = appendUvarint(b, uint64(len(m.Files)))
	for i := range m.Files {
		f := &m.Files[i]
		b = appendString(b, f.Name)
		b = appendUvarint(b, f.Size)
		b = binary.LittleEndian.AppendUint32(b, f.CRC32C)
	}
	return b
}

// AppendTo appends cc's encoding (without a version byte) to b.
func (cc *ConfChange) AppendTo(b []byte) []byte {
	b = append(b, byte(cc.Transition))
	b = appendUvarint(b, uint64(len(cc.Changes)))
	for i := range cc.Changes {
		c := &cc.Changes[i]
		b = append(b, byte(c.Type))
		b = appendUvarint(b, uint64(c.Replica))
		b = appendString(b, c.Addr)
	}
	return appendBytes(b, cc.Context)
}

// AppendTo appends m's encoding (without a version byte) to b.
func (m *Message) AppendTo(b []byte) []byte {
	b = append(b, byte(m.Type))
	b = appendUvarint(b, uint64(m.Group))
	b = appendUvarint(b, uint64(m.From))
	b = appendUvarint(b, uint64(m.To))
	b = appendUvarint(b, m.Term)
	b = appendUvarint(b, m.LogTerm)
	b = appendUvarint(b, m.Index)
	b = appendUvarint(b, m.Commit)
	b = appendBool(b, m.Reject)
	b = appendUvarint(b, m.RejectHint)
	b = appendBytes(b, m.Context)
	b = appendUvarint(b, uint64(len(m.Entries)))
	for i := range m.Entries {
		b = m.Entries[i].AppendTo(b)
	}
	b = appendBool(b, m.Snapshot != nil)
	if m.Snapshot != nil {
		b = m.Snapshot.AppendTo(b)
	}
	return b
}

// AppendTo appends mb's encoding, starting with the version byte, to b.
func (mb *MessageBatch) AppendTo(b []byte) []byte {
	b = append(b, CodecVersion)
	b = appendUvarint(b, mb.DeploymentID)
	b = appendString(b, mb.SourceAddress)
	b = appendUvarint(b, uint64(len(mb.Messages)))
	for i := range mb.Messages {
		b = mb.Messages[i].AppendTo(b)
	}
	return b
}

// The Marshal methods return a fresh versioned encoding.

func (e *Entry) Marshal() []byte         { return e.AppendTo([]byte{CodecVersion}) }
func (hs *HardState) Marshal() []byte    { return hs.AppendTo([]byte{CodecVersion}) }
func (m *Membership) Marshal() []byte    { return m.AppendTo([]byte{CodecVersion}) }
func (m *SnapshotMeta) Marshal() []byte  { return m.AppendTo([]byte{CodecVersion}) }
func (cc *ConfChange) Marshal() []byte   { return cc.AppendTo([]byte{CodecVersion}) }
func (m *Message) Marshal() []byte       { return m.AppendTo([]byte{CodecVersion}) }
func (mb *MessageBatch) Marshal() []byte { return mb.AppendTo(nil) }

// ---- decoding ----

// Decoder reads unversioned values from a byte slice. The first error
// sticks: later reads return zero values, and Err reports it. Decoded byte
// slices alias the input; strings are copied.
type Decoder struct {
	b   []byte
	err error
}

// NewDecoder returns a Decoder over b.
func NewDecoder(b []byte) *Decoder { return &Decoder{b: b} }

// Err returns the first error met.
func (d *Decoder) Err() error { return d.err }

// Remaining returns the number of unread bytes.
func (d *Decoder) Remaining() int { return len(d.b) }

func (d *Decoder) fail(format string, args ...any) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: %s", ErrCorrupt, fmt.Sprintf(format, args...))
	}
	d.b = nil
}

func (d *Decoder) uvarint(field string) uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail("%s: bad varint", field)
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *Decoder) byte1(field string) byte {
	if d.err != nil {
		return 0
	}
	if len(d.b) == 0 {
		d.fail("%s: truncated", field)
		return 0
	}
	v := d.b[0]
	d.b = d.b[1:]
	return v
}

func (d *Decoder) boolean(field string) bool {
	switch v := d.byte1(field); v {
	case 0:
		return false
	case 1:
		return true
	default:
		d.fail("%s: bad bool %d", field, v)
		return false
	}
}

func (d *Decoder) uint32le(field string) uint32 {
	if d.err != nil {
		return 0
	}
	if len(d.b) < 4 {
		d.fail("%s: truncated", field)
		return 0
	}
	v := binary.LittleEndian.Uint32(d.b)
	d.b = d.b[4:]
	return v
}

func (d *Decoder) bytes(field string) []byte {
	n := d.uvarint(field)
	if d.err != nil {
		return nil
	}
	if n > uint64(len(d.b)) {
		d.fail("%s: length %d exceeds %d remaining bytes", field, n, len(d.b))
		return nil
	}
	if n == 0 {
		return nil
	}
	v := d.b[:n:n]
	d.b = d.b[n:]
	return v
}

func (d *Decoder) str(field string) string { return string(d.bytes(field)) }

// count reads a repeated-field count and checks that the remaining input
// could hold that many elements of at least minSize bytes each, so that no
// slice is allocated beyond what the input justifies.
func (d *Decoder) count(field string, minSize int) int {
	n := d.uvarint(field)
	if d.err != nil {
		return 0
	}
	if n > uint64(len(d.b)/minSize) || n > maxEncodedSliceSize {
		d.fail("%s: count %d exceeds what %d remaining bytes can hold", field, n, len(d.b))
		return 0
	}
	return int(n)
}

// Entry decodes one unversioned Entry.
func (d *Decoder) Entry(e *Entry) {
	e.Term = d.uvarint("entry.term")
	e.Index = d.uvarint("entry.index")
	t := d.byte1("entry.type")
	if d.err == nil && t >= byte(numEntryTypes) {
		d.fail("entry.type: unknown %d", t)
	}
	e.Type = EntryType(t)
	e.Data = d.bytes("entry.data")
}

// HardState decodes one unversioned HardState.
func (d *Decoder) HardState(hs *HardState) {
	hs.Term = d.uvarint("hardstate.term")
	hs.Vote = ReplicaID(d.uvarint("hardstate.vote"))
	hs.Commit = d.uvarint("hardstate.commit")
}

func (d *Decoder) members(field string) []Member {
	n := d.count(field, minMemberSize)
	if n == 0 {
		return nil
	}
	ms := make([]Member, n)
	for i := range ms {
		ms[i].ID = ReplicaID(d.uvarint(field))
		ms[i].Addr = d.str(field)
	}
	return ms
}

// Membership decodes one unversioned Membership.
func (d *Decoder) Membership(m *Membership) {
	m.ConfigChangeIndex = d.uvarint("membership.config_change_index")
	m.Voters = d.members("membership.voters")
	m.VotersOutgoing = d.members("membership.voters_outgoing")
	m.NonVoters = d.members("membership.non_voters")
	m.Removed = nil
	if n := d.count("membership.removed", 1); n > 0 {
		m.Removed = make([]ReplicaID, n)
		for i := range m.Removed {
			m.Removed[i] = ReplicaID(d.uvarint("membership.removed"))
		}
	}
	m.AutoLeave = d.boolean("membership.auto_leave")
}

// SnapshotMeta decodes one unversioned SnapshotMeta.
func (d *Decoder) SnapshotMeta(m *SnapshotMeta) {
	fv := d.uvarint("snapshot.format_version")
	if d.err == nil && fv > uint64(^uint32(0)) {
		d.fail("snapshot.format_version: %d out of range", fv)
	}
	m.FormatVersion = uint32(fv)
	m.Group = GroupID(d.uvarint("snapshot.group"))
	m.Index = d.uvarint("snapshot.index")
	m.Term = d.uvarint("snapshot.term")
	d.Membership(&m.Membership)
	m.StateMachineType = d.uvarint("snapshot.sm_type")
	m.StateMachineVersion = d.uvarint("snapshot.sm_version")
	m.OnDisk = d.boolean("snapshot.on_disk")
	c := d.byte1("snapshot.compression")
	if d.err == nil && c >= byte(numCompressions) {
		d.fail("snapshot.compression: unknown %d", c)
	}
	m.Compression = Compression(c)
	m.Files = nil
	if n := d.count("snapshot.files", minFileSize); n > 0 {
		m.Files = make([]SnapshotFile, n)
		for i := range m.Files {
			f := &m.Files[i]
			f.Name = d.str("snapshot.file.name")
			f.Size = d.uvarint("snapshot.file.size")
			f.CRC32C = d.uint32le("snapshot.file.crc32c")
		}
	}
}

// ConfChange decodes one unversioned ConfChange.
func (d *Decoder) ConfChange(cc *ConfChange) {
	t := d.byte1("confchange.transition")
	if d.err == nil && t >= byte(numTransitions) {
		d.fail("confchange.transition: unknown %d", t)
	}
	cc.Transition = ConfChangeTransition(t)
	cc.Changes = nil
	if n := d.count("confchange.changes", minChangeSize); n > 0 {
		cc.Changes = make([]ConfChangeSingle, n)
		for i := range cc.Changes {
			c := &cc.Changes[i]
			ct := d.byte1("confchange.type")
			if d.err == nil && ct >= byte(numConfChangeTypes) {
				d.fail("confchange.type: unknown %d", ct)
			}
			c.Type = ConfChangeType(ct)
			c.Replica = ReplicaID(d.uvarint("confchange.replica"))
			c.Addr = d.str("confchange.addr")
		}
	}
	cc.Context = d.bytes("confchange.context")
}

// Message decodes one unversioned Message.
func (d *Decoder) Message(m *Message) {
	t := d.byte1("message.type")
	if d.err == nil && t >= byte(numMessageTypes) {
		d.fail("message.type: unknown %d", t)
	}
	m.Type = MessageType(t)
	m.Group = GroupID(d.uvarint("message.group"))
	m.From = ReplicaID(d.uvarint("message.from"))
	m.To = ReplicaID(d.uvarint("message.to"))
	m.Term = d.uvarint("message.term")
	m.LogTerm = d.uvarint("message.log_term")
	m.Index = d.uvarint("message.index")
	m.Commit = d.uvarint("message.commit")
	m.Reject = d.boolean("message.reject")
	m.RejectHint = d.uvarint("message.reject_hint")
	m.Context = d.bytes("message.context")
	m.Entries = nil
	if n := d.count("message.entries", minEntrySize); n > 0 {
		m.Entries = make([]Entry, n)
		for i := range m.Entries {
			d.Entry(&m.Entries[i])
		}
	}
	m.Snapshot = nil
	if d.boolean("message.has_snapshot") {
		m.Snapshot = new(SnapshotMeta)
		d.SnapshotMeta(m.Snapshot)
	}
}

// unmarshal checks the version byte, runs dec over the rest and requires
// that it consumed everything.
func unmarshal(b []byte, what string, dec func(*Decoder)) error {
	if len(b) == 0 {
		return fmt.Errorf("%w: %s: empty", ErrCorrupt, what)
	}
	if b[0] != CodecVersion {
		return fmt.Errorf("%w: %s: version %d", ErrUnknownVersion, what, b[0])
	}
	d := Decoder{b: b[1:]}
	dec(&d)
	if d.err != nil {
		return fmt.Errorf("%s: %w", what, d.err)
	}
	if len(d.b) != 0 {
		return fmt.Errorf("%w: %s: %d trailing bytes", ErrCorrupt, what, len(d.b))
	}
	return nil
}

// The Unmarshal methods decode a versioned encoding produced by Marshal.
// Byte slices in the result alias b.

func (e *Entry) Unmarshal(b []byte) error {
	return unmarshal(b, "entry", func(d *Decoder) { d.Entry(e) })
}

func (hs *HardState) Unmarshal(b []byte) error {
	return unmarshal(b, "hardstate", func(d *Decoder) { d.HardState(hs) })
}

func (m *Membership) Unmarshal(b []byte) error {
	return unmarshal(b, "membership", func(d *Decoder) { d.Membership(m) })
}

func (m *SnapshotMeta) Unmarshal(b []byte) error {
	return unmarshal(b, "snapshot meta", func(d *Decoder) { d.SnapshotMeta(m) })
}

func (cc *ConfChange) Unmarshal(b []byte) error {
	return unmarshal(b, "confchange", func(d *Decoder) { d.ConfChange(cc) })
}

func (m *Message) Unmarshal(b []byte) error {
	return unmarshal(b, "message", func(d *Decoder) { d.Message(m) })
}

func (mb *MessageBatch) Unmarshal(b []byte) error {
	return unmarshal(b, "message batch", func(d *Decoder) {
		mb.DeploymentID = d.uvarint("batch.deployment_id")
		mb.SourceAddress = d.str("batch.source_address")
		mb.Messages = nil
		if n := d.count("batch.messages", minMessageSize); n > 0 {
			mb.Messages = make([]Message, n)
			for i := range mb.Messages {
				d.Message(&mb.Messages[i])
			}
		}
	})
}
