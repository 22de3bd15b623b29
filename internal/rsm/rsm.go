package rsm

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/skiffdb/skiff/raftpb"
	"github.com/skiffdb/skiff/statemachine"
)

// DefaultMaxSessions is Config.MaxSessions when it is 0.
const DefaultMaxSessions = 4096

// Config configures the apply stage of one replica.
type Config struct {
	Group, Replica uint64
	// SM is the user's state machine. It may also implement
	// statemachine.OnDisk, statemachine.ConcurrentLookup and
	// statemachine.Type; the RSM owns it from New to Close.
	SM statemachine.StateMachine
	// MaxSessions bounds the client sessions (default DefaultMaxSessions).
	// Registering one more evicts the least recently used, where "used" is
	// the index of the last entry naming the client, so every replica
	// evicts the same one. Every replica of a group must use the same value.
	MaxSessions int
	// Membership is the membership in effect before the first entry the
	// RSM will see: a bootstrapped group's initial membership (the log's
	// snapshot meta at index 0), replaced by Restore and by config-change
	// batches. Capture refuses while it has no voter, so that a snapshot
	// never records a group nobody can lead.
	Membership raftpb.Membership
	// Logger receives restore and capture events (default: discarded).
	Logger *slog.Logger
}

// Batch is what the engine hands to Apply: committed entries in index order,
// any entry type, and the membership in effect after the last config-change
// entry among them (computed by the raft core). Membership must be set when
// Entries holds a config-change entry above LastApplied.
type Batch struct {
	Entries    []raftpb.Entry
	Membership *raftpb.Membership
}

// Applied is the outcome of one applied entry that carried a proposal key,
// for the engine to complete the waiting proposal.
type Applied struct {
	Index, Term uint64
	Key         uint64
	// Result is the state machine's result, or the cached one for a
	// retried session proposal. For a register/unregister, Value is the
	// client ID. Result.Data is shared with the session cache: read only.
	Result statemachine.Result
	// Err is nil, ErrSessionNotFound or ErrSessionExpired; in the latter
	// two cases the command was not given to the state machine.
	Err error
}

// RSM is the apply stage of one replica: it applies committed entries to the
// state machine, keeps the client sessions, the applied index and term and
// the membership, and captures and restores snapshots of all of them.
//
// Goroutines: every method runs on the group's apply goroutine, except
// Lookup when ConcurrentLookup reports true (the state machine's Lookup is
// then safe beside Apply), and Capture.Save, which runs on a snapshot
// goroutine concurrently with Apply.
type RSM struct {
	group, replica uint64
	sm             statemachine.StateMachine
	onDisk         statemachine.OnDisk // nil unless SM implements it
	concurrent     bool
	smType, smVer  uint64
	log            *slog.Logger
	opened         bool

	// applied/term: the last entry whose effects are complete (state
	// machine, sessions, membership). Invariant: never decreases except by
	// Restore.
	applied, term uint64
	// smIndex (OnDisk only): the last index whose effects are in the
	// state machine's own data: Open's durable index, then the last entry
	// given to SM.Apply, then a Restore's index. Entries at or below it are
	// never given to SM.Apply again. It may trail applied (NoOps, config
	// changes and session operations never reach the state machine); it is
	// above applied only until the engine finished ReplayOnDisk.
	smIndex    uint64
	membership raftpb.Membership
	sessions   *sessionTable
	// failed is the first fatal error (a failed SM.Apply or SM.Restore,
	// a corrupt entry, a gap): the state is unknown or incomplete, so every
	// later Apply, Capture and Restore returns it (statemachine package doc).
	failed error

	run runBuffer // reused across Apply calls
}

// runBuffer collects consecutive normal entries for one SM.Apply call.
type runBuffer struct {
	entries []statemachine.Entry
	outPos  []int      // position in out of each entry's Applied
	sess    []*session // session of each entry, nil without one
	series  []uint64   // the session's SeriesID
	// pending holds the (client, series) in the run, so that a retry in
	// the same batch flushes the run and finds the first one's result.
	pending map[Session]struct{}
	// endIndex/endTerm: the last entry processed while the run was open.
	endIndex, endTerm uint64
}

