package logdb

import (
	"fmt"
	"log/slog"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/cockroachdb/datadriven"
	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/cockroachdb/pebble/v2/vfs/errorfs"
	"github.com/skiffdb/skiff/raftpb"
)

// injector fails the next matching file operations (set by fail-next).
type injector struct {
	kind  atomic.Int32 // 0 none, 1 write, 2 sync, 3 rename, 4 remove, 5 create
	count atomic.Int32
	err   atomic.Value // error
	path  atomic.Value // string glob
}

func (in *injector) MaybeError(op errorfs.Op) error {
	k := in.kind.Load()
	if k == 0 || in.count.Load() <= 0 {
		return nil
	}
	var match bool
	switch op.Kind {
	case errorfs.OpFileWrite, errorfs.OpFileWriteAt:
		match = k == 1
	case errorfs.OpFileSync, errorfs.OpFileSyncData, errorfs.OpFileSyncTo:
		match = k == 2
	case errorfs.OpRename:
		match = k == 3
	case errorfs.OpRemove:
		match = k == 4
	case errorfs.OpCreate:
		match = k == 5
	}
	if p, _ := in.path.Load().(string); match && p != "" {
		match, _ = filepath.Match(p, filepath.Base(op.Path))
	}
	if !match || in.count.Add(-1) < 0 {
		return nil
	}
	return in.err.Load().(error)
}

func (in *injector) String() string { return "test injector" }

type ddEnv struct {
	mem  *vfs.MemFS
	inj  *injector
	db   *DB
	opts Options
}

func newDDEnv() *ddEnv {
	return &ddEnv{mem: vfs.NewCrashableMem(), inj: &injector{}}
}

func (e *ddEnv) fs() vfs.FS { return errorfs.Wrap(e.mem, e.inj) }

func (e *ddEnv) open() string {
	db, err := Open(e.fs(), "db", e.opts)
	if err != nil {
		return fmt.Sprintf("open error: %v\n", err)
	}
	e.db = db
	return "ok\n"
}

func (e *ddEnv) close() {
	if e.db != nil {
		e.db.Close()
		e.db = nil
	}
}

func arg(d *datadriven.TestData, key string, def uint64) uint64 {
	for _, a := range d.CmdArgs {
		if a.Key == key && len(a.Vals) > 0 {
			v, err := strconv.ParseUint(strings.TrimSuffix(a.Vals[0], "%"), 10, 64)
			if err != nil {
				d.Fatalf(nil, "%s: %v", key, err)
			}
			return v
		}
	}
	return def
}

// parseUpdate parses "g=1 ents=5-7@2 hs=term/vote/commit snap=index/term data=x".
func parseUpdate(t *testing.T, line string) Update {
	var u Update
	data := ""
	for _, f := range strings.Fields(line) {
		k, v, _ := strings.Cut(f, "=")
		switch k {
		case "g":
			n, _ := strconv.ParseUint(v, 10, 64)
			u.Group = raftpb.GroupID(n)
		case "data":
			data = v
		case "hs":
			var hs raftpb.HardState
			var vote uint64
			fmt.Sscanf(v, "%d/%d/%d", &hs.Term, &vote, &hs.Commit)
			hs.Vote = raftpb.ReplicaID(vote)
			u.HardState = hs
		case "snap":
			var m raftpb.SnapshotMeta
			fmt.Sscanf(v, "%d/%d", &m.Index, &m.Term)
			m.FormatVersion = raftpb.SnapshotFormatVersion
			m.Group = u.Group
			u.Snapshot = &m
		case "ents":
			var lo, hi, term uint64
			if _, err := fmt.Sscanf(v, "%d-%d@%d", &lo, &hi, &term); err != nil {
				t.Fatalf("ents=%s: %v", v, err)
			}
			for i := lo; i <= hi; i++ {
				u.Entries = append(u.Entries, raftpb.Entry{Index: i, Term: term})
			}
		default:
			t.Fatalf("unknown update field %q", k)
		}
	}
	for i := range u.Entries {
		u.Entries[i].Data = fmt.Appendf(nil, "%s%d", data, u.Entries[i].Index)
	}
	return u
}

func fmtEntries(ents []raftpb.Entry) string {
	if len(ents) == 0 {
		return "(none)"
	}
	var b strings.Builder
	for i, e := range ents {
		if i > 0 {
			b.WriteByte(' ')
		}
		if len(e.Data) <= 8 {
			fmt.Fprintf(&b, "%d@%d:%s", e.Index, e.Term, e.Data)
		} else {
			fmt.Fprintf(&b, "%d@%d:<%dB>", e.Index, e.Term, len(e.Data))
		}
	}
	return b.String()
}

func (e *ddEnv) state(g raftpb.GroupID) string {
	l := e.db.Group(g)
	hs, snap, _ := l.InitialState()
	first, _ := l.FirstIndex()
	last, _ := l.LastIndex()
	pt, _ := l.Term(first - 1)
	ents, err := l.Entries(first, last+1, 1<<62)
	s := fmt.Sprintf("g%d: hs=%d/%d/%d snap=%d/%d first=%d last=%d term(first-1)=%d\n  %s\n",
		g, hs.Term, hs.Vote, hs.Commit, snap.Index, snap.Term, first, last, pt, fmtEntries(ents))
	if err != nil {
		s += fmt.Sprintf("  entries error: %v\n", err)
	}
	return s
}

