package backend

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/flant/flant_gitops/backend/receiver"
	"github.com/flant/flant_gitops/backend/receiver/receivertest"
	"github.com/flant/flant_gitops/backend/vaulttest"
	"github.com/flant/flant_gitops/backend/watch"
	"github.com/flant/flant_gitops/container/dockertest"
	"github.com/flant/flant_gitops/gitwatch/gittest"
)

// hookE2E is a watch with one receiver per provider, driven through a real
// Vault with deliveries shaped as each forge sends them.
type hookE2E struct {
	*watchE2E
	urls   map[receiver.Provider]string // url_path of each receiver
	tokens map[receiver.Provider]string
}

// tuneHooks passes the forges' headers through to the mount, as the README
// tells operators to.
func tuneHooks(t *testing.T, c *api.Client) {
	t.Helper()
	err := c.Sys().TuneMountWithContext(t.Context(), vaulttest.MountPath, api.MountConfigInput{PassthroughRequestHeaders: receiver.PassthroughHeaders()})
	if err != nil {
		t.Fatalf("tuning the mount's passthrough_request_headers: %v", err)
	}
}

func newHookE2E(t *testing.T) *hookE2E {
	t.Helper()
	h := &hookE2E{watchE2E: newWatchE2E(t), urls: map[receiver.Provider]string{}, tokens: map[receiver.Provider]string{}}
	// With the CLI, as the README and make enable do.
	args := []string{"secrets", "tune"}
	for _, name := range receiver.PassthroughHeaders() {
		args = append(args, "-passthrough-request-headers="+name)
	}
	if out, errOut, code := h.vault.CLI(t, append(args, vaulttest.MountPath+"/")...); code != 0 {
		t.Fatalf("vault %s: exit %d: %s%s", strings.Join(args, " "), code, out, errOut)
	}
	base := h.repo.Commit(t, map[string]string{"hello.txt": "base\n", "step.sh": "echo base\n"}, gittest.Message("base"))
	h.configure(map[string]any{
		"git_repo_url": h.repo.URL(), "git_branch_name": "main",
		// An hour: whatever runs within the test was started by a delivery
		// (runs record their trigger), not by the period.
		"git_poll_period": "1h",
		"required_number_of_verified_signatures_on_commit": 1, "initial_last_successful_commit": base,
		"docker_image": dockertest.Image(t, h.docker), "commands": []string{"sh /git/step.sh"},
		"run_timeout": "120s", "network_mode": "none",
	})
	h.pollUntilOutcome(watch.OutcomeUpToDate)
	for _, p := range receiver.Providers() {
		s, err := h.vault.Client.Logical().Write(vaulttest.MountPath+"/configure/receiver/"+string(p), map[string]any{"provider": string(p)})
		if err != nil {
			t.Fatalf("creating the %s receiver: %v", p, err)
		}
		h.urls[p], _ = s.Data["url_path"].(string)
		h.tokens[p], _ = s.Data["token"].(string)
		if !strings.HasPrefix(h.urls[p], "/v1/"+vaulttest.MountPath+"/hooks/") {
			t.Fatalf("the %s receiver's url_path is %q", p, h.urls[p])
		}
		if (p.TokenHeader() != "") != (h.tokens[p] != "") {
			t.Fatalf("the %s receiver's answer has token %q, want one exactly when the provider sends a token header", p, h.tokens[p])
		}
	}
	return h
}

// deliveryAnswer is what Vault answered a delivery.
type deliveryAnswer struct {
	code int
	body string
	data map[string]any
	took time.Duration
}

