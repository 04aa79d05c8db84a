package backend

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"

	"github.com/flant/flant_gitops/backend/events"
	"github.com/flant/flant_gitops/backend/events/forge/forgetest"
)

const forgeToken = "ghp_ForgeTokenForTests0123456789abcdefXY"

func TestCommitStatusWriteReadDelete(t *testing.T) {
	b, s := newTestBackend(t, nil, nil)
	mustOK(t, configReq(t, b, s, logical.UpdateOperation, "configure", map[string]any{
		"git_repo_url": "git@github.com:acme/deploy.git", "docker_image": testImage, "commands": []string{"true"}}), "configure")

	if resp := configReq(t, b, s, logical.ReadOperation, "configure/commit_status", nil); resp != nil {
		t.Fatalf("read before any write: %v", resp.Data)
	}
	mustOK(t, configReq(t, b, s, logical.UpdateOperation, "configure/commit_status", map[string]any{"provider": "github", "token": forgeToken + "\n"}), "write")
	read := configReq(t, b, s, logical.ReadOperation, "configure/commit_status", nil)
	mountID, err := b.mount.get(context.Background(), s)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]any{
		"provider": "github", "api_url": "https://api.github.com", "token_set": true, "repository": "",
		"effective_repository": "acme/deploy", "context_template": "", "context": "flant_gitops/" + mountID[:8],
		"target_url_template": "", "enabled": true,
	}
	for k, v := range want {
		if read.Data[k] != v {
			t.Errorf("read %s = %v, want %v", k, read.Data[k], v)
		}
	}
	for k, v := range read.Data {
		if s, _ := v.(string); strings.Contains(s, forgeToken) || k == "token" {
			t.Fatalf("a read shows the token in %s", k)
		}
	}
	stored, err := getCommitStatus(context.Background(), s)
	if err != nil || stored.Token != forgeToken {
		t.Fatalf("stored %v, %v", stored, err)
	}

	// Partial update keeps the token; moving it elsewhere needs it again.
	mustOK(t, configReq(t, b, s, logical.UpdateOperation, "configure/commit_status", map[string]any{"context_template": "deploy/{{branch}}"}), "partial")
	resp, err := rawConfigReq(b, s, logical.UpdateOperation, "configure/commit_status", map[string]any{"api_url": "https://attacker.example.com/api/v3"})
	mustBadRequest(t, resp, err, "changing api_url would send the stored token", "give token")
	resp, err = rawConfigReq(b, s, logical.UpdateOperation, "configure/commit_status", map[string]any{"provider": "gitea", "api_url": "https://gitea.example.com"})
	mustBadRequest(t, resp, err, "provider, api_url", "token")
	mustOK(t, configReq(t, b, s, logical.UpdateOperation, "configure/commit_status", map[string]any{"api_url": "https://github.example.com/api/v3", "token": "ghp_other0123456789"}), "move with token")
	if e, _ := getCommitStatus(context.Background(), s); e.APIURL != "https://github.example.com/api/v3" || e.Token != "ghp_other0123456789" || e.ContextTemplate != "deploy/{{branch}}" {
		t.Fatalf("stored %+v", e)
	}

	mustOK(t, configReq(t, b, s, logical.DeleteOperation, "configure/commit_status", nil), "delete")
	if e, _ := getCommitStatus(context.Background(), s); e != nil {
		t.Fatal("delete left the entry")
	}
}

func TestCommitStatusBadInput(t *testing.T) {
	b, s := newTestBackend(t, nil, nil)
	mustOK(t, configReq(t, b, s, logical.UpdateOperation, "configure", minimalConfig()), "configure")
	cases := []struct {
		name string
		data map[string]any
		want []string
	}{
		{"no provider", map[string]any{"token": "x"}, []string{"provider is required"}},
		{"unknown provider", map[string]any{"provider": "bitbucket", "token": "x"}, []string{"unknown provider", "github, gitlab or gitea"}},
		{"no token", map[string]any{"provider": "github"}, []string{"token is required"}},
		{"empty token", map[string]any{"provider": "github", "token": "  "}, []string{"token is empty"}},
		{"bearer prefix", map[string]any{"provider": "github", "token": "Bearer abc"}, []string{"without a \"Bearer\""}},
		{"gitlab needs api_url", map[string]any{"provider": "gitlab", "token": "x"}, []string{"api_url is required for gitlab"}},
		{"api path", map[string]any{"provider": "gitlab", "token": "x", "api_url": "https://gitlab.example.com/api/v4"}, []string{"without the API path"}},
		{"not https", map[string]any{"provider": "gitea", "token": "x", "api_url": "gitea.example.com"}, []string{"absolute https://"}},
		{"credentials in url", map[string]any{"provider": "gitea", "token": "x", "api_url": "https://u:p@gitea.example.com"}, []string{"must not carry credentials"}},
		{"bad repository", map[string]any{"provider": "github", "token": "x", "repository": "a/b/c"}, []string{"owner/repo"}},
		{"gitlab top-level", map[string]any{"provider": "gitlab", "token": "x", "api_url": "https://gitlab.example.com", "repository": "deploy"}, []string{"group/project"}},
		{"unknown placeholder", map[string]any{"provider": "github", "token": "x", "context_template": "ci/{{user}}"}, []string{"unknown {{user}}"}},
		{"bad target", map[string]any{"provider": "github", "token": "x", "target_url_template": "dashboard/{{run}}"}, []string{"absolute https:// URL"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := rawConfigReq(b, s, logical.UpdateOperation, "configure/commit_status", tc.data)
			mustBadRequest(t, resp, err, tc.want...)
			if e, _ := getCommitStatus(context.Background(), s); e != nil {
				t.Fatal("a refused write was stored")
			}
		})
	}
	// The repository cannot be told from git_repo_url for GitHub (three
	// segments): the write says to give it.
	mustOK(t, configReq(t, b, s, logical.UpdateOperation, "configure", map[string]any{"git_repo_url": "https://git.example.com/a/b/c.git"}), "configure")
	resp, err := rawConfigReq(b, s, logical.UpdateOperation, "configure/commit_status", map[string]any{"provider": "github", "token": "x"})
	mustBadRequest(t, resp, err, "set repository")
}

