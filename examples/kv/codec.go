package kv

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"
)

// Sentinel errors. Callers test them with errors.Is; the returned errors
// wrap them with what was wrong.
var (
	// ErrBadCommand: a proposal's bytes are not a command of this package.
	// Apply does not fail on it (see ResultBadCommand); the Decode side
	// reports it.
	ErrBadCommand = errors.New("kv: malformed command")
	// ErrBadQuery: a query's bytes are not a query of this package
	// (returned by Lookup, so by Host.Read and Host.StaleRead).
	ErrBadQuery = errors.New("kv: malformed query")
	// ErrBadResponse: DecodeGet or DecodeScan was given bytes that are
	// not a response of the matching query.
	ErrBadResponse = errors.New("kv: malformed response")
	// ErrClosed: the state machine was used after Close.
	ErrClosed = errors.New("kv: state machine closed")
	// ErrCorrupt: the on-disk layout or a snapshot is not what this
	// package wrote (missing database, missing applied index, bad header).
	ErrCorrupt = errors.New("kv: corrupt data")
)

// DefaultMaxValueBytes is the largest value the HTTP layer accepts (it
// answers 413 before proposing). The state machine itself does not enforce
// a limit: Apply must be deterministic, and a limit read from each
// replica's configuration could differ between replicas.
const DefaultMaxValueBytes = 1 << 20

// Result values of an applied command (statemachine.Result.Value).
const (
	// ResultBadCommand: the command was malformed and changed nothing. It
	// is still applied (the applied index advances): a malformed entry is
	// a client's mistake, not a reason to stop the replica, and every
	// replica decides it the same way.
	ResultBadCommand = 0
	// ResultOK: the put, delete or compare-and-set took effect.
	ResultOK = 1
	// ResultMismatch: a compare-and-set found the key absent or its value
	// different from prev, and changed nothing.
	ResultMismatch = 2
)

// Command and query encodings. The first byte is the operation; it is
// also the format's version space (a new encoding gets a new byte, and
// old replicas answer ResultBadCommand / ErrBadQuery for it).
//
//	put     0x01 uvarint(len(key)) key value
//	delete  0x02 key
//	cas     0x03 uvarint(len(key)) key uvarint(len(prev)) prev value
//
//	get     0x11 key
//	scan    0x12 uvarint(limit) prefix
//
// Responses:
//
//	get     0x00 (not found) | 0x01 value
//	scan    uvarint(n) n × (uvarint(len(key)) key uvarint(len(value)) value)
const (
	opPut    = 0x01
	opDelete = 0x02
	opCAS    = 0x03

	opGet  = 0x11
	opScan = 0x12
)

// EncodePut returns the command that sets key to value.
func EncodePut(key, value []byte) []byte {
	b := make([]byte, 0, 1+binary.MaxVarintLen64+len(key)+len(value))
	b = append(b, opPut)
	b = binary.AppendUvarint(b, uint64(len(key)))
	b = append(b, key...)
	return append(b, value...)
}

// EncodeDelete returns the command that deletes key (ResultOK whether or
// not it existed).
func EncodeDelete(key []byte) []byte {
	b := make([]byte, 0, 1+len(key))
	b = append(b, opDelete)
	return append(b, key...)
}

// EncodeCAS returns the compare-and-set command: it sets key to value iff
// the key exists and its current value equals prev (ResultOK), else it
// changes nothing (ResultMismatch).
func EncodeCAS(key, prev, value []byte) []byte {
	b := make([]byte, 0, 1+2*binary.MaxVarintLen64+len(key)+len(prev)+len(value))
	b = append(b, opCAS)
	b = binary.AppendUvarint(b, uint64(len(key)))
	b = append(b, key...)
	b = binary.AppendUvarint(b, uint64(len(prev)))
	b = append(b, prev...)
	return append(b, value...)
}

// EncodeGet returns the query that reads key; DecodeGet reads its answer.
func EncodeGet(key []byte) []byte {
	b := make([]byte, 0, 1+len(key))
	b = append(b, opGet)
	return append(b, key...)
}

// EncodeScan returns the query for the keys starting with prefix, in
// byte order, at most limit of them (limit <= 0: all of them; the whole
// answer is built in memory, so callers serving clients should bound it).
// DecodeScan reads its answer.
func EncodeScan(prefix []byte, limit int) []byte {
	if limit < 0 {
		limit = 0
	}
	b := make([]byte, 0, 1+binary.MaxVarintLen64+len(prefix))
	b = append(b, opScan)
	b = binary.AppendUvarint(b, uint64(limit))
	return append(b, prefix...)
}

// Pair is one key and its value in a scan's answer.
type Pair struct{ Key, Value []byte }