func (h *hookE2E) deliver(d receivertest.Delivery, urlPath string) deliveryAnswer {
	h.t.Helper()
	req, err := d.Request(h.vault.Addr + urlPath)
	if err != nil {
		h.t.Fatal(err)
	}
	start := time.Now()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		h.t.Fatalf("delivering %s: %v", d.Name, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	a := deliveryAnswer{code: resp.StatusCode, body: string(b), took: time.Since(start)}
	var v struct {
		Data map[string]any `json:"data"`
	}
	if json.Unmarshal(b, &v) == nil {
		a.data = v.Data
	}
	return a
}

func TestE2EReceivers(t *testing.T) {
	h := newHookE2E(t)

	t.Run("a read never shows the URL or the token", func(t *testing.T) {
		for _, p := range receiver.Providers() {
			s, err := h.vault.Client.Logical().Read(vaulttest.MountPath + "/configure/receiver/" + string(p))
			if err != nil || s == nil {
				t.Fatalf("read: %v", err)
			}
			raw, _ := json.Marshal(s.Data)
			id := h.urls[p][strings.LastIndex(h.urls[p], "/")+1:]
			for _, secret := range []string{id, h.tokens[p], receiver.Digest(id)} {
				if secret != "" && strings.Contains(string(raw), secret) {
					t.Errorf("reading the %s receiver shows a secret: %s", p, raw)
				}
			}
			if s.Data["provider"] != string(p) || s.Data["token_header"] != p.TokenHeader() {
				t.Errorf("read of the %s receiver: %v", p, s.Data)
			}
		}
	})

	t.Run("each forge's own test delivery answers success", func(t *testing.T) {
		for _, p := range []receiver.Provider{receiver.GitHub, receiver.BitbucketServer} {
			a := h.deliver(receivertest.Ping(t, p), h.urls[p])
			if a.code != http.StatusOK || !strings.HasPrefix(fmt.Sprint(a.data["message"]), "pong") {
				t.Errorf("%s ping: %d %s", p, a.code, a.body)
			}
		}
	})

	t.Run("a signed push and its delivery start the run, each forge", func(t *testing.T) {
		for i, p := range receiver.Providers() {
			c := h.commit(fmt.Sprintf("pushed for %s\n", p), fmt.Sprintf("echo run %d", i), 0)
			a := h.deliver(receivertest.Push(t, p, "refs/heads/main", c, h.tokens[p]), h.urls[p])
			if a.code != http.StatusOK || a.data["accepted"] != true {
				t.Fatalf("%s push delivery: %d %s", p, a.code, a.body)
			}
			if strings.Contains(a.body, "unrecognized") {
				t.Errorf("%s: the answer warns about the forge's payload fields: %s", p, a.body)
			}
			id, run := h.waitRun(c, "succeeded", func(_ string, r map[string]any) bool { return r["status"] == watch.RunSucceeded })
			if run["trigger"] != "webhook" {
				t.Errorf("%s: run %s was started by %v, want the webhook", p, id, run["trigger"])
			}
			t.Logf("%s: delivery answered in %s; run %s succeeded", p, a.took.Round(time.Millisecond), id)
		}
	})

	t.Run("refused or ignored deliveries start nothing", func(t *testing.T) {
		c := h.commit("not announced\n", "echo must not run", 0)
		gh, gl := h.urls[receiver.GitHub], h.urls[receiver.GitLab]
		unknown := gh[:strings.LastIndex(gh, "/")+1] + strings.Repeat("ab", 32)
		big := receivertest.Push(t, receiver.GitHub, "refs/heads/main", c, "")
		big.Body = []byte(fmt.Sprintf(`{"ref":"refs/heads/main","after":%q,"padding":%q}`, c, strings.Repeat("x", 10<<20)))
		// A payload of many small strings passes Vault's own JSON limits
		// (1 MB a string, 10,000 elements an array) and reaches the
		// plugin's cap.
		var commits []any
		for j := range 40 {
			var files []string
			for i := range 2500 {
				files = append(files, fmt.Sprintf("clusters/prod/apps/app-%02d-%04d/values.yaml", j, i))
			}
			commits = append(commits, map[string]any{"modified": files})
		}
		many := receivertest.Push(t, receiver.GitHub, "refs/heads/main", c, "")
		many.Body, _ = json.Marshal(map[string]any{"ref": "refs/heads/main", "after": c, "commits": commits})
		malformed := receivertest.Push(t, receiver.GitHub, "refs/heads/main", c, "")
		malformed.Body = []byte(`{"ref": "refs/heads/main", "after": `)
		gitlabForm := receivertest.Push(t, receiver.GitLab, "refs/heads/main", c, h.tokens[receiver.GitLab]).FormEncoded()
		notFound := h.deliver(receivertest.Push(t, receiver.GitHub, "refs/heads/main", c, ""), unknown)
		tests := []struct {
			name     string
			d        receivertest.Delivery
			url      string
			code     int
			contains string
		}{
			{"wrong GitLab token", receivertest.Push(t, receiver.GitLab, "refs/heads/main", c, "wrong"), gl, http.StatusNotFound, "no receiver"},
			{"no GitLab token", receivertest.Push(t, receiver.GitLab, "refs/heads/main", c, ""), gl, http.StatusNotFound, "no receiver"},
			{"unknown receiver", receivertest.Push(t, receiver.GitHub, "refs/heads/main", c, ""), unknown, http.StatusNotFound, "no receiver"},
			{"not an id at all", receivertest.Push(t, receiver.GitHub, "refs/heads/main", c, ""), "/v1/" + vaulttest.MountPath + "/hooks/short", http.StatusNotFound, "no receiver"},
			{"another branch", receivertest.Push(t, receiver.GitHub, "refs/heads/staging", c, ""), gh, http.StatusOK, "not to the watched branch"},
			{"a tag push (GitHub)", receivertest.Push(t, receiver.GitHub, "refs/tags/v1.2.3", c, ""), gh, http.StatusOK, "not to the watched branch"},
			{"a tag push (GitLab)", receivertest.Push(t, receiver.GitLab, "refs/tags/v1.2.3", c, h.tokens[receiver.GitLab]), gl, http.StatusOK, "Tag Push Hook"},
			// Vault refuses these itself, before the plugin (Vault 1.21
			// answers 500): code 0 takes any 4xx or 5xx.
			{"a 10 MB string", big, gh, 0, "JSON string value exceeds allowed length"},
			{"malformed JSON", malformed, gh, 0, "JSON"},
			{"a 4 MB payload of many strings", many, gh, http.StatusRequestEntityTooLarge, "larger than"},
			{"a form-encoded GitLab body", gitlabForm, gl, http.StatusBadRequest, "not a gitlab delivery"},
		}
		before := h.status()["last_poll_at"]
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				a := h.deliver(tt.d, tt.url)
				if (a.code != tt.code && (tt.code != 0 || a.code < 400)) || !strings.Contains(a.body, tt.contains) {
					t.Errorf("answered %d %s, want %d with %q", a.code, a.body, tt.code, tt.contains)
				}
				if a.code == http.StatusOK && a.data["accepted"] != false {
					t.Errorf("accepted: %s", a.body)
				}
				if tt.code == http.StatusNotFound && tt.contains != "" && a.body != notFound.body {
					t.Errorf("answer %q differs from an unknown receiver's %q: it tells an outsider which it was", a.body, notFound.body)
				}
			})
		}
		if after := h.status()["last_poll_at"]; after != before {
			t.Errorf("a refused or ignored delivery polled: last_poll_at %v -> %v", before, after)
		}
		if runs := h.runsFor(c); len(runs) != 0 {
			t.Errorf("runs of a commit no accepted delivery announced: %v", runs)
		}
		st := h.status()
		recv, _ := st["receivers"].(map[string]any)
		glLast, _ := recv["gitlab"].(map[string]any)["last_delivery"].(map[string]any)
		if out := fmt.Sprint(glLast["outcome"]); !strings.Contains(out, "not a gitlab delivery") {
			t.Errorf("status does not show the GitLab receiver's last delivery and why it was refused: %v", recv["gitlab"])
		}
		ghLast, _ := recv["github"].(map[string]any)["last_delivery"].(map[string]any)
		if ghLast["accepted"] != false || ghLast["event"] != "push" || !strings.Contains(fmt.Sprint(ghLast["outcome"]), "larger than") {
			t.Errorf("status of the GitHub receiver: %v", recv["github"])
		}
		// The commit is still there for the next test to announce.
		h.pollUntilOutcome(watch.OutcomeRan)
	})

	t.Run("GitHub's default form-encoded delivery works", func(t *testing.T) {
		c := h.commit("form\n", "echo form", 0)
		a := h.deliver(receivertest.Push(t, receiver.GitHub, "refs/heads/main", c, "").FormEncoded(), h.urls[receiver.GitHub])
		if a.code != http.StatusOK || a.data["accepted"] != true {
			t.Fatalf("form-encoded push: %d %s", a.code, a.body)
		}
		h.waitRun(c, "succeeded", func(_ string, r map[string]any) bool { return r["status"] == watch.RunSucceeded })
	})

	t.Run("100 deliveries in a second fetch once, every answer fast", func(t *testing.T) {
		time.Sleep(3 * time.Second) // past the previous delivery's fold
		one := h.commit("one\n", "echo one", 0)
		h.gitSrv.ResetStats()
		a := h.deliver(receivertest.Push(t, receiver.GitHub, "refs/heads/main", one, ""), h.urls[receiver.GitHub])
		if a.data["accepted"] != true {
			t.Fatalf("delivery: %s", a.body)
		}
		h.waitRun(one, "succeeded", func(_ string, r map[string]any) bool { return r["status"] == watch.RunSucceeded })
		time.Sleep(3 * time.Second)
		single := h.gitSrv.Stats().RefAdvertisements

		burst := h.commit("burst\n", "echo burst", 0)
		h.gitSrv.ResetStats()
		var wg sync.WaitGroup
		answers := make([]deliveryAnswer, 100)
		start := time.Now()
		for i := range answers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				answers[i] = h.deliver(receivertest.Push(t, receiver.GitHub, "refs/heads/main", burst, ""), h.urls[receiver.GitHub])
			}()
		}
		wg.Wait()
		sent := time.Since(start)
		var slowest time.Duration
		for _, a := range answers {
			if a.code != http.StatusOK || a.data["accepted"] != true {
				t.Fatalf("a delivery of the burst: %d %s", a.code, a.body)
			}
			slowest = max(slowest, a.took)
		}
		h.waitRun(burst, "succeeded", func(_ string, r map[string]any) bool { return r["status"] == watch.RunSucceeded })
		time.Sleep(3 * time.Second) // past the fold: a second fetch would show now
		got := h.gitSrv.Stats().RefAdvertisements
		t.Logf("100 deliveries sent in %s, slowest answer %s; ref advertisements: %d (one delivery: %d)", sent.Round(time.Millisecond), slowest.Round(time.Millisecond), got, single)
		if got != single {
			t.Errorf("100 deliveries of one push cost %d ref advertisements, one delivery %d: they did not fold into one poll", got, single)
		}
		if n := len(h.runsFor(burst)); n != 1 {
			t.Errorf("%d runs of the burst's commit, want 1", n)
		}
	})

	t.Run("rotate and delete: the old URL stops working at once", func(t *testing.T) {
		old := h.urls[receiver.Generic]
		s, err := h.vault.Client.Logical().Write(vaulttest.MountPath+"/configure/receiver/generic/rotate", nil)
		if err != nil {
			t.Fatal(err)
		}
		newURL, _ := s.Data["url_path"].(string)
		newToken, _ := s.Data["token"].(string)
		if newURL == old || newToken == "" || newToken == h.tokens[receiver.Generic] {
			t.Fatalf("rotate answered %v", s.Data)
		}
		ping := receivertest.Push(t, receiver.Generic, "refs/heads/staging", "", newToken)
		if a := h.deliver(ping, newURL); a.code != http.StatusOK {
			t.Errorf("the rotated URL and token: %d %s", a.code, a.body)
		}
		if a := h.deliver(receivertest.Push(t, receiver.Generic, "refs/heads/staging", "", h.tokens[receiver.Generic]), old); a.code != http.StatusNotFound {
			t.Errorf("the old URL after rotate: %d %s", a.code, a.body)
		}
		if _, err := h.vault.Client.Logical().Delete(vaulttest.MountPath + "/configure/receiver/generic"); err != nil {
			t.Fatal(err)
		}
		if a := h.deliver(ping, newURL); a.code != http.StatusNotFound {
			t.Errorf("a deleted receiver's URL: %d %s", a.code, a.body)
		}
		if _, ok := h.status()["receivers"].(map[string]any)["generic"]; ok {
			t.Error("status still lists the deleted receiver")
		}
	})

	t.Run("status shows the next poll in the mount's slot", func(t *testing.T) {
		next := watchParseTime(t, h.status()["next_poll_at"])
		if until := time.Until(next); until <= 0 || until > time.Hour {
			t.Errorf("next_poll_at %s is not within the hour's period", next)
		}
	})
}

// The unauthenticated path takes no token and wants none: a request with
// a bad Vault token is answered the same (Vault does not refuse it first).
func TestE2EReceiverIgnoresVaultToken(t *testing.T) {
	h := newHookE2E(t)
	d := receivertest.Ping(t, receiver.GitHub)
	req, err := d.Request(h.vault.Addr + h.urls[receiver.GitHub])
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("X-Vault-Token", "hvs.not-a-token")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || !bytes.Contains(b, []byte("pong")) {
		t.Errorf("a ping with a bad Vault token: %d %s", resp.StatusCode, b)
	}
}
