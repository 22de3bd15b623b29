package raftpb

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// NB: nil and empty slices are the same value to the codec. A byte string or
// repeated field of length 0 is encoded as a zero count whether the Go value
// was nil or empty, and decoders always return nil for it. The sample values
// below therefore use nil for every empty slice, so that reflect.DeepEqual
// can compare a decoded value with the original; TestNilAndEmptyEncodeAlike
// pins the equivalence down. Callers must test len(x) == 0, never x == nil.

var update = flag.Bool("update", false, "rewrite testdata/golden.txt from the current encoder")

const maxU64 = math.MaxUint64

// codec is what every top-level raftpb value offers.
type codec[T any] interface {
	*T
	Marshal() []byte
	Unmarshal([]byte) error
}

// roundTrip encodes v, decodes the bytes into a fresh T and checks that the
// result equals v and re-encodes to the same bytes.
func roundTrip[T any, P codec[T]](t *testing.T, name string, v T) {
	t.Helper()
	b := P(&v).Marshal()
	if len(b) == 0 || b[0] != CodecVersion {
		t.Fatalf("%s: encoding %x does not start with version %d", name, b, CodecVersion)
	}
	var got T
	if err := P(&got).Unmarshal(b); err != nil {
		t.Fatalf("%s: Unmarshal(%x): %v", name, b, err)
	}
	if !reflect.DeepEqual(got, v) {
		t.Fatalf("%s: round trip changed the value\n got: %+v\nwant: %+v", name, got, v)
	}
	if b2 := P(&got).Marshal(); !bytes.Equal(b2, b) {
		t.Fatalf("%s: re-encoding differs\n got: %x\nwant: %x", name, b2, b)
	}
}

func sampleEntries() map[string]Entry {
	cc := sampleConfChanges()["joint-explicit"]
	return map[string]Entry{
		"zero":    {},
		"noop":    {Term: 1, Index: 1, Type: EntryNoOp},
		"max":     {Term: maxU64, Index: maxU64, Type: EntrySession, Data: []byte{0, 0xff, 0x80, 0x7f}},
		"conf":    {Term: 7, Index: 300, Type: EntryConfigChange, Data: cc.Marshal()},
		"normal":  {Term: 2, Index: 1 << 35, Type: EntryNormal, Data: []byte("put k v")},
		"64KiB":   {Term: 3, Index: 4, Data: bytes.Repeat([]byte{0xa5}, 64<<10)},
		"varint2": {Term: 127, Index: 128, Data: []byte{1}},
	}
}

func sampleHardStates() map[string]HardState {
	return map[string]HardState{
		"zero":   {},
		"max":    {Term: maxU64, Vote: ReplicaID(maxU64), Commit: maxU64},
		"normal": {Term: 5, Vote: 2, Commit: 100},
	}
}

func sampleMemberships() map[string]Membership {
	return map[string]Membership{
		"zero": {},
		"simple": {
			ConfigChangeIndex: 12,
			Voters:            []Member{{1, "10.0.0.1:7000"}, {2, "10.0.0.2:7000"}, {3, "10.0.0.3:7000"}},
		},
		"joint-max": {
			ConfigChangeIndex: maxU64,
			Voters:            []Member{{1, "a:1"}, {ReplicaID(maxU64), ""}},
			VotersOutgoing:    []Member{{1, "a:1"}, {2, "héllo\x00wörld"}},
			NonVoters:         []Member{{9, strings.Repeat("x", 300)}},
			Removed:           []ReplicaID{3, 4, ReplicaID(maxU64)},
			AutoLeave:         true,
		},
	}
}

func sampleSnapshotMetas() map[string]SnapshotMeta {
	return map[string]SnapshotMeta{
		"zero": {},
		"log-only": {
			FormatVersion: SnapshotFormatVersion, Group: 1, Index: 90, Term: 3,
			Membership: sampleMemberships()["simple"], OnDisk: true,
		},
		"max": {
			FormatVersion:       math.MaxUint32,
			Group:               GroupID(maxU64),
			Index:               maxU64,
			Term:                maxU64,
			Membership:          sampleMemberships()["joint-max"],
			StateMachineType:    maxU64,
			StateMachineVersion: maxU64,
			OnDisk:              true,
			Compression:         Zstd,
			Files: []SnapshotFile{
				{Name: "data", Size: maxU64, CRC32C: math.MaxUint32},
				{Name: "000001.sst", Size: 0, CRC32C: 0},
				{Name: "", Size: 1, CRC32C: 0xdeadbeef},
			},
		},
		"snappy": {FormatVersion: 1, Group: 2, Index: 1, Term: 1, Compression: Snappy,
			Files: []SnapshotFile{{Name: "data", Size: 4096, CRC32C: 42}}},
	}
}

