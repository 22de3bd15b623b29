package rsm

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"

	"github.com/skiffdb/skiff/raftpb"
	"github.com/skiffdb/skiff/statemachine"
)

// The rsm header that starts every snapshot stream (layout in doc.go).
const (
	headerMagic   = "SKRS"
	headerVersion = 1
	prefixSize    = len(headerMagic) + 1 + 1 + 4 // magic, version, flags, body length
	// maxHeaderBody bounds the declared body length. The body is read
	// incrementally, so a corrupt length costs at most the bytes present.
	maxHeaderBody = 1 << 31

	flagFull   = 1 << 0
	flagOnDisk = 1 << 1
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Capture is a point-in-time capture of the replica at LastApplied: index,
// term, membership, a copy of the session table (already encoded), and the
// state machine's own capture when Full. It is made on the apply goroutine
// by RSM.Capture; Save then runs on a snapshot goroutine, concurrently with
// Apply, and touches nothing the RSM still mutates.
type Capture struct {
	index, term uint64
	// smIndex is the last index whose effects are in the state machine's
	// own data (OnDisk): at or below index, below it when the last entries
	// were NoOps, config changes or session operations. A metadata-only
	// snapshot is usable after a restart only if Open returns at least it.
	smIndex       uint64
	membership    raftpb.Membership
	onDisk, full  bool
	smType, smVer uint64
	header        []byte                // the encoded rsm header
	snap          statemachine.Snapshot // nil unless full
}

// Index returns the index the capture was taken at.
func (c *Capture) Index() uint64 { return c.index }

// Term returns the term of the entry at Index.
func (c *Capture) Term() uint64 { return c.term }

// Membership returns the membership in effect at Index (a copy).
func (c *Capture) Membership() raftpb.Membership { return c.membership.Clone() }

// OnDisk reports whether the state machine keeps its own data durable.
func (c *Capture) OnDisk() bool { return c.onDisk }

// Full reports whether the capture carries the state machine's data.
func (c *Capture) Full() bool { return c.full }

// Type returns the state machine's snapshot type and version
// (statemachine.Type), or 0, 0; the engine records them in the meta.
func (c *Capture) Type() (typ, version uint64) { return c.smType, c.smVer }

// Save writes the rsm header, then (when Full) the state machine's stream,
// into w; the state machine's files go to files. It runs on a snapshot
// goroutine concurrently with Apply. An error fails this snapshot only.
func (c *Capture) Save(ctx context.Context, w io.Writer, files statemachine.FileCollection) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("rsm: save snapshot %d: %w", c.index, err)
	}
	if _, err := w.Write(c.header); err != nil {
		return fmt.Errorf("rsm: save snapshot %d: write header: %w", c.index, err)
	}
	if !c.full {
		return nil
	}
	if c.snap == nil {
		return fmt.Errorf("rsm: save snapshot %d: capture already released", c.index)
	}
	if err := c.snap.Save(ctx, w, files); err != nil {
		return fmt.Errorf("rsm: save snapshot %d: state machine: %w", c.index, err)
	}
	return nil
}

// Release frees the state machine's capture. It is called once, after Save
// returned or when Save will not be called; later calls do nothing.
func (c *Capture) Release() {
	if c.snap != nil {
		c.snap.Release()
		c.snap = nil
	}
}

// Capture captures the replica at LastApplied, on the apply goroutine
// between Applies. For an OnDisk state machine, full=false makes a
// metadata-only capture: SM.Sync is called (the log below the index will be
// compacted away, so the data must be durable) and no state machine data is
// written; sessions still are. For other state machines full is ignored:
// their captures are always full.
func (s *RSM) Capture(full bool) (*Capture, error) {
	c := &Capture{
		index:      s.applied,
		term:       s.term,
		smIndex:    s.applied,
		membership: s.membership.Clone(),
		onDisk:     s.onDisk != nil,
		full:       full || s.onDisk == nil,
		smType:     s.smType,
		smVer:      s.smVer,
	}
	if s.failed != nil {
		return nil, fmt.Errorf("rsm: capture at %d after a failed apply: %w", c.index, s.failed)
	}
	if len(c.membership.Voters) == 0 {
		// A group always has a voter; a snapshot without one would
		// start a replica that can never elect a leader. The initial
		// membership comes from Config.Membership.
		return nil, fmt.Errorf("rsm: capture at %d: no membership (Config.Membership unset and no config change applied)", c.index)
	}
	if c.onDisk && s.smIndex > s.applied {
		// The state machine's data is ahead of the sessions until the
		// engine finished ReplayOnDisk; a capture would mix two indexes.
		return nil, fmt.Errorf("rsm: capture at %d while the state machine is at %d: replay not finished", s.applied, s.smIndex)
	}
	if !c.full {
		if err := s.onDisk.Sync(); err != nil {
			return nil, fmt.Errorf("rsm: capture at %d: sync state machine: %w", c.index, err)
		}
	} else {
		snap, err := s.sm.Snapshot()
		if err != nil {
			return nil, fmt.Errorf("rsm: capture at %d: state machine snapshot: %w", c.index, err)
		}
		c.snap = snap
	}
	if c.onDisk {
		c.smIndex = s.smIndex
	}
	c.header = s.appendHeader(nil, c)
	return c, nil
}

