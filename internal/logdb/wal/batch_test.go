package wal

import (
	"fmt"
	"sync"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// TestReserveRegions: regions reserved in one batch and filled
// concurrently read back as the same chunks, in reservation order, as if
// appended one after the other; a region filled short or long is not
// Filled.
func TestReserveRegions(t *testing.T) {
	var b Batch
	b.Reset()
	b.BeginChunk()
	b.Buf = append(b.Buf, "first"...)
	b.EndChunk()
	const regions, per = 8, 3
	payload := func(r, k int) string { return fmt.Sprintf("region-%d-chunk-%d-%0*d", r, k, r*7, 0) }
	size := func(r int) int {
		n := 0
		for k := range per {
			n += ChunkHeaderSize + len(payload(r, k))
		}
		return n
	}
	total := 0
	for r := range regions {
		total += size(r)
	}
	b.Grow(total)
	subs := make([]Batch, regions)
	for r := range regions {
		subs[r] = b.Reserve(size(r), per)
	}
	var wg sync.WaitGroup
	for r := range regions {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s := &subs[r]
			for k := range per {
				s.BeginChunk()
				s.Buf = append(s.Buf, payload(r, k)...)
				s.EndChunk()
			}
		}()
	}
	wg.Wait()
	for r := range regions {
		if !subs[r].Filled() {
			t.Fatalf("region %d not filled", r)
		}
	}
	if b.Count() != 1+regions*per {
		t.Fatalf("count %d", b.Count())
	}

	fs := vfs.NewMem()
	w, _, err := openCollect(t, fs, Options{SegmentSize: 1 << 16})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(&b); err != nil {
		t.Fatal(err)
	}
	if err := w.Sync(); err != nil {
		t.Fatal(err)
	}
	w.Close()
	w, got, err := openCollect(t, fs, Options{SegmentSize: 1 << 16})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	want := []string{"first"}
	for r := range regions {
		for k := range per {
			want = append(want, payload(r, k))
		}
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("read back %q, want %q", got, want)
	}

	// Short and long fills are caught.
	b.Reset()
	b.Grow(64)
	short := b.Reserve(32, 1)
	short.BeginChunk()
	short.Buf = append(short.Buf, "abc"...)
	short.EndChunk()
	if short.Filled() {
		t.Fatal("short region reported filled")
	}
	long := b.Reserve(16, 1)
	long.BeginChunk()
	long.Buf = append(long.Buf, "0123456789abcdef"...)
	long.EndChunk()
	if long.Filled() {
		t.Fatal("overflowing region reported filled")
	}
	if string(b.Buf[HeaderSize+32:HeaderSize+48]) == "0123456789abcdef"[:16] {
		t.Fatal("overflowing region wrote into the batch")
	}
}
