package engine

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"sort"
	"sync"

	"github.com/skiffdb/skiff/statemachine"
)

// kv is the tests' in-memory state machine: commands are "key=value";
// Lookup returns the value, or the applied count for the query "#".
type kv struct {
	mu      sync.Mutex
	data    map[string]string
	applied int
	closed  bool
}

func newKV(uint64, uint64) statemachine.StateMachine { return &kv{data: map[string]string{}} }

func (s *kv) Apply(ents []statemachine.Entry) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := range ents {
		k, v, ok := cut(string(ents[i].Cmd))
		if !ok {
			return fmt.Errorf("kv: bad command %q", ents[i].Cmd)
		}
		s.data[k] = v
		s.applied++
		ents[i].Result = statemachine.Result{Value: uint64(s.applied)}
	}
	return nil
}

func cut(s string) (string, string, bool) {
	for i := 0; i < len(s); i++ {
		if s[i] == '=' {
			return s[:i], s[i+1:], true
		}
	}
	return "", "", false
}

func (s *kv) Lookup(q []byte) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if string(q) == "#" {
		return []byte(fmt.Sprint(s.applied)), nil
	}
	v, ok := s.data[string(q)]
	if !ok {
		return nil, nil
	}
	return []byte(v), nil
}

func (s *kv) Snapshot() (statemachine.Snapshot, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	cp := make(map[string]string, len(s.data))
	for k, v := range s.data {
		cp[k] = v
	}
	return kvSnap{data: cp, applied: s.applied}, nil
}

func (s *kv) Restore(_ context.Context, r io.Reader, _ []statemachine.SnapshotFile) error {
	br := bufio.NewReader(r)
	var hdr [8]byte
	if _, err := io.ReadFull(br, hdr[:]); err != nil {
		return err
	}
	data := map[string]string{}
	for {
		k, err := readString(br)
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
		v, err := readString(br)
		if err != nil {
			return err
		}
		data[k] = v
	}
	s.mu.Lock()
	s.data, s.applied = data, int(binary.LittleEndian.Uint64(hdr[:]))
	s.mu.Unlock()
	return nil
}

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

func (s *kv) Close() error {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	return nil
}

type kvSnap struct {
	data    map[string]string
	applied int
}

func (s kvSnap) Save(_ context.Context, w io.Writer, _ statemachine.FileCollection) error {
	bw := bufio.NewWriter(w)
	var hdr [8]byte
	binary.LittleEndian.PutUint64(hdr[:], uint64(s.applied))
	bw.Write(hdr[:])
	keys := make([]string, 0, len(s.data))
	for k := range s.data {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		bw.Write(binary.AppendUvarint(nil, uint64(len(k))))
		bw.WriteString(k)
		bw.Write(binary.AppendUvarint(nil, uint64(len(s.data[k]))))
		bw.WriteString(s.data[k])
	}
	return bw.Flush()
}

func (kvSnap) Release() {}
