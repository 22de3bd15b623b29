package skiff_test

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/skiffdb/skiff"
	"github.com/skiffdb/skiff/statemachine"
)

// kv is a small replicated map: commands are "key=value", queries keys.
type kv struct {
	mu   sync.Mutex
	data map[string]string
}

func newKV(group, replica uint64) statemachine.StateMachine { return &kv{data: map[string]string{}} }

func (s *kv) Apply(ents []statemachine.Entry) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := range ents {
		k, v, _ := strings.Cut(string(ents[i].Cmd), "=")
		s.data[k] = v
		ents[i].Result.Value = uint64(len(s.data))
	}
	return nil
}

func (s *kv) Lookup(q []byte) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return []byte(s.data[string(q)]), nil
}

// Snapshot copies the map (cheap enough here; a real state machine would
// use copy-on-write or a database snapshot).
func (s *kv) Snapshot() (statemachine.Snapshot, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return kvSnapshot(maps.Clone(s.data)), nil
}

func (s *kv) Restore(_ context.Context, r io.Reader, _ []statemachine.SnapshotFile) error {
	data := map[string]string{}
	br := bufio.NewReader(r)
	for {
		k, err := readString(br)
		if err == io.EOF {
			break
		} else if err != nil {
			return err
		}
		v, err := readString(br)
		if err != nil {
			return err
		}
		data[k] = v
	}
	s.mu.Lock()
	s.data = data
	s.mu.Unlock()
	return nil
}

func (s *kv) Close() error { return nil }

type kvSnapshot map[string]string

func (m kvSnapshot) Save(_ context.Context, w io.Writer, _ statemachine.FileCollection) error {
	bw := bufio.NewWriter(w)
	for _, k := range slices.Sorted(maps.Keys(m)) {
		for _, s := range []string{k, m[k]} {
			bw.Write(binary.AppendUvarint(nil, uint64(len(s))))
			bw.WriteString(s)
		}
	}
	return bw.Flush()
}

func (kvSnapshot) Release() {}

func readString(r *bufio.Reader) (string, error) {
	n, err := binary.ReadUvarint(r)
	if err != nil {
		return "", err
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(r, b); err != nil {
		return "", io.ErrUnexpectedEOF
	}
	return string(b), nil
}

// Three hosts in one process, one group replicated on all of them: a
// write through one host is read linearizably through another.
func Example() {
	var hosts []*skiff.Host
	for i := 0; i < 3; i++ {
		h, err := skiff.Open(skiff.HostConfig{
			Dir:          "data",
			FS:           vfs.NewMem(), // a real deployment uses the default, the OS
			RaftAddr:     "127.0.0.1:0",
			DeploymentID: 42,
			TickInterval: 10 * time.Millisecond,
		})
		if err != nil {
			panic(err)
		}
		defer h.Close()
		hosts = append(hosts, h)
	}
	members := map[skiff.ReplicaID]string{}
	for i, h := range hosts {
		members[skiff.ReplicaID(i+1)] = h.RaftAddr()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for i, h := range hosts {
		err := h.StartGroup(ctx, skiff.GroupConfig{
			GroupID: 1, ReplicaID: skiff.ReplicaID(i + 1), Members: members,
			PreVote: true, CheckQuorum: true,
			SnapshotEntries: 1000, CompactionOverhead: 100,
		}, newKV)
		if err != nil {
			panic(err)
		}
	}
	if _, err := hosts[0].WaitLeader(ctx, 1); err != nil {
		panic(err)
	}
	res, err := hosts[0].Propose(ctx, 1, []byte("greeting=hello"))
	if err != nil {
		panic(err)
	}
	fmt.Println("keys after the write:", res.Value)
	v, err := hosts[2].Read(ctx, 1, []byte("greeting"))
	if err != nil {
		panic(err)
	}
	fmt.Println("read on host 3:", string(v))
	// Output:
	// keys after the write: 1
	// read on host 3: hello
}
