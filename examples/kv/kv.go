package kv

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"sync"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/skiffdb/skiff/statemachine"
)

// Options configures the state machines New creates.
type Options struct {
	// Dir is the root directory: each replica's database lives under
	// GroupDir(group, replica). Required.
	Dir string
	// FS is the file system every byte goes through (default the OS). It
	// must be the file system of the host (HostConfig.FS): Restore
	// hard-links the files of a received snapshot, and Snapshot hands
	// the host files to hard-link.
	FS vfs.FS
	// Logger receives restores, swaps and Pebble's messages (default:
	// discarded).
	Logger *slog.Logger
}

func (o Options) fs() vfs.FS {
	if o.FS == nil {
		return vfs.Default
	}
	return o.FS
}

// GroupDir returns the directory of a replica's data: the replica ID is
// part of it because a host that gets a replica of the same group again
// under a new ID (removed, then added back) must start it empty.
func (o Options) GroupDir(group, replica uint64) string {
	return o.fs().PathJoin(o.Dir, fmt.Sprintf("group-%d-replica-%d", group, replica))
}

// Snapshot type and version recorded in every snapshot's meta (Type): a
// replica refuses a snapshot of another state machine, or of a newer
// format than it can read. The type is "skiffkv" in ASCII.
const (
	SnapshotType    = 0x736b6966666b76
	SnapshotVersion = 1
)

// Key space of the Pebble database: user keys live under userPrefix, the
// state machine's own records under metaPrefix, so a scan of any user
// prefix never meets metadata.
const (
	metaPrefix = 0x00
	userPrefix = 0x01
)

// appliedKey holds the index of the last applied entry (8 bytes, big
// endian), written in the same batch as the entries' effects.
var appliedKey = []byte{metaPrefix, 'a', 'p', 'p', 'l', 'i', 'e', 'd'}

// New returns the CreateFunc to pass to skiff.Host.StartGroup. The state
// machines it makes implement statemachine.StateMachine, OnDisk,
// ConcurrentLookup and Type.
func New(opts Options) statemachine.CreateFunc {
	fs := opts.fs()
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return func(group, replica uint64) statemachine.StateMachine {
		return &machine{
			fs:  fs,
			dir: opts.GroupDir(group, replica),
			log: log.With("group", group, "replica", replica),
		}
	}
}

// machine is one replica's state machine. The host calls Open, Apply,
// Snapshot, Restore, Sync and Close from one goroutine at a time (the
// apply goroutine); Lookup may run concurrently with any of them
// (ConcurrentLookup).
type machine struct {
	fs  vfs.FS
	dir string
	log *slog.Logger

	// mu guards db and closed against concurrent Lookups. The apply
	// goroutine is the only writer and takes the write lock only to swap
	// or drop the database; it reads db without the lock.
	mu     sync.RWMutex
	db     *pebble.DB // nil before Open and after Close
	closed bool

	// Owned by the apply goroutine.
	dbName     string // the directory CURRENT names
	nextDB     uint64 // sequence of the next database directory
	nextCkpt   uint64 // sequence of the next checkpoint directory
	applied    uint64 // Invariant: equals the applied key in db
	key        []byte // scratch for CAS lookups
	applyError error  // sticky: once a batch failed, the state is unknown
}

var (
	_ statemachine.StateMachine     = (*machine)(nil)
	_ statemachine.OnDisk           = (*machine)(nil)
	_ statemachine.ConcurrentLookup = (*machine)(nil)
	_ statemachine.Type             = (*machine)(nil)
)

// ConcurrentLookup declares Lookup safe to call concurrently with Apply:
// Pebble reads see whole batches, and mu keeps the database from being
// swapped (Restore) or closed under a read.
func (*machine) ConcurrentLookup() {}

// SnapshotType implements statemachine.Type.
func (*machine) SnapshotType() (typ, version uint64) { return SnapshotType, SnapshotVersion }

