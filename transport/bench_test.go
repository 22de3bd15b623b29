package transport

import (
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/skiffdb/skiff/raftpb"
)

// countHandler counts received messages and wakes a waiter at a target.
type countHandler struct {
	n    atomic.Int64
	wake chan struct{}
}

func (h *countHandler) HandleBatch(b *raftpb.MessageBatch) {
	h.n.Add(int64(len(b.Messages)))
	select {
	case h.wake <- struct{}{}:
	default:
	}
}

func (h *countHandler) HandleUnreachable(string) {}

// BenchmarkTCPSend: one MsgReplicate with one entry per Send over loopback,
// with the default queue length and at most that many messages in flight,
// so that nothing is dropped.
// Reports messages/s; MB/s counts entry payload bytes.
func BenchmarkTCPSend(b *testing.B) {
	for _, size := range []int{16, 1024} {
		b.Run(fmt.Sprintf("entry=%dB", size), func(b *testing.B) {
			const window = DefaultQueueLen
			a, err := NewTCP(TCPConfig{ListenAddr: "127.0.0.1:0", DeploymentID: 1})
			if err != nil {
				b.Fatal(err)
			}
			defer a.Close()
			r, err := NewTCP(TCPConfig{ListenAddr: "127.0.0.1:0", DeploymentID: 1})
			if err != nil {
				b.Fatal(err)
			}
			defer r.Close()
			h := &countHandler{wake: make(chan struct{}, 1)}
			a.Start(&countHandler{wake: make(chan struct{}, 1)})
			r.Start(h)
			m := []raftpb.Message{msg(1, make([]byte, size))}
			b.SetBytes(int64(size))
			b.ReportAllocs()
			sent := int64(0)
			for b.Loop() {
				for sent-h.n.Load() >= window {
					<-h.wake
				}
				m[0].Index++
				if !a.Send(r.Addr(), m) {
					b.Fatal("dropped")
				}
				sent++
			}
			for h.n.Load() < sent {
				<-h.wake
			}
			b.ReportMetric(float64(sent)/b.Elapsed().Seconds(), "msgs/s")
			s := a.Stats()
			b.ReportMetric(float64(s.MessagesSent)/float64(max(s.BatchesSent, 1)), "msgs/batch")
		})
	}
}
