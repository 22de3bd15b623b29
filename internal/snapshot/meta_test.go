package snapshot

import (
	"bytes"
	"encoding/binary"
	"errors"
	"reflect"
	"testing"

	"github.com/skiffdb/skiff/raftpb"
)

func fullMeta() raftpb.SnapshotMeta {
	return raftpb.SnapshotMeta{
		FormatVersion: raftpb.SnapshotFormatVersion,
		Group:         7, Index: 1234, Term: 9,
		Membership: raftpb.Membership{
			ConfigChangeIndex: 1200,
			Voters:            []raftpb.Member{{ID: 1, Addr: "h1:1"}, {ID: 2, Addr: "h2:1"}, {ID: 3, Addr: "h3:1"}},
			NonVoters:         []raftpb.Member{{ID: 4, Addr: "h4:1"}},
			Removed:           []raftpb.ReplicaID{5, 6},
		},
		StateMachineType: 2, StateMachineVersion: 3, OnDisk: true, Compression: raftpb.Zstd,
		Files: []raftpb.SnapshotFile{{Name: "data", Size: 100, CRC32C: 0xdeadbeef}, {Name: "000001.sst", Size: 1 << 40, CRC32C: 1}},
	}
}

// rawRecord frames any meta (unvalidated) as a meta record of version ver.
func rawRecord(m *raftpb.SnapshotMeta, ver uint32) []byte {
	payload := m.Marshal()
	b := append([]byte(metaMagic), 0, 0, 0, 0, 0, 0, 0, 0)
	binary.LittleEndian.PutUint32(b[len(metaMagic):], ver)
	binary.LittleEndian.PutUint32(b[len(metaMagic)+4:], uint32(len(payload)))
	b = append(b, payload...)
	return binary.LittleEndian.AppendUint32(b, crc32c(0, b))
}

func TestMetaRoundTrip(t *testing.T) {
	m := fullMeta()
	b, err := EncodeMeta(&m)
	if err != nil {
		t.Fatal(err)
	}
	got, err := DecodeMeta(b)
	if err != nil {
		t.Fatal(err)
	}
	b2, _ := EncodeMeta(&got)
	if !bytes.Equal(b, b2) || got.Membership.ConfigChangeIndex != 1200 || got.Files[1].Size != 1<<40 {
		t.Fatalf("round trip changed the meta: %+v", got)
	}
}

// Bad input: every unsafe name is refused by the encoder (nothing is ever
// written with it) and by the decoder (a hostile or damaged record).
func TestMetaBadFileNames(t *testing.T) {
	for _, files := range [][]raftpb.SnapshotFile{
		{{Name: ""}},
		{{Name: "a/b"}},
		{{Name: "/etc/passwd"}},
		{{Name: ".."}},
		{{Name: "."}},
		{{Name: "../x"}},
		{{Name: "x/../../y"}},
		{{Name: `a\b`}},
		{{Name: "nul\x00"}},
		{{Name: "meta"}},
		{{Name: "meta.tmp"}},
		{{Name: string(bytes.Repeat([]byte("n"), 256))}},
		{{Name: "data"}, {Name: "data"}},
	} {
		m := fullMeta()
		m.Files = files
		if _, err := EncodeMeta(&m); !errors.Is(err, ErrBadFileName) {
			t.Errorf("EncodeMeta(%+v): %v, want ErrBadFileName", files, err)
		}
		if _, err := DecodeMeta(rawRecord(&m, raftpb.SnapshotFormatVersion)); !errors.Is(err, ErrBadFileName) {
			t.Errorf("DecodeMeta(%+v): %v, want ErrBadFileName", files, err)
		}
	}
}

// Bad input: a truncated record, at every length, is ErrCorruptMeta.
func TestMetaTruncated(t *testing.T) {
	m := fullMeta()
	b, _ := EncodeMeta(&m)
	for n := 0; n < len(b); n++ {
		if _, err := DecodeMeta(b[:n]); !errors.Is(err, ErrCorruptMeta) {
			t.Fatalf("truncated to %d of %d bytes: %v, want ErrCorruptMeta", n, len(b), err)
		}
	}
	if _, err := DecodeMeta(append(b, 0)); !errors.Is(err, ErrCorruptMeta) {
		t.Fatalf("trailing byte: %v", err)
	}
}

