package snapshot

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/skiffdb/skiff/raftpb"
)

// A transfer moves every byte once and publishes an identical, verified
// snapshot, for each stream compression.
func TestTransferRoundTrip(t *testing.T) {
	for _, comp := range []raftpb.Compression{raftpb.NoCompression, raftpb.Snappy, raftpb.Zstd} {
		t.Run(compName[comp], func(t *testing.T) {
			p := newPair(t, multiFile(1, 1<<20), comp)
			req := p.register(t)
			src := &countingSource{FileSource: p.sender}
			r := newTestReceiver(t, ReceiverConfig{InFlight: 3})
			res, err := r.Receive(context.Background(), p.follower, req, src)
			if err != nil {
				t.Fatal(err)
			}
			if m := res.Meta; m.Index != 100 || m.Compression != comp {
				t.Fatalf("published meta %+v", m)
			}
			if pr := res.Progress; pr.Phase != PhaseDone || pr.BytesMoved != filesSize(p.files) || pr.BytesDone != pr.BytesTotal {
				t.Fatalf("final progress %+v", pr)
			}
			checkPublished(t, p.followerFS, p.follower, 100, p.files)
			size := filesSize(p.files)
			wire := src.wire.Load()
			switch comp {
			case raftpb.NoCompression:
				if wire != size {
					t.Fatalf("moved %d bytes, snapshot is %d", wire, size)
				}
			default:
				if wire >= size*9/10 {
					t.Fatalf("compression %v moved %d of %d bytes", comp, wire, size)
				}
			}
			if src.sums.Load() != 0 {
				t.Fatalf("fresh transfer asked for %d checksums", src.sums.Load())
			}
			if l := r.Transfers().List(); len(l) != 0 {
				t.Fatalf("transfers left registered: %+v", l)
			}
		})
	}
}

// Files the follower's latest snapshot holds with the same name, size and
// CRC are hard-linked; only the others move (braft's filter_before_copy_remote).
func TestTransferLinksIdenticalFiles(t *testing.T) {
	old := multiFile(2, 512<<10)
	p := newPair(t, old, raftpb.NoCompression)
	publish(t, p.follower, 50, 2, raftpb.NoCompression, old)
	// The leader's newer snapshot changes one file and adds one.
	newer := append([]testFile(nil), old...)
	newer[1] = testFile{newer[1].name, testData(99, len(newer[1].data))}
	newer = append(newer, testFile{"extra", testData(98, 3000)})
	publish(t, p.leader, 200, 4, raftpb.NoCompression, newer)
	req := p.register(t)
	src := &countingSource{FileSource: p.sender}
	r := newTestReceiver(t, ReceiverConfig{})
	if _, err := r.Receive(context.Background(), p.follower, req, src); err != nil {
		t.Fatal(err)
	}
	checkPublished(t, p.followerFS, p.follower, 200, newer)
	want := int64(len(newer[1].data) + len(newer[4].data))
	if got := src.wire.Load(); got != want {
		t.Fatalf("moved %d bytes, want only the changed files' %d", got, want)
	}
}

// The receiver takes its slot before the sender is asked for anything.
func TestTransferReservationBeforeAnyRead(t *testing.T) {
	p := newPair(t, multiFile(3, 64<<10), raftpb.NoCompression)
	req := p.register(t)
	th := NewThrottle(Limits{MaxConcurrentRecvs: 1})
	release, ok := th.TryReserveRecv()
	if !ok {
		t.Fatal("first slot refused")
	}
	src := &countingSource{FileSource: p.sender}
	r := newTestReceiver(t, ReceiverConfig{Throttle: th})
	_, err := r.Receive(context.Background(), p.follower, req, src)
	if !errors.Is(err, ErrNoSlot) || !IsRetryable(err) {
		t.Fatalf("err = %v, want retryable ErrNoSlot", err)
	}
	if n := src.metas.Load() + src.calls.Load() + src.sums.Load(); n != 0 {
		t.Fatalf("sender asked %d times without a reservation", n)
	}
	release()
	if _, err := r.Receive(context.Background(), p.follower, req, src); err != nil {
		t.Fatal(err)
	}
}