func (e *ddEnv) files() string {
	names, _ := e.mem.List("db")
	slices.Sort(names)
	var segs []string
	for _, n := range names {
		if strings.HasSuffix(n, ".wal") {
			segs = append(segs, n)
		}
	}
	live := ""
	if e.db != nil {
		live = fmt.Sprint(e.db.wal.Segments())
	}
	return fmt.Sprintf("files: %s\nlive: %s\n", strings.Join(segs, " "), live)
}

func (e *ddEnv) run(t *testing.T, d *datadriven.TestData) string {
	g := raftpb.GroupID(arg(d, "g", 1))
	errOr := func(err error) string {
		if err != nil {
			return fmt.Sprintf("error: %v\n", err)
		}
		return "ok\n"
	}
	if e.db == nil && !slices.Contains([]string{"open", "reopen", "crash-clone", "files", "fail-next"}, d.Cmd) {
		return "no open DB\n"
	}
	switch d.Cmd {
	case "open":
		e.opts = Options{SegmentSize: int64(arg(d, "segment-size", 4096)), CacheBytes: int64(arg(d, "cache", 1<<20)),
			MaxLogBytes: int64(arg(d, "max-log-bytes", 1<<40)), Logger: slog.New(slog.DiscardHandler), prepareInline: true}
		if d.HasArg("no-cache") {
			e.opts.CacheBytes = -1
		}
		return e.open()
	case "save":
		var us []Update
		for _, line := range strings.Split(strings.TrimSpace(d.Input), "\n") {
			if line = strings.TrimSpace(line); line != "" {
				us = append(us, parseUpdate(t, line))
			}
		}
		return errOr(e.db.SaveBatch(us))
	case "entries":
		ents, err := e.db.Group(g).Entries(arg(d, "lo", 0), arg(d, "hi", 0), arg(d, "max", 1<<62))
		if err != nil {
			return fmt.Sprintf("error: %v\n", err)
		}
		return fmtEntries(ents) + "\n"
	case "term":
		t, err := e.db.Group(g).Term(arg(d, "i", 0))
		if err != nil {
			return fmt.Sprintf("error: %v\n", err)
		}
		return fmt.Sprintf("%d\n", t)
	case "state":
		var b strings.Builder
		for _, a := range d.CmdArgs {
			if a.Key == "g" {
				for _, v := range a.Vals {
					n, _ := strconv.ParseUint(v, 10, 64)
					b.WriteString(e.state(raftpb.GroupID(n)))
				}
			}
		}
		return b.String()
	case "compact":
		return errOr(e.db.Compact(g, arg(d, "index", 0)))
	case "reset":
		m := raftpb.SnapshotMeta{Group: g, Index: arg(d, "index", 0), Term: arg(d, "term", 0), FormatVersion: raftpb.SnapshotFormatVersion}
		return errOr(e.db.ResetToSnapshot(g, m, d.HasArg("keep")))
	case "remove":
		return errOr(e.db.RemoveGroup(g))
	case "files":
		return e.files()
	case "over-limit":
		return fmt.Sprintf("%v\n", e.db.OverLimit())
	case "fail-next":
		var kind int32
		var opName string
		d.ScanArgs(t, "op", &opName)
		kind = map[string]int32{"write": 1, "sync": 2, "rename": 3, "remove": 4, "create": 5}[opName]
		var errName, path string
		errName = "eio"
		if d.HasArg("err") {
			d.ScanArgs(t, "err", &errName)
		}
		if d.HasArg("path") {
			d.ScanArgs(t, "path", &path)
		}
		e.inj.err.Store(map[string]error{"eio": syscall.EIO, "enospc": syscall.ENOSPC}[errName])
		e.inj.path.Store(path)
		e.inj.count.Store(int32(arg(d, "n", 1)))
		e.inj.kind.Store(kind)
		return "ok\n"
	case "crash-clone":
		// The clone keeps every synced byte and, per 4 KiB block or
		// directory entry, unsynced ones with the given probability.
		pct := int(arg(d, "unsynced", 0))
		seed := arg(d, "seed", 0)
		clone := e.mem.CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: pct, RNG: rand.New(rand.NewPCG(seed, seed))})
		e.close()
		e.mem = clone
		e.inj = &injector{}
		return e.open()
	case "reopen":
		e.close()
		e.inj = &injector{}
		return e.open()
	case "stats":
		s := e.db.Stats()
		return fmt.Sprintf("segments=%d groups=%d\n", s.Segments, s.Groups)
	}
	d.Fatalf(t, "unknown command %s", d.Cmd)
	return ""
}

func TestDataDriven(t *testing.T) {
	datadriven.Walk(t, "testdata", func(t *testing.T, path string) {
		e := newDDEnv()
		defer e.close()
		datadriven.RunTest(t, path, func(t *testing.T, d *datadriven.TestData) string {
			return e.run(t, d)
		})
	})
}
