package main

import (
	"context"
	b64 "encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/skiffdb/skiff"
	"github.com/skiffdb/skiff/examples/kv"
)

// api serves DESIGN.md §7's HTTP contract for one replica.
type api struct {
	h       *skiff.Host
	c       serveConfig
	events  *eventLog
	log     *slog.Logger
	metrics *prometheus.Registry
}

func (a *api) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/kv", a.scan)
	mux.HandleFunc("GET /v1/status", a.status)
	mux.HandleFunc("POST /v1/snapshot", a.snapshot)
	mux.HandleFunc("POST /v1/members/{id}", a.addMember)
	mux.HandleFunc("DELETE /v1/members/{id}", a.removeMember)
	mux.HandleFunc("POST /v1/leader/{id}", a.transferLeader)
	mux.Handle("GET /metrics", promhttp.HandlerFor(a.metrics, promhttp.HandlerOpts{}))
	if a.c.pprof {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// r.URL.Query() drops what it cannot parse: a CAS whose ?prev=
		// has a stray ';' or a bad escape would become a plain write.
		if _, err := url.ParseQuery(r.URL.RawQuery); err != nil {
			writeError(w, http.StatusBadRequest, codeBadRequest, "malformed query string: "+err.Error())
			return
		}
		// Keys are routed here, not by the ServeMux, which cleans paths
		// ("a//b" → "a/b") and would redirect a write to another key.
		if key, ok := strings.CutPrefix(r.URL.Path, "/v1/kv/"); ok {
			r.SetPathValue("key", key)
			switch r.Method {
			case http.MethodGet, http.MethodHead:
				a.get(w, r)
			case http.MethodPut:
				a.put(w, r)
			case http.MethodDelete:
				a.del(w, r)
			default:
				w.Header().Set("Allow", "GET, HEAD, PUT, DELETE")
				writeError(w, http.StatusMethodNotAllowed, codeMethodNotAllowed, r.Method+" is not allowed on a key")
			}
			return
		}
		h, pattern := mux.Handler(r)
		if pattern != "" {
			mux.ServeHTTP(w, r)
			return
		}
		// No route: the ServeMux would answer 404, or 405 with Allow when
		// another method matches; the same, with a JSON body.
		rec := &statusRecorder{header: http.Header{}}
		h.ServeHTTP(rec, r)
		if allow := rec.header.Get("Allow"); rec.status == http.StatusMethodNotAllowed {
			w.Header().Set("Allow", allow)
			writeError(w, http.StatusMethodNotAllowed, codeMethodNotAllowed, fmt.Sprintf("%s is not allowed on %s", r.Method, r.URL.Path))
			return
		}
		writeError(w, http.StatusNotFound, codeNotFound, fmt.Sprintf("no route for %s %s", r.Method, r.URL.Path))
	})
}

// statusRecorder captures what the ServeMux's own 404/405 handlers write.
type statusRecorder struct {
	header http.Header
	status int
}

func (s *statusRecorder) Header() http.Header         { return s.header }
func (s *statusRecorder) Write(b []byte) (int, error) { return len(b), nil }
func (s *statusRecorder) WriteHeader(status int)      { s.status = status }

// Error codes of the JSON error body.
const (
	codeBadRequest       = "bad_request"
	codeNoLeader         = "no_leader"
	codeTimeout          = "timeout"
	codeTooLarge         = "too_large"
	codeNotFound         = "not_found"
	codeMismatch         = "mismatch"
	codeBusy             = "busy"
	codeMethodNotAllowed = "method_not_allowed"
	codeNoNewEntries     = "no_new_entries"
	codeUnavailable      = "unavailable"
	codeCanceled         = "canceled"
	codeInternal         = "internal"
)

type errorBody struct {
	Error string `json:"error"`
	Code  string `json:"code"`
}

