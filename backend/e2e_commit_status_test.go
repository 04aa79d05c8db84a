package backend

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/flant/flant_gitops/backend/events/forge/forgetest"
	"github.com/flant/flant_gitops/backend/vaulttest"
	"github.com/flant/flant_gitops/backend/watch"
	"github.com/flant/flant_gitops/container/dockertest"
	"github.com/flant/flant_gitops/gitwatch/gittest"
)

const (
	e2eGitHubToken = "ghp_E2eGitHubToken0123456789abcdefABCD"
	e2eGitLabToken = "glpat-E2eGitLabToken0123456789"
	e2eGiteaToken  = "0e2e7ea0e2e7ea0e2e7ea0e2e7ea0e2e7ea0e2e7"
)

// waitStatuses waits until the fake has accepted statuses for commit that
// satisfy done, and returns them.
func waitStatuses(t *testing.T, e *watchE2E, fake *forgetest.Server, commit string, done func([]forgetest.Status) bool) []forgetest.Status {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		var got []forgetest.Status
		for _, s := range fake.Accepted() {
			if s.SHA == commit {
				got = append(got, s)
			}
		}
		if done(got) {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("the forge got %+v for %s; commit_status in status: %v\n%s", got, commit, e.status()["commit_status"], lastLines(e.vault.Log(), 30))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func lastState(want string) func([]forgetest.Status) bool {
	return func(s []forgetest.Status) bool { return len(s) > 0 && s[len(s)-1].State == want }
}

func states(s []forgetest.Status) []string {
	var out []string
	for _, x := range s {
		out = append(out, x.State)
	}
	return out
}

// TestE2ECommitStatus drives commit statuses through a real Vault, the
// built plugin, a real git server and Docker, against fake forges that
// check every request: pending then success for a signed commit, a failure
// naming what is missing for an under-signed one (once, however often it
// is polled), a rate-limited forge that delays the status but not the run,
// then GitLab and Gitea after reconfiguration; the tokens never show in a
// read or the Vault log.
func TestE2ECommitStatus(t *testing.T) {
	e := newWatchE2E(t)
	base := e.repo.Commit(t, map[string]string{"hello.txt": "base\n", "step.sh": "echo base\n"}, gittest.Message("base"))
	e.configure(map[string]any{
		"git_repo_url":    e.repo.URL(),
		"git_poll_period": "1h", // the test polls
		"required_number_of_verified_signatures_on_commit": 2,
		"initial_last_successful_commit":                   base,
		"docker_image":                                     dockertest.Image(t, e.docker),
		"commands":                                         []string{"sh /git/step.sh"},
		"run_timeout":                                      "120s",
		"network_mode":                                     "none",
	})
	e.mountID, _ = e.status()["mount_id"].(string)
	wantContext := "flant_gitops/" + e.mountID[:8]

	gh := forgetest.NewGitHubEnterprise(t, e2eGitHubToken, "acme/ops")
	e.write("configure/commit_status", map[string]any{
		"provider": "github", "api_url": gh.APIURL(), "token": e2eGitHubToken, "repository": "acme/ops",
		"target_url_template": "https://dash.example.com/runs/{{run}}?commit={{commit}}",
	})
	if got := e.read("configure/commit_status")["context"]; got != wantContext {
		t.Fatalf("read context = %v, want %s", got, wantContext)
	}

	t.Run("signed commit: pending, then success, on the commit, under the mount's context", func(t *testing.T) {
		good := e.commit("good\n", "echo good", 0, 1)
		id, _ := e.pollAndWait(good, watch.RunSucceeded)
		got := waitStatuses(t, e, gh, good, lastState("success"))
		if fmt.Sprint(states(got)) != "[pending success]" {
			t.Fatalf("states %v, want pending then success", states(got))
		}
		for _, s := range got {
			if s.Context != wantContext || s.Repository != "acme/ops" || s.TargetURL != "https://dash.example.com/runs/"+id+"?commit="+good || s.Auth != "Authorization: Bearer <token>" {
				t.Errorf("status %+v", s)
			}
		}
		if got[0].Description != "running "+id || !strings.HasPrefix(got[1].Description, "succeeded: run "+id) {
			t.Errorf("descriptions %q, %q", got[0].Description, got[1].Description)
		}
	})

	t.Run("under-signed commit: one failure that names what is missing", func(t *testing.T) {
		under := e.commit("under\n", "echo never", 0)
		e.pollUntilOutcome(watch.OutcomeRefused)
		got := waitStatuses(t, e, gh, under, lastState("failure"))
		d := got[0].Description
		if !strings.HasPrefix(d, "refused: missing 1 more verified signature") || !strings.Contains(d, "(1 of 2); signed by ") || got[0].TargetURL != "" {
			t.Errorf("refusal status %+v", got[0])
		}
		// Every poll refuses it again; the forge hears it once.
		e.pollUntilOutcome(watch.OutcomeRefused)
		e.pollUntilOutcome(watch.OutcomeRefused)
		cs := e.status()["commit_status"].(map[string]any)
		if fmt.Sprint(cs["repeats_skipped"]) == "0" {
			t.Errorf("commit_status = %v, want repeats skipped", cs)
		}
		n := 0
		for _, s := range gh.Accepted() {
			if s.SHA == under {
				n++
			}
		}
		if n != 1 {
			t.Errorf("%d statuses for the refused commit, want 1", n)
		}
	})

	t.Run("a rate-limiting forge delays the status, never the run", func(t *testing.T) {
		gh.RateLimitAll(1, forgetest.Secondary, forgetest.TooMany, forgetest.Primary)
		limitedBefore := gh.Limited()
		c := e.commit("limited\n", "echo limited", 1, 2)
		e.pollAndWait(c, watch.RunSucceeded)
		// The run ended while the forge took nothing for the commit.
		for _, s := range gh.Accepted() {
			if s.SHA == c {
				t.Fatalf("the limiting forge accepted %+v", s)
			}
		}
		csWait(t, func() bool { return gh.Limited() > limitedBefore })
		cs := e.status()["commit_status"].(map[string]any)
		last, _ := cs["last"].(map[string]any)
		if last["result"] != "retrying" || last["commit"] != c || (fmt.Sprint(last["http_code"]) != "403" && fmt.Sprint(last["http_code"]) != "429") {
			t.Errorf("status while limited: %v", cs)
		}
		gh.StopLimiting()
		got := waitStatuses(t, e, gh, c, lastState("success"))
		// The success replaced the pending that waited: only the newest
		// state of a commit is worth sending.
		if fmt.Sprint(states(got)) != "[success]" {
			t.Errorf("states %v after the limit, want the newest only", states(got))
		}
		csWait(t, func() bool {
			last, _ := e.status()["commit_status"].(map[string]any)["last"].(map[string]any)
			return last["result"] == "delivered" && last["commit"] == c
		})
	})

	t.Run("a status still waiting when the plugin restarts is sent by the next one", func(t *testing.T) {
		gh.RateLimitAll(1, forgetest.TooMany)
		c := e.commit("restart\n", "echo restart", 0, 2)
		e.pollAndWait(c, watch.RunSucceeded)
		csWait(t, func() bool {
			last, _ := e.status()["commit_status"].(map[string]any)["last"].(map[string]any)
			return last["result"] == "retrying" && last["commit"] == c && last["state"] == "success"
		})
		e.vault.ReloadPlugin(t)
		gh.StopLimiting()
		got := waitStatuses(t, e, gh, c, lastState("success"))
		if got[len(got)-1].Context != wantContext {
			t.Errorf("status after the restart %+v", got)
		}
		// Sent, the outbox empties.
		csWait(t, func() bool { return fmt.Sprint(e.status()["commit_status"].(map[string]any)["queued"]) == "0" })
	})

	t.Run("gitlab: running, failed with the reason", func(t *testing.T) {
		gl := forgetest.NewGitLab(t, e2eGitLabToken, "platform/ops")
		e.write("configure/commit_status", map[string]any{"provider": "gitlab", "api_url": gl.URL, "token": e2eGitLabToken, "repository": "platform/ops"})
		bad := e.commit("bad\n", "echo failing; exit 3", 0, 2)
		e.pollAndWait(bad, watch.RunFailed)
		got := waitStatuses(t, e, gl, bad, lastState("failed"))
		if fmt.Sprint(states(got)) != "[running failed]" || !strings.Contains(got[1].Description, "code 3") || got[1].Context != wantContext || got[1].Auth != "Private-Token: <token>" || got[1].Ref != "main" {
			t.Errorf("gitlab statuses %+v", got)
		}
	})

	t.Run("gitea: pending, success under a context template; an underivable repository is asked for", func(t *testing.T) {
		gt := forgetest.NewGitea(t, e2eGiteaToken, "acme/ops")
		// git_repo_url is http://host/ops.git: one segment is no owner/repo,
		// so the write asks for repository.
		if _, err := e.vault.Client.Logical().Write(vaulttest.MountPath+"/configure/commit_status", map[string]any{"provider": "gitea", "api_url": gt.URL, "token": e2eGiteaToken, "repository": ""}); err == nil || !strings.Contains(err.Error(), "set repository") {
			t.Errorf("write without a derivable repository: %v", err)
		}
		e.write("configure/commit_status", map[string]any{"provider": "gitea", "api_url": gt.URL, "token": e2eGiteaToken, "repository": "acme/ops", "context_template": "deploy/{{branch}}"})
		ok := e.commit("fixed\n", "echo fixed", 0, 1)
		e.pollAndWait(ok, watch.RunSucceeded)
		got := waitStatuses(t, e, gt, ok, lastState("success"))
		if fmt.Sprint(states(got)) != "[pending success]" || got[1].Context != "deploy/main" || got[1].Auth != "Authorization: token <token>" {
			t.Errorf("gitea statuses %+v", got)
		}
	})

	t.Run("no token in any read or the Vault log", func(t *testing.T) {
		var seen strings.Builder
		seen.WriteString(e.vault.Log())
		for _, p := range []string{"configure", "configure/commit_status", "status"} {
			out, stderr, code := e.vault.CLI(t, "read", "-format=json", vaulttest.MountPath+"/"+p)
			if code != 0 {
				t.Fatalf("vault read %s: %s", p, stderr)
			}
			seen.WriteString(out)
		}
		for _, tok := range []string{e2eGitHubToken, e2eGitLabToken, e2eGiteaToken} {
			if strings.Contains(seen.String(), tok) {
				t.Errorf("a forge token appears in a read or the Vault log")
			}
		}
		if !strings.Contains(seen.String(), `"token_set": true`) {
			t.Error("configure/commit_status does not say token_set")
		}
	})
}

// csWait waits up to 2 minutes for cond.
func csWait(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 2 minutes")
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestE2ECommitStatusCarriesNoToken: on a repository whose URL names it
// (acme/deploy, no repository configured), runs whose command prints its
// response-wrapped token (and a log line of its own) succeed and fail, and
// every status payload the forge received is walked: none holds a token or
// secret_id the target Vault handed out, nor the command's log line.
func TestE2ECommitStatusCarriesNoToken(t *testing.T) {
	f := newTargetFixture(t, "10m")
	e := newWatchE2E(t)
	// owner/repo in the URL: the statuses' repository is taken from it.
	e.repo = e.gitSrv.NewRepo(t, "acme/deploy")
	base := e.repo.Commit(t, map[string]string{"hello.txt": "base\n", "step.sh": "echo base\n"}, gittest.Message("base"))
	e.write("configure_vault_access", f.accessFields("10m"))
	e.write("configure/vault_request/app", map[string]any{"path": "secret/data/app"})
	e.configure(map[string]any{
		"git_repo_url":    e.repo.URL(),
		"git_poll_period": "1h",
		"required_number_of_verified_signatures_on_commit": 2,
		"initial_last_successful_commit":                   base,
		"docker_image":                                     dockertest.Image(t, e.docker),
		"commands":                                         []string{`echo "LEAKMARK $VAULT_REQUEST_TOKEN_APP"`, "sh /git/step.sh"},
		"run_timeout":                                      "120s",
		"network_mode":                                     "none",
	})
	gh := forgetest.NewGitHub(t, e2eGitHubToken, "acme/deploy")
	e.write("configure/commit_status", map[string]any{"provider": "github", "api_url": gh.APIURL(), "token": e2eGitHubToken})
	if got := e.read("configure/commit_status")["effective_repository"]; got != "acme/deploy" {
		t.Fatalf("effective_repository = %v, want acme/deploy from %s", got, e.repo.URL())
	}

	var logs strings.Builder
	for _, tc := range []struct {
		step, outcome, final string
	}{
		{"echo ok", watch.RunSucceeded, "success"},
		{`echo "token again: $VAULT_REQUEST_TOKEN_APP" >&2; exit 4`, watch.RunFailed, "failure"},
	} {
		c := e.commit(tc.step+"\n", tc.step, 0, 1)
		id, _ := e.pollAndWait(c, tc.outcome)
		log := e.log(id)
		logs.WriteString(log)
		if !strings.Contains(log, "LEAKMARK s.") && !strings.Contains(log, "LEAKMARK hvs.") {
			t.Fatalf("the run did not print its wrapped token, the walk would prove nothing; log:\n%s", log)
		}
		waitStatuses(t, e, gh, c, lastState(tc.final))
	}

	bodies := strings.Join(gh.Bodies(), "\n")
	if len(gh.Bodies()) < 4 {
		t.Fatalf("the forge got %d payloads, want pending and an end for each run", len(gh.Bodies()))
	}
	assertNoSecrets(t, f.tg, bodies)
	for _, line := range strings.Split(logs.String(), "\n") {
		if line = strings.TrimSpace(line); len(line) > 8 && strings.Contains(bodies, line) {
			t.Errorf("a run's log line is in a status payload: %q", line)
		}
	}
	if strings.Contains(bodies, "LEAKMARK") || strings.Contains(bodies, e2eGitHubToken) {
		t.Error("a status payload carries the command's output or the forge token")
	}
}
