package raftpb

import (
	"bytes"
	"errors"
	"fmt"
	"reflect"
	"runtime"
	"strings"
	"testing"
	"unsafe"
)

// # The allocation bound
//
// A decoder allocates in three ways:
//
//  1. A repeated field of n elements allocates n × sizeof(element) at once,
//     before the elements are read, but only after checking
//     n ≤ remaining / min<Element>Size. So such a slice costs at most
//     ratio = sizeof(element) / min<Element>Size bytes per remaining input byte.
//     On 64-bit: Entry 48/4 = 12, Member 24/2 = 12, ConfChangeSingle 32/3 ≈ 10.7,
//     SnapshotFile 32/6 ≈ 5.3, Removed ReplicaID 8/1 = 8, Message 136/13 ≈ 10.5.
//     The runtime rounds each allocation up to a size class (at worst
//     4097 → 4864 bytes, ×1.19) or, above 32 KiB, to whole 8 KiB pages (at
//     worst 32769 → 40960, ×1.25); we multiply the claims by 1.25.
//  2. Strings are copied: a string of L bytes costs its own L input bytes plus
//     a length prefix and allocates L rounded up to a size class. The worst
//     rounding of small noscan objects is a 9-byte string alone in a 16-byte
//     tiny block (16 bytes for 10 input bytes, ×1.6); longer strings are
//     rounded like the slices above (≤ ×1.25). We allow 2 bytes per input byte.
//  3. Fixed costs: a *SnapshotMeta for a message's snapshot (192 bytes,
//     allocated before its fields are checked), the Decoder escaping into
//     the closure of unmarshal, and on failure the error value and its
//     formatted message (about 350 bytes measured).
//
// Byte slices (Entry.Data, Message.Context, ConfChange.Context) alias the
// input and cost nothing.
//
// Claims nest: a MessageBatch claims ratio(Message) × remaining for its
// messages, then inside one message a repeated field may claim up to
// ratio(inner) × what remains, and a string inside that element may then
// use those same bytes. Siblings do not add up: a claim whose elements
// decode consumed its bytes, so the next claim only sees what is left. The
// deepest chain is batch.messages → message.snapshot → membership.voters →
// member.addr (or batch.messages → message.entries), so
//
//	allocated ≤ (1.25 × (ratio(Message) + max ratio(inner)) + 2) × len(input) + C
//	          ≈ (1.25 × (10.5 + 12) + 2) × len + C ≈ 30 × len + C   for a MessageBatch
//	allocated ≤ (1.25 × max ratio(inner) + 2) × len(input) + C ≈ 17 × len + C   otherwise
//
// with C = sizeof(SnapshotMeta) + 1 KiB for the decoder state and the error.
// TestAllocBoundAdversarial builds that deepest chain and checks that the
// measured allocation comes close to the bound, so the bound is neither
// vacuous nor loose by more than a small factor.
var (
	innerRatio = max(
		ratio(unsafe.Sizeof(Entry{}), minEntrySize),
		ratio(unsafe.Sizeof(Member{}), minMemberSize),
		ratio(unsafe.Sizeof(ConfChangeSingle{}), minChangeSize),
		ratio(unsafe.Sizeof(SnapshotFile{}), minFileSize),
		ratio(unsafe.Sizeof(ReplicaID(0)), 1),
	)
	sizeClassSlack = 1.25
	stringRatio    = 2.0
	kValue         = sizeClassSlack*innerRatio + stringRatio
	kBatch         = sizeClassSlack*(ratio(unsafe.Sizeof(Message{}), minMessageSize)+innerRatio) + stringRatio
	allocConst     = uint64(unsafe.Sizeof(SnapshotMeta{})) + 1024
)

func ratio(size uintptr, minEncoded int) float64 { return float64(size) / float64(minEncoded) }

func allocBound(k float64, n int) uint64 { return uint64(k*float64(n)) + allocConst }

// heapBytes returns the bytes the heap allocated while f ran. ReadMemStats
// flushes every P's cache, so the count is exact; other goroutines can only
// add to it, which is why checkAllocs retries before failing.
func heapBytes(f func()) uint64 {
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	f()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

// checkAllocs fails t if decode allocates more than k × len(input) + C on
// three tries in a row.
func checkAllocs(t testing.TB, what string, input []byte, k float64, decode func()) {
	t.Helper()
	bound := allocBound(k, len(input))
	var got uint64
	for range 3 {
		if got = heapBytes(decode); got <= bound {
			return
		}
	}
	t.Fatalf("%s: decoding %d bytes allocated %d bytes, bound %.1f × %d + %d = %d",
		what, len(input), got, k, len(input), allocConst, bound)
}

// fuzzDecode checks the three codec properties on arbitrary bytes:
// decoding never panics and fails only with ErrCorrupt or
// ErrUnknownVersion; whatever decodes re-encodes canonically (never longer
// than the input) to bytes that decode to the same value; and decoding
// allocates within the bound above.
func fuzzDecode[T any, P codec[T]](f *testing.F, k float64, seeds ...[]byte) {
	for _, s := range seeds {
		// NB: the fuzzer minimizes every new interesting input, and that
		// takes minutes for inputs derived from a 64 KiB seed; big inputs
		// are covered by the unit tests instead.
		if len(s) <= maxSeedSize {
			f.Add(s)
		}
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var v T
		var err error
		checkAllocs(t, fmt.Sprintf("%T", v), b, k, func() {
			v = *new(T)
			err = P(&v).Unmarshal(b)
		})
		if err != nil {
			if !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrUnknownVersion) {
				t.Fatalf("Unmarshal(%x): error %v is neither ErrCorrupt nor ErrUnknownVersion", b, err)
			}
			return
		}
		b2 := P(&v).Marshal()
		if len(b2) > len(b) {
			t.Fatalf("re-encoding grew %d → %d bytes:\n in: %x\nout: %x", len(b), len(b2), b, b2)
		}
		var v2 T
		if err := P(&v2).Unmarshal(b2); err != nil {
			t.Fatalf("re-encoding %x of %x does not decode: %v", b2, b, err)
		}
		if !reflect.DeepEqual(v, v2) {
			t.Fatalf("re-encoding changed the value:\nfirst:  %+v\nsecond: %+v", v, v2)
		}
		if b3 := P(&v2).Marshal(); !bytes.Equal(b3, b2) {
			t.Fatalf("encoding is not canonical: %x then %x", b2, b3)
		}
	})
}