func writeError(w http.ResponseWriter, status int, code, msg string) {
	writeJSON(w, status, errorBody{Error: msg, Code: code})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// fail maps a host error to its HTTP status. A write that timed out gets
// 504 — its outcome is unknown, it may still commit — even when no leader
// is known now (one may have been when the proposal left); a read that
// timed out without a leader changed nothing and gets 503.
func (a *api) fail(w http.ResponseWriter, r *http.Request, err error) {
	write := r.Method != http.MethodGet
	switch {
	case errors.Is(err, skiff.ErrTimeout), errors.Is(err, context.DeadlineExceeded):
		noLeader := false
		if st, serr := a.h.GroupStatus(kvGroup); serr == nil && st.Leader == 0 {
			noLeader = true
		}
		switch {
		case noLeader && !write:
			writeError(w, http.StatusServiceUnavailable, codeNoLeader, "no leader is known: "+err.Error())
		case noLeader:
			writeError(w, http.StatusGatewayTimeout, codeTimeout, "outcome unknown (no leader is known now): "+err.Error())
		default:
			writeError(w, http.StatusGatewayTimeout, codeTimeout, "outcome unknown: "+err.Error())
		}
	case errors.Is(err, skiff.ErrTooLarge):
		writeError(w, http.StatusRequestEntityTooLarge, codeTooLarge, err.Error())
	case errors.Is(err, skiff.ErrRejected):
		writeError(w, http.StatusServiceUnavailable, codeNoLeader, err.Error())
	case errors.Is(err, skiff.ErrClosed), errors.Is(err, skiff.ErrGroupStopped), errors.Is(err, skiff.ErrGroupFailed):
		// The replica is stopping (or stopped on a fatal error) while the
		// request waited: a write may still have committed elsewhere.
		if write {
			writeError(w, http.StatusGatewayTimeout, codeTimeout, "outcome unknown (this replica stopped): "+err.Error())
			return
		}
		writeError(w, http.StatusServiceUnavailable, codeUnavailable, err.Error())
	case errors.Is(err, skiff.ErrBusy), errors.Is(err, skiff.ErrStale):
		writeError(w, http.StatusConflict, codeBusy, err.Error())
	case errors.Is(err, skiff.ErrNoNewEntries):
		writeError(w, http.StatusConflict, codeNoNewEntries, err.Error())
	case errors.Is(err, skiff.ErrDirNotExist), errors.Is(err, skiff.ErrInvalidConfig):
		writeError(w, http.StatusBadRequest, codeBadRequest, err.Error())
	case errors.Is(err, context.Canceled):
		// The client went away; nobody reads the answer.
		if write {
			writeError(w, http.StatusGatewayTimeout, codeTimeout, "outcome unknown (the request was canceled): "+err.Error())
			return
		}
		writeError(w, http.StatusServiceUnavailable, codeCanceled, err.Error())
	default:
		a.log.Warn("request failed", "method", r.Method, "path", r.URL.Path, "err", err)
		writeError(w, http.StatusInternalServerError, codeInternal, err.Error())
	}
}

func (a *api) ctx(r *http.Request) (context.Context, context.CancelFunc) {
	return context.WithTimeout(r.Context(), a.c.requestTimeout)
}

func (a *api) propose(w http.ResponseWriter, r *http.Request, cmd []byte) (uint64, bool) {
	ctx, cancel := a.ctx(r)
	defer cancel()
	res, err := a.h.Propose(ctx, kvGroup, cmd)
	if err != nil {
		a.fail(w, r, err)
		return 0, false
	}
	return res.Value, true
}

func (a *api) put(w http.ResponseWriter, r *http.Request) {
	key := r.PathValue("key")
	if key == "" {
		writeError(w, http.StatusBadRequest, codeBadRequest, "empty key")
		return
	}
	if !utf8.ValidString(key) {
		// A scan answers with JSON strings, which cannot carry it.
		writeError(w, http.StatusBadRequest, codeBadRequest, "the key is not valid UTF-8")
		return
	}
	value, err := io.ReadAll(http.MaxBytesReader(w, r.Body, int64(a.c.maxValueBytes)))
	var tooLarge *http.MaxBytesError
	switch {
	case errors.As(err, &tooLarge):
		writeError(w, http.StatusRequestEntityTooLarge, codeTooLarge,
			fmt.Sprintf("value larger than %d bytes", a.c.maxValueBytes))
		return
	case err != nil:
		writeError(w, http.StatusBadRequest, codeBadRequest, "reading the body: "+err.Error())
		return
	}
	var cmd []byte
	if r.URL.Query().Has("prev") {
		cmd = kv.EncodeCAS([]byte(key), []byte(r.URL.Query().Get("prev")), value)
	} else {
		cmd = kv.EncodePut([]byte(key), value)
	}
	result, ok := a.propose(w, r, cmd)
	if !ok {
		return
	}
	if result == kv.ResultMismatch {
		writeError(w, http.StatusPreconditionFailed, codeMismatch, "the current value is not ?prev")
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (a *api) del(w http.ResponseWriter, r *http.Request) {
	key := r.PathValue("key")
	if key == "" {
		writeError(w, http.StatusBadRequest, codeBadRequest, "empty key")
		return
	}
	if _, ok := a.propose(w, r, kv.EncodeDelete([]byte(key))); ok {
		w.WriteHeader(http.StatusNoContent)
	}
}

// read runs query linearizably, or locally with ?stale=true.
func (a *api) read(w http.ResponseWriter, r *http.Request, query []byte) ([]byte, bool) {
	stale, err := boolParam(r, "stale")
	if err != nil {
		writeError(w, http.StatusBadRequest, codeBadRequest, err.Error())
		return nil, false
	}
	ctx, cancel := a.ctx(r)
	defer cancel()
	var resp []byte
	if stale {
		resp, err = a.h.StaleRead(ctx, kvGroup, query)
	} else {
		resp, err = a.h.Read(ctx, kvGroup, query)
	}
	if err != nil {
		a.fail(w, r, err)
		return nil, false
	}
	return resp, true
}

func (a *api) get(w http.ResponseWriter, r *http.Request) {
	key := r.PathValue("key")
	if key == "" {
		writeError(w, http.StatusBadRequest, codeBadRequest, "empty key")
		return
	}
	resp, ok := a.read(w, r, kv.EncodeGet([]byte(key)))
	if !ok {
		return
	}
	value, found, err := kv.DecodeGet(resp)
	switch {
	case err != nil:
		a.fail(w, r, err)
	case !found:
		writeError(w, http.StatusNotFound, codeNotFound, "no such key")
	default:
		w.Header().Set("Content-Type", "application/octet-stream")
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write(value)
	}
}

// truncatedHeader is set on a scan that stopped at its limit with more
// keys left.
const truncatedHeader = "X-Skiffkv-Truncated"

// scan answers with at most ?limit keys, and never more than
// --max-scan-keys: an unbounded scan would build the whole store in memory.
func (a *api) scan(w http.ResponseWriter, r *http.Request) {
	var base64 bool
	switch enc := r.URL.Query().Get("encoding"); enc {
	case "", "utf-8":
	case "base64":
		base64 = true
	default:
		writeError(w, http.StatusBadRequest, codeBadRequest, fmt.Sprintf("?encoding=%q: want utf-8 or base64", enc))
		return
	}
	limit := a.c.maxScanKeys
	if s := r.URL.Query().Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n <= 0 {
			writeError(w, http.StatusBadRequest, codeBadRequest, "?limit must be a positive integer")
			return
		}
		limit = min(n, limit)
	}
	// One more than the limit says whether keys are left.
	resp, ok := a.read(w, r, kv.EncodeScan([]byte(r.URL.Query().Get("prefix")), limit+1))
	if !ok {
		return
	}
	pairs, err := kv.DecodeScan(resp)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	if len(pairs) > limit {
		pairs = pairs[:limit]
		w.Header().Set(truncatedHeader, "true")
	}
	out := make(map[string]string, len(pairs))
	for _, p := range pairs {
		if base64 {
			out[b64.StdEncoding.EncodeToString(p.Key)] = b64.StdEncoding.EncodeToString(p.Value)
			continue
		}
		if !utf8.Valid(p.Key) || !utf8.Valid(p.Value) {
			// JSON would replace the bytes with U+FFFD: never answer with
			// data other than what is stored.
			writeError(w, http.StatusBadRequest, codeBadRequest,
				fmt.Sprintf("key %q or its value is not valid UTF-8: scan with ?encoding=base64", p.Key))
			return
		}
		out[string(p.Key)] = string(p.Value)
	}
	writeJSON(w, http.StatusOK, out)
}

// statusBody is GET /v1/status.
type statusBody struct {
	ID         uint64            `json:"id"`
	Leader     uint64            `json:"leader"`
	Term       uint64            `json:"term"`
	Commit     uint64            `json:"commit"`
	Applied    uint64            `json:"applied"`
	FirstIndex uint64            `json:"first_index"`
	LastIndex  uint64            `json:"last_index"`
	LogBytes   int64             `json:"log_bytes"`
	Snapshot   snapshotStatus    `json:"snapshot"`
	Members    map[string]string `json:"members"`
	NonVoters  map[string]string `json:"non_voters,omitempty"`
	Transfers  []transferStatus  `json:"transfers"`
	Events     []eventStatus     `json:"events"`
	Failed     string            `json:"failed,omitempty"`
}

type snapshotStatus struct {
	Index uint64 `json:"index"`
	Term  uint64 `json:"term"`
	Bytes int64  `json:"bytes"`
	Files int    `json:"files"`
}

type transferStatus struct {
	Direction   string    `json:"direction"` // "sending" or "receiving"
	Peer        uint64    `json:"peer"`
	Index       uint64    `json:"index"`
	Phase       string    `json:"phase"`
	BytesDone   int64     `json:"bytes_done"`
	BytesTotal  int64     `json:"bytes_total"`
	BytesPerSec float64   `json:"bytes_per_sec"`
	Started     time.Time `json:"started"`
}

func (a *api) status(w http.ResponseWriter, r *http.Request) {
	st, err := a.h.GroupStatus(kvGroup)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	body := statusBody{
		ID: uint64(st.ReplicaID), Leader: uint64(st.Leader), Term: st.Term, Commit: st.Commit,
		Applied: st.Applied, FirstIndex: st.FirstIndex, LastIndex: st.LastIndex, LogBytes: st.LogBytes,
		Snapshot:  snapshotStatus{Index: st.Snapshot.Index, Term: st.Snapshot.Term, Bytes: st.Snapshot.Bytes, Files: st.Snapshot.Files},
		Members:   memberStrings(st.Members),
		NonVoters: nilIfEmpty(memberStrings(st.NonVoters)),
		Transfers: []transferStatus{},
		Events:    a.events.list(),
	}
	if st.Failed != nil {
		body.Failed = st.Failed.Error()
	}
	for _, t := range st.Transfers {
		dir := "receiving"
		if t.Sending {
			dir = "sending"
		}
		body.Transfers = append(body.Transfers, transferStatus{Direction: dir, Peer: uint64(t.Peer), Index: t.Index,
			Phase: t.Phase, BytesDone: t.BytesDone, BytesTotal: t.BytesTotal, BytesPerSec: t.BytesPerSec, Started: t.Started})
	}
	writeJSON(w, http.StatusOK, body)
}

func memberStrings(m map[skiff.ReplicaID]string) map[string]string {
	out := make(map[string]string, len(m))
	for id, addr := range m {
		out[strconv.FormatUint(uint64(id), 10)] = addr
	}
	return out
}

func (a *api) snapshot(w http.ResponseWriter, r *http.Request) {
	var opt skiff.SnapshotOption
	if dir := r.URL.Query().Get("export"); dir != "" {
		if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
			writeError(w, http.StatusBadRequest, codeBadRequest, fmt.Sprintf("?export=%s: not a directory on this replica's host", dir))
			return
		}
		opt = skiff.SnapshotOption{Exported: true, ExportPath: dir}
	}
	// An export writes the whole state: it is bounded by the client
	// (skiffctl waits minutes), not by --request-timeout.
	ctx, cancel := a.ctx(r)
	if opt.Exported {
		ctx, cancel = context.WithCancel(r.Context())
	}
	defer cancel()
	start := time.Now()
	idx, err := a.h.RequestSnapshot(ctx, kvGroup, opt)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"index": idx, "seconds": time.Since(start).Seconds()})
}

