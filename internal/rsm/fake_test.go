package rsm

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/skiffdb/skiff/raftpb"
	"github.com/skiffdb/skiff/statemachine"
)

// memSM is an in-memory state machine: its state is the list of applied
// commands. Each Result is (number of commands applied so far, "r:"+cmd).
type memSM struct {
	cmds       []string
	indexes    []uint64
	applyCalls int
	lookups    int
	closed     bool
	failApply  error
	// file, if set, is written into the snapshot directory by Save and
	// read back by Restore (to test FileCollection).
	fileDir string
	// restoredFiles records the files Restore got.
	restoredFiles []statemachine.SnapshotFile
}

func (m *memSM) Apply(ents []statemachine.Entry) error {
	m.applyCalls++
	if m.failApply != nil {
		return m.failApply
	}
	for i := range ents {
		if n := len(m.indexes); n > 0 && ents[i].Index <= m.indexes[n-1] {
			return fmt.Errorf("memSM: index %d after %d", ents[i].Index, m.indexes[n-1])
		}
		m.cmds = append(m.cmds, string(ents[i].Cmd))
		m.indexes = append(m.indexes, ents[i].Index)
		ents[i].Result = statemachine.Result{Value: uint64(len(m.cmds)), Data: append([]byte("r:"), ents[i].Cmd...)}
	}
	return nil
}

func (m *memSM) Lookup(q []byte) ([]byte, error) {
	m.lookups++
	return []byte(fmt.Sprint(len(m.cmds))), nil
}

func (m *memSM) Snapshot() (statemachine.Snapshot, error) {
	return &memSnap{cmds: slices.Clone(m.cmds), indexes: slices.Clone(m.indexes), fileDir: m.fileDir}, nil
}

func (m *memSM) Restore(ctx context.Context, r io.Reader, files []statemachine.SnapshotFile) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	var cmds []string
	var idx []uint64
	for len(b) > 0 {
		i, n := binary.Uvarint(b)
		if n <= 0 {
			return errors.New("memSM: bad index")
		}
		b = b[n:]
		l, n := binary.Uvarint(b)
		if n <= 0 || uint64(len(b)-n) < l {
			return errors.New("memSM: bad length")
		}
		cmds = append(cmds, string(b[n:n+int(l)]))
		idx = append(idx, i)
		b = b[n+int(l):]
	}
	m.cmds, m.indexes = cmds, idx
	m.restoredFiles = files
	return nil
}

func (m *memSM) Close() error { m.closed = true; return nil }

type memSnap struct {
	cmds     []string
	indexes  []uint64
	fileDir  string
	released int
}

func (s *memSnap) Save(ctx context.Context, w io.Writer, files statemachine.FileCollection) error {
	var b []byte
	for i, c := range s.cmds {
		b = binary.AppendUvarint(b, s.indexes[i])
		b = binary.AppendUvarint(b, uint64(len(c)))
		b = append(b, c...)
	}
	if _, err := w.Write(b); err != nil {
		return err
	}
	if s.fileDir != "" {
		p := filepath.Join(s.fileDir, fmt.Sprintf("extra-%d", len(s.cmds)))
		if err := os.WriteFile(p, []byte("file of "+fmt.Sprint(len(s.cmds))), 0o644); err != nil {
			return err
		}
		return files.AddFile("extra", p)
	}
	return nil
}

func (s *memSnap) Release() { s.released++ }

// diskSM is a fake OnDisk state machine: Open returns durable; Sync counts.
type diskSM struct {
	memSM
	durable   uint64
	syncs     int
	snapshots int
	typ, ver  uint64
}

func (d *diskSM) Open(ctx context.Context) (uint64, error) { return d.durable, nil }
func (d *diskSM) Sync() error {
	d.syncs++
	if n := len(d.indexes); n > 0 {
		d.durable = d.indexes[n-1]
	}
	return nil
}
func (d *diskSM) Snapshot() (statemachine.Snapshot, error) {
	d.snapshots++
	return d.memSM.Snapshot()
}
func (d *diskSM) ConcurrentLookup()                   {}
func (d *diskSM) SnapshotType() (typ, version uint64) { return d.typ, d.ver }

