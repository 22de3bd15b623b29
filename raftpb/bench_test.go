package raftpb

import (
	"fmt"
	"testing"
)

// benchBatch returns a batch shaped like the transport sends: msgs
// MsgReplicate messages for different groups, each with ents entries of
// size bytes of payload.
func benchBatch(msgs, ents, size int) MessageBatch {
	mb := MessageBatch{DeploymentID: 42, SourceAddress: "10.0.0.1:7000"}
	payload := make([]byte, size)
	for i := range payload {
		payload[i] = byte(i)
	}
	for g := range msgs {
		m := Message{Type: MsgReplicate, Group: GroupID(g + 1), From: 1, To: 2,
			Term: 7, LogTerm: 7, Index: 1_000_000 + uint64(g), Commit: 999_999}
		for i := range ents {
			m.Entries = append(m.Entries, Entry{Term: 7, Index: m.Index + 1 + uint64(i), Data: payload})
		}
		mb.Messages = append(mb.Messages, m)
	}
	return mb
}

var benchShapes = []struct {
	name             string
	msgs, ents, size int
}{
	// 64 groups' heartbeats-sized replicate messages without entries.
	{"msgs=64/ents=0", 64, 0, 0},
	// One busy group: 64 entries of 16 B (the DESIGN.md §9 small workload).
	{"msgs=1/ents=64/size=16", 1, 64, 16},
	// 16 groups × 16 entries of 1 KiB.
	{"msgs=16/ents=16/size=1024", 16, 16, 1024},
}

func BenchmarkMessageBatch(b *testing.B) {
	for _, s := range benchShapes {
		mb := benchBatch(s.msgs, s.ents, s.size)
		enc := mb.Marshal()
		b.Run(fmt.Sprintf("encode/%s", s.name), func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(enc)))
			buf := make([]byte, 0, len(enc))
			for b.Loop() {
				buf = mb.AppendTo(buf[:0])
			}
		})
		b.Run(fmt.Sprintf("decode/%s", s.name), func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(enc)))
			var got MessageBatch
			for b.Loop() {
				if err := got.Unmarshal(enc); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
