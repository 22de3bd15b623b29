package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/skiffdb/skiff"
	"github.com/skiffdb/skiff/internal/logdb"
	"github.com/skiffdb/skiff/raftpb"
)

// TestLogDump: the groups of a stopped host, then group 1's entries, and
// the data directory unchanged although opening the log writes.
func TestLogDump(t *testing.T) {
	f := getFixture(t)
	before := treeDigest(t, f.data)

	code, out, errOut := runCmd("log", "dump", "--data", f.data, "--json")
	if code != exitOK {
		t.Fatalf("exit %d\n%s%s", code, out, errOut)
	}
	var rep dumpReport
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, out)
	}
	if len(rep.Groups) != 1 || rep.Unlisted != 0 {
		t.Fatalf("groups %+v (unlisted %d), want group 1 only", rep.Groups, rep.Unlisted)
	}
	g := rep.Groups[0]
	if g.Group != 1 || g.FirstIndex != f.first || g.LastIndex != f.last {
		t.Fatalf("group %+v, want entries [%d, %d]", g, f.first, f.last)
	}
	if g.Snapshot == nil || g.Snapshot.Index != f.snapIndex || g.HardState.Commit < f.snapIndex || g.HardState.Commit > f.last ||
		g.HardState.Vote != 1 || g.HardState.Term == 0 || g.LogBytes <= 0 {
		t.Fatalf("group %+v: want snapshot %d, commit in [%d, %d], vote 1, log bytes", g, f.snapIndex, f.snapIndex, f.last)
	}
	if g.Entries != nil {
		t.Fatalf("entries without --group: %d", len(g.Entries))
	}
	// A cleanly stopped log opens without writing.
	if len(rep.Absorbed) != 0 {
		t.Errorf("absorbed writes opening a clean log: %q", rep.Absorbed)
	}
	if after := treeDigest(t, f.data); !maps.Equal(before, after) {
		for k, v := range after {
			if before[k] != v {
				t.Errorf("changed or new: %s", k)
			}
		}
		for k := range before {
			if _, ok := after[k]; !ok {
				t.Errorf("removed: %s", k)
			}
		}
		t.Fatalf("log dump changed the data directory")
	}

	// Entries of group 1, all of them.
	code, out, errOut = runCmd("log", "dump", "--data", f.data, "--group", "1", "--json")
	if code != exitOK {
		t.Fatalf("exit %d\n%s%s", code, out, errOut)
	}
	rep = dumpReport{}
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatal(err)
	}
	ents := rep.Groups[0].Entries
	if uint64(len(ents)) != f.last-f.first+1 || ents[0].Index != f.first || ents[len(ents)-1].Index != f.last {
		t.Fatalf("%d entries from %d, want [%d, %d]", len(ents), ents[0].Index, f.first, f.last)
	}
	if last := ents[len(ents)-1]; last.Type != "Normal" || !strings.Contains(last.Preview, `"late=1"`) || last.Size <= len("late=1") {
		t.Fatalf("last entry %+v, want the proposal late=1", last)
	}

	// A range, in text.
	from, to := f.last-3, f.last-2
	code, out, _ = runCmd("log", "dump", "--data", f.data, "--group", "1", "--from", itoa(from), "--to", itoa(to))
	if code != exitOK {
		t.Fatalf("exit %d\n%s", code, out)
	}
	lines := entryLines(out)
	if len(lines) != 2 || !strings.HasPrefix(strings.TrimSpace(lines[0]), itoa(from)+" ") {
		t.Fatalf("range [%d, %d]: lines %q\n%s", from, to, lines, out)
	}
	// k22 was written at last-3 (k20..k24, late); a preview shows it.
	if !strings.Contains(out, `"k22=v22"`) {
		t.Fatalf("no preview of k22=v22:\n%s", out)
	}

	// A compacted range, and a group the log does not hold.
	code, out, _ = runCmd("log", "dump", "--data", f.data, "--group", "1", "--from", "1", "--to", "3")
	if code != exitOK || len(entryLines(out)) != 0 || !strings.Contains(out, "[1, 3] is compacted: the log starts at "+itoa(f.first)) {
		t.Fatalf("compacted range: exit %d\n%s", code, out)
	}
	code, _, errOut = runCmd("log", "dump", "--data", f.data, "--group", "9")
	if code != exitFail || !strings.Contains(errOut, "group 9 is not in the log") {
		t.Fatalf("unknown group: exit %d %q", code, errOut)
	}
}

