package kv

import (
	"bytes"
	"context"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/skiffdb/skiff/statemachine"
)

func TestPutGetDeleteCAS(t *testing.T) {
	checkNoPebbleGoroutines(t)
	m, applied := openMachine(t, vfs.NewMem(), 1)
	if applied != 0 {
		t.Fatalf("new state machine: applied %d, want 0", applied)
	}
	steps := []struct {
		name string
		cmd  []byte
		want uint64
	}{
		{"put a", EncodePut([]byte("a"), []byte("1")), ResultOK},
		{"cas a 1->2", EncodeCAS([]byte("a"), []byte("1"), []byte("2")), ResultOK},
		{"cas a 1->3 (stale prev)", EncodeCAS([]byte("a"), []byte("1"), []byte("3")), ResultMismatch},
		{"cas absent key", EncodeCAS([]byte("b"), nil, []byte("x")), ResultMismatch},
		{"put empty value", EncodePut([]byte("e"), nil), ResultOK},
		{"cas empty value", EncodeCAS([]byte("e"), nil, []byte("filled")), ResultOK},
		{"put c", EncodePut([]byte("c"), []byte("gone soon")), ResultOK},
		{"delete c", EncodeDelete([]byte("c")), ResultOK},
		{"cas deleted key", EncodeCAS([]byte("c"), []byte("gone soon"), []byte("back")), ResultMismatch},
		{"delete absent key", EncodeDelete([]byte("never")), ResultOK},
	}
	for _, s := range steps {
		if got := apply(t, m, s.cmd); got[0] != s.want {
			t.Fatalf("%s: result %d, want %d", s.name, got[0], s.want)
		}
	}
	want := map[string]string{"a": "2", "e": "filled"}
	sameContents(t, "after the steps", m, want)
	if v, ok := getKey(t, m, "a"); !ok || v != "2" {
		t.Fatalf("get a = %q, %v; want 2", v, ok)
	}
	for _, k := range []string{"b", "c", "never"} {
		if v, ok := getKey(t, m, k); ok {
			t.Fatalf("get %s = %q, want not found", k, v)
		}
	}
	if m.applied != uint64(len(steps)) {
		t.Fatalf("applied %d, want %d", m.applied, len(steps))
	}
}

// A CAS sees what earlier entries of the same Apply call wrote: the batch
// is read through, as a sequence of separate Applies would be.
func TestCASSeesEarlierEntriesOfItsBatch(t *testing.T) {
	checkNoPebbleGoroutines(t)
	m, _ := openMachine(t, vfs.NewMem(), 1)
	k := []byte("k")
	got := apply(t, m,
		EncodePut(k, []byte("v1")),
		EncodeCAS(k, []byte("v1"), []byte("v2")),
		EncodeCAS(k, []byte("v1"), []byte("v3")),
		EncodeDelete(k),
		EncodeCAS(k, []byte("v2"), []byte("v4")),
	)
	if want := []uint64{ResultOK, ResultOK, ResultMismatch, ResultOK, ResultMismatch}; !slices.Equal(got, want) {
		t.Fatalf("results %v, want %v", got, want)
	}
	sameContents(t, "after the batch", m, map[string]string{})
}

