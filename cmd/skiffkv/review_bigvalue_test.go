package main

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"testing"
	"time"
)

// TestReviewValueAboveFrameLimitWedgesGroup: --max-value-bytes has no
// upper bound, but the transport drops every Raft message larger than its
// frame limit (transport.DefaultMaxFrameBytes, 64 MiB; peer.appendLocked)
// and Raft always sends an entry whole. A PUT of a value above ~64 MiB is
// appended on the leader and can never reach a follower: the leader resends
// the same MsgApp forever and every later write times out (504) until the
// leader dies. --max-value-bytes must be refused above what the transport
// carries (or the PUT answered 413).
func TestReviewValueAboveFrameLimitWedgesGroup(t *testing.T) {
	reviewBug(t, "serve.go parseServe: --max-value-bytes is not capped below the transport's 64 MiB frame limit; "+
		"one PUT of a 65 MiB value (accepted with --max-value-bytes 100000000) wedges the group: later writes all 504")
	cl, leader := startCluster(t, "--max-value-bytes", "100000000", "--request-timeout", "5s")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	big := bytes.Repeat([]byte("x"), 65<<20)
	err := cl.put(ctx, leader, "big", big)
	var he *httpError
	if errors.As(err, &he) && he.Status == http.StatusRequestEntityTooLarge {
		return // refused: fine
	}
	t.Logf("PUT of a 65 MiB value: %v", err)
	// Whatever that answer, the group must still take small writes.
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := cl.put(ctx, leader, "small", []byte("1"))
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("a small PUT after the 65 MiB one still fails after 30s: %v", err)
		}
	}
}
