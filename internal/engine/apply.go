package engine

import (
	"sync"
	"time"

	"github.com/skiffdb/skiff/internal/rsm"
	"github.com/skiffdb/skiff/internal/snapshot"
)

// applyWorker applies committed entries to the state machines of a shard of
// groups, serves their reads and runs their captures and restores, so
// that everything touching one state machine happens on one goroutine at a
// time (statemachine package doc).
type applyWorker struct {
	e  *Engine
	id int

	mu     sync.Mutex
	runq   []*node
	notify chan struct{}
	quit   chan struct{}
	done   chan struct{}

	run []*node
	out []rsm.Applied
}

// applyTask is one unit of apply work for a node.
type applyTask struct {
	batch     *rsm.Batch
	read      *readBatch
	readIndex uint64
	fn        func()
}

func newApplyWorker(e *Engine, id int) *applyWorker {
	return &applyWorker{e: e, id: id,
		notify: make(chan struct{}, 1), quit: make(chan struct{}), done: make(chan struct{})}
}

func (w *applyWorker) start() { go w.loop() }

func (w *applyWorker) close() {
	close(w.quit)
	<-w.done
}

// submit queues t for n.
func (w *applyWorker) submit(n *node, t applyTask) {
	n.amu.Lock()
	n.atasks = append(n.atasks, t)
	queue := !n.aqueued
	n.aqueued = true
	n.amu.Unlock()
	if queue {
		w.mu.Lock()
		w.runq = append(w.runq, n)
		w.mu.Unlock()
		select {
		case w.notify <- struct{}{}:
		default:
		}
	}
}

// drain waits until the tasks queued for n so far have run (or the worker
// stopped).
func (w *applyWorker) drain(n *node) {
	done := make(chan struct{})
	w.submit(n, applyTask{fn: func() { close(done) }})
	select {
	case <-done:
	case <-w.done:
	}
}

func (w *applyWorker) loop() {
	defer close(w.done)
	for {
		select {
		case <-w.quit:
			return
		case <-w.notify:
		}
		for {
			w.mu.Lock()
			run := append(w.run[:0], w.runq...)
			w.runq = w.runq[:0]
			w.mu.Unlock()
			w.run = run
			if len(run) == 0 {
				break
			}
			for _, n := range run {
				w.runNode(n)
			}
		}
	}
}

func (w *applyWorker) runNode(n *node) {
	n.amu.Lock()
	tasks := n.atasks
	n.atasks = nil
	n.aqueued = false
	n.amu.Unlock()
	for i := range tasks {
		t := &tasks[i]
		switch {
		case t.fn != nil:
			t.fn()
		case n.failed.Load() != nil:
			// A failed state machine is never touched again.
			if t.read != nil {
				t.read.fail(n.stoppedErr())
			}
		case t.batch != nil:
			w.applyBatch(n, t.batch)
		case t.read != nil:
			n.addRead(t.read, t.readIndex)
		}
	}
}

func (w *applyWorker) applyBatch(n *node, b *rsm.Batch) {
	out, err := n.rsm.Apply(*b, w.out[:0])
	n.e.metrics.applied.Add(float64(len(b.Entries)))
	w.out = out[:0]
	for i := range out {
		a := &out[i]
		if p := n.removePending(a.Key); p != nil {
			p.complete(a.Result, a.Err)
		}
		out[i] = rsm.Applied{}
	}
	if err != nil {
		n.fail(err)
		return
	}
	applied, _ := n.rsm.LastApplied()
	n.applied.Store(applied)
	n.serveReads(applied)
	n.checkTrigger()
}

// checkTrigger starts a snapshot when the policy says so (apply worker).
func (n *node) checkTrigger() {
	if n.failed.Load() != nil {
		return
	}
	defer n.publishTrigger()
	applied, _ := n.rsm.LastApplied()
	last, _ := n.exec.LastSnapshot()
	now := time.Now()
	if now.Sub(n.logBytesAt) >= n.e.cfg.TickInterval {
		n.logBytes, n.logBytesAt = uint64(n.glog.LogBytes()), now
	}
	reason := n.trigger.Check(now, snapshot.TriggerState{
		Applied: applied, LastSnapshotIndex: last, LogBytes: n.logBytes})
	if reason == snapshot.ReasonNone || !n.saving.CompareAndSwap(false, true) {
		return
	}
	n.bg.Add(1)
	go n.runSnapshot()
}

func (n *node) publishTrigger() {
	if t := n.trigger.Next(); !t.IsZero() {
		n.nextTrigger.Store(t.UnixNano())
	}
}

// runSnapshot takes a periodic snapshot on its own goroutine: the capture
// hops to the apply worker, the save runs here.
func (n *node) runSnapshot() {
	defer n.bg.Done()
	defer n.saving.Store(false)
	release, ok := n.e.throttle.TryReserveGeneration()
	if !ok {
		return // the node-wide cap is reached; the trigger fires again
	}
	defer release()
	before, _ := n.exec.LastSnapshot()
	start := time.Now()
	idx, err := n.exec.DoSnapshot(n.ctx)
	switch {
	case err != nil:
		n.e.metrics.failures.WithLabelValues("snapshot_save").Inc()
		n.log.Info("snapshot not taken", "err", err)
		n.e.cfg.Listener.OnEvent(Event{Kind: SnapshotFailed, Group: n.group, Replica: n.replica, Err: err})
	case idx > before:
		n.e.metrics.snapshotSeconds.WithLabelValues("save").Observe(since(start))
		n.snapshotCreated(idx)
	}
	n.aw.submit(n, applyTask{fn: func() {
		n.logBytesAt = time.Time{} // measure the compacted log next time
		n.trigger.Done(time.Now())
		n.publishTrigger()
	}})
}

func (n *node) snapshotCreated(idx uint64) {
	var bytes int64
	if m, ok := n.store.Latest(); ok && m.Index == idx {
		for _, f := range m.Files {
			bytes += int64(f.Size)
		}
	} else if m, ok := n.offerStore().Latest(); ok && m.Index == idx {
		for _, f := range m.Files {
			bytes += int64(f.Size)
		}
	}
	n.e.metrics.snapshotBytes.WithLabelValues("created").Add(float64(bytes))
	n.e.cfg.Listener.OnEvent(Event{Kind: SnapshotCreated, Group: n.group, Replica: n.replica, Index: idx, Bytes: bytes})
}

// addRead serves a confirmed read once the state machine has applied its
// index (apply worker).
func (n *node) addRead(b *readBatch, index uint64) {
	b.index = index
	if applied, _ := n.rsm.LastApplied(); applied >= index {
		n.serveRead(b)
		return
	}
	n.waiting = append(n.waiting, b)
}

func (n *node) serveReads(applied uint64) {
	if len(n.waiting) == 0 {
		return
	}
	keep := n.waiting[:0]
	for _, b := range n.waiting {
		if b.index <= applied {
			n.serveRead(b)
		} else {
			keep = append(keep, b)
		}
	}
	clear(n.waiting[len(keep):])
	n.waiting = keep
}

func (n *node) serveRead(b *readBatch) {
	n.e.metrics.reads.Add(float64(len(b.reqs)))
	for _, r := range b.reqs {
		v, err := n.rsm.Lookup(r.query)
		r.complete(v, err)
	}
}
