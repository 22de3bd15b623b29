// Command skiffkv is a replicated key-value store on skiff: the main job a
// newcomer runs, and what the end-to-end tests, benchmarks and chaos runs
// drive. Its command line and HTTP API are the contract of DESIGN.md §7.
//
//	skiffkv demo   a 3-replica cluster of child processes on 127.0.0.1 that
//	               loads keys, loses a replica past its log, and shows it
//	               catching up by snapshot install
//	skiffkv serve  one replica: a skiff Host running group 1 with the Pebble
//	               state machine of examples/kv, behind the HTTP API
//
// Every replica serves every request: a follower forwards proposals through
// Raft and reads with ReadIndex. A write is acknowledged (204) only after it
// was committed and applied; 504 means its outcome is unknown.
//
// The data directory (--data) holds the host's log (logdb/), snapshots
// (snapshots/), the Pebble database (kv/) and skiffkv.json, which records
// the replica and deployment the directory belongs to so that it is never
// started as another replica.
//
// skiffkv uses only the public API (skiff, statemachine, transport) and
// examples/kv; it knows nothing of skiff's internals.
package main
