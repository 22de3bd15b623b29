package transport

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"io"
	"reflect"
	"testing"

	"github.com/skiffdb/skiff/raftpb"
)

// TestBatchHeaderMatchesCodec: the sender frames messages it encoded one by
// one behind appendBatchHeader; that must be MessageBatch's own encoding.
func TestBatchHeaderMatchesCodec(t *testing.T) {
	mb := raftpb.MessageBatch{DeploymentID: 1 << 40, SourceAddress: "10.0.0.1:7000",
		Messages: []raftpb.Message{msg(1, []byte("a")), msg(2, nil), {Type: raftpb.MsgHeartbeat, Commit: 9}}}
	var b []byte
	b = appendBatchHeader(b, mb.DeploymentID, mb.SourceAddress, len(mb.Messages))
	if len(b) > batchHeaderMax(mb.SourceAddress) {
		t.Fatalf("header %d bytes, bound %d", len(b), batchHeaderMax(mb.SourceAddress))
	}
	for i := range mb.Messages {
		b = mb.Messages[i].AppendTo(b)
	}
	if want := mb.Marshal(); !bytes.Equal(b, want) {
		t.Fatalf("framed batch\n%x\nwant\n%x", b, want)
	}
}

func TestPreambleRoundTrip(t *testing.T) {
	p := appendPreamble(nil, laneSnapshot, 0xdeadbeef)
	if len(p) != preambleLen {
		t.Fatalf("preamble is %d bytes", len(p))
	}
	lane, dep, err := readPreamble(bytes.NewReader(p))
	if err != nil || lane != laneSnapshot || dep != 0xdeadbeef {
		t.Fatalf("got lane %d dep %x err %v", lane, dep, err)
	}
	for i := range 8 { // every byte of magic, version, lane, reserved matters
		bad := bytes.Clone(p)
		bad[i] ^= 0x80
		if _, _, err := readPreamble(bytes.NewReader(bad)); !errors.Is(err, errBadPreamble) {
			t.Fatalf("byte %d flipped: %v", i, err)
		}
	}
	if _, _, err := readPreamble(bytes.NewReader(p[:10])); err == nil {
		t.Fatal("short preamble accepted")
	}
}

// expectedBatches is the fuzz oracle, written independently of
// frameReader: the batches of the well-formed frames before the first bad
// one.
func expectedBatches(data []byte, dep uint64, maxFrame int) []*raftpb.MessageBatch {
	var out []*raftpb.MessageBatch
	for len(data) >= 8 {
		n := int(binary.LittleEndian.Uint32(data))
		crc := binary.LittleEndian.Uint32(data[4:])
		data = data[8:]
		if n == 0 || n > maxFrame || n > len(data) {
			break
		}
		p := data[:n]
		data = data[n:]
		if crc32.Checksum(p, crc32.MakeTable(crc32.Castagnoli)) != crc {
			break
		}
		b := new(raftpb.MessageBatch)
		if b.Unmarshal(bytes.Clone(p)) != nil || b.DeploymentID != dep {
			break
		}
		out = append(out, b)
	}
	return out
}

// FuzzFrameReader: any bytes after a good preamble never panic, and what is
// delivered is exactly the well-formed frames before the first bad one.
func FuzzFrameReader(f *testing.F) {
	good := validFrame(7, msg(1, []byte("x")), msg(2, nil))
	f.Add(good)
	f.Add(append(bytes.Clone(good), good...))
	f.Add(append(bytes.Clone(good), 1, 0, 0, 0, 9, 9, 9, 9, 0))
	f.Add(validFrame(8, msg(1, nil)))
	badCRC := bytes.Clone(good)
	badCRC[4] ^= 1 // the payload still decodes: only the CRC catches it
	f.Add(badCRC)
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		const maxFrame = 1 << 16
		r := bufio.NewReader(io.MultiReader(bytes.NewReader(appendPreamble(nil, laneRaft, 7)), bytes.NewReader(data)))
		lane, dep, err := readPreamble(r)
		if err != nil || lane != laneRaft || dep != 7 {
			t.Fatalf("preamble: %d %d %v", lane, dep, err)
		}
		var got []*raftpb.MessageBatch
		err = readBatches(r, 7, maxFrame, func(b *raftpb.MessageBatch) error {
			got = append(got, b)
			return nil
		})
		want := expectedBatches(data, 7, maxFrame)
		if len(got) != len(want) || (len(got) > 0 && !reflect.DeepEqual(got, want)) {
			t.Fatalf("delivered %d batches, want %d", len(got), len(want))
		}
		if err == nil {
			t.Fatal("readBatches returned nil")
		}
		if !errors.Is(err, io.EOF) && !errors.Is(err, ErrCorruptFrame) && !errors.Is(err, ErrDeploymentMismatch) {
			t.Fatalf("unexpected error %v", err)
		}
	})
}
