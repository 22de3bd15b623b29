package snapshot

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/cockroachdb/datadriven"
	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/skiffdb/skiff/raftpb"
)

// TestTransferScripts runs testdata/transfer_*.txt and receive_*.txt:
// scripted transfers between a leader and a follower with cuts, corrupt
// chunks and crashes, printing what moved, what was resumed and linked, and
// what the follower holds. One chunk is in flight unless a script says
// otherwise, so that cuts land at the same byte every run.
//
//	leader [comp=none|snappy|zstd]      input: "name size seed" per line
//	follower-has index=N                same input; published on the follower
//	receive [cut=N] [chunk=N] [inflight=N] [flip=file@off] [extra=file]
//	held                                the follower's receiving directory
//	crash unsynced=P                    power loss of the follower, reopen
//	published                           the follower's latest snapshot, verified
func TestTransferScripts(t *testing.T) {
	var paths []string
	for _, pat := range []string{"testdata/transfer_*.txt", "testdata/receive_*.txt"} {
		m, err := filepath.Glob(pat)
		if err != nil {
			t.Fatal(err)
		}
		paths = append(paths, m...)
	}
	if len(paths) == 0 {
		t.Fatal("no transfer scripts found")
	}
	for _, path := range paths {
		t.Run(filepath.Base(path), func(t *testing.T) {
			e := &scriptEnv{}
			datadriven.RunTest(t, path, e.run)
		})
	}
}

type scriptEnv struct {
	leaderFS   vfs.FS
	followerFS *vfs.MemFS
	leader     *Store
	follower   *Store
	sender     *Sender
	files      []testFile
	req        InstallRequest
	moved      atomic.Int64 // wire bytes over all attempts, for cut=
}

func (e *scriptEnv) run(t *testing.T, d *datadriven.TestData) string {
	switch d.Cmd {
	case "leader":
		e.leaderFS, e.followerFS = vfs.NewMem(), vfs.NewCrashableMem()
		e.leader, e.follower = openStore(t, e.leaderFS, "leader"), openStore(t, e.followerFS, "follower")
		comp := map[string]raftpb.Compression{"": raftpb.NoCompression, "none": raftpb.NoCompression,
			"snappy": raftpb.Snappy, "zstd": raftpb.Zstd}[scriptArg(d, "comp")]
		e.files = scriptFiles(t, d.Input)
		m := publish(t, e.leader, 100, 3, comp, e.files)
		s, err := NewSender(SenderConfig{FS: e.leaderFS})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(s.Close)
		e.sender = s
		r, err := e.leader.OpenReader(0)
		if err != nil {
			t.Fatal(err)
		}
		id, err := s.Register(2, r)
		if err != nil {
			t.Fatal(err)
		}
		e.req = InstallRequest{From: 1, Meta: r.Meta(), Reader: id}
		return fmt.Sprintf("snapshot %d: %d files, %d bytes", m.Index, len(m.Files), metaSize(&m))
	case "follower-has":
		idx, _ := strconv.ParseUint(scriptArg(d, "index"), 10, 64)
		m := publish(t, e.follower, idx, 2, raftpb.NoCompression, scriptFiles(t, d.Input))
		return fmt.Sprintf("follower snapshot %d", m.Index)
	case "receive":
		return e.receive(t, d)
	case "held":
		return e.held(t)
	case "crash":
		pct, _ := strconv.Atoi(strings.TrimSuffix(scriptArg(d, "unsynced"), "%"))
		e.followerFS = e.followerFS.CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: pct, RNG: rand.New(rand.NewPCG(1, 2))})
		e.follower = openStore(t, e.followerFS, "follower")
		return "crashed and reopened"
	case "published":
		m, ok := e.follower.Latest()
		if !ok {
			return "none"
		}
		checkPublished(t, e.followerFS, e.follower, m.Index, e.files)
		return fmt.Sprintf("snapshot %d verified, identical to the leader's", m.Index)
	}
	t.Fatalf("unknown command %q", d.Cmd)
	return ""
}