// Open opens the replica's database, creating it if needed, removes what
// an interrupted Restore or a previous process left behind, and returns
// the durable applied index (0 for a new replica).
func (m *machine) Open(ctx context.Context) (uint64, error) {
	if m.closed {
		return 0, ErrClosed
	}
	if m.db != nil {
		return 0, fmt.Errorf("kv: %s opened twice", m.dir)
	}
	if err := mkdirAllSync(m.fs, m.dir); err != nil {
		return 0, err
	}
	name, found, err := readCurrent(m.fs, m.dir)
	if err != nil {
		return 0, err
	}
	entries, err := m.fs.List(m.dir)
	if err != nil {
		return 0, fmt.Errorf("kv: list %s: %w", m.dir, err)
	}
	m.nextDB = 1
	for _, e := range entries {
		if seq, ok := dbSeq(e); ok && seq >= m.nextDB {
			m.nextDB = seq + 1
		}
	}
	if !found {
		// Without CURRENT, a database directory can only be left by an
		// Open that crashed before writing CURRENT, with nothing applied
		// to it. One that holds applied entries means CURRENT was lost:
		// refuse rather than delete the data and start empty.
		for _, e := range entries {
			if _, ok := dbSeq(e); ok && m.holdsEntries(e) {
				return 0, fmt.Errorf("%w: %s has no %s but its database %s holds applied entries",
					ErrCorrupt, m.dir, currentName, e)
			}
		}
		name = dbName(m.nextDB)
		m.nextDB++
	} else if _, err := m.fs.Stat(m.fs.PathJoin(m.dir, name)); err != nil {
		return 0, fmt.Errorf("%w: %s names %s: %v", ErrCorrupt, m.fs.PathJoin(m.dir, currentName), name, err)
	}
	if err := m.removeAllBut(entries, name); err != nil {
		return 0, err
	}
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	db, err := m.openDB(name, !found)
	if err != nil {
		return 0, err
	}
	applied, _, err := readApplied(db)
	if err != nil {
		db.Close()
		return 0, fmt.Errorf("kv: %s: %w", name, err)
	}
	if !found {
		// The database is durable (Pebble syncs its directory on
		// creation); only now may CURRENT name it.
		if err := writeCurrent(m.fs, m.dir, name); err != nil {
			db.Close()
			return 0, err
		}
	}
	m.mu.Lock()
	m.db = db
	m.mu.Unlock()
	m.dbName, m.applied = name, applied
	m.log.Info("kv: opened", "dir", m.dir, "db", name, "applied", applied)
	return applied, nil
}

// holdsEntries reports whether the database directory name opens and
// records an applied index.
func (m *machine) holdsEntries(name string) bool {
	db, err := m.openDB(name, false)
	if err != nil {
		return false // not even a database: a creation cut short
	}
	defer db.Close()
	_, found, err := readApplied(db)
	return err != nil || found
}

// removeAllBut removes every entry of the replica's directory except
// CURRENT and the live database directory.
func (m *machine) removeAllBut(entries []string, live string) error {
	removed := false
	for _, e := range entries {
		if e == currentName || e == live {
			continue
		}
		path := m.fs.PathJoin(m.dir, e)
		if err := m.fs.RemoveAll(path); err != nil {
			return fmt.Errorf("kv: remove leftover %s: %w", path, err)
		}
		m.log.Debug("kv: removed leftover", "path", path)
		removed = true
	}
	if removed {
		// Not needed for correctness (a leftover that comes back is
		// removed again), but it keeps a crash from resurrecting them.
		return syncDir(m.fs, m.dir)
	}
	return nil
}

// openDB opens the database directory name of the replica's directory.
func (m *machine) openDB(name string, create bool) (*pebble.DB, error) {
	path := m.fs.PathJoin(m.dir, name)
	db, err := pebble.Open(path, &pebble.Options{
		FS:               m.fs,
		Logger:           pebbleLogger{m.log},
		ErrorIfNotExists: !create,
	})
	if err != nil {
		return nil, fmt.Errorf("kv: open database %s: %w", path, err)
	}
	return db, nil
}

// readApplied returns the applied index recorded in db; found is false
// when none is (a database no entry was applied to).
func readApplied(db *pebble.DB) (applied uint64, found bool, err error) {
	v, closer, err := db.Get(appliedKey)
	if errors.Is(err, pebble.ErrNotFound) {
		return 0, false, nil
	} else if err != nil {
		return 0, false, fmt.Errorf("read applied index: %w", err)
	}
	defer closer.Close()
	if len(v) != 8 {
		return 0, false, fmt.Errorf("%w: applied index is %d bytes", ErrCorrupt, len(v))
	}
	return binary.BigEndian.Uint64(v), true, nil
}

