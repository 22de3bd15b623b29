package snapshot

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/skiffdb/skiff/raftpb"
)

// Test helpers shared by the transfer tests: snapshots with known content,
// a leader/follower pair, and FileSource wrappers that count, cut, corrupt
// or block.

type testFile struct {
	name string
	data []byte
}

// testData returns n bytes that are deterministic for seed and compress
// about 2:1 (random bytes with runs), so compression paths do real work.
func testData(seed uint64, n int) []byte {
	rng := rand.New(rand.NewPCG(seed, 7))
	b := make([]byte, n)
	for i := 0; i < n; {
		if rng.IntN(2) == 0 {
			run := min(1+rng.IntN(64), n-i)
			c := byte(rng.IntN(4))
			for k := range run {
				b[i+k] = c
			}
			i += run
			continue
		}
		b[i] = byte(rng.Uint32())
		i++
	}
	return b
}

// multiFile returns four files of uneven sizes totalling about total bytes.
func multiFile(seed uint64, total int) []testFile {
	parts := []struct {
		name string
		frac float64
	}{{"data", 0.4}, {"index", 0.3}, {"blob-000001.sst", 0.2}, {"tail", 0.1}}
	fs := make([]testFile, len(parts))
	for i, p := range parts {
		n := int(float64(total)*p.frac) + i*17 // not chunk-aligned
		fs[i] = testFile{p.name, testData(seed+uint64(i), n)}
	}
	return fs
}

func filesSize(files []testFile) int64 {
	var n int64
	for _, f := range files {
		n += int64(len(f.data))
	}
	return n
}

// publish saves files as snapshot index of group into a store at dir.
func publish(t testing.TB, st *Store, index, term uint64, comp raftpb.Compression, files []testFile) raftpb.SnapshotMeta {
	t.Helper()
	w, err := st.Create(raftpb.SnapshotMeta{
		Group: 1, Index: index, Term: term, Compression: comp,
		Membership: raftpb.Membership{Voters: []raftpb.Member{{ID: 1, Addr: "a"}, {ID: 2, Addr: "b"}}},
	})
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	defer w.Abort()
	for _, f := range files {
		fw, err := w.CreateFile(f.name)
		if err != nil {
			t.Fatalf("create file: %v", err)
		}
		if _, err := fw.Write(f.data); err != nil {
			t.Fatalf("write: %v", err)
		}
		if err := fw.Close(); err != nil {
			t.Fatalf("close: %v", err)
		}
	}
	if err := w.Commit(); err != nil {
		t.Fatalf("commit: %v", err)
	}
	m, ok := st.Latest()
	if !ok || m.Index != index {
		t.Fatalf("latest after publish: %+v %v", m, ok)
	}
	return m
}

func openStore(t testing.TB, fs vfs.FS, dir string) *Store {
	t.Helper()
	st, err := Open(fs, dir, Options{Group: 1})
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	return st
}

// pair is a leader with a published snapshot and a follower to receive it.
type pair struct {
	leaderFS, followerFS vfs.FS
	leader, follower     *Store
	sender               *Sender
	meta                 raftpb.SnapshotMeta
	files                []testFile
}

func newPair(t testing.TB, files []testFile, comp raftpb.Compression) *pair {
	t.Helper()
	p := &pair{leaderFS: vfs.NewMem(), followerFS: vfs.NewCrashableMem(), files: files}
	p.leader = openStore(t, p.leaderFS, "leader")
	p.follower = openStore(t, p.followerFS, "follower")
	p.meta = publish(t, p.leader, 100, 3, comp, files)
	s, err := NewSender(SenderConfig{FS: p.leaderFS})
	if err != nil {
		t.Fatal(err)
	}
	p.sender = s
	t.Cleanup(s.Close)
	return p
}

// serveLatest starts a Sender configured by cfg (closed with the test) and
// registers the latest snapshot of st for peer 2.
func serveLatest(t testing.TB, st *Store, cfg SenderConfig) (*Sender, ReaderID) {
	t.Helper()
	s, err := NewSender(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	h, err := st.OpenReader(0)
	if err != nil {
		t.Fatal(err)
	}
	id, err := s.Register(2, h)
	if err != nil {
		t.Fatal(err)
	}
	return s, id
}

// register opens the leader's latest snapshot and registers a reader.
func (p *pair) register(t testing.TB) InstallRequest {
	t.Helper()
	r, err := p.leader.OpenReader(0)
	if err != nil {
		t.Fatal(err)
	}
	id, err := p.sender.Register(2, r)
	if err != nil {
		t.Fatal(err)
	}
	return InstallRequest{From: 1, Meta: r.Meta(), Reader: id}
}

func newTestReceiver(t testing.TB, cfg ReceiverConfig) *Receiver {
	t.Helper()
	if cfg.ChunkSize == 0 {
		cfg.ChunkSize = 64 << 10
	}
	r, err := NewReceiver(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Close)
	return r
}

// checkPublished asserts that st's latest snapshot is index with exactly
// the given files, verified.
func checkPublished(t testing.TB, fs vfs.FS, st *Store, index uint64, files []testFile) {
	t.Helper()
	r, err := st.OpenReader(0)
	if err != nil {
		t.Fatalf("no published snapshot: %v", err)
	}
	defer r.Close()
	if r.Index() != index {
		t.Fatalf("latest snapshot %d, want %d", r.Index(), index)
	}
	if err := r.Verify(); err != nil {
		t.Fatalf("verify: %v", err)
	}
	if got := r.Files(); len(got) != len(files) {
		t.Fatalf("%d files, want %d", len(got), len(files))
	}
	for _, f := range files {
		fr, err := r.OpenFile(f.name)
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(fr)
		fr.Close()
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, f.data) {
			t.Fatalf("file %s differs: %d bytes, want %d", f.name, len(got), len(f.data))
		}
	}
}

