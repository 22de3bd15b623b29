// Package confchange applies membership changes: single-server changes
// (Raft thesis §4.1), joint consensus (§4.3, enter and leave), non-voting
// members and their promotion, and removals.
//
// The raft core owns a raftpb.Membership as the single source of truth and
// asks this package for the next one when a config-change entry is applied;
// the tracker's voting Config is derived from it with TrackerConfig. Because
// a Membership is a pure function of the previous one and the entry, the
// membership in effect is always derivable from the last snapshot's
// membership plus the config-change entries after it.
//
// Invariants of every Membership returned:
//   - Voters is non-empty; Voters, VotersOutgoing and NonVoters are sorted
//     by ID; NonVoters is disjoint from Voters and VotersOutgoing.
//   - A removed replica ID is never added again.
//   - A non-joint change alters at most one voter.
//
// Imports: raftpb, internal/raft/quorum, internal/raft/tracker.
package confchange
