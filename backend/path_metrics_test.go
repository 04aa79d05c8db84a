package backend

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/flant/flant_gitops/backend/events"
	"github.com/flant/flant_gitops/backend/events/metrics"
	"github.com/flant/flant_gitops/backend/watch"
	"github.com/flant/flant_gitops/container"
	"github.com/flant/flant_gitops/gitwatch/gittest"
	"github.com/flant/flant_gitops/internal/waittest"
)

// readMetrics reads the metrics path and parses its answer.
func readMetrics(t *testing.T, b *backend, s logical.Storage) map[string]*dto.MetricFamily {
	t.Helper()
	resp := configReq(t, b, s, logical.ReadOperation, "metrics", nil)
	if resp.IsError() {
		t.Fatalf("read metrics: %v", resp.Error())
	}
	if ct := resp.Data[logical.HTTPContentType]; ct != metrics.ContentType || !strings.HasPrefix(metrics.ContentType, "text/plain; version=0.0.4") {
		t.Fatalf("content type %v, want %s", ct, metrics.ContentType)
	}
	if code := resp.Data[logical.HTTPStatusCode]; code != http.StatusOK {
		t.Fatalf("status %v", code)
	}
	body, _ := resp.Data[logical.HTTPRawBody].([]byte)
	p := expfmt.NewTextParser(model.LegacyValidation)
	mfs, err := p.TextToMetricFamilies(strings.NewReader(string(body)))
	if err != nil {
		t.Fatalf("the answer does not parse as the text format: %v\n%s", err, body)
	}
	return mfs
}

