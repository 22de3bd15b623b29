package snapshot

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/skiffdb/skiff/raftpb"
)

// copier runs the transfer part of one Receive: it plans every file
// (hard-linked, resumed from a verified prefix, or fetched from zero), then
// pipelines the chunks into the store's receiving transaction and commits.
type copier struct {
	r      *Receiver
	tx     *ReceiveTx
	meta   raftpb.SnapshotMeta
	src    FileSource
	reader ReaderID
	prio   Priority
	st     *transferState
	wd     *watchdog
}

// fileJob is one file still to fetch, from start to its end.
type fileJob struct {
	name  string
	size  int64
	crc   uint32 // the meta's CRC32C of the whole file
	start int64  // Invariant: a multiple of the chunk size, or 0
}

func (c *copier) run(ctx context.Context) error {
	c.st.total.Store(int64(metaSize(&c.meta)))
	c.st.setPhase(PhaseVerifying)
	jobs, err := c.plan(ctx)
	if err != nil {
		return err
	}
	var need uint64
	for _, j := range jobs {
		need += uint64(j.size - j.start)
	}
	if err := checkFreeSpace(c.tx.s.fs, c.tx.Dir(), need); err != nil {
		return err
	}
	c.st.setPhase(PhaseCopying)
	if err := c.pipeline(ctx, jobs); err != nil {
		return err
	}
	c.st.setPhase(PhaseCommitting)
	if err := c.tx.Commit(); err != nil {
		if errors.Is(err, ErrChecksum) {
			return fmt.Errorf("%w: %w", ErrFileChecksum, err)
		}
		return err
	}
	return nil
}

// plan decides, file by file in meta order, what must still be fetched.
// Linked files (the store found them in the latest snapshot) and verified
// complete files need nothing; a partial file resumes after its longest
// verified chunk-aligned prefix.
func (c *copier) plan(ctx context.Context) ([]fileJob, error) {
	var jobs []fileJob
	for _, f := range c.tx.Files() {
		job := fileJob{name: f.Name, size: int64(f.Size), crc: f.CRC32C}
		switch {
		case f.Linked:
			c.st.linked.Add(job.size)
			continue
		case f.Size == 0:
			// Nothing to fetch, but the file must exist to be published.
			w, err := c.tx.OpenFile(f.Name, 0)
			if err != nil {
				return nil, err
			}
			if err := w.Close(); err != nil {
				return nil, err
			}
			continue
		case f.Present > 0:
			n, err := c.verifiedPrefix(ctx, f)
			if err != nil {
				return nil, err
			}
			c.st.resumed.Add(n)
			if n == job.size {
				continue
			}
			job.start = n
		}
		jobs = append(jobs, job)
	}
	return jobs, nil
}

// verifiedPrefix returns the length of the longest prefix of f held
// locally that matches the sender: the whole file if its CRC matches the
// meta (else nothing); else the present bytes rounded down to a chunk
// boundary (a torn last write is dropped), halved until the local CRC equals the sender's
// Checksum of the same range. Garbage after a crash is usually only at the
// tail, so the first try normally succeeds.
func (c *copier) verifiedPrefix(ctx context.Context, f FileState) (int64, error) {
	size, present := int64(f.Size), int64(f.Present)
	chunk := int64(c.r.cfg.ChunkSize)
	if present == size {
		c.wd.allowRead(size)
		crc, err := c.tx.PrefixCRC(f.Name, f.Size)
		if err != nil {
			return 0, err
		}
		if crc == f.CRC32C {
			return size, nil
		}
		// NB: a complete file may be a hard link into a published snapshot,
		// so the store refuses writes into it: fetch it again from zero.
		return 0, nil
	}
	for n := present / chunk * chunk; n > 0; n = n / 2 / chunk * chunk {
		c.wd.allowRead(n)
		local, err := c.tx.PrefixCRC(f.Name, uint64(n))
		if err != nil {
			return 0, err
		}
		c.wd.allowRead(n)
		remote, err := c.src.Checksum(ctx, c.reader, f.Name, n)
		if err != nil {
			return 0, wrapSourceErr(err)
		}
		c.wd.kick()
		if local == remote {
			return n, nil
		}
	}
	return 0, nil
}

