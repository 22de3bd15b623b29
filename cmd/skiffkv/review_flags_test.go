package main

import (
	"bytes"
	"context"
	"io"
	"strings"
	"testing"
)

// TestReviewMalformedFlagOneLine: issue 6 — "malformed flags and member
// lists get a one-line error and exit 2". A flag value the flag package
// cannot parse (or an unknown flag) makes it print the error and then the
// whole usage (fs.Usage), about 49 lines, before runServe prints the
// error once more. TestServeFlags exempts "unknown flag" from its
// one-line check, and has no case of a malformed value.
func TestReviewMalformedFlagOneLine(t *testing.T) {
	base := []string{"--data", "d", "--raft-addr", "127.0.0.1:1", "--http-addr", "127.0.0.1:2", "--join"}
	for _, args := range [][]string{
		append([]string{"serve", "--id", "abc"}, base...),
		append([]string{"serve", "--id", "1", "--snapshot-interval", "5x"}, base...),
		append([]string{"serve", "--id", "1", "--max-value-bytes", "1M"}, base...),
		append([]string{"serve", "--id", "1", "--bogus"}, base...),
		{"demo", "--keys", "abc"},
	} {
		var stderr bytes.Buffer
		code := run(context.Background(), args, io.Discard, &stderr)
		lines := strings.Count(strings.TrimRight(stderr.String(), "\n"), "\n") + 1
		if code != exitUsage || lines != 1 {
			t.Errorf("%q: exit %d and %d lines on stderr, want exit %d and one line:\n%s", args, code, lines, exitUsage, stderr.String())
		}
	}
}

// TestReviewMembersValidation: serve's --members accepts lists that
// skiffctl import's parseMembers (the same syntax, DESIGN §7) refuses and
// that cannot work: two replicas on one address, an empty host, a port
// outside 1..65535. They must be usage errors (exit 2, one line), not a
// cluster that starts and never elects (or a listen error at start).
func TestReviewMembersValidation(t *testing.T) {
	for name, members := range map[string]string{
		"same address twice": "1=127.0.0.1:7001,2=127.0.0.1:7001",
		"empty host":         "1=127.0.0.1:7001,2=:7002",
		"port out of range":  "1=127.0.0.1:7001,2=127.0.0.1:99999",
		"port zero":          "1=127.0.0.1:7001,2=127.0.0.1:0",
	} {
		args := []string{"--id", "1", "--data", "d", "--raft-addr", "127.0.0.1:7001", "--http-addr", "127.0.0.1:8001",
			"--members", members}
		if _, err := parseServe(args, io.Discard); err == nil {
			t.Errorf("%s: --members %s accepted", name, members)
		}
	}
}
