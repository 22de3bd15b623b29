package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestReviewWriteCutByShutdownIsNot500: a write still waiting when the
// replica stops (SIGTERM: srv.Shutdown waits at most 5s, then h.Close)
// fails with ErrClosed/ErrGroupStopped, which fail() maps to
// 500 "internal" — a code the contract does not have for writes, and which
// says neither "outcome unknown" (504 timeout) nor "nothing happened"
// (503 no_leader). Clients that retry on 503/504 and give up on 500 then
// drop a write whose outcome they do not know. Here the write waits for a
// leader that never comes (replicas 2 and 3 do not run), and the server
// is stopped under it. Now the stop lets requests in flight run their
// --request-timeout (3s here) out, and a write cut by the host closing
// anyway is 504 (outcome unknown).
func TestReviewWriteCutByShutdownIsNot500(t *testing.T) {
	leakCheck(t)
	ports, err := freePorts(4)
	if err != nil {
		t.Fatal(err)
	}
	raft := fmt.Sprintf("127.0.0.1:%d", ports[0])
	members := fmt.Sprintf("1=%s,2=127.0.0.1:%d,3=127.0.0.1:%d", raft, ports[2], ports[3])
	c, err := parseServe([]string{"--id", "1", "--data", filepath.Join(t.TempDir(), "data"), "--raft-addr", raft,
		"--http-addr", fmt.Sprintf("127.0.0.1:%d", ports[1]), "--members", members,
		"--request-timeout", "3s"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- serve(ctx, c, slog.New(slog.DiscardHandler)) }()
	client := &http.Client{}
	defer client.CloseIdleConnections()
	base := "http://" + c.httpAddr
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := client.Get(base + "/v1/status")
		if err == nil {
			resp.Body.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("serve did not come up: %v", err)
		}
		select {
		case err := <-done:
			t.Fatalf("serve exited: %v", err)
		case <-time.After(20 * time.Millisecond):
		}
	}
	type answer struct {
		status int
		body   errorBody
		err    error
	}
	answered := make(chan answer, 1)
	started := make(chan struct{})
	go func() {
		req, _ := http.NewRequest("PUT", base+"/v1/kv/k", strings.NewReader("v"))
		close(started)
		resp, err := client.Do(req)
		if err != nil {
			answered <- answer{err: err}
			return
		}
		defer resp.Body.Close()
		var eb errorBody
		_ = json.NewDecoder(resp.Body).Decode(&eb)
		answered <- answer{status: resp.StatusCode, body: eb}
	}()
	<-started
	// Stop only once the PUT waits inside Propose (skiff_proposals_total
	// counts it on submission).
	deadline = time.Now().Add(10 * time.Second)
	for !strings.Contains(reviewMetrics(t, client, base), "\nskiff_proposals_total 1\n") {
		if time.Now().After(deadline) {
			t.Fatal("the PUT never reached Propose")
		}
		select {
		case a := <-answered:
			t.Fatalf("the PUT was answered before the stop: %+v", a)
		case <-time.After(20 * time.Millisecond):
		}
	}
	cancel() // SIGTERM
	a := <-answered
	if err := <-done; err != nil {
		t.Logf("serve: %v", err)
	}
	if a.err != nil {
		t.Fatalf("the PUT got no answer: %v", a.err)
	}
	if a.status == http.StatusInternalServerError {
		t.Fatalf("a write cut by the stop: %d %+v, want 503 no_leader or 504 timeout", a.status, a.body)
	}
	if !(a.status == 503 && a.body.Code == codeNoLeader) && !(a.status == 504 && a.body.Code == codeTimeout) {
		t.Fatalf("a write cut by the stop: %d %+v, want 503 no_leader or 504 timeout", a.status, a.body)
	}
}

func reviewMetrics(t *testing.T, client *http.Client, base string) string {
	t.Helper()
	resp, err := client.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}