func sampleConfChanges() map[string]ConfChange {
	return map[string]ConfChange{
		"leave-joint": {},
		"single":      {Changes: []ConfChangeSingle{{Type: AddNonVoter, Replica: 4, Addr: "10.0.0.4:7000"}}},
		"joint-explicit": {
			Transition: TransitionJointExplicit,
			Changes: []ConfChangeSingle{
				{Type: AddVoter, Replica: 4, Addr: "d:4"},
				{Type: RemoveReplica, Replica: ReplicaID(maxU64)},
				{Type: AddNonVoter, Replica: 5, Addr: "e:5"},
			},
			Context: []byte("ctx"),
		},
		"implicit": {Transition: TransitionJointImplicit,
			Changes: []ConfChangeSingle{{Type: AddVoter, Replica: 1}}},
	}
}

func sampleMessages() map[string]Message {
	metas := sampleSnapshotMetas()
	maxMeta := metas["max"]
	zeroMeta := metas["zero"]
	ents := sampleEntries()
	return map[string]Message{
		"zero":      {},
		"heartbeat": {Type: MsgHeartbeat, Group: 1, From: 1, To: 2, Term: 5, Commit: 10},
		"replicate": {Type: MsgReplicate, Group: 7, From: 1, To: 3, Term: 4, LogTerm: 3, Index: 99, Commit: 98,
			Entries: []Entry{ents["normal"], ents["conf"], ents["noop"], ents["zero"]}},
		"reject": {Type: MsgReplicateResp, Group: 7, From: 3, To: 1, Term: 4, LogTerm: 2, Index: 99,
			Reject: true, RejectHint: 57},
		"install": {Type: MsgInstallSnapshot, Group: GroupID(maxU64), From: 1, To: 2, Term: maxU64,
			Snapshot: &maxMeta},
		// A present but empty snapshot must stay present: the pointer is
		// encoded by a flag, not by the meta being non-zero.
		"install-zero-meta": {Type: MsgInstallSnapshot, Snapshot: &zeroMeta},
		"read-index":        {Type: MsgReadIndex, Group: 1, From: 2, To: 1, Context: []byte{1, 2, 3, 4, 5, 6, 7, 8}},
		"propose":           {Type: MsgPropose, Group: 1, From: 2, To: 1, Entries: []Entry{ents["max"], ents["64KiB"]}},
		"max": {Type: MsgPropose, Group: GroupID(maxU64), From: ReplicaID(maxU64), To: ReplicaID(maxU64),
			Term: maxU64, LogTerm: maxU64, Index: maxU64, Commit: maxU64, Reject: true, RejectHint: maxU64,
			Context: []byte{0xff}, Entries: []Entry{ents["max"]}, Snapshot: &maxMeta},
	}
}

func sampleBatches() map[string]MessageBatch {
	msgs := sampleMessages()
	var all []Message
	for _, name := range sortedKeys(msgs) {
		all = append(all, msgs[name])
	}
	return map[string]MessageBatch{
		"zero": {},
		// One small heartbeat is the most common batch on the wire.
		"one-heartbeat": {DeploymentID: 1, SourceAddress: "10.0.0.1:7000", Messages: []Message{msgs["heartbeat"]}},
		"all":           {DeploymentID: maxU64, SourceAddress: "host-a:7000", Messages: all},
		// Minimum-size messages only: every count check is at its limit.
		"1000-zero": {Messages: make([]Message, 1000)},
	}
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	// Insertion sort keeps this file free of a sort import for 10 keys.
	for i := 1; i < len(keys); i++ {
		for j := i; j > 0 && keys[j] < keys[j-1]; j-- {
			keys[j], keys[j-1] = keys[j-1], keys[j]
		}
	}
	return keys
}

