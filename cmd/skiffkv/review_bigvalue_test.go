package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestReviewValueAboveFrameLimitWedgesGroup: the transport drops every
// Raft message larger than its frame limit (transport.DefaultMaxFrameBytes,
// 64 MiB), and Raft always sends an entry whole, so a value above it would
// be appended on the leader and never reach a follower: the leader resends
// the same MsgApp forever and every later write times out. Found by review
// with --max-value-bytes 100000000 and a 65 MiB PUT. Now --max-value-bytes
// is refused above maxValueLimit (half the frame), and a value above the
// configured limit is refused with 413 before it is proposed.
func TestReviewValueAboveFrameLimitWedgesGroup(t *testing.T) {
	for _, v := range []string{"100000000", fmt.Sprint(maxValueLimit + 1)} {
		var stderr bytes.Buffer
		code := run(context.Background(), []string{"serve", "--id", "1", "--data", t.TempDir(), "--raft-addr", "127.0.0.1:1",
			"--http-addr", "127.0.0.1:2", "--members", "1=127.0.0.1:1", "--max-value-bytes", v}, io.Discard, &stderr)
		if code != exitUsage || !strings.Contains(stderr.String(), "--max-value-bytes") {
			t.Errorf("--max-value-bytes %s: exit %d, %q; want a usage error", v, code, stderr.String())
		}
	}
	cl, leader := startCluster(t, "--max-value-bytes", fmt.Sprint(maxValueLimit), "--request-timeout", "5s")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	err := cl.put(ctx, leader, "big", bytes.Repeat([]byte("x"), maxValueLimit+1))
	var he *httpError
	if !errors.As(err, &he) || he.Status != http.StatusRequestEntityTooLarge {
		t.Fatalf("PUT of a value above the limit: %v, want 413", err)
	}
	if err := cl.put(ctx, leader, "small", []byte("1")); err != nil {
		t.Fatalf("a small PUT after the refused one: %v", err)
	}
}