func TestScanPrefixLimitAndOrder(t *testing.T) {
	checkNoPebbleGoroutines(t)
	m, _ := openMachine(t, vfs.NewMem(), 1)
	keys := []string{"b", "ba", "bb", "b\xff", "b\xff\xff", "a", "c", "bab", "", "\xff", "\x00"}
	rng := rand.New(rand.NewPCG(1, 2))
	rng.Shuffle(len(keys), func(i, j int) { keys[i], keys[j] = keys[j], keys[i] })
	var cmds [][]byte
	for _, k := range keys {
		cmds = append(cmds, EncodePut([]byte(k), []byte("v"+k)))
	}
	apply(t, m, cmds...)
	sorted := slices.Clone(keys)
	slices.Sort(sorted)
	cases := []struct {
		prefix string
		limit  int
		want   []string
	}{
		{"", 0, sorted},
		{"", 3, sorted[:3]},
		{"b", 0, []string{"b", "ba", "bab", "bb", "b\xff", "b\xff\xff"}},
		{"b", 2, []string{"b", "ba"}},
		{"ba", 0, []string{"ba", "bab"}},
		{"b\xff", 0, []string{"b\xff", "b\xff\xff"}},
		{"\xff", 0, []string{"\xff"}},
		{"\x00", 0, []string{"\x00"}},
		{"d", 0, nil},
		{"b", -1, []string{"b", "ba", "bab", "bb", "b\xff", "b\xff\xff"}},
	}
	for _, c := range cases {
		var got []string
		for _, p := range scanMap(t, m, c.prefix, c.limit) {
			if string(p.Value) != "v"+string(p.Key) {
				t.Fatalf("scan %q: key %q has value %q", c.prefix, p.Key, p.Value)
			}
			got = append(got, string(p.Key))
		}
		if !slices.Equal(got, c.want) {
			t.Errorf("scan %q limit %d = %q, want %q", c.prefix, c.limit, got, c.want)
		}
	}
	// The applied index is stored beside the data, never in a scan.
	if n := len(scanMap(t, m, "", 0)); n != len(keys) {
		t.Fatalf("full scan returned %d pairs, want %d user keys", n, len(keys))
	}
}

// Malformed commands are applied as no-ops with ResultBadCommand, on
// every replica alike; malformed queries fail with ErrBadQuery.
func TestMalformedCommandsAndQueries(t *testing.T) {
	checkNoPebbleGoroutines(t)
	m, _ := openMachine(t, vfs.NewMem(), 1)
	apply(t, m, EncodePut([]byte("k"), []byte("v")))
	bad := [][]byte{
		nil,
		{0x7f},
		{opPut},                   // no key length
		{opPut, 5, 'a'},           // key shorter than its length
		{opPut, 0xff, 0xff, 0xff}, // truncated uvarint
		{opCAS, 1, 'k'},           // no prev
		{opCAS, 1, 'k', 3, 'v'},   // prev shorter than its length
		{opGet, 'k'},              // a query is not a command
		append([]byte{opPut}, bytes.Repeat([]byte{0x80}, 11)...), // overlong uvarint
	}
	got := apply(t, m, bad...)
	for i, r := range got {
		if r != ResultBadCommand {
			t.Errorf("bad command %d (%x): result %d, want ResultBadCommand", i, bad[i], r)
		}
	}
	if m.applied != uint64(1+len(bad)) {
		t.Fatalf("applied %d after the bad commands, want %d", m.applied, 1+len(bad))
	}
	sameContents(t, "after bad commands", m, map[string]string{"k": "v"})

	for _, q := range [][]byte{nil, {0x7f}, {opScan}, {opScan, 0x80}, {opPut, 1, 'k'}} {
		if _, err := m.Lookup(q); !isErr(err, ErrBadQuery) {
			t.Errorf("lookup %x: err %v, want ErrBadQuery", q, err)
		}
	}
	for _, r := range [][]byte{nil, {2}, {0, 0}} {
		if _, _, err := DecodeGet(r); !isErr(err, ErrBadResponse) {
			t.Errorf("DecodeGet(%x): err %v, want ErrBadResponse", r, err)
		}
	}
	for _, r := range [][]byte{nil, {1}, {1, 1, 'k'}, {1, 1, 'k', 2, 'v'}, {0, 0}, {0xff, 0xff, 0xff, 0xff, 0x0f}} {
		if _, err := DecodeScan(r); !isErr(err, ErrBadResponse) {
			t.Errorf("DecodeScan(%x): err %v, want ErrBadResponse", r, err)
		}
	}
}