func TestRoundTrip(t *testing.T) {
	for name, v := range sampleEntries() {
		roundTrip(t, "entry/"+name, v)
	}
	for name, v := range sampleHardStates() {
		roundTrip(t, "hardstate/"+name, v)
	}
	for name, v := range sampleMemberships() {
		roundTrip(t, "membership/"+name, v)
	}
	for name, v := range sampleSnapshotMetas() {
		roundTrip(t, "snapshotmeta/"+name, v)
	}
	for name, v := range sampleConfChanges() {
		roundTrip(t, "confchange/"+name, v)
	}
	for name, v := range sampleMessages() {
		roundTrip(t, "message/"+name, v)
	}
	for name, v := range sampleBatches() {
		roundTrip(t, "batch/"+name, v)
	}
}

// TestUnmarshalOverwrites checks that decoding into a used value replaces
// every field, so that callers may reuse a Message or MessageBatch.
func TestUnmarshalOverwrites(t *testing.T) {
	dirty := sampleMessages()["max"]
	want := sampleMessages()["heartbeat"]
	if err := dirty.Unmarshal(want.Marshal()); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(dirty, want) {
		t.Fatalf("decoding into a used Message left old fields:\n got: %+v\nwant: %+v", dirty, want)
	}
	dirtyBatch := sampleBatches()["all"]
	wantBatch := sampleBatches()["zero"]
	if err := dirtyBatch.Unmarshal(wantBatch.Marshal()); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(dirtyBatch, wantBatch) {
		t.Fatalf("decoding into a used MessageBatch left old fields: %+v", dirtyBatch)
	}
	dirtyMeta := sampleSnapshotMetas()["max"]
	if err := dirtyMeta.Unmarshal((&SnapshotMeta{}).Marshal()); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(dirtyMeta, SnapshotMeta{}) {
		t.Fatalf("decoding into a used SnapshotMeta left old fields: %+v", dirtyMeta)
	}
}

// TestNilAndEmptyEncodeAlike pins the documented equivalence: an empty
// slice and a nil slice have one encoding, and decoding yields nil.
func TestNilAndEmptyEncodeAlike(t *testing.T) {
	emptyMsg := Message{Context: []byte{}, Entries: []Entry{}}
	if a, b := emptyMsg.Marshal(), (&Message{}).Marshal(); !bytes.Equal(a, b) {
		t.Fatalf("empty and nil slices encode differently: %x vs %x", a, b)
	}
	emptyBatch := MessageBatch{Messages: []Message{{Context: []byte{}, Entries: []Entry{{Data: []byte{}}}}}}
	var got MessageBatch
	if err := got.Unmarshal(emptyBatch.Marshal()); err != nil {
		t.Fatal(err)
	}
	m := got.Messages[0]
	if m.Context != nil || m.Entries[0].Data != nil {
		t.Fatalf("decoded empty byte strings are not nil: %+v", m)
	}
	emptyMeta := SnapshotMeta{Files: []SnapshotFile{}, Membership: Membership{
		Voters: []Member{}, VotersOutgoing: []Member{}, NonVoters: []Member{}, Removed: []ReplicaID{}}}
	var meta SnapshotMeta
	if err := meta.Unmarshal(emptyMeta.Marshal()); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(meta, SnapshotMeta{}) {
		t.Fatalf("decoded empty repeated fields are not nil: %+v", meta)
	}
	emptyCC := ConfChange{Changes: []ConfChangeSingle{}, Context: []byte{}}
	var cc ConfChange
	if err := cc.Unmarshal(emptyCC.Marshal()); err != nil {
		t.Fatal(err)
	}
	if cc.Changes != nil || cc.Context != nil || !cc.LeaveJoint() {
		t.Fatalf("decoded empty ConfChange: %+v", cc)
	}
}

// TestDecodedBytesAreCapped: decoded byte slices alias the input (documented)
// but their capacity ends at their length, so appending to one cannot
// overwrite the bytes of the next field.
func TestDecodedBytesAreCapped(t *testing.T) {
	m := Message{Context: []byte("ctx"), Entries: []Entry{{Data: []byte("one")}, {Data: []byte("two")}}}
	b := m.Marshal()
	var got Message
	if err := got.Unmarshal(b); err != nil {
		t.Fatal(err)
	}
	for i, p := range [][]byte{got.Context, got.Entries[0].Data, got.Entries[1].Data} {
		if cap(p) != len(p) {
			t.Fatalf("slice %d: cap %d != len %d", i, cap(p), len(p))
		}
	}
	_ = append(got.Entries[0].Data, 'X')
	if string(got.Entries[1].Data) != "two" {
		t.Fatalf("append to one entry's data changed the next: %q", got.Entries[1].Data)
	}
	// Aliasing is the contract: a change to the input shows in the value.
	b[bytes.Index(b, []byte("two"))] = 'T'
	if string(got.Entries[1].Data) != "Two" {
		t.Fatalf("entry data does not alias the input: %q", got.Entries[1].Data)
	}
}

