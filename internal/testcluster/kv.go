package testcluster

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"slices"
	"strconv"
	"sync"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/skiffdb/skiff/statemachine"
)

// ErrBadCommand is returned by KV.Apply for a command that is not
// "key=value"; it stops the replica, as any Apply error does.
var ErrBadCommand = errors.New("testcluster: bad kv command")

// ErrBadSnapshot is returned by Restore for a stream that is not a KV
// snapshot (wrong magic, truncated, trailing bytes).
var ErrBadSnapshot = errors.New("testcluster: bad kv snapshot")

// ErrUseAfterClose is returned by a state machine called after Close,
// which the host must never do (statemachine.StateMachine.Close).
var ErrUseAfterClose = errors.New("testcluster: state machine used after Close")

// Queries with a meaning of their own (keys never start with '#' in the
// scenario tests).
const (
	// QueryCount returns the number of commands applied, in decimal.
	QueryCount = "#"
	// QueryDigest returns a hex digest (CRC32C) of every key and value:
	// equal on two replicas iff their states are equal (up to
	// collisions).
	QueryDigest = "#digest"
)

// Set returns the KV command that sets key to value.
func Set(key string, value []byte) []byte {
	cmd := make([]byte, 0, len(key)+1+len(value))
	cmd = append(cmd, key...)
	cmd = append(cmd, '=')
	return append(cmd, value...)
}

// kvState is the data both state machines share: a map and the
// bookkeeping that makes a replica comparable with another.
type kvState struct {
	data map[string][]byte
	// count is the number of commands applied; it is each command's
	// Result.Value, so a duplicate apply shows as a gap in results.
	count uint64
	// index is the Raft index of the last entry applied (the OnDisk
	// variant's durable point).
	index uint64
	// digestVal caches digest() while digestOK; apply clears it.
	digestVal uint32
	digestOK  bool
}

func (s *kvState) apply(ents []statemachine.Entry) error {
	s.digestOK = false
	for i := range ents {
		k, v, ok := splitCmd(ents[i].Cmd)
		if !ok {
			return fmt.Errorf("%w: index %d: %q", ErrBadCommand, ents[i].Index, ents[i].Cmd)
		}
		// Cmd is only valid during Apply: keep a copy.
		s.data[k] = slices.Clone(v)
		s.count++
		s.index = ents[i].Index
		ents[i].Result = statemachine.Result{Value: s.count}
	}
	return nil
}

func splitCmd(cmd []byte) (string, []byte, bool) {
	for i, b := range cmd {
		if b == '=' {
			return string(cmd[:i]), cmd[i+1:], true
		}
	}
	return "", nil, false
}

func (s *kvState) lookup(q []byte) []byte {
	switch string(q) {
	case QueryCount:
		return strconv.AppendUint(nil, s.count, 10)
	case QueryDigest:
		return []byte(fmt.Sprintf("%08x", s.digest()))
	}
	v, ok := s.data[string(q)]
	if !ok {
		return nil
	}
	return slices.Clone(v)
}