func TestCodecRoundTrip(t *testing.T) {
	k, p, v := []byte("key"), []byte("prev"), []byte("value")
	for _, c := range []struct {
		cmd  []byte
		want command
	}{
		{EncodePut(k, v), command{op: opPut, key: k, value: v}},
		{EncodePut(nil, nil), command{op: opPut}},
		{EncodeDelete(k), command{op: opDelete, key: k}},
		{EncodeCAS(k, p, v), command{op: opCAS, key: k, prev: p, value: v}},
		{EncodeCAS(k, nil, nil), command{op: opCAS, key: k}},
	} {
		got, err := decodeCommand(c.cmd)
		if err != nil || got.op != c.want.op || !bytes.Equal(got.key, c.want.key) ||
			!bytes.Equal(got.prev, c.want.prev) || !bytes.Equal(got.value, c.want.value) {
			t.Errorf("decode %x = %+v, %v; want %+v", c.cmd, got, err, c.want)
		}
	}
	q, err := decodeQuery(EncodeScan([]byte("p"), 300))
	if err != nil || q.op != opScan || string(q.key) != "p" || q.limit != 300 {
		t.Errorf("scan query decoded as %+v, %v", q, err)
	}
}

// The applied index and the data survive Close and Open; Sync makes them
// durable across a power cut.
func TestAppliedIndexSurvivesReopenAndPowerCut(t *testing.T) {
	checkNoPebbleGoroutines(t)
	fs := vfs.NewCrashableMem()
	m, _ := openMachine(t, fs, 1)
	apply(t, m, EncodePut([]byte("a"), []byte("1")), EncodePut([]byte("b"), []byte("2")))
	apply(t, m, EncodeDelete([]byte("a")))
	if err := m.Sync(); err != nil {
		t.Fatal(err)
	}
	// A power cut right after Sync keeps everything.
	cut := fs.CrashClone(vfs.CrashCloneCfg{})
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	for name, disk := range map[string]vfs.FS{"reopen": fs, "power cut after Sync": cut} {
		m2, applied := openMachine(t, disk, 1)
		if applied != 3 {
			t.Fatalf("%s: applied %d, want 3", name, applied)
		}
		sameContents(t, name, m2, map[string]string{"b": "2"})
		checkLayout(t, disk, 1)
		// Apply continues above the recovered index.
		apply(t, m2, EncodePut([]byte("c"), []byte("3")))
		if m2.applied != 4 {
			t.Fatalf("%s: applied %d after one more entry, want 4", name, m2.applied)
		}
	}
}

// Every Apply call is one batch with its applied index: after a power cut
// that keeps a random share of unsynced writes, the recovered applied
// index is the end of some Apply call, and the data is exactly the state
// after that call.
func TestApplyBatchIsAtomicWithAppliedIndex(t *testing.T) {
	checkNoPebbleGoroutines(t)
	for seed := uint64(1); seed <= 8; seed++ {
		t.Run(fmt.Sprint("seed=", seed), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(seed, 7))
			fs := vfs.NewCrashableMem()
			m, _ := openMachine(t, fs, 1)
			model := map[string]string{}
			states := map[uint64]map[string]string{0: {}}
			for call := 0; call < 40; call++ {
				var cmds [][]byte
				for range 1 + rng.IntN(8) {
					k := fmt.Sprintf("k%02d", rng.IntN(30))
					if rng.IntN(4) == 0 {
						cmds = append(cmds, EncodeDelete([]byte(k)))
						delete(model, k)
					} else {
						v := fmt.Sprintf("%d-%s", call, bytes.Repeat([]byte{'x'}, rng.IntN(2000)))
						cmds = append(cmds, EncodePut([]byte(k), []byte(v)))
						model[k] = v
					}
				}
				apply(t, m, cmds...)
				states[m.applied] = maps.Clone(model)
				if call == 10 {
					if err := m.Sync(); err != nil {
						t.Fatal(err)
					}
				}
			}
			clone := fs.CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: int(seed * 12), RNG: rng})
			m2, applied := openMachine(t, clone, 1)
			t.Logf("recovered applied index %d of %d", applied, m.applied)
			want, ok := states[applied]
			if !ok {
				t.Fatalf("recovered applied index %d is not the end of an Apply call", applied)
			}
			sameContents(t, fmt.Sprintf("recovered at %d", applied), m2, want)
			if applied < minSynced(states, 11) {
				t.Fatalf("recovered applied index %d is below what Sync made durable", applied)
			}
		})
	}
}

