package logdb

import (
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/skiffdb/skiff/raftpb"
)

func TestSmoke(t *testing.T) {
	fs := vfs.NewCrashableMem()
	db, err := Open(fs, "db", Options{SegmentSize: 8192, CacheBytes: 1000})
	if err != nil {
		t.Fatal(err)
	}
	for i := uint64(1); i <= 200; i++ {
		err := db.SaveBatch([]Update{{Group: 1, Entries: []raftpb.Entry{{Index: i, Term: 1 + i/50, Data: []byte("hello")}}, HardState: raftpb.HardState{Term: 1 + i/50, Commit: i}}})
		if err != nil {
			t.Fatal(err)
		}
	}
	l := db.Group(1)
	ents, err := l.Entries(1, 201, 1<<30)
	if err != nil || len(ents) != 200 {
		t.Fatal(len(ents), err)
	}
	if err := db.Compact(1, 150); err != nil {
		t.Fatal(err)
	}
	db.SaveBatch([]Update{{Group: 1, Entries: []raftpb.Entry{{Index: 201, Term: 5}}}})
	t.Logf("%+v", db.Stats())
	db.Close()
	db, err = Open(fs.CrashClone(vfs.CrashCloneCfg{}), "db", Options{SegmentSize: 8192})
	if err != nil {
		t.Fatal(err)
	}
	l = db.Group(1)
	f, _ := l.FirstIndex()
	la, _ := l.LastIndex()
	tm, _ := l.Term(150)
	ents, err = l.Entries(151, 202, 1<<30)
	if f != 151 || la != 201 || tm != 4 || len(ents) != 51 || err != nil {
		t.Fatal(f, la, tm, len(ents), err)
	}
	t.Logf("%+v", db.Stats())
}