// appendHeader encodes the rsm header of c with the current session table.
func (s *RSM) appendHeader(b []byte, c *Capture) []byte {
	var flags byte
	if c.full {
		flags |= flagFull
	}
	if c.onDisk {
		flags |= flagOnDisk
	}
	start := len(b)
	b = append(b, headerMagic...)
	b = append(b, headerVersion, flags, 0, 0, 0, 0)
	body := len(b)
	b = binary.AppendUvarint(b, c.index)
	b = binary.AppendUvarint(b, c.term)
	b = binary.AppendUvarint(b, c.smIndex)
	b = binary.AppendUvarint(b, c.smType)
	b = binary.AppendUvarint(b, c.smVer)
	b = s.sessions.appendTo(b)
	binary.LittleEndian.PutUint32(b[body-4:], uint32(len(b)-body))
	return binary.LittleEndian.AppendUint32(b, crc32.Checksum(b[start:], castagnoli))
}

// header is a decoded rsm header.
type header struct {
	full, onDisk  bool
	index, term   uint64
	smIndex       uint64
	smType, smVer uint64
	sessions      *sessionTable
}

// readHeader reads exactly the rsm header from r, leaving r at the state
// machine's stream. Every failure is ErrCorruptSnapshot (or r's own error).
func readHeader(r io.Reader, maxSessions int) (header, error) {
	var h header
	prefix := make([]byte, prefixSize)
	if _, err := io.ReadFull(r, prefix); err != nil {
		return h, fmt.Errorf("read header: %w", corruptIfEOF(err))
	}
	if string(prefix[:len(headerMagic)]) != headerMagic {
		return h, fmt.Errorf("bad magic %q: %w", prefix[:len(headerMagic)], ErrCorruptSnapshot)
	}
	if v := prefix[len(headerMagic)]; v != headerVersion {
		return h, fmt.Errorf("unknown header version %d: %w", v, ErrCorruptSnapshot)
	}
	flags := prefix[len(headerMagic)+1]
	if flags&^(flagFull|flagOnDisk) != 0 {
		return h, fmt.Errorf("unknown header flags %#x: %w", flags, ErrCorruptSnapshot)
	}
	n := binary.LittleEndian.Uint32(prefix[prefixSize-4:])
	if n > maxHeaderBody {
		return h, fmt.Errorf("header body of %d bytes: %w", n, ErrCorruptSnapshot)
	}
	// ReadAll grows with the bytes actually present, so a corrupt length
	// on a short stream is caught below without allocating n bytes.
	rest, err := io.ReadAll(io.LimitReader(r, int64(n)+4))
	if err != nil {
		return h, fmt.Errorf("read header body: %w", err)
	}
	if len(rest) != int(n)+4 {
		return h, fmt.Errorf("header truncated at %d of %d bytes: %w", len(rest), n+4, ErrCorruptSnapshot)
	}
	crc := crc32.Update(crc32.Checksum(prefix, castagnoli), castagnoli, rest[:n])
	if want := binary.LittleEndian.Uint32(rest[n:]); crc != want {
		return h, fmt.Errorf("header checksum %#x, want %#x: %w", crc, want, ErrCorruptSnapshot)
	}
	d := &reader{b: rest[:n]}
	h.full, h.onDisk = flags&flagFull != 0, flags&flagOnDisk != 0
	h.index = d.uvarint("index")
	h.term = d.uvarint("term")
	h.smIndex = d.uvarint("state machine index")
	if d.err == nil && h.smIndex > h.index {
		d.err = fmt.Errorf("state machine index %d above the snapshot index %d: %w", h.smIndex, h.index, ErrCorruptSnapshot)
	}
	h.smType = d.uvarint("state machine type")
	h.smVer = d.uvarint("state machine version")
	h.sessions = decodeSessions(d, maxSessions)
	if d.err == nil && len(d.b) != 0 {
		d.err = fmt.Errorf("%d trailing header bytes: %w", len(d.b), ErrCorruptSnapshot)
	}
	return h, d.err
}