// The sender caps concurrent sends and gives the store reference back when
// it refuses, and when a reader is released.
func TestSenderSlotsAndReferences(t *testing.T) {
	p := newPair(t, multiFile(4, 8<<10), raftpb.NoCompression)
	s, id := serveLatest(t, p.leader, SenderConfig{FS: p.leaderFS, Throttle: NewThrottle(Limits{MaxConcurrentSends: 1})})
	r2, _ := p.leader.OpenReader(0)
	if _, err := s.Register(3, r2); !errors.Is(err, ErrNoSlot) {
		t.Fatalf("second send: %v, want ErrNoSlot", err)
	}
	if _, ok := p.leader.MinReferenced(); !ok {
		t.Fatal("registered reader holds no store reference")
	}
	s.Release(id)
	if i, ok := p.leader.MinReferenced(); ok {
		t.Fatalf("snapshot %d still referenced after release", i)
	}
	if _, err := s.Meta(context.Background(), id); !errors.Is(err, ErrReaderNotFound) {
		t.Fatalf("meta of a released reader: %v", err)
	}
	r3, _ := p.leader.OpenReader(0)
	if _, err := s.Register(3, r3); err != nil {
		t.Fatalf("slot not given back: %v", err)
	}
}

// The sender refuses ranges past a file's end and unknown files.
func TestSenderRejectsBadRanges(t *testing.T) {
	p := newPair(t, []testFile{{"f", testData(5, 1000)}}, raftpb.NoCompression)
	req := p.register(t)
	ctx := context.Background()
	for _, c := range []struct {
		off, n int64
		ok     bool
	}{{0, 1000, true}, {999, 1, true}, {1000, 0, true}, {999, 2, false}, {1001, 0, false}, {-1, 1, false}, {0, maxChunkSize + 1, false}} {
		_, err := p.sender.GetFile(ctx, req.Reader, "f", c.off, c.n, nil)
		if c.ok != (err == nil) || (!c.ok && !errors.Is(err, ErrChunkPastEnd)) {
			t.Errorf("GetFile [%d, +%d): %v", c.off, c.n, err)
		}
	}
	if _, err := p.sender.GetFile(ctx, req.Reader, "../f", 0, 1, nil); err == nil {
		t.Error("GetFile of a file not in the meta succeeded")
	}
	if _, err := p.sender.Checksum(ctx, req.Reader, "f", 1001); !errors.Is(err, ErrChunkPastEnd) {
		t.Errorf("Checksum past the end: %v", err)
	}
}

// A source that answers with more bytes than asked (a chunk past the end
// of the range or file) fails the transfer; nothing is published and a
// retry with an honest source resumes and publishes.
func TestReceiveChunkPastEnd(t *testing.T) {
	p := newPair(t, multiFile(6, 256<<10), raftpb.NoCompression)
	req := p.register(t)
	bad := &mutateSource{FileSource: p.sender, chunk: func(name string, off int64, b []byte) ([]byte, error) {
		if name == "index" {
			return append(b, 0xff), nil
		}
		return b, nil
	}}
	r := newTestReceiver(t, ReceiverConfig{ChunkSize: 16 << 10})
	if _, err := r.Receive(context.Background(), p.follower, req, bad); !errors.Is(err, ErrChunkPastEnd) {
		t.Fatalf("err = %v, want ErrChunkPastEnd", err)
	}
	if _, ok := p.follower.Latest(); ok {
		t.Fatal("published after a bad chunk")
	}
	src := &countingSource{FileSource: p.sender}
	if _, err := r.Receive(context.Background(), p.follower, req, src); err != nil {
		t.Fatal(err)
	}
	checkPublished(t, p.followerFS, p.follower, 100, p.files)
	// "data", written before the bad chunk, is resumed, not fetched again.
	if got, want := src.wire.Load(), filesSize(p.files)-int64(len(p.files[0].data)); got != want {
		t.Fatalf("retry moved %d bytes, want %d: the first file was not resumed", got, want)
	}
}

