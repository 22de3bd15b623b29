// Command skiffctl is skiff's operator tool: it reads a host's snapshots
// and log offline, asks a running skiffkv for an exported snapshot, and
// rebuilds a replica from an export after a group lost its quorum.
//
//	skiffctl snapshot inspect [--json] DIR
//	skiffctl snapshot export --http HOST:PORT --dir DIR [--timeout D] [--json]
//	skiffctl import --exported DIR --data DIR --id ID --members ID=HOST:PORT,... [--group G]
//	skiffctl log dump --data DIR [--group G] [--from I] [--to I] [--json]
//	skiffctl version
//
// Exit codes: 0 success; 1 the command failed or found a problem (a CRC
// mismatch, a corrupt meta, a refused import); 2 a usage error, reported as
// one line and the command's usage on stderr. Every command takes --help.
//
// What it owns: the command line and its output (text and --json); the
// read-only verification of a snapshot directory against its meta
// (inspect.go: every file's size and CRC32C, missing and unexpected
// entries, hostile names, the directory's name); a read-only view of a
// stopped host's log (rofs.go: an overlay file system under logdb.Open that
// reads the disk and keeps in memory everything opening the log would
// write); the host directory's layout as seen from --data (paths.go, the
// only place that knows it).
//
// What it leaves to the library: decoding the meta (internal/snapshot's
// DecodeMeta, which also refuses hostile names), reading the log
// (internal/logdb, raft-rs Storage contract), the import itself
// (skiff.ImportSnapshot, which verifies the export again as it copies it).
// Two formats of internal/rsm are recognised by their fixed prefixes only,
// for display: the stream header at the start of a snapshot's data (its
// size and the "full" flag) and the proposal header of a log entry (its
// key and session, so that a preview shows the command).
//
// Safety: inspect and log dump never write; log dump and import refuse a
// data directory whose log is locked by a running host (the log's LOCK
// file, which log dump also holds while it reads, so that a host cannot
// start under it).
//
// Imports (imports_test.go, DESIGN §1 layer 4): skiff, statemachine,
// transport, raftpb, and of internal/ only snapshot and logdb. Never
// engine, rsm, raft or wal.
package main
