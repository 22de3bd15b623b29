package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/skiffdb/skiff"
	"github.com/skiffdb/skiff/examples/kv"
)

// kvGroup is the one Raft group skiffkv keeps its keys in.
const kvGroup skiff.GroupID = 1

// maxValueLimit is the most --max-value-bytes may be: the host's largest
// proposal (half the transport's 64 MiB frame, which carries a Raft entry
// whole), less room for the key (the HTTP server bounds it with the
// request line to 1 MiB) and the command's framing.
const maxValueLimit = skiff.DefaultMaxProposalBytes - 2<<20

// serveConfig is `skiffkv serve`'s command line.
type serveConfig struct {
	id           skiff.ReplicaID
	data         string
	raftAddr     string
	httpAddr     string
	members      map[skiff.ReplicaID]string
	join         bool
	deploymentID uint64

	snapshotEntries    uint64
	compactionOverhead uint64
	snapshotInterval   time.Duration
	maxSendRate        int64
	maxValueBytes      int
	maxScanKeys        int
	requestTimeout     time.Duration

	tlsCert, tlsKey, tlsCA string
	pprof                  bool
}

const serveUsage = `Usage: skiffkv serve --id ID --data DIR --raft-addr HOST:PORT --http-addr HOST:PORT
                     [--members ID=HOST:PORT,...] [--join] [flags]

Runs one replica of a skiffkv cluster. Start every initial replica with the
same --members (each ID with its Raft address); a replica added later with
POST /v1/members/{id} starts with --join instead.

Example (three terminals):
  skiffkv serve --id 1 --data /tmp/kv1 --raft-addr 127.0.0.1:7001 --http-addr 127.0.0.1:8001 \
      --members 1=127.0.0.1:7001,2=127.0.0.1:7002,3=127.0.0.1:7003
  (and the same with --id 2 / 3, their own --data, --raft-addr and --http-addr)

Flags:
`

// parseServe parses serve's flags; the error is a one-line usage error.
func parseServe(args []string, stderr io.Writer) (c serveConfig, err error) {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	// A flag error is one line (runServe prints it); --help prints usage.
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	defer func() {
		if errors.Is(err, flag.ErrHelp) {
			fs.SetOutput(stderr)
			fmt.Fprint(stderr, serveUsage)
			fs.PrintDefaults()
		}
	}()
	id := fs.Uint64("id", 0, "this replica's `ID` (non-zero, unique in the cluster)")
	fs.StringVar(&c.data, "data", "", "data `DIR` (log, snapshots and the Pebble database)")
	fs.StringVar(&c.raftAddr, "raft-addr", "", "`HOST:PORT` for Raft and snapshot traffic (what other replicas dial)")
	fs.StringVar(&c.httpAddr, "http-addr", "", "`HOST:PORT` of the HTTP API")
	members := fs.String("members", "", "initial members `ID=HOST:PORT,...` (the same on every initial replica)")
	fs.BoolVar(&c.join, "join", false, "start empty and wait to be added by the cluster (POST /v1/members/{id})")
	fs.Uint64Var(&c.deploymentID, "deployment-id", 1, "cluster `ID`: replicas of another deployment are refused")
	fs.Uint64Var(&c.snapshotEntries, "snapshot-entries", 10000, "take a snapshot every `N` applied entries (0: off)")
	fs.Uint64Var(&c.compactionOverhead, "compaction-overhead", 5000, "entries kept in the log below a snapshot")
	fs.DurationVar(&c.snapshotInterval, "snapshot-interval", 0, "also take a snapshot on this jittered `interval` (0: off)")
	fs.Int64Var(&c.maxSendRate, "max-snapshot-send-rate", 0, "cap on snapshot bytes sent per second, node-wide (`BYTES/S`, 0: unlimited)")
	fs.IntVar(&c.maxValueBytes, "max-value-bytes", kv.DefaultMaxValueBytes, "largest value accepted (`BYTES`); larger is 413")
	fs.IntVar(&c.maxScanKeys, "max-scan-keys", 100000, "most keys one scan returns (`N`); a scan cut short says so in the X-Skiffkv-Truncated header")
	fs.DurationVar(&c.requestTimeout, "request-timeout", 5*time.Second, "how long a request waits for its outcome before 504")
	fs.BoolVar(&c.pprof, "pprof", false, "serve Go's profiler under /debug/pprof/ on the HTTP address")
	fs.StringVar(&c.tlsCert, "tls-cert", "", "certificate `FILE` (PEM) for mutual TLS between replicas")
	fs.StringVar(&c.tlsKey, "tls-key", "", "private key `FILE` (PEM) of --tls-cert")
	fs.StringVar(&c.tlsCA, "tls-ca", "", "CA `FILE` (PEM) that signed every replica's certificate")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	c.id = skiff.ReplicaID(*id)
	switch {
	case c.id == 0:
		return c, errors.New("--id is required and must be non-zero")
	case c.data == "":
		return c, errors.New("--data is required")
	case c.raftAddr == "":
		return c, errors.New("--raft-addr is required")
	case c.httpAddr == "":
		return c, errors.New("--http-addr is required")
	case c.deploymentID == 0:
		return c, errors.New("--deployment-id must be non-zero")
	case c.maxValueBytes <= 0 || c.maxValueBytes > maxValueLimit:
		// A Raft entry travels whole in one transport frame (64 MiB); a
		// bigger one could never reach a follower and would wedge the group.
		return c, fmt.Errorf("--max-value-bytes must be between 1 and %d", maxValueLimit)
	case c.maxScanKeys <= 0:
		return c, errors.New("--max-scan-keys must be positive")
	case c.requestTimeout <= 0:
		return c, errors.New("--request-timeout must be positive")
	case c.maxSendRate < 0:
		return c, errors.New("--max-snapshot-send-rate must not be negative")
	}
	for _, a := range []struct{ flag, addr string }{{"--raft-addr", c.raftAddr}, {"--http-addr", c.httpAddr}} {
		if err := checkHostPort(a.addr); err != nil {
			return c, fmt.Errorf("%s %q: %v", a.flag, a.addr, err)
		}
	}
	if (c.tlsCert == "") != (c.tlsKey == "") || (c.tlsCert == "") != (c.tlsCA == "") {
		return c, errors.New("--tls-cert, --tls-key and --tls-ca go together")
	}
	if *members != "" {
		m, err := parseMembers(*members)
		if err != nil {
			return c, err
		}
		c.members = m
	}
	if !c.join {
		if c.members == nil {
			return c, errors.New("--members is required to start a new cluster (or --join to be added to one)")
		}
		addr, ok := c.members[c.id]
		if !ok {
			return c, fmt.Errorf("--members does not contain this replica's --id %d", c.id)
		}
		if addr != c.raftAddr {
			return c, fmt.Errorf("--members gives replica %d the address %s, but --raft-addr is %s", c.id, addr, c.raftAddr)
		}
	}
	return c, nil
}

