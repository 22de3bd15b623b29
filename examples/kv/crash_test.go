package kv

import (
	"context"
	"fmt"
	"maps"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/cockroachdb/pebble/v2/vfs/errorfs"
)

// A power cut at any point of Restore leaves the replica with either its
// old state or the snapshot's, whole, and Open works and cleans up.
//
// Every write operation of the Restore (file create, write, sync, link,
// rename, remove, Pebble's own) is preceded by two crash clones of the
// disk: one with only the synced data, one keeping a seeded half of the
// unsynced data. Each clone is then opened as the replica would be after
// the power cut.
func TestRestoreCrashAtEveryStep(t *testing.T) {
	checkNoPebbleGoroutines(t)
	mem := vfs.NewCrashableMem()
	rng := rand.New(rand.NewPCG(42, 43))
	var (
		armed  atomic.Bool
		mu     sync.Mutex
		clones []*vfs.MemFS
		ops    []string
	)
	fs := errorfs.Wrap(mem, errorfs.InjectorFunc(func(op errorfs.Op) error {
		if !armed.Load() || op.Kind.ReadOrWrite() != errorfs.OpIsWrite {
			return nil
		}
		mu.Lock()
		defer mu.Unlock()
		clones = append(clones,
			mem.CrashClone(vfs.CrashCloneCfg{}),
			mem.CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: 50, RNG: rng}))
		ops = append(ops, "before "+opName(op), "(50% of unsynced data) before "+opName(op))
		return nil
	}))

	// The snapshot: A's state, partly in tables, partly in its WAL.
	a, _ := openMachine(t, fs, 1)
	newModel := map[string]string{}
	fill(t, a, "a", 300, newModel)
	if err := a.db.Flush(); err != nil {
		t.Fatal(err)
	}
	fill(t, a, "b", 40, newModel)
	apply(t, a, EncodeDelete([]byte("a00003")))
	delete(newModel, "a00003")
	newApplied := a.applied
	s := takeSnapshot(t, a)

	// The replica: other data, durable.
	b, _ := openMachine(t, fs, 2)
	oldModel := map[string]string{}
	fill(t, b, "a", 100, oldModel) // same keys, other values
	fill(t, b, "z", 30, oldModel)
	apply(t, b, EncodePut([]byte("a00003"), []byte("only in the old state")))
	oldModel["a00003"] = "only in the old state"
	if err := b.db.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := b.Sync(); err != nil {
		t.Fatal(err)
	}
	oldApplied := b.applied
	if oldApplied == newApplied {
		t.Fatal("test setup: old and new applied indexes are equal")
	}

	armed.Store(true)
	err := restore(b, s)
	armed.Store(false)
	if err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	clones = append(clones, mem.CrashClone(vfs.CrashCloneCfg{}))
	ops = append(ops, "after Restore returned")
	mu.Unlock()
	t.Logf("%d crash points", len(clones))

	olds, news := 0, 0
	for i, disk := range clones {
		m := New(Options{Dir: testDir, FS: disk})(1, 2).(*machine)
		applied, err := m.Open(context.Background())
		if err != nil {
			t.Fatalf("crash %s: Open: %v", ops[i], err)
		}
		switch applied {
		case oldApplied:
			olds++
			sameContents(t, "old state after crash "+ops[i], m, oldModel)
		case newApplied:
			news++
			sameContents(t, "new state after crash "+ops[i], m, newModel)
		default:
			t.Fatalf("crash %s: applied %d, want the old %d or the new %d", ops[i], applied, oldApplied, newApplied)
		}
		checkLayout(t, disk, 2)
		// The recovered replica still applies.
		apply(t, m, EncodePut([]byte("later"), []byte("x")))
		if err := m.Close(); err != nil {
			t.Fatal(err)
		}
		if i == len(clones)-1 && applied != newApplied {
			t.Fatalf("after Restore returned, a crash recovers applied %d, want %d", applied, newApplied)
		}
	}
	t.Logf("%d crash points recovered the old state, %d the new one", olds, news)
	if olds == 0 || news < 2 {
		t.Fatalf("crash points: %d recovered the old state, %d the new one; want both", olds, news)
	}
	sameContents(t, "the live replica after Restore", b, newModel)
	if !maps.Equal(contents(t, a), newModel) {
		t.Fatal("the source of the snapshot changed")
	}
}

func opName(op errorfs.Op) string {
	names := map[errorfs.OpKind]string{
		errorfs.OpCreate: "create", errorfs.OpLink: "link", errorfs.OpRemove: "remove",
		errorfs.OpRemoveAll: "remove-all", errorfs.OpRename: "rename", errorfs.OpMkdirAll: "mkdir",
		errorfs.OpFileClose: "close", errorfs.OpFileWrite: "write", errorfs.OpFileSync: "sync",
	}
	name, ok := names[op.Kind]
	if !ok {
		name = fmt.Sprintf("op %d", op.Kind)
	}
	return name + " " + op.Path
}
