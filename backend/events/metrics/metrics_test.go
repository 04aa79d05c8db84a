package metrics

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/flant/flant_gitops/backend/events"
)

func TestEventsCounted(t *testing.T) {
	at := time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC)
	cases := []struct {
		name   string
		events []events.Event
		metric string // the collector's text as testutil expects it
		want   string
	}{
		{
			name: "polls by outcome, the last successful one's time",
			events: []events.Event{
				{Kind: events.PollFinished, Outcome: "up_to_date", Time: at},
				{Kind: events.PollFinished, Outcome: "error", Time: at.Add(time.Minute)},
				{Kind: events.PollFinished, Outcome: "a word the watch may add later", Time: at.Add(2 * time.Minute)},
			},
			metric: "flant_gitops_last_successful_poll_timestamp_seconds",
			want:   fmt.Sprintf("flant_gitops_last_successful_poll_timestamp_seconds %d\n", at.Unix()),
		},
		{
			name: "refusals by cause; an unknown cause is other",
			events: []events.Event{
				{Kind: events.CommitRefused, Cause: events.RefusedSignatures, Commit: strings.Repeat("a", 40)},
				{Kind: events.CommitRefused, Cause: events.RefusedSignatures, Commit: strings.Repeat("b", 40)},
				{Kind: events.CommitRefused, Cause: events.RefusedAncestry},
				{Kind: events.CommitRefused},
			},
			metric: "flant_gitops_commits_refused_total",
			want: `flant_gitops_commits_refused_total{reason="ancestry"} 1
flant_gitops_commits_refused_total{reason="other"} 1
flant_gitops_commits_refused_total{reason="signatures"} 2
`,
		},
		{
			name: "the last run's start",
			events: []events.Event{
				{Kind: events.RunStarted, Run: "r1", Time: at},
			},
			metric: "flant_gitops_run_started_timestamp_seconds",
			want:   fmt.Sprintf("flant_gitops_run_started_timestamp_seconds %d\n", at.Unix()),
		},
		{
			name: "runs by outcome and their duration",
			events: []events.Event{
				{Kind: events.RunStarted, Run: "r1", Time: at},
				{Kind: events.RunFinished, Run: "r1", Outcome: events.RunSucceeded, Duration: 42 * time.Second},
				{Kind: events.RunStarted, Run: "r2", Time: at},
				{Kind: events.RunFinished, Run: "r2", Outcome: events.RunFailed, Duration: 2 * time.Hour},
			},
			metric: "flant_gitops_runs_total",
			want: `flant_gitops_runs_total{outcome="canceled"} 0
flant_gitops_runs_total{outcome="failed"} 1
flant_gitops_runs_total{outcome="interrupted"} 0
flant_gitops_runs_total{outcome="succeeded"} 1
`,
		},
		{
			name: "patch requests by target and outcome",
			events: []events.Event{
				{Kind: events.PatchFinished, Target: "infra", Outcome: events.PatchLanded, Duration: time.Second},
				{Kind: events.PatchFinished, Target: "infra", Outcome: events.PatchLanded, Duration: time.Second},
				{Kind: events.PatchFinished, Target: "", Outcome: events.PatchInvalid},
				{Kind: events.PatchFinished, Target: "infra", Outcome: "surprise"},
			},
			metric: "flant_gitops_patch_requests_total",
			want: `flant_gitops_patch_requests_total{outcome="invalid",repository=""} 1
flant_gitops_patch_requests_total{outcome="landed",repository="infra"} 2
flant_gitops_patch_requests_total{outcome="other",repository="infra"} 1
`,
		},
		{
			name: "webhook deliveries by receiver and outcome",
			events: []events.Event{
				{Kind: events.WebhookDelivery, Target: "github", Outcome: "accepted", Trigger: "github"},
				{Kind: events.WebhookDelivery, Target: "github", Outcome: "ignored", Trigger: "github"},
			},
			metric: "flant_gitops_webhook_deliveries_total",
			want: `flant_gitops_webhook_deliveries_total{outcome="accepted",receiver="github"} 1
flant_gitops_webhook_deliveries_total{outcome="ignored",receiver="github"} 1
`,
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m := New(Sources{Version: "v9.9.9"})
			for _, e := range c.events {
				m.Handle(context.Background(), e)
			}
			if err := testutil.GatherAndCompare(m.Registry(), strings.NewReader(header(t, m, c.metric)+c.want), c.metric); err != nil {
				t.Error(err)
			}
		})
	}
}

// header is the HELP and TYPE lines of metric, as the registry has them.
func header(t *testing.T, m *Metrics, metric string) string {
	t.Helper()
	mfs, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == metric {
			return fmt.Sprintf("# HELP %s %s\n# TYPE %s %s\n", metric, mf.GetHelp(), metric, strings.ToLower(mf.GetType().String()))
		}
	}
	t.Fatalf("no metric %s", metric)
	return ""
}

