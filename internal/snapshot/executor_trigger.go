package snapshot

import (
	"math/rand/v2"
	"time"
)

// Triggers are the caller's (the engine's), but the policy is here so that
// every group applies it the same way (DESIGN §3 "triggers"). It is
// level-based (REQUIREMENTS §12): each Check recomputes from the applied
// index, the last snapshot index and the log size, so a restart or a
// trigger that fired during a save is never lost. No clock or randomness
// is read here: the caller passes now and a seeded rand.

// Policy says when a group takes a snapshot.
type Policy struct {
	// SnapshotEntries: a snapshot once this many entries were applied since
	// the last one. 0 disables.
	SnapshotEntries uint64
	// SnapshotInterval: a snapshot every interval (jittered), if at least
	// SnapshotMinGap entries are new. The first fire is at a random point
	// of the first interval (braft SnapshotTimer, SOFAJRaft 1.3), so that
	// groups started together do not snapshot together (braft#87).
	// 0 disables.
	SnapshotInterval time.Duration
	SnapshotMinGap   uint64
	// Jitter is the ± fraction applied to every later interval; default
	// 0.1, negative disables.
	Jitter float64
	// MaxLogBytes: a snapshot is forced once the log holds this many bytes
	// (REQUIREMENTS §12), whatever the other settings. 0 disables.
	MaxLogBytes uint64
}

// Reason says why Check wants a snapshot.
type Reason uint8

const (
	// ReasonNone: no snapshot now.
	ReasonNone Reason = iota
	// ReasonRequested: the user asked (Request).
	ReasonRequested
	// ReasonLogBytes: the log reached MaxLogBytes.
	ReasonLogBytes
	// ReasonEntries: SnapshotEntries entries were applied.
	ReasonEntries
	// ReasonInterval: the interval timer fired with enough new entries.
	ReasonInterval
)

var reasonNames = [...]string{"none", "requested", "log-bytes", "entries", "interval"}

func (r Reason) String() string {
	if int(r) < len(reasonNames) {
		return reasonNames[r]
	}
	return "unknown"
}

// TriggerState is what Check decides from.
type TriggerState struct {
	Applied           uint64
	LastSnapshotIndex uint64
	LogBytes          uint64
}

// Trigger applies a Policy for one group. Not safe for concurrent use (it
// lives with the group's worker).
type Trigger struct {
	p         Policy
	rng       *rand.Rand
	next      time.Time // when the interval fires; zero if disabled
	requested bool
}

// NewTrigger returns a Trigger whose first interval fires at a random point
// in (now, now+SnapshotInterval].
func NewTrigger(p Policy, now time.Time, rng *rand.Rand) *Trigger {
	if p.Jitter == 0 {
		p.Jitter = 0.1
	}
	t := &Trigger{p: p, rng: rng}
	if p.SnapshotInterval > 0 {
		t.next = now.Add(time.Duration(1 + rng.Int64N(int64(p.SnapshotInterval))))
	}
	return t
}

// Next returns when the interval fires next (zero if no interval), for the
// caller's timer.
func (t *Trigger) Next() time.Time { return t.next }

// Request records a user's request for a snapshot; the next Check reports
// ReasonRequested.
func (t *Trigger) Request() { t.requested = true }

// Check reports whether a snapshot should be taken now, and why. When the
// interval fired but too few entries are new, the interval is re-armed.
func (t *Trigger) Check(now time.Time, st TriggerState) Reason {
	var fresh uint64
	if st.Applied > st.LastSnapshotIndex {
		fresh = st.Applied - st.LastSnapshotIndex
	}
	switch {
	case t.requested:
		return ReasonRequested
	case fresh == 0:
		// Nothing to snapshot; an elapsed interval waits for entries.
		return ReasonNone
	case t.p.MaxLogBytes > 0 && st.LogBytes >= t.p.MaxLogBytes:
		return ReasonLogBytes
	case t.p.SnapshotEntries > 0 && fresh >= t.p.SnapshotEntries:
		return ReasonEntries
	case !t.next.IsZero() && !now.Before(t.next):
		if fresh >= t.p.SnapshotMinGap {
			return ReasonInterval
		}
		t.rearm(now)
	}
	return ReasonNone
}

// Done tells the trigger a snapshot was taken (or attempted) at now: the
// request is cleared and the interval re-armed.
func (t *Trigger) Done(now time.Time) {
	t.requested = false
	if !t.next.IsZero() {
		t.rearm(now)
	}
}

func (t *Trigger) rearm(now time.Time) {
	d := t.p.SnapshotInterval
	if t.p.Jitter > 0 {
		span := int64(float64(d) * t.p.Jitter)
		if span > 0 {
			d += time.Duration(t.rng.Int64N(2*span+1) - span)
		}
	}
	t.next = now.Add(d)
}
