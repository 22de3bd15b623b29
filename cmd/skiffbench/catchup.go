package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/skiffdb/skiff"
	"github.com/skiffdb/skiff/statemachine"
)

// childCommand is the hidden subcommand that runs the new replica of the
// catch-up workload in its own process, so that its peak RSS (VmHWM) is
// its own and not the three other hosts'.
const childCommand = "catchup-replica"

const (
	catchupGroup   = skiff.GroupID(1)
	catchupReplica = skiff.ReplicaID(4)
	catchupSeed    = 0x5eed
)

// eventLog keeps the events of a process's hosts with the time they
// arrived; the listener appends without blocking the host for long.
type eventLog struct {
	mu     sync.Mutex
	events []timedEvent
	more   chan struct{} // closed and replaced at each event
}

type timedEvent struct {
	at time.Time
	ev skiff.Event
}

func newEventLog() *eventLog { return &eventLog{more: make(chan struct{})} }

func (l *eventLog) listen(ev skiff.Event) {
	now := time.Now()
	l.mu.Lock()
	l.events = append(l.events, timedEvent{at: now, ev: ev})
	close(l.more)
	l.more = make(chan struct{})
	l.mu.Unlock()
}

// wait returns the first event matching ok, waiting up to d for it.
func (l *eventLog) wait(ctx context.Context, d time.Duration, what string, ok func(skiff.Event) bool) (timedEvent, error) {
	timer := time.NewTimer(d)
	defer timer.Stop()
	for i := 0; ; {
		l.mu.Lock()
		for ; i < len(l.events); i++ {
			if ok(l.events[i].ev) {
				te := l.events[i]
				l.mu.Unlock()
				return te, nil
			}
		}
		more := l.more
		l.mu.Unlock()
		select {
		case <-more:
		case <-timer.C:
			return timedEvent{}, fmt.Errorf("%w: no %s within %v", errWorkload, what, d)
		case <-ctx.Done():
			return timedEvent{}, ctx.Err()
		}
	}
}

// childMsg is a line the child writes to its stdout.
type childMsg struct {
	Kind  string `json:"kind"` // ready, received, installed, done, error
	Addr  string `json:"addr,omitempty"`
	At    int64  `json:"at,omitempty"` // wall clock, Unix ns
	Bytes int64  `json:"bytes,omitempty"`
	RSS   int64  `json:"rss,omitempty"`
	HWM   int64  `json:"hwm,omitempty"`
	Err   string `json:"err,omitempty"`
}

