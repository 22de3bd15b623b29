package snapshot

import (
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/cockroachdb/datadriven"
	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/skiffdb/skiff/raftpb"
)

// TestStoreScripts runs the store's datadriven scripts: golden traces of
// the file operations of save, publish, receive and GC, and crash points
// inside them. Regenerate with -rewrite after reading the diff.
//
// Commands:
//
//	open [retained=N]                  (re)open the store, print cleanup and state
//	save index=I [data=S] [files=(n=S,...)] [stop-before=OP]
//	receive-begin index=I files=(n=S,...)   create or resume a ReceiveTx
//	receive-write name=N [n=K]         append the next K bytes (all by default), sync, close
//	receive-commit | receive-close | receive-abort
//	ref index=I | unref index=I | gc
//	stop-before op=OP                  the next change OP (a trace line; OP* a prefix) crashes the world
//	crash-clone unsynced=P% [seed=S]   the disk after a power cut now
//	corrupt file=PATH (flip=OFF | truncate=N | delete)
//	verify [index=I]                   full CRC verification
//	ls                                 the directory tree
func TestStoreScripts(t *testing.T) {
	datadriven.Walk(t, "testdata", func(t *testing.T, path string) {
		base := path[strings.LastIndex(path, "/")+1:]
		if !strings.HasPrefix(base, "store_") {
			return // other scripts belong to other tests
		}
		h := newScriptHarness()
		datadriven.RunTest(t, path, h.run)
	})
}

type scriptHarness struct {
	mem     *vfs.MemFS
	fs      *tracingFS
	s       *Store
	readers map[uint64][]*Reader
	tx      *ReceiveTx
	// want holds the content each receiving file should end up with.
	want map[string]string
}

const scriptDir = "/g1"

func newScriptHarness() *scriptHarness {
	h := &scriptHarness{mem: vfs.NewCrashableMem(), readers: map[uint64][]*Reader{}}
	h.fs = newTracingFS(h.mem)
	return h
}

func (h *scriptHarness) run(t *testing.T, td *datadriven.TestData) string {
	h.fs.take()
	out, err := h.cmd(t, td)
	var b strings.Builder
	for _, op := range h.fs.take() {
		b.WriteString(op)
		b.WriteByte('\n')
	}
	b.WriteString(out)
	if err != nil {
		fmt.Fprintf(&b, "error: %v\n", err)
	} else if out == "" {
		b.WriteString("ok\n")
	}
	return b.String()
}

