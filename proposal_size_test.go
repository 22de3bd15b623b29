package skiff_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/skiffdb/skiff"
)

// A proposal above MaxProposalBytes is refused before it enters the log: a
// Raft entry travels whole in one transport frame, and one larger than a
// frame would be resent forever, stalling the group (found by the review
// of skiffkv with a 65 MiB value).
func TestProposalSizeLimit(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	h, err := skiff.Open(skiff.HostConfig{Dir: "h", FS: vfs.NewMem(), RaftAddr: "127.0.0.1:0", DeploymentID: 1,
		TickInterval: 10 * time.Millisecond, MaxProposalBytes: 100})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	if err := h.StartGroup(ctx, skiff.GroupConfig{GroupID: 1, ReplicaID: 1, Members: map[skiff.ReplicaID]string{1: h.RaftAddr()}}, newKV); err != nil {
		t.Fatal(err)
	}
	if _, err := h.WaitLeader(ctx, 1); err != nil {
		t.Fatal(err)
	}
	big := "k=" + strings.Repeat("x", 99)
	if _, err := h.Propose(ctx, 1, []byte(big)); !errors.Is(err, skiff.ErrTooLarge) {
		t.Fatalf("Propose of %d bytes: %v, want ErrTooLarge", len(big), err)
	}
	if err := h.RegisterSession(ctx, 1, 7); err != nil {
		t.Fatal(err)
	}
	if _, err := h.ProposeSession(ctx, 1, skiff.Session{ClientID: 7, SeriesID: 1}, []byte(big)); !errors.Is(err, skiff.ErrTooLarge) {
		t.Fatalf("ProposeSession of %d bytes: %v, want ErrTooLarge", len(big), err)
	}
	st, _ := h.GroupStatus(1)
	if _, err := h.Propose(ctx, 1, []byte(big[:100])); err != nil {
		t.Fatalf("Propose of 100 bytes: %v", err)
	}
	if st2, _ := h.GroupStatus(1); st2.LastIndex != st.LastIndex+1 {
		t.Fatalf("log went from %d to %d: the refused proposals were appended", st.LastIndex, st2.LastIndex)
	}
	if v, err := h.Read(ctx, 1, []byte("k")); err != nil || len(v) != 98 {
		t.Fatalf("read k: %d bytes, %v", len(v), err)
	}
}
