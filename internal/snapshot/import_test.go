package snapshot

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/skiffdb/skiff/raftpb"
)

// exportFixture: group 1 had voters 1..5 (3 removed earlier, 6 a
// non-voter) and exported snapshot 500 to /backup; replica 1's directory
// holds snapshots 400 and 600 (newer than the export).
func exportFixture(t *testing.T) (vfs.FS, string) {
	t.Helper()
	fs := vfs.NewMem()
	src := mustOpen(t, fs, "/old")
	m := testMeta(500)
	m.Membership = raftpb.Membership{
		ConfigChangeIndex: 77,
		Voters:            []raftpb.Member{{ID: 1, Addr: "a"}, {ID: 2, Addr: "b"}, {ID: 4, Addr: "d"}, {ID: 5, Addr: "e"}},
		NonVoters:         []raftpb.Member{{ID: 6, Addr: "f"}},
		Removed:           []raftpb.ReplicaID{3},
	}
	w, err := src.Create(m)
	if err != nil {
		t.Fatal(err)
	}
	w.Write([]byte("exported state"))
	fw, _ := w.CreateFile("000001.sst")
	fw.Write([]byte("table"))
	if err := w.Commit(); err != nil {
		t.Fatal(err)
	}
	fs.MkdirAll("/backup", 0o755)
	dir, err := src.Export(500, "/backup")
	if err != nil {
		t.Fatal(err)
	}
	g := mustOpen(t, fs, "/r1")
	save(t, g, 400, "older")
	save(t, g, 600, "newer than the export")
	return fs, dir
}

var survivors = []raftpb.Member{{ID: 2, Addr: "b2"}, {ID: 1, Addr: "a2"}, {ID: 7, Addr: "new"}}

func TestImport(t *testing.T) {
	fs, dir := exportFixture(t)
	m, err := Import(fs, dir, "/r1", 1, survivors)
	if err != nil {
		t.Fatal(err)
	}
	want := raftpb.Membership{
		ConfigChangeIndex: 77, // preserved, never the snapshot index
		Voters:            []raftpb.Member{{ID: 1, Addr: "a2"}, {ID: 2, Addr: "b2"}, {ID: 7, Addr: "new"}},
		Removed:           []raftpb.ReplicaID{3, 4, 5, 6},
	}
	if fmt.Sprint(m.Membership) != fmt.Sprint(want) {
		t.Fatalf("membership %+v, want %+v", m.Membership, want)
	}
	s := mustOpen(t, fs, "/r1")
	list := s.List()
	if len(list) != 1 || list[0].Index != 500 || fmt.Sprint(list[0].Membership) != fmt.Sprint(want) {
		t.Fatalf("store holds %+v", list)
	}
	if got := readData(t, s, 0); got != "exported state" {
		t.Fatalf("data %q", got)
	}
	if names, _ := fs.List("/r1"); len(names) != 1 {
		t.Fatalf("left behind: %v", names)
	}
}

// Import checks completeness, checksums and membership before touching
// anything.
func TestImportRefusedBeforeAnyChange(t *testing.T) {
	for name, tc := range map[string]struct {
		damage func(fs vfs.FS, dir string)
		group  raftpb.GroupID
		voters []raftpb.Member
		want   error
	}{
		"truncated by one byte": {damage: func(fs vfs.FS, dir string) { writeFileSync(fs, dir+"/000001.sst", []byte("tabl")) }, want: ErrChecksum},
		"missing file":          {damage: func(fs vfs.FS, dir string) { fs.Remove(dir + "/data") }, want: ErrChecksum},
		"flipped meta": {damage: func(fs vfs.FS, dir string) {
			f, _ := fs.Open(dir + "/meta")
			b := make([]byte, 4096)
			n, _ := f.Read(b)
			f.Close()
			b[n/2] ^= 1
			writeFileSync(fs, dir+"/meta", b[:n])
		}, want: ErrCorruptMeta},
		"re-admits a removed replica": {voters: []raftpb.Member{{ID: 1}, {ID: 3}}, want: ErrInvalid},
		"no voters":                   {voters: []raftpb.Member{}, want: ErrInvalid},
		"repeated voter":              {voters: []raftpb.Member{{ID: 1}, {ID: 1}}, want: ErrInvalid},
		"another group":               {group: 2, want: ErrInvalid},
	} {
		t.Run(name, func(t *testing.T) {
			fs, dir := exportFixture(t)
			if tc.damage != nil {
				tc.damage(fs, dir)
			}
			if tc.group == 0 {
				tc.group = 1
			}
			if tc.voters == nil {
				tc.voters = survivors
			}
			before := tree(t, fs, "/r1")
			if _, err := Import(fs, dir, "/r1", tc.group, tc.voters); !errors.Is(err, tc.want) {
				t.Fatalf("Import: %v, want %v", err, tc.want)
			}
			if after := tree(t, fs, "/r1"); after != before {
				t.Fatalf("the replica's directory changed:\n%s\n---\n%s", before, after)
			}
		})
	}
}

