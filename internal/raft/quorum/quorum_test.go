package quorum

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/cockroachdb/datadriven"
	"github.com/skiffdb/skiff/raftpb"
)

// TestDataDriven runs testdata/*.txt:
//
//	committed voters=(1,2,3) [outgoing=(4,5)]
//	1 5       <- replica 1 has acknowledged index 5 (absent: unknown)
//	----
//	5
//
//	vote voters=(1,2,3) [outgoing=(...)]
//	1 y       <- granted (n: rejected; absent: no answer yet)
//	----
//	VotePending
func TestDataDriven(t *testing.T) {
	datadriven.Walk(t, "testdata", func(t *testing.T, path string) {
		datadriven.RunTest(t, path, func(t *testing.T, d *datadriven.TestData) string {
			var c JointConfig
			for _, arg := range d.CmdArgs {
				var ids []raftpb.ReplicaID
				for _, v := range arg.Vals {
					if strings.TrimSpace(v) == "" {
						continue
					}
					id, err := strconv.ParseUint(strings.TrimSpace(v), 10, 64)
					if err != nil {
						d.Fatalf(t, "bad id %q", v)
					}
					ids = append(ids, raftpb.ReplicaID(id))
				}
				switch arg.Key {
				case "voters":
					c[0] = NewMajorityConfig(ids...)
				case "outgoing":
					c[1] = NewMajorityConfig(ids...)
				default:
					d.Fatalf(t, "unknown argument %s", arg.Key)
				}
			}
			input := map[raftpb.ReplicaID]string{}
			for _, line := range strings.Split(d.Input, "\n") {
				f := strings.Fields(line)
				if len(f) == 0 {
					continue
				}
				if len(f) != 2 {
					d.Fatalf(t, "bad input line %q", line)
				}
				id, err := strconv.ParseUint(f[0], 10, 64)
				if err != nil {
					d.Fatalf(t, "bad id in %q", line)
				}
				input[raftpb.ReplicaID(id)] = f[1]
			}
			switch d.Cmd {
			case "committed":
				idx := c.CommittedIndex(func(id raftpb.ReplicaID) (uint64, bool) {
					s, ok := input[id]
					if !ok {
						return 0, false
					}
					v, err := strconv.ParseUint(s, 10, 64)
					if err != nil {
						d.Fatalf(t, "bad index %q", s)
					}
					return v, true
				})
				if idx == math.MaxUint64 {
					return "∞"
				}
				return fmt.Sprint(idx)
			case "vote":
				return c.VoteResult(func(id raftpb.ReplicaID) (bool, bool) {
					s, ok := input[id]
					return s == "y", ok
				}).String()
			}
			d.Fatalf(t, "unknown command %s", d.Cmd)
			return ""
		})
	})
}

// bruteCommitted is the definition: the largest index that more than half
// of c has acknowledged (∞ for an empty config).
func bruteCommitted(c MajorityConfig, acked map[raftpb.ReplicaID]uint64) uint64 {
	if len(c) == 0 {
		return math.MaxUint64
	}
	var best uint64
	for _, cand := range acked {
		n := 0
		for _, id := range c {
			if acked[id] >= cand {
				n++
			}
		}
		if n > len(c)/2 {
			best = max(best, cand)
		}
	}
	return best
}

func randConfig(rng *rand.Rand, n int) MajorityConfig {
	var ids []raftpb.ReplicaID
	for range n {
		ids = append(ids, raftpb.ReplicaID(1+rng.IntN(12)))
	}
	return NewMajorityConfig(ids...)
}

// TestCommittedIndexMatchesDefinition compares CommittedIndex with the
// brute-force definition over random configs (simple and joint) and acks.
func TestCommittedIndexMatchesDefinition(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range 5000 {
		c := JointConfig{randConfig(rng, rng.IntN(10)), randConfig(rng, rng.IntN(4))}
		acked := map[raftpb.ReplicaID]uint64{}
		for id := raftpb.ReplicaID(1); id <= 12; id++ {
			if rng.IntN(4) > 0 {
				acked[id] = uint64(rng.IntN(20))
			}
		}
		l := func(id raftpb.ReplicaID) (uint64, bool) { v, ok := acked[id]; return v, ok }
		want := min(bruteCommitted(c[0], acked), bruteCommitted(c[1], acked))
		if got := c.CommittedIndex(l); got != want {
			t.Fatalf("case %d: %s with acks %v: CommittedIndex = %d, want %d", i, c, acked, got, want)
		}
	}
}