// New creates the apply stage of one replica around cfg.SM.
func New(cfg Config) (*RSM, error) {
	if cfg.SM == nil {
		return nil, errors.New("rsm: Config.SM is nil")
	}
	if cfg.MaxSessions < 0 {
		return nil, fmt.Errorf("rsm: Config.MaxSessions %d is negative", cfg.MaxSessions)
	}
	if cfg.MaxSessions == 0 {
		cfg.MaxSessions = DefaultMaxSessions
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	s := &RSM{
		group:      cfg.Group,
		replica:    cfg.Replica,
		sm:         cfg.SM,
		log:        cfg.Logger.With("group", cfg.Group, "replica", cfg.Replica),
		membership: cfg.Membership.Clone(),
		sessions:   newSessionTable(cfg.MaxSessions),
		run:        runBuffer{pending: make(map[Session]struct{})},
	}
	s.onDisk, _ = cfg.SM.(statemachine.OnDisk)
	_, s.concurrent = cfg.SM.(statemachine.ConcurrentLookup)
	if t, ok := cfg.SM.(statemachine.Type); ok {
		s.smType, s.smVer = t.SnapshotType()
	}
	return s, nil
}

// Open opens an OnDisk state machine and returns the index of the last entry
// it durably applied; for other state machines it returns 0. It is called
// once, before any other method. The engine then checks CheckStart, restores
// the latest local snapshot and hands the entries (snapshot index, applied]
// to ReplayOnDisk.
func (s *RSM) Open(ctx context.Context) (applied uint64, err error) {
	if s.opened {
		return 0, errors.New("rsm: Open called twice")
	}
	s.opened = true
	if s.onDisk == nil {
		return 0, nil
	}
	idx, err := s.onDisk.Open(ctx)
	if err != nil {
		return 0, fmt.Errorf("rsm: group %d replica %d: open state machine: %w", s.group, s.replica, err)
	}
	s.smIndex = idx
	return idx, nil
}

// OnDisk reports whether the state machine keeps its own data durable.
func (s *RSM) OnDisk() bool { return s.onDisk != nil }

// LastApplied returns the index and term of the last applied entry.
func (s *RSM) LastApplied() (index, term uint64) { return s.applied, s.term }

// Failed returns the error that stopped the replica's state machine (a
// failed Apply or Restore, a corrupt entry), or nil. Everything but Close
// returns it from then on.
func (s *RSM) Failed() error { return s.failed }

// Membership returns the membership in effect at LastApplied (a copy).
func (s *RSM) Membership() raftpb.Membership { return s.membership.Clone() }

// Lookup queries the state machine. It runs on the apply goroutine unless
// ConcurrentLookup reports true.
func (s *RSM) Lookup(query []byte) ([]byte, error) { return s.sm.Lookup(query) }

// ConcurrentLookup reports whether Lookup may run concurrently with Apply.
func (s *RSM) ConcurrentLookup() bool { return s.concurrent }

// Close closes the state machine.
func (s *RSM) Close() error {
	if err := s.sm.Close(); err != nil {
		return fmt.Errorf("rsm: group %d replica %d: close state machine: %w", s.group, s.replica, err)
	}
	return nil
}

// Apply applies b's entries in order and returns out[:0] extended with one
// Applied per entry that carried a proposal key. Entries at or below
// LastApplied are skipped (idempotent replay); the first other entry must be
// LastApplied+1 (else ErrIndexGap).
//
// Consecutive normal entries go to the state machine in one SM.Apply call;
// session registration and unregistration end such a run. A session
// proposal whose SeriesID was already applied is answered from the session
// without calling the state machine (exactly once across retries). NoOp and
// config-change entries only advance the applied index and term; a config
// change whose ConfChange.Context carries a key (see ProposalKey) gets an
// Applied with an empty Result.
//
// An error (SM.Apply's, ErrCorruptEntry, ErrIndexGap, a contract violation)
// is fatal for the replica: LastApplied then says how far it got, and every
// later Apply, ReplayOnDisk, Capture and Restore returns the same error. For an
// OnDisk state machine, entries at or below Open's index are handled as by
// ReplayOnDisk and produce no Applied.
func (s *RSM) Apply(b Batch, out []Applied) ([]Applied, error) {
	out, err := s.apply(b, out[:0], false)
	s.fail(err)
	return out, err
}

// fail records a fatal error: the entries after LastApplied were not
// applied, and a batch's membership may not be, so no later Apply, Capture
// or Restore may build on this state.
func (s *RSM) fail(err error) {
	if err != nil && s.failed == nil {
		s.failed = err
	}
}

// ReplayOnDisk replays the entries (snapshot index, Open's index] into an
// OnDisk state machine's RSM after a restart: sessions, membership, applied
// index and term advance, but SM.Apply is not called (the state machine
// already holds the entries' effects). The results of session proposals
// among them are unknown, so a retry of one is answered ErrSessionExpired:
// it is still never applied twice.
func (s *RSM) ReplayOnDisk(b Batch) error {
	if s.onDisk == nil {
		return errors.New("rsm: ReplayOnDisk on a state machine that is not OnDisk")
	}
	if n := len(b.Entries); n > 0 && b.Entries[n-1].Index > s.smIndex {
		return fmt.Errorf("rsm: ReplayOnDisk up to %d, beyond the state machine's applied index %d", b.Entries[n-1].Index, s.smIndex)
	}
	_, err := s.apply(b, nil, true)
	s.fail(err)
	return err
}

func (s *RSM) apply(b Batch, out []Applied, replay bool) ([]Applied, error) {
	if s.failed != nil {
		return out, s.failed
	}
	var lastCC uint64
	for i := range b.Entries {
		e := &b.Entries[i]
		next := s.applied + 1
		if len(s.run.entries) > 0 {
			next = s.run.endIndex + 1
		}
		if e.Index < next {
			continue
		}
		if e.Index > next {
			if err := s.flush(out); err != nil {
				return out, err
			}
			return out, fmt.Errorf("rsm: group %d replica %d: entry %d after applied index %d: %w", s.group, s.replica, e.Index, next-1, ErrIndexGap)
		}
		// An OnDisk state machine's data already holds entries up to
		// smIndex: they are replayed even when handed to Apply.
		replayed := replay || (s.onDisk != nil && e.Index <= s.smIndex)
		var err error
		switch e.Type {
		case raftpb.EntryNoOp:
		case raftpb.EntryConfigChange:
			lastCC = e.Index
			if key, ok := confChangeKey(e.Data); ok && !replayed {
				out = append(out, Applied{Index: e.Index, Term: e.Term, Key: key})
			}
		case raftpb.EntrySession:
			out, err = s.applySessionOp(e, out, replayed)
		case raftpb.EntryNormal:
			out, err = s.applyNormal(e, out, replayed)
		default:
			err = fmt.Errorf("entry %d has unknown type %v: %w", e.Index, e.Type, ErrCorruptEntry)
		}
		if err != nil {
			if s.failed != nil {
				return out, s.failed
			}
			// Leave LastApplied at the entry before: apply what precedes.
			if ferr := s.flush(out); ferr != nil {
				return out, ferr
			}
			return out, fmt.Errorf("rsm: group %d replica %d: %w", s.group, s.replica, err)
		}
		s.done(e.Index, e.Term)
	}
	if err := s.flush(out); err != nil {
		return out, err
	}
	if lastCC > 0 {
		if b.Membership == nil {
			return out, fmt.Errorf("rsm: group %d replica %d: batch holds config change %d but no membership", s.group, s.replica, lastCC)
		}
		s.membership = b.Membership.Clone()
	}
	return out, nil
}

// done marks entry index as processed: applied now if no run is open, else
// when the run is flushed.
func (s *RSM) done(index, term uint64) {
	if len(s.run.entries) == 0 {
		s.applied, s.term = index, term
		return
	}
	s.run.endIndex, s.run.endTerm = index, term
}

// applySessionOp registers or unregisters a client. It ends the open run so
// that no run entry holds a session that eviction or unregistration drops.
func (s *RSM) applySessionOp(e *raftpb.Entry, out []Applied, replay bool) ([]Applied, error) {
	p, err := decodeEntry(*e)
	if err != nil {
		return out, err
	}
	if err := s.flush(out); err != nil {
		return out, err
	}
	a := Applied{Index: e.Index, Term: e.Term, Key: p.key, Result: statemachine.Result{Value: p.session.ClientID}}
	switch p.kind {
	case kindRegister:
		s.sessions.register(p.session.ClientID, e.Index)
	case kindUnregister:
		if !s.sessions.unregister(p.session.ClientID) {
			a.Err = ErrSessionNotFound
		}
	}
	if !replay {
		out = append(out, a)
	}
	return out, nil
}

// applyNormal adds a normal entry to the run, or answers it from its session.
func (s *RSM) applyNormal(e *raftpb.Entry, out []Applied, replay bool) ([]Applied, error) {
	p, err := decodeEntry(*e)
	if err != nil {
		return out, err
	}
	a := Applied{Index: e.Index, Term: e.Term, Key: p.key}
	if p.kind == kindProposal {
		if replay {
			return out, nil
		}
		out = append(out, a)
		s.run.add(e.Index, p.cmd, len(out)-1, nil, 0)
		return out, nil
	}

	sess := s.sessions.get(p.session.ClientID, e.Index)
	if sess == nil {
		a.Err = ErrSessionNotFound
		return s.answer(out, a, replay), nil
	}
	sess.clearTo(p.session.RespondedTo)
	series := p.session.SeriesID
	if _, inRun := s.run.pending[p.session.sessionKey()]; inRun {
		// A retry of a proposal in the open run: apply the run so the
		// first one's result is in the session, then answer from it.
		if err := s.flush(out); err != nil {
			return out, err
		}
	}
	if series <= sess.respondedTo {
		a.Err = ErrSessionExpired
		return s.answer(out, a, replay), nil
	}
	if c, ok := sess.history[series]; ok {
		if c.lost {
			a.Err = ErrSessionExpired
		} else {
			a.Result = c.result
		}
		return s.answer(out, a, replay), nil
	}
	if replay {
		sess.record(series, statemachine.Result{}, true /* lost */)
		return out, nil
	}
	out = append(out, a)
	s.run.add(e.Index, p.cmd, len(out)-1, sess, series)
	s.run.pending[p.session.sessionKey()] = struct{}{}
	return out, nil
}

// sessionKey is the (client, series) identity of a session proposal.
func (ss Session) sessionKey() Session { return Session{ClientID: ss.ClientID, SeriesID: ss.SeriesID} }

func (s *RSM) answer(out []Applied, a Applied, replay bool) []Applied {
	if replay {
		return out
	}
	return append(out, a)
}

func (r *runBuffer) add(index uint64, cmd []byte, pos int, sess *session, series uint64) {
	r.entries = append(r.entries, statemachine.Entry{Index: index, Cmd: cmd})
	r.outPos = append(r.outPos, pos)
	r.sess = append(r.sess, sess)
	r.series = append(r.series, series)
}

// flush gives the open run to SM.Apply, hands the results to out and the
// sessions, and advances the applied index over the run.
func (s *RSM) flush(out []Applied) error {
	r := &s.run
	if len(r.entries) == 0 {
		return nil
	}
	if err := s.sm.Apply(r.entries); err != nil {
		s.failed = fmt.Errorf("rsm: group %d replica %d: apply entries [%d, %d]: %w",
			s.group, s.replica, r.entries[0].Index, r.entries[len(r.entries)-1].Index, err)
		return s.failed
	}
	for i := range r.entries {
		res := r.entries[i].Result
		out[r.outPos[i]].Result = res
		if sess := r.sess[i]; sess != nil {
			sess.record(r.series[i], res, false)
		}
	}
	s.applied, s.term = r.endIndex, r.endTerm
	if last := r.entries[len(r.entries)-1].Index; s.onDisk != nil && last > s.smIndex {
		s.smIndex = last
	}
	// Drop references to entry data and sessions before reuse.
	clear(r.entries)
	clear(r.sess)
	r.entries, r.outPos, r.sess, r.series = r.entries[:0], r.outPos[:0], r.sess[:0], r.series[:0]
	clear(r.pending)
	r.endIndex, r.endTerm = 0, 0
	return nil
}