// TestStringsAreCopied: unlike byte slices, strings do not alias the input.
func TestStringsAreCopied(t *testing.T) {
	mb := MessageBatch{SourceAddress: "abc"}
	b := mb.Marshal()
	var got MessageBatch
	if err := got.Unmarshal(b); err != nil {
		t.Fatal(err)
	}
	b[bytes.Index(b, []byte("abc"))] = 'X'
	if got.SourceAddress != "abc" {
		t.Fatalf("string aliases the input: %q", got.SourceAddress)
	}
}

// TestDecoderSequence: the unversioned Decoder reads values back to back
// (how a storage record may hold several), and its first error sticks.
func TestDecoderSequence(t *testing.T) {
	e1 := Entry{Term: 1, Index: 2, Data: []byte("a")}
	hs := HardState{Term: 3, Vote: 1, Commit: 2}
	e2 := Entry{Term: maxU64, Index: 3, Type: EntryNoOp}
	b := e2.AppendTo(hs.AppendTo(e1.AppendTo(nil)))

	d := NewDecoder(b)
	var g1, g2 Entry
	var ghs HardState
	d.Entry(&g1)
	d.HardState(&ghs)
	d.Entry(&g2)
	if err := d.Err(); err != nil || d.Remaining() != 0 {
		t.Fatalf("err=%v remaining=%d", err, d.Remaining())
	}
	if !reflect.DeepEqual([]any{g1, ghs, g2}, []any{e1, hs, e2}) {
		t.Fatalf("decoded %+v %+v %+v", g1, ghs, g2)
	}

	d = NewDecoder(b[:3])
	d.Entry(&g1)
	d.HardState(&ghs)
	if !errors.Is(d.Err(), ErrCorrupt) {
		t.Fatalf("truncated sequence: err = %v, want ErrCorrupt", d.Err())
	}
	if ghs != (HardState{}) || d.Remaining() != 0 {
		t.Fatalf("reads after an error must yield zero values: %+v, remaining %d", ghs, d.Remaining())
	}
}

// ---- rejection ----

// allEncodings returns a valid versioned encoding of every sample, with a
// function that decodes bytes as the same type.
func allEncodings() []struct {
	name   string
	b      []byte
	decode func([]byte) error
} {
	type enc = struct {
		name   string
		b      []byte
		decode func([]byte) error
	}
	var out []enc
	add := func(name string, b []byte, decode func([]byte) error) {
		out = append(out, enc{name, b, decode})
	}
	for _, n := range sortedKeys(sampleEntries()) {
		v := sampleEntries()[n]
		add("entry/"+n, v.Marshal(), func(b []byte) error { return new(Entry).Unmarshal(b) })
	}
	for _, n := range sortedKeys(sampleHardStates()) {
		v := sampleHardStates()[n]
		add("hardstate/"+n, v.Marshal(), func(b []byte) error { return new(HardState).Unmarshal(b) })
	}
	for _, n := range sortedKeys(sampleMemberships()) {
		v := sampleMemberships()[n]
		add("membership/"+n, v.Marshal(), func(b []byte) error { return new(Membership).Unmarshal(b) })
	}
	for _, n := range sortedKeys(sampleSnapshotMetas()) {
		v := sampleSnapshotMetas()[n]
		add("snapshotmeta/"+n, v.Marshal(), func(b []byte) error { return new(SnapshotMeta).Unmarshal(b) })
	}
	for _, n := range sortedKeys(sampleConfChanges()) {
		v := sampleConfChanges()[n]
		add("confchange/"+n, v.Marshal(), func(b []byte) error { return new(ConfChange).Unmarshal(b) })
	}
	for _, n := range sortedKeys(sampleMessages()) {
		v := sampleMessages()[n]
		add("message/"+n, v.Marshal(), func(b []byte) error { return new(Message).Unmarshal(b) })
	}
	for _, n := range sortedKeys(sampleBatches()) {
		v := sampleBatches()[n]
		add("batch/"+n, v.Marshal(), func(b []byte) error { return new(MessageBatch).Unmarshal(b) })
	}
	return out
}