func (s *kvState) digest() uint32 {
	if s.digestOK {
		return s.digestVal
	}
	h := crc32.New(castagnoli)
	var n [8]byte
	for _, k := range s.sortedKeys() {
		binary.LittleEndian.PutUint64(n[:], uint64(len(k)))
		h.Write(n[:])
		h.Write([]byte(k))
		binary.LittleEndian.PutUint64(n[:], uint64(len(s.data[k])))
		h.Write(n[:])
		h.Write(s.data[k])
	}
	s.digestVal, s.digestOK = h.Sum32(), true
	return s.digestVal
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

func (s *kvState) sortedKeys() []string {
	keys := make([]string, 0, len(s.data))
	for k := range s.data {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// capture copies the map (values are never mutated in place, so sharing
// them is safe): Save then runs concurrently with later applies.
func (s *kvState) capture() *kvSnapshot {
	cp := make(map[string][]byte, len(s.data))
	for k, v := range s.data {
		cp[k] = v
	}
	return &kvSnapshot{state: kvState{data: cp, count: s.count, index: s.index}}
}

// The snapshot stream:
//
//	+--------------+-----------+-----------+-----------+------------------------------------+
//	| "SKVS" magic | index u64 | count u64 | pairs u64 | pairs × (uvarint len, key, uvarint len, value) |
//	+--------------+-----------+-----------+-----------+------------------------------------+
//
// integers little-endian.
const snapMagic = "SKVS"

// maxSnapValue bounds a decoded length so a corrupt stream cannot make
// Restore allocate without limit.
const maxSnapValue = 64 << 20

type kvSnapshot struct{ state kvState }

// Save writes the captured state (statemachine.Snapshot).
func (s *kvSnapshot) Save(ctx context.Context, w io.Writer, _ statemachine.FileCollection) error {
	bw := bufio.NewWriterSize(w, 64<<10)
	var hdr [len(snapMagic) + 24]byte
	copy(hdr[:], snapMagic)
	binary.LittleEndian.PutUint64(hdr[4:], s.state.index)
	binary.LittleEndian.PutUint64(hdr[12:], s.state.count)
	binary.LittleEndian.PutUint64(hdr[20:], uint64(len(s.state.data)))
	if _, err := bw.Write(hdr[:]); err != nil {
		return err
	}
	for i, k := range s.state.sortedKeys() {
		if i%1024 == 0 && ctx.Err() != nil {
			return ctx.Err()
		}
		v := s.state.data[k]
		bw.Write(binary.AppendUvarint(nil, uint64(len(k))))
		bw.WriteString(k)
		bw.Write(binary.AppendUvarint(nil, uint64(len(v))))
		if _, err := bw.Write(v); err != nil {
			return err
		}
	}
	return bw.Flush()
}

// Release frees the capture (statemachine.Snapshot).
func (s *kvSnapshot) Release() {}

// readState decodes a snapshot stream.
func readState(r io.Reader) (kvState, error) {
	br := bufio.NewReaderSize(r, 64<<10)
	var hdr [len(snapMagic) + 24]byte
	if _, err := io.ReadFull(br, hdr[:]); err != nil {
		return kvState{}, fmt.Errorf("%w: header: %w", ErrBadSnapshot, err)
	}
	if string(hdr[:4]) != snapMagic {
		return kvState{}, fmt.Errorf("%w: magic %q", ErrBadSnapshot, hdr[:4])
	}
	st := kvState{
		data:  make(map[string][]byte),
		index: binary.LittleEndian.Uint64(hdr[4:]),
		count: binary.LittleEndian.Uint64(hdr[12:]),
	}
	pairs := binary.LittleEndian.Uint64(hdr[20:])
	for i := uint64(0); i < pairs; i++ {
		k, err := readBytes(br)
		if err != nil {
			return kvState{}, fmt.Errorf("%w: pair %d key: %w", ErrBadSnapshot, i, err)
		}
		v, err := readBytes(br)
		if err != nil {
			return kvState{}, fmt.Errorf("%w: pair %d value: %w", ErrBadSnapshot, i, err)
		}
		st.data[string(k)] = v
	}
	if _, err := br.ReadByte(); err != io.EOF {
		return kvState{}, fmt.Errorf("%w: trailing bytes after %d pairs", ErrBadSnapshot, pairs)
	}
	return st, nil
}

func readBytes(r *bufio.Reader) ([]byte, error) {
	n, err := binary.ReadUvarint(r)
	if err != nil {
		return nil, err
	}
	if n > maxSnapValue {
		return nil, fmt.Errorf("length %d over %d", n, maxSnapValue)
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(r, b); err != nil {
		return nil, io.ErrUnexpectedEOF
	}
	return b, nil
}

// KV is the harness's default state machine: an in-memory, deterministic
// key-value map. Commands are "key=value" (see Set); each command's
// Result.Value is the number of commands applied so far, so two applies
// of one proposal show as a skipped number. Lookup takes a key, or
// QueryCount / QueryDigest. Its snapshots are a single stream.
type KV struct {
	mu       sync.Mutex
	st       kvState
	restores int
	closed   bool
}

// NewKV is a statemachine.CreateFunc for KV.
func NewKV(uint64, uint64) statemachine.StateMachine {
	return &KV{st: kvState{data: make(map[string][]byte)}}
}

// Apply applies "key=value" commands (statemachine.StateMachine).
func (s *KV) Apply(ents []statemachine.Entry) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrUseAfterClose
	}
	return s.st.apply(ents)
}

// Lookup answers a key, QueryCount or QueryDigest.
func (s *KV) Lookup(q []byte) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.st.lookup(q), nil
}

// Snapshot captures the state (a copy of the map's headers).
func (s *KV) Snapshot() (statemachine.Snapshot, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.st.capture(), nil
}

// Restore replaces the state with a snapshot's.
func (s *KV) Restore(_ context.Context, r io.Reader, _ []statemachine.SnapshotFile) error {
	st, err := readState(r)
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.st = st
	s.restores++
	s.mu.Unlock()
	return nil
}

// Close marks the state machine closed.
func (s *KV) Close() error {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	return nil
}

// Restores returns how many times Restore succeeded.
func (s *KV) Restores() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.restores
}

