package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"path"
	"strings"
	"time"
)

const exportUsage = `Usage:
  skiffctl snapshot export --http HOST:PORT --dir DIR [--timeout 5m] [--json]

Asks a running skiffkv (its --http-addr) to write an exported snapshot of
group 1 under DIR on the server's own host (POST /v1/snapshot?export=DIR).
DIR must exist there and be an absolute path: the server resolves it, not
this machine. The export lands in DIR/snapshot-<index>; it is
self-contained and changes neither the group's log nor its snapshots. Keep
it for "skiffctl import" (disaster recovery); check it with
"skiffctl snapshot inspect".

Flags:
  --http ADDR       the server's HTTP address, HOST:PORT or http(s)://HOST:PORT
  --dir DIR         absolute directory on the server's host
  --timeout DUR     give up after this long (default 5m; the outcome is then
                    unknown: the export may still complete)
  --json            print {"index": N, "dir": "..."} instead of text

Example:
  skiffctl snapshot export --http 127.0.0.1:8080 --dir /var/backups/skiffkv
`

// exportResult is what the server answered.
type exportResult struct {
	Index uint64 `json:"index"`
	Dir   string `json:"dir"`
	// Seconds the server took, when it says (skiffkv does).
	Seconds float64 `json:"seconds,omitempty"`
}

// serverError is skiffkv's JSON error body (DESIGN §7).
type serverError struct {
	Status  int    `json:"-"`
	Message string `json:"error"`
	Code    string `json:"code"`
}

func (e *serverError) Error() string {
	code := e.Code
	if code == "" {
		code = "no code"
	}
	return fmt.Sprintf("server answered %d %s: %s", e.Status, code, e.Message)
}

func runExport(args []string, stdout, stderr io.Writer) int {
	const prog = "skiffctl snapshot export"
	fl := newFlags("snapshot export")
	addr := fl.String("http", "", "")
	dir := fl.String("dir", "", "")
	timeout := fl.Duration("timeout", 5*time.Minute, "")
	asJSON := fl.Bool("json", false, "")
	if _, code, ok := parse(fl, args, 0, exportUsage, stdout, stderr); !ok {
		return code
	}
	endpoint, err := exportURL(*addr, *dir)
	if err != nil {
		return usageError(stderr, prog, err.Error(), exportUsage)
	}
	if *timeout <= 0 {
		return usageError(stderr, prog, "--timeout must be positive", exportUsage)
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	// A transport of its own, without a proxy (the server is an internal
	// admin endpoint) and closed on return: no connection outlives the
	// command.
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	res, err := requestExport(ctx, &http.Client{Transport: tr}, endpoint)
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			return failf(stderr, prog, "no answer within %v: the export may still complete on the server; check %s there", *timeout, *dir)
		}
		return failf(stderr, prog, "%v", err)
	}
	res.Dir = path.Join(*dir, publishedName(res.Index))
	if *asJSON {
		if err := json.NewEncoder(stdout).Encode(res); err != nil {
			return failf(stderr, prog, "%v", err)
		}
		return exitOK
	}
	took := ""
	if res.Seconds > 0 {
		took = fmt.Sprintf(" in %.2fs", res.Seconds)
	}
	fmt.Fprintf(stdout, "exported snapshot at index %d to %s on the server's host%s\n", res.Index, res.Dir, took)
	fmt.Fprintf(stdout, "verify it there with: skiffctl snapshot inspect %s\n", res.Dir)
	return exitOK
}

// exportURL builds the request URL from --http and --dir.
func exportURL(addr, dir string) (string, error) {
	if addr == "" {
		return "", errors.New("--http is required")
	}
	if dir == "" {
		return "", errors.New("--dir is required")
	}
	if !path.IsAbs(dir) {
		return "", fmt.Errorf("--dir %q must be absolute: the server resolves it on its own host", dir)
	}
	base := addr
	if !strings.Contains(base, "://") {
		base = "http://" + base
	}
	u, err := url.Parse(base)
	if err != nil {
		return "", fmt.Errorf("--http %q: %v", addr, err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || (u.Path != "" && u.Path != "/") {
		return "", fmt.Errorf("--http %q: want HOST:PORT or http(s)://HOST:PORT", addr)
	}
	u.Path = "/v1/snapshot"
	u.RawQuery = url.Values{"export": {dir}}.Encode()
	return u.String(), nil
}

// requestExport POSTs to endpoint and decodes the answer: {"index": N} on
// 200, a *serverError otherwise.
func requestExport(ctx context.Context, c *http.Client, endpoint string) (exportResult, error) {
	var res exportResult
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint, nil)
	if err != nil {
		return res, err
	}
	resp, err := c.Do(req)
	if err != nil {
		return res, err
	}
	defer resp.Body.Close()
	// An answer is a small JSON object; a bigger body is not skiffkv's.
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return res, fmt.Errorf("read the answer: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		se := &serverError{Status: resp.StatusCode}
		if json.Unmarshal(body, se) != nil || se.Message == "" {
			se.Message = strings.TrimSpace(string(body))
			if len(se.Message) > 200 {
				se.Message = se.Message[:200] + "..."
			}
		}
		return res, se
	}
	if err := json.Unmarshal(body, &res); err != nil {
		return res, fmt.Errorf("the answer is not {\"index\": N}: %v (%q)", err, body)
	}
	if res.Index == 0 {
		return res, fmt.Errorf("the answer has no index: %q", body)
	}
	return res, nil
}
