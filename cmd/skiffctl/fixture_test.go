package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"maps"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/skiffdb/skiff"
	"github.com/skiffdb/skiff/statemachine"
)

// fixture is a stopped host's data directory with a published snapshot
// and an export, built once through the public API and shared read-only
// by the tests (tests that damage a snapshot copy it first).
type fixture struct {
	data       string // the host's Dir
	exportPath string // where the export was written
	exportDir  string // exportPath/snapshot-<exportIndex>
	snapIndex  uint64 // the published snapshot
	snapDir    string
	exportIdx  uint64
	first      uint64 // the log's first and last index at Close
	last       uint64
	addr       string // replica 1's Raft address
}

var (
	fixOnce sync.Once
	fix     *fixture
	fixErr  error
	fixRoot string
)

func TestMain(m *testing.M) {
	before := runtime.NumGoroutine()
	code := m.Run()
	if fixRoot != "" {
		os.RemoveAll(fixRoot)
	}
	// Leak check: every goroutine the hosts, the log dumps and the HTTP
	// clients started has ended.
	if code == 0 {
		deadline := time.Now().Add(10 * time.Second)
		for runtime.NumGoroutine() > before {
			if time.Now().After(deadline) {
				buf := make([]byte, 1<<20)
				fmt.Fprintf(os.Stderr, "goroutine leak: %d before the tests, %d after:\n%s",
					before, runtime.NumGoroutine(), buf[:runtime.Stack(buf, true)])
				code = 1
				break
			}
			runtime.Gosched()
			<-time.After(10 * time.Millisecond)
		}
	}
	os.Exit(code)
}

// getFixture builds the shared fixture on first use.
func getFixture(t *testing.T) *fixture {
	t.Helper()
	fixOnce.Do(func() {
		fixRoot, fixErr = os.MkdirTemp("", "skiffctl-fixture-")
		if fixErr == nil {
			fix, fixErr = buildFixture(fixRoot)
		}
	})
	if fixErr != nil {
		t.Fatalf("fixture: %v", fixErr)
	}
	return fix
}

// buildFixture runs one host with group 1 (one replica over TCP on
// 127.0.0.1): 20 writes, a snapshot (the log keeps 5 entries below it),
// 5 writes, an export, one more write, Close.
func buildFixture(root string) (*fixture, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	f := &fixture{data: filepath.Join(root, "host"), exportPath: filepath.Join(root, "export")}
	if err := os.MkdirAll(f.exportPath, 0o755); err != nil {
		return nil, err
	}
	h, err := skiff.Open(skiff.HostConfig{Dir: f.data, RaftAddr: "127.0.0.1:0", DeploymentID: 7,
		TickInterval: 10 * time.Millisecond, LogSegmentBytes: 1 << 20})
	if err != nil {
		return nil, err
	}
	defer h.Close()
	f.addr = h.RaftAddr()
	gc := skiff.GroupConfig{GroupID: 1, ReplicaID: 1, Members: map[skiff.ReplicaID]string{1: f.addr}, CompactionOverhead: 5}
	if err := h.StartGroup(ctx, gc, newTestKV); err != nil {
		return nil, err
	}
	if _, err := h.WaitLeader(ctx, 1); err != nil {
		return nil, err
	}
	put := func(from, to int) error {
		for i := from; i < to; i++ {
			if _, err := h.Propose(ctx, 1, fmt.Appendf(nil, "k%d=v%d", i, i)); err != nil {
				return err
			}
		}
		return nil
	}
	if err := put(0, 20); err != nil {
		return nil, err
	}
	if f.snapIndex, err = h.RequestSnapshot(ctx, 1, skiff.SnapshotOption{}); err != nil {
		return nil, err
	}
	if err := put(20, 25); err != nil {
		return nil, err
	}
	if f.exportIdx, err = h.RequestSnapshot(ctx, 1, skiff.SnapshotOption{Exported: true, ExportPath: f.exportPath}); err != nil {
		return nil, err
	}
	// Lost by a recovery from the export.
	if _, err := h.Propose(ctx, 1, []byte("late=1")); err != nil {
		return nil, err
	}
	st, err := h.GroupStatus(1)
	if err != nil {
		return nil, err
	}
	f.first, f.last = st.FirstIndex, st.LastIndex
	if err := h.Close(); err != nil {
		return nil, err
	}
	f.snapDir = filepath.Join(groupSnapshotDir(f.data, 1), publishedName(f.snapIndex))
	f.exportDir = filepath.Join(f.exportPath, publishedName(f.exportIdx))
	return f, nil
}

// testKV is a map of "k=v" commands; its snapshot is "k=v\n" lines.
type testKV struct {
	mu   sync.Mutex
	data map[string]string
}

func newTestKV(group, replica uint64) statemachine.StateMachine {
	return &testKV{data: map[string]string{}}
}

func (s *testKV) Apply(ents []statemachine.Entry) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, e := range ents {
		k, v, _ := strings.Cut(string(e.Cmd), "=")
		s.data[k] = v
	}
	return nil
}

func (s *testKV) Lookup(q []byte) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, ok := s.data[string(q)]
	if !ok {
		return nil, nil
	}
	return []byte(v), nil
}

func (s *testKV) Snapshot() (statemachine.Snapshot, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return kvSnap(maps.Clone(s.data)), nil
}

func (s *testKV) Restore(_ context.Context, r io.Reader, _ []statemachine.SnapshotFile) error {
	data := map[string]string{}
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), "=")
		if !ok {
			return fmt.Errorf("bad snapshot line %q", sc.Text())
		}
		data[k] = v
	}
	if err := sc.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	s.data = data
	s.mu.Unlock()
	return nil
}

func (s *testKV) Close() error { return nil }

type kvSnap map[string]string

func (m kvSnap) Save(_ context.Context, w io.Writer, _ statemachine.FileCollection) error {
	var b bytes.Buffer
	for _, k := range slices.Sorted(maps.Keys(m)) {
		fmt.Fprintf(&b, "%s=%s\n", k, m[k])
	}
	_, err := w.Write(b.Bytes())
	return err
}

func (m kvSnap) Release() {}

// runCmd runs skiffctl in process.
func runCmd(args ...string) (code int, stdout, stderr string) {
	var o, e bytes.Buffer
	code = run(args, &o, &e)
	return code, o.String(), e.String()
}

// copyTree copies dir (files and directories) to dst.
func copyTree(t *testing.T, dir, dst string) {
	t.Helper()
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		to := filepath.Join(dst, rel)
		if d.IsDir() {
			return os.MkdirAll(to, 0o755)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(to, b, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// treeDigest describes every file under dir (name, mode, size, bytes) so
// that a test can tell whether a command changed anything.
func treeDigest(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		desc := fmt.Sprintf("%v %d", info.Mode(), info.Size())
		if info.Mode().IsRegular() {
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			desc += fmt.Sprintf(" %x", sha256.Sum256(b))
		}
		out[p] = desc
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// freeAddr returns a loopback address nobody listens on right now.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}
