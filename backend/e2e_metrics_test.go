package backend

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/flant/flant_gitops/backend/events/metrics/promtest"
	"github.com/flant/flant_gitops/backend/vaulttest"
	"github.com/flant/flant_gitops/backend/watch"
	"github.com/flant/flant_gitops/container/dockertest"
	"github.com/flant/flant_gitops/gitwatch/gittest"
)

// metricsPolicy is the README's policy of a scraper.
const metricsPolicy = `path "flant_gitops/metrics" {
  capabilities = ["read"]
}
`

// TestE2EMetricsScrapedByPrometheus: Debian's Prometheus, configured with
// the README's scrape block, scrapes the metrics path of a real Vault
// (HTTPS, the plugin over gRPC) with a token that may read that path only;
// after a run in Docker, a refused under-signed commit and a patch pushed
// to a real git server, Prometheus' own query API has the counts.
func TestE2EMetricsScrapedByPrometheus(t *testing.T) {
	for _, bin := range []string{promtest.PrometheusBinary, promtest.PromtoolBinary} {
		if _, err := os.Stat(bin); err != nil {
			t.Fatalf("%s is missing: apt-get install prometheus (.ci/run installs it)", bin)
		}
	}
	docker := dockertest.Runner(t)
	git := gittest.NewServer(t)
	srv := vaulttest.NewServer(t, &vaulttest.Options{TLS: true, Env: []string{cacheDirEnv + "=" + t.TempDir()}})
	e := newWatchE2EOn(t, git, srv, docker, "alice", "bob", "carol")
	base := e.repo.Commit(t, map[string]string{"hello.txt": "base\n", "step.sh": "echo base\n", "values.yaml": "tag: 0\n"}, gittest.Message("base"))
	e.configure(map[string]any{
		"git_repo_url":    e.repo.URL(),
		"git_branch_name": "main",
		"git_poll_period": fmt.Sprintf("%ds", int(watchE2EPollPeriod.Seconds())),
		"required_number_of_verified_signatures_on_commit": 2,
		"initial_last_successful_commit":                   base,
		"docker_image":                                     dockertest.Image(t, e.docker),
		"commands":                                         []string{"sh /git/step.sh"},
		"run_timeout":                                      "120s",
		"network_mode":                                     "none",
	})

	// The scraper's token: the README's policy and nothing else.
	root := srv.Client
	if err := root.Sys().PutPolicy("flant-gitops-metrics", metricsPolicy); err != nil {
		t.Fatalf("writing the policy: %v", err)
	}
	reader := tokenWith(t, root, []string{"flant-gitops-metrics"}, true)
	stranger := tokenWith(t, root, []string{"default"}, false)
	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "vault-token")
	if err := os.WriteFile(tokenFile, []byte(reader+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	t.Run("the path is ACL-protected", func(t *testing.T) {
		for _, c := range []struct {
			name, token, path string
			want              int
		}{
			{"a token without the policy", stranger, "metrics", http.StatusForbidden},
			{"no token", "", "metrics", http.StatusForbidden},
			{"the scraper's token elsewhere", reader, "status", http.StatusForbidden},
			{"the scraper's token", reader, "metrics", http.StatusOK},
		} {
			t.Run(c.name, func(t *testing.T) {
				code, _, _ := scrapeVault(t, srv, c.token, c.path)
				if code != c.want {
					t.Fatalf("GET %s answered %d, want %d", c.path, code, c.want)
				}
			})
		}
	})

	// Debian's Prometheus with the README's scrape block, 1 s apart, and
	// the README's alert rules loaded (they must parse and evaluate).
	scrape := readmeBlock(t, "scrape_configs:")
	for old, repl := range map[string]string{
		"vault.example.com:8200":       strings.TrimPrefix(srv.Addr, "https://"),
		"/etc/prometheus/vault-token":  tokenFile,
		"/etc/prometheus/vault-ca.pem": srv.CACertPath,
		"scrape_interval: 30s":         "scrape_interval: 1s",
		"/v1/flant_gitops/metrics":     "/v1/" + vaulttest.MountPath + "/metrics",
	} {
		if !strings.Contains(scrape, old) {
			t.Fatalf("the README's scrape block has no %q:\n%s", old, scrape)
		}
		scrape = strings.ReplaceAll(scrape, old, repl)
	}
	rules := filepath.Join(dir, "rules.yml")
	if err := os.WriteFile(rules, []byte(readmeBlock(t, "alert: FlantGitopsNoSuccessfulPoll")), 0o600); err != nil {
		t.Fatal(err)
	}
	prom := promtest.Start(t, "global:\n  evaluation_interval: 1s\nrule_files:\n  - "+rules+"\n"+scrape)

	t.Run("a run, a refusal and a patch, as Prometheus sees them", func(t *testing.T) {
		good := e.commit("hello\n", "echo deployed", 0, 1)
		e.pollAndWait(good, watch.RunSucceeded)
		e.commit("under-signed\n", "echo must not run", 0)
		e.pollUntilOutcome(watch.OutcomeRefused)
		e.write("configure/policy", map[string]any{"policy": "package flant_gitops.patch\n\nviolations := set()\n"})
		e.write("configure/repository/ops", map[string]any{"url": e.repo.URL(), "username": git.Username(), "password": git.Password()})
		e.ciPatch("tag: 1\n")

		const wait = 90 * time.Second
		atLeast := func(n float64) func(float64) bool { return func(v float64) bool { return v >= n } }
		for _, c := range []struct {
			query string
			ok    func(float64) bool
		}{
			{`up{job="flant_gitops"}`, func(v float64) bool { return v == 1 }},
			{`flant_gitops_runs_total{outcome="succeeded"}`, atLeast(1)},
			{`flant_gitops_run_duration_seconds_count`, atLeast(1)},
			{`flant_gitops_run_in_progress`, func(v float64) bool { return v == 0 }},
			{`flant_gitops_commits_refused_total{reason="signatures"}`, atLeast(1)},
			{`flant_gitops_polls_total{outcome="refused"}`, atLeast(1)},
			{`flant_gitops_patch_requests_total{repository="ops",outcome="landed"}`, atLeast(1)},
			{`flant_gitops_patch_group_size_count`, atLeast(1)},
			{`flant_gitops_patch_push_duration_seconds_count`, atLeast(1)},
			{`flant_gitops_patch_queue_depth`, func(v float64) bool { return v == 0 }},
			{`time() - flant_gitops_last_successful_poll_timestamp_seconds`, func(v float64) bool { return v >= 0 && v < 60 }},
			{`flant_gitops_events_dropped_total{subscriber="metrics"}`, func(v float64) bool { return v == 0 }},
			{`flant_gitops_build_info{version="` + vaulttest.PluginVersion + `"}`, func(v float64) bool { return v == 1 }},
		} {
			s := prom.WaitFor(t, c.query, wait, c.ok)
			t.Logf("%s = %g", c.query, s.Value)
		}
		if got, err := prom.Query(context.Background(), `flant_gitops_runs_total{outcome="failed"}`); err != nil || len(got) != 1 || got[0].Value != 0 {
			t.Errorf("failed runs = %v (%v), want one series at 0", got, err)
		}
		// The README's alerts parse, and evaluate without error.
		if err := prom.RulesHealthy(context.Background()); err != nil {
			t.Errorf("the README's alert rules: %v", err)
		}
	})

	t.Run("promtool check metrics finds nothing in the answer", func(t *testing.T) {
		code, ctype, body := scrapeVault(t, srv, reader, "metrics?format=prometheus")
		if code != http.StatusOK || !strings.HasPrefix(ctype, "text/plain; version=0.0.4") {
			t.Fatalf("answer %d %q", code, ctype)
		}
		out, err := promtest.CheckMetrics(t, body)
		if err != nil || strings.TrimSpace(out) != "" {
			t.Fatalf("promtool check metrics: %v\n%s\nbody:\n%s", err, out, body)
		}
	})
}

// tokenWith makes a token of policies.
func tokenWith(t *testing.T, c *api.Client, policies []string, noDefault bool) string {
	t.Helper()
	s, err := c.Auth().Token().Create(&api.TokenCreateRequest{Policies: policies, NoDefaultPolicy: noDefault, TTL: "1h"})
	if err != nil || s == nil || s.Auth == nil {
		t.Fatalf("creating a token of %v: %v", policies, err)
	}
	return s.Auth.ClientToken
}

// scrapeVault GETs /v1/<mount>/<path> as Prometheus does: a bearer token in
// Authorization, the Vault CA trusted.
func scrapeVault(t *testing.T, srv *vaulttest.Server, token, path string) (int, string, []byte) {
	t.Helper()
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM([]byte(srv.CACertPEM)) {
		t.Fatal("the Vault CA does not parse")
	}
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	req, err := http.NewRequest(http.MethodGet, srv.Addr+"/v1/"+vaulttest.MountPath+"/"+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Header.Get("Content-Type"), body
}

// readmeBlock is the README's fenced yaml block containing marker.
func readmeBlock(t *testing.T, marker string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(vaulttest.RepoRoot(t), "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, part := range strings.Split(string(b), "```yaml\n")[1:] {
		block, _, ok := strings.Cut(part, "```")
		if ok && strings.Contains(block, marker) {
			return block
		}
	}
	t.Fatal(errors.New("the README has no yaml block with " + marker))
	return ""
}
