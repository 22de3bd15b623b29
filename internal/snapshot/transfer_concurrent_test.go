package snapshot

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/skiffdb/skiff/raftpb"
)

// Many groups transfer at once through one Sender, one Receiver and one
// node-wide Throttle with small caps: refused transfers retry, every group
// ends with an identical snapshot, and all slots are given back. Run under
// -race, with a seeded random cut per attempt.
func TestTransferConcurrentGroups(t *testing.T) {
	const groups = 6
	th := NewThrottle(Limits{MaxConcurrentSends: 3, MaxConcurrentRecvs: 2})
	leaderFS, followerFS := vfs.NewMem(), vfs.NewMem()
	sender, err := NewSender(SenderConfig{FS: leaderFS, Throttle: th})
	if err != nil {
		t.Fatal(err)
	}
	defer sender.Close()
	r := newTestReceiver(t, ReceiverConfig{ChunkSize: 8 << 10, InFlight: 3, Throttle: th})
	// A status endpoint polls progress all along (races show under -race).
	stopPoll := make(chan struct{})
	polled := make(chan int)
	go func() {
		n := 0
		for {
			select {
			case <-stopPoll:
				polled <- n
				return
			default:
			}
			for _, pr := range r.Transfers().List() {
				if pr.BytesDone > pr.BytesTotal && pr.BytesTotal > 0 {
					t.Errorf("progress past the total: %+v", pr)
				}
			}
			n++
			runtime.Gosched()
		}
	}()
	var wg sync.WaitGroup
	for g := range groups {
		wg.Go(func() {
			files := multiFile(uint64(40+g), 96<<10)
			leader := openStore(t, leaderFS, fmt.Sprintf("leader-%d", g))
			follower := openStore(t, followerFS, fmt.Sprintf("follower-%d", g))
			publish(t, leader, 100, 3, raftpb.Compression(g%3), files)
			rng := rand.New(rand.NewPCG(uint64(g), 9))
			for attempt := 0; ; {
				if attempt > 50 {
					t.Errorf("group %d: no transfer after %d attempts", g, attempt)
					return
				}
				h, err := leader.OpenReader(0)
				if err != nil {
					t.Error(err)
					return
				}
				id, err := sender.Register(2, h)
				if errors.Is(err, ErrNoSlot) {
					runtime.Gosched() // another group holds the slot
					continue
				}
				if err != nil {
					t.Error(err)
					return
				}
				cut := &cutSource{FileSource: sender, budget: int64(rng.IntN(200 << 10)), moved: new(atomic.Int64)}
				_, err = r.Receive(context.Background(), follower, InstallRequest{From: 1, Meta: h.Meta(), Reader: id}, cut)
				sender.Release(id)
				if err == nil {
					break
				}
				if errors.Is(err, ErrNoSlot) {
					runtime.Gosched()
					continue
				}
				attempt++
				if !IsRetryable(err) {
					t.Errorf("group %d: %v", g, err)
					return
				}
			}
			checkPublished(t, followerFS, follower, 100, files)
		})
	}
	wg.Wait()
	close(stopPoll)
	<-polled
	if s, rcv, gen := th.InUse(); s+rcv+gen != 0 {
		t.Fatalf("slots still held: sends %d, receives %d, generations %d", s, rcv, gen)
	}
}

// A reader nobody asks anything of is released after the idle timeout, and
// its store reference with it; one in use is kept however long it lives.
func TestSenderIdleTimeout(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := newPair(t, multiFile(50, 32<<10), raftpb.NoCompression)
		s, id := serveLatest(t, p.leader, SenderConfig{FS: p.leaderFS, IdleTimeout: time.Minute})
		ctx := context.Background()
		for range 5 { // busy for five minutes, never idle for one
			time.Sleep(50 * time.Second)
			if _, err := s.Meta(ctx, id); err != nil {
				t.Fatalf("reader in use expired: %v", err)
			}
		}
		time.Sleep(61 * time.Second)
		synctest.Wait()
		if _, err := s.Meta(ctx, id); !errors.Is(err, ErrReaderNotFound) {
			t.Fatalf("idle reader: %v, want ErrReaderNotFound", err)
		}
		if i, ok := p.leader.MinReferenced(); ok {
			t.Fatalf("snapshot %d still referenced by an expired reader", i)
		}
	})
}

// A call that lasts longer than the idle timeout (here a chunk waiting 16 s
// for the send rate limit; a Checksum of a huge prefix is another) is not
// idleness: the reader survives it.
func TestSenderIdleTimeoutLongCall(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := newPair(t, multiFile(51, 4<<20), raftpb.NoCompression) // "data" is 1.6 MiB
		th := NewThrottle(Limits{SendBytesPerSec: 64 << 10})
		s, id := serveLatest(t, p.leader, SenderConfig{FS: p.leaderFS, IdleTimeout: time.Second, Throttle: th})
		ctx := context.Background()
		start := time.Now()
		if _, err := s.GetFile(ctx, id, "data", 0, 1<<20, nil); err != nil {
			t.Fatal(err)
		}
		if el := time.Since(start); el < 10*time.Second {
			t.Fatalf("1 MiB at 64 KiB/s took %v", el)
		}
		if _, err := s.Meta(ctx, id); err != nil {
			t.Fatalf("reader expired during a call in progress: %v", err)
		}
	})
}

// The node-wide send limit paces the sender, and a change at runtime
// applies to the transfer in progress (fake clock: exact and instant).
func TestTransferSendRateAtRuntime(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := newPair(t, multiFile(51, 4<<20), raftpb.NoCompression)
		th := NewThrottle(Limits{SendBytesPerSec: 1 << 20})
		s, id := serveLatest(t, p.leader, SenderConfig{FS: p.leaderFS, Throttle: th})
		// After 2 s (about 2 MiB at 1 MiB/s) the limit goes to 16 MiB/s.
		time.AfterFunc(2*time.Second, func() { th.SetLimits(Limits{SendBytesPerSec: 16 << 20}) })
		r := newTestReceiver(t, ReceiverConfig{ChunkSize: 64 << 10, ChunkTimeout: time.Minute})
		start := time.Now()
		if _, err := r.Receive(context.Background(), p.follower, InstallRequest{From: 1, Meta: p.meta, Reader: id}, s); err != nil {
			t.Fatal(err)
		}
		// Unchanged, 4 MiB at 1 MiB/s would take almost 4 s.
		if el := time.Since(start); el < 2*time.Second || el > 3*time.Second {
			t.Fatalf("transfer took %v, want 2–3 s", el)
		}
		checkPublished(t, p.followerFS, p.follower, 100, p.files)
	})
}
