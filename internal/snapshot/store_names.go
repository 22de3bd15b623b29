package snapshot

import (
	"fmt"
	"strconv"
	"strings"
)

// Directory names are a visible state machine (DESIGN §3):
//
//	snapshot-<20-digit index>                published, immutable
//	snapshot-<20-digit index>-<n>.generating being saved by this host
//	snapshot-<20-digit index>-<n>.receiving  being received from a leader
//	snapshot-<20-digit index>-<n>.deleting   being removed by GC
//	snapshot-<20-digit index>-<n>.corrupt    failed verification at Open;
//	                                         kept for the operator, never read
//
// n is a per-store sequence number so that two attempts at the same index
// never share a directory.

type dirKind uint8

const (
	kindPublished dirKind = iota
	kindGenerating
	kindReceiving
	kindDeleting
	kindCorrupt
)

var kindSuffix = [...]string{"", ".generating", ".receiving", ".deleting", ".corrupt"}

const dirPrefix = "snapshot-"

func publishedName(index uint64) string { return fmt.Sprintf("%s%020d", dirPrefix, index) }

func tempName(index, seq uint64, k dirKind) string {
	return fmt.Sprintf("%s%020d-%d%s", dirPrefix, index, seq, kindSuffix[k])
}

// parseDirName parses a name made by publishedName or tempName; ok is false
// for anything else, which the store leaves alone.
func parseDirName(name string) (index, seq uint64, k dirKind, ok bool) {
	rest, found := strings.CutPrefix(name, dirPrefix)
	if !found || len(rest) < 20 {
		return 0, 0, 0, false
	}
	index, err := strconv.ParseUint(rest[:20], 10, 64)
	if err != nil {
		return 0, 0, 0, false
	}
	rest = rest[20:]
	if rest == "" {
		return index, 0, kindPublished, true
	}
	if rest[0] != '-' {
		return 0, 0, 0, false
	}
	for k := kindGenerating; int(k) < len(kindSuffix); k++ {
		if num, found := strings.CutSuffix(rest[1:], kindSuffix[k]); found {
			seq, err := strconv.ParseUint(num, 10, 64)
			if err != nil || tempName(index, seq, k) != name {
				return 0, 0, 0, false
			}
			return index, seq, k, true
		}
	}
	return 0, 0, 0, false
}