// runCatchup measures a new replica catching up by snapshot on a group
// whose state machine holds size bytes: generate (RequestSnapshot on the
// leader to its SnapshotCreated), transfer (the leader's SnapshotSent to
// the new replica's SnapshotReceived), load (SnapshotReceived to
// SnapshotInstalled: restore and log reset), and catch-up, from
// AddReplica to SnapshotInstalled, with the snapshot already taken (as a
// periodic snapshot would have been). The new replica's peak RSS is its
// process's VmHWM; above idle is that minus its RSS once its host was
// open.
func runCatchup(size int64) func(context.Context, env) ([]measurement, error) {
	return func(ctx context.Context, e env) ([]measurement, error) {
		ctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
		defer cancel()
		events := newEventLog()
		c, err := openCluster(e.dir, tickInterval, events.listen)
		if err != nil {
			return nil, err
		}
		defer c.close()
		create := func(uint64, uint64) statemachine.StateMachine { return &bulkSM{size: size, seed: catchupSeed} }
		if err := c.startGroups(ctx, int(catchupGroup), int(catchupGroup), create, nil); err != nil {
			return nil, err
		}
		leaderID, err := c.hosts[0].WaitLeader(ctx, catchupGroup)
		if err != nil {
			return nil, fmt.Errorf("%w: wait for a leader: %w", errWorkload, err)
		}
		leader := c.hosts[leaderID-1]
		for i := 0; i < 10; i++ {
			if _, err := leader.Propose(ctx, catchupGroup, []byte("entry")); err != nil {
				return nil, fmt.Errorf("%w: propose: %w", errWorkload, err)
			}
		}

		childProfile := ""
		if e.profile != "" {
			childProfile = strings.TrimSuffix(e.profile, ".pprof") + ".child.pprof"
		}
		child, err := startChild(ctx, filepath.Join(e.dir, "new"), childProfile)
		if err != nil {
			return nil, err
		}
		defer child.stop()
		ready, err := child.next(30*time.Second, "ready")
		if err != nil {
			return nil, err
		}

		// The snapshot, compacting the whole log so that the new replica
		// can only catch up from it.
		stopProfile, err := e.startProfile()
		if err != nil {
			return nil, err
		}
		defer stopProfile()
		tGen := time.Now()
		idx, err := leader.RequestSnapshot(ctx, catchupGroup, skiff.SnapshotOption{OverrideCompactionOverhead: true})
		if err != nil {
			return nil, fmt.Errorf("%w: request snapshot: %w", errWorkload, err)
		}
		created, err := events.wait(ctx, 10*time.Second, "SnapshotCreated", func(ev skiff.Event) bool {
			return ev.Kind == skiff.SnapshotCreated && ev.Replica == leaderID && ev.Index == idx
		})
		if err != nil {
			return nil, err
		}
		if _, err := events.wait(ctx, 10*time.Second, "LogCompacted", func(ev skiff.Event) bool {
			return ev.Kind == skiff.LogCompacted && ev.Replica == leaderID && ev.Index >= idx
		}); err != nil {
			return nil, err
		}

		tAdd := time.Now()
		if err := leader.AddReplica(ctx, catchupGroup, catchupReplica, ready.Addr); err != nil {
			return nil, fmt.Errorf("%w: add replica: %w", errWorkload, err)
		}
		if err := child.send("start"); err != nil {
			return nil, err
		}
		var received, installed, done childMsg
		for done.Kind == "" {
			m, err := child.next(5*time.Minute, "")
			if err != nil {
				return nil, err
			}
			switch m.Kind {
			case "received":
				received = m
			case "installed":
				installed = m
			case "done":
				done = m
			}
		}
		if received.At == 0 || installed.At == 0 {
			return nil, fmt.Errorf("%w: the new replica reported no received/installed snapshot", errWorkload)
		}
		sent, err := events.wait(ctx, time.Second, "SnapshotSent", func(ev skiff.Event) bool {
			return ev.Kind == skiff.SnapshotSent && ev.Peer == catchupReplica
		})
		if err != nil {
			return nil, err
		}
		if err := child.stop(); err != nil {
			return nil, err
		}
		transfer := time.Duration(received.At - sent.at.UnixNano())
		const mib = 1 << 20
		return []measurement{
			{"catchup", time.Duration(installed.At - tAdd.UnixNano()).Seconds(), "s"},
			{"generate", created.at.Sub(tGen).Seconds(), "s"},
			{"transfer", transfer.Seconds(), "s"},
			{"load", time.Duration(installed.At - received.At).Seconds(), "s"},
			{"transfer-rate", float64(received.Bytes) / mib / transfer.Seconds(), "MiB/s"},
			{"peak-rss", float64(done.HWM) / mib, "MiB"},
			{"rss-above-idle", float64(done.HWM-ready.RSS) / mib, "MiB"},
		}, nil
	}
}

// child is the new replica's process.
type child struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	lines  chan childMsg
	stderr *bytes.Buffer
	once   sync.Once
	err    error
}

// startChild starts the new replica's process with its host in dir;
// profile, when set, is where it writes a CPU profile of its catch-up.
func startChild(ctx context.Context, dir, profile string) (*child, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("%w: find own binary: %w", errWorkload, err)
	}
	cmd := exec.CommandContext(ctx, exe, childCommand, "-dir", dir, "-cpuprofile", profile)
	c := &child{cmd: cmd, lines: make(chan childMsg, 16), stderr: &bytes.Buffer{}}
	cmd.Stderr = &limitedBuffer{b: c.stderr, n: 64 << 10}
	if c.stdin, err = cmd.StdinPipe(); err != nil {
		return nil, fmt.Errorf("%w: %w", errWorkload, err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errWorkload, err)
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("%w: start the new replica's process: %w", errWorkload, err)
	}
	go func() {
		defer close(c.lines)
		s := bufio.NewScanner(out)
		for s.Scan() {
			var m childMsg
			if json.Unmarshal(s.Bytes(), &m) == nil {
				c.lines <- m
			}
		}
	}()
	return c, nil
}

// next returns the child's next message (of kind want, when set),
// failing on an error message, its exit or d passing.
func (c *child) next(d time.Duration, want string) (childMsg, error) {
	timer := time.NewTimer(d)
	defer timer.Stop()
	for {
		select {
		case m, ok := <-c.lines:
			if !ok {
				return m, fmt.Errorf("%w: the new replica's process exited: %s", errWorkload, c.stderr)
			}
			if m.Kind == "error" {
				return m, fmt.Errorf("%w: new replica: %s", errWorkload, m.Err)
			}
			if want == "" || m.Kind == want {
				return m, nil
			}
		case <-timer.C:
			return childMsg{}, fmt.Errorf("%w: the new replica sent no %q within %v: %s", errWorkload, want, d, c.stderr)
		}
	}
}

func (c *child) send(line string) error {
	if _, err := io.WriteString(c.stdin, line+"\n"); err != nil {
		return fmt.Errorf("%w: tell the new replica %q: %w", errWorkload, line, err)
	}
	return nil
}