func TestRejectUnknownVersion(t *testing.T) {
	for _, e := range allEncodings() {
		for _, v := range []byte{0, CodecVersion + 1, 0xff} {
			b := append([]byte{v}, e.b[1:]...)
			err := e.decode(b)
			if !errors.Is(err, ErrUnknownVersion) || errors.Is(err, ErrCorrupt) {
				t.Errorf("%s with version %d: err = %v, want only ErrUnknownVersion", e.name, v, err)
			}
		}
	}
}

func TestRejectTruncation(t *testing.T) {
	for _, e := range allEncodings() {
		if len(e.b) > 4096 {
			// Big payloads add nothing here: cut in the header, then in
			// the payload, then near the end.
			for _, n := range []int{0, 1, 2, 3, 10, 100, len(e.b) / 2, len(e.b) - 2, len(e.b) - 1} {
				if err := e.decode(e.b[:n]); !errors.Is(err, ErrCorrupt) {
					t.Errorf("%s truncated to %d of %d bytes: err = %v, want ErrCorrupt", e.name, n, len(e.b), err)
				}
			}
			continue
		}
		for n := range len(e.b) {
			if err := e.decode(e.b[:n]); !errors.Is(err, ErrCorrupt) {
				t.Errorf("%s truncated to %d of %d bytes: err = %v, want ErrCorrupt", e.name, n, len(e.b), err)
			}
		}
	}
}

func TestRejectTrailingBytes(t *testing.T) {
	for _, e := range allEncodings() {
		for _, tail := range [][]byte{{0}, {1}, {0xff, 0xff}} {
			b := append(append([]byte(nil), e.b...), tail...)
			if err := e.decode(b); !errors.Is(err, ErrCorrupt) {
				t.Errorf("%s + %x: err = %v, want ErrCorrupt", e.name, tail, err)
			}
		}
	}
}

// w builds encodings field by field for the hand-made rejection cases.
type w []byte

func (b w) u(v uint64) w    { return binary.AppendUvarint(b, v) }
func (b w) c(v byte) w      { return append(b, v) }
func (b w) s(s string) w    { return append(b.u(uint64(len(s))), s...) }
func (b w) raw(p ...byte) w { return append(b, p...) }
func (b w) zeros(n int) w   { return append(b, make([]byte, n)...) }
func version() w            { return w{CodecVersion} }
func (b w) membership0() w  { return b.zeros(6) } // ccIndex, 3 member counts, removed, autoLeave
func (b w) msgHeader(t byte) w {
	// type group from to term logTerm index commit reject rejectHint context
	return b.c(t).zeros(7).c(0).u(0).u(0)
}