func (h *scriptHarness) cmd(t *testing.T, td *datadriven.TestData) (string, error) {
	switch td.Cmd {
	case "open":
		retained := 0
		td.MaybeScanArgs(t, "retained", &retained)
		h.readers = map[uint64][]*Reader{}
		h.tx = nil
		s, err := Open(h.fs, scriptDir, Options{Group: 1, Retained: retained})
		if err != nil {
			return "", err
		}
		h.s = s
		return h.state(), nil

	case "save":
		var index uint64
		td.ScanArgs(t, "index", &index)
		if arg, ok := td.Arg("stop-before"); ok {
			h.stopBefore(arg.SingleVal(t))
		}
		w, err := h.s.Create(testMeta(index))
		if err != nil {
			return "", err
		}
		defer w.Abort()
		if arg, ok := td.Arg("data"); ok {
			if _, err := io.WriteString(w, arg.SingleVal(t)); err != nil {
				return "", err
			}
		}
		for _, kv := range fileArgs(t, td) {
			fw, err := w.CreateFile(kv[0])
			if err != nil {
				return "", err
			}
			if _, err := io.WriteString(fw, kv[1]); err != nil {
				return "", err
			}
			if err := fw.Close(); err != nil {
				return "", err
			}
		}
		return "", w.Commit()

	case "receive-begin":
		var index uint64
		td.ScanArgs(t, "index", &index)
		m := testMeta(index)
		h.want = map[string]string{}
		for _, kv := range fileArgs(t, td) {
			m.Files = append(m.Files, raftpb.SnapshotFile{Name: kv[0], Size: uint64(len(kv[1])), CRC32C: crc32c(0, []byte(kv[1]))})
			h.want[kv[0]] = kv[1]
		}
		tx, err := h.s.Receive(m)
		if err != nil {
			return "", err
		}
		h.tx = tx
		var b strings.Builder
		fmt.Fprintf(&b, "resumed=%v\n", tx.Resumed())
		for _, f := range tx.Files() {
			fmt.Fprintf(&b, "%s: %d/%d linked=%v\n", f.Name, f.Present, f.Size, f.Linked)
		}
		return b.String(), nil

	case "receive-write":
		var name string
		td.ScanArgs(t, "name", &name)
		want := h.want[name]
		var st FileState
		for _, f := range h.tx.Files() {
			if f.Name == name {
				st = f
			}
		}
		n := len(want) - int(st.Present)
		td.MaybeScanArgs(t, "n", &n)
		if arg, ok := td.Arg("stop-before"); ok {
			h.stopBefore(arg.SingleVal(t))
		}
		rf, err := h.tx.OpenFile(name, st.Present)
		if err != nil {
			return "", err
		}
		end := min(int(st.Present)+n, len(want))
		if arg, ok := td.Arg("content"); ok { // write these bytes instead
			want = arg.SingleVal(t)
			end = min(int(st.Present)+n, len(want))
		}
		if _, err := io.WriteString(rf, want[st.Present:end]); err != nil {
			rf.Close()
			return "", err
		}
		return "", rf.Close()

	case "receive-commit":
		if arg, ok := td.Arg("stop-before"); ok {
			h.stopBefore(arg.SingleVal(t))
		}
		return "", h.tx.Commit()
	case "receive-close":
		return "", h.tx.Close()
	case "receive-abort":
		return "", h.tx.Abort()

	case "ref":
		var index uint64
		td.ScanArgs(t, "index", &index)
		r, err := h.s.OpenReader(index)
		if err != nil {
			return "", err
		}
		h.readers[index] = append(h.readers[index], r)
		return "", nil
	case "unref":
		var index uint64
		td.ScanArgs(t, "index", &index)
		rs := h.readers[index]
		if len(rs) == 0 {
			return "", fmt.Errorf("no reader of %d", index)
		}
		h.readers[index] = rs[1:]
		return "", rs[0].Close()
	case "gc":
		return "", h.s.GC()

	case "stop-before":
		var op string
		td.ScanArgs(t, "op", &op)
		h.stopBefore(op)
		return "", nil

	case "crash-clone":
		var pct string
		td.ScanArgs(t, "unsynced", &pct)
		p, err := strconv.Atoi(strings.TrimSuffix(pct, "%"))
		if err != nil {
			t.Fatalf("unsynced=%s: %v", pct, err)
		}
		seed := uint64(1)
		td.MaybeScanArgs(t, "seed", &seed)
		cfg := vfs.CrashCloneCfg{UnsyncedDataPercent: p}
		if p > 0 {
			cfg.RNG = rand.New(rand.NewPCG(seed, seed))
		}
		h.mem = h.mem.CrashClone(cfg)
		h.fs = newTracingFS(h.mem)
		h.s = nil
		return "", nil

	case "corrupt":
		var file string
		td.ScanArgs(t, "file", &file)
		return "", h.corrupt(t, td, scriptDir+"/"+file)

	case "verify":
		var index uint64
		td.MaybeScanArgs(t, "index", &index)
		r, err := h.s.OpenReader(index)
		if err != nil {
			return "", err
		}
		defer r.Close()
		return "", r.Verify()

	case "ls":
		return h.ls(), nil
	}
	t.Fatalf("unknown command %q", td.Cmd)
	return "", nil
}