// chunkSlot is one of the InFlight buffers: the only memory a transfer
// holds for data, reused chunk after chunk.
type chunkSlot struct {
	wire, raw []byte
}

// chunkTask is one GetFile: the dispatcher creates it, a fetcher fills it,
// the writer consumes it in creation order.
type chunkTask struct {
	job    *fileJob
	off, n int64
	slot   *chunkSlot
	data   []byte // decoded bytes [off, off+n); aliases slot
	err    error
	done   chan struct{} // closed when data or err is set
}

// pipeline fetches every chunk of jobs with InFlight requests outstanding
// and writes them in order. Memory: InFlight slots, whatever the sizes.
func (c *copier) pipeline(ctx context.Context, jobs []fileJob) error {
	pctx, cancel := context.WithCancel(ctx)
	defer cancel()
	inflight := c.r.cfg.InFlight
	free := make(chan *chunkSlot, inflight)
	for range inflight {
		free <- &chunkSlot{}
	}
	// Both queues hold at most one task per slot, so sends never block.
	order := make(chan *chunkTask, inflight)
	work := make(chan *chunkTask, inflight)
	var wg sync.WaitGroup
	wg.Go(func() { c.dispatch(pctx, jobs, free, order, work) })
	for range inflight {
		wg.Go(func() {
			for t := range work {
				c.fetch(pctx, t)
				close(t.done)
			}
		})
	}
	err := c.write(pctx, order, free)
	cancel()
	wg.Wait()
	return err
}

// dispatch creates the tasks in order, each once a slot is free.
func (c *copier) dispatch(ctx context.Context, jobs []fileJob, free <-chan *chunkSlot, order, work chan<- *chunkTask) {
	defer close(order)
	defer close(work)
	chunk := int64(c.r.cfg.ChunkSize)
	for i := range jobs {
		j := &jobs[i]
		for off := j.start; off < j.size; off += chunk {
			var s *chunkSlot
			select {
			case s = <-free:
			case <-ctx.Done():
				return
			}
			t := &chunkTask{job: j, off: off, n: min(chunk, j.size-off), slot: s, done: make(chan struct{})}
			order <- t
			work <- t
		}
	}
}

// fetch waits for the node-wide receive budget, asks the source for the
// chunk and decodes it, checking that it is exactly the bytes asked for.
func (c *copier) fetch(ctx context.Context, t *chunkTask) {
	if err := c.r.cfg.Throttle.WaitRecv(ctx, c.prio, int(t.n)); err != nil {
		t.err = err
		return
	}
	wire, err := c.src.GetFile(ctx, c.reader, t.job.name, t.off, t.n, t.slot.wire)
	if err != nil {
		t.err = fmt.Errorf("get %s [%d, %d): %w", t.job.name, t.off, t.off+t.n, wrapSourceErr(err))
		return
	}
	if cap(wire) > cap(t.slot.wire) {
		t.slot.wire = wire[:0]
	}
	data, err := c.r.codec.decode(c.meta.Compression, t.slot.raw, wire, int(t.n))
	if err != nil {
		t.err = fmt.Errorf("%s [%d, %d): %w", t.job.name, t.off, t.off+t.n, err)
		return
	}
	if c.meta.Compression != raftpb.NoCompression && cap(data) > cap(t.slot.raw) {
		t.slot.raw = data[:0]
	}
	t.data = data
}

