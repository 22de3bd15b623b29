package rsm

import (
	"encoding/binary"
	"fmt"

	"github.com/skiffdb/skiff/raftpb"
)

// The entry data layout is drawn in doc.go. Integers are fixed-width
// little-endian rather than varints: the header is decoded for every applied
// entry, and fixed offsets let ProposalKey and the no-session path read it
// with two bounds checks and no loop.

// entryVersion is the first byte of every encoded proposal. A decoder that
// meets another value returns ErrCorruptEntry: a newer release must keep
// writing version 1 until every replica of a group can read the new one.
const entryVersion byte = 1

// kind is the second byte: what the rest of the data is.
type kind byte

const (
	kindProposal        kind = 1 // EntryNormal: key, cmd
	kindSessionProposal kind = 2 // EntryNormal: key, session, cmd
	kindRegister        kind = 3 // EntrySession: key, client
	kindUnregister      kind = 4 // EntrySession: key, client
)

const (
	headerSize  = 2 + 8           // version, kind, key
	sessionSize = headerSize + 24 // + client, series, respondedTo
	clientSize  = headerSize + 8  // + client
)

// Session identifies a client's proposal for exactly-once application
// (dragonboat semantics). SeriesID numbers the client's proposals: it starts
// at 1 and increases by one per new proposal, and a retry reuses the
// proposal's SeriesID. RespondedTo is the highest SeriesID whose result the
// client has received: the group may forget results at or below it, and a
// proposal at or below it is answered ErrSessionExpired.
type Session struct {
	ClientID, SeriesID, RespondedTo uint64
}

func appendHeader(dst []byte, k kind, key uint64) []byte {
	dst = append(dst, entryVersion, byte(k))
	return binary.LittleEndian.AppendUint64(dst, key)
}

// EncodeProposal appends to dst the data of an EntryNormal entry carrying
// cmd without a client session, and returns the extended slice. key is the
// engine's host-unique proposal key, returned in Applied.Key.
func EncodeProposal(dst []byte, key uint64, cmd []byte) []byte {
	dst = appendHeader(dst, kindProposal, key)
	return append(dst, cmd...)
}

// EncodeSessionProposal appends to dst the data of an EntryNormal entry
// carrying cmd on behalf of client session s.
func EncodeSessionProposal(dst []byte, key uint64, s Session, cmd []byte) []byte {
	dst = appendHeader(dst, kindSessionProposal, key)
	dst = binary.LittleEndian.AppendUint64(dst, s.ClientID)
	dst = binary.LittleEndian.AppendUint64(dst, s.SeriesID)
	dst = binary.LittleEndian.AppendUint64(dst, s.RespondedTo)
	return append(dst, cmd...)
}

// EncodeRegister appends to dst the data of an EntrySession entry that
// registers clientID.
func EncodeRegister(dst []byte, key, clientID uint64) []byte {
	dst = appendHeader(dst, kindRegister, key)
	return binary.LittleEndian.AppendUint64(dst, clientID)
}

// EncodeUnregister appends to dst the data of an EntrySession entry that
// unregisters clientID.
func EncodeUnregister(dst []byte, key, clientID uint64) []byte {
	dst = appendHeader(dst, kindUnregister, key)
	return binary.LittleEndian.AppendUint64(dst, clientID)
}

// ProposalKey returns the proposal key of e: the key of EntryNormal and
// EntrySession data, and of an EntryConfigChange whose ConfChange.Context is
// EncodeProposal(nil, key, nil) (that is how the engine tags a membership
// proposal). NoOp entries and undecodable data carry no key.
func ProposalKey(e raftpb.Entry) (key uint64, ok bool) {
	switch e.Type {
	case raftpb.EntryNormal, raftpb.EntrySession:
		p, err := decodeEntry(e)
		if err != nil {
			return 0, false
		}
		return p.key, true
	case raftpb.EntryConfigChange:
		return confChangeKey(e.Data)
	}
	return 0, false
}

// confChangeKey decodes the key from a config-change entry's ConfChange.
func confChangeKey(data []byte) (uint64, bool) {
	var cc raftpb.ConfChange
	if cc.Unmarshal(data) != nil {
		return 0, false
	}
	p, err := decodeData(cc.Context)
	if err != nil || p.kind != kindProposal || len(p.cmd) != 0 {
		return 0, false
	}
	return p.key, true
}

// proposal is a decoded entry. cmd aliases the entry's Data.
type proposal struct {
	kind    kind
	key     uint64
	session Session // kindSessionProposal; ClientID also for register/unregister
	cmd     []byte
}

// decodeEntry decodes e.Data and checks that its kind belongs to e.Type. It
// allocates nothing (the error path aside).
func decodeEntry(e raftpb.Entry) (proposal, error) {
	p, err := decodeData(e.Data)
	if err != nil {
		return p, fmt.Errorf("entry %d (%v): %w", e.Index, e.Type, err)
	}
	want := e.Type == raftpb.EntryNormal
	if got := p.kind == kindProposal || p.kind == kindSessionProposal; got != want {
		return proposal{}, fmt.Errorf("entry %d (%v) holds data of kind %d: %w", e.Index, e.Type, p.kind, ErrCorruptEntry)
	}
	return p, nil
}

// decodeData decodes proposal data regardless of the entry type.
func decodeData(b []byte) (proposal, error) {
	var p proposal
	if len(b) < headerSize {
		return p, fmt.Errorf("%d bytes, shorter than the %d-byte header: %w", len(b), headerSize, ErrCorruptEntry)
	}
	if b[0] != entryVersion {
		return p, fmt.Errorf("unknown entry version %d: %w", b[0], ErrCorruptEntry)
	}
	p.kind = kind(b[1])
	p.key = binary.LittleEndian.Uint64(b[2:])
	switch p.kind {
	case kindProposal:
		p.cmd = b[headerSize:]
	case kindSessionProposal:
		if len(b) < sessionSize {
			return proposal{}, fmt.Errorf("session proposal of %d bytes: %w", len(b), ErrCorruptEntry)
		}
		p.session.ClientID = binary.LittleEndian.Uint64(b[headerSize:])
		p.session.SeriesID = binary.LittleEndian.Uint64(b[headerSize+8:])
		p.session.RespondedTo = binary.LittleEndian.Uint64(b[headerSize+16:])
		p.cmd = b[sessionSize:]
	case kindRegister, kindUnregister:
		if len(b) != clientSize {
			return proposal{}, fmt.Errorf("session operation of %d bytes, want %d: %w", len(b), clientSize, ErrCorruptEntry)
		}
		p.session.ClientID = binary.LittleEndian.Uint64(b[headerSize:])
	default:
		return proposal{}, fmt.Errorf("unknown proposal kind %d: %w", b[1], ErrCorruptEntry)
	}
	return p, nil
}