// Apply applies the entries in one Pebble batch that also records the
// last entry's index, so the data and the applied index are never seen
// (nor recovered after a crash) apart. The batch is committed without
// fsync: the Raft log is the durable record, and after a crash Open's
// applied index tells the host where to replay from.
func (m *machine) Apply(ents []statemachine.Entry) error {
	if m.applyError != nil {
		return m.applyError
	}
	if m.db == nil {
		return ErrClosed
	}
	if len(ents) == 0 {
		return nil
	}
	// CAS reads through the batch (an earlier entry of the same call may
	// have written its key): only then does the batch need an index.
	indexed := false
	for i := range ents {
		if c := ents[i].Cmd; len(c) > 0 && c[0] == opCAS {
			indexed = true
			break
		}
	}
	var b *pebble.Batch
	if indexed {
		b = m.db.NewIndexedBatch()
	} else {
		b = m.db.NewBatch()
	}
	defer b.Close()
	prev := m.applied
	for i := range ents {
		e := &ents[i]
		if e.Index <= prev {
			// The host's contract is broken; applying would put the
			// applied index backwards.
			return fmt.Errorf("kv: entry index %d not above %d", e.Index, prev)
		}
		prev = e.Index
		res, err := m.applyOne(b, e.Cmd)
		if err != nil {
			m.applyError = fmt.Errorf("kv: apply entry %d: %w", e.Index, err)
			return m.applyError
		}
		e.Result = statemachine.Result{Value: res}
	}
	op := b.SetDeferred(len(appliedKey), 8)
	copy(op.Key, appliedKey)
	binary.BigEndian.PutUint64(op.Value, prev)
	if err := op.Finish(); err != nil {
		m.applyError = fmt.Errorf("kv: apply entries %d-%d: %w", ents[0].Index, prev, err)
		return m.applyError
	}
	if err := b.Commit(pebble.NoSync); err != nil {
		// Pebble does not say whether a failed commit reached the WAL:
		// the state is unknown, which the host treats as fatal.
		m.applyError = fmt.Errorf("kv: commit entries %d-%d: %w", ents[0].Index, prev, err)
		return m.applyError
	}
	m.applied = prev
	return nil
}

// applyOne adds one command's effect to b and returns its result value.
// A malformed command changes nothing (ResultBadCommand); an error is a
// storage error.
func (m *machine) applyOne(b *pebble.Batch, cmd []byte) (uint64, error) {
	c, err := decodeCommand(cmd)
	if err != nil {
		m.log.Debug("kv: malformed command", "err", err)
		return ResultBadCommand, nil
	}
	switch c.op {
	case opPut:
		return ResultOK, put(b, c.key, c.value)
	case opDelete:
		op := b.DeleteDeferred(1 + len(c.key))
		op.Key[0] = userPrefix
		copy(op.Key[1:], c.key)
		return ResultOK, op.Finish()
	case opCAS:
		m.key = append(append(m.key[:0], userPrefix), c.key...)
		cur, closer, err := b.Get(m.key)
		if errors.Is(err, pebble.ErrNotFound) {
			return ResultMismatch, nil
		} else if err != nil {
			return 0, err
		}
		equal := bytes.Equal(cur, c.prev)
		closer.Close()
		if !equal {
			return ResultMismatch, nil
		}
		return ResultOK, put(b, c.key, c.value)
	}
	// decodeCommand returns only the operations above.
	return ResultBadCommand, nil
}

// put writes key=value into b without allocating the prefixed key.
func put(b *pebble.Batch, key, value []byte) error {
	op := b.SetDeferred(1+len(key), len(value))
	op.Key[0] = userPrefix
	copy(op.Key[1:], key)
	copy(op.Value, value)
	return op.Finish()
}

