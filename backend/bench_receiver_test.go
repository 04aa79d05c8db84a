package backend

import (
	"fmt"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/flant/flant_gitops/backend/receiver"
	"github.com/flant/flant_gitops/backend/receiver/receivertest"
	"github.com/flant/flant_gitops/backend/vaulttest"
	"github.com/flant/flant_gitops/container/dockertest"
	"github.com/flant/flant_gitops/gitwatch/gittest"
	"github.com/flant/flant_gitops/gitwatch/pgptest"
)

// BenchmarkWebhook measures, through a real Vault and the built plugin:
//
//   - push to run: a delivery to a GitHub receiver -> the run's started_at,
//     against `vault write flant_gitops/poll` (the HTTP API) -> started_at,
//     in interleaved rounds (goal: at most 1.2x);
//   - a burst: the answer times of 100 concurrent deliveries against 100
//     concurrent sys/health reads (goal: at most 3x).
//
// Figures are ratios of medians measured in the same run. BENCH_ROUNDS sets
// the rounds of the first (default 6).
func BenchmarkWebhook(b *testing.B) {
	rounds := benchRounds(b, 6)
	docker := dockertest.Runner(b)
	git := gittest.NewServer(b)
	// Info, as in production: debug logging of every request would be part of the figures.
	srv := vaulttest.NewServer(b, &vaulttest.Options{Env: []string{cacheDirEnv + "=" + b.TempDir()}, LogLevel: "info"})
	c := srv.Client
	repo := git.NewRepo(b, "ops")
	key := pgptest.NewKey(b, "alice")
	mustWrite := func(path string, data map[string]any) *api.Secret {
		s, err := c.Logical().Write(vaulttest.MountPath+"/"+path, data)
		if err != nil {
			b.Fatalf("write %s: %v", path, err)
		}
		return s
	}
	mustWrite("configure/trusted_pgp_public_key/alice", map[string]any{"public_key": key.PublicArmored(b)})
	mustWrite("configure/git_credential", map[string]any{"username": git.Username(), "password": git.Password()})
	base := repo.Commit(b, map[string]string{"step.sh": "true\n"}, gittest.Message("base"))
	mustWrite("configure", map[string]any{
		"git_repo_url": repo.URL(), "git_poll_period": "1h", "required_number_of_verified_signatures_on_commit": 1,
		"initial_last_successful_commit": base, "docker_image": dockertest.Image(b, docker),
		"commands": []string{"sh /git/step.sh"}, "run_timeout": "60s", "network_mode": "none",
	})
	if err := c.Sys().TuneMount(vaulttest.MountPath, api.MountConfigInput{PassthroughRequestHeaders: receiver.PassthroughHeaders()}); err != nil {
		b.Fatal(err)
	}
	urlPath := fmt.Sprint(mustWrite("configure/receiver/github", map[string]any{"provider": "github"}).Data["url_path"])

	// started waits for the run of commit and answers its started_at.
	started := func(commit string) time.Time {
		deadline := time.Now().Add(2 * time.Minute)
		for time.Now().Before(deadline) {
			list, err := c.Logical().List(vaulttest.MountPath + "/runs")
			if err == nil && list != nil {
				keys, _ := list.Data["keys"].([]any)
				for _, k := range keys {
					r, err := c.Logical().Read(vaulttest.MountPath + "/runs/" + fmt.Sprint(k))
					if err != nil || r == nil || r.Data["commit"] != commit {
						continue
					}
					if at, err := time.Parse(time.RFC3339Nano, fmt.Sprint(r.Data["started_at"])); err == nil {
						// Wait for the end, so the next round starts idle.
						if r.Data["status"] == "succeeded" {
							return at
						}
					}
				}
			}
			time.Sleep(50 * time.Millisecond)
		}
		b.Fatalf("no finished run of %s within 2 minutes", commit)
		return time.Time{}
	}
	deliver := func(commit string) (time.Duration, int) {
		req, err := receivertest.Push(b, receiver.GitHub, "refs/heads/main", commit, "").Request(srv.Addr + urlPath)
		if err != nil {
			b.Fatal(err)
		}
		t0 := time.Now()
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		resp.Body.Close()
		return time.Since(t0), resp.StatusCode
	}

	var viaHook, viaPoll []time.Duration
	for i := range rounds {
		// Past both rate limits (2 s), so neither path folds into the other.
		time.Sleep(2500 * time.Millisecond)
		commit := repo.Commit(b, map[string]string{"step.sh": fmt.Sprintf("echo hook %d\n", i)}, gittest.SignKey(key))
		t0 := time.Now()
		if _, code := deliver(commit); code != http.StatusOK {
			b.Fatalf("delivery answered %d", code)
		}
		viaHook = append(viaHook, started(commit).Sub(t0))

		time.Sleep(2500 * time.Millisecond)
		commit = repo.Commit(b, map[string]string{"step.sh": fmt.Sprintf("echo poll %d\n", i)}, gittest.SignKey(key))
		t0 = time.Now()
		mustWrite("poll", nil)
		viaPoll = append(viaPoll, started(commit).Sub(t0))
	}
	hook, poll := median(viaHook), median(viaPoll)
	b.Logf("push to run started, median of %d rounds: delivery %s, poll %s: %.2fx (goal <= 1.2x)", rounds, hook, poll, float64(hook)/float64(poll))
	b.ReportMetric(float64(hook)/float64(poll), "delivery/poll")

	// The burst names the HEAD the last fetch saw, as redeliveries of one
	// push do: answering is the whole work.
	head := repo.Head(b)
	time.Sleep(2500 * time.Millisecond)
	burst := func(one func() time.Duration) []time.Duration {
		out := make([]time.Duration, 100)
		var wg sync.WaitGroup
		for i := range out {
			wg.Add(1)
			go func() { defer wg.Done(); out[i] = one() }()
		}
		wg.Wait()
		return out
	}
	// The deliveries' bodies are made before the burst, so the client's own
	// JSON work does not compete with Vault's while answers are timed.
	d := receivertest.Push(b, receiver.GitHub, "refs/heads/main", head, "")
	post := func(u string, want int) time.Duration {
		req, err := d.Request(u)
		if err != nil {
			b.Error(err)
			return 0
		}
		return timed(b, req, want)
	}
	get := func(u string) time.Duration {
		req, err := http.NewRequest(http.MethodGet, u, nil)
		if err != nil {
			b.Error(err)
			return 0
		}
		return timed(b, req, http.StatusOK)
	}
	hooks := burst(func() time.Duration { return post(srv.Addr+urlPath, http.StatusOK) })
	health := burst(func() time.Duration { return get(srv.Addr + "/v1/sys/health") })
	// The floor of any plugin path: an unknown receiver, answered 404 by the
	// plugin without reading storage.
	unknown := srv.Addr + urlPath[:strings.LastIndex(urlPath, "/")+1] + strings.Repeat("ab", 32)
	floor := burst(func() time.Duration { return post(unknown, http.StatusNotFound) })
	var seqHook, seqHealth []time.Duration
	for range 50 {
		seqHook = append(seqHook, post(srv.Addr+urlPath, http.StatusOK))
		seqHealth = append(seqHealth, get(srv.Addr+"/v1/sys/health"))
	}
	b.Logf("one at a time: delivery answer median %s, sys/health median %s: %.2fx", median(seqHook), median(seqHealth), float64(median(seqHook))/float64(median(seqHealth)))
	h, s := median(hooks), median(health)
	f := median(floor)
	b.Logf("a burst of 100: delivery answer median %s (max %s), sys/health median %s (max %s): %.2fx (goal <= 3x); "+
		"the plugin's floor (an unknown receiver's 404) median %s: %.2fx of sys/health, the delivery %.2fx of the floor",
		h, slices.Max(hooks), s, slices.Max(health), float64(h)/float64(s), f, float64(f)/float64(s), float64(h)/float64(f))
	b.ReportMetric(float64(h)/float64(f), "burst-delivery/plugin-floor")
	b.ReportMetric(float64(h)/float64(s), "burst-delivery/health")
}

// timed sends req and answers how long the answer took; another status
// than want is an error of the benchmark.
func timed(b *testing.B, req *http.Request, want int) time.Duration {
	t0 := time.Now()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		b.Error(err)
		return 0
	}
	resp.Body.Close()
	if resp.StatusCode != want {
		b.Errorf("%s %s answered %d, want %d", req.Method, req.URL.Path, resp.StatusCode, want)
	}
	return time.Since(t0)
}

// benchRounds is BENCH_ROUNDS, or def.
func benchRounds(b *testing.B, def int) int {
	b.Helper()
	s := os.Getenv("BENCH_ROUNDS")
	if s == "" {
		return def
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 {
		b.Fatalf("BENCH_ROUNDS=%q is not a positive number", s)
	}
	return n
}

func median(d []time.Duration) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[len(s)/2]
}