// stopBefore makes the first change whose trace line is op (or starts
// with op's prefix when op ends in '*') crash the world; crash-clone then
// takes what the disk holds.
func (h *scriptHarness) stopBefore(op string) {
	h.fs.setBefore(func(o string) error {
		if o == op || (strings.HasSuffix(op, "*") && strings.HasPrefix(o, op[:len(op)-1])) {
			h.fs.dead = true
			return errCrashed
		}
		return nil
	})
}

func (h *scriptHarness) corrupt(t *testing.T, td *datadriven.TestData, path string) error {
	if td.HasArg("delete") {
		return h.mem.Remove(path)
	}
	f, err := h.mem.Open(path)
	if err != nil {
		return err
	}
	b, err := io.ReadAll(f)
	f.Close()
	if err != nil {
		return err
	}
	if arg, ok := td.Arg("flip"); ok {
		off, _ := strconv.Atoi(arg.SingleVal(t))
		b[off] ^= 0x01
	}
	if arg, ok := td.Arg("truncate"); ok {
		n, _ := strconv.Atoi(arg.SingleVal(t))
		b = b[:n]
	}
	nf, err := h.mem.Create(path, vfs.WriteCategoryUnspecified)
	if err != nil {
		return err
	}
	nf.Write(b)
	nf.Sync()
	return nf.Close()
}

// state prints the store's snapshots, newest first, with their DataFile.
func (h *scriptHarness) state() string {
	var b strings.Builder
	list := h.s.List()
	if len(list) == 0 {
		b.WriteString("no snapshots\n")
	}
	for i := len(list) - 1; i >= 0; i-- {
		m := list[i]
		label := "snapshot"
		if i == len(list)-1 {
			label = "latest"
		}
		fmt.Fprintf(&b, "%s: index=%d", label, m.Index)
		if _, ok := fileOf(&m, DataFile); ok {
			fmt.Fprintf(&b, " data=%s", h.read(m.Index, DataFile))
		}
		for _, f := range m.Files {
			if f.Name != DataFile {
				fmt.Fprintf(&b, " %s=%s", f.Name, h.read(m.Index, f.Name))
			}
		}
		b.WriteByte('\n')
	}
	for _, sk := range h.s.Skipped() {
		fmt.Fprintf(&b, "skipped: index=%d -> %s: %v\n", sk.Index, sk.Dir, sk.Err)
	}
	return b.String()
}

func (h *scriptHarness) read(index uint64, name string) string {
	r, err := h.s.OpenReader(index)
	if err != nil {
		return "<" + err.Error() + ">"
	}
	defer r.Close()
	f, err := r.OpenFile(name)
	if err != nil {
		return "<" + err.Error() + ">"
	}
	defer f.Close()
	data, _ := io.ReadAll(f)
	return string(data)
}

func (h *scriptHarness) ls() string {
	var lines []string
	var walk func(dir, prefix string)
	walk = func(dir, prefix string) {
		names, _ := h.mem.List(dir)
		sort.Strings(names)
		for _, n := range names {
			p := dir + "/" + n
			fi, err := h.mem.Stat(p)
			if err != nil {
				continue
			}
			if fi.IsDir() {
				lines = append(lines, prefix+n+"/")
				walk(p, prefix+"  ")
			} else {
				lines = append(lines, fmt.Sprintf("%s%s (%d)", prefix, n, fi.Size()))
			}
		}
	}
	walk(scriptDir, "")
	if len(lines) == 0 {
		return "empty\n"
	}
	return strings.Join(lines, "\n") + "\n"
}

// fileArgs parses files=(a=xx,b=yy) into name/content pairs, in order.
func fileArgs(t *testing.T, td *datadriven.TestData) [][2]string {
	arg, ok := td.Arg("files")
	if !ok {
		return nil
	}
	var out [][2]string
	for _, v := range arg.Vals {
		name, content, found := strings.Cut(v, "=")
		if !found {
			t.Fatalf("files: %q is not name=content", v)
		}
		out = append(out, [2]string{name, content})
	}
	return slices.Clip(out)
}
