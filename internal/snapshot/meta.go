package snapshot

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"strings"

	"github.com/skiffdb/skiff/raftpb"
)

// The meta record. Layout (all integers little-endian):
//
//	+----------+---------+-----------+-------------------+---------+
//	| magic[8] | ver u32 | len u32   | payload[len]      | crc u32 |
//	+----------+---------+-----------+-------------------+---------+
//	 "skfsnap\x00"          payload = raftpb SnapshotMeta.Marshal()
//	                        crc = CRC32C of every byte before it
//
// The rule that the last four bytes are the CRC32C of all the bytes before
// them holds for every format version, present and future: a reader can
// therefore tell a damaged record (ErrCorruptMeta) from an intact one in a
// format it does not know (ErrUnknownFormat) before it interprets anything
// else, and refuse the latter before any destructive step.

const (
	metaMagic      = "skfsnap\x00"
	metaHeaderSize = len(metaMagic) + 4 + 4
	metaTrailer    = 4
	// maxMetaSize bounds a meta record; a snapshot with a million files
	// still fits comfortably.
	maxMetaSize = 64 << 20
	// maxFileName bounds one file name (the usual NAME_MAX).
	maxFileName = 255
)

// Reserved names inside a snapshot directory: the store's own records.
const (
	metaFile = "meta"
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// crc32c returns the CRC32C of p continuing from crc.
func crc32c(crc uint32, p []byte) uint32 { return crc32.Update(crc, castagnoli, p) }

// EncodeMeta validates m and returns its meta record. m.FormatVersion 0 is
// taken as the current raftpb.SnapshotFormatVersion.
func EncodeMeta(m *raftpb.SnapshotMeta) ([]byte, error) {
	mm := *m
	if mm.FormatVersion == 0 {
		mm.FormatVersion = raftpb.SnapshotFormatVersion
	}
	if err := ValidateMeta(&mm); err != nil {
		return nil, err
	}
	payload := mm.Marshal()
	b := make([]byte, 0, metaHeaderSize+len(payload)+metaTrailer)
	b = append(b, metaMagic...)
	b = binary.LittleEndian.AppendUint32(b, mm.FormatVersion)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(payload)))
	b = append(b, payload...)
	return binary.LittleEndian.AppendUint32(b, crc32c(0, b)), nil
}

// DecodeMeta parses and validates a meta record. Errors wrap
// ErrCorruptMeta (truncated, bit-flipped, trailing bytes, fields out of
// range), ErrUnknownFormat (an intact record of a newer format) or
// ErrBadFileName. It never panics and allocates no more than about len(b).
func DecodeMeta(b []byte) (raftpb.SnapshotMeta, error) {
	var m raftpb.SnapshotMeta
	if len(b) < metaHeaderSize+metaTrailer {
		return m, fmt.Errorf("%w: %d bytes is too short", ErrCorruptMeta, len(b))
	}
	if len(b) > maxMetaSize {
		return m, fmt.Errorf("%w: %d bytes is too long", ErrCorruptMeta, len(b))
	}
	body, sum := b[:len(b)-metaTrailer], binary.LittleEndian.Uint32(b[len(b)-metaTrailer:])
	if got := crc32c(0, body); got != sum {
		return m, fmt.Errorf("%w: checksum %08x, want %08x", ErrCorruptMeta, got, sum)
	}
	if string(body[:len(metaMagic)]) != metaMagic {
		return m, fmt.Errorf("%w: bad magic %q", ErrCorruptMeta, body[:len(metaMagic)])
	}
	ver := binary.LittleEndian.Uint32(body[len(metaMagic):])
	if ver != raftpb.SnapshotFormatVersion {
		return m, fmt.Errorf("%w: version %d, this build reads %d", ErrUnknownFormat, ver, raftpb.SnapshotFormatVersion)
	}
	n := binary.LittleEndian.Uint32(body[len(metaMagic)+4:])
	payload := body[metaHeaderSize:]
	if uint64(n) != uint64(len(payload)) {
		return m, fmt.Errorf("%w: payload length %d, record holds %d", ErrCorruptMeta, n, len(payload))
	}
	if err := m.Unmarshal(payload); err != nil {
		if errors.Is(err, raftpb.ErrUnknownVersion) {
			return m, fmt.Errorf("%w: %v", ErrUnknownFormat, err)
		}
		return m, fmt.Errorf("%w: %v", ErrCorruptMeta, err)
	}
	if m.FormatVersion != ver {
		return m, fmt.Errorf("%w: header version %d, payload version %d", ErrCorruptMeta, ver, m.FormatVersion)
	}
	if err := ValidateMeta(&m); err != nil {
		return m, err
	}
	return m, nil
}

