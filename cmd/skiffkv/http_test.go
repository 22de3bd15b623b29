package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

// leakCheck fails the test if, once it is over, a goroutine of skiff or of
// Pebble still runs.
func leakCheck(t *testing.T) {
	t.Cleanup(func() {
		deadline := time.Now().Add(10 * time.Second)
		buf := make([]byte, 16<<20)
		for {
			var leaked []string
			for g := range strings.SplitSeq(string(buf[:runtime.Stack(buf, true)]), "\n\n") {
				if (strings.Contains(g, "github.com/skiffdb/skiff") || strings.Contains(g, "cockroachdb/pebble")) &&
					!strings.Contains(g, "_test.go") {
					leaked = append(leaked, g)
				}
			}
			if len(leaked) == 0 {
				return
			}
			if time.Now().After(deadline) {
				t.Errorf("goroutines left running:\n%s", strings.Join(leaked, "\n\n"))
				return
			}
			runtime.Gosched()
		}
	})
}

// inProcess runs `serve` of a one-replica cluster in this process.
type inProcess struct {
	t      *testing.T
	base   string
	client *http.Client
	export string
}

func startInProcess(t *testing.T, mutate func(*serveConfig)) *inProcess {
	t.Helper()
	leakCheck(t)
	ports, err := freePorts(2)
	if err != nil {
		t.Fatal(err)
	}
	raft := fmt.Sprintf("127.0.0.1:%d", ports[0])
	args := []string{"--id", "1", "--data", filepath.Join(t.TempDir(), "data"), "--raft-addr", raft,
		"--http-addr", fmt.Sprintf("127.0.0.1:%d", ports[1]), "--members", "1=" + raft,
		"--max-value-bytes", "1000", "--request-timeout", "3s", "--snapshot-entries", "0", "--max-scan-keys", "3"}
	c, err := parseServe(args, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if mutate != nil {
		mutate(&c)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- serve(ctx, c, slog.New(slog.DiscardHandler)) }()
	p := &inProcess{t: t, base: "http://" + c.httpAddr, client: &http.Client{}, export: t.TempDir()}
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
		p.client.CloseIdleConnections()
	})
	deadline := time.Now().Add(20 * time.Second)
	for {
		code, body := p.req("GET", "/v1/status", nil)
		var st statusBody
		if code == 200 && json.Unmarshal(body, &st) == nil && st.Leader == 1 {
			return p
		}
		select {
		case err := <-done:
			t.Fatalf("serve exited: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("no leader: %d %s", code, body)
		}
		runtime.Gosched()
	}
}

