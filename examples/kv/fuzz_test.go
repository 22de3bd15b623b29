package kv

import (
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/skiffdb/skiff/statemachine"
)

// FuzzDecode: no bytes make a decoder panic, and whatever decodes
// re-encodes to the same bytes (one encoding per value, so two replicas
// never disagree on what a command means).
func FuzzDecode(f *testing.F) {
	for _, seed := range [][]byte{
		EncodePut([]byte("k"), []byte("v")), EncodeDelete([]byte("k")),
		EncodeCAS([]byte("k"), []byte("p"), []byte("v")), EncodeGet([]byte("k")),
		EncodeScan([]byte("p"), 10), {0x01, 0xff, 0xff}, {1, 1, 'k', 1, 'v'}, nil,
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if c, err := decodeCommand(b); err == nil {
			var again []byte
			switch c.op {
			case opPut:
				again = EncodePut(c.key, c.value)
			case opDelete:
				again = EncodeDelete(c.key)
			case opCAS:
				again = EncodeCAS(c.key, c.prev, c.value)
			}
			if string(again) != string(b) {
				t.Fatalf("command %x decodes to %+v, which encodes to %x", b, c, again)
			}
		}
		if q, err := decodeQuery(b); err == nil && q.op == opGet && string(EncodeGet(q.key)) != string(b) {
			t.Fatalf("get query %x re-encodes differently", b)
		}
		DecodeGet(b)
		DecodeScan(b)
	})
}

// FuzzApply: Apply never fails or panics on malformed commands, and
// Lookup never panics on any query.
func FuzzApply(f *testing.F) {
	f.Add([]byte{0x01, 0x01, 'k', 'v'}, []byte{0x12, 0x00})
	f.Add([]byte{0x03, 0x05}, []byte{0x11})
	f.Add([]byte{}, []byte{})
	fs := vfs.NewMem()
	m, _ := openMachine(f, fs, 1)
	f.Fuzz(func(t *testing.T, cmd, q []byte) {
		ents := []statemachine.Entry{{Index: m.applied + 1, Cmd: cmd}}
		if err := m.Apply(ents); err != nil {
			t.Fatalf("apply %x: %v", cmd, err)
		}
		if _, err := decodeCommand(cmd); err != nil && ents[0].Result.Value != ResultBadCommand {
			t.Fatalf("malformed %x: result %d", cmd, ents[0].Result.Value)
		}
		m.Lookup(q)
	})
}