const maxSeedSize = 512

func encodings[T any, P codec[T]](values map[string]T) [][]byte {
	var out [][]byte
	for _, n := range sortedKeys(values) {
		v := values[n]
		out = append(out, P(&v).Marshal())
	}
	return out
}

func FuzzDecodeMessageBatch(f *testing.F) {
	seeds := encodings(sampleBatches())
	for _, m := range encodings(sampleMessages()) {
		// A batch of one message: version, deployment, address, count.
		seeds = append(seeds, append([]byte{CodecVersion, 0, 0, 1}, m[1:]...))
	}
	seeds = append(seeds, adversarialBatch(256), adversarialEntriesBatch(256))
	fuzzDecode[MessageBatch](f, kBatch, seeds...)
}

func FuzzDecodeMessage(f *testing.F) {
	fuzzDecode[Message](f, kValue, encodings(sampleMessages())...)
}

func FuzzDecodeSnapshotMeta(f *testing.F) {
	fuzzDecode[SnapshotMeta](f, kValue, encodings(sampleSnapshotMetas())...)
}

func FuzzDecodeEntry(f *testing.F) {
	fuzzDecode[Entry](f, kValue, encodings(sampleEntries())...)
}

func FuzzDecodeConfChange(f *testing.F) {
	fuzzDecode[ConfChange](f, kValue, encodings(sampleConfChanges())...)
}

// adversarialBatch builds the deepest claim chain of the bound's comment
// in about n bytes: a batch claiming as many messages as the input could
// hold, whose first message carries a snapshot whose membership claims as
// many voters as the rest could hold, whose first voter's address then
// uses all of those bytes, so the second voter is truncated.
func adversarialBatch(n int) []byte {
	addr := bytes.Repeat([]byte{'a'}, n)
	member := w{}.u(0).u(uint64(len(addr))).raw(addr...)
	voters := w{}.u(uint64(len(member) / minMemberSize)).raw(member...)
	msg := w{}.msgHeader(byte(MsgInstallSnapshot)).
		u(0).c(1).     // no entries; has a snapshot
		zeros(4).u(0). // format version, group, index, term; ccIndex
		raw(voters...) // truncated after the first voter
	return version().u(0).s("").u(uint64(len(msg) / minMessageSize)).raw(msg...)
}

// adversarialEntriesBatch is the other deep chain: the first message claims
// as many entries as the input could hold, all empty, then stops.
func adversarialEntriesBatch(n int) []byte {
	// n zero bytes are n/minEntrySize valid empty entries; has_snapshot is missing.
	msg := w{}.msgHeader(byte(MsgReplicate)).u(uint64(n / minEntrySize)).zeros(n)
	return version().u(0).s("").u(uint64(len(msg) / minMessageSize)).raw(msg...)
}

// TestAllocBoundAdversarial: inputs built to allocate as much as the codec
// allows must stay within the bound, and must come near it; if they did not,
// either the measurement or the bound would be meaningless.
func TestAllocBoundAdversarial(t *testing.T) {
	for _, tc := range []struct {
		name     string
		b        []byte
		minRatio float64 // allocated bytes per input byte we expect at least
	}{
		{"snapshot voters", adversarialBatch(64 << 10), 20},
		{"entries", adversarialEntriesBatch(64 << 10), 19},
	} {
		var err error
		got := heapBytes(func() { err = new(MessageBatch).Unmarshal(tc.b) })
		if !errors.Is(err, ErrCorrupt) {
			t.Fatalf("%s: err = %v, want ErrCorrupt", tc.name, err)
		}
		perByte := float64(got) / float64(len(tc.b))
		t.Logf("%s: %d input bytes allocated %d (%.1f per byte; bound %.1f per byte + %d)",
			tc.name, len(tc.b), got, perByte, kBatch, allocConst)
		if got > allocBound(kBatch, len(tc.b)) {
			t.Errorf("%s: allocated %d > bound %d", tc.name, got, allocBound(kBatch, len(tc.b)))
		}
		if perByte < tc.minRatio {
			t.Errorf("%s: only %.1f bytes per input byte; the adversarial input no longer stresses the decoder", tc.name, perByte)
		}
	}
}

// TestAllocBoundOnSamples runs the bound over every sample encoding and
// every truncation of the small ones, in the normal (non-fuzz) test run.
func TestAllocBoundOnSamples(t *testing.T) {
	for _, e := range allEncodings() {
		k := kValue
		if strings.HasPrefix(e.name, "batch/") {
			k = kBatch
		}
		checkAllocs(t, e.name, e.b, k, func() { _ = e.decode(e.b) })
		if len(e.b) <= 512 {
			for n := range len(e.b) {
				checkAllocs(t, e.name, e.b[:n], k, func() { _ = e.decode(e.b[:n]) })
			}
		}
	}
}