// DecodeGet decodes the answer to an EncodeGet query. value aliases resp.
func DecodeGet(resp []byte) (value []byte, found bool, err error) {
	if len(resp) == 0 {
		return nil, false, fmt.Errorf("%w: empty get response", ErrBadResponse)
	}
	switch resp[0] {
	case 0:
		if len(resp) != 1 {
			return nil, false, fmt.Errorf("%w: %d trailing bytes after not-found", ErrBadResponse, len(resp)-1)
		}
		return nil, false, nil
	case 1:
		return resp[1:], true, nil
	default:
		return nil, false, fmt.Errorf("%w: get response tag %#x", ErrBadResponse, resp[0])
	}
}

// DecodeScan decodes the answer to an EncodeScan query. Keys and values
// alias resp.
func DecodeScan(resp []byte) ([]Pair, error) {
	n, rest, ok := uvarint(resp)
	if !ok {
		return nil, fmt.Errorf("%w: scan response count", ErrBadResponse)
	}
	// Every pair takes at least two bytes: bound the allocation by the
	// input, not by a count an attacker chose.
	if n > uint64(len(rest))/2 {
		return nil, fmt.Errorf("%w: scan response claims %d pairs in %d bytes", ErrBadResponse, n, len(rest))
	}
	pairs := make([]Pair, 0, n)
	for i := uint64(0); i < n; i++ {
		var k, v []byte
		if k, rest, ok = lengthPrefixed(rest); !ok {
			return nil, fmt.Errorf("%w: scan response key %d", ErrBadResponse, i)
		}
		if v, rest, ok = lengthPrefixed(rest); !ok {
			return nil, fmt.Errorf("%w: scan response value %d", ErrBadResponse, i)
		}
		pairs = append(pairs, Pair{Key: k, Value: v})
	}
	if len(rest) != 0 {
		return nil, fmt.Errorf("%w: %d trailing bytes in scan response", ErrBadResponse, len(rest))
	}
	return pairs, nil
}

// command is a decoded command; its slices alias the entry's bytes.
type command struct {
	op               byte
	key, prev, value []byte
}

// decodeCommand decodes a proposal; the error wraps ErrBadCommand.
func decodeCommand(b []byte) (command, error) {
	if len(b) == 0 {
		return command{}, fmt.Errorf("%w: empty", ErrBadCommand)
	}
	c := command{op: b[0]}
	rest := b[1:]
	var ok bool
	switch c.op {
	case opPut:
		if c.key, rest, ok = lengthPrefixed(rest); !ok {
			return command{}, fmt.Errorf("%w: put key", ErrBadCommand)
		}
		c.value = rest
	case opDelete:
		c.key = rest
	case opCAS:
		if c.key, rest, ok = lengthPrefixed(rest); !ok {
			return command{}, fmt.Errorf("%w: cas key", ErrBadCommand)
		}
		if c.prev, rest, ok = lengthPrefixed(rest); !ok {
			return command{}, fmt.Errorf("%w: cas previous value", ErrBadCommand)
		}
		c.value = rest
	default:
		return command{}, fmt.Errorf("%w: operation %#x", ErrBadCommand, c.op)
	}
	return c, nil
}

// query is a decoded query; its slices alias the query's bytes.
type query struct {
	op    byte
	key   []byte // get: the key; scan: the prefix
	limit uint64 // scan: 0 for no limit
}

// decodeQuery decodes a query; the error wraps ErrBadQuery.
func decodeQuery(b []byte) (query, error) {
	if len(b) == 0 {
		return query{}, fmt.Errorf("%w: empty", ErrBadQuery)
	}
	q := query{op: b[0]}
	switch q.op {
	case opGet:
		q.key = b[1:]
	case opScan:
		var ok bool
		if q.limit, q.key, ok = uvarint(b[1:]); !ok {
			return query{}, fmt.Errorf("%w: scan limit", ErrBadQuery)
		}
	default:
		return query{}, fmt.Errorf("%w: operation %#x", ErrBadQuery, q.op)
	}
	return q, nil
}

// uvarint splits a uvarint off b. It accepts only the shortest encoding
// (binary.Uvarint also takes padded ones like 0x80 0x00), so that every
// command has exactly one encoding.
func uvarint(b []byte) (uint64, []byte, bool) {
	v, n := binary.Uvarint(b)
	if n <= 0 || n != (bits.Len64(v|1)+6)/7 {
		return 0, nil, false
	}
	return v, b[n:], true
}

// lengthPrefixed splits a uvarint-length-prefixed field off b.
func lengthPrefixed(b []byte) (field, rest []byte, ok bool) {
	n, rest, ok := uvarint(b)
	if !ok || n > uint64(len(rest)) {
		return nil, nil, false
	}
	return rest[:n], rest[n:], true
}