func corruptIfEOF(err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("%w: %w", ErrCorruptSnapshot, err)
	}
	return err
}

// Restore replaces the replica's state with a snapshot's: data is the stream
// Capture.Save wrote (rsm header, then the state machine's stream), files the
// state machine's files. Applied index, term and membership come from meta;
// sessions from the header. The header is verified before the state machine
// is touched: a corrupt one is ErrCorruptSnapshot, another state machine
// type or a newer version ErrIncompatibleSnapshot.
//
// A metadata-only snapshot restores only the sessions, and only into an
// OnDisk state machine whose data already holds every entry of the snapshot
// that reached the state machine (the local restart case: Open returned an
// index at or above the last such entry, which may be below meta.Index when
// the snapshot ends with NoOps, config changes or session operations);
// otherwise it is ErrNeedFullSnapshot. A full snapshot into an OnDisk state
// machine that already holds its data (the same test) also restores only the
// sessions: restoring the data would take the state machine back to the
// snapshot while the entries after it, which it holds too, are never handed
// to Apply again. An error from SM.Restore is fatal for the replica.
func (s *RSM) Restore(ctx context.Context, meta raftpb.SnapshotMeta, data io.Reader, files []statemachine.SnapshotFile) error {
	wrap := func(err error) error {
		return fmt.Errorf("rsm: group %d replica %d: restore snapshot %d: %w", s.group, s.replica, meta.Index, err)
	}
	if err := ctx.Err(); err != nil {
		return wrap(err)
	}
	if s.failed != nil {
		return wrap(s.failed)
	}
	h, err := readHeader(data, s.sessions.max)
	if err != nil {
		return wrap(err)
	}
	if h.index != meta.Index || h.term != meta.Term {
		return wrap(fmt.Errorf("header at index %d term %d, meta at index %d term %d: %w",
			h.index, h.term, meta.Index, meta.Term, ErrCorruptSnapshot))
	}
	if h.smType != s.smType || h.smVer > s.smVer {
		return wrap(fmt.Errorf("snapshot of type %d version %d, state machine type %d version %d: %w",
			h.smType, h.smVer, s.smType, s.smVer, ErrIncompatibleSnapshot))
	}
	if !h.full {
		if s.onDisk == nil || s.smIndex < h.smIndex {
			return wrap(fmt.Errorf("state machine at %d, snapshot's state machine data at %d: %w", s.smIndex, h.smIndex, ErrNeedFullSnapshot))
		}
		if s.applied > meta.Index {
			// Sessions would go back while the data does not.
			return wrap(fmt.Errorf("metadata-only snapshot below the applied index %d", s.applied))
		}
		var one [1]byte
		if n, _ := data.Read(one[:]); n != 0 {
			return wrap(fmt.Errorf("metadata-only snapshot followed by data: %w", ErrCorruptSnapshot))
		}
		// smIndex stays the state machine's own: entries up to the
		// snapshot never reach SM.Apply again because applied moves to
		// the snapshot, and raising smIndex to it would make the next
		// snapshot claim data the state machine never held (its Open
		// after a restart could not return that index).
	} else if s.onDisk != nil && s.smIndex >= h.smIndex && s.applied <= meta.Index {
		// A full snapshot, but the on-disk state machine already holds
		// its data (a local restart after an install): restoring would
		// take the data back to the snapshot while the entries after it,
		// which the state machine also holds, are never applied again.
		// Only the sessions are taken.
		s.log.Info("on-disk state machine is current; snapshot data not restored",
			"index", meta.Index, "state_machine_index", s.smIndex)
	} else {
		s.log.Info("restoring state machine from snapshot", "index", meta.Index, "term", meta.Term, "files", len(files))
		if err := s.sm.Restore(ctx, data, files); err != nil {
			s.failed = wrap(fmt.Errorf("state machine: %w", err))
			return s.failed
		}
		// The restored data holds what the capturing state machine had
		// applied, which may trail the snapshot index (no-ops and config
		// changes never reach it); that is what its Open reports later.
		s.smIndex = h.smIndex
	}
	s.sessions = h.sessions
	s.applied, s.term = meta.Index, meta.Term
	s.membership = meta.Membership.Clone()
	s.log.Info("restored snapshot", "index", meta.Index, "term", meta.Term, "full", h.full, "sessions", h.sessions.len())
	return nil
}
