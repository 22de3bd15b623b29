package testcluster

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/skiffdb/skiff/statemachine"
)

func apply(t *testing.T, sm statemachine.StateMachine, from uint64, cmds ...string) {
	t.Helper()
	ents := make([]statemachine.Entry, len(cmds))
	for i, c := range cmds {
		ents[i] = statemachine.Entry{Index: from + uint64(i), Cmd: []byte(c)}
	}
	if err := sm.Apply(ents); err != nil {
		t.Fatal(err)
	}
}

func lookup(t *testing.T, sm statemachine.StateMachine, q string) string {
	t.Helper()
	v, err := sm.Lookup([]byte(q))
	if err != nil {
		t.Fatal(err)
	}
	return string(v)
}

func TestKVSnapshotRoundTrip(t *testing.T) {
	a := NewKV(1, 1)
	apply(t, a, 1, "a=1", "b=2", "a=3", "empty=")
	snap, err := a.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	apply(t, a, 5, "c=after the capture")
	var buf bytes.Buffer
	if err := snap.Save(context.Background(), &buf, nil); err != nil {
		t.Fatal(err)
	}
	snap.Release()
	b := NewKV(1, 2)
	if err := b.Restore(context.Background(), bytes.NewReader(buf.Bytes()), nil); err != nil {
		t.Fatal(err)
	}
	if got := lookup(t, b, "a"); got != "3" {
		t.Fatalf("a = %q, want 3", got)
	}
	if got := lookup(t, b, "c"); got != "" {
		t.Fatalf("c = %q: a write after the capture leaked into the snapshot", got)
	}
	if got := lookup(t, b, QueryCount); got != "4" {
		t.Fatalf("count %q, want 4", got)
	}
	apply(t, b, 5, "c=after the capture")
	if da, db := lookup(t, a, QueryDigest), lookup(t, b, QueryDigest); da != db {
		t.Fatalf("digests differ after the same entries: %s vs %s", da, db)
	}
	if b.(*KV).Restores() != 1 {
		t.Fatalf("restores %d, want 1", b.(*KV).Restores())
	}
}

func TestKVRejectsBadInput(t *testing.T) {
	kv := NewKV(1, 1)
	if err := kv.Apply([]statemachine.Entry{{Index: 1, Cmd: []byte("no equals sign")}}); !errors.Is(err, ErrBadCommand) {
		t.Fatalf("bad command: %v, want ErrBadCommand", err)
	}
	apply(t, kv, 2, "k=v")
	snap, _ := kv.Snapshot()
	var buf bytes.Buffer
	if err := snap.Save(context.Background(), &buf, nil); err != nil {
		t.Fatal(err)
	}
	good := buf.Bytes()
	bad := map[string][]byte{
		"empty":     nil,
		"magic":     append([]byte("XXXX"), good[4:]...),
		"truncated": good[:len(good)-1],
		"trailing":  append(bytes.Clone(good), 0),
		"huge":      append(bytes.Clone(good[:28]), 0xff, 0xff, 0xff, 0xff, 0x0f),
	}
	for name, stream := range bad {
		if err := NewKV(1, 2).Restore(context.Background(), bytes.NewReader(stream), nil); !errors.Is(err, ErrBadSnapshot) {
			t.Errorf("%s stream: %v, want ErrBadSnapshot", name, err)
		}
	}
}

// The OnDiskKV's durable point is its last Sync (or Restore, or Close):
// a crash clone that keeps no unsynced data reopens there.
func TestOnDiskKVDurableAtSync(t *testing.T) {
	fs := vfs.NewCrashableMem()
	if err := provision(fs, nil); err != nil {
		t.Fatal(err)
	}
	create := NewOnDiskKV(fs, smDir)
	sm := create(1, 1).(*OnDiskKV)
	if idx, err := sm.Open(context.Background()); err != nil || idx != 0 {
		t.Fatalf("open new: %d, %v", idx, err)
	}
	apply(t, sm, 1, "a=1", "b=2")
	if err := sm.Sync(); err != nil {
		t.Fatal(err)
	}
	apply(t, sm, 3, "c=3")
	crashed := fs.CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: 0})
	sm2 := NewOnDiskKV(crashed, smDir)(1, 1).(*OnDiskKV)
	idx, err := sm2.Open(context.Background())
	if err != nil || idx != 2 {
		t.Fatalf("reopen after a crash: index %d (%v), want 2", idx, err)
	}
	if lookup(t, sm2, "b") != "2" || lookup(t, sm2, "c") != "" {
		t.Fatalf("reopened state: b=%q c=%q", lookup(t, sm2, "b"), lookup(t, sm2, "c"))
	}
	// Every share of unsynced data gives the old or the new file, whole.
	rng := rand.New(rand.NewPCG(1, 2))
	for pct := 0; pct <= 100; pct += 10 {
		cl := fs.CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: pct, RNG: rng})
		if _, err := NewOnDiskKV(cl, smDir)(1, 1).(*OnDiskKV).Open(context.Background()); err != nil {
			t.Fatalf("%d%% kept: %v", pct, err)
		}
	}
}
