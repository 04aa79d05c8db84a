// Package metrics is the events subscriber that counts what the plugin does,
// in the Prometheus data model: polls, refusals, runs, patch requests,
// pushes, webhook deliveries, and the deliveries of the other subscribers
// that failed. Each backend (mount) owns one Metrics with its own registry;
// nothing here is global, so two mounts served by one plugin process never
// mix their numbers.
//
// Every label value comes from a small fixed set or from names the operator
// configured (patch targets, receivers): an event cannot grow the number of
// series by carrying a commit id, a run id or a caller's text.
package metrics

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"

	"github.com/flant/flant_gitops/backend/events"
)

// ContentType is the media type of Text: Prometheus' text exposition
// format 0.0.4, which every Prometheus version scrapes.
var ContentType = string(expfmt.NewFormat(expfmt.TypeTextPlain))

// Delivery kinds of DeliveryFailed.
const (
	DeliveryCommitStatus = "commit_status"
	DeliveryNotification = "notification"
)

// other replaces a label value outside its fixed set.
const other = "other"

// Poll outcomes as the watch words them (status' last_poll_outcome). The
// first five mean the branch was fetched and a decision made: a successful
// poll.
var (
	successfulPolls = []string{"up_to_date", "ran", "refused", "backoff", "held"}
	pollOutcomes    = append(append([]string{}, successfulPolls...), "error", "fenced", "recovering", "not_configured")
	runOutcomes     = []string{events.RunSucceeded, events.RunFailed, events.RunCanceled, events.RunInterrupted}
	patchOutcomes   = []string{events.PatchLanded, events.PatchNoop, events.PatchDryRun, events.PatchDenied, events.PatchInvalid,
		events.PatchConflict, events.PatchRefused, events.PatchBusy, events.PatchError}
	refusalCauses   = []string{events.RefusedSignatures, events.RefusedAncestry}
	deliveryKinds   = []string{DeliveryCommitStatus, DeliveryNotification}
	webhookOutcomes = []string{"accepted", "ignored"}
)

// Buckets, in seconds. A run is a deploy: seconds to the one-hour default
// run timeout. A patch request is a fetch, an apply and a push: tens of
// milliseconds on a near git server, minutes when a busy branch queues.
var (
	runBuckets   = []float64{1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600}
	patchBuckets = []float64{0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300}
	groupBuckets = []float64{1, 2, 4, 8, 16, 32, 64}
)

// Sources are the values read when Prometheus scrapes rather than counted
// from events. A nil func leaves its metrics out.
type Sources struct {
	// Version is the plugin's version (build_info).
	Version string
	// Dropped and Queued are the bus's per-subscriber counts.
	Dropped func() map[string]uint64
	Queued  func() map[string]int
	// PatchQueue is how many patch requests wait for their branch, and the
	// bytes the requests of every branch hold, summed over the mount.
	PatchQueue func() (requests int, bytes int64)
	// RunInProgress says whether the watch has a run now: asked of the
	// worker rather than counted from events, so a run a new active node
	// re-attached to after a handover counts too.
	RunInProgress func() bool
}

// Metrics is one mount's metrics. Handle is its events.Handler.
type Metrics struct {
	reg *prometheus.Registry

	polls              *prometheus.CounterVec
	lastSuccessfulPoll prometheus.Gauge
	refused            *prometheus.CounterVec
	runs               *prometheus.CounterVec
	runDuration        prometheus.Histogram
	runStarted         prometheus.Gauge
	patchRequests      *prometheus.CounterVec
	patchDuration      prometheus.Histogram
	groupSize          prometheus.Histogram
	pushDuration       prometheus.Histogram
	webhooks           *prometheus.CounterVec
	deliveryFailures   *prometheus.CounterVec

	// bounded keeps label values seen of the operator's names, per label,
	// so that even a flood of deleted and recreated names stays bounded.
	mu      sync.Mutex
	bounded map[string]map[string]bool
}

// maxNames bounds the values of a label made of operator-configured names
// (patch targets, receivers); further names count under "other".
const maxNames = 256

