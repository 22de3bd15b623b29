package engine

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the host's Prometheus collectors. They are always updated;
// they are registered only when Config.Metrics is set.
type metrics struct {
	proposals         prometheus.Counter
	proposalsRejected prometheus.Counter
	applied           prometheus.Counter
	reads             prometheus.Counter
	saveLatency       prometheus.Histogram
	saveGroups        prometheus.Histogram
	saveEntries       prometheus.Histogram
	leaderChanges     prometheus.Counter
	snapshotBytes     *prometheus.CounterVec
	snapshotSeconds   *prometheus.HistogramVec
	failures          *prometheus.CounterVec
}

func newMetrics(e *Engine, reg prometheus.Registerer) *metrics {
	m := &metrics{
		proposals: prometheus.NewCounter(prometheus.CounterOpts{Namespace: "skiff", Name: "proposals_total",
			Help: "Proposals submitted on this host."}),
		proposalsRejected: prometheus.NewCounter(prometheus.CounterOpts{Namespace: "skiff", Name: "proposals_rejected_total",
			Help: "Proposals Raft refused (no leader, transfer, pending config change)."}),
		applied: prometheus.NewCounter(prometheus.CounterOpts{Namespace: "skiff", Name: "entries_applied_total",
			Help: "Committed entries applied to state machines."}),
		reads: prometheus.NewCounter(prometheus.CounterOpts{Namespace: "skiff", Name: "reads_total",
			Help: "Linearizable reads served."}),
		saveLatency: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: "skiff", Name: "log_save_seconds",
			Help:    "Duration of one log batch write and fsync for all groups of a step pass.",
			Buckets: prometheus.ExponentialBuckets(50e-6, 2, 14)}),
		saveGroups: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: "skiff", Name: "log_save_groups",
			Help: "Groups per log batch.", Buckets: prometheus.ExponentialBuckets(1, 2, 12)}),
		saveEntries: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: "skiff", Name: "log_save_entries",
			Help: "Entries per log batch.", Buckets: prometheus.ExponentialBuckets(1, 2, 14)}),
		leaderChanges: prometheus.NewCounter(prometheus.CounterOpts{Namespace: "skiff", Name: "leader_changes_total",
			Help: "Leader changes seen by replicas on this host (elections)."}),
		snapshotBytes: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "skiff", Name: "snapshot_bytes_total",
			Help: "Snapshot bytes by operation (created, sent, received)."}, []string{"op"}),
		snapshotSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: "skiff", Name: "snapshot_seconds",
			Help:    "Snapshot durations by phase (save; generate: a full data snapshot of an on-disk state machine made for a follower; transfer; install).",
			Buckets: prometheus.ExponentialBuckets(1e-3, 4, 10)}, []string{"phase"}),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "skiff", Name: "failures_total",
			Help: "Failures by reason (snapshot_save, snapshot_install, group, storage)."}, []string{"reason"}),
	}
	if reg == nil {
		return m
	}
	reg.MustRegister(m.proposals, m.proposalsRejected, m.applied, m.reads, m.saveLatency, m.saveGroups,
		m.saveEntries, m.leaderChanges, m.snapshotBytes, m.snapshotSeconds, m.failures,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: "skiff", Name: "snapshot_transfers_in_flight",
			Help: "Snapshot transfers in flight (both directions)."},
			func() float64 { return float64(len(e.transfers.List())) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: "skiff", Name: "groups",
			Help: "Groups running on this host."},
			func() float64 { e.mu.RLock(); defer e.mu.RUnlock(); return float64(len(e.nodes)) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: "skiff", Name: "messages_rejected_total",
			Help: "Messages refused: unknown group or a removed sender."},
			func() float64 { return float64(e.rejectedUnknownGroup.Load() + e.rejectedNonMember.Load()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: "skiff", Name: "transport_messages_dropped_total",
			Help: "Messages the transport dropped (queue full, peer down)."},
			func() float64 { return float64(e.cfg.Transport.Stats().MessagesDropped) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: "skiff", Name: "transport_rejected_deployment_total",
			Help: "Batches or connections from another deployment."},
			func() float64 { return float64(e.cfg.Transport.Stats().RejectedDeployment) }),
	)
	return m
}

func since(t time.Time) float64 { return time.Since(t).Seconds() }