func TestRejectMalformed(t *testing.T) {
	entry := func(b []byte) error { return new(Entry).Unmarshal(b) }
	meta := func(b []byte) error { return new(SnapshotMeta).Unmarshal(b) }
	cc := func(b []byte) error { return new(ConfChange).Unmarshal(b) }
	msg := func(b []byte) error { return new(Message).Unmarshal(b) }
	batch := func(b []byte) error { return new(MessageBatch).Unmarshal(b) }
	membership := func(b []byte) error { return new(Membership).Unmarshal(b) }
	hardstate := func(b []byte) error { return new(HardState).Unmarshal(b) }
	metaPrefix := version().zeros(4).membership0().zeros(3) // ... onDisk
	huge := uint64(1) << 62

	cases := []struct {
		name   string
		decode func([]byte) error
		b      []byte
	}{
		{"empty input", entry, nil},
		// Out-of-range enums and bools.
		{"entry type", entry, version().zeros(2).c(byte(numEntryTypes)).u(0)},
		{"entry type 0xff", entry, version().zeros(2).c(0xff).u(0)},
		{"confchange transition", cc, version().c(byte(numTransitions)).u(0).u(0)},
		{"confchange type", cc, version().c(0).u(1).c(byte(numConfChangeTypes)).u(1).s("").u(0)},
		{"message type", msg, version().msgHeader(byte(numMessageTypes)).u(0).c(0)},
		{"message reject bool", msg, version().c(0).zeros(7).c(2).u(0).u(0).u(0).c(0)},
		{"message has_snapshot bool", msg, version().msgHeader(0).u(0).c(2)},
		{"membership auto_leave bool", membership, version().zeros(5).c(2)},
		{"snapshot on_disk bool", meta, version().zeros(4).membership0().zeros(2).c(2).c(0).u(0)},
		{"snapshot compression", meta, metaPrefix.c(byte(numCompressions)).u(0)},
		{"snapshot format_version > uint32", meta,
			version().u(math.MaxUint32 + 1).zeros(3).membership0().zeros(4).u(0)},
		// Varints that overflow uint64.
		{"overflowing varint", hardstate, version().raw(0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02).zeros(2)},
		{"11-byte varint", hardstate, version().raw(0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00).zeros(2)},
		// Lengths and counts larger than the input.
		{"entry data length", entry, version().zeros(3).u(5).raw(1, 2, 3)},
		{"entry data length huge", entry, version().zeros(3).u(huge)},
		{"batch address length", batch, version().u(0).u(100).s("ab")},
		{"batch messages count", batch, version().u(0).s("").u(2).msgHeader(0).u(0).c(0)},
		{"batch messages count huge", batch, version().u(0).s("").u(huge)},
		{"message context length", msg, version().c(0).zeros(7).c(0).u(0).u(9).raw(1).u(0).c(0)},
		{"message entries count", msg, version().msgHeader(0).u(2).zeros(4).c(0)},
		{"message entries count huge", msg, version().msgHeader(0).u(huge)},
		{"membership voters count", membership, version().u(0).u(3).u(1).s("a").zeros(4)},
		{"membership voters count huge", membership, version().u(0).u(huge)},
		{"membership outgoing count", membership, version().u(0).u(0).u(huge)},
		{"membership non_voters count", membership, version().u(0).u(0).u(0).u(huge)},
		{"membership removed count", membership, version().u(0).u(0).u(0).u(0).u(3).u(1).u(2).c(0)},
		{"membership removed count huge", membership, version().u(0).u(0).u(0).u(0).u(huge)},
		{"snapshot files count", meta, metaPrefix.c(0).u(2).s("data").u(1).zeros(4)},
		{"snapshot files count huge", meta, metaPrefix.c(0).u(huge)},
		{"snapshot file name length", meta, metaPrefix.c(0).u(1).u(50).raw('a').u(1).zeros(4)},
		{"snapshot file crc truncated", meta, metaPrefix.c(0).u(1).s("f").u(1).zeros(3)},
		{"confchange changes count", cc, version().c(0).u(2).c(0).u(1).s("").u(0)},
		{"confchange changes count huge", cc, version().c(0).u(huge)},
		{"confchange context length", cc, version().c(0).u(0).u(4).raw(1)},
		{"message snapshot truncated", msg, version().msgHeader(0).u(0).c(1).zeros(5)},
	}
	for _, tc := range cases {
		if err := tc.decode(tc.b); !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s (%x): err = %v, want ErrCorrupt", tc.name, tc.b, err)
		}
	}

	// The builders above must produce valid encodings when the defect is
	// removed; otherwise a case could pass for the wrong reason.
	valid := []struct {
		name   string
		decode func([]byte) error
		b      []byte
	}{
		{"entry", entry, version().zeros(2).c(byte(numEntryTypes) - 1).u(0)},
		{"confchange", cc, version().c(byte(numTransitions) - 1).u(1).c(byte(numConfChangeTypes) - 1).u(1).s("").u(0)},
		{"message", msg, version().msgHeader(byte(numMessageTypes) - 1).u(0).c(0)},
		{"message with snapshot", msg, version().msgHeader(0).u(0).c(1).zeros(4).membership0().zeros(5)},
		{"snapshot", meta, metaPrefix.c(byte(numCompressions) - 1).u(1).s("data").u(1).zeros(4)},
		{"snapshot max format_version", meta, version().u(math.MaxUint32).zeros(3).membership0().zeros(4).u(0)},
		{"membership", membership, version().u(0).u(1).u(1).s("a").u(0).u(0).u(2).u(1).u(2).c(1)},
		{"batch", batch, version().u(0).s("").u(1).msgHeader(0).u(0).c(0)},
		{"hardstate 10-byte varint", hardstate, version().raw(0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01).zeros(2)},
	}
	for _, tc := range valid {
		if err := tc.decode(tc.b); err != nil {
			t.Errorf("control %s (%x): %v", tc.name, tc.b, err)
		}
	}
}

