// Package rafttest is an interaction harness for the raft core: an Env
// drives N replicas (raft.Replica over raft.MemoryLog) by hand, one step at
// a time, and prints what happens in a compact, stable form. It is what the
// datadriven scripts in internal/raft/testdata run on (Env.Handle), and it
// can be driven from Go as well (paper_test.go).
//
// The Env plays every role a host plays for a replica: it persists each
// Ready to the replica's MemoryLog, queues Ready.Messages at once and
// Ready.MessagesAfterPersist once the write is done, hands committed
// entries to a trivial state machine (it records them), and completes
// snapshot fetches (Ready.Fetch) when a script says so. The snapshot's data
// is modelled simply: the fetching replica's MemoryLog receives the
// leader's snapshot meta. Messages wait in one queue until a script
// delivers, drops or duplicates them; a partition drops messages between
// groups of replicas at delivery.
//
// Each replica reads its log through a wrapper that prints every
// LogReader.Snapshot call and its result ("1: LogReader.Snapshot(5): ..."),
// so scripts show when a leader asks for a snapshot and how often it retries.
//
// After every Ready the Env checks two safety properties and prints a line
// starting with "INVARIANT VIOLATED" if one fails: at most one leader per
// term (election safety) and no two replicas applying different entries at
// one index (state machine safety).
//
// Script vocabulary (ids are replica IDs; see Env.Handle for details):
//
//	add-nodes n [voters=(1,2,3)] [learners=(4)] [index=1] [prevote=true]
//	          [checkquorum=true] [lease=true] [election=6] [heartbeat=2]
//	          [max-inflight=n] [max-inflight-bytes=n] [max-msg-bytes=n]
//	          [snapshot-timeout=n] [forwarding=false]
//	campaign id | tick-election id | tick-heartbeat id | tick id [n=1]
//	propose id data... | propose-conf-change id v4 l5 r2 [transition=auto|implicit|explicit] [/ v6 ...]
//	process-ready id... | deliver-msgs [id...] [drop=(ids)] [from=(ids)] [type=Msg...] [n=N]
//	duplicate-msgs [id...] [from=(ids)] [type=Msg...] [n=N] | stabilize [id...]
//	status id | raft-log id | compact id index | snapshot-unavailable id n
//	install-snapshot id | install-failed id | report-unreachable id target
//	partition (1) (2 3) | heal | transfer-leadership from to
//	read-index id ctx | restart id | crash-after-send id
//
// Notes: replicas start from a snapshot at index (default 1, term 1)
// holding the membership; add-nodes without voters adds empty replicas to
// be added to the group later. tick-election advances a leader by
// ElectionTicks (one check-quorum round) and anyone else by
// 2*ElectionTicks-1 ticks (past any randomized timeout). deliver-msgs
// delivers the selected messages, or with drop=(ids) drops those to ids;
// positional ids select recipients. stabilize alternates handling Readies
// and delivering messages until nothing moves. compact snapshots the log
// at an applied index (with the membership in effect there) and discards
// the entries up to it. install-snapshot and install-failed complete the
// fetch the replica asked for in its last Ready.Fetch. restart rebuilds a
// replica from its MemoryLog; crash-after-send sends a Ready's
// pre-persist messages and then restarts without persisting anything.
//
// Imports: raftpb, internal/raft and its sub-packages, and test-only
// modules (testing, datadriven). Only tests import it.
package rafttest