func (e *scriptEnv) receive(t *testing.T, d *datadriven.TestData) string {
	cfg := ReceiverConfig{ChunkSize: 4096, InFlight: 1, SyncBytes: 8192}
	if v := scriptArg(d, "chunk"); v != "" {
		cfg.ChunkSize, _ = strconv.Atoi(v)
	}
	if v := scriptArg(d, "inflight"); v != "" {
		cfg.InFlight, _ = strconv.Atoi(v)
	}
	counter := &countingSource{FileSource: e.sender}
	var src FileSource = counter
	if v := scriptArg(d, "cut"); v != "" {
		n, _ := strconv.ParseInt(v, 10, 64)
		src = &cutSource{FileSource: counter, budget: e.moved.Load() + n, moved: &e.moved}
	}
	src = &mutateSource{FileSource: src, chunk: scriptMutation(d)}
	r := newTestReceiver(t, cfg)
	res, err := r.Receive(context.Background(), e.follower, e.req, src)
	if _, isCut := src.(*mutateSource).FileSource.(*cutSource); !isCut {
		e.moved.Add(counter.wire.Load())
	}
	var b strings.Builder
	if err != nil {
		fmt.Fprintf(&b, "error: %s (retryable=%v)\n", scriptErrClass(err), IsRetryable(err))
	} else {
		fmt.Fprintf(&b, "published %d\n", res.Meta.Index)
	}
	pr := res.Progress
	fmt.Fprintf(&b, "wire=%d moved=%d resumed=%d linked=%d gets=%d checksums=%d",
		counter.wire.Load(), pr.BytesMoved, pr.BytesResumed, pr.BytesLinked, counter.calls.Load(), counter.sums.Load())
	return b.String()
}

func (e *scriptEnv) held(t *testing.T) string {
	m, err := receivingMeta(e.follower)
	if err != nil {
		return "no receiving directory"
	}
	tx, err := e.follower.Receive(m)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Close()
	var b strings.Builder
	for _, f := range tx.Files() {
		fmt.Fprintf(&b, "%s: %d/%d", f.Name, f.Present, f.Size)
		if f.Linked {
			b.WriteString(" linked")
		}
		b.WriteString("\n")
	}
	return strings.TrimSuffix(b.String(), "\n")
}

// scriptMutation returns the chunk rewrite asked for by flip= or extra=.
func scriptMutation(d *datadriven.TestData) func(string, int64, []byte) ([]byte, error) {
	flip, extra := scriptArg(d, "flip"), scriptArg(d, "extra")
	return func(name string, off int64, b []byte) ([]byte, error) {
		if file, at, ok := strings.Cut(flip, "@"); ok && file == name {
			pos, _ := strconv.ParseInt(at, 10, 64)
			if pos >= off && pos < off+int64(len(b)) {
				b[pos-off] ^= 0x01
			}
		}
		if extra == name {
			b = append(b, 0xee)
		}
		return b, nil
	}
}

func scriptErrClass(err error) string {
	for _, c := range []struct {
		target error
		name   string
	}{
		{errConnReset, "connection reset"}, {ErrChunkPastEnd, "chunk past end"},
		{ErrFileChecksum, "file checksum"}, {ErrChunkCorrupt, "corrupt chunk"},
		{ErrBadFileName, "bad file name"}, {syscall.ENOSPC, "no space"},
		{ErrStale, "stale"}, {ErrProgressTimeout, "progress timeout"},
	} {
		if errors.Is(err, c.target) {
			return c.name
		}
	}
	return err.Error()
}

func scriptArg(d *datadriven.TestData, key string) string {
	for _, a := range d.CmdArgs {
		if a.Key == key && len(a.Vals) > 0 {
			return a.Vals[0]
		}
	}
	return ""
}

// scriptFiles parses "name size seed" lines.
func scriptFiles(t *testing.T, input string) []testFile {
	var files []testFile
	for _, line := range strings.Split(strings.TrimSpace(input), "\n") {
		var name string
		var size int
		var seed uint64
		if _, err := fmt.Sscan(line, &name, &size, &seed); err != nil {
			t.Fatalf("bad file line %q: %v", line, err)
		}
		files = append(files, testFile{name, testData(seed, size)})
	}
	return files
}