// write consumes the tasks in order: the receiving files are always
// contiguous prefixes, and a failure leaves every chunk before it written.
func (c *copier) write(ctx context.Context, order <-chan *chunkTask, free chan<- *chunkSlot) error {
	var (
		cur      *ReceiveFile
		job      *fileJob
		unsynced int64
	)
	sy := newSyncer(c.tx)
	defer func() {
		sy.stop()
		if cur != nil {
			_ = cur.Close() // keeps (and syncs) what was written, for a resume
		}
	}()
	for t := range order {
		select {
		case <-t.done:
		case <-ctx.Done():
			return ctx.Err()
		}
		if t.err != nil {
			return t.err
		}
		if t.job != job {
			if err := c.finishFile(cur, job); err != nil {
				cur = nil
				return err
			}
			job, cur = t.job, nil
			c.wd.allowRead(job.start) // the store re-reads the prefix for its CRC
			w, err := c.tx.OpenFile(job.name, uint64(job.start))
			if err != nil {
				return err
			}
			cur = w
		}
		if cur.Offset() != uint64(t.off) {
			return fmt.Errorf("snapshot: chunk of %s at %d, file at %d (copier bug)", job.name, t.off, cur.Offset())
		}
		if _, err := cur.Write(t.data); err != nil {
			return err
		}
		c.st.moved.Add(t.n)
		c.wd.kick()
		if unsynced += t.n; unsynced >= c.r.cfg.SyncBytes {
			if err := sy.request(job.name); err != nil {
				return err
			}
			unsynced = 0
		}
		free <- t.slot
	}
	if err := ctx.Err(); err != nil {
		return err // the dispatcher stopped early
	}
	err := c.finishFile(cur, job)
	cur = nil
	return err
}

// finishFile closes (and syncs) a completely written file and checks its
// CRC32C against the meta. A mismatch removes the file, so that the next
// attempt fetches it from zero, and fails with ErrFileChecksum.
func (c *copier) finishFile(w *ReceiveFile, job *fileJob) error {
	if w == nil {
		return nil
	}
	// The file computed the CRC of everything it holds as it was written;
	// no need to checksum the chunks a second time here.
	crc := w.CRC()
	if err := w.Close(); err != nil {
		return err
	}
	if crc == job.crc {
		return nil
	}
	err := fmt.Errorf("%w: %s: crc %08x, meta says %08x", ErrFileChecksum, job.name, crc, job.crc)
	// Truncate the file so the next attempt fetches it whole. If that
	// fails the next attempt still verifies the prefix it resumes from;
	// say so rather than drop the error.
	z, terr := c.tx.OpenFile(job.name, 0)
	if terr == nil {
		terr = z.Close()
	}
	if terr != nil {
		return fmt.Errorf("%w (truncating it for a refetch: %v)", err, terr)
	}
	return err
}

// syncer fsyncs receiving files in the background, through a handle of its
// own, so that the writer never waits for the disk in mid-file: the data a
// restarted receiver finds again is durable (REQUIREMENTS §4), and the
// fsync at each file's end has little left to do. A request while one is
// pending is dropped; the next one covers it.
type syncer struct {
	tx   *ReceiveTx
	reqs chan string
	done chan struct{}
	mu   sync.Mutex
	err  error // the first failed fsync; final, never retried
}

func newSyncer(tx *ReceiveTx) *syncer {
	s := &syncer{tx: tx, reqs: make(chan string, 1), done: make(chan struct{})}
	go s.run()
	return s
}

func (s *syncer) run() {
	defer close(s.done)
	fs := s.tx.s.fs
	// dirSynced: the name whose directory entry was made durable. NB: a file
	// created by this attempt has a name only the directory's fsync makes
	// durable; without it a crash keeps the synced bytes but loses the
	// name, and the resume starts the file over.
	var dirSynced string
	for name := range s.reqs {
		if s.failed() != nil {
			continue
		}
		err := syncFile(fs, fs.PathJoin(s.tx.Dir(), name))
		if err == nil && name != dirSynced {
			if err = syncDir(fs, s.tx.Dir()); err == nil {
				dirSynced = name
			}
		}
		if err != nil {
			s.mu.Lock()
			s.err = fmt.Errorf("snapshot: sync %s: %w", name, err)
			s.mu.Unlock()
		}
	}
}

func (s *syncer) failed() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// request asks for an fsync of the named file and reports an earlier
// failure.
func (s *syncer) request(name string) error {
	select {
	case s.reqs <- name:
	default:
	}
	return s.failed()
}

// stop waits for the fsync in progress.
func (s *syncer) stop() {
	close(s.reqs)
	<-s.done
}
