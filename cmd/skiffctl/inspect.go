package main

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/skiffdb/skiff/internal/snapshot"
	"github.com/skiffdb/skiff/raftpb"
)

const inspectUsage = `Usage:
  skiffctl snapshot inspect [--json] DIR

Prints a snapshot's meta (group, index, term, membership with addresses,
state machine type and version, compression, on-disk flag) and every file
with its size and CRC32C, then reads every file and verifies its size and
CRC32C against the meta. DIR is one of:
  - a published snapshot directory   <data>/snapshots/<group>/snapshot-<index>
  - an exported snapshot directory   <export path>/snapshot-<index>
  - a group's snapshot store         <data>/snapshots/<group>  (every
    published snapshot in it is inspected; temp directories are listed)

Nothing is written. Exit 0 when everything verifies; 1 on a size or CRC
mismatch, a missing or unexpected file, a hostile file name, or a
truncated, corrupt or unknown-format meta.

Flags:
  --json   print one JSON object instead of text

Example:
  skiffctl snapshot inspect /var/lib/skiffkv/snapshots/00000000000000000001
  skiffctl snapshot inspect --json /backup/snapshot-00000000000000004711
`

// maxMetaBytes: internal/snapshot refuses a longer meta record; read no
// more than that from a file that claims to be one.
const maxMetaBytes = 64 << 20

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// fileResult is one file of a snapshot, as the meta lists it and as found.
type fileResult struct {
	Name   string `json:"name"`
	Size   uint64 `json:"size"`
	CRC32C string `json:"crc32c"`
	// Status: "ok", "mismatch" (size or CRC32C differ), "missing",
	// "unreadable" (not a regular file, or a read error).
	Status       string `json:"status"`
	ActualSize   uint64 `json:"actual_size,omitempty"`
	ActualCRC32C string `json:"actual_crc32c,omitempty"`
	Error        string `json:"error,omitempty"`
}

type memberJSON struct {
	ID   uint64 `json:"id"`
	Addr string `json:"addr"`
}

type membershipJSON struct {
	ConfigChangeIndex uint64       `json:"config_change_index"`
	Voters            []memberJSON `json:"voters"`
	VotersOutgoing    []memberJSON `json:"voters_outgoing,omitempty"`
	NonVoters         []memberJSON `json:"non_voters,omitempty"`
	Removed           []uint64     `json:"removed,omitempty"`
	AutoLeave         bool         `json:"auto_leave,omitempty"`
}

type metaJSON struct {
	FormatVersion       uint32         `json:"format_version"`
	Group               uint64         `json:"group"`
	Index               uint64         `json:"index"`
	Term                uint64         `json:"term"`
	Membership          membershipJSON `json:"membership"`
	StateMachineType    uint64         `json:"state_machine_type"`
	StateMachineVersion uint64         `json:"state_machine_version"`
	OnDisk              bool           `json:"on_disk"`
	// MetadataOnly: an on-disk state machine's compaction snapshot, whose
	// data stream holds only the header (sessions, indexes): the state
	// machine's data stays in its own files on the host.
	MetadataOnly bool `json:"metadata_only"`
	// Compression is how transfers of this snapshot encode their chunks;
	// the files themselves are raw.
	Compression string `json:"compression"`
	Bytes       uint64 `json:"bytes"`
	MetaBytes   int    `json:"meta_bytes"`
}

// streamHeader is what the first bytes of the data file say: the header
// internal/rsm writes before the state machine's own stream (index, term,
// state machine type, client sessions). Only its fixed prefix and CRC are
// read here (see readStreamHeader).
type streamHeader struct {
	Bytes int    `json:"bytes"`
	Full  bool   `json:"full"`
	Error string `json:"error,omitempty"`
}

// snapshotReport is one snapshot directory.
type snapshotReport struct {
	Dir      string        `json:"dir"`
	OK       bool          `json:"ok"`
	Problems []string      `json:"problems,omitempty"`
	Meta     *metaJSON     `json:"meta,omitempty"`
	Header   *streamHeader `json:"stream_header,omitempty"`
	Files    []fileResult  `json:"files,omitempty"`
	// Unexpected: entries of the directory that the meta does not list.
	Unexpected []string `json:"unexpected,omitempty"`

	meta *raftpb.SnapshotMeta // decoded, for import
}