// Lookup answers EncodeGet and EncodeScan queries. It may run
// concurrently with Apply, Restore and Close.
func (m *machine) Lookup(q []byte) ([]byte, error) {
	qu, err := decodeQuery(q)
	if err != nil {
		return nil, err
	}
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.db == nil {
		return nil, ErrClosed
	}
	switch qu.op {
	case opGet:
		return get(m.db, qu.key)
	default: // opScan; decodeQuery returns no other
		return scan(m.db, qu.key, qu.limit)
	}
}

func get(db *pebble.DB, key []byte) ([]byte, error) {
	k := make([]byte, 1+len(key))
	k[0] = userPrefix
	copy(k[1:], key)
	v, closer, err := db.Get(k)
	if errors.Is(err, pebble.ErrNotFound) {
		return []byte{0}, nil
	} else if err != nil {
		return nil, fmt.Errorf("kv: get: %w", err)
	}
	defer closer.Close()
	resp := make([]byte, 1+len(v))
	resp[0] = 1
	copy(resp[1:], v)
	return resp, nil
}

func scan(db *pebble.DB, prefix []byte, limit uint64) ([]byte, error) {
	lower := append([]byte{userPrefix}, prefix...)
	it, err := db.NewIter(&pebble.IterOptions{LowerBound: lower, UpperBound: prefixEnd(lower)})
	if err != nil {
		return nil, fmt.Errorf("kv: scan: %w", err)
	}
	var body []byte
	n := uint64(0)
	for valid := it.First(); valid && (limit == 0 || n < limit); valid = it.Next() {
		v, err := it.ValueAndErr()
		if err != nil {
			it.Close()
			return nil, fmt.Errorf("kv: scan: %w", err)
		}
		k := it.Key()[1:]
		body = binary.AppendUvarint(body, uint64(len(k)))
		body = append(body, k...)
		body = binary.AppendUvarint(body, uint64(len(v)))
		body = append(body, v...)
		n++
	}
	if err := it.Close(); err != nil {
		return nil, fmt.Errorf("kv: scan: %w", err)
	}
	resp := binary.AppendUvarint(make([]byte, 0, binary.MaxVarintLen64+len(body)), n)
	return append(resp, body...), nil
}

// prefixEnd returns the smallest key above every key starting with p. p
// starts with userPrefix (< 0xff), so the result always exists.
func prefixEnd(p []byte) []byte {
	end := bytes.Clone(p)
	for i := len(end) - 1; i >= 0; i-- {
		if end[i] < 0xff {
			end[i]++
			return end[:i+1]
		}
	}
	return nil // unreachable: p[0] == userPrefix
}

// Sync makes everything applied so far durable: it syncs Pebble's WAL,
// which holds every committed batch.
func (m *machine) Sync() error {
	if m.db == nil {
		return ErrClosed
	}
	if err := m.db.LogData(nil, pebble.Sync); err != nil {
		return fmt.Errorf("kv: sync %s: %w", m.dir, err)
	}
	return nil
}

// Close closes the database. Lookups that come later get ErrClosed.
func (m *machine) Close() error {
	m.mu.Lock()
	db := m.db
	m.db, m.closed = nil, true
	m.mu.Unlock()
	if db == nil {
		return nil
	}
	if err := db.Close(); err != nil {
		return fmt.Errorf("kv: close %s: %w", m.dir, err)
	}
	return nil
}

// pebbleLogger sends Pebble's messages to the state machine's logger.
type pebbleLogger struct{ log *slog.Logger }

// Infof logs at debug level: Pebble's informational messages are routine
// (WALs found and replayed at every open).
func (l pebbleLogger) Infof(format string, args ...any) {
	if l.log.Enabled(context.Background(), slog.LevelDebug) {
		l.log.Debug("pebble: " + fmt.Sprintf(format, args...))
	}
}

func (l pebbleLogger) Errorf(format string, args ...any) {
	l.log.Error("pebble: " + fmt.Sprintf(format, args...))
}

// Fatalf is Pebble's report of a broken invariant of its own (not of
// input or disk errors, which it returns): Pebble's contract is that it
// does not return, so after logging it defers to Pebble's default, which
// exits.
func (l pebbleLogger) Fatalf(format string, args ...any) {
	l.log.Error("pebble: fatal: " + fmt.Sprintf(format, args...))
	pebble.DefaultLogger.Fatalf(format, args...)
}