// A bit flipped in transit is caught by the file's CRC32C: the transfer
// fails, nothing is published, the bad file is fetched again next time.
func TestReceiveCRCMismatch(t *testing.T) {
	p := newPair(t, multiFile(7, 256<<10), raftpb.NoCompression)
	req := p.register(t)
	flip := &mutateSource{FileSource: p.sender, chunk: func(name string, off int64, b []byte) ([]byte, error) {
		if name == "data" && off == 0 {
			b[10] ^= 1
		}
		return b, nil
	}}
	r := newTestReceiver(t, ReceiverConfig{ChunkSize: 16 << 10})
	_, err := r.Receive(context.Background(), p.follower, req, flip)
	if !errors.Is(err, ErrFileChecksum) {
		t.Fatalf("err = %v, want ErrFileChecksum", err)
	}
	if _, ok := p.follower.Latest(); ok {
		t.Fatal("published a corrupt snapshot")
	}
	if _, err := r.Receive(context.Background(), p.follower, req, p.sender); err != nil {
		t.Fatal(err)
	}
	checkPublished(t, p.followerFS, p.follower, 100, p.files)
}

// A sender whose meta lies about a CRC never gets a snapshot published.
func TestReceiveMetaCRCLie(t *testing.T) {
	p := newPair(t, multiFile(8, 64<<10), raftpb.Zstd)
	req := p.register(t)
	lie := func(m *raftpb.SnapshotMeta) { m.Files[2].CRC32C ^= 1 }
	src := &mutateSource{FileSource: p.sender, meta: lie}
	req.Meta = raftpb.SnapshotMeta{}
	r := newTestReceiver(t, ReceiverConfig{})
	for range 2 {
		if _, err := r.Receive(context.Background(), p.follower, req, src); !errors.Is(err, ErrFileChecksum) {
			t.Fatalf("err = %v, want ErrFileChecksum", err)
		}
	}
	if _, ok := p.follower.Latest(); ok {
		t.Fatal("published a snapshot that contradicts its meta")
	}
}

// Hostile file names in the sender's meta are refused before anything is
// created on the receiver.
func TestReceiveHostileNames(t *testing.T) {
	for _, name := range []string{"../escape", "/etc/passwd", "a/b", "", "..", "meta", "dup"} {
		t.Run(strings.ReplaceAll(name, "/", "_"), func(t *testing.T) {
			p := newPair(t, []testFile{{"dup", []byte("x")}, {"ok", []byte("y")}}, raftpb.NoCompression)
			req := p.register(t)
			req.Meta = raftpb.SnapshotMeta{}
			src := &mutateSource{FileSource: p.sender, meta: func(m *raftpb.SnapshotMeta) { m.Files[1].Name = name }}
			r := newTestReceiver(t, ReceiverConfig{})
			_, err := r.Receive(context.Background(), p.follower, req, src)
			if !errors.Is(err, ErrBadFileName) {
				t.Fatalf("err = %v, want ErrBadFileName", err)
			}
			if ls, _ := p.followerFS.List("follower"); len(ls) != 0 {
				t.Fatalf("receiver created %v", ls)
			}
		})
	}
}

