package rsm

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"slices"
	"sync"
	"testing"

	"github.com/skiffdb/skiff/raftpb"
	"github.com/skiffdb/skiff/statemachine"
)

// sessionLog registers client 7, applies series 1 and 2 and some plain
// proposals, and a config change: what a snapshot must carry.
func sessionLog() []raftpb.Entry {
	return []raftpb.Entry{
		register(1, 1, 1, 7),
		sessionProp(2, 1, 2, Session{7, 1, 0}, "a"),
		normal(3, 2, 3, "b"),
		sessionProp(4, 2, 4, Session{7, 2, 0}, "c"),
		confChange(5, 2, 5, false),
	}
}

var testMembership = raftpb.Membership{ConfigChangeIndex: 5,
	Voters: []raftpb.Member{{ID: 1, Addr: "h1"}, {ID: 2, Addr: "h2"}, {ID: 4, Addr: "h4"}}}

func TestCaptureSaveRestoreRoundTrip(t *testing.T) {
	dir := t.TempDir()
	src := &memSM{fileDir: dir}
	s := newRSM(t, src, 0)
	m := testMembership
	if _, err := s.Apply(Batch{Entries: sessionLog(), Membership: &m}, nil); err != nil {
		t.Fatal(err)
	}
	c, err := s.Capture(false /* ignored: not OnDisk */)
	if err != nil {
		t.Fatal(err)
	}
	if c.Index() != 5 || c.Term() != 2 || !c.Full() || c.OnDisk() || c.Membership().ConfigChangeIndex != 5 {
		t.Fatalf("capture %d/%d full=%v ondisk=%v", c.Index(), c.Term(), c.Full(), c.OnDisk())
	}
	f := &files{}
	data := captureBytes(t, c, f)
	c.Release()
	if len(f.added) != 1 || f.added[0].Name != "extra" {
		t.Fatalf("files %+v", f.added)
	}

	dst := &memSM{}
	r := newRSM(t, dst, 0)
	if err := r.Restore(context.Background(), metaOf(c), bytes.NewReader(data), f.added); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(dst.cmds, []string{"a", "b", "c"}) || !slices.Equal(dst.indexes, []uint64{2, 3, 4}) {
		t.Fatalf("restored SM %v at %v", dst.cmds, dst.indexes)
	}
	if len(dst.restoredFiles) != 1 || dst.restoredFiles[0].Path != f.added[0].Path {
		t.Fatalf("restored files %+v", dst.restoredFiles)
	}
	if idx, term := r.LastApplied(); idx != 5 || term != 2 {
		t.Fatalf("LastApplied %d/%d", idx, term)
	}
	if got := r.Membership(); len(got.Voters) != 3 || got.ConfigChangeIndex != 5 {
		t.Fatalf("membership %+v", got)
	}
	// Sessions survived: a retry of series 2 is answered from the cache on
	// both replicas alike, and neither applies it again.
	retry := []raftpb.Entry{sessionProp(6, 2, 6, Session{7, 2, 1}, "c"), normal(7, 2, 7, "d")}
	a := mustApply(t, s, retry...)
	b := mustApply(t, r, retry...)
	if b[0].Err != nil || string(b[0].Result.Data) != "r:c" || b[0].Result.Value != 3 {
		t.Fatalf("retry after restore: %+v", b[0])
	}
	if a[0].Result.Value != b[0].Result.Value || a[1].Result.Value != b[1].Result.Value {
		t.Fatalf("replicas disagree: %+v vs %+v", a, b)
	}
	if !bytes.Equal(s.sessions.appendTo(nil), r.sessions.appendTo(nil)) {
		t.Fatal("session tables differ after the same entries")
	}
	if !slices.Equal(src.cmds, dst.cmds) {
		t.Fatalf("SMs differ: %v vs %v", src.cmds, dst.cmds)
	}
}

// The capture is isolated from later Applies: Save runs on another
// goroutine while the apply goroutine keeps registering clients and applying
// session proposals (run under -race), and the saved snapshot is the state
// at capture time.
func TestCaptureSaveConcurrentWithApply(t *testing.T) {
	sm := &memSM{}
	s := newRSM(t, sm, 64)
	m := testMembership
	if _, err := s.Apply(Batch{Entries: sessionLog(), Membership: &m}, nil); err != nil {
		t.Fatal(err)
	}
	want := s.sessions.appendTo(nil)
	c, err := s.Capture(true)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var data []byte
	var saveErr error
	wg.Go(func() {
		var buf bytes.Buffer
		saveErr = c.Save(context.Background(), &buf, &files{})
		data = buf.Bytes()
		c.Release()
	})
	idx := uint64(6)
	for client := uint64(100); client < 300; client++ {
		mustApply(t, s, register(idx, 3, idx, client), sessionProp(idx+1, 3, idx+1, Session{client, 1, 0}, "x"),
			sessionProp(idx+2, 3, idx+2, Session{7, 3 + client, 2 + client}, "y"))
		idx += 3
	}
	wg.Wait()
	if saveErr != nil {
		t.Fatal(saveErr)
	}
	h, err := readHeader(bytes.NewReader(data), 64)
	if err != nil {
		t.Fatal(err)
	}
	if got := h.sessions.appendTo(nil); !bytes.Equal(got, want) {
		t.Fatal("saved session table is not the one at capture time")
	}
	r := newRSM(t, &memSM{}, 64)
	if err := r.Restore(context.Background(), metaOf(c), bytes.NewReader(data), nil); err != nil {
		t.Fatal(err)
	}
	if idx, _ := r.LastApplied(); idx != 5 {
		t.Fatalf("restored at %d", idx)
	}
}

