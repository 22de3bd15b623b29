package rsm

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/skiffdb/skiff/raftpb"
)

// A retried proposal (same SeriesID) gets the first result and is applied
// once — also when the retry is in the same batch as the original.
func TestSessionDuplicateSeriesAppliedOnce(t *testing.T) {
	sm := &memSM{}
	s := newRSM(t, sm, 0)
	c := Session{ClientID: 7, SeriesID: 1}
	out := byKey(t, mustApply(t, s,
		register(1, 1, 1, 7),
		sessionProp(2, 1, 2, c, "x"),
		normal(3, 1, 3, "y"),
		sessionProp(4, 1, 4, c, "x"), // retry in the same batch
	))
	if !slices.Equal(sm.cmds, []string{"x", "y"}) {
		t.Fatalf("SM got %v, want x applied once", sm.cmds)
	}
	if out[1].Result.Value != 7 || out[1].Err != nil {
		t.Fatalf("register outcome %+v", out[1])
	}
	if string(out[2].Result.Data) != "r:x" || out[2].Result.Value != 1 {
		t.Fatalf("first outcome %+v", out[2])
	}
	if out[4].Err != nil || out[4].Result.Value != 1 || string(out[4].Result.Data) != "r:x" {
		t.Fatalf("retry outcome %+v, want the first result", out[4])
	}
	// A retry in a later batch too.
	out = byKey(t, mustApply(t, s, sessionProp(5, 1, 5, c, "x")))
	if out[5].Err != nil || string(out[5].Result.Data) != "r:x" || len(sm.cmds) != 2 {
		t.Fatalf("later retry %+v, SM %v", out[5], sm.cmds)
	}
	if idx, _ := s.LastApplied(); idx != 5 {
		t.Fatalf("applied %d", idx)
	}
}

// The cached result does not alias the state machine's buffer.
func TestSessionCachesACopy(t *testing.T) {
	sm := &memSM{}
	s := newRSM(t, sm, 0)
	c := Session{ClientID: 7, SeriesID: 1}
	out := mustApply(t, s, register(1, 1, 1, 7), sessionProp(2, 1, 2, c, "x"))
	out[1].Result.Data[0] = 'Z' // the proposer's copy
	got := byKey(t, mustApply(t, s, sessionProp(3, 1, 3, c, "x")))
	if string(got[3].Result.Data) != "r:x" {
		t.Fatalf("cached result changed to %q", got[3].Result.Data)
	}
}

func TestSessionRespondedToDropsResults(t *testing.T) {
	sm := &memSM{}
	s := newRSM(t, sm, 0)
	mustApply(t, s, register(1, 1, 1, 7),
		sessionProp(2, 1, 2, Session{7, 1, 0}, "a"),
		sessionProp(3, 1, 3, Session{7, 2, 0}, "b"))
	sess := s.sessions.byID[7]
	if len(sess.history) != 2 {
		t.Fatalf("history %v", sess.history)
	}
	// Series 3 says the client saw 1 and 2.
	mustApply(t, s, sessionProp(4, 1, 4, Session{7, 3, 2}, "c"))
	if _, ok := sess.history[1]; ok || len(sess.history) != 1 {
		t.Fatalf("history after RespondedTo=2: %v", sess.history)
	}
	// A retry of series 2 now: expired, not applied again.
	out := byKey(t, mustApply(t, s, sessionProp(5, 1, 5, Session{7, 2, 2}, "b")))
	if !errors.Is(out[5].Err, ErrSessionExpired) {
		t.Fatalf("retry of a forgotten series: %+v", out[5])
	}
	// RespondedTo never goes back.
	mustApply(t, s, sessionProp(6, 1, 6, Session{7, 4, 1}, "d"))
	if sess.respondedTo != 2 {
		t.Fatalf("respondedTo %d, want 2", sess.respondedTo)
	}
	if !slices.Equal(sm.cmds, []string{"a", "b", "c", "d"}) {
		t.Fatalf("SM got %v", sm.cmds)
	}
	// A proposal whose RespondedTo covers its own series within a batch
	// where the original is pending: same answer as applying one by one.
	out = byKey(t, mustApply(t, s,
		sessionProp(7, 1, 7, Session{7, 5, 4}, "e"),
		sessionProp(8, 1, 8, Session{7, 5, 5}, "e")))
	if out[7].Err != nil || !errors.Is(out[8].Err, ErrSessionExpired) {
		t.Fatalf("outcomes %+v", out)
	}
	if _, ok := sess.history[5]; ok {
		t.Fatal("result of series 5 kept after RespondedTo=5")
	}
}