// TestVoteResultMatchesDefinition checks VoteResult against the
// definition: won if a majority granted, lost if a majority can no longer
// grant, pending otherwise; a joint config needs both halves.
func TestVoteResultMatchesDefinition(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	brute := func(c MajorityConfig, votes map[raftpb.ReplicaID]bool) VoteResult {
		if len(c) == 0 {
			return VoteWon
		}
		yes, no := 0, 0
		for _, id := range c {
			if g, ok := votes[id]; ok {
				if g {
					yes++
				} else {
					no++
				}
			}
		}
		switch q := len(c)/2 + 1; {
		case yes >= q:
			return VoteWon
		case len(c)-no < q:
			return VoteLost
		}
		return VotePending
	}
	for i := range 5000 {
		c := JointConfig{randConfig(rng, rng.IntN(8)), randConfig(rng, rng.IntN(4))}
		votes := map[raftpb.ReplicaID]bool{}
		for id := raftpb.ReplicaID(1); id <= 12; id++ {
			if rng.IntN(3) > 0 {
				votes[id] = rng.IntN(2) == 0
			}
		}
		r0, r1 := brute(c[0], votes), brute(c[1], votes)
		want := VotePending
		switch {
		case r0 == VoteWon && r1 == VoteWon:
			want = VoteWon
		case r0 == VoteLost || r1 == VoteLost:
			want = VoteLost
		}
		got := c.VoteResult(func(id raftpb.ReplicaID) (bool, bool) { g, ok := votes[id]; return g, ok })
		if got != want {
			t.Fatalf("case %d: %s votes %v: %s, want %s", i, c, votes, got, want)
		}
	}
}

// TestCommittedIndexAllocates pins the allocation-free promise of the
// package doc for configurations of up to 7 voters.
func TestCommittedIndexAllocates(t *testing.T) {
	c := JointConfig{NewMajorityConfig(1, 2, 3, 4, 5, 6, 7), NewMajorityConfig(1, 2, 3)}
	l := func(id raftpb.ReplicaID) (uint64, bool) { return uint64(id) * 3, true }
	if n := testing.AllocsPerRun(100, func() { c.CommittedIndex(l) }); n != 0 {
		t.Errorf("CommittedIndex allocates %v times, want 0", n)
	}
	big := NewMajorityConfig(1, 2, 3, 4, 5, 6, 7, 8, 9)
	if got := big.CommittedIndex(l); got != 15 {
		t.Errorf("9 voters acked 3..27: committed %d, want 15", got)
	}
}

func TestConfigHelpers(t *testing.T) {
	c := NewMajorityConfig(3, 1, 2, 3)
	if !slices.Equal(c, MajorityConfig{1, 2, 3}) || c.String() != "(1 2 3)" {
		t.Errorf("NewMajorityConfig(3, 1, 2, 3) = %v %q", c, c.String())
	}
	if !c.Contains(2) || c.Contains(4) {
		t.Errorf("Contains is wrong for %s", c)
	}
	j := JointConfig{NewMajorityConfig(1, 2), NewMajorityConfig(2, 3)}
	if !j.IsJoint() || j.String() != "(1 2)&&(2 3)" || !j.Contains(3) || j.Contains(4) {
		t.Errorf("joint helpers wrong for %s", j)
	}
	if ids := j.IDs(); !slices.Equal(ids, []raftpb.ReplicaID{1, 2, 3}) {
		t.Errorf("IDs = %v, want [1 2 3]", ids)
	}
	if (JointConfig{c, nil}).IsJoint() {
		t.Error("a config without an outgoing half is not joint")
	}
	for v, s := range map[VoteResult]string{VotePending: "VotePending", VoteLost: "VoteLost", VoteWon: "VoteWon", 9: "VoteResult(9)"} {
		if v.String() != s {
			t.Errorf("%d.String() = %q, want %q", v, v.String(), s)
		}
	}
}

// FuzzQuorumCommitted checks CommittedIndex against the definition for any
// config and acknowledgements the fuzzer finds.
func FuzzQuorumCommitted(f *testing.F) {
	f.Add([]byte{1, 2, 3}, []byte{5, 7, 3}, []byte{4})
	f.Fuzz(func(t *testing.T, voters, acks, outgoing []byte) {
		if len(voters) > 16 || len(outgoing) > 16 {
			return
		}
		toIDs := func(b []byte) MajorityConfig {
			var ids []raftpb.ReplicaID
			for _, x := range b {
				ids = append(ids, raftpb.ReplicaID(x%16+1))
			}
			return NewMajorityConfig(ids...)
		}
		c := JointConfig{toIDs(voters), toIDs(outgoing)}
		acked := map[raftpb.ReplicaID]uint64{}
		for i, a := range acks {
			acked[raftpb.ReplicaID(i%16+1)] = uint64(a)
		}
		l := func(id raftpb.ReplicaID) (uint64, bool) { v, ok := acked[id]; return v, ok }
		want := min(bruteCommitted(c[0], acked), bruteCommitted(c[1], acked))
		if got := c.CommittedIndex(l); got != want {
			t.Fatalf("%s acks %v: %d, want %d", c, acked, got, want)
		}
	})
}
