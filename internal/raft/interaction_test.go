package raft_test

import (
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
// observable behaviour, message by message.
func TestInteraction(t *testing.T) {
	datadriven.Walk(t, "testdata", func(t *testing.T, path string) {
		env := rafttest.New()
		datadriven.RunTest(t, path, func(t *testing.T, d *datadriven.TestData) string {
			return env.Handle(t, d)
		})
	})
}