// TestLogDumpWritesNothing: opening a log with leftovers removes them
// (a stray segment, a manifest temp file); a dump leaves them on disk and
// says what it kept in memory instead.
func TestLogDumpWritesNothing(t *testing.T) {
	f := getFixture(t)
	data := filepath.Join(t.TempDir(), "host")
	copyTree(t, f.data, data)
	stray := filepath.Join(logDir(data), "000099.wal")
	for _, p := range []string{stray, filepath.Join(logDir(data), "MANIFEST.tmp")} {
		if err := os.WriteFile(p, []byte("leftover"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	before := treeDigest(t, data)
	code, out, errOut := runCmd("log", "dump", "--data", data, "--json")
	if code != exitOK {
		t.Fatalf("exit %d\n%s%s", code, out, errOut)
	}
	var rep dumpReport
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(rep.Absorbed, "remove "+stray) {
		t.Fatalf("absorbed %q, want the removal of %s", rep.Absorbed, stray)
	}
	if len(rep.Groups) != 1 || rep.Groups[0].LastIndex != f.last {
		t.Fatalf("groups %+v", rep.Groups)
	}
	if after := treeDigest(t, data); !maps.Equal(before, after) {
		t.Fatalf("log dump changed the data directory")
	}
	// Opened directly, the same log loses the leftovers: without the
	// overlay, the dump would have changed the directory.
	db, err := logdb.Open(vfs.Default, logDir(data), logdb.Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	db.Close()
	if _, err := os.Stat(stray); !os.IsNotExist(err) {
		t.Fatalf("logdb.Open kept the stray segment (%v): the test shows nothing", err)
	}
}

// entryLines returns the entry rows of a text dump: those that start with
// an index.
func entryLines(out string) []string {
	var rows []string
	for _, l := range strings.Split(out, "\n") {
		if f := strings.Fields(l); strings.HasPrefix(l, "  ") && len(f) > 0 {
			if _, err := strconv.ParseUint(f[0], 10, 64); err == nil {
				rows = append(rows, l)
			}
		}
	}
	return rows
}

// TestLogDumpRefusesRunningHost: a host holding the log is detected by
// the log's lock, and nothing is read.
func TestLogDumpRefusesRunningHost(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	dir := t.TempDir()
	h, err := skiff.Open(skiff.HostConfig{Dir: dir, RaftAddr: "127.0.0.1:0", DeploymentID: 7, TickInterval: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	if err := h.StartGroup(ctx, skiff.GroupConfig{GroupID: 3, ReplicaID: 1, Members: map[skiff.ReplicaID]string{1: h.RaftAddr()}}, newTestKV); err != nil {
		t.Fatal(err)
	}
	if _, err := h.WaitLeader(ctx, 3); err != nil {
		t.Fatal(err)
	}
	code, out, errOut := runCmd("log", "dump", "--data", dir)
	if code != exitFail || !strings.Contains(errOut, "a server is running on this data directory") {
		t.Fatalf("dump of a running host: exit %d\n%s%s", code, out, errOut)
	}
	// Once stopped, it dumps: group 3, found by its snapshot store.
	if err := h.Close(); err != nil {
		t.Fatal(err)
	}
	code, out, errOut = runCmd("log", "dump", "--data", dir)
	if code != exitOK || !strings.Contains(out, "group 3: entries") {
		t.Fatalf("dump after stop: exit %d\n%s%s", code, out, errOut)
	}
}

func TestLogDumpUsage(t *testing.T) {
	for _, args := range [][]string{
		{"log", "dump"},
		{"log", "dump", "--data", "x", "--from", "3"},
		{"log", "dump", "--data", "x", "--group", "1", "--from", "9", "--to", "3"},
		{"log", "dump", "--data", "x", "--group", "one"},
		{"log", "dump", "--data", "x", "extra"},
	} {
		code, out, errOut := runCmd(args...)
		if code != exitUsage || out != "" || !strings.Contains(errOut, "Usage:") {
			t.Errorf("%q: exit %d, stdout %q, stderr %q", args, code, out, errOut)
		}
	}
	code, _, errOut := runCmd("log", "dump", "--data", t.TempDir())
	if code != exitFail || !strings.Contains(errOut, "no log at") {
		t.Fatalf("empty dir: exit %d %q", code, errOut)
	}
}

// TestPreview: the payload previews an operator sees.
func TestPreview(t *testing.T) {
	cc := raftpb.ConfChange{Changes: []raftpb.ConfChangeSingle{{Type: raftpb.AddVoter, Replica: 4, Addr: "10.0.0.4:7000"}}}
	proposal := append([]byte{1, 1, 7, 0, 0, 0, 0, 0, 0, 0}, "put\x00x"...)
	long := strings.Repeat("a", 100)
	for _, c := range []struct {
		t    raftpb.EntryType
		data []byte
		want string
	}{
		{raftpb.EntryNoOp, nil, ""},
		{raftpb.EntryConfigChange, cc.Marshal(), "AddVoter 4 10.0.0.4:7000"},
		{raftpb.EntryConfigChange, []byte{9}, `undecodable: "\x09"`},
		{raftpb.EntryNormal, proposal, `"put\x00x"`},
		{raftpb.EntryNormal, append([]byte{1, 2, 7, 0, 0, 0, 0, 0, 0, 0, 5, 0, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0}, "x=1"...), `client 5 series 3: "x=1"`},
		{raftpb.EntryNormal, []byte(long), fmt.Sprintf(`"%s"... (+52 bytes)`, long[:48])},
		{raftpb.EntrySession, []byte{1, 3, 1, 0, 0, 0, 0, 0, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0}, "register session client 9"},
	} {
		if got := preview(c.t, c.data); got != c.want {
			t.Errorf("preview(%v, %q) = %q, want %q", c.t, c.data, got, c.want)
		}
	}
}