// The initial membership is what a snapshot before any config change
// records; without one, Capture refuses rather than write a group with no
// voters.
func TestCaptureInitialMembership(t *testing.T) {
	s := newRSM(t, &memSM{}, 0)
	mustApply(t, s, normal(1, 1, 1, "a"))
	c, err := s.Capture(true)
	if err != nil {
		t.Fatal(err)
	}
	if got := c.Membership(); len(got.Voters) != 3 || got.ConfigChangeIndex != 0 {
		t.Fatalf("membership %+v", got)
	}
	c.Release()
	bare, err := New(Config{SM: &memSM{}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bare.Apply(Batch{Entries: []raftpb.Entry{normal(1, 1, 1, "a")}}, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := bare.Capture(true); err == nil {
		t.Fatal("capture without any membership succeeded")
	}
}

func TestCaptureRelease(t *testing.T) {
	sm := &memSM{}
	s := newRSM(t, sm, 0)
	mustApply(t, s, normal(1, 1, 1, "a"))
	c, err := s.Capture(true)
	if err != nil {
		t.Fatal(err)
	}
	snap := c.snap.(*memSnap)
	c.Release()
	c.Release()
	if snap.released != 1 {
		t.Fatalf("released %d times", snap.released)
	}
	if err := c.Save(context.Background(), io.Discard, &files{}); err == nil {
		t.Fatal("Save after Release succeeded")
	}
}

func TestRestoreCorruptHeader(t *testing.T) {
	s := newRSM(t, &memSM{}, 0)
	m := testMembership
	if _, err := s.Apply(Batch{Entries: sessionLog(), Membership: &m}, nil); err != nil {
		t.Fatal(err)
	}
	c, err := s.Capture(true)
	if err != nil {
		t.Fatal(err)
	}
	data := captureBytes(t, c, nil)
	hlen := len(c.header)
	meta := metaOf(c)

	cases := map[string][]byte{
		"empty":            nil,
		"bad magic":        append([]byte("XKRS"), data[4:]...),
		"unknown version":  flip(data, 4, 9),
		"unknown flag":     flip(data, 5, 0x80),
		"huge length":      flip(data, 9, 0x80),
		"flipped body":     flip(data, prefixSize+3, 0x01),
		"flipped checksum": flip(data, hlen-1, 0x01),
	}
	for n := range hlen {
		cases[fmt.Sprintf("truncated at %d", n)] = data[:n]
	}
	for name, b := range cases {
		sm := &memSM{}
		r := newRSM(t, sm, 0)
		err := r.Restore(context.Background(), meta, bytes.NewReader(b), nil)
		if !errors.Is(err, ErrCorruptSnapshot) {
			t.Fatalf("%s: err = %v, want ErrCorruptSnapshot", name, err)
		}
		if sm.cmds != nil || r.sessions.len() != 0 {
			t.Fatalf("%s: state changed by a rejected snapshot", name)
		}
	}
	// A header for another index than the meta's.
	other := meta
	other.Index++
	if err := newRSM(t, &memSM{}, 0).Restore(context.Background(), other, bytes.NewReader(data), nil); !errors.Is(err, ErrCorruptSnapshot) {
		t.Fatalf("meta/header mismatch: %v", err)
	}
}

// A checksum-valid header whose body is nonsense is still rejected, typed.
func TestReadHeaderBodyGarbage(t *testing.T) {
	// index 1, term 1, state machine index 1, type 0, version 0, sessions...
	for _, body := range [][]byte{
		{},                             // no index
		{1, 1, 2, 0, 0, 0},             // state machine index above the index
		{1, 1, 1, 0, 0, 5},             // 5 sessions, no bytes
		{1, 1, 1, 0, 0, 1, 7, 0, 0, 1}, // history count beyond the bytes
		{1, 1, 1, 0, 0, 1, 7, 3, 1, 1, 2, 0, 0, 0},    // series 2 <= respondedTo 3
		{1, 1, 1, 0, 0, 1, 7, 0, 1, 1, 2, 2, 0, 0},    // lost flag 2
		{1, 1, 1, 0, 0, 2, 7, 0, 5, 0, 8, 0, 4, 0},    // LRU order broken
		{1, 1, 1, 0, 0, 2, 7, 0, 5, 0, 7, 0, 6, 0},    // duplicate client
		{1, 1, 1, 0, 0, 0, 9},                         // trailing byte
		{1, 1, 1, 0, 0, 1, 7, 0, 1, 1, 2, 0, 0, 9, 1}, // data length beyond
	} {
		b := []byte(headerMagic)
		b = append(b, headerVersion, flagFull, byte(len(body)), 0, 0, 0)
		b = append(b, body...)
		b = crcAppend(b)
		if _, err := readHeader(bytes.NewReader(b), 10); !errors.Is(err, ErrCorruptSnapshot) {
			t.Fatalf("body %v: err = %v", body, err)
		}
	}
}

func TestRestoreIncompatibleType(t *testing.T) {
	src := &typedSM{typ: 5, ver: 2}
	s := newRSM(t, src, 0)
	mustApply(t, s, normal(1, 1, 1, "a"))
	c, err := s.Capture(true)
	if err != nil {
		t.Fatal(err)
	}
	if typ, ver := c.Type(); typ != 5 || ver != 2 {
		t.Fatalf("Type() = %d, %d", typ, ver)
	}
	data := captureBytes(t, c, nil)
	for _, tc := range []struct {
		typ, ver uint64
		ok       bool
	}{{5, 2, true}, {5, 3, true}, {5, 1, false}, {6, 2, false}, {0, 0, false}} {
		var dst statemachine.StateMachine = &typedSM{typ: tc.typ, ver: tc.ver}
		if tc.typ == 0 {
			dst = &memSM{}
		}
		err := newRSM(t, dst, 0).Restore(context.Background(), metaOf(c), bytes.NewReader(data), nil)
		if tc.ok && err != nil || !tc.ok && !errors.Is(err, ErrIncompatibleSnapshot) {
			t.Fatalf("restore type 5 v2 into type %d v%d: %v", tc.typ, tc.ver, err)
		}
	}
}

func TestRestoreSMErrorIsFatal(t *testing.T) {
	s := newRSM(t, &memSM{}, 0)
	mustApply(t, s, normal(1, 1, 1, "a"))
	c, _ := s.Capture(true)
	data := captureBytes(t, c, nil)
	r := newRSM(t, &memSM{}, 0)
	// Cut the state machine's stream in its middle: the SM's own error.
	err := r.Restore(context.Background(), metaOf(c), bytes.NewReader(data[:len(data)-1]), nil)
	if err == nil || errors.Is(err, ErrCorruptSnapshot) {
		t.Fatalf("err = %v, want the state machine's error", err)
	}
	if _, err := r.Apply(Batch{Entries: []raftpb.Entry{normal(1, 1, 1, "a")}}, nil); err == nil {
		t.Fatal("apply after a failed restore succeeded")
	}
}

func flip(b []byte, i int, mask byte) []byte {
	c := bytes.Clone(b)
	c[i] ^= mask
	return c
}

func crcAppend(b []byte) []byte {
	return binary.LittleEndian.AppendUint32(b, crc32.Checksum(b, castagnoli))
}

// FuzzReadHeader: any bytes are a header or ErrCorruptSnapshot, never a
// panic or an allocation beyond the input; a header that decodes
// re-encodes to the same session table.
func FuzzReadHeader(f *testing.F) {
	s := newRSM(f, &memSM{}, 0)
	m := testMembership
	if _, err := s.Apply(Batch{Entries: sessionLog(), Membership: &m}, nil); err != nil {
		f.Fatal(err)
	}
	c, err := s.Capture(true)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(c.header)
	f.Add([]byte(headerMagic))
	f.Add(c.header[prefixSize : len(c.header)-4]) // a body
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) > 0 && b[0]&1 == 1 {
			// Also frame b as a body with a valid checksum, so the
			// fuzzer reaches the body decoder.
			framed := append([]byte(headerMagic), headerVersion, flagFull, 0, 0, 0, 0)
			binary.LittleEndian.PutUint32(framed[prefixSize-4:], uint32(len(b)))
			b = crcAppend(append(framed, b...))
		}
		h, err := readHeader(bytes.NewReader(b), 8)
		if err != nil {
			if !errors.Is(err, ErrCorruptSnapshot) {
				t.Fatalf("untyped error %v", err)
			}
			return
		}
		if h.smIndex > h.index || h.sessions.len() > 8 {
			t.Fatalf("accepted header %+v", h)
		}
	})
}