func (p *inProcess) req(method, path string, body []byte) (int, []byte) {
	p.t.Helper()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequest(method, p.base+path, rd)
	if err != nil {
		p.t.Fatal(err)
	}
	resp, err := p.client.Do(req)
	if err != nil {
		return 0, []byte(err.Error())
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

// expect checks a request's status and, for errors, the JSON code.
func (p *inProcess) expect(method, path string, body []byte, wantStatus int, wantCode string) []byte {
	p.t.Helper()
	code, b := p.req(method, path, body)
	if code != wantStatus {
		p.t.Fatalf("%s %s: status %d (%s), want %d", method, path, code, b, wantStatus)
	}
	if wantCode != "" {
		var eb errorBody
		if err := json.Unmarshal(b, &eb); err != nil || eb.Code != wantCode || eb.Error == "" {
			p.t.Fatalf("%s %s: body %q, want a JSON error with code %q", method, path, b, wantCode)
		}
	}
	return b
}

func TestHTTPContract(t *testing.T) {
	p := startInProcess(t, nil)

	p.expect("GET", "/v1/kv/a", nil, 404, codeNotFound)
	p.expect("PUT", "/v1/kv/a", []byte("1"), 204, "")
	if b := p.expect("GET", "/v1/kv/a", nil, 200, ""); string(b) != "1" {
		t.Fatalf("GET a = %q", b)
	}
	if b := p.expect("GET", "/v1/kv/a?stale=true", nil, 200, ""); string(b) != "1" {
		t.Fatalf("stale GET a = %q", b)
	}
	// Keys may contain slashes and need escaping.
	p.expect("PUT", "/v1/kv/dir/sub%20key", []byte("x"), 204, "")
	if b := p.expect("GET", "/v1/kv/dir/sub%20key", nil, 200, ""); string(b) != "x" {
		t.Fatalf("GET dir/sub key = %q", b)
	}
	// An empty value is a value.
	p.expect("PUT", "/v1/kv/empty", nil, 204, "")
	if b := p.expect("GET", "/v1/kv/empty", nil, 200, ""); len(b) != 0 {
		t.Fatalf("GET empty = %q", b)
	}

	// Compare-and-set.
	p.expect("PUT", "/v1/kv/a?prev=2", []byte("3"), 412, codeMismatch)
	p.expect("PUT", "/v1/kv/a?prev=1", []byte("3"), 204, "")
	if b := p.expect("GET", "/v1/kv/a", nil, 200, ""); string(b) != "3" {
		t.Fatalf("GET a after CAS = %q", b)
	}
	p.expect("PUT", "/v1/kv/absent?prev=", []byte("3"), 412, codeMismatch)

	// Scans: prefix, limit, JSON map.
	for _, k := range []string{"p/1", "p/2", "p/3", "q/1"} {
		p.expect("PUT", "/v1/kv/"+k, []byte("v"+k), 204, "")
	}
	var m map[string]string
	if err := json.Unmarshal(p.expect("GET", "/v1/kv?prefix=p/", nil, 200, ""), &m); err != nil {
		t.Fatal(err)
	}
	if len(m) != 3 || m["p/2"] != "vp/2" {
		t.Fatalf("scan p/ = %v", m)
	}
	m = nil
	if err := json.Unmarshal(p.expect("GET", "/v1/kv?prefix=p/&limit=2", nil, 200, ""), &m); err != nil {
		t.Fatal(err)
	}
	if len(m) != 2 || m["p/1"] == "" || m["p/2"] == "" {
		t.Fatalf("scan p/ limit 2 = %v", m)
	}
	// The server's cap (--max-scan-keys 3 here) bounds every scan, and a
	// scan cut short says so.
	for _, c := range []struct {
		query     string
		n         int
		truncated bool
	}{{"?prefix=p/&limit=2", 2, true}, {"?prefix=p/&limit=3", 3, false}, {"?prefix=", 3, true}, {"?limit=100", 3, true}} {
		resp, err := p.client.Get(p.base + "/v1/kv" + c.query)
		if err != nil {
			t.Fatal(err)
		}
		m = nil
		err = json.NewDecoder(resp.Body).Decode(&m)
		resp.Body.Close()
		if err != nil || len(m) != c.n || (resp.Header.Get(truncatedHeader) == "true") != c.truncated {
			t.Fatalf("scan %s: %d keys, truncated %q (%v); want %d, %v", c.query, len(m), resp.Header.Get(truncatedHeader), err, c.n, c.truncated)
		}
	}

	// Delete.
	p.expect("DELETE", "/v1/kv/p/1", nil, 204, "")
	p.expect("GET", "/v1/kv/p/1", nil, 404, codeNotFound)

	// Bad input.
	p.expect("PUT", "/v1/kv/big", bytes.Repeat([]byte("x"), 1001), 413, codeTooLarge)
	p.expect("GET", "/v1/kv/big", nil, 404, codeNotFound)
	p.expect("PUT", "/v1/kv/", []byte("x"), 400, codeBadRequest)
	p.expect("GET", "/v1/kv/a?stale=maybe", nil, 400, codeBadRequest)
	p.expect("GET", "/v1/kv?limit=-1", nil, 400, codeBadRequest)
	p.expect("GET", "/v1/kv?limit=0", nil, 400, codeBadRequest)
	p.expect("POST", "/v1/members/0?addr=127.0.0.1:1", nil, 400, codeBadRequest)
	p.expect("POST", "/v1/members/4", nil, 400, codeBadRequest)
	p.expect("POST", "/v1/snapshot?export=/does/not/exist", nil, 400, codeBadRequest)
	p.expect("GET", "/v1/nothing", nil, 404, codeNotFound)

	// Status.
	var st statusBody
	if err := json.Unmarshal(p.expect("GET", "/v1/status", nil, 200, ""), &st); err != nil {
		t.Fatal(err)
	}
	if st.ID != 1 || st.Leader != 1 || st.Term == 0 || st.Applied < st.Commit || st.Commit == 0 ||
		st.LastIndex < st.Commit || st.Members["1"] == "" || st.Transfers == nil {
		t.Fatalf("status = %+v", st)
	}

	// Snapshots: a plain one, then an exported one.
	var snap struct{ Index uint64 }
	if err := json.Unmarshal(p.expect("POST", "/v1/snapshot", nil, 200, ""), &snap); err != nil || snap.Index == 0 {
		t.Fatalf("snapshot: %+v %v", snap, err)
	}
	p.expect("POST", "/v1/snapshot", nil, 409, codeNoNewEntries) // nothing new since
	p.expect("PUT", "/v1/kv/after", []byte("1"), 204, "")
	if err := json.Unmarshal(p.expect("POST", "/v1/snapshot?export="+p.export, nil, 200, ""), &snap); err != nil || snap.Index == 0 {
		t.Fatalf("exported snapshot: %+v %v", snap, err)
	}
	if entries, err := os.ReadDir(p.export); err != nil || len(entries) == 0 {
		t.Fatalf("export dir: %v %v", entries, err)
	}
	if err := json.Unmarshal(p.expect("GET", "/v1/status", nil, 200, ""), &st); err != nil {
		t.Fatal(err)
	}
	if st.Snapshot.Index == 0 {
		t.Fatalf("status after a snapshot: %+v", st.Snapshot)
	}

	// Metrics in the Prometheus text format.
	if b := p.expect("GET", "/metrics", nil, 200, ""); !bytes.Contains(b, []byte("skiff_proposals_total")) {
		t.Fatalf("metrics lack skiff_proposals_total")
	}
}

func TestServeFlags(t *testing.T) {
	ok := []string{"--id", "1", "--data", "d", "--raft-addr", "127.0.0.1:1", "--http-addr", "127.0.0.1:2",
		"--members", "1=127.0.0.1:1,2=127.0.0.1:3"}
	if _, err := parseServe(ok, io.Discard); err != nil {
		t.Fatalf("valid flags: %v", err)
	}
	bad := map[string][]string{
		"no id":             {"--data", "d", "--raft-addr", "127.0.0.1:1", "--http-addr", "127.0.0.1:2", "--members", "1=127.0.0.1:1"},
		"no members":        {"--id", "1", "--data", "d", "--raft-addr", "127.0.0.1:1", "--http-addr", "127.0.0.1:2"},
		"self not a member": {"--id", "3", "--data", "d", "--raft-addr", "127.0.0.1:1", "--http-addr", "127.0.0.1:2", "--members", "1=127.0.0.1:1"},
		"address mismatch":  {"--id", "1", "--data", "d", "--raft-addr", "127.0.0.1:1", "--http-addr", "127.0.0.1:2", "--members", "1=127.0.0.1:9"},
		"bad member":        {"--id", "1", "--data", "d", "--raft-addr", "127.0.0.1:1", "--http-addr", "127.0.0.1:2", "--members", "1=127.0.0.1:1,x"},
		"zero member id":    {"--id", "1", "--data", "d", "--raft-addr", "127.0.0.1:1", "--http-addr", "127.0.0.1:2", "--members", "0=127.0.0.1:1"},
		"duplicate member":  {"--id", "1", "--data", "d", "--raft-addr", "127.0.0.1:1", "--http-addr", "127.0.0.1:2", "--members", "1=127.0.0.1:1,1=127.0.0.1:1"},
		"bad addr":          {"--id", "1", "--data", "d", "--raft-addr", "nohost", "--http-addr", "127.0.0.1:2", "--join"},
		"half tls":          {"--id", "1", "--data", "d", "--raft-addr", "127.0.0.1:1", "--http-addr", "127.0.0.1:2", "--join", "--tls-cert", "c"},
		"unknown flag":      {"--id", "1", "--bogus"},
		"extra argument":    append(append([]string{}, ok...), "extra"),
	}
	for name, args := range bad {
		var stderr bytes.Buffer
		code := run(context.Background(), append([]string{"serve"}, args...), io.Discard, &stderr)
		if code != exitUsage {
			t.Errorf("%s: exit %d, want %d", name, code, exitUsage)
		}
		if lines := strings.Count(strings.TrimSpace(stderr.String()), "\n"); name != "unknown flag" && lines != 0 {
			t.Errorf("%s: want a one-line error, got:\n%s", name, stderr.String())
		}
	}
	if code := run(context.Background(), []string{"bogus"}, io.Discard, io.Discard); code != exitUsage {
		t.Errorf("unknown command: exit %d", code)
	}
	if code := run(context.Background(), []string{"serve", "--help"}, io.Discard, io.Discard); code != exitOK {
		t.Errorf("serve --help: exit %d", code)
	}
}

func TestDataDirIdentity(t *testing.T) {
	dir := t.TempDir()
	c := serveConfig{id: 1, deploymentID: 7, data: filepath.Join(dir, "d")}
	if err := checkIdentity(c); err != nil {
		t.Fatal(err)
	}
	if err := checkIdentity(c); err != nil {
		t.Fatalf("same replica again: %v", err)
	}
	other := c
	other.id = 2
	if err := checkIdentity(other); !errors.Is(err, ErrWrongDataDir) || !strings.Contains(err.Error(), "replica 1 of deployment 7") {
		t.Fatalf("another replica's dir: %v", err)
	}
	other = c
	other.deploymentID = 8
	if err := checkIdentity(other); !errors.Is(err, ErrWrongDataDir) {
		t.Fatalf("another deployment's dir: %v", err)
	}
	// A non-empty directory that is not ours is refused too.
	foreign := serveConfig{id: 1, deploymentID: 7, data: filepath.Join(dir, "f")}
	if err := os.MkdirAll(foreign.data, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(foreign.data, "x"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := checkIdentity(foreign); !errors.Is(err, ErrWrongDataDir) {
		t.Fatalf("foreign dir: %v", err)
	}
	// And serve refuses to start on it, exiting 1.
	var stderr bytes.Buffer
	code := run(context.Background(), []string{"serve", "--id", "2", "--deployment-id", "7", "--data", c.data,
		"--raft-addr", "127.0.0.1:1", "--http-addr", "127.0.0.1:2", "--join"}, io.Discard, &stderr)
	if code != exitFail || !strings.Contains(stderr.String(), "belongs to another replica") {
		t.Fatalf("serve on another replica's dir: exit %d, %s", code, stderr.String())
	}
}