// typedSM is a memSM that declares a snapshot type.
type typedSM struct {
	memSM
	typ, ver uint64
}

func (t *typedSM) SnapshotType() (typ, version uint64) { return t.typ, t.ver }

// files collects AddFile calls.
type files struct{ added []statemachine.SnapshotFile }

func (f *files) AddFile(name, path string) error {
	st, err := os.Stat(path)
	if err != nil {
		return err
	}
	f.added = append(f.added, statemachine.SnapshotFile{Name: name, Path: path, Size: st.Size()})
	return nil
}

// ---- entry builders ----

func normal(index, term, key uint64, cmd string) raftpb.Entry {
	return raftpb.Entry{Index: index, Term: term, Type: raftpb.EntryNormal, Data: EncodeProposal(nil, key, []byte(cmd))}
}

func sessionProp(index, term, key uint64, s Session, cmd string) raftpb.Entry {
	return raftpb.Entry{Index: index, Term: term, Type: raftpb.EntryNormal, Data: EncodeSessionProposal(nil, key, s, []byte(cmd))}
}

func register(index, term, key, client uint64) raftpb.Entry {
	return raftpb.Entry{Index: index, Term: term, Type: raftpb.EntrySession, Data: EncodeRegister(nil, key, client)}
}

func unregister(index, term, key, client uint64) raftpb.Entry {
	return raftpb.Entry{Index: index, Term: term, Type: raftpb.EntrySession, Data: EncodeUnregister(nil, key, client)}
}

func noop(index, term uint64) raftpb.Entry {
	return raftpb.Entry{Index: index, Term: term, Type: raftpb.EntryNoOp}
}

func confChange(index, term uint64, key uint64, withKey bool) raftpb.Entry {
	cc := raftpb.ConfChange{Changes: []raftpb.ConfChangeSingle{{Type: raftpb.AddVoter, Replica: 4, Addr: "h4"}}}
	if withKey {
		cc.Context = EncodeProposal(nil, key, nil)
	}
	return raftpb.Entry{Index: index, Term: term, Type: raftpb.EntryConfigChange, Data: cc.Marshal()}
}

var initialMembership = raftpb.Membership{Voters: []raftpb.Member{{ID: 1, Addr: "h1"}, {ID: 2, Addr: "h2"}, {ID: 3, Addr: "h3"}}}

func newRSM(t testing.TB, sm statemachine.StateMachine, maxSessions int) *RSM {
	t.Helper()
	s, err := New(Config{Group: 1, Replica: 1, SM: sm, MaxSessions: maxSessions, Membership: initialMembership})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Open(context.Background()); err != nil {
		t.Fatal(err)
	}
	return s
}

func mustApply(t testing.TB, s *RSM, ents ...raftpb.Entry) []Applied {
	t.Helper()
	out, err := s.Apply(Batch{Entries: ents}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// byKey indexes outcomes by proposal key.
func byKey(t testing.TB, out []Applied) map[uint64]Applied {
	t.Helper()
	m := make(map[uint64]Applied)
	for _, a := range out {
		if _, dup := m[a.Key]; dup {
			t.Fatalf("two outcomes for key %d", a.Key)
		}
		m[a.Key] = a
	}
	return m
}

// captureBytes saves a capture into memory.
func captureBytes(t testing.TB, c *Capture, f statemachine.FileCollection) []byte {
	t.Helper()
	var buf bytes.Buffer
	if f == nil {
		f = &files{}
	}
	if err := c.Save(context.Background(), &buf, f); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func metaOf(c *Capture) raftpb.SnapshotMeta {
	typ, ver := c.Type()
	return raftpb.SnapshotMeta{Index: c.Index(), Term: c.Term(), Membership: c.Membership(),
		StateMachineType: typ, StateMachineVersion: ver, OnDisk: c.OnDisk()}
}
