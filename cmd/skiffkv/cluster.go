package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// localCluster runs replicas of skiffkv as child processes on 127.0.0.1:
// the demo's cluster and the end-to-end tests'.
type localCluster struct {
	bin   string // the skiffkv binary
	dir   string // DIR/<id> data, DIR/logs/<id>.log
	extra []string
	nodes map[uint64]*replicaProc
	http  *http.Client
}

type replicaProc struct {
	id                 uint64
	raftAddr, httpAddr string
	dataDir, logPath   string
	cmd                *exec.Cmd
	exited             chan struct{}
	exitErr            error
}

// freePorts reserves n distinct loopback ports. They are released before
// use, so another process could take one in between; the window is short
// and a replica that cannot listen fails loudly.
func freePorts(n int) ([]int, error) {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	ports := make([]int, 0, n)
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// newLocalCluster lays out n replicas (IDs 1..n) with free ports; extra
// flags are passed to every `serve`.
func newLocalCluster(bin, dir string, n int, extra []string) (*localCluster, error) {
	ports, err := freePorts(2 * n)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Join(dir, "logs"), 0o755); err != nil {
		return nil, err
	}
	c := &localCluster{bin: bin, dir: dir, extra: extra, nodes: map[uint64]*replicaProc{},
		http: &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 256, MaxConnsPerHost: 256}}}
	for i := range n {
		id := uint64(i + 1)
		c.nodes[id] = &replicaProc{id: id,
			raftAddr: fmt.Sprintf("127.0.0.1:%d", ports[2*i]),
			httpAddr: fmt.Sprintf("127.0.0.1:%d", ports[2*i+1]),
			dataDir:  filepath.Join(dir, strconv.FormatUint(id, 10)),
			logPath:  filepath.Join(dir, "logs", strconv.FormatUint(id, 10)+".log"),
		}
	}
	return c, nil
}

func (c *localCluster) members() string {
	var parts []string
	for id := uint64(1); id <= uint64(len(c.nodes)); id++ {
		parts = append(parts, fmt.Sprintf("%d=%s", id, c.nodes[id].raftAddr))
	}
	return strings.Join(parts, ",")
}

// start launches replica id; join starts it empty, to be caught up by the
// cluster it is already a member of.
func (c *localCluster) start(id uint64, join bool) error {
	n := c.nodes[id]
	args := []string{"serve", "--id", strconv.FormatUint(id, 10), "--data", n.dataDir,
		"--raft-addr", n.raftAddr, "--http-addr", n.httpAddr}
	if join {
		args = append(args, "--join")
	} else {
		args = append(args, "--members", c.members())
	}
	args = append(args, c.extra...)
	logf, err := os.OpenFile(n.logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	cmd := exec.Command(c.bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("start replica %d: %w", id, err)
	}
	n.cmd, n.exited, n.exitErr = cmd, make(chan struct{}), nil
	go func() {
		n.exitErr = cmd.Wait()
		logf.Close()
		close(n.exited)
	}()
	return nil
}

// stop ends replica id with SIGTERM (or SIGKILL when kill is set) and waits.
func (c *localCluster) stop(id uint64, kill bool) error {
	n := c.nodes[id]
	if n.cmd == nil {
		return nil
	}
	sig := syscall.SIGTERM
	if kill {
		sig = syscall.SIGKILL
	}
	_ = n.cmd.Process.Signal(sig)
	select {
	case <-n.exited:
	case <-time.After(15 * time.Second):
		_ = n.cmd.Process.Kill()
		<-n.exited
		n.cmd = nil
		return fmt.Errorf("replica %d did not stop within 15s of SIGTERM; killed", id)
	}
	n.cmd = nil
	if !kill && n.exitErr != nil {
		return fmt.Errorf("replica %d exited with %v (log: %s)", id, n.exitErr, n.logPath)
	}
	return nil
}

func (c *localCluster) stopAll() error {
	var errs []error
	for id := range c.nodes {
		errs = append(errs, c.stop(id, false))
	}
	return errors.Join(errs...)
}

// running reports an error if a started replica exited.
func (c *localCluster) running(id uint64) error {
	n := c.nodes[id]
	if n.cmd == nil {
		return fmt.Errorf("replica %d is not running", id)
	}
	select {
	case <-n.exited:
		return fmt.Errorf("replica %d exited (%v); last lines of %s:\n%s", id, n.exitErr, n.logPath, tail(n.logPath, 10))
	default:
		return nil
	}
}

func tail(path string, lines int) string {
	b, _ := os.ReadFile(path)
	ls := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(ls) > lines {
		ls = ls[len(ls)-lines:]
	}
	return strings.Join(ls, "\n")
}

func (c *localCluster) url(id uint64, path string) string {
	return "http://" + c.nodes[id].httpAddr + path
}

// errScanTruncated: a scan stopped at the server's limit.
var errScanTruncated = errors.New("scan truncated")

// httpError is a non-2xx answer with the contract's JSON error body.
type httpError struct {
	Status int
	Code   string
	Msg    string
}

func (e *httpError) Error() string { return fmt.Sprintf("HTTP %d %s: %s", e.Status, e.Code, e.Msg) }

// do sends a request and returns the body of a 2xx answer.
func (c *localCluster) do(ctx context.Context, method, u string, body []byte) ([]byte, error) {
	b, _, err := c.doHeader(ctx, method, u, body)
	return b, err
}

// doHeader is do that also returns the answer's header.
func (c *localCluster) doHeader(ctx context.Context, method, u string, body []byte) ([]byte, http.Header, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return nil, nil, err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, nil, err
	}
	if resp.StatusCode/100 != 2 {
		var eb errorBody
		_ = json.Unmarshal(b, &eb)
		return nil, nil, &httpError{Status: resp.StatusCode, Code: eb.Code, Msg: eb.Error}
	}
	return b, resp.Header, nil
}

