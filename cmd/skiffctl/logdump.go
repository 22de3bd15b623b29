package main

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/skiffdb/skiff/internal/logdb"
	"github.com/skiffdb/skiff/raftpb"
)

const dumpUsage = `Usage:
  skiffctl log dump --data DIR [--group G] [--from I] [--to I] [--json]

Prints the log of a STOPPED host: every group with its first and last
index, HardState (term, vote, commit), latest snapshot (index, term) and
the WAL bytes its entries pin. With --group, also each entry of that group
in [--from, --to] (default: the whole log): index, term, type, size and a
short printable preview of the payload.

Nothing on disk is changed: the log is opened through a view that reads the
disk and keeps in memory what opening it would write (the lock file is
opened, as a server opening the log would). A running server is detected
by the log's lock and refused.

Flags:
  --data DIR   the host's data directory (skiffkv --data); the log is DIR/logdb
  --group G    dump the entries of group G
  --from I     first index to print (default: the group's first index)
  --to I       last index to print (default: the group's last index)
  --json       print one JSON object instead of text

Example:
  skiffctl log dump --data /var/lib/skiffkv
  skiffctl log dump --data /var/lib/skiffkv --group 1 --from 100 --to 120
`

type hardStateJSON struct {
	Term   uint64 `json:"term"`
	Vote   uint64 `json:"vote"`
	Commit uint64 `json:"commit"`
}

type snapPointerJSON struct {
	Index uint64 `json:"index"`
	Term  uint64 `json:"term"`
}

type entryJSON struct {
	Index   uint64 `json:"index"`
	Term    uint64 `json:"term"`
	Type    string `json:"type"`
	Size    int    `json:"size"`
	Preview string `json:"preview"`
}

type groupJSON struct {
	Group      uint64           `json:"group"`
	FirstIndex uint64           `json:"first_index"`
	LastIndex  uint64           `json:"last_index"`
	HardState  hardStateJSON    `json:"hard_state"`
	Snapshot   *snapPointerJSON `json:"snapshot,omitempty"`
	LogBytes   int64            `json:"log_bytes"`
	// Entries, with --group only; From and To are the range printed.
	From    uint64      `json:"from,omitempty"`
	To      uint64      `json:"to,omitempty"`
	Entries []entryJSON `json:"entries,omitempty"`
	// Note says why the range printed differs from the one asked.
	Note string `json:"note,omitempty"`
}

type dumpReport struct {
	Dir      string      `json:"dir"`
	Segments int         `json:"segments"`
	LogBytes int64       `json:"log_bytes"`
	Groups   []groupJSON `json:"groups"`
	// Unlisted counts groups the log holds that could not be named (see
	// listGroups); --group G reaches any of them.
	Unlisted int `json:"unlisted,omitempty"`
	// Absorbed lists what opening the log would have written to disk and
	// was kept in memory instead.
	Absorbed []string `json:"absorbed_writes,omitempty"`
}

// previewBytes is how much of an entry's payload a preview shows.
const previewBytes = 48

func runDump(args []string, stdout, stderr io.Writer) int {
	const prog = "skiffctl log dump"
	fl := newFlags("log dump")
	data := fl.String("data", "", "")
	group := fl.Uint64("group", 0, "")
	from := fl.Uint64("from", 0, "")
	to := fl.Uint64("to", 0, "")
	asJSON := fl.Bool("json", false, "")
	if _, code, ok := parse(fl, args, 0, dumpUsage, stdout, stderr); !ok {
		return code
	}
	if *data == "" {
		return usageError(stderr, prog, "--data is required", dumpUsage)
	}
	if *group == 0 && (*from != 0 || *to != 0) {
		return usageError(stderr, prog, "--from and --to need --group", dumpUsage)
	}
	if *to != 0 && *from > *to {
		return usageError(stderr, prog, fmt.Sprintf("--from %d is after --to %d", *from, *to), dumpUsage)
	}
	rep, err := dumpLog(*data, *group, *from, *to)
	if err != nil {
		return failf(stderr, prog, "%v", err)
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rep); err != nil {
			return failf(stderr, prog, "%v", err)
		}
		return exitOK
	}
	printDump(stdout, rep, *group != 0)
	return exitOK
}