// TestCommitStatusDeliveredFromEvents: on an initialized backend (the
// active node), events published on the bus become statuses on the forge,
// and status shows the last delivery; a deleted configuration sends
// nothing more.
func TestCommitStatusDeliveredFromEvents(t *testing.T) {
	b, s := newTestBackend(t, nil, nil)
	ctx := context.Background()
	if err := b.Initialize(ctx, &logical.InitializationRequest{Storage: s}); err != nil {
		t.Fatal(err)
	}
	gh := forgetest.NewGitHub(t, forgeToken, "acme/deploy")
	mustOK(t, configReq(t, b, s, logical.UpdateOperation, "configure/commit_status", map[string]any{
		"provider": "github", "api_url": gh.APIURL(), "token": forgeToken, "repository": "acme/deploy"}), "write")
	mountID, err := b.mount.get(ctx, s)
	if err != nil {
		t.Fatal(err)
	}
	b.events.Publish(events.Event{Kind: events.RunStarted, Mount: mountID, Commit: commitA, Run: "r1", Branch: "main"})
	b.events.Publish(events.Event{Kind: events.PollFinished, Mount: mountID, Commit: commitA})
	// The run ends after its pending went out (queued together, only the
	// newest state would be sent).
	deadline := time.Now().Add(time.Minute)
	for len(gh.Accepted()) < 1 {
		if time.Now().After(deadline) {
			t.Fatal("no pending status within a minute")
		}
		time.Sleep(10 * time.Millisecond)
	}
	b.events.Publish(events.Event{Kind: events.RunFinished, Outcome: events.RunSucceeded, Mount: mountID, Commit: commitA, Run: "r1"})
	for len(gh.Accepted()) < 2 || !statusDelivered(configReq(t, b, s, logical.ReadOperation, "status", nil), commitA) {
		if time.Now().After(deadline) {
			t.Fatalf("accepted %+v", gh.Accepted())
		}
		time.Sleep(10 * time.Millisecond)
	}
	got := gh.Accepted()
	if got[0].State != "pending" || got[1].State != "success" || got[1].Context != "flant_gitops/"+mountID[:8] {
		t.Fatalf("accepted %+v", got)
	}

	mustOK(t, configReq(t, b, s, logical.DeleteOperation, "configure/commit_status", nil), "delete")
	b.events.Publish(events.Event{Kind: events.RunStarted, Mount: mountID, Commit: commitB, Run: "r2"})
	b.events.Publish(events.Event{Kind: events.RunStarted, Mount: mountID, Commit: commitA, Run: "r3"})
	cs := configReq(t, b, s, logical.ReadOperation, "status", nil).Data["commit_status"].(map[string]any)
	if cs["configured"] != false || cs["delivering"] != true {
		t.Fatalf("commit_status after delete: %v", cs)
	}
	if n := len(gh.Accepted()); n != 2 {
		t.Fatalf("%d statuses after delete, want still 2", n)
	}
}

func statusDelivered(resp *logical.Response, commit string) bool {
	cs, _ := resp.Data["commit_status"].(map[string]any)
	last, _ := cs["last"].(map[string]any)
	return last["commit"] == commit && last["result"] == "delivered" && last["state"] == "success"
}

// TestCommitStatusTokenNeverReachesANewHost: a write that points the
// statuses at another API without the token is refused, and the next status
// still goes, with the token, only to the address it was written for.
func TestCommitStatusTokenNeverReachesANewHost(t *testing.T) {
	b, s := newTestBackend(t, nil, nil)
	ctx := context.Background()
	if err := b.Initialize(ctx, &logical.InitializationRequest{Storage: s}); err != nil {
		t.Fatal(err)
	}
	good := forgetest.NewGitHub(t, forgeToken, "acme/deploy")
	evil := forgetest.NewGitHub(t, "the-attackers-own", "acme/deploy")
	evil.AllowViolations = true
	mustOK(t, configReq(t, b, s, logical.UpdateOperation, "configure/commit_status", map[string]any{
		"provider": "github", "api_url": good.APIURL(), "token": forgeToken, "repository": "acme/deploy"}), "write")
	for _, w := range []map[string]any{
		{"api_url": evil.APIURL()},
		{"provider": "gitea", "api_url": evil.APIURL()},
		{"api_url": evil.APIURL(), "repository": "acme/other", "enabled": true},
	} {
		resp, err := rawConfigReq(b, s, logical.UpdateOperation, "configure/commit_status", w)
		mustBadRequest(t, resp, err, "api_url", "token")
	}
	b.events.Publish(events.Event{Kind: events.RunStarted, Commit: commitC, Run: "r1"})
	deadline := time.Now().Add(time.Minute)
	for len(good.Accepted()) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("no status reached the configured forge")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if n := evil.Requests(); n != 0 {
		t.Fatalf("the other host received %d request(s)", n)
	}
}
