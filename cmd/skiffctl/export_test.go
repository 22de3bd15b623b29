package main

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// fakeServer answers POST /v1/snapshot like skiffkv (DESIGN §7) and
// records the export path it was asked for.
func fakeServer(t *testing.T, status int, body string) (*httptest.Server, *[]string) {
	t.Helper()
	var asked []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || r.URL.Path != "/v1/snapshot" {
			w.WriteHeader(http.StatusNotFound)
			return
		}
		asked = append(asked, r.URL.Query().Get("export"))
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		w.Write([]byte(body))
	}))
	t.Cleanup(srv.Close)
	return srv, &asked
}

func TestExport(t *testing.T) {
	srv, asked := fakeServer(t, http.StatusOK, `{"index": 42, "seconds": 0.25}`)
	addr := strings.TrimPrefix(srv.URL, "http://")
	code, out, errOut := runCmd("snapshot", "export", "--http", addr, "--dir", "/backups/kv dir")
	if code != exitOK {
		t.Fatalf("exit %d\n%s%s", code, out, errOut)
	}
	if len(*asked) != 1 || (*asked)[0] != "/backups/kv dir" {
		t.Fatalf("the server was asked for %q", *asked)
	}
	if !strings.Contains(out, "exported snapshot at index 42 to /backups/kv dir/snapshot-00000000000000000042 on the server's host in 0.25s") {
		t.Fatalf("output:\n%s", out)
	}
	// --json, and a URL with its scheme.
	code, out, _ = runCmd("snapshot", "export", "--http", srv.URL, "--dir", "/b", "--json")
	var res exportResult
	if err := json.Unmarshal([]byte(out), &res); code != exitOK || err != nil || res.Index != 42 || res.Dir != "/b/snapshot-00000000000000000042" {
		t.Fatalf("--json: exit %d %v %+v", code, err, res)
	}
}

func TestExportServerError(t *testing.T) {
	srv, _ := fakeServer(t, http.StatusServiceUnavailable, `{"error": "no leader yet", "code": "no_leader"}`)
	code, out, errOut := runCmd("snapshot", "export", "--http", srv.URL, "--dir", "/b")
	if code != exitFail || out != "" || !strings.Contains(errOut, "server answered 503 no_leader: no leader yet") {
		t.Fatalf("exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	// Not skiffkv's JSON: the body is quoted, shortened.
	srv2, _ := fakeServer(t, http.StatusBadGateway, "<html>"+strings.Repeat("x", 500))
	code, _, errOut = runCmd("snapshot", "export", "--http", srv2.URL, "--dir", "/b")
	if code != exitFail || !strings.Contains(errOut, "server answered 502 no code: <html>") || len(errOut) > 400 {
		t.Fatalf("non-JSON error: exit %d %q", code, errOut)
	}
	// A 200 without an index is not success.
	srv3, _ := fakeServer(t, http.StatusOK, `{}`)
	if code, _, errOut := runCmd("snapshot", "export", "--http", srv3.URL, "--dir", "/b"); code != exitFail || !strings.Contains(errOut, "no index") {
		t.Fatalf("empty answer: exit %d %q", code, errOut)
	}
	// Nobody listening.
	if code, _, _ := runCmd("snapshot", "export", "--http", freeAddr(t), "--dir", "/b", "--timeout", "5s"); code != exitFail {
		t.Fatalf("no server: exit %d", code)
	}
}

func TestExportUsage(t *testing.T) {
	for _, args := range [][]string{
		{"--dir", "/b"},
		{"--http", "127.0.0.1:1"},
		{"--http", "127.0.0.1:1", "--dir", "relative/dir"},
		{"--http", "ftp://h:1", "--dir", "/b"},
		{"--http", "127.0.0.1:1", "--dir", "/b", "--timeout", "0s"},
		{"--http", "127.0.0.1:1", "--dir", "/b", "--timeout", "soon"},
	} {
		code, out, errOut := runCmd(append([]string{"snapshot", "export"}, args...)...)
		if code != exitUsage || out != "" || !strings.Contains(errOut, "Usage:") {
			t.Errorf("%q: exit %d, stderr %q", args, code, errOut)
		}
	}
}