// parseMembers parses "1=host:port,2=host:port".
func parseMembers(s string) (map[skiff.ReplicaID]string, error) {
	out := map[skiff.ReplicaID]string{}
	for part := range strings.SplitSeq(s, ",") {
		idStr, addr, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok {
			return nil, fmt.Errorf("--members: %q is not ID=HOST:PORT", part)
		}
		id, err := strconv.ParseUint(idStr, 10, 64)
		if err != nil || id == 0 {
			return nil, fmt.Errorf("--members: %q: the ID must be a non-zero integer", part)
		}
		if err := checkHostPort(addr); err != nil {
			return nil, fmt.Errorf("--members: %q: %v", part, err)
		}
		if _, dup := out[skiff.ReplicaID(id)]; dup {
			return nil, fmt.Errorf("--members: replica %d listed twice", id)
		}
		for other, a := range out {
			if a == addr {
				return nil, fmt.Errorf("--members: replicas %d and %d share the address %s", other, id, addr)
			}
		}
		out[skiff.ReplicaID(id)] = addr
	}
	return out, nil
}

// checkHostPort accepts HOST:PORT with a non-empty host and a port in
// 1..65535.
func checkHostPort(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil || host == "" {
		return errors.New("want HOST:PORT")
	}
	if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
		return errors.New("the port must be 1..65535")
	}
	return nil
}

func formatMembers(m map[skiff.ReplicaID]string) string {
	ids := make([]int, 0, len(m))
	for id := range m {
		ids = append(ids, int(id))
	}
	sort.Ints(ids)
	parts := make([]string, len(ids))
	for i, id := range ids {
		parts[i] = fmt.Sprintf("%d=%s", id, m[skiff.ReplicaID(id)])
	}
	return strings.Join(parts, ",")
}

// identity is written into a new data directory, so that the directory of
// another replica or another deployment is refused instead of being
// silently joined to the wrong cluster.
type identity struct {
	DeploymentID uint64 `json:"deployment_id"`
	ReplicaID    uint64 `json:"replica_id"`
}

const identityFile = "skiffkv.json"

// ErrWrongDataDir: --data belongs to another replica or deployment.
var ErrWrongDataDir = errors.New("data directory belongs to another replica or deployment")

// lockFile is held by the skiffkv serving a data directory, so that two
// processes never check or write its identity at once.
const lockFile = "skiffkv.lock"

// lockDataDir creates dir if needed and locks it for this process; release
// unlocks it.
func lockDataDir(dir string) (release func(), err error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(filepath.Join(dir, lockFile), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		return nil, fmt.Errorf("%s is in use by another skiffkv process (%s is locked): %w", dir, lockFile, err)
	}
	return func() { f.Close() }, nil
}