// TestMinSizes checks each min*Size constant against the encoder: it must
// equal the encoded size of the smallest element. Larger would reject valid
// input; smaller would weaken the allocation bound that the count checks give.
func TestMinSizes(t *testing.T) {
	grow := func(with, without []byte) int { return len(with) - len(without) }
	cases := []struct {
		name     string
		constant int
		measured int
	}{
		{"minEntrySize", minEntrySize, len((&Entry{}).AppendTo(nil))},
		{"minMemberSize", minMemberSize,
			grow((&Membership{Voters: make([]Member, 1)}).AppendTo(nil), (&Membership{}).AppendTo(nil))},
		{"minFileSize", minFileSize,
			grow((&SnapshotMeta{Files: make([]SnapshotFile, 1)}).AppendTo(nil), (&SnapshotMeta{}).AppendTo(nil))},
		{"minChangeSize", minChangeSize,
			grow((&ConfChange{Changes: make([]ConfChangeSingle, 1)}).AppendTo(nil), (&ConfChange{}).AppendTo(nil))},
		{"minMessageSize", minMessageSize, len((&Message{}).AppendTo(nil))},
		{"removed element", 1,
			grow((&Membership{Removed: make([]ReplicaID, 1)}).AppendTo(nil), (&Membership{}).AppendTo(nil))},
	}
	for _, c := range cases {
		if c.constant != c.measured {
			t.Errorf("%s = %d, but the smallest element encodes to %d bytes", c.name, c.constant, c.measured)
		}
	}
}

// ---- golden encodings ----

// goldenValues are the values whose exact bytes are pinned in
// testdata/golden.txt. A diff there means the format changed: bump
// CodecVersion and keep decoding the old version, or revert.
func goldenValues() map[string]interface{ Marshal() []byte } {
	out := map[string]interface{ Marshal() []byte }{}
	for n, v := range sampleEntries() {
		if len(v.Data) <= 64 {
			out["entry/"+n] = &v
		}
	}
	for n, v := range sampleHardStates() {
		out["hardstate/"+n] = &v
	}
	for n, v := range sampleMemberships() {
		if n != "joint-max" { // its 300-byte address would drown the file
			out["membership/"+n] = &v
		}
	}
	for n, v := range sampleSnapshotMetas() {
		if n != "max" {
			out["snapshotmeta/"+n] = &v
		}
	}
	for n, v := range sampleConfChanges() {
		out["confchange/"+n] = &v
	}
	for _, n := range []string{"zero", "heartbeat", "reject", "read-index", "install-zero-meta"} {
		v := sampleMessages()[n]
		out["message/"+n] = &v
	}
	b := sampleBatches()["one-heartbeat"]
	out["batch/one-heartbeat"] = &b
	return out
}

func TestGolden(t *testing.T) {
	path := filepath.Join("testdata", "golden.txt")
	values := goldenValues()
	if *update {
		var buf bytes.Buffer
		buf.WriteString("# Exact encodings of raftpb values (codec version 1), one \"name hex\" per line.\n")
		buf.WriteString("# Written by `go test ./raftpb -run TestGolden -update`; a diff here is a format change.\n")
		for _, n := range sortedKeys(values) {
			fmt.Fprintf(&buf, "%s %x\n", n, values[n].Marshal())
		}
		if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	seen := map[string]bool{}
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		name, hexBytes, ok := strings.Cut(line, " ")
		if !ok {
			t.Fatalf("bad golden line %q", line)
		}
		want, err := hex.DecodeString(hexBytes)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		v, ok := values[name]
		if !ok {
			t.Errorf("golden %s has no value in goldenValues", name)
			continue
		}
		seen[name] = true
		if got := v.Marshal(); !bytes.Equal(got, want) {
			t.Errorf("%s encodes to\n %x\nbut the golden file says\n %x", name, got, want)
		}
		// Old bytes must keep decoding to the same value.
		fresh := reflect.New(reflect.TypeOf(v).Elem()).Interface().(interface{ Unmarshal([]byte) error })
		if err := fresh.Unmarshal(want); err != nil {
			t.Errorf("%s: golden bytes no longer decode: %v", name, err)
		} else if !reflect.DeepEqual(fresh, v) {
			t.Errorf("%s: golden bytes decode to %+v, want %+v", name, fresh, v)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	for n := range values {
		if !seen[n] {
			t.Errorf("%s is missing from %s (run with -update)", n, path)
		}
	}
}