func TestSessionNotFoundAndUnregister(t *testing.T) {
	sm := &memSM{}
	s := newRSM(t, sm, 0)
	out := byKey(t, mustApply(t, s,
		sessionProp(1, 1, 1, Session{7, 1, 0}, "never registered"),
		unregister(2, 1, 2, 7),
		register(3, 1, 3, 7),
		sessionProp(4, 1, 4, Session{7, 1, 0}, "a"),
		unregister(5, 1, 5, 7),
		sessionProp(6, 1, 6, Session{7, 2, 1}, "after unregister"),
	))
	if !errors.Is(out[1].Err, ErrSessionNotFound) || !errors.Is(out[2].Err, ErrSessionNotFound) {
		t.Fatalf("unknown client: %+v / %+v", out[1], out[2])
	}
	if out[4].Err != nil || out[5].Err != nil {
		t.Fatalf("registered client: %+v / %+v", out[4], out[5])
	}
	if !errors.Is(out[6].Err, ErrSessionNotFound) {
		t.Fatalf("after unregister: %+v", out[6])
	}
	if !slices.Equal(sm.cmds, []string{"a"}) {
		t.Fatalf("SM got %v", sm.cmds)
	}
	if s.sessions.len() != 0 {
		t.Fatalf("%d sessions left", s.sessions.len())
	}
}

// A retried registration keeps the session's results.
func TestSessionRegisterTwiceKeepsResults(t *testing.T) {
	sm := &memSM{}
	s := newRSM(t, sm, 0)
	mustApply(t, s, register(1, 1, 1, 7), sessionProp(2, 1, 2, Session{7, 1, 0}, "a"), register(3, 1, 3, 7))
	out := byKey(t, mustApply(t, s, sessionProp(4, 1, 4, Session{7, 1, 0}, "a")))
	if out[4].Err != nil || string(out[4].Result.Data) != "r:a" || len(sm.cmds) != 1 {
		t.Fatalf("retry after re-register: %+v, SM %v", out[4], sm.cmds)
	}
}

func TestSessionLRUEviction(t *testing.T) {
	s := newRSM(t, &memSM{}, 3)
	mustApply(t, s, register(1, 1, 1, 10), register(2, 1, 2, 20), register(3, 1, 3, 30),
		sessionProp(4, 1, 4, Session{10, 1, 0}, "a"), // 10 is now the most recent; 20 the oldest
		register(5, 1, 5, 40))
	if _, ok := s.sessions.byID[20]; ok {
		t.Fatal("least recently used session 20 kept")
	}
	for _, c := range []uint64{10, 30, 40} {
		if _, ok := s.sessions.byID[c]; !ok {
			t.Fatalf("session %d evicted", c)
		}
	}
	out := byKey(t, mustApply(t, s, sessionProp(6, 1, 6, Session{20, 1, 0}, "b")))
	if !errors.Is(out[6].Err, ErrSessionNotFound) {
		t.Fatalf("evicted client: %+v", out[6])
	}
	// Even a rejected proposal does not touch an unknown client; a known
	// one's failed (expired) proposal still counts as use.
	mustApply(t, s, sessionProp(7, 1, 7, Session{30, 1, 1}, "c"), register(8, 1, 8, 50))
	if _, ok := s.sessions.byID[30]; !ok {
		t.Fatal("session 30 evicted though used at 7")
	}
	if _, ok := s.sessions.byID[10]; ok {
		t.Fatal("session 10 (last used at 4) kept")
	}
}

