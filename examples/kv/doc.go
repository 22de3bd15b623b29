// Package kv is skiffkv's replicated key-value state machine: a
// statemachine.OnDisk backed by Pebble, with its command, query and
// snapshot encodings. cmd/skiffkv serves it over HTTP; tests and
// benchmarks drive it through skiff.Host.
//
// # What it owns
//
//   - The state machine (New): puts, deletes and compare-and-set
//     (EncodePut, EncodeDelete, EncodeCAS), gets and prefix scans
//     (EncodeGet, EncodeScan, DecodeGet, DecodeScan), and the byte
//     layout of all of them (codec.go).
//   - Its disk layout under Options.GroupDir (dir.go): a CURRENT pointer
//     to the live Pebble database, so that Restore swaps a whole new
//     database in crash-safely.
//   - Its snapshot format (snapshot.go): a Pebble checkpoint handed to
//     the host as files (tables hard-linked, zero copy) plus a header
//     stream with the applied index.
//
// # Durability
//
// Apply writes all entries of a call and the applied index in one Pebble
// batch committed without fsync. The Raft log is the durable record: after
// a crash Open returns the last applied index Pebble recovered, and the
// host replays the log above it. Sync syncs Pebble's WAL; the host calls it
// before it compacts the log below the applied index.
//
// # Errors
//
// No input makes it panic. A malformed command is applied as a no-op with
// Result.Value ResultBadCommand, deterministically on every replica; a
// malformed query fails with ErrBadQuery. Storage errors are returned
// wrapped (the host stops the replica on an Apply or Restore error).
//
// # What it must not know
//
// It implements the public statemachine interfaces and nothing more: it
// imports only the module's user-facing packages (skiff, statemachine,
// transport) and never internal/ (imports_test.go enforces it). The HTTP
// API, value limits (DefaultMaxValueBytes is enforced by the server, since
// Apply must not depend on a replica's configuration), membership and
// snapshot transfer belong to cmd/skiffkv and the host.
package kv