// otherEntry is a non-published entry of a snapshot store.
type otherEntry struct {
	Name  string `json:"name"`
	State string `json:"state"`
}

// inspectReport is the whole output of inspect.
type inspectReport struct {
	Path string `json:"path"`
	// Kind: "snapshot" (DIR is one snapshot) or "store" (DIR holds them).
	Kind      string           `json:"kind"`
	OK        bool             `json:"ok"`
	Snapshots []snapshotReport `json:"snapshots"`
	Other     []otherEntry     `json:"other,omitempty"`
}

func runInspect(args []string, stdout, stderr io.Writer) int {
	fl := newFlags("snapshot inspect")
	asJSON := fl.Bool("json", false, "")
	pos, code, ok := parse(fl, args, 1, inspectUsage, stdout, stderr)
	if !ok {
		return code
	}
	rep, err := inspectPath(pos[0])
	if err != nil {
		return failf(stderr, "skiffctl snapshot inspect", "%v", err)
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rep); err != nil {
			return failf(stderr, "skiffctl snapshot inspect", "%v", err)
		}
	} else {
		printInspect(stdout, rep)
	}
	if !rep.OK {
		return exitFail
	}
	return exitOK
}

// inspectPath decides what dir is and inspects it. An error means dir is
// not something inspect understands; problems found in snapshots are in
// the report.
func inspectPath(dir string) (*inspectReport, error) {
	st, err := os.Stat(dir)
	if err != nil {
		return nil, err
	}
	if !st.IsDir() {
		return nil, fmt.Errorf("%s is not a directory", dir)
	}
	rep := &inspectReport{Path: dir, OK: true}
	if _, err := os.Lstat(filepath.Join(dir, "meta")); err == nil || !errors.Is(err, fs.ErrNotExist) {
		rep.Kind = "snapshot"
		s := inspectSnapshot(dir)
		rep.Snapshots = append(rep.Snapshots, s)
		rep.OK = s.OK
		return rep, nil
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	rep.Kind = "store"
	for _, e := range ents {
		state, ok := snapshotDirState(e.Name())
		switch {
		case !ok:
			rep.Other = append(rep.Other, otherEntry{Name: e.Name(), State: "not a snapshot (ignored by the store)"})
		case state != "published":
			rep.Other = append(rep.Other, otherEntry{Name: e.Name(), State: state})
		default:
			s := inspectSnapshot(filepath.Join(dir, e.Name()))
			rep.Snapshots = append(rep.Snapshots, s)
			rep.OK = rep.OK && s.OK
		}
	}
	if len(rep.Snapshots) == 0 {
		hint := ""
		if _, err := os.Stat(snapshotsDir(dir)); err == nil {
			hint = fmt.Sprintf("; it looks like a host directory: try %s", groupSnapshotDir(dir, 1))
		}
		return nil, fmt.Errorf("%s holds no meta file and no published snapshot-<index> directory%s", dir, hint)
	}
	return rep, nil
}

// snapshotDirState names the state a store's directory name encodes
// (internal/snapshot's store_names.go): "published", "generating",
// "receiving", "deleting", "corrupt"; ok is false for other names.
func snapshotDirState(name string) (string, bool) {
	rest, ok := strings.CutPrefix(name, "snapshot-")
	if !ok || len(rest) < 20 || !allDigits(rest[:20]) {
		return "", false
	}
	rest = rest[20:]
	if rest == "" {
		return "published", true
	}
	seq, kind, ok := strings.Cut(rest, ".")
	if !ok || len(seq) < 2 || seq[0] != '-' || !allDigits(seq[1:]) {
		return "", false
	}
	switch kind {
	case "generating":
		return "generating (a save in progress, or a leftover the host removes at start)", true
	case "receiving":
		return "receiving (a transfer in progress; the host may resume it)", true
	case "deleting":
		return "deleting (being removed by GC)", true
	case "corrupt":
		return "corrupt (quarantined: failed verification when the host started)", true
	}
	return "", false
}

func allDigits(s string) bool {
	for _, c := range []byte(s) {
		if c < '0' || c > '9' {
			return false
		}
	}
	return s != ""
}

// inspectSnapshot reads and verifies one snapshot directory. It never
// writes and never fails: everything wrong is a problem in the report.
func inspectSnapshot(dir string) snapshotReport {
	r := snapshotReport{Dir: dir}
	r.verify()
	r.OK = len(r.Problems) == 0
	return r
}

// verify fills r: the meta, every file checked, the unexpected entries.
func (r *snapshotReport) verify() {
	dir := r.Dir
	problem := func(format string, a ...any) { r.Problems = append(r.Problems, fmt.Sprintf(format, a...)) }

	raw, err := readMeta(filepath.Join(dir, "meta"))
	if err != nil {
		problem("meta: %v", err)
		return
	}
	m, err := snapshot.DecodeMeta(raw)
	if err != nil {
		problem("meta: %s", describeMetaError(err))
		return
	}
	r.meta = &m
	r.Meta = metaToJSON(&m, len(raw))
	if base := filepath.Base(dir); base != publishedName(m.Index) {
		problem("directory name %q does not match the meta's index %d (want %s): import refuses it", base, m.Index, publishedName(m.Index))
	}

	buf := make([]byte, 256<<10)
	listed := map[string]bool{"meta": true}
	for _, f := range m.Files {
		listed[f.Name] = true
		fr := verifyFile(filepath.Join(dir, f.Name), f, buf)
		if fr.Status != "ok" {
			problem("%s", describeFile(fr))
		}
		r.Files = append(r.Files, fr)
	}
	if r.Files == nil {
		r.Files = []fileResult{}
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		problem("list %s: %v", dir, err)
	}
	for _, e := range ents {
		if !listed[e.Name()] {
			r.Unexpected = append(r.Unexpected, e.Name())
			problem("unexpected %s %q: the meta does not list it", entryKind(e), e.Name())
		}
	}
	// Files are raw at rest whatever the meta's Compression, which names
	// the encoding of transfer chunks only (internal/snapshot compress.go).
	for _, fr := range r.Files {
		if fr.Name == snapshot.DataFile && fr.Status == "ok" {
			h := readStreamHeader(filepath.Join(dir, fr.Name), fr.Size)
			r.Header = &h
			if h.Error == "" {
				r.Meta.MetadataOnly = m.OnDisk && !h.Full
			}
		}
	}
}

func entryKind(e fs.DirEntry) string {
	switch {
	case e.IsDir():
		return "directory"
	case e.Type()&fs.ModeSymlink != 0:
		return "symlink"
	}
	return "file"
}

// readMeta reads a meta file, refusing anything but a regular file of at
// most maxMetaBytes.
func readMeta(path string) ([]byte, error) {
	st, err := os.Lstat(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, errors.New("missing: this is not a complete snapshot directory")
		}
		return nil, err
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("not a regular file (%s)", st.Mode().Type())
	}
	if st.Size() > maxMetaBytes {
		return nil, fmt.Errorf("%d bytes: a meta record is at most %d", st.Size(), maxMetaBytes)
	}
	return os.ReadFile(path)
}