// value is the value of the series of family name with the given labels
// (a counter, a gauge, or a histogram's count); -1 when absent.
func value(mfs map[string]*dto.MetricFamily, name string, labels map[string]string) float64 {
	mf := mfs[name]
	if mf == nil {
		return -1
	}
next:
	for _, m := range mf.GetMetric() {
		have := map[string]string{}
		for _, l := range m.GetLabel() {
			have[l.GetName()] = l.GetValue()
		}
		for k, v := range labels {
			if have[k] != v {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.GetCounter().GetValue()
		case m.Gauge != nil:
			return m.GetGauge().GetValue()
		case m.Histogram != nil:
			return float64(m.GetHistogram().GetSampleCount())
		}
	}
	return -1
}

func TestMetricsPath(t *testing.T) {
	b, s := newTestBackend(t, nil, nil)

	mfs := readMetrics(t, b, s)
	if v := value(mfs, "flant_gitops_build_info", map[string]string{"version": Version}); v != 1 {
		t.Errorf("build_info{version=%q} = %g, want 1", Version, v)
	}
	if v := value(mfs, "flant_gitops_events_dropped_total", map[string]string{"subscriber": "metrics"}); v != 0 {
		t.Errorf("events_dropped_total{subscriber=metrics} = %g, want 0", v)
	}

	// What the watch publishes reaches the path through the bus.
	b.events.Publish(events.Event{Kind: events.RunStarted, Run: "r1"})
	b.events.Publish(events.Event{Kind: events.RunFinished, Run: "r1", Outcome: events.RunSucceeded, Duration: 3 * time.Second})
	b.events.Publish(events.Event{Kind: events.CommitRefused, Cause: events.RefusedSignatures})
	waittest.Until(t, func() bool {
		mfs = readMetrics(t, b, s)
		return value(mfs, "flant_gitops_runs_total", map[string]string{"outcome": "succeeded"}) == 1 &&
			value(mfs, "flant_gitops_commits_refused_total", map[string]string{"reason": "signatures"}) == 1
	})
	if v := value(mfs, "flant_gitops_run_in_progress", nil); v != 0 {
		t.Errorf("run_in_progress = %g after the run finished", v)
	}

	for _, c := range []struct {
		name string
		data map[string]any
		want string
	}{
		{"another format", map[string]any{"format": "json"}, `format "json" is not served`},
	} {
		t.Run(c.name, func(t *testing.T) {
			resp := configReq(t, b, s, logical.ReadOperation, "metrics", c.data)
			if !resp.IsError() || !strings.Contains(resp.Error().Error(), c.want) {
				t.Fatalf("answer %v, want a 400 saying %q", resp.Data, c.want)
			}
		})
	}
}

// TestMetricsRunInProgress: the gauge follows the worker's run, from its
// start to its end.
func TestMetricsRunInProgress(t *testing.T) {
	b, s := newTestBackend(t, nil, nil)
	srv := gittest.NewServer(t)
	repo := srv.NewRepo(t, "ops")
	repo.Commit(t, map[string]string{"deploy.sh": "echo deploy\n"})
	configReq(t, b, s, logical.UpdateOperation, "configure", map[string]any{
		"git_repo_url": repo.URL(), "docker_image": "sha256:" + strings.Repeat("1", 64), "commands": []string{"sh /git/deploy.sh"},
		"required_number_of_verified_signatures_on_commit": 0,
	})
	configReq(t, b, s, logical.UpdateOperation, "configure/git_credential", map[string]any{"username": srv.Username(), "password": srv.Password()})
	if v := value(readMetrics(t, b, s), "flant_gitops_run_in_progress", nil); v != 0 {
		t.Fatalf("run_in_progress = %g before any run", v)
	}
	// The mount's own worker on real git, with a runner whose container
	// runs until canceled.
	runner := &blockingRunner{started: make(chan container.Spec, 1)}
	deps := b.watchDeps()
	deps.NewRunner = func(context.Context) (container.Runner, error) { return runner, nil }
	b.watch = watch.New(b.Backend.Logger, deps)
	b.watch.Start(watchStorage{s})
	defer b.watch.Stop(context.Background())
	spec := <-runner.started
	if v := value(readMetrics(t, b, s), "flant_gitops_run_in_progress", nil); v != 1 {
		t.Fatalf("run_in_progress = %g while the run's container runs", v)
	}
	configReq(t, b, s, logical.UpdateOperation, "runs/"+spec.Labels[watch.LabelRun]+"/cancel", nil)
	waittest.Until(t, func() bool {
		mfs := readMetrics(t, b, s)
		return value(mfs, "flant_gitops_run_in_progress", nil) == 0 &&
			value(mfs, "flant_gitops_runs_total", map[string]string{"outcome": "canceled"}) == 1
	})
}

// TestMetricsOfPatches: a patch that lands counts under its target, with
// its push's group size and latency; a request naming no configured target
// counts without the name the caller made up.
func TestMetricsOfPatches(t *testing.T) {
	t.Setenv(cacheDirEnv, t.TempDir())
	ci := &logical.Entity{
		ID: "ent-1", Name: "entity_ci",
		Aliases: []*logical.Alias{{MountType: "jwt", MountAccessor: "auth_jwt_0a1b2c3d", Name: "my-group/my-project", Metadata: map[string]string{"project_path": "my-group/my-project"}}},
	}
	b, s := newTestBackend(t, ci, nil)
	srv := gittest.NewServer(t)
	remote := srv.NewRepo(t, "infra")
	remote.Commit(t, map[string]string{"my-group/my-project/release.yml": "tag: 1.2.4\n"}, gittest.Message("initial"))
	configReq(t, b, s, logical.UpdateOperation, "configure/policy", map[string]any{"trusted_auth_mount_accessors": "auth_jwt_0a1b2c3d"})
	configReq(t, b, s, logical.UpdateOperation, "configure/repository/infra", map[string]any{"url": remote.URL(), "username": srv.Username(), "password": srv.Password()})

	patchReq := func(repo, tag string) *logical.Response {
		t.Helper()
		resp, err := b.HandleRequest(context.Background(), &logical.Request{
			Operation: logical.UpdateOperation, Path: "patch/" + repo, Storage: s, MountPoint: "flant_gitops/", ID: "req-" + tag, EntityID: ci.ID,
			Data: map[string]any{"commands": []any{map[string]any{"path": "my-group/my-project/release.yml", "setField": map[string]any{"field": "tag", "value": tag}}}},
		})
		if err != nil && repo == "infra" {
			t.Fatalf("patch: %v", err)
		}
		return resp
	}
	patchReq("infra", "1.2.5")
	patchReq("made-up-name", "1.2.6")

	var mfs map[string]*dto.MetricFamily
	waittest.Until(t, func() bool {
		mfs = readMetrics(t, b, s)
		return value(mfs, "flant_gitops_patch_requests_total", map[string]string{"repository": "infra", "outcome": "landed"}) == 1 &&
			value(mfs, "flant_gitops_patch_requests_total", map[string]string{"repository": "", "outcome": "invalid"}) == 1
	})
	for _, c := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"flant_gitops_patch_group_size", nil, 1},
		{"flant_gitops_patch_push_duration_seconds", nil, 1},
		{"flant_gitops_patch_request_duration_seconds", nil, 2},
		{"flant_gitops_patch_queue_depth", nil, 0},
		{"flant_gitops_patch_requests_total", map[string]string{"repository": "made-up-name"}, -1},
	} {
		if v := value(mfs, c.name, c.labels); v != c.want {
			t.Errorf("%s%v = %g, want %g", c.name, c.labels, v, c.want)
		}
	}
}