// New makes a mount's metrics with its own registry.
func New(src Sources) *Metrics {
	const ns = "flant_gitops"
	m := &Metrics{reg: prometheus.NewRegistry(), bounded: map[string]map[string]bool{}}
	m.polls = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "polls_total",
		Help: "Polls of the watched branch by outcome (status' last_poll_outcome)."}, []string{"outcome"})
	m.lastSuccessfulPoll = prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Name: "last_successful_poll_timestamp_seconds",
		Help: "Unix time of the last poll that fetched the branch and decided (up_to_date, ran, refused, backoff, held); 0 before the first since the plugin started."})
	m.refused = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "commits_refused_total",
		Help: "Polls that refused the branch's HEAD, by the check that refused it (signatures, ancestry)."}, []string{"reason"})
	m.runs = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "runs_total",
		Help: "Finished runs by outcome (succeeded, failed, canceled, interrupted)."}, []string{"outcome"})
	m.runDuration = prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: ns, Name: "run_duration_seconds",
		Help: "How long finished runs ran.", Buckets: runBuckets})
	m.runStarted = prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Name: "run_started_timestamp_seconds",
		Help: "Unix time the last run started; 0 before the first since the plugin started."})
	m.patchRequests = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "patch_requests_total",
		Help: "Answered patch requests by target (configure/repository name; empty when none was configured by that name) and outcome."},
		[]string{"repository", "outcome"})
	m.patchDuration = prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: ns, Name: "patch_request_duration_seconds",
		Help: "How long patch requests took to answer, queueing included.", Buckets: patchBuckets})
	m.groupSize = prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: ns, Name: "patch_group_size",
		Help: "Commits carried by each accepted push (group commit).", Buckets: groupBuckets})
	m.pushDuration = prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: ns, Name: "patch_push_duration_seconds",
		Help: "How long each accepted push of a group took, the push alone.", Buckets: patchBuckets})
	m.webhooks = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "webhook_deliveries_total",
		Help: "Forge webhook deliveries that reached a receiver, by receiver name and outcome (accepted, ignored)."},
		[]string{"receiver", "outcome"})
	m.deliveryFailures = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "delivery_failures_total",
		Help: "Failed attempts to deliver to the outside, by kind (commit_status, notification)."}, []string{"kind"})

	// Known label values start at 0, so rate() and absent-series alerts
	// work before the first event.
	for _, o := range pollOutcomes {
		m.polls.WithLabelValues(o)
	}
	for _, r := range refusalCauses {
		m.refused.WithLabelValues(r)
	}
	for _, o := range runOutcomes {
		m.runs.WithLabelValues(o)
	}
	for _, k := range deliveryKinds {
		m.deliveryFailures.WithLabelValues(k)
	}
	buildInfo := prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Name: "build_info",
		Help: "Always 1; the plugin's version is its label.", ConstLabels: prometheus.Labels{"version": src.Version}})
	buildInfo.Set(1)

	m.reg.MustRegister(m.polls, m.lastSuccessfulPoll, m.refused, m.runs, m.runDuration, m.runStarted,
		m.patchRequests, m.patchDuration, m.groupSize, m.pushDuration, m.webhooks, m.deliveryFailures, buildInfo,
		&scrapeTime{src: src})
	return m
}

// Handle counts one event; it is the bus subscriber's handler.
func (m *Metrics) Handle(_ context.Context, e events.Event) {
	switch e.Kind {
	case events.PollFinished:
		o := oneOf(e.Outcome, pollOutcomes)
		m.polls.WithLabelValues(o).Inc()
		if contains(successfulPolls, o) {
			m.lastSuccessfulPoll.Set(unix(e.Time))
		}
	case events.CommitRefused:
		m.refused.WithLabelValues(oneOf(e.Cause, refusalCauses)).Inc()
	case events.RunStarted:
		m.runStarted.Set(unix(e.Time))
	case events.RunFinished:
		m.runs.WithLabelValues(oneOf(e.Outcome, runOutcomes)).Inc()
		m.runDuration.Observe(e.Duration.Seconds())
	case events.PatchFinished:
		m.patchRequests.WithLabelValues(m.name("repository", e.Target), oneOf(e.Outcome, patchOutcomes)).Inc()
		m.patchDuration.Observe(e.Duration.Seconds())
	case events.GroupPushed:
		m.groupSize.Observe(float64(e.GroupSize))
		m.pushDuration.Observe(e.Duration.Seconds())
	case events.WebhookDelivery:
		m.webhooks.WithLabelValues(m.name("receiver", e.Target), oneOf(e.Outcome, webhookOutcomes)).Inc()
	}
}