// describeMetaError says what a DecodeMeta error means for the operator.
func describeMetaError(err error) string {
	switch {
	case errors.Is(err, snapshot.ErrUnknownFormat):
		return fmt.Sprintf("written in a newer format than this skiffctl reads (%v); use a newer skiffctl", err)
	case errors.Is(err, snapshot.ErrBadFileName):
		return fmt.Sprintf("lists a hostile or invalid file name, so no file was read (%v)", err)
	case errors.Is(err, snapshot.ErrCorruptMeta):
		return fmt.Sprintf("truncated or corrupt (%v)", err)
	}
	return err.Error()
}

// verifyFile checks one file against its meta entry.
func verifyFile(path string, f raftpb.SnapshotFile, buf []byte) fileResult {
	fr := fileResult{Name: f.Name, Size: f.Size, CRC32C: crcString(f.CRC32C)}
	st, err := os.Lstat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		fr.Status = "missing"
		return fr
	case err != nil:
		fr.Status, fr.Error = "unreadable", err.Error()
		return fr
	case !st.Mode().IsRegular():
		// A symlink could point anywhere; the store never makes one.
		fr.Status, fr.Error = "unreadable", fmt.Sprintf("not a regular file (%s)", st.Mode().Type())
		return fr
	}
	size, crc, err := fileCRC(path, buf)
	if err != nil {
		fr.Status, fr.Error = "unreadable", err.Error()
		return fr
	}
	fr.ActualSize, fr.ActualCRC32C = size, crcString(crc)
	fr.Status = "ok"
	if size != f.Size || crc != f.CRC32C {
		fr.Status = "mismatch"
	}
	return fr
}