// ValidateMeta checks what every meta must satisfy before the store or the
// copier uses it: a known format version, an index and term, and file names
// that are safe to join to a directory (ValidateFileName) and unique.
func ValidateMeta(m *raftpb.SnapshotMeta) error {
	if m.FormatVersion != raftpb.SnapshotFormatVersion {
		return fmt.Errorf("%w: version %d, this build reads %d", ErrUnknownFormat, m.FormatVersion, raftpb.SnapshotFormatVersion)
	}
	if m.Index == 0 {
		return fmt.Errorf("%w: index 0", ErrCorruptMeta)
	}
	if m.Term == 0 {
		return fmt.Errorf("%w: term 0 at index %d", ErrCorruptMeta, m.Index)
	}
	if m.Compression > raftpb.Zstd {
		return fmt.Errorf("%w: unknown compression %d", ErrCorruptMeta, m.Compression)
	}
	seen := make(map[string]struct{}, len(m.Files))
	for _, f := range m.Files {
		if err := ValidateFileName(f.Name); err != nil {
			return err
		}
		if _, dup := seen[f.Name]; dup {
			return fmt.Errorf("%w: %q listed twice", ErrBadFileName, f.Name)
		}
		seen[f.Name] = struct{}{}
	}
	return nil
}

// ValidateFileName reports whether name may name a file of a snapshot: a
// single path element, not empty, not "." or "..", without '/', '\\' or
// NUL, at most 255 bytes, and not a name the store reserves for itself.
func ValidateFileName(name string) error {
	switch {
	case name == "":
		return fmt.Errorf("%w: empty name", ErrBadFileName)
	case len(name) > maxFileName:
		return fmt.Errorf("%w: name of %d bytes", ErrBadFileName, len(name))
	case name == "." || name == "..":
		return fmt.Errorf("%w: %q", ErrBadFileName, name)
	case strings.ContainsAny(name, "/\\\x00"):
		return fmt.Errorf("%w: %q is not a single path element", ErrBadFileName, name)
	case strings.Contains(name, ".."):
		return fmt.Errorf("%w: %q contains \"..\"", ErrBadFileName, name)
	case isReservedName(name):
		return fmt.Errorf("%w: %q is reserved", ErrBadFileName, name)
	}
	return nil
}

// isReservedName: the store's own files inside a snapshot directory.
func isReservedName(name string) bool {
	return name == metaFile || strings.HasPrefix(name, metaFile+".")
}

// metaSize returns the total size of the files a meta lists.
func metaSize(m *raftpb.SnapshotMeta) uint64 {
	var n uint64
	for _, f := range m.Files {
		n += f.Size
	}
	return n
}

// fileOf returns the named file of m.
func fileOf(m *raftpb.SnapshotMeta, name string) (raftpb.SnapshotFile, bool) {
	for _, f := range m.Files {
		if f.Name == name {
			return f, true
		}
	}
	return raftpb.SnapshotFile{}, false
}

// cloneMeta returns a deep copy of m.
func cloneMeta(m *raftpb.SnapshotMeta) raftpb.SnapshotMeta {
	c := *m
	c.Membership = m.Membership.Clone()
	c.Files = append([]raftpb.SnapshotFile(nil), m.Files...)
	return c
}