// Two replicas fed the same random log end with identical sessions (compared
// as encoded bytes) and identical outcomes.
func TestSessionsDeterministicAcrossReplicas(t *testing.T) {
	log := randomSessionLog(3000, 1)
	run := func(batch int) ([]byte, []Applied, *memSM) {
		sm := &memSM{}
		s := newRSM(t, sm, 16)
		var all []Applied
		for lo := 0; lo < len(log); lo += batch {
			out := mustApply(t, s, log[lo:min(lo+batch, len(log))]...)
			all = append(all, out...)
		}
		return s.sessions.appendTo(nil), all, sm
	}
	sa, oa, smA := run(1)
	sb, ob, smB := run(37)
	ca, cb := smA.cmds, smB.cmds
	if !bytes.Equal(sa, sb) {
		t.Fatal("session tables differ")
	}
	if !slices.Equal(ca, cb) {
		t.Fatal("state machines differ")
	}
	if len(oa) != len(ob) {
		t.Fatalf("%d vs %d outcomes", len(oa), len(ob))
	}
	var expired, notFound, cached int
	for i := range oa {
		if log[oa[i].Index-1].Type == raftpb.EntryNormal && oa[i].Err == nil && !slices.Contains(smA.indexes, oa[i].Index) {
			cached++
		}
		a, b := oa[i], ob[i]
		if a.Key != b.Key || a.Err != b.Err || a.Result.Value != b.Result.Value || !bytes.Equal(a.Result.Data, b.Result.Data) {
			t.Fatalf("outcome %d: %+v vs %+v", i, a, b)
		}
		switch {
		case errors.Is(a.Err, ErrSessionExpired):
			expired++
		case errors.Is(a.Err, ErrSessionNotFound):
			notFound++
		}
	}
	// Exactly once: no (client, series) reached the state machine twice
	// within one registration (a re-registered client starts afresh).
	seen := map[Session]bool{}
	for _, e := range log {
		p, err := decodeEntry(e)
		if err != nil {
			t.Fatal(err)
		}
		if p.kind == kindRegister || p.kind == kindUnregister {
			for k := range seen {
				if k.ClientID == p.session.ClientID {
					delete(seen, k)
				}
			}
		}
		if p.kind != kindSessionProposal || !slices.Contains(smA.indexes, e.Index) {
			continue
		}
		k := p.session.sessionKey()
		if seen[k] {
			t.Fatalf("client %d series %d applied twice", k.ClientID, k.SeriesID)
		}
		seen[k] = true
	}
	t.Logf("%d outcomes, %d applied, %d expired, %d not found, %d answered from the cache", len(oa), len(ca), expired, notFound, cached)
	if expired == 0 || notFound == 0 || cached == 0 {
		t.Fatal("the random log does not exercise every session path")
	}
}

// randomSessionLog makes n entries of registrations, unregistrations, plain
// proposals and session proposals (new ones and retries) for 40 clients.
func randomSessionLog(n, seed uint64) []raftpb.Entry {
	rng := rand.New(rand.NewPCG(seed, 2))
	var log []raftpb.Entry
	series := map[uint64]uint64{}
	for i := uint64(1); i <= n; i++ {
		client := uint64(rng.IntN(40) + 1)
		switch r := rng.IntN(10); {
		case r == 0:
			log = append(log, register(i, 1, i, client))
		case r == 1 && rng.IntN(4) == 0:
			log = append(log, unregister(i, 1, i, client))
		case r < 4:
			log = append(log, normal(i, 1, i, fmt.Sprint("n", i)))
		default:
			sr := series[client]
			if rng.IntN(3) > 0 {
				sr++ // new proposal, else a retry
				series[client] = sr
			}
			resp := uint64(0)
			if sr > 2 {
				resp = sr - 2
			}
			log = append(log, sessionProp(i, 1, i, Session{client, sr, resp}, fmt.Sprint("s", i)))
		}
	}
	return log
}

// A replica restored from a snapshot taken anywhere in the log answers the
// rest of the log exactly like the replica that applied all of it.
func TestSessionsSurviveRestoreAnywhere(t *testing.T) {
	log := randomSessionLog(1200, 3)
	full := newRSM(t, &memSM{}, 16)
	var want []Applied
	for lo := 0; lo < len(log); lo += 50 {
		want = append(want, mustApply(t, full, log[lo:lo+50]...)...)
	}
	for _, at := range []int{1, 77, 400, 899, 1150} {
		a := newRSM(t, &memSM{}, 16)
		mustApply(t, a, log[:at]...)
		c, err := a.Capture(true)
		if err != nil {
			t.Fatal(err)
		}
		data := captureBytes(t, c, nil)
		c.Release()
		b := newRSM(t, &memSM{}, 16)
		if err := b.Restore(context.Background(), metaOf(c), bytes.NewReader(data), nil); err != nil {
			t.Fatal(err)
		}
		got := mustApply(t, b, log[at:]...)
		var tail []Applied
		for _, w := range want {
			if w.Index > uint64(at) {
				tail = append(tail, w)
			}
		}
		if len(got) != len(tail) {
			t.Fatalf("restored at %d: %d outcomes, want %d", at, len(got), len(tail))
		}
		for i := range got {
			g, w := got[i], tail[i]
			if g.Key != w.Key || g.Err != w.Err || g.Result.Value != w.Result.Value || !bytes.Equal(g.Result.Data, w.Result.Data) {
				t.Fatalf("restored at %d: outcome %+v, want %+v", at, g, w)
			}
		}
		if !bytes.Equal(b.sessions.appendTo(nil), full.sessions.appendTo(nil)) {
			t.Fatalf("restored at %d: session tables differ at the end", at)
		}
	}
}