// A meta whose sizes would overflow the byte counts is refused before
// anything is created.
func TestReceiveAbsurdSizes(t *testing.T) {
	p := newPair(t, []testFile{{"a", []byte("x")}, {"b", []byte("y")}}, raftpb.NoCompression)
	req := p.register(t)
	req.Meta = raftpb.SnapshotMeta{}
	huge := &mutateSource{FileSource: p.sender, meta: func(m *raftpb.SnapshotMeta) {
		m.Files[0].Size, m.Files[1].Size = 1<<63, 1<<63
	}}
	r := newTestReceiver(t, ReceiverConfig{})
	if _, err := r.Receive(context.Background(), p.follower, req, huge); !errors.Is(err, ErrCorruptMeta) {
		t.Fatalf("err = %v, want ErrCorruptMeta", err)
	}
	if ls, _ := p.followerFS.List("follower"); len(ls) != 0 {
		t.Fatalf("receiver created %v", ls)
	}
}

// The sender's meta must be the one the install request announced.
func TestReceiveMetaMismatch(t *testing.T) {
	p := newPair(t, multiFile(9, 8<<10), raftpb.NoCompression)
	req := p.register(t)
	req.Meta.Index = 99
	src := &countingSource{FileSource: p.sender}
	r := newTestReceiver(t, ReceiverConfig{})
	if _, err := r.Receive(context.Background(), p.follower, req, src); !errors.Is(err, ErrMetaMismatch) {
		t.Fatalf("err = %v, want ErrMetaMismatch", err)
	}
	if src.calls.Load() != 0 {
		t.Fatal("fetched chunks of a mismatched snapshot")
	}
}

// An unknown reader (a restarted leader) is reported as such, not retried.
func TestReceiveReaderNotFound(t *testing.T) {
	p := newPair(t, multiFile(10, 8<<10), raftpb.NoCompression)
	req := p.register(t)
	p.sender.Release(req.Reader)
	r := newTestReceiver(t, ReceiverConfig{})
	_, err := r.Receive(context.Background(), p.follower, req, p.sender)
	if !errors.Is(err, ErrReaderNotFound) || IsRetryable(err) {
		t.Fatalf("err = %v, want non-retryable ErrReaderNotFound", err)
	}
}

// ENOSPC in the middle of a write (a torn write): a clean, retryable error;
// the partial data is kept, and the retry resumes from its verified prefix.
func TestReceiveENOSPC(t *testing.T) {
	files := multiFile(11, 1<<20)
	p := newPair(t, files, raftpb.NoCompression)
	efs := &enospcFS{FS: p.followerFS, limit: 600 << 10}
	efs.armed.Store(true)
	follower := openStore(t, efs, "follower2")
	req := p.register(t)
	src := &countingSource{FileSource: p.sender}
	r := newTestReceiver(t, ReceiverConfig{ChunkSize: 32 << 10, SyncBytes: 64 << 10})
	_, err := r.Receive(context.Background(), follower, req, src)
	if !errors.Is(err, syscall.ENOSPC) || !IsRetryable(err) {
		t.Fatalf("err = %v, want retryable ENOSPC", err)
	}
	if _, ok := follower.Latest(); ok {
		t.Fatal("published after ENOSPC")
	}
	efs.armed.Store(false)
	if _, err := r.Receive(context.Background(), follower, req, src); err != nil {
		t.Fatal(err)
	}
	checkPublished(t, efs, follower, 100, files)
	if got, size := src.wire.Load(), filesSize(files); float64(got) > 1.15*float64(size) {
		t.Fatalf("moved %d bytes for a %d-byte snapshot: not resumed", got, size)
	}
}

// Not enough free space: refused before any chunk is fetched.
func TestReceiveNoFreeSpace(t *testing.T) {
	p := newPair(t, multiFile(12, 64<<10), raftpb.NoCompression)
	mem := vfs.NewMem()
	mem.TestingSetDiskUsage(vfs.DiskUsage{AvailBytes: 1 << 20, TotalBytes: 1 << 30})
	follower := openStore(t, mem, "f")
	req := p.register(t)
	src := &countingSource{FileSource: p.sender}
	r := newTestReceiver(t, ReceiverConfig{})
	_, err := r.Receive(context.Background(), follower, req, src)
	if !errors.Is(err, syscall.ENOSPC) || !IsRetryable(err) {
		t.Fatalf("err = %v, want retryable ENOSPC", err)
	}
	if src.calls.Load() != 0 {
		t.Fatal("fetched chunks without the space to hold them")
	}
}