// stop closes the child's stdin, which makes it close its host and exit,
// and waits for it; a child that does not exit is killed.
func (c *child) stop() error {
	c.once.Do(func() {
		c.stdin.Close()
		// exec.Cmd's rule: Wait only after stdout is read to its end.
		drained := make(chan struct{})
		go func() {
			for range c.lines {
			}
			close(drained)
		}()
		timer := time.NewTimer(30 * time.Second)
		defer timer.Stop()
		select {
		case <-drained:
		case <-timer.C:
			c.cmd.Process.Kill()
			<-drained
			c.err = fmt.Errorf("%w: the new replica's process did not exit; killed", errWorkload)
		}
		if err := c.cmd.Wait(); err != nil && c.err == nil {
			c.err = fmt.Errorf("%w: the new replica's process: %w: %s", errWorkload, err, c.stderr)
		}
	})
	return c.err
}

// limitedBuffer keeps the first n bytes written to it.
type limitedBuffer struct {
	mu sync.Mutex
	b  *bytes.Buffer
	n  int
}

func (l *limitedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if room := l.n - l.b.Len(); room > 0 {
		l.b.Write(p[:min(room, len(p))])
	}
	return len(p), nil
}

// childMain runs the new replica: it opens a host, reports its address
// and RSS, starts the group with Join when told "start", reports the
// snapshot's arrival and installation and then its peak RSS, and exits
// when its stdin closes.
func childMain(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet(childCommand, flag.ContinueOnError)
	fs.SetOutput(stderr)
	dir := fs.String("dir", "", "the new replica's host directory")
	profile := fs.String("cpuprofile", "", "write a CPU profile from the start to the installed snapshot here")
	if err := fs.Parse(args); err != nil || *dir == "" {
		fmt.Fprintln(stderr, "usage: skiffbench", childCommand, "-dir DIR")
		return 2
	}
	enc := json.NewEncoder(stdout)
	var encMu sync.Mutex
	emit := func(m childMsg) {
		encMu.Lock()
		defer encMu.Unlock()
		enc.Encode(m) // a parent that went away ends us through stdin
	}
	fail := func(err error) int {
		emit(childMsg{Kind: "error", Err: err.Error()})
		return 1
	}
	// The listener must not block the host: the events we wait for are
	// few, and the buffer holds far more than arrive before we read.
	events := make(chan timedEvent, 1024)
	h, err := skiff.Open(skiff.HostConfig{Dir: *dir, RaftAddr: "127.0.0.1:0", DeploymentID: deploymentID,
		TickInterval: tickInterval, Listener: func(ev skiff.Event) {
			select {
			case events <- timedEvent{at: time.Now(), ev: ev}:
			default:
			}
		}})
	if err != nil {
		return fail(err)
	}
	defer h.Close()
	mem, err := readMemStatus("self")
	if err != nil {
		return fail(err)
	}
	emit(childMsg{Kind: "ready", Addr: h.RaftAddr(), RSS: mem.rss})

	lines := make(chan string)
	go func() {
		defer close(lines)
		s := bufio.NewScanner(stdin)
		for s.Scan() {
			lines <- s.Text()
		}
	}()
	if l, ok := <-lines; !ok || l != "start" {
		return 0 // the parent gave up before the start
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	stopProfile, err := env{profile: *profile}.startProfile()
	if err != nil {
		return fail(err)
	}
	defer stopProfile()
	cfg := groupConfig(catchupGroup, catchupReplica, nil)
	cfg.Join = true
	if err := h.StartGroup(ctx, cfg, func(uint64, uint64) statemachine.StateMachine { return &bulkSM{} }); err != nil {
		return fail(err)
	}
	for installed := false; !installed; {
		select {
		case te := <-events:
			ev := te.ev
			if ev.Group != catchupGroup {
				continue
			}
			switch ev.Kind {
			case skiff.SnapshotReceived:
				emit(childMsg{Kind: "received", At: te.at.UnixNano(), Bytes: ev.Bytes})
			case skiff.SnapshotInstalled:
				emit(childMsg{Kind: "installed", At: te.at.UnixNano()})
				installed = true
			case skiff.SnapshotFailed, skiff.GroupFailed:
				return fail(fmt.Errorf("event %v at index %d: %v", ev.Kind, ev.Index, ev.Err))
			}
		case <-ctx.Done():
			return fail(fmt.Errorf("no snapshot installed: %w", ctx.Err()))
		case _, ok := <-lines:
			if !ok {
				return 0
			}
		}
	}
	if mem, err = readMemStatus("self"); err != nil {
		return fail(err)
	}
	if err := stopProfile(); err != nil {
		return fail(err)
	}
	emit(childMsg{Kind: "done", RSS: mem.rss, HWM: mem.hwm})
	for range lines {
	}
	return 0
}
