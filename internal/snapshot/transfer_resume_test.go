package snapshot

import (
	"context"
	"errors"
	"math/rand/v2"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/skiffdb/skiff/raftpb"
)

// resumeSize is the multi-file snapshot the resume tests move: big enough
// for 130 chunks, small enough to keep the tests fast.
const resumeSize = 8 << 20

// The connection breaks at 30 %, 60 % and 90 % of the transfer; each retry
// resumes, so the bytes moved in total stay within 1.15 × the snapshot size
// (REQUIREMENTS §4).
func TestTransferResumeAfterCuts(t *testing.T) {
	for _, comp := range []raftpb.Compression{raftpb.NoCompression, raftpb.Zstd} {
		t.Run(compName[comp], func(t *testing.T) {
			p := newPair(t, multiFile(20, resumeSize), comp)
			req := p.register(t)
			size := filesSize(p.files)
			counter := &countingSource{FileSource: p.sender}
			var moved atomic.Int64
			r := newTestReceiver(t, ReceiverConfig{InFlight: 4})
			full := fullWire(t, p) // budgets are in wire bytes
			for _, cut := range []float64{0.3, 0.6, 0.9} {
				src := &cutSource{FileSource: counter, budget: int64(cut * float64(full)), moved: &moved}
				_, err := r.Receive(context.Background(), p.follower, req, src)
				if !errors.Is(err, errConnReset) || !IsRetryable(err) {
					t.Fatalf("cut at %.0f%%: err = %v, want a retryable broken connection", cut*100, err)
				}
				t.Logf("cut at %.0f%%: receiver holds %d of %d bytes", cut*100, held(t, p.follower), size)
			}
			if _, err := r.Receive(context.Background(), p.follower, req, counter); err != nil {
				t.Fatal(err)
			}
			checkPublished(t, p.followerFS, p.follower, 100, p.files)
			reportMoved(t, counter, full)
		})
	}
}

// held returns the bytes the store's receiving directory holds.
func held(t testing.TB, st *Store) int64 {
	t.Helper()
	m, err := receivingMeta(st)
	if err != nil {
		t.Fatal(err)
	}
	tx, err := st.Receive(m)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Close()
	return int64(tx.BytesPresent())
}

// receivingMeta reads the meta of the store's receiving directory.
func receivingMeta(st *Store) (raftpb.SnapshotMeta, error) {
	st.mu.Lock()
	enc := st.receivingMeta
	st.mu.Unlock()
	if enc == nil {
		return raftpb.SnapshotMeta{}, errors.New("no receiving directory")
	}
	return DecodeMeta(enc)
}

// reportMoved fails if more than 1.15 × full wire bytes crossed the source.
func reportMoved(t testing.TB, c *countingSource, full int64) {
	t.Helper()
	wire := c.wire.Load()
	ratio := float64(wire) / float64(full)
	t.Logf("moved %d wire bytes, a full transfer is %d: %.3f×", wire, full, ratio)
	if ratio > 1.15 {
		t.Fatalf("moved %.3f× the snapshot", ratio)
	}
}

// fullWire returns the wire bytes of a clean transfer of p's snapshot: its
// size, or what a clean compressed transfer moves.
func fullWire(t testing.TB, p *pair) int64 {
	t.Helper()
	if p.meta.Compression == raftpb.NoCompression {
		return filesSize(p.files)
	}
	q := newPair(t, p.files, p.meta.Compression)
	c := &countingSource{FileSource: q.sender}
	r := newTestReceiver(t, ReceiverConfig{})
	if _, err := r.Receive(context.Background(), q.follower, q.register(t), c); err != nil {
		t.Fatal(err)
	}
	return c.wire.Load()
}

// The connection breaks at 50 % of the transfer, then the receiver loses
// power (unsynced data dropped, or partly kept) and restarts: the transfer
// resumes from what survived, verified, and publishes an identical
// snapshot. NB: the failed Receive closed and synced its files before the
// crash; TestTransferResumeAfterCrashMidFile crashes while one is open.
func TestTransferResumeAfterReceiverRestart(t *testing.T) {
	for _, unsynced := range []int{0, 50, 100} {
		t.Run(map[int]string{0: "unsynced=0%", 50: "unsynced=50%", 100: "unsynced=100%"}[unsynced], func(t *testing.T) {
			p := newPair(t, multiFile(21, resumeSize), raftpb.NoCompression)
			req := p.register(t)
			size := filesSize(p.files)
			counter := &countingSource{FileSource: p.sender}
			var moved atomic.Int64
			cfg := ReceiverConfig{InFlight: 4, SyncBytes: 256 << 10}
			r := newTestReceiver(t, cfg)
			_, err := r.Receive(context.Background(), p.follower, req, &cutSource{FileSource: counter, budget: size / 2, moved: &moved})
			if !IsRetryable(err) {
				t.Fatalf("cut: %v", err)
			}
			crashed := p.followerFS.(*vfs.MemFS).CrashClone(vfs.CrashCloneCfg{
				UnsyncedDataPercent: unsynced, RNG: rand.New(rand.NewPCG(uint64(unsynced), 1))})
			st := openStore(t, crashed, "follower")
			r2 := newTestReceiver(t, cfg)
			if _, err := r2.Receive(context.Background(), st, req, counter); err != nil {
				t.Fatal(err)
			}
			checkPublished(t, crashed, st, 100, p.files)
			reportMoved(t, counter, size)
		})
	}
}

