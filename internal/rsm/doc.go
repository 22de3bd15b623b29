// Package rsm is the apply stage of a replica: it applies committed entries
// to the user's state machine, keeps the client sessions that make retried
// proposals apply exactly once, tracks the applied index, term and
// membership, and captures and restores snapshots of all of that.
//
// Stage ⑤ of the pipeline (DESIGN.md §1): the engine hands it committed
// entries in a Batch and gets back, per entry that carried a proposal key,
// an Applied to complete the waiting proposal. Snapshots go the other way
// through Capture (on the apply goroutine) and Capture.Save (on a snapshot
// goroutine, concurrently with Apply), and back in through Restore.
//
// Imports: raftpb and statemachine only (imports_test.go). Never
// internal/raft, logdb, snapshot or engine: the engine moves data between
// them and this package.
//
// # Entry data
//
// The engine encodes every proposal with EncodeProposal,
// EncodeSessionProposal, EncodeRegister or EncodeUnregister. Integers are
// fixed-width little-endian (u64 = 8 bytes). The version byte comes first so
// the layout can evolve; a decoder rejects versions it does not know.
//
//	EntryNormal, no session (EncodeProposal):
//	+---------+----------+---------+-------------------+
//	| ver=1   | kind=1   | key u64 | cmd ...           |
//	+---------+----------+---------+-------------------+
//	EntryNormal with a client session (EncodeSessionProposal):
//	+-------+--------+---------+--------------+--------------+-----------------+--------+
//	| ver=1 | kind=2 | key u64 | clientID u64 | seriesID u64 | respondedTo u64 | cmd... |
//	+-------+--------+---------+--------------+--------------+-----------------+--------+
//	EntrySession, register (kind=3) or unregister (kind=4), exactly 18 bytes:
//	+-------+----------+---------+--------------+
//	| ver=1 | kind=3/4 | key u64 | clientID u64 |
//	+-------+----------+---------+--------------+
//
// cmd is passed to the state machine as a sub-slice of the entry's Data
// (no copy, no allocation). EntryNoOp data is ignored. EntryConfigChange
// data is a raftpb.ConfChange; the engine may set its Context to
// EncodeProposal(nil, key, nil) to get an Applied for it.
//
// A committed entry whose data does not decode, or whose kind does not
// belong to its entry type, cannot come from a skiff engine: it is a bug or
// a corrupt log. Apply returns a wrapped ErrCorruptEntry, which is fatal for
// the replica. It does not skip the entry, because a replica that skipped
// it would differ from those that applied it; it does not panic either.
//
// # Sessions
//
// dragonboat's model. A client registers (an EntrySession entry), then
// proposes with increasing SeriesIDs starting at 1; a retry reuses the
// SeriesID. For each proposal the session first forgets results at or below
// RespondedTo; then a SeriesID at or below RespondedTo is answered
// ErrSessionExpired, one already applied is answered from the cached
// result, and a new one is applied and its result cached. An unknown client
// gets ErrSessionNotFound. At most MaxSessions sessions are kept: a new
// registration evicts the one whose last entry has the lowest index, so
// every replica evicts the same one (no clocks). Sessions are saved in every
// snapshot, so a replica restored from a snapshot deduplicates exactly like
// one that applied the whole log.
//
// # Snapshot stream
//
// Capture.Save writes the rsm header, then the state machine's own stream:
//
//	+--------+-------+-------+-------------+-----------------------+------------+
//	| "SKRS" | ver=1 | flags | body len u32| body                  | crc32c u32 |
//	+--------+-------+-------+-------------+-----------------------+------------+
//	flags: 1 = full (state machine data follows), 2 = OnDisk state machine
//	body:  index, term, state machine index (the last entry the state
//	       machine's own data holds, <= index), state machine type and
//	       version (uvarints), sessions:
//	       count, then per session oldest-used first: clientID, respondedTo,
//	       lastUsed, n, then n × (series, lost byte, value, len, data),
//	       series increasing (all uvarints but "lost").
//	crc32c (Castagnoli) covers every header byte before it. Integers in the
//	prefix are little-endian.
//
// Restore reads exactly the header, checks it (ErrCorruptSnapshot,
// ErrIncompatibleSnapshot) before touching the state machine, and passes
// the rest of the stream to the state machine's Restore.
//
// # OnDisk state machines
//
// For a state machine that keeps its data durable, Open returns the index A
// it holds; the engine restores the latest local snapshot (metadata-only:
// sessions only) and hands (snapshot index, A] to ReplayOnDisk, which
// rebuilds sessions and membership without calling SM.Apply. Results of
// session proposals replayed that way are not known, so retries of them get
// ErrSessionExpired (never a second application). Capture(false) makes a
// metadata-only snapshot after SM.Sync.
//
// The state machine sees only normal entries, so A may be below a snapshot
// taken right after a NoOp, config change or session operation. The header
// therefore records the state machine's own index (the last entry given to
// SM.Apply) and a metadata-only Restore needs A at or above that, not above
// the snapshot index; see CheckStart for the index the engine should check.
// An entry handed to Apply at or below A is treated as replayed: the state
// machine never sees an entry twice.
package rsm
