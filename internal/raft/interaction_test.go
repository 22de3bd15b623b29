package raft_test

import (
	"strings"
	"testing"

	"github.com/cockroachdb/datadriven"
	"github.com/skiffdb/skiff/internal/raft/rafttest"
)

// TestInteraction runs the scripts in testdata, each against a fresh
// rafttest.Env. Regenerate their expected output with
//
//	go test ./internal/raft -run TestInteraction -rewrite
//
// and read the diff: the scripts are the specification of the core's
// observable behaviour, message by message. The Env's safety checks
// (election safety, state machine safety) fail the test whatever the
// expected output says.
func TestInteraction(t *testing.T) {
	datadriven.Walk(t, "testdata", func(t *testing.T, path string) {
		env := rafttest.New()
		datadriven.RunTest(t, path, func(t *testing.T, d *datadriven.TestData) string {
			out := env.Handle(t, d)
			// Even a rewritten expectation may not accept a safety
			// violation.
			if strings.Contains(out, "INVARIANT VIOLATED") {
				t.Errorf("%s: %s", d.Pos, out)
			}
			return out
		})
	})
}