// A transfer in which no chunk arrives for the chunk timeout fails with
// ErrProgressTimeout; a slow but moving transfer never does, however long
// it takes in total (the fake clock of synctest makes both instant).
func TestTransferChunkTimeout(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := newPair(t, multiFile(22, 256<<10), raftpb.NoCompression)
		req := p.register(t)
		stuck := newGate(p.sender, "index", 32<<10)
		r := newTestReceiver(t, ReceiverConfig{ChunkSize: 16 << 10, ChunkTimeout: 5 * time.Second})
		start := time.Now()
		_, err := r.Receive(context.Background(), p.follower, req, stuck)
		if !errors.Is(err, ErrProgressTimeout) || !IsRetryable(err) {
			t.Fatalf("err = %v, want retryable ErrProgressTimeout", err)
		}
		if el := time.Since(start); el != 5*time.Second {
			t.Fatalf("timed out after %v (fake clock), want 5s", el)
		}

		// 1 MiB at 64 KiB/s takes 16 s, three times the chunk timeout.
		th := NewThrottle(Limits{RecvBytesPerSec: 64 << 10})
		q := newPair(t, multiFile(23, 1<<20), raftpb.NoCompression)
		slow := newTestReceiver(t, ReceiverConfig{ChunkSize: 16 << 10, ChunkTimeout: 5 * time.Second, Throttle: th})
		start = time.Now()
		if _, err := slow.Receive(context.Background(), q.follower, q.register(t), q.sender); err != nil {
			t.Fatalf("slow transfer: %v", err)
		}
		if el := time.Since(start); el < 14*time.Second {
			t.Fatalf("1 MiB at 64 KiB/s took %v", el)
		}
	})
}

// The leader restarts half way: its new Sender hands out a new reader for
// the same snapshot, and the follower resumes (the receiving directory is
// keyed by the meta, not by the reader).
func TestTransferResumeAfterLeaderRestart(t *testing.T) {
	p := newPair(t, multiFile(24, resumeSize), raftpb.NoCompression)
	req := p.register(t)
	size := filesSize(p.files)
	counter := &countingSource{FileSource: p.sender}
	var moved atomic.Int64
	r := newTestReceiver(t, ReceiverConfig{})
	if _, err := r.Receive(context.Background(), p.follower, req, &cutSource{FileSource: counter, budget: size / 2, moved: &moved}); !IsRetryable(err) {
		t.Fatalf("cut: %v", err)
	}
	p.sender.Close() // the old leader process is gone
	if _, err := r.Receive(context.Background(), p.follower, req, p.sender); !errors.Is(err, ErrReaderNotFound) {
		t.Fatalf("old reader after the restart: %v", err)
	}
	s2, id := serveLatest(t, p.leader, SenderConfig{FS: p.leaderFS})
	if id == req.Reader {
		t.Fatalf("restarted sender reused reader ID %d", id)
	}
	counter.FileSource = s2
	res, err := r.Receive(context.Background(), p.follower, InstallRequest{From: 1, Meta: p.meta, Reader: id}, counter)
	if err != nil {
		t.Fatal(err)
	}
	checkPublished(t, p.followerFS, p.follower, 100, p.files)
	if res.Progress.BytesResumed < size*2/5 {
		t.Fatalf("resumed only %d of %d bytes", res.Progress.BytesResumed, size)
	}
	reportMoved(t, counter, size)
}

// Power is lost while a file is still being written (not after the
// transfer failed, when every file is closed and synced): what the
// background fsyncs made durable survives, name included, and the restart
// resumes from it.
func TestTransferResumeAfterCrashMidFile(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := newPair(t, multiFile(25, resumeSize), raftpb.NoCompression)
		req := p.register(t)
		first := p.files[0] // "data", about 3.2 MiB
		gate := newGate(p.sender, first.name, 2<<20)
		cfg := ReceiverConfig{InFlight: 4, ChunkSize: 64 << 10, SyncBytes: 256 << 10}
		r := newTestReceiver(t, cfg)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() {
			_, err := r.Receive(ctx, p.follower, req, gate)
			done <- err
		}()
		<-gate.reached
		synctest.Wait()                                                    // the writer waits at the gate; the syncer is idle
		crashed := p.followerFS.(*vfs.MemFS).CrashClone(vfs.CrashCloneCfg{ // every unsynced op lost
			UnsyncedDataPercent: 0, RNG: rand.New(rand.NewPCG(25, 1))})
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Fatalf("err = %v, want context.Canceled", err)
		}

		st := openStore(t, crashed, "follower")
		res, err := newTestReceiver(t, cfg).Receive(context.Background(), st, req, p.sender)
		if err != nil {
			t.Fatal(err)
		}
		checkPublished(t, crashed, st, 100, p.files)
		if min := int64(1 << 20); res.Progress.BytesResumed < min {
			t.Fatalf("resumed %d bytes after a crash at 2 MiB of %s, want at least %d", res.Progress.BytesResumed, first.name, min)
		}
	})
}
