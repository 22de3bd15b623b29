package wal

import (
	"bytes"
	"errors"
	"fmt"
	"testing"
)

// FuzzWALReader: any bytes never panic the reader, and every record written
// before a tear (a cut or a flipped byte past the records) is returned.
func FuzzWALReader(f *testing.F) {
	var b Batch
	var seg []byte
	for i := 0; i < 8; i++ {
		b.Reset()
		for j := 0; j <= i%3; j++ {
			b.BeginChunk()
			b.Buf = fmt.Appendf(b.Buf, "payload-%d-%d", i, j)
			b.EndChunk()
		}
		b.finish(1, uint64(i+1))
		seg = append(seg, b.Buf...)
	}
	f.Add(seg, uint16(len(seg)), uint16(0))
	f.Add(seg, uint16(100), uint16(7))
	f.Add([]byte{}, uint16(0), uint16(0))
	f.Fuzz(func(t *testing.T, data []byte, cut uint16, junk uint16) {
		// Arbitrary bytes: no panic.
		r := NewReader(data, 1)
		for {
			rec, ok, err := r.Next()
			if err != nil || !ok {
				break
			}
			_ = rec.Chunks(func(int64, []byte) error { return nil })
		}
		_, _ = ScanFrom(data, 1, 0, 0)
		_, _ = decodeManifest(data)

		// A valid prefix followed by a tear: every whole record survives.
		c := int(cut) % (len(seg) + 1)
		torn := append(bytes.Clone(seg[:c]), bytes.Repeat([]byte{byte(junk)}, int(junk%64))...)
		r = NewReader(torn, 1)
		n := 0
		for {
			rec, ok, err := r.Next()
			if err != nil {
				var ce *CorruptionError
				if !errors.As(err, &ce) {
					t.Fatalf("non-corruption error %v", err)
				}
				break
			}
			if !ok {
				break
			}
			if rec.Seq != uint64(n+1) {
				t.Fatalf("record %d has seq %d", n, rec.Seq)
			}
			n++
		}
		whole := 0
		for off := 0; ; whole++ {
			rec, ok := parse(seg[off:], 1)
			if !ok || off+int(rec.Size()) > c {
				break
			}
			off += int(rec.Size())
		}
		if n < whole {
			t.Fatalf("only %d of %d whole records before the tear returned", n, whole)
		}
	})
}