// OnDiskKV is the KV as a statemachine.OnDisk: its data is durable in a
// file of the host's file system, written (temporary file, fsync, rename,
// fsync of the directory) on Sync, after Restore and on Close. A crash
// loses what was applied since the last of those, as it would for a real
// database that syncs lazily. It records Open and Restore calls.
type OnDiskKV struct {
	fs   vfs.FS
	path string

	mu       sync.Mutex
	st       kvState
	opened   uint64 // the index Open returned
	restores int
	syncs    int
	closed   bool
}

// NewOnDiskKV returns a CreateFunc for OnDiskKVs that keep their data in
// dir on fs (one file per group and replica).
func NewOnDiskKV(fs vfs.FS, dir string) statemachine.CreateFunc {
	return func(group, replica uint64) statemachine.StateMachine {
		return &OnDiskKV{
			fs:   fs,
			path: fs.PathJoin(dir, fmt.Sprintf("kv-%d-%d", group, replica)),
			st:   kvState{data: make(map[string][]byte)},
		}
	}
}

var _ statemachine.OnDisk = (*OnDiskKV)(nil)

// Open loads the durable state and returns the index of its last entry.
func (s *OnDiskKV) Open(context.Context) (uint64, error) {
	f, err := s.fs.Open(s.path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return 0, nil // a new replica
		}
		return 0, fmt.Errorf("testcluster: open %s: %w", s.path, err)
	}
	defer f.Close()
	st, err := readState(f)
	if err != nil {
		return 0, fmt.Errorf("testcluster: load %s: %w", s.path, err)
	}
	s.mu.Lock()
	s.st, s.opened = st, st.index
	s.mu.Unlock()
	return st.index, nil
}

// Apply applies "key=value" commands in memory; Sync makes them durable.
func (s *OnDiskKV) Apply(ents []statemachine.Entry) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrUseAfterClose
	}
	return s.st.apply(ents)
}

// Lookup answers a key, QueryCount or QueryDigest.
func (s *OnDiskKV) Lookup(q []byte) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.st.lookup(q), nil
}

// Snapshot captures the state for a full data snapshot.
func (s *OnDiskKV) Snapshot() (statemachine.Snapshot, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.st.capture(), nil
}

// Restore replaces the state with a snapshot's and makes it durable at
// once (a real store ingests the snapshot's files).
func (s *OnDiskKV) Restore(_ context.Context, r io.Reader, _ []statemachine.SnapshotFile) error {
	st, err := readState(r)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.st = st
	s.restores++
	return s.persistLocked()
}

// Sync writes the state durably.
func (s *OnDiskKV) Sync() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.syncs++
	return s.persistLocked()
}

// Close writes the state durably (a clean shutdown flushes) and closes.
// After a simulated crash the write goes to the discarded file system.
func (s *OnDiskKV) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	return s.persistLocked()
}

// persistLocked replaces the file atomically: a crash leaves the old or
// the new state, never a torn one.
func (s *OnDiskKV) persistLocked() error {
	tmp := s.path + ".tmp"
	f, err := s.fs.Create(tmp, vfs.WriteCategoryUnspecified)
	if err != nil {
		return fmt.Errorf("testcluster: create %s: %w", tmp, err)
	}
	snap := s.st.capture()
	if err := snap.Save(context.Background(), f, nil); err != nil {
		f.Close()
		return fmt.Errorf("testcluster: write %s: %w", tmp, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("testcluster: sync %s: %w", tmp, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("testcluster: close %s: %w", tmp, err)
	}
	if err := s.fs.Rename(tmp, s.path); err != nil {
		return fmt.Errorf("testcluster: rename %s: %w", tmp, err)
	}
	d, err := s.fs.OpenDir(s.fs.PathDir(s.path))
	if err != nil {
		return fmt.Errorf("testcluster: open dir of %s: %w", s.path, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("testcluster: sync dir of %s: %w", s.path, err)
	}
	return nil
}

// Opened returns the index Open returned (0 for a new replica).
func (s *OnDiskKV) Opened() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.opened
}

// Restores returns how many times Restore succeeded.
func (s *OnDiskKV) Restores() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.restores
}

// Index returns the Raft index of the last entry applied.
func (s *OnDiskKV) Index() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.st.index
}
