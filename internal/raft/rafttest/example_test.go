package rafttest_test

import (
	"fmt"

	"github.com/skiffdb/skiff/internal/raft/rafttest"
	"github.com/skiffdb/skiff/raftpb"
)

// Driving an Env from Go: elect a leader of two replicas, replicate one
// entry, and look at the result.
func ExampleEnv() {
	env := rafttest.New()
	if err := env.AddNodes(2, rafttest.NodeOptions{Voters: []raftpb.ReplicaID{1, 2}}); err != nil {
		panic(err)
	}
	env.Node(1).Campaign()
	if err := env.Stabilize(); err != nil {
		panic(err)
	}
	if err := env.Node(2).Propose(raftpb.Entry{Data: []byte("hello")}); err != nil { // forwarded
		panic(err)
	}
	if err := env.Stabilize(); err != nil {
		panic(err)
	}
	fmt.Println("leader:", env.Leader())
	for _, e := range env.Node(2).Applied {
		fmt.Println(rafttest.DescribeEntry(e))
	}
	// Output:
	// leader: 1
	// 2/2 EntryNoOp
	// 2/3 EntryNormal "hello"
}