// dumpLog opens the log of the host at data read-only and describes it.
func dumpLog(data string, only, from, to uint64) (*dumpReport, error) {
	dir := logDir(data)
	if _, err := os.Stat(filepath.Join(dir, "MANIFEST")); err != nil {
		return nil, fmt.Errorf("no log at %s (is --data the host's data directory?): %v", dir, err)
	}
	// Hold the log's lock while reading, so a server cannot start on it
	// meanwhile, and so a running one is refused.
	lockPath := filepath.Join(dir, "LOCK")
	if _, err := os.Stat(lockPath); err == nil {
		l, err := vfs.Default.Lock(lockPath)
		if err != nil {
			return nil, fmt.Errorf("%w: %s: %v", errRunning, lockPath, err)
		}
		defer l.Close()
	}
	ofs := newOverlayFS()
	db, err := logdb.Open(ofs, dir, logdb.Options{
		// Only a new segment (which lives in memory) uses it: keep it small.
		SegmentSize: 4096,
		CacheBytes:  -1,
		// OverLimit(>0 bytes) is how the groups are found (listGroups).
		MaxLogBytes: 1,
		Logger:      slog.New(slog.DiscardHandler),
	})
	if err != nil {
		return nil, fmt.Errorf("open log %s: %w", dir, err)
	}
	defer db.Close()

	st := db.Stats()
	rep := &dumpReport{Dir: dir, Segments: st.Segments, LogBytes: st.LogBytes}
	ids := listGroups(db, data)
	if only != 0 {
		ids = []raftpb.GroupID{raftpb.GroupID(only)}
	} else if st.Groups > len(ids) {
		rep.Unlisted = st.Groups - len(ids)
	}
	for _, id := range ids {
		g, err := describeGroup(db.Group(id), id)
		if err != nil {
			return nil, err
		}
		if only != 0 {
			if g.Snapshot == nil && g.HardState == (hardStateJSON{}) && g.LastIndex == 0 {
				return nil, fmt.Errorf("group %d is not in the log %s", only, dir)
			}
			if err := dumpEntries(db.Group(id), &g, from, to); err != nil {
				return nil, err
			}
		}
		rep.Groups = append(rep.Groups, g)
	}
	rep.Absorbed = ofs.Writes()
	return rep, nil
}

// listGroups names the groups of the log. logdb has no list of its
// groups (only their count, Stats.Groups), so the list is the union of
// the groups whose entries pin WAL bytes (OverLimit with MaxLogBytes 1)
// and those with a snapshot store under data. A group with neither (a
// HardState and nothing else) is counted in Unlisted.
func listGroups(db *logdb.DB, data string) []raftpb.GroupID {
	ids := db.OverLimit()
	if ents, err := os.ReadDir(snapshotsDir(data)); err == nil {
		for _, e := range ents {
			if n, err := strconv.ParseUint(e.Name(), 10, 64); err == nil && n > 0 && len(e.Name()) == 20 {
				ids = append(ids, raftpb.GroupID(n))
			}
		}
	}
	slices.Sort(ids)
	ids = slices.Compact(ids)
	// A snapshot store of a group the log does not hold (removed) is
	// left out: the log is what is dumped.
	return slices.DeleteFunc(ids, func(id raftpb.GroupID) bool {
		hs, snap, _ := db.Group(id).InitialState()
		last, _ := db.Group(id).LastIndex()
		return hs.IsEmpty() && snap.IsEmpty() && last == 0
	})
}

func describeGroup(l *logdb.GroupLog, id raftpb.GroupID) (groupJSON, error) {
	hs, snap, err := l.InitialState()
	if err != nil {
		return groupJSON{}, fmt.Errorf("group %d: %w", id, err)
	}
	first, err := l.FirstIndex()
	if err != nil {
		return groupJSON{}, fmt.Errorf("group %d: %w", id, err)
	}
	last, err := l.LastIndex()
	if err != nil {
		return groupJSON{}, fmt.Errorf("group %d: %w", id, err)
	}
	g := groupJSON{Group: uint64(id), FirstIndex: first, LastIndex: last,
		HardState: hardStateJSON{Term: hs.Term, Vote: uint64(hs.Vote), Commit: hs.Commit},
		LogBytes:  l.LogBytes()}
	if !snap.IsEmpty() {
		g.Snapshot = &snapPointerJSON{Index: snap.Index, Term: snap.Term}
	}
	return g, nil
}

// dumpEntries adds the entries [from, to] of the group (0: its first or
// last index), clamped to what the log holds.
func dumpEntries(l *logdb.GroupLog, g *groupJSON, from, to uint64) error {
	lo, hi := max(from, g.FirstIndex), g.LastIndex
	if to != 0 {
		hi = min(to, g.LastIndex)
	}
	g.Entries = []entryJSON{}
	switch {
	case g.LastIndex < g.FirstIndex:
		g.Note = "the log holds no entries"
	case to != 0 && to < g.FirstIndex:
		g.Note = fmt.Sprintf("[%d, %d] is compacted: the log starts at %d", from, to, g.FirstIndex)
	case from > g.LastIndex:
		g.Note = fmt.Sprintf("the log ends at %d, before --from %d", g.LastIndex, from)
	case from != 0 && from < g.FirstIndex:
		g.Note = fmt.Sprintf("entries below %d are compacted", g.FirstIndex)
	}
	if lo > hi {
		return nil
	}
	g.From, g.To = lo, hi
	for lo <= hi {
		// Pages of at most 4 MiB: Entries returns at least one.
		ents, err := l.Entries(lo, hi+1, 4<<20)
		if err != nil {
			return fmt.Errorf("group %d: entries [%d, %d]: %w", g.Group, lo, hi, err)
		}
		if len(ents) == 0 {
			return fmt.Errorf("group %d: no entry at %d", g.Group, lo)
		}
		for _, e := range ents {
			g.Entries = append(g.Entries, entryJSON{Index: e.Index, Term: e.Term, Type: e.Type.String(),
				Size: len(e.Data), Preview: preview(e.Type, e.Data)})
		}
		lo = ents[len(ents)-1].Index + 1
	}
	return nil
}