func TestHistograms(t *testing.T) {
	m := New(Sources{})
	m.Handle(context.Background(), events.Event{Kind: events.RunFinished, Outcome: events.RunSucceeded, Duration: 42 * time.Second})
	m.Handle(context.Background(), events.Event{Kind: events.GroupPushed, GroupSize: 3, Duration: 300 * time.Millisecond})
	m.Handle(context.Background(), events.Event{Kind: events.GroupPushed, GroupSize: 1, Duration: 100 * time.Millisecond})
	m.Handle(context.Background(), events.Event{Kind: events.PatchFinished, Target: "infra", Outcome: events.PatchLanded, Duration: 2 * time.Second})

	mfs, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	type want struct {
		count uint64
		sum   float64
	}
	wants := map[string]want{
		"flant_gitops_run_duration_seconds":           {1, 42},
		"flant_gitops_patch_group_size":               {2, 4},
		"flant_gitops_patch_push_duration_seconds":    {2, 0.4},
		"flant_gitops_patch_request_duration_seconds": {1, 2},
	}
	for _, mf := range mfs {
		w, ok := wants[mf.GetName()]
		if !ok {
			continue
		}
		delete(wants, mf.GetName())
		h := mf.GetMetric()[0].GetHistogram()
		if h.GetSampleCount() != w.count || h.GetSampleSum() < w.sum-1e-9 || h.GetSampleSum() > w.sum+1e-9 {
			t.Errorf("%s: count %d sum %g, want %d and %g", mf.GetName(), h.GetSampleCount(), h.GetSampleSum(), w.count, w.sum)
		}
	}
	for name := range wants {
		t.Errorf("no histogram %s", name)
	}
}

func TestScrapeTimeValuesAndDeliveryFailures(t *testing.T) {
	dropped := map[string]uint64{"metrics": 0, "notifications": 7}
	running := false
	m := New(Sources{
		Version:       "v1.2.3",
		Dropped:       func() map[string]uint64 { return dropped },
		Queued:        func() map[string]int { return map[string]int{"metrics": 0, "notifications": 3} },
		PatchQueue:    func() (int, int64) { return 5, 4096 },
		RunInProgress: func() bool { return running },
	})
	m.DeliveryFailed(DeliveryNotification)
	m.DeliveryFailed(DeliveryNotification)
	m.DeliveryFailed("carrier pigeon")
	dropped["notifications"] = 9 // read at scrape time, not at New
	running = true

	for _, c := range []struct{ metric, want string }{
		{"flant_gitops_events_dropped_total", `flant_gitops_events_dropped_total{subscriber="metrics"} 0
flant_gitops_events_dropped_total{subscriber="notifications"} 9
`},
		{"flant_gitops_events_queued", `flant_gitops_events_queued{subscriber="metrics"} 0
flant_gitops_events_queued{subscriber="notifications"} 3
`},
		{"flant_gitops_patch_queue_depth", "flant_gitops_patch_queue_depth 5\n"},
		{"flant_gitops_patch_queue_bytes", "flant_gitops_patch_queue_bytes 4096\n"},
		{"flant_gitops_run_in_progress", "flant_gitops_run_in_progress 1\n"},
		{"flant_gitops_build_info", `flant_gitops_build_info{version="v1.2.3"} 1` + "\n"},
		{"flant_gitops_delivery_failures_total", `flant_gitops_delivery_failures_total{kind="commit_status"} 0
flant_gitops_delivery_failures_total{kind="notification"} 2
flant_gitops_delivery_failures_total{kind="other"} 1
`},
	} {
		t.Run(c.metric, func(t *testing.T) {
			if err := testutil.GatherAndCompare(m.Registry(), strings.NewReader(header(t, m, c.metric)+c.want), c.metric); err != nil {
				t.Error(err)
			}
		})
	}
}

// TestNamesAreBounded: a label of operator names never holds more than
// maxNames values, whatever the events carry.
func TestNamesAreBounded(t *testing.T) {
	m := New(Sources{})
	for i := range maxNames + 50 {
		m.Handle(context.Background(), events.Event{Kind: events.PatchFinished, Target: fmt.Sprintf("repo-%d", i), Outcome: events.PatchLanded})
	}
	if n := testutil.CollectAndCount(m.patchRequests); n != maxNames+1 {
		t.Fatalf("%d series of patch_requests_total, want %d names and other", n, maxNames+1)
	}
	if got := testutil.ToFloat64(m.patchRequests.WithLabelValues(other, events.PatchLanded)); got != 50 {
		t.Fatalf("other counted %g, want 50", got)
	}
}

// TestText: the exposition parses back, lints clean and says its type.
func TestText(t *testing.T) {
	m := New(Sources{Version: "v0.1.0", Dropped: func() map[string]uint64 { return map[string]uint64{"metrics": 0} }})
	m.Handle(context.Background(), events.Event{Kind: events.RunFinished, Outcome: events.RunSucceeded, Duration: time.Minute})
	body, err := m.Text()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(ContentType, "text/plain; version=0.0.4") {
		t.Errorf("ContentType = %q, want the text format 0.0.4", ContentType)
	}
	p := expfmt.NewTextParser(model.LegacyValidation)
	mfs, err := p.TextToMetricFamilies(strings.NewReader(string(body)))
	if err != nil {
		t.Fatalf("the exposition does not parse: %v\n%s", err, body)
	}
	if mfs["flant_gitops_runs_total"] == nil || mfs["flant_gitops_run_duration_seconds"] == nil {
		t.Errorf("missing families in\n%s", body)
	}
	problems, err := testutil.GatherAndLint(m.Registry())
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("lint: %s: %s", p.Metric, p.Text)
	}
}
