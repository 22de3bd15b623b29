package memnet_test

import (
	"fmt"

	"github.com/skiffdb/skiff/raftpb"
	"github.com/skiffdb/skiff/transport/memnet"
)

// printer is a Handler that prints what arrives and signals each batch.
type printer struct{ got chan struct{} }

func (p printer) HandleBatch(b *raftpb.MessageBatch) {
	for _, m := range b.Messages {
		fmt.Printf("%s -> %v index=%d\n", b.SourceAddress, m.Type, m.Index)
	}
	p.got <- struct{}{}
}

func (p printer) HandleUnreachable(addr string) {
	fmt.Println("unreachable:", addr)
	p.got <- struct{}{}
}

func Example() {
	n := memnet.New(memnet.Config{Seed: 1})
	defer n.Close()
	a, b := n.Endpoint("a:1", 7), n.Endpoint("b:1", 7)
	pa, pb := printer{make(chan struct{}, 8)}, printer{make(chan struct{}, 8)}
	a.Start(pa)
	b.Start(pb)

	a.Send("b:1", []raftpb.Message{{Type: raftpb.MsgHeartbeat, Index: 1}})
	<-pb.got

	n.Partition([]string{"a:1"}, []string{"b:1"})
	sent := a.Send("b:1", []raftpb.Message{{Type: raftpb.MsgHeartbeat, Index: 2}})
	<-pa.got // the unreachable report is printed by a's handler goroutine
	fmt.Println("sent across the partition:", sent)

	n.Heal()
	a.Send("b:1", []raftpb.Message{{Type: raftpb.MsgHeartbeat, Index: 3}})
	<-pb.got
	fmt.Printf("%+v\n", n.Stats())
	// Output:
	// a:1 -> MsgHeartbeat index=1
	// unreachable: b:1
	// sent across the partition: false
	// a:1 -> MsgHeartbeat index=3
	// {Sent:2 Delivered:2 Dropped:0 Duplicated:0 Unreachable:1 Rejected:0 ConnsCut:0}
}