// preview describes an entry's payload in one short printable line.
//
// Normal and session entries carry the proposal encoding of internal/rsm
// (its package doc, "Proposal encoding"), which skiffctl may not import:
// the fixed prefix (version 1, kind, key, then the client session for kind
// 2 and 3/4) is recognised here so that the preview shows the state
// machine's command; anything else is shown raw.
func preview(t raftpb.EntryType, data []byte) string {
	switch t {
	case raftpb.EntryNoOp:
		return ""
	case raftpb.EntryConfigChange:
		var cc raftpb.ConfChange
		if err := cc.Unmarshal(data); err != nil {
			return "undecodable: " + printable(data)
		}
		if cc.LeaveJoint() {
			return "leave joint configuration"
		}
		var parts []string
		for _, c := range cc.Changes {
			s := fmt.Sprintf("%s %d", c.Type, c.Replica)
			if c.Addr != "" {
				s += " " + c.Addr
			}
			parts = append(parts, s)
		}
		return strings.Join(parts, ", ")
	}
	// The key (bytes 2..10) only matches a proposal to its waiting caller:
	// not shown.
	if len(data) >= 10 && data[0] == 1 {
		switch kind := data[1]; {
		case kind == 1:
			return printable(data[10:])
		case kind == 2 && len(data) >= 34:
			return fmt.Sprintf("client %d series %d: %s",
				binary.LittleEndian.Uint64(data[10:]), binary.LittleEndian.Uint64(data[18:]), printable(data[34:]))
		case (kind == 3 || kind == 4) && len(data) == 18:
			op := map[byte]string{3: "register", 4: "unregister"}[kind]
			return fmt.Sprintf("%s session client %d", op, binary.LittleEndian.Uint64(data[10:]))
		}
	}
	return printable(data)
}

// printable quotes up to previewBytes of p, escaping what is not
// printable ASCII, and says how much was cut.
func printable(p []byte) string {
	cut := p
	if len(cut) > previewBytes {
		cut = cut[:previewBytes]
	}
	var b strings.Builder
	b.WriteByte('"')
	for _, c := range cut {
		switch {
		case c == '"' || c == '\\':
			b.WriteByte('\\')
			b.WriteByte(c)
		case c >= 0x20 && c < 0x7f:
			b.WriteByte(c)
		default:
			fmt.Fprintf(&b, "\\x%02x", c)
		}
	}
	b.WriteByte('"')
	if len(p) > len(cut) {
		fmt.Fprintf(&b, "... (+%d bytes)", len(p)-len(cut))
	}
	return b.String()
}

func printDump(w io.Writer, rep *dumpReport, withEntries bool) {
	fmt.Fprintf(w, "log %s: %d segment(s), %d bytes\n", rep.Dir, rep.Segments, rep.LogBytes)
	if len(rep.Groups) == 0 {
		fmt.Fprintln(w, "no groups")
	}
	for _, g := range rep.Groups {
		if g.LastIndex >= g.FirstIndex {
			fmt.Fprintf(w, "group %d: entries [%d, %d] (%d), ", g.Group, g.FirstIndex, g.LastIndex, g.LastIndex+1-g.FirstIndex)
		} else {
			fmt.Fprintf(w, "group %d: no entries (the next is %d), ", g.Group, g.FirstIndex)
		}
		fmt.Fprintf(w, "hard state term %d vote %d commit %d, ", g.HardState.Term, g.HardState.Vote, g.HardState.Commit)
		if g.Snapshot != nil {
			fmt.Fprintf(w, "snapshot index %d term %d, ", g.Snapshot.Index, g.Snapshot.Term)
		} else {
			fmt.Fprint(w, "no snapshot, ")
		}
		fmt.Fprintf(w, "log bytes %d\n", g.LogBytes)
		if !withEntries {
			continue
		}
		if g.Note != "" {
			fmt.Fprintf(w, "  %s\n", g.Note)
		}
		if len(g.Entries) == 0 {
			if g.Note == "" {
				fmt.Fprintln(w, "  no entries in the range asked")
			}
			continue
		}
		fmt.Fprintf(w, "  %10s %6s %-12s %8s  %s\n", "index", "term", "type", "size", "payload")
		for _, e := range g.Entries {
			fmt.Fprintf(w, "  %10d %6d %-12s %8d  %s\n", e.Index, e.Term, e.Type, e.Size, e.Preview)
		}
	}
	if rep.Unlisted > 0 {
		fmt.Fprintf(w, "%d more group(s) hold only a HardState and are not named here; dump one with --group G\n", rep.Unlisted)
	}
	if len(rep.Absorbed) > 0 {
		fmt.Fprintf(w, "(opening the log would have written %d change(s) to disk, e.g. %s; they were kept in memory: the data directory is unchanged)\n",
			len(rep.Absorbed), rep.Absorbed[0])
	}
}