func (c *localCluster) put(ctx context.Context, id uint64, key string, value []byte) error {
	_, err := c.do(ctx, http.MethodPut, c.url(id, "/v1/kv/"+url.PathEscape(key)), value)
	return err
}

func (c *localCluster) status(ctx context.Context, id uint64) (statusBody, error) {
	var st statusBody
	b, err := c.do(ctx, http.MethodGet, c.url(id, "/v1/status"), nil)
	if err != nil {
		return st, err
	}
	return st, json.Unmarshal(b, &st)
}

func (c *localCluster) scan(ctx context.Context, id uint64, prefix string, stale bool) (map[string]string, []byte, error) {
	q := url.Values{"prefix": {prefix}}
	if stale {
		q.Set("stale", "true")
	}
	b, h, err := c.doHeader(ctx, http.MethodGet, c.url(id, "/v1/kv?"+q.Encode()), nil)
	if err != nil {
		return nil, nil, err
	}
	if h.Get(truncatedHeader) == "true" {
		return nil, nil, fmt.Errorf("%w: replica %d holds more keys under %q than one scan returns (--max-scan-keys)", errScanTruncated, id, prefix)
	}
	var m map[string]string
	return m, b, json.Unmarshal(b, &m)
}

// snapshot asks replica id for a snapshot, waiting out a snapshot already
// being saved (409 busy); when everything applied is already in the latest
// snapshot, that snapshot's index is the answer.
func (c *localCluster) snapshot(ctx context.Context, id uint64) (uint64, error) {
	for {
		b, err := c.do(ctx, http.MethodPost, c.url(id, "/v1/snapshot"), nil)
		var he *httpError
		switch {
		case errors.As(err, &he) && he.Code == codeBusy:
			select {
			case <-ctx.Done():
				return 0, err
			case <-time.After(50 * time.Millisecond):
			}
			continue
		case errors.As(err, &he) && he.Code == codeNoNewEntries:
			st, serr := c.status(ctx, id)
			return st.Snapshot.Index, serr
		case err != nil:
			return 0, err
		}
		var r struct{ Index uint64 }
		return r.Index, json.Unmarshal(b, &r)
	}
}

// snapshotSeconds is the total time replica id's host spent in a snapshot
// phase (generate, transfer, install: the skiff_snapshot_seconds histogram
// of /metrics).
func (c *localCluster) snapshotSeconds(ctx context.Context, id uint64, phase string) (float64, error) {
	b, err := c.do(ctx, http.MethodGet, c.url(id, "/metrics"), nil)
	if err != nil {
		return 0, err
	}
	prefix := `skiff_snapshot_seconds_sum{phase="` + phase + `"} `
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, prefix); ok {
			return strconv.ParseFloat(strings.TrimSpace(v), 64)
		}
	}
	return 0, nil // nothing observed yet
}

// sumSnapshotSeconds is snapshotSeconds summed over the replicas ids.
func (c *localCluster) sumSnapshotSeconds(ctx context.Context, ids []uint64, phase string) (float64, error) {
	var sum float64
	for _, id := range ids {
		s, err := c.snapshotSeconds(ctx, id, phase)
		if err != nil {
			return 0, err
		}
		sum += s
	}
	return sum, nil
}

// waitFor polls cond every 50ms until it returns true, an error, or ctx
// ends; every poll also checks that the given replicas are still running.
func (c *localCluster) waitFor(ctx context.Context, what string, ids []uint64, cond func(context.Context) (bool, error)) error {
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	var last error
	for {
		for _, id := range ids {
			if err := c.running(id); err != nil {
				return err
			}
		}
		ok, err := cond(ctx)
		if err != nil {
			last = err
		} else if ok {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s: %w (last error: %v)", what, ctx.Err(), last)
		case <-t.C:
		}
	}
}

// leader waits until every replica in ids knows the same leader.
func (c *localCluster) leader(ctx context.Context, ids []uint64) (uint64, error) {
	var leader uint64
	err := c.waitFor(ctx, "a leader", ids, func(ctx context.Context) (bool, error) {
		leader = 0
		for _, id := range ids {
			st, err := c.status(ctx, id)
			if err != nil {
				return false, err
			}
			if st.Leader == 0 || (leader != 0 && st.Leader != leader) {
				return false, nil
			}
			leader = st.Leader
		}
		return true, nil
	})
	return leader, err
}