// A crash at any operation of Import leaves a store that opens, and
// running Import again completes it.
func TestImportCrashThenRerun(t *testing.T) {
	setup := func() (*vfs.MemFS, string) {
		mem := vfs.NewCrashableMem()
		src := mustOpen(t, mem, "/old")
		save(t, src, 500, "exported state")
		mem.MkdirAll("/backup", 0o755)
		syncDir(mem, "/")
		dir, err := src.Export(500, "/backup")
		if err != nil {
			t.Fatal(err)
		}
		g := mustOpen(t, mem, "/r1")
		save(t, g, 400, "older")
		save(t, g, 600, "newer")
		return mem, dir
	}
	mem, dir := setup()
	fs := newTracingFS(mem)
	if _, err := Import(fs, dir, "/r1", 1, survivors); err != nil {
		t.Fatal(err)
	}
	ops := fs.take()
	for k := range ops {
		for _, pct := range []int{0, 50, 100} {
			mem, dir := setup()
			fs := newTracingFS(mem)
			cfg := vfs.CrashCloneCfg{UnsyncedDataPercent: pct}
			if pct > 0 {
				cfg.RNG = rand.New(rand.NewPCG(uint64(k), uint64(pct)))
			}
			cp := fs.crashWhen(mem, cfg, func(i int, _ string) bool { return i == k })
			Import(fs, dir, "/r1", 1, survivors)
			if cp.clone == nil {
				t.Fatalf("op %d not reached", k)
			}
			name := fmt.Sprintf("crash before %q (unsynced %d%%)", ops[k], pct)
			s, err := Open(cp.clone, "/r1", Options{Group: 1})
			if err != nil {
				t.Fatalf("%s: Open: %v", name, err)
			}
			if m, ok := s.Latest(); ok && !slices.Contains([]uint64{400, 500, 600}, m.Index) {
				t.Fatalf("%s: latest %d", name, m.Index)
			}
			m, err := Import(cp.clone, dir, "/r1", 1, survivors)
			if err != nil {
				t.Fatalf("%s: rerun: %v", name, err)
			}
			s = mustOpen(t, cp.clone, "/r1")
			if list := s.List(); len(list) != 1 || list[0].Index != 500 || list[0].Membership.ConfigChangeIndex != m.Membership.ConfigChangeIndex {
				t.Fatalf("%s: after the rerun %+v", name, list)
			}
			if got := readData(t, s, 0); got != "exported state" {
				t.Fatalf("%s: data %q", name, got)
			}
		}
	}
}

// An import into a group directory that did not exist survives a crash
// right after Import returned: the new directory's entry is durable too.
func TestImportNewDirDurable(t *testing.T) {
	mem := vfs.NewCrashableMem()
	src := mustOpen(t, mem, "/old")
	save(t, src, 500, "exported state")
	mem.MkdirAll("/backup", 0o755)
	syncDir(mem, "/")
	dir, err := src.Export(500, "/backup")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Import(mem, dir, "/r9", 1, survivors); err != nil {
		t.Fatal(err)
	}
	crashed := mem.CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: 0, RNG: rand.New(rand.NewPCG(9, 9))})
	s := mustOpen(t, crashed, "/r9")
	if m, ok := s.Latest(); !ok || m.Index != 500 {
		t.Fatalf("after a crash: latest %+v %v, want the imported 500", m, ok)
	}
}