func describeFile(fr fileResult) string {
	switch fr.Status {
	case "missing":
		return fmt.Sprintf("%s: missing (meta says %d bytes, crc32c %s)", fr.Name, fr.Size, fr.CRC32C)
	case "unreadable":
		return fmt.Sprintf("%s: unreadable: %s", fr.Name, fr.Error)
	case "mismatch":
		return fmt.Sprintf("%s: %d bytes crc32c %s, meta says %d bytes crc32c %s",
			fr.Name, fr.ActualSize, fr.ActualCRC32C, fr.Size, fr.CRC32C)
	}
	return fr.Name + ": ok"
}

func crcString(c uint32) string { return fmt.Sprintf("%08x", c) }

// fileCRC reads a whole file and returns its size and CRC32C.
func fileCRC(path string, buf []byte) (uint64, uint32, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	var n uint64
	var crc uint32
	for {
		k, err := f.Read(buf)
		crc = crc32.Update(crc, castagnoli, buf[:k])
		n += uint64(k)
		if errors.Is(err, io.EOF) {
			return n, crc, nil
		}
		if err != nil {
			return n, crc, err
		}
	}
}

// The fixed prefix of the stream header internal/rsm writes at the start
// of a snapshot's data (see its package doc, "Snapshot stream"):
//
//	"SKRS" | ver u8 | flags u8 | body length u32 LE | body | crc32c u32 LE
//
// flags bit 1: the state machine's data follows (a full snapshot). The
// body (indexes, state machine type, client sessions) is not decoded here:
// skiffctl may not import internal/rsm; its size is what sessions cost.
const (
	streamMagic      = "SKRS"
	streamPrefixSize = 10
	streamFlagFull   = 1
)

// readStreamHeader reads the header at the start of a verified data file
// of size bytes and checks its CRC.
func readStreamHeader(path string, size uint64) streamHeader {
	var h streamHeader
	f, err := os.Open(path)
	if err != nil {
		h.Error = err.Error()
		return h
	}
	defer f.Close()
	if size < streamPrefixSize+4 {
		h.Error = fmt.Sprintf("%d bytes: too short for a stream header", size)
		return h
	}
	prefix := make([]byte, streamPrefixSize)
	if _, err := io.ReadFull(f, prefix); err != nil {
		h.Error = err.Error()
		return h
	}
	if string(prefix[:4]) != streamMagic {
		h.Error = fmt.Sprintf("no stream header (starts with %q)", prefix[:4])
		return h
	}
	body := uint64(binary.LittleEndian.Uint32(prefix[6:]))
	total := streamPrefixSize + body + 4
	if total > size {
		h.Error = fmt.Sprintf("header of %d bytes in a file of %d", total, size)
		return h
	}
	rest := make([]byte, body+4)
	if _, err := io.ReadFull(f, rest); err != nil {
		h.Error = err.Error()
		return h
	}
	crc := crc32.Update(crc32.Checksum(prefix, castagnoli), castagnoli, rest[:body])
	if want := binary.LittleEndian.Uint32(rest[body:]); crc != want {
		h.Error = fmt.Sprintf("header checksum %08x, want %08x", crc, want)
		return h
	}
	h.Bytes = int(total)
	h.Full = prefix[5]&streamFlagFull != 0
	return h
}

func metaToJSON(m *raftpb.SnapshotMeta, metaBytes int) *metaJSON {
	members := func(ms []raftpb.Member) []memberJSON {
		var out []memberJSON
		for _, x := range ms {
			out = append(out, memberJSON{ID: uint64(x.ID), Addr: x.Addr})
		}
		return out
	}
	var removed []uint64
	for _, id := range m.Membership.Removed {
		removed = append(removed, uint64(id))
	}
	var total uint64
	for _, f := range m.Files {
		total += f.Size
	}
	return &metaJSON{
		FormatVersion: m.FormatVersion,
		Group:         uint64(m.Group),
		Index:         m.Index,
		Term:          m.Term,
		Membership: membershipJSON{
			ConfigChangeIndex: m.Membership.ConfigChangeIndex,
			Voters:            members(m.Membership.Voters),
			VotersOutgoing:    members(m.Membership.VotersOutgoing),
			NonVoters:         members(m.Membership.NonVoters),
			Removed:           removed,
			AutoLeave:         m.Membership.AutoLeave,
		},
		StateMachineType:    m.StateMachineType,
		StateMachineVersion: m.StateMachineVersion,
		OnDisk:              m.OnDisk,
		// Without a readable stream header: an on-disk snapshot with no
		// files at all carries nothing but the meta.
		MetadataOnly: m.OnDisk && len(m.Files) == 0,
		Compression:  compressionName(m.Compression),
		Bytes:        total,
		MetaBytes:    metaBytes,
	}
}