// checkIdentity creates dir's identity file or checks it matches c. The
// caller holds the directory's lock (lockDataDir).
func checkIdentity(c serveConfig) error {
	if err := os.MkdirAll(c.data, 0o755); err != nil {
		return err
	}
	want := identity{DeploymentID: c.deploymentID, ReplicaID: uint64(c.id)}
	path := filepath.Join(c.data, identityFile)
	b, err := os.ReadFile(path)
	switch {
	case err == nil:
		var got identity
		if err := json.Unmarshal(b, &got); err != nil {
			return fmt.Errorf("%s is corrupt (%v); is --data the right directory?", path, err)
		}
		if got != want {
			return fmt.Errorf("%w: %s holds replica %d of deployment %d, not replica %d of deployment %d",
				ErrWrongDataDir, c.data, got.ReplicaID, got.DeploymentID, want.ReplicaID, want.DeploymentID)
		}
		return nil
	case !errors.Is(err, os.ErrNotExist):
		return err
	}
	entries, err := os.ReadDir(c.data)
	if err != nil {
		return err
	}
	for _, e := range entries {
		// Ours: the lock, and the temporary file of an identity write a
		// crash interrupted (it is written again below).
		if n := e.Name(); n != lockFile && n != identityFile+".tmp" {
			return fmt.Errorf("%w: %s is not empty and has no %s (not a skiffkv data directory?)",
				ErrWrongDataDir, c.data, identityFile)
		}
	}
	b, _ = json.Marshal(want)
	return writeFileDurable(path, b)
}

// writeFileDurable writes path atomically and durably: temp file, fsync,
// rename, fsync of the directory.
func writeFileDurable(path string, b []byte) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	d, err := os.Open(filepath.Dir(path))
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

func loadTLS(c serveConfig) (*tls.Config, error) {
	if c.tlsCert == "" {
		return nil, nil
	}
	cert, err := tls.LoadX509KeyPair(c.tlsCert, c.tlsKey)
	if err != nil {
		return nil, fmt.Errorf("--tls-cert/--tls-key: %w", err)
	}
	pem, err := os.ReadFile(c.tlsCA)
	if err != nil {
		return nil, fmt.Errorf("--tls-ca: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("--tls-ca %s: no PEM certificate in it", c.tlsCA)
	}
	return &tls.Config{
		Certificates: []tls.Certificate{cert},
		RootCAs:      pool,
		ClientCAs:    pool,
		ClientAuth:   tls.RequireAndVerifyClientCert,
		MinVersion:   tls.VersionTLS13,
	}, nil
}

func runServe(ctx context.Context, args []string, stderr io.Writer) int {
	c, err := parseServe(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return exitOK
	}
	if err != nil {
		fmt.Fprintf(stderr, "skiffkv serve: %v (see --help)\n", err)
		return exitUsage
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelInfo})).
		With("replica", uint64(c.id))
	if err := serve(ctx, c, log); err != nil {
		log.Error("skiffkv serve stopped", "err", err)
		fmt.Fprintf(stderr, "skiffkv serve: %v\n", err)
		return exitFail
	}
	return exitOK
}

// serve runs one replica until ctx ends.
func serve(ctx context.Context, c serveConfig, log *slog.Logger) error {
	tlsCfg, err := loadTLS(c)
	if err != nil {
		return err
	}
	unlock, err := lockDataDir(c.data)
	if err != nil {
		return err
	}
	defer unlock()
	if err := checkIdentity(c); err != nil {
		return err
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	events := newEventLog()
	h, err := skiff.Open(skiff.HostConfig{
		Dir: c.data, RaftAddr: c.raftAddr, DeploymentID: c.deploymentID, TLS: tlsCfg,
		MaxSnapshotSendBytesPerSec: c.maxSendRate,
		Listener:                   events.add,
		Metrics:                    reg,
		Logger:                     log,
	})
	if err != nil {
		return fmt.Errorf("open host: %w", err)
	}
	defer h.Close()
	gc := skiff.GroupConfig{
		GroupID: kvGroup, ReplicaID: c.id, Members: c.members, Join: c.join,
		PreVote: true, CheckQuorum: true,
		SnapshotEntries: c.snapshotEntries, CompactionOverhead: c.compactionOverhead,
		SnapshotInterval: c.snapshotInterval, SnapshotMinGap: 1,
		SnapshotCompression: skiff.SnappyCompression,
	}
	create := kv.New(kv.Options{Dir: filepath.Join(c.data, "kv"), Logger: log})
	if err := h.StartGroup(ctx, gc, create); err != nil {
		return fmt.Errorf("start group: %w", err)
	}
	ln, err := net.Listen("tcp", c.httpAddr)
	if err != nil {
		return fmt.Errorf("http listen: %w", err)
	}
	api := &api{h: h, c: c, events: events, log: log, metrics: reg}
	srv := &http.Server{Handler: api.routes(), ReadHeaderTimeout: 10 * time.Second, ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}
	log.Info("skiffkv serving", "http", ln.Addr().String(), "raft", h.RaftAddr(), "data", c.data,
		"members", formatMembers(c.members), "join", c.join)
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case <-ctx.Done():
		log.Info("stopping")
	case err := <-errc:
		return fmt.Errorf("http: %w", err)
	}
	// Requests in flight get their full --request-timeout to finish.
	sctx, cancel := context.WithTimeout(context.Background(), max(5*time.Second, c.requestTimeout+time.Second))
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		log.Warn("http shutdown", "err", err)
	}
	if err := h.Close(); err != nil {
		return fmt.Errorf("close host: %w", err)
	}
	log.Info("stopped")
	return nil
}
