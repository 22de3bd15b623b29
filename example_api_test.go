package skiff_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/skiffdb/skiff"
)

// singleHost starts one host running a one-replica group 1: enough to
// show the API (a real group has 3 or 5 replicas on as many hosts).
func singleHost(ctx context.Context, gcfg skiff.GroupConfig) *skiff.Host {
	h, err := skiff.Open(skiff.HostConfig{Dir: "data", FS: vfs.NewMem(), RaftAddr: "127.0.0.1:0",
		DeploymentID: 42, TickInterval: 10 * time.Millisecond})
	if err != nil {
		panic(err)
	}
	gcfg.GroupID, gcfg.ReplicaID = 1, 1
	gcfg.Members = map[skiff.ReplicaID]string{1: h.RaftAddr()}
	if err := h.StartGroup(ctx, gcfg, newKV); err != nil {
		panic(err)
	}
	if _, err := h.WaitLeader(ctx, 1); err != nil {
		panic(err)
	}
	return h
}

// A client session makes a retried proposal apply once: the retry with
// the same SeriesID gets the first result back.
func ExampleHost_ProposeSession() {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	h := singleHost(ctx, skiff.GroupConfig{})
	defer h.Close()
	const client = 7
	if err := h.RegisterSession(ctx, 1, client); err != nil {
		panic(err)
	}
	s := skiff.Session{ClientID: client, SeriesID: 1}
	first, _ := h.ProposeSession(ctx, 1, s, []byte("a=1"))
	retry, _ := h.ProposeSession(ctx, 1, s, []byte("a=1")) // e.g. after a timeout
	s.SeriesID, s.RespondedTo = 2, 1
	next, _ := h.ProposeSession(ctx, 1, s, []byte("b=2"))
	fmt.Println(first.Value, retry.Value, next.Value)
	// Output: 1 1 2
}

// RequestSnapshot takes a snapshot now; asking again with nothing new
// applied says so.
func ExampleHost_RequestSnapshot() {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	h := singleHost(ctx, skiff.GroupConfig{CompactionOverhead: 0})
	defer h.Close()
	for i := 0; i < 10; i++ {
		if _, err := h.Propose(ctx, 1, []byte(fmt.Sprintf("k%d=v", i))); err != nil {
			panic(err)
		}
	}
	idx, err := h.RequestSnapshot(ctx, 1, skiff.SnapshotOption{})
	if err != nil {
		panic(err)
	}
	st, _ := h.GroupStatus(1)
	fmt.Println("snapshot at the applied index:", idx == st.Applied, st.Snapshot.Index == idx)
	_, err = h.RequestSnapshot(ctx, 1, skiff.SnapshotOption{})
	fmt.Println("again:", errors.Is(err, skiff.ErrNoNewEntries))
	// Output:
	// snapshot at the applied index: true true
	// again: true
}

// GroupStatus reports the replica's view of its group.
func ExampleHost_GroupStatus() {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	h := singleHost(ctx, skiff.GroupConfig{})
	defer h.Close()
	if _, err := h.Propose(ctx, 1, []byte("k=v")); err != nil {
		panic(err)
	}
	st, err := h.GroupStatus(1)
	if err != nil {
		panic(err)
	}
	fmt.Println("leader:", st.Leader, "members:", len(st.Members), "applied ≥ 2:", st.Applied >= 2)
	// Output: leader: 1 members: 1 applied ≥ 2: true
}