// DeliveryFailed counts one failed attempt to deliver to the outside: kind
// is DeliveryCommitStatus or DeliveryNotification (others count as
// "other"). Safe for concurrent use; it never blocks.
func (m *Metrics) DeliveryFailed(kind string) {
	m.deliveryFailures.WithLabelValues(oneOf(kind, deliveryKinds)).Inc()
}

// Registry is the mount's registry, for tests and for adding collectors.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Text gathers every metric and encodes it in the text format of
// ContentType.
func (m *Metrics) Text() ([]byte, error) {
	mfs, err := m.reg.Gather()
	if err != nil {
		return nil, fmt.Errorf("gathering the metrics: %w", err)
	}
	var buf bytes.Buffer
	enc := expfmt.NewEncoder(&buf, expfmt.NewFormat(expfmt.TypeTextPlain))
	for _, mf := range mfs {
		if err := enc.Encode(mf); err != nil {
			return nil, fmt.Errorf("encoding metric %s: %w", mf.GetName(), err)
		}
	}
	return buf.Bytes(), nil
}

// name bounds the values of an operator-named label: the first maxNames
// distinct names keep theirs, later ones count as "other".
func (m *Metrics) name(label, v string) string {
	m.mu.Lock()
	defer m.mu.Unlock()
	seen := m.bounded[label]
	if seen == nil {
		seen = map[string]bool{}
		m.bounded[label] = seen
	}
	if seen[v] {
		return v
	}
	if len(seen) >= maxNames {
		return other
	}
	seen[v] = true
	return v
}

func oneOf(v string, known []string) string {
	if contains(known, v) {
		return v
	}
	return other
}

func contains(set []string, v string) bool {
	for _, s := range set {
		if s == v {
			return true
		}
	}
	return false
}

func unix(t time.Time) float64 {
	if t.IsZero() {
		t = time.Now()
	}
	return float64(t.UnixNano()) / 1e9
}

// scrapeTime collects the values read from the bus, the patch queues and
// the worker when Prometheus scrapes.
type scrapeTime struct{ src Sources }

var (
	droppedDesc = prometheus.NewDesc("flant_gitops_events_dropped_total",
		"Events a subscriber lost because its queue was full.", []string{"subscriber"}, nil)
	queuedDesc = prometheus.NewDesc("flant_gitops_events_queued",
		"Events waiting in a subscriber's queue.", []string{"subscriber"}, nil)
	queueDepthDesc = prometheus.NewDesc("flant_gitops_patch_queue_depth",
		"Patch requests waiting for their branch, not counting the groups being pushed.", nil, nil)
	queueBytesDesc = prometheus.NewDesc("flant_gitops_patch_queue_bytes",
		"Bytes the patch requests of the mount's branches hold, waiting or being pushed.", nil, nil)
	inProgressDesc = prometheus.NewDesc("flant_gitops_run_in_progress",
		"1 while the watch has a run (from its Vault requests to its container's end), else 0.", nil, nil)
)

func (c *scrapeTime) Describe(ch chan<- *prometheus.Desc) {
	ch <- droppedDesc
	ch <- queuedDesc
	ch <- queueDepthDesc
	ch <- queueBytesDesc
	ch <- inProgressDesc
}

func (c *scrapeTime) Collect(ch chan<- prometheus.Metric) {
	if c.src.Dropped != nil {
		for name, n := range c.src.Dropped() {
			ch <- prometheus.MustNewConstMetric(droppedDesc, prometheus.CounterValue, float64(n), name)
		}
	}
	if c.src.Queued != nil {
		for name, n := range c.src.Queued() {
			ch <- prometheus.MustNewConstMetric(queuedDesc, prometheus.GaugeValue, float64(n), name)
		}
	}
	if c.src.PatchQueue != nil {
		n, b := c.src.PatchQueue()
		ch <- prometheus.MustNewConstMetric(queueDepthDesc, prometheus.GaugeValue, float64(n))
		ch <- prometheus.MustNewConstMetric(queueBytesDesc, prometheus.GaugeValue, float64(b))
	}
	if c.src.RunInProgress != nil {
		v := 0.0
		if c.src.RunInProgress() {
			v = 1
		}
		ch <- prometheus.MustNewConstMetric(inProgressDesc, prometheus.GaugeValue, v)
	}
}