// Cancelling from outside stops the transfer promptly and keeps what was
// received for a resume.
func TestReceiveCancel(t *testing.T) {
	p := newPair(t, multiFile(13, 512<<10), raftpb.NoCompression)
	req := p.register(t)
	gate := newGate(p.sender, "index", 0)
	r := newTestReceiver(t, ReceiverConfig{ChunkSize: 16 << 10})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := r.Receive(ctx, p.follower, req, gate)
		done <- err
	}()
	recv(t, gate.reached, "a request to reach the gate")
	cancel()
	if err := recv(t, done, "the canceled transfer"); !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	src := &countingSource{FileSource: p.sender}
	if _, err := r.Receive(context.Background(), p.follower, req, src); err != nil {
		t.Fatal(err)
	}
	if got, size := src.wire.Load(), filesSize(p.files); got > size*7/10 {
		t.Fatalf("resume moved %d of %d bytes: the first file was fetched again", got, size)
	}
}

// Progress is observable while a transfer runs, on both ends.
func TestTransferProgress(t *testing.T) {
	synctest.Test(t, testTransferProgress)
}

func testTransferProgress(t *testing.T) {
	p := newPair(t, multiFile(14, 512<<10), raftpb.NoCompression)
	tr := NewTransfers(nil)
	s, id := serveLatest(t, p.leader, SenderConfig{FS: p.leaderFS, Transfers: tr})
	gate := newGate(s, "blob-000001.sst", 0)
	r := newTestReceiver(t, ReceiverConfig{Transfers: tr, ChunkSize: 16 << 10})
	done := make(chan error, 1)
	go func() {
		_, err := r.Receive(context.Background(), p.follower, InstallRequest{From: 1, Meta: p.meta, Reader: id}, gate)
		done <- err
	}()
	<-gate.reached
	synctest.Wait() // the writer has written everything before the gate
	list := tr.List()
	if len(list) != 2 {
		t.Fatalf("%d transfers listed, want a send and a receive: %+v", len(list), list)
	}
	total := filesSize(p.files)
	rcv, snd := list[0], list[1]
	if rcv.Direction != Receiving {
		rcv, snd = snd, rcv
	}
	if rcv.Group != 1 || rcv.Peer != 1 || rcv.Index != 100 || rcv.Phase != PhaseCopying || rcv.BytesTotal != total {
		t.Fatalf("receive progress %+v", rcv)
	}
	firstTwo := int64(len(p.files[0].data) + len(p.files[1].data))
	if rcv.BytesDone < firstTwo || rcv.BytesDone >= total {
		t.Fatalf("receive progress %d bytes, want in [%d, %d)", rcv.BytesDone, firstTwo, total)
	}
	if snd.Direction != Sending || snd.Peer != 2 || snd.BytesTotal != total || snd.BytesMoved < firstTwo {
		t.Fatalf("send progress %+v", snd)
	}
	close(gate.open)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if l := tr.List(); len(l) != 1 || l[0].Direction != Sending {
		t.Fatalf("after the receive: %+v", l)
	}
	s.Release(id)
	if l := tr.List(); len(l) != 0 {
		t.Fatalf("after release: %+v", l)
	}
}

