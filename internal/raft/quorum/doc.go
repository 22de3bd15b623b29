// Package quorum computes what a set of voters has decided: the commit index
// a majority has acknowledged and the outcome of an election.
//
// It is a leaf of the raft core (internal/raft → tracker → quorum). A
// MajorityConfig is a plain set of voter IDs; a JointConfig is two of them
// (Raft thesis §4.3), and every decision of a joint configuration needs both
// halves to agree.
//
// Invariant: functions here are pure and allocation-free for configurations
// of up to 7 voters; they never see addresses, terms or messages.
//
// Imports: raftpb only.
package quorum
