// Command skiffbench measures a skiff host on the workloads of DESIGN.md
// §9 and reports each figure beside its target and its ratio to it, so
// our numbers sit next to the peers' (hashicorp/raft, dragonboat) measured
// on the same kind of machine.
//
// Every workload runs three hosts in this process over loopback TCP
// (127.0.0.1:0), each with its own directory on the real disk and fsync
// on, with a no-op in-memory state machine:
//
//   - throughput: 1 and 16 groups, 16 B and 1 KiB commands, 64 and 256
//     proposers each waiting for its result, and 64 proposers keeping 16
//     proposals in flight each;
//   - commit latency with one proposer (p50, p99, p99.9);
//   - catch-up of a new replica by snapshot for 256 MiB and 1 GiB of state,
//     split into generate / transfer / load from the host's events, and
//     the new replica's peak RSS. The new replica runs in a child process
//     of this binary (the hidden "catchup-replica" subcommand) so that its
//     RSS is its own; the state machine's snapshot streams deterministic
//     pseudo-random bytes and its Restore checks them, holding nothing;
//   - CPU and RSS of 10,000 idle (quiesced) groups, at the default 100 ms
//     tick;
//   - the disk itself, measured in the same run as DESIGN.md §9 asks: fsync
//     latency by one writer and by three at once (the three hosts), and the
//     durable sequential write rate (the ceiling of snapshot generate and
//     receive).
//
// Throughput runs also report, from the hosts' Prometheus registries, the
// log saves per second, entries per save and mean save time in their
// window: whether a figure is bound by fsyncs or by how many entries share
// one.
//
// Usage:
//
//	go run ./cmd/skiffbench [--workload all|name,...] [--duration 5s]
//	    [--repeat 3] [--json] [--dir DIR] [--cpuprofile PREFIX]
//
// --list prints the workload names. Each figure is the median over
// --repeat runs, each on a fresh cluster. --cpuprofile writes one profile
// per run covering only its measured window (and, for catch-up, one of the
// child process), so that setup and elections stay out of it.
//
// Layering: skiffbench uses only the public API — the root package,
// statemachine and transport (imports_test.go); never internal/.
package main