// countingSource counts what moves over a FileSource.
type countingSource struct {
	FileSource
	wire, calls, metas, sums atomic.Int64
}

func (c *countingSource) Meta(ctx context.Context, id ReaderID) (raftpb.SnapshotMeta, error) {
	c.metas.Add(1)
	return c.FileSource.Meta(ctx, id)
}

func (c *countingSource) GetFile(ctx context.Context, id ReaderID, name string, off, n int64, buf []byte) ([]byte, error) {
	c.calls.Add(1)
	b, err := c.FileSource.GetFile(ctx, id, name, off, n, buf)
	c.wire.Add(int64(len(b)))
	return b, err
}

func (c *countingSource) Checksum(ctx context.Context, id ReaderID, name string, n int64) (uint32, error) {
	c.sums.Add(1)
	return c.FileSource.Checksum(ctx, id, name, n)
}

var errConnReset = errors.New("connection reset by peer (test)")

// cutSource breaks like a connection once budget bytes have moved: every
// call after that fails, including those already in flight.
type cutSource struct {
	FileSource
	budget int64
	moved  *atomic.Int64 // shared across attempts: bytes ever moved
}

func (c *cutSource) GetFile(ctx context.Context, id ReaderID, name string, off, n int64, buf []byte) ([]byte, error) {
	if c.moved.Load() >= c.budget {
		return nil, errConnReset
	}
	b, err := c.FileSource.GetFile(ctx, id, name, off, n, buf)
	if err != nil {
		return nil, err
	}
	if c.moved.Add(int64(len(b))) > c.budget+int64(len(b)) {
		return nil, errConnReset // the budget ran out while this was in flight
	}
	return b, nil
}

// mutateSource lets a test rewrite chunks and the meta.
type mutateSource struct {
	FileSource
	meta  func(*raftpb.SnapshotMeta)
	chunk func(name string, off int64, b []byte) ([]byte, error)
}

func (m *mutateSource) Meta(ctx context.Context, id ReaderID) (raftpb.SnapshotMeta, error) {
	meta, err := m.FileSource.Meta(ctx, id)
	if err == nil && m.meta != nil {
		m.meta(&meta)
	}
	return meta, err
}

func (m *mutateSource) GetFile(ctx context.Context, id ReaderID, name string, off, n int64, buf []byte) ([]byte, error) {
	b, err := m.FileSource.GetFile(ctx, id, name, off, n, buf)
	if err != nil || m.chunk == nil {
		return b, err
	}
	return m.chunk(name, off, b)
}

// gateSource blocks GetFile calls at or after offset `at` of file `name`
// until released or the context ends.
type gateSource struct {
	FileSource
	name    string
	at      int64
	reached chan struct{}
	once    sync.Once
	open    chan struct{}
	// gaveUp receives (without blocking) once per call that left the gate
	// because its context ended.
	gaveUp chan struct{}
}

func newGate(src FileSource, name string, at int64) *gateSource {
	return &gateSource{FileSource: src, name: name, at: at, reached: make(chan struct{}), open: make(chan struct{}),
		gaveUp: make(chan struct{}, 64)}
}

func (g *gateSource) GetFile(ctx context.Context, id ReaderID, name string, off, n int64, buf []byte) ([]byte, error) {
	if name == g.name && off >= g.at {
		g.once.Do(func() { close(g.reached) })
		select {
		case <-g.open:
		case <-ctx.Done():
			select {
			case g.gaveUp <- struct{}{}:
			default:
			}
			return nil, ctx.Err()
		}
	}
	return g.FileSource.GetFile(ctx, id, name, off, n, buf)
}

// enospcFS fails the write that crosses limit bytes written with ENOSPC,
// after writing part of it (a torn write), while armed.
type enospcFS struct {
	vfs.FS
	armed   atomic.Bool
	written atomic.Int64
	limit   int64
}

func (e *enospcFS) Create(name string, c vfs.DiskWriteCategory) (vfs.File, error) {
	f, err := e.FS.Create(name, c)
	return &enospcFile{File: f, fs: e}, err
}

func (e *enospcFS) OpenReadWrite(name string, c vfs.DiskWriteCategory, o ...vfs.OpenOption) (vfs.File, error) {
	f, err := e.FS.OpenReadWrite(name, c, o...)
	return &enospcFile{File: f, fs: e}, err
}

type enospcFile struct {
	vfs.File
	fs *enospcFS
}

func (f *enospcFile) WriteAt(p []byte, off int64) (int, error) {
	if f.fs.armed.Load() && f.fs.written.Add(int64(len(p))) > f.fs.limit {
		n, _ := f.File.WriteAt(p[:len(p)/2], off)
		return n, &os.PathError{Op: "write", Path: "receiving", Err: syscall.ENOSPC}
	}
	return f.File.WriteAt(p, off)
}

var compName = map[raftpb.Compression]string{raftpb.NoCompression: "none", raftpb.Snappy: "snappy", raftpb.Zstd: "zstd"}
