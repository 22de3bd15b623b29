package main

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"

	"github.com/skiffdb/skiff/statemachine"
)

// bulkSM stands for a state machine holding size bytes without holding
// them: its snapshot streams size bytes of pseudo-random data derived
// from seed, and Restore reads a snapshot through and checks its
// checksum, keeping only size and seed. The catch-up workload thus moves
// a snapshot of any size through the host while the new replica's memory
// shows only what the host itself keeps.
//
// Snapshot layout: "skfbulk1" | size u64 | seed u64 | size bytes | CRC32C
// of those bytes (u32), integers little-endian.
type bulkSM struct {
	size int64
	seed uint64
	n    uint64
}

// errBadSnapshot is returned by Restore for a snapshot that is not one
// bulkSM wrote, or that was damaged on the way.
var errBadSnapshot = errors.New("skiffbench: bad bulk snapshot")

const (
	bulkMagic = "skfbulk1"
	bulkBlock = 256 << 10
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

func (s *bulkSM) Apply(ents []statemachine.Entry) error {
	for i := range ents {
		s.n++
		ents[i].Result.Value = s.n
	}
	return nil
}

func (s *bulkSM) Lookup([]byte) ([]byte, error) { return nil, nil }

// Snapshot captures size and seed: the data is a function of them.
func (s *bulkSM) Snapshot() (statemachine.Snapshot, error) {
	return bulkSnap{size: s.size, seed: s.seed}, nil
}

// Restore reads the whole stream in blocks, checks its checksum and only
// then adopts its size and seed.
func (s *bulkSM) Restore(ctx context.Context, r io.Reader, _ []statemachine.SnapshotFile) error {
	var hdr [24]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return fmt.Errorf("%w: header: %w", errBadSnapshot, err)
	}
	if string(hdr[:8]) != bulkMagic {
		return fmt.Errorf("%w: magic %q", errBadSnapshot, hdr[:8])
	}
	size := int64(binary.LittleEndian.Uint64(hdr[8:]))
	seed := binary.LittleEndian.Uint64(hdr[16:])
	if size < 0 {
		return fmt.Errorf("%w: size %d", errBadSnapshot, size)
	}
	buf := make([]byte, bulkBlock)
	var crc uint32
	for left := size; left > 0; {
		if err := ctx.Err(); err != nil {
			return err
		}
		b := buf[:min(left, int64(len(buf)))]
		if _, err := io.ReadFull(r, b); err != nil {
			return fmt.Errorf("%w: data at %d of %d: %w", errBadSnapshot, size-left, size, err)
		}
		crc = crc32.Update(crc, castagnoli, b)
		left -= int64(len(b))
	}
	var tail [4]byte
	if _, err := io.ReadFull(r, tail[:]); err != nil {
		return fmt.Errorf("%w: checksum: %w", errBadSnapshot, err)
	}
	if want := binary.LittleEndian.Uint32(tail[:]); crc != want {
		return fmt.Errorf("%w: checksum %08x, want %08x", errBadSnapshot, crc, want)
	}
	s.size, s.seed = size, seed
	return nil
}

func (s *bulkSM) Close() error { return nil }

type bulkSnap struct {
	size int64
	seed uint64
}

// Save generates the data block by block: memory stays one block.
func (b bulkSnap) Save(ctx context.Context, w io.Writer, _ statemachine.FileCollection) error {
	var hdr [24]byte
	copy(hdr[:], bulkMagic)
	binary.LittleEndian.PutUint64(hdr[8:], uint64(b.size))
	binary.LittleEndian.PutUint64(hdr[16:], b.seed)
	if _, err := w.Write(hdr[:]); err != nil {
		return err
	}
	buf := make([]byte, bulkBlock)
	state := b.seed
	var crc uint32
	for left := b.size; left > 0; {
		if err := ctx.Err(); err != nil {
			return err
		}
		fill(buf, &state)
		blk := buf[:min(left, int64(len(buf)))]
		crc = crc32.Update(crc, castagnoli, blk)
		if _, err := w.Write(blk); err != nil {
			return err
		}
		left -= int64(len(blk))
	}
	var tail [4]byte
	binary.LittleEndian.PutUint32(tail[:], crc)
	_, err := w.Write(tail[:])
	return err
}

func (bulkSnap) Release() {}

// fill writes splitmix64 output over b (len a multiple of 8): cheap
// enough that generating the snapshot measures the host, not the
// generator, and incompressible like real data.
func fill(b []byte, state *uint64) {
	x := *state
	for i := 0; i+8 <= len(b); i += 8 {
		x += 0x9e3779b97f4a7c15
		z := x
		z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
		z = (z ^ (z >> 27)) * 0x94d049bb133111eb
		binary.LittleEndian.PutUint64(b[i:], z^(z>>31))
	}
	*state = x
}