// The progress watchdog fires after the chunk timeout without a kick, and
// allows extra time for reading a long prefix (a Checksum of many GiB is
// one long call, not a stall).
func TestWatchdogAllowsLongReads(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx, wd := newWatchdog(context.Background(), time.Second)
		defer wd.stop()
		wd.allowRead(64 << 20) // 2 s at minVerifyRate, on top of the timeout
		time.Sleep(2900 * time.Millisecond)
		if ctx.Err() != nil {
			t.Fatal("fired during an allowed long read")
		}
		time.Sleep(200 * time.Millisecond)
		synctest.Wait()
		if !errors.Is(context.Cause(ctx), ErrProgressTimeout) {
			t.Fatalf("cause %v, want ErrProgressTimeout", context.Cause(ctx))
		}
	})
}

// Fetcher is Receive bound to a store, in the shape ExecutorConfig.Fetch
// takes.
func TestReceiverFetcher(t *testing.T) {
	p := newPair(t, multiFile(15, 64<<10), raftpb.Snappy)
	req := p.register(t)
	r := newTestReceiver(t, ReceiverConfig{})
	var fetch func(context.Context, InstallRequest) (raftpb.SnapshotMeta, error) = r.Fetcher(p.follower,
		func(InstallRequest) (FileSource, error) { return p.sender, nil })
	cfg := ExecutorConfig{Fetch: fetch}
	m, err := cfg.Fetch(context.Background(), req)
	if err != nil || m.Index != 100 {
		t.Fatalf("fetch: %+v %v", m, err)
	}
	checkPublished(t, p.followerFS, p.follower, 100, p.files)
}

// openCountFS counts the files open through it.
type openCountFS struct {
	vfs.FS
	open atomic.Int64
}

func (o *openCountFS) wrap(f vfs.File, err error) (vfs.File, error) {
	if err != nil {
		return f, err
	}
	o.open.Add(1)
	return &countedFile{File: f, fs: o}, nil
}

func (o *openCountFS) Open(name string, opts ...vfs.OpenOption) (vfs.File, error) {
	return o.wrap(o.FS.Open(name, opts...))
}

func (o *openCountFS) Create(name string, c vfs.DiskWriteCategory) (vfs.File, error) {
	return o.wrap(o.FS.Create(name, c))
}

func (o *openCountFS) OpenReadWrite(name string, c vfs.DiskWriteCategory, opts ...vfs.OpenOption) (vfs.File, error) {
	return o.wrap(o.FS.OpenReadWrite(name, c, opts...))
}

type countedFile struct {
	vfs.File
	fs     *openCountFS
	closed atomic.Bool
}

func (f *countedFile) Close() error {
	if !f.closed.Swap(true) {
		f.fs.open.Add(-1)
	}
	return f.File.Close()
}

// A transfer canceled mid-way leaves no goroutine (synctest.Test fails on
// any left in its bubble) and, once the sender releases the reader, no
// open file on either end.
func TestReceiveCancelLeavesNothing(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		leaderFS, followerFS := &openCountFS{FS: vfs.NewMem()}, &openCountFS{FS: vfs.NewMem()}
		leader, follower := openStore(t, leaderFS, "leader"), openStore(t, followerFS, "follower")
		files := multiFile(15, 512<<10)
		m := publish(t, leader, 100, 3, raftpb.Zstd, files)
		s, id := serveLatest(t, leader, SenderConfig{FS: leaderFS})
		gate := newGate(s, "index", 16<<10)
		r, err := NewReceiver(ReceiverConfig{ChunkSize: 16 << 10, SyncBytes: 32 << 10})
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() {
			_, err := r.Receive(ctx, follower, InstallRequest{From: 1, Meta: m, Reader: id}, gate)
			done <- err
		}()
		<-gate.reached
		synctest.Wait()
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Fatalf("err = %v, want context.Canceled", err)
		}
		if n := followerFS.open.Load(); n != 0 {
			t.Fatalf("%d files left open on the receiver", n)
		}
		s.Release(id)
		if n := leaderFS.open.Load(); n != 0 {
			t.Fatalf("%d files left open on the sender after Release", n)
		}
		if _, ok := leader.MinReferenced(); ok {
			t.Fatal("the released reader still holds its snapshot")
		}
	})
}