func compressionName(c raftpb.Compression) string {
	switch c {
	case raftpb.NoCompression:
		return "none"
	case raftpb.Snappy:
		return "snappy"
	case raftpb.Zstd:
		return "zstd"
	}
	return "unknown(" + strconv.Itoa(int(c)) + ")"
}

func printInspect(w io.Writer, rep *inspectReport) {
	for i, s := range rep.Snapshots {
		if i > 0 {
			fmt.Fprintln(w)
		}
		printSnapshot(w, &s)
	}
	if len(rep.Other) > 0 {
		fmt.Fprintln(w)
		fmt.Fprintln(w, "other entries:")
		for _, o := range rep.Other {
			fmt.Fprintf(w, "  %s  %s\n", o.Name, o.State)
		}
	}
	if rep.Kind == "store" {
		bad := 0
		for _, s := range rep.Snapshots {
			if !s.OK {
				bad++
			}
		}
		fmt.Fprintln(w)
		if bad == 0 {
			fmt.Fprintf(w, "%d published snapshot(s), all OK\n", len(rep.Snapshots))
		} else {
			fmt.Fprintf(w, "%d of %d published snapshot(s) FAILED verification\n", bad, len(rep.Snapshots))
		}
	}
}

func printSnapshot(w io.Writer, s *snapshotReport) {
	fmt.Fprintf(w, "snapshot %s\n", s.Dir)
	if m := s.Meta; m != nil {
		fmt.Fprintf(w, "  group %d  index %d  term %d  (format %d, meta %d bytes)\n", m.Group, m.Index, m.Term, m.FormatVersion, m.MetaBytes)
		fmt.Fprintf(w, "  membership (config change index %d):\n", m.Membership.ConfigChangeIndex)
		printMembers(w, "voter", m.Membership.Voters)
		printMembers(w, "outgoing voter", m.Membership.VotersOutgoing)
		printMembers(w, "non-voter", m.Membership.NonVoters)
		if len(m.Membership.Removed) > 0 {
			fmt.Fprintf(w, "    removed      %s\n", joinUints(m.Membership.Removed))
		}
		if m.Membership.AutoLeave {
			fmt.Fprintln(w, "    joint configuration, left automatically")
		}
		fmt.Fprintf(w, "  state machine type %d version %d, on disk %t, metadata only %t\n",
			m.StateMachineType, m.StateMachineVersion, m.OnDisk, m.MetadataOnly)
		fmt.Fprintf(w, "  transfer compression %s\n", m.Compression)
		if h := s.Header; h != nil {
			if h.Error != "" {
				fmt.Fprintf(w, "  stream header: unreadable: %s\n", h.Error)
			} else {
				fmt.Fprintf(w, "  stream header %d bytes (indexes, client sessions), state machine data follows: %t\n", h.Bytes, h.Full)
			}
		}
		fmt.Fprintf(w, "  files (%d, %d bytes):\n", len(s.Files), m.Bytes)
		width := 4
		for _, f := range s.Files {
			width = max(width, len(f.Name))
		}
		for _, f := range s.Files {
			fmt.Fprintf(w, "    %-*s  %12d bytes  crc32c %s  %s\n", width, f.Name, f.Size, f.CRC32C, f.Status)
		}
	}
	if s.OK {
		fmt.Fprintln(w, "  OK: every file matches the meta")
		return
	}
	fmt.Fprintf(w, "  FAILED: %d problem(s)\n", len(s.Problems))
	for _, p := range s.Problems {
		fmt.Fprintf(w, "    %s\n", p)
	}
}

func printMembers(w io.Writer, role string, ms []memberJSON) {
	for _, m := range ms {
		fmt.Fprintf(w, "    %-12s %d  %s\n", role, m.ID, m.Addr)
	}
}

func joinUints(ids []uint64) string {
	s := make([]string, len(ids))
	for i, id := range ids {
		s[i] = strconv.FormatUint(id, 10)
	}
	return strings.Join(s, ", ")
}
