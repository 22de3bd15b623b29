package wal

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// writeN writes n one-chunk records "rec-<i>" and syncs after each.
func writeN(t testing.TB, w *WAL, from, n int) []Pos {
	t.Helper()
	var b Batch
	var ps []Pos
	for i := from; i < from+n; i++ {
		b.Reset()
		b.BeginChunk()
		b.Buf = fmt.Appendf(b.Buf, "rec-%d", i)
		b.EndChunk()
		p, err := w.Write(&b)
		if err != nil {
			t.Fatal(err)
		}
		if err := w.Sync(); err != nil {
			t.Fatal(err)
		}
		ps = append(ps, p)
	}
	return ps
}

func openCollect(t testing.TB, fs vfs.FS, opts Options) (*WAL, []string, error) {
	t.Helper()
	var got []string
	w, err := Open(fs, "wal", opts, func(r *Record) error {
		return r.Chunks(func(_ int64, p []byte) error {
			got = append(got, string(p))
			return nil
		})
	})
	return w, got, err
}

func TestWriteReopen(t *testing.T) {
	fs := vfs.NewCrashableMem()
	opts := Options{SegmentSize: 4096}
	w, got, err := openCollect(t, fs, opts)
	if err != nil || len(got) != 0 {
		t.Fatal(err, got)
	}
	ps := writeN(t, w, 0, 500) // several segments
	if len(w.Segments()) < 3 {
		t.Fatalf("expected several segments, got %v", w.Segments())
	}
	p, err := w.ReadChunk(Pos{ps[7].Segment, ps[7].Offset + HeaderSize}, nil)
	if err != nil || string(p) != "rec-7" {
		t.Fatalf("ReadChunk: %q %v", p, err)
	}
	w.Close()
	for i := 0; i < 3; i++ {
		crashed := fs.CrashClone(vfs.CrashCloneCfg{})
		w, got, err = openCollect(t, crashed, opts)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != 500+i*10 {
			t.Fatalf("reopen %d: got %d records", i, len(got))
		}
		for j, s := range got {
			if s != fmt.Sprintf("rec-%d", j) {
				t.Fatalf("record %d = %q", j, s)
			}
		}
		writeN(t, w, 500+i*10, 10)
		w.Close()
		fs = crashed
	}
}

// TestTornTail: an unsynced record is cut off, the writer resumes there.
func TestTornTail(t *testing.T) {
	for seed := uint64(0); seed < 50; seed++ {
		fs := vfs.NewCrashableMem()
		opts := Options{SegmentSize: 64 << 10}
		w, _, err := openCollect(t, fs, opts)
		if err != nil {
			t.Fatal(err)
		}
		writeN(t, w, 0, 10)
		var b Batch
		b.Reset()
		b.BeginChunk()
		b.Buf = append(b.Buf, make([]byte, 20000)...)
		b.EndChunk()
		if _, err := w.Write(&b); err != nil { // not synced
			t.Fatal(err)
		}
		rng := rand.New(rand.NewPCG(seed, seed))
		crashed := fs.CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: 50, RNG: rng})
		w.Close()
		w, got, err := openCollect(t, crashed, opts)
		if err != nil {
			t.Fatalf("seed %d: %v", seed, err)
		}
		if len(got) != 10 && len(got) != 11 {
			t.Fatalf("seed %d: %d records", seed, len(got))
		}
		writeN(t, w, 10, 3)
		w.Close()
		_, got2, err := openCollect(t, crashed.CrashClone(vfs.CrashCloneCfg{}), opts)
		if err != nil || len(got2) != len(got)+3 {
			t.Fatalf("seed %d: after resume %d records, err %v", seed, len(got2), err)
		}
	}
}

// TestCorruptionMidLog: damage to a synced record followed by valid ones is
// reported, not skipped.
func TestCorruptionMidLog(t *testing.T) {
	fs := vfs.NewCrashableMem()
	opts := Options{SegmentSize: 1 << 20}
	w, _, err := openCollect(t, fs, opts)
	if err != nil {
		t.Fatal(err)
	}
	ps := writeN(t, w, 0, 20)
	w.Close()
	buf, err := fs.UnsafeGetFileDataBuffer(fs.PathJoin("wal", segmentName(ps[5].Segment)))
	if err != nil {
		t.Fatal(err)
	}
	buf[ps[5].Offset+HeaderSize+ChunkHeaderSize] ^= 0x40
	_, _, err = openCollect(t, fs, opts)
	var ce *CorruptionError
	if !errors.As(err, &ce) || ce.Segment != ps[5].Segment || ce.Offset != ps[5].Offset {
		t.Fatalf("want corruption at %v, got %v", ps[5], err)
	}
}

func TestRemoveAndRecycle(t *testing.T) {
	fs := vfs.NewCrashableMem()
	opts := Options{SegmentSize: 4096}
	w, _, err := openCollect(t, fs, opts)
	if err != nil {
		t.Fatal(err)
	}
	writeN(t, w, 0, 300)
	segs := w.Segments()
	if err := w.Remove(segs[:2]); err != nil {
		t.Fatal(err)
	}
	writeN(t, w, 300, 300)
	w.Close()
	_, got, err := openCollect(t, fs.CrashClone(vfs.CrashCloneCfg{}), opts)
	if err != nil {
		t.Fatal(err)
	}
	if got[len(got)-1] != "rec-599" {
		t.Fatalf("last = %q", got[len(got)-1])
	}
}