// Bad input: every single bit flip is detected (CRC32C catches them all)
// and reported as corruption, never as another format.
func TestMetaBitFlips(t *testing.T) {
	m := fullMeta()
	b, _ := EncodeMeta(&m)
	for i := range len(b) * 8 {
		c := bytes.Clone(b)
		c[i/8] ^= 1 << (i % 8)
		if _, err := DecodeMeta(c); !errors.Is(err, ErrCorruptMeta) {
			t.Fatalf("bit %d flipped: %v, want ErrCorruptMeta", i, err)
		}
	}
}

// Bad input: an intact record of a newer format is ErrUnknownFormat, both
// in the header and in the payload.
func TestMetaUnknownFormat(t *testing.T) {
	m := fullMeta()
	if _, err := DecodeMeta(rawRecord(&m, raftpb.SnapshotFormatVersion+1)); !errors.Is(err, ErrUnknownFormat) {
		t.Fatalf("newer header version: %v", err)
	}
	m.FormatVersion = raftpb.SnapshotFormatVersion + 1
	if _, err := DecodeMeta(rawRecord(&m, raftpb.SnapshotFormatVersion+1)); !errors.Is(err, ErrUnknownFormat) {
		t.Fatalf("newer version: %v", err)
	}
	if _, err := EncodeMeta(&m); !errors.Is(err, ErrUnknownFormat) {
		t.Fatalf("encoding a newer version: %v", err)
	}
	// A payload in a newer raftpb codec inside a known header.
	m = fullMeta()
	b := rawRecord(&m, raftpb.SnapshotFormatVersion)
	b[metaHeaderSize] = raftpb.CodecVersion + 1
	binary.LittleEndian.PutUint32(b[len(b)-4:], crc32c(0, b[:len(b)-4]))
	if _, err := DecodeMeta(b); !errors.Is(err, ErrUnknownFormat) {
		t.Fatalf("newer codec: %v", err)
	}
}

func TestMetaRequiredFields(t *testing.T) {
	for name, mut := range map[string]func(*raftpb.SnapshotMeta){
		"index 0": func(m *raftpb.SnapshotMeta) { m.Index = 0 },
		"term 0":  func(m *raftpb.SnapshotMeta) { m.Term = 0 },
	} {
		m := fullMeta()
		mut(&m)
		if _, err := EncodeMeta(&m); !errors.Is(err, ErrCorruptMeta) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

// FuzzMeta: any bytes decode without panicking, within bounded memory, to a
// classified error or to a valid meta that survives a round trip.
func FuzzMeta(f *testing.F) {
	m := fullMeta()
	b, _ := EncodeMeta(&m)
	f.Add(b)
	small := testMeta(1)
	b, _ = EncodeMeta(&small)
	f.Add(b)
	f.Add([]byte(metaMagic))
	f.Add([]byte{})
	f.Add(m.Marshal())
	f.Fuzz(func(t *testing.T, b []byte) {
		checkDecode(t, b)
		// Framed with a valid header and checksum, the same bytes reach
		// the payload decoder and the validation behind the CRC.
		fr := append([]byte(metaMagic), 0, 0, 0, 0, 0, 0, 0, 0)
		binary.LittleEndian.PutUint32(fr[len(metaMagic):], raftpb.SnapshotFormatVersion)
		binary.LittleEndian.PutUint32(fr[len(metaMagic)+4:], uint32(len(b)))
		fr = append(fr, b...)
		checkDecode(t, binary.LittleEndian.AppendUint32(fr, crc32c(0, fr)))
	})
}

func checkDecode(t *testing.T, b []byte) {
	m, err := DecodeMeta(b)
	if err != nil {
		if !errors.Is(err, ErrCorruptMeta) && !errors.Is(err, ErrUnknownFormat) && !errors.Is(err, ErrBadFileName) {
			t.Fatalf("unclassified error %v", err)
		}
		return
	}
	if err := ValidateMeta(&m); err != nil {
		t.Fatalf("decoded an invalid meta: %v", err)
	}
	b2, err := EncodeMeta(&m)
	if err != nil {
		t.Fatal(err)
	}
	// NB: not bytes.Equal(b, b2): the varint decoder accepts overlong
	// encodings, which the checksum makes harmless.
	m2, err := DecodeMeta(b2)
	if err != nil || !reflect.DeepEqual(m, m2) {
		t.Fatalf("re-encoding changed the meta (%v):\n%+v\n%+v", err, m, m2)
	}
}