// minSynced returns the applied index after the first calls Apply calls
// (the states map is keyed by the applied index after each call).
func minSynced(states map[uint64]map[string]string, calls int) uint64 {
	idx := slices.Sorted(maps.Keys(states))
	if calls >= len(idx) {
		return idx[len(idx)-1]
	}
	return idx[calls]
}

func TestApplyRejectsIndexNotAboveApplied(t *testing.T) {
	checkNoPebbleGoroutines(t)
	m, _ := openMachine(t, vfs.NewMem(), 1)
	apply(t, m, EncodePut([]byte("a"), []byte("1")))
	for _, ents := range [][]statemachine.Entry{
		{{Index: 1, Cmd: EncodePut([]byte("a"), []byte("2"))}},
		{{Index: 3, Cmd: EncodeDelete([]byte("a"))}, {Index: 3, Cmd: EncodeDelete([]byte("a"))}},
	} {
		if err := m.Apply(ents); err == nil {
			t.Fatalf("Apply of indexes %d..%d above applied 1 succeeded", ents[0].Index, ents[len(ents)-1].Index)
		}
	}
	sameContents(t, "after rejected applies", m, map[string]string{"a": "1"})
}

func TestUseAfterClose(t *testing.T) {
	checkNoPebbleGoroutines(t)
	m, _ := openMachine(t, vfs.NewMem(), 1)
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if err := m.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := m.Lookup(EncodeGet([]byte("a"))); !isErr(err, ErrClosed) {
		t.Fatalf("Lookup after Close: %v, want ErrClosed", err)
	}
	if err := m.Apply([]statemachine.Entry{{Index: 1, Cmd: EncodeDelete(nil)}}); !isErr(err, ErrClosed) {
		t.Fatalf("Apply after Close: %v, want ErrClosed", err)
	}
	if _, err := m.Open(context.Background()); !isErr(err, ErrClosed) {
		t.Fatalf("Open after Close: %v, want ErrClosed", err)
	}
}

// A CURRENT that names a database that is not there is corruption, not a
// new replica: Open must not start empty (the host would then believe
// nothing was applied while the log may be compacted).
func TestOpenRefusesDanglingCurrent(t *testing.T) {
	checkNoPebbleGoroutines(t)
	fs := vfs.NewMem()
	m, _ := openMachine(t, fs, 1)
	m.Close()
	dir := Options{Dir: testDir, FS: fs}.GroupDir(1, 1)
	if err := writeCurrent(fs, dir, dbName(99)); err != nil {
		t.Fatal(err)
	}
	m2 := newMachine(t, fs, 1)
	if _, err := m2.Open(context.Background()); !isErr(err, ErrCorrupt) {
		t.Fatalf("Open with a dangling CURRENT: %v, want ErrCorrupt", err)
	}
}

// Without CURRENT, Open removes an empty database left by a first Open
// that crashed, but refuses to delete one that holds applied entries.
func TestOpenWithoutCurrent(t *testing.T) {
	checkNoPebbleGoroutines(t)
	fs := vfs.NewMem()
	dir := Options{Dir: testDir, FS: fs}.GroupDir(1, 1)
	current := fs.PathJoin(dir, currentName)

	m, _ := openMachine(t, fs, 1)
	m.Close()
	if err := fs.Remove(current); err != nil {
		t.Fatal(err)
	}
	m2, applied := openMachine(t, fs, 1)
	if applied != 0 {
		t.Fatalf("applied %d, want 0", applied)
	}
	checkLayout(t, fs, 1)
	apply(t, m2, EncodePut([]byte("k"), []byte("v")))
	m2.Close()

	if err := fs.Remove(current); err != nil {
		t.Fatal(err)
	}
	m3 := newMachine(t, fs, 1)
	if _, err := m3.Open(context.Background()); !isErr(err, ErrCorrupt) {
		t.Fatalf("Open without CURRENT beside a database with data: %v, want ErrCorrupt", err)
	}
	if n := len(dirEntries(t, fs, 1)); n != 1 {
		t.Fatalf("the refused Open changed the directory: %d entries", n)
	}
}
