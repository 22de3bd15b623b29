package quorum

import (
	"fmt"
	"math"
	"slices"
	"strings"

	"github.com/skiffdb/skiff/raftpb"
)

// VoteResult is the outcome of counting votes.
type VoteResult uint8

const (
	// VotePending: neither a quorum of grants nor of rejections yet.
	VotePending VoteResult = iota + 1
	// VoteLost: a quorum rejected, or can no longer grant.
	VoteLost
	// VoteWon: a quorum granted.
	VoteWon
)

func (v VoteResult) String() string {
	switch v {
	case VotePending:
		return "VotePending"
	case VoteLost:
		return "VoteLost"
	case VoteWon:
		return "VoteWon"
	}
	return fmt.Sprintf("VoteResult(%d)", uint8(v))
}

// AckedIndexer returns the highest index a voter is known to hold, and
// whether the voter is known at all.
type AckedIndexer func(id raftpb.ReplicaID) (idx uint64, ok bool)

// MajorityConfig is a set of voters, sorted by ID without duplicates.
type MajorityConfig []raftpb.ReplicaID

// NewMajorityConfig returns the sorted, deduplicated config of ids.
func NewMajorityConfig(ids ...raftpb.ReplicaID) MajorityConfig {
	c := slices.Clone(ids)
	slices.Sort(c)
	return slices.Compact(c)
}

// Contains reports whether id is a voter of c.
func (c MajorityConfig) Contains(id raftpb.ReplicaID) bool {
	_, ok := slices.BinarySearch(c, id)
	return ok
}

func (c MajorityConfig) String() string {
	var sb strings.Builder
	sb.WriteByte('(')
	for i, id := range c {
		if i > 0 {
			sb.WriteByte(' ')
		}
		fmt.Fprint(&sb, uint64(id))
	}
	sb.WriteByte(')')
	return sb.String()
}

// CommittedIndex returns the largest index acknowledged by a majority of c.
// An empty config returns math.MaxUint64 so that, inside a joint config, the
// other half alone decides (an empty half imposes no constraint).
func (c MajorityConfig) CommittedIndex(l AckedIndexer) uint64 {
	n := len(c)
	if n == 0 {
		return math.MaxUint64
	}
	// Collect acknowledged indexes on the stack for the common sizes.
	var stk [7]uint64
	var acked []uint64
	if n <= len(stk) {
		acked = stk[:n]
	} else {
		acked = make([]uint64, n)
	}
	for i, id := range c {
		idx, _ := l(id) // unknown voters count as index 0
		acked[i] = idx
	}
	// Insertion sort: n is small and this allocates nothing.
	for i := 1; i < n; i++ {
		for j := i; j > 0 && acked[j-1] > acked[j]; j-- {
			acked[j-1], acked[j] = acked[j], acked[j-1]
		}
	}
	// With acked ascending, the entry at n - (n/2 + 1) is held by at least
	// a majority (n/2 + 1 voters hold an index >= it).
	return acked[n-(n/2+1)]
}

// VoteResult counts votes (true = granted) among c. Voters without an
// entry in votes have not answered yet. An empty config wins, so that in a
// joint config the other half alone decides.
func (c MajorityConfig) VoteResult(votes func(raftpb.ReplicaID) (granted, ok bool)) VoteResult {
	if len(c) == 0 {
		return VoteWon
	}
	var yes, missing int
	for _, id := range c {
		g, ok := votes(id)
		switch {
		case !ok:
			missing++
		case g:
			yes++
		}
	}
	q := len(c)/2 + 1
	if yes >= q {
		return VoteWon
	}
	if yes+missing >= q {
		return VotePending
	}
	return VoteLost
}

// JointConfig is an incoming ([0]) and an outgoing ([1]) majority config.
// Outside a joint configuration the outgoing half is empty.
type JointConfig [2]MajorityConfig

// IsJoint reports whether the outgoing half is non-empty.
func (c JointConfig) IsJoint() bool { return len(c[1]) > 0 }

// Contains reports whether id votes in either half.
func (c JointConfig) Contains(id raftpb.ReplicaID) bool {
	return c[0].Contains(id) || c[1].Contains(id)
}

// IDs returns the sorted union of both halves.
func (c JointConfig) IDs() []raftpb.ReplicaID {
	ids := append(slices.Clone(c[0]), c[1]...)
	slices.Sort(ids)
	return slices.Compact(ids)
}

func (c JointConfig) String() string {
	if c.IsJoint() {
		return c[0].String() + "&&" + c[1].String()
	}
	return c[0].String()
}

// CommittedIndex returns the largest index both halves have committed.
func (c JointConfig) CommittedIndex(l AckedIndexer) uint64 {
	return min(c[0].CommittedIndex(l), c[1].CommittedIndex(l))
}

// VoteResult combines both halves: won only if both won, lost if either lost.
func (c JointConfig) VoteResult(votes func(raftpb.ReplicaID) (granted, ok bool)) VoteResult {
	r0, r1 := c[0].VoteResult(votes), c[1].VoteResult(votes)
	if r0 == r1 {
		return r0
	}
	if r0 == VoteLost || r1 == VoteLost {
		return VoteLost
	}
	return VotePending
}