func (a *api) addMember(w http.ResponseWriter, r *http.Request) {
	id, ok := replicaParam(w, r)
	if !ok {
		return
	}
	addr := r.URL.Query().Get("addr")
	if _, _, err := net.SplitHostPort(addr); err != nil {
		writeError(w, http.StatusBadRequest, codeBadRequest, "?addr=HOST:PORT is required")
		return
	}
	nonVoting, err := boolParam(r, "non_voting")
	if err != nil {
		writeError(w, http.StatusBadRequest, codeBadRequest, err.Error())
		return
	}
	ctx, cancel := a.ctx(r)
	defer cancel()
	if nonVoting {
		err = a.h.AddNonVoting(ctx, kvGroup, id, addr)
	} else {
		err = a.h.AddReplica(ctx, kvGroup, id, addr)
	}
	if err != nil {
		a.fail(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (a *api) removeMember(w http.ResponseWriter, r *http.Request) {
	a.replicaOp(w, r, func(ctx context.Context, id skiff.ReplicaID) error { return a.h.RemoveReplica(ctx, kvGroup, id) })
}

func (a *api) transferLeader(w http.ResponseWriter, r *http.Request) {
	a.replicaOp(w, r, func(ctx context.Context, id skiff.ReplicaID) error { return a.h.TransferLeadership(ctx, kvGroup, id) })
}

// replicaOp runs op on the replica of the path's {id}: 204, or the error.
func (a *api) replicaOp(w http.ResponseWriter, r *http.Request, op func(context.Context, skiff.ReplicaID) error) {
	id, ok := replicaParam(w, r)
	if !ok {
		return
	}
	ctx, cancel := a.ctx(r)
	defer cancel()
	if err := op(ctx, id); err != nil {
		a.fail(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func replicaParam(w http.ResponseWriter, r *http.Request) (skiff.ReplicaID, bool) {
	id, err := strconv.ParseUint(r.PathValue("id"), 10, 64)
	if err != nil || id == 0 {
		writeError(w, http.StatusBadRequest, codeBadRequest, "the replica ID must be a non-zero integer")
		return 0, false
	}
	return skiff.ReplicaID(id), true
}

func boolParam(r *http.Request, name string) (bool, error) {
	s := r.URL.Query().Get(name)
	if s == "" {
		return false, nil
	}
	b, err := strconv.ParseBool(s)
	if err != nil {
		return false, fmt.Errorf("?%s=%q: want true or false", name, s)
	}
	return b, nil
}

func nilIfEmpty(m map[string]string) map[string]string {
	if len(m) == 0 {
		return nil
	}
	return m
}

// eventLog keeps the host's recent events for /v1/status.
type eventLog struct {
	mu     sync.Mutex
	events []eventStatus
}

type eventStatus struct {
	Time  time.Time `json:"time"`
	Kind  string    `json:"kind"`
	Index uint64    `json:"index,omitempty"`
	Term  uint64    `json:"term,omitempty"`
	Bytes int64     `json:"bytes,omitempty"`
	Peer  uint64    `json:"peer,omitempty"`
	Error string    `json:"error,omitempty"`
}

const keptEvents = 64

func newEventLog() *eventLog { return &eventLog{} }

func (l *eventLog) add(e skiff.Event) {
	es := eventStatus{Time: time.Now(), Kind: e.Kind.String(), Index: e.Index, Term: e.Term, Bytes: e.Bytes, Peer: uint64(e.Peer)}
	if e.Kind == skiff.LeaderChanged {
		es.Peer = uint64(e.Leader)
	}
	if e.Err != nil {
		es.Error = e.Err.Error()
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.events) == keptEvents {
		copy(l.events, l.events[1:])
		l.events = l.events[:keptEvents-1]
	}
	l.events = append(l.events, es)
}

func (l *eventLog) list() []eventStatus {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]eventStatus{}, l.events...)
}
