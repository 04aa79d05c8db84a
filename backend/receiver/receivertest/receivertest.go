// Package receivertest sends deliveries shaped as each forge sends them:
// the headers, content type and body of the forge's documentation examples
// (testdata of backend/receiver), with the ref and commit a test chooses.
package receivertest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/flant/flant_gitops/backend/receiver"
)

// Delivery is one request a forge would send.
type Delivery struct {
	Provider    receiver.Provider
	Name        string // what it is, for test names
	Headers     http.Header
	ContentType string
	Body        []byte
}

// testdata is backend/receiver/testdata, found from this file.
func testdata(t testing.TB, name string) map[string]any {
	t.Helper()
	_, self, _, _ := runtime.Caller(0)
	b, err := os.ReadFile(filepath.Join(filepath.Dir(self), "..", "testdata", name))
	if err != nil {
		t.Fatalf("receivertest: %v", err)
	}
	var v map[string]any
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatalf("receivertest: %s: %v", name, err)
	}
	return v
}

func jsonBody(t testing.TB, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Push is the push delivery of provider p moving ref (refs/heads/main or
// refs/tags/v1) to commit, with token in the provider's token header when
// it has one.
func Push(t testing.TB, p receiver.Provider, ref, commit, token string) Delivery {
	t.Helper()
	h := http.Header{}
	d := Delivery{Provider: p, Name: string(p) + " push to " + ref, Headers: h, ContentType: "application/json"}
	switch p {
	case receiver.GitHub:
		v := testdata(t, "github-push.json")
		v["ref"], v["after"] = ref, commit
		h.Set("X-GitHub-Event", "push")
		h.Set("X-GitHub-Delivery", "72d3162e-cc78-11e3-81ab-4c9367dc0958")
		h.Set("X-GitHub-Hook-ID", "109948940")
		h.Set("User-Agent", "GitHub-Hookshot/044aadd")
		h.Set("X-Hub-Signature-256", "sha256=d57c68ca6f92289e6987922ff26938930f6e66a2d161ef06abdf1859230aa23c")
		d.Body = jsonBody(t, v)
	case receiver.GitLab:
		name := "gitlab-push.json"
		event := "Push Hook"
		if strings.HasPrefix(ref, "refs/tags/") {
			name, event = "gitlab-tag-push.json", "Tag Push Hook"
		}
		v := testdata(t, name)
		v["ref"], v["after"], v["checkout_sha"] = ref, commit, commit
		h.Set("X-Gitlab-Event", event)
		h.Set("X-Gitlab-Event-UUID", "13792a34-cac6-4fda-95a8-c58e00a3954e")
		h.Set("X-Gitlab-Instance", "https://gitlab.example.com")
		h.Set("X-Gitlab-Webhook-UUID", "fc2ec1b1-9e3a-4a61-b8d6-b6a6a1d51dd1")
		h.Set("User-Agent", "GitLab/17.5.0")
		if token != "" {
			h.Set("X-Gitlab-Token", token)
		}
		d.Body = jsonBody(t, v)
	case receiver.Gitea:
		v := testdata(t, "gitea-push.json")
		v["ref"], v["after"] = ref, commit
		h.Set("X-Gitea-Event", "push")
		h.Set("X-Gitea-Event-Type", "push")
		h.Set("X-Gitea-Delivery", "f6266f16-1bf3-46a5-9ea4-602e06ead473")
		h.Set("X-Gogs-Event", "push")
		h.Set("X-Gitea-Signature", "3f7ae16fd8ce2a8a3dc33a3ab7ed15f2c3f3b2a7b2f5e2d1b3c5e8f9a0b1c2d3")
		d.Body = jsonBody(t, v)
	case receiver.Bitbucket:
		v := testdata(t, "bitbucket-push.json")
		kind, name := "branch", strings.TrimPrefix(ref, "refs/heads/")
		if strings.HasPrefix(ref, "refs/tags/") {
			kind, name = "tag", strings.TrimPrefix(ref, "refs/tags/")
		}
		change := v["push"].(map[string]any)["changes"].([]any)[0].(map[string]any)
		nw := change["new"].(map[string]any)
		nw["type"], nw["name"] = kind, name
		nw["target"].(map[string]any)["hash"] = commit
		h.Set("X-Event-Key", "repo:push")
		h.Set("X-Request-UUID", "afe3b2b6-6a4b-4a38-8f36-2b6e7a3a1f50")
		h.Set("X-Hook-UUID", "{7b1b4a3e-8d3f-4f3e-9d3a-2b1c0d9e8f7a}")
		h.Set("User-Agent", "Bitbucket-Webhooks/2.0")
		d.Body = jsonBody(t, v)
	case receiver.BitbucketServer:
		v := testdata(t, "bitbucket-server-refs-changed.json")
		change := v["changes"].([]any)[0].(map[string]any)
		change["refId"], change["toHash"] = ref, commit
		change["ref"].(map[string]any)["id"] = ref
		h.Set("X-Event-Key", "repo:refs_changed")
		h.Set("X-Request-Id", "a5a3f2c1-5d7e-4b3a-9c1d-2e3f4a5b6c7d")
		d.Body = jsonBody(t, v)
	case receiver.Generic:
		if token != "" {
			h.Set("X-Flant-Gitops-Token", token)
		}
		d.Body = jsonBody(t, map[string]any{"ref": ref, "after": commit})
	default:
		t.Fatalf("receivertest: no push of provider %q", p)
	}
	return d
}

// Ping is the forge's own test delivery, for providers that have one
// distinct from a push (GitLab and Gitea test with a push).
func Ping(t testing.TB, p receiver.Provider) Delivery {
	t.Helper()
	h := http.Header{}
	d := Delivery{Provider: p, Name: string(p) + " ping", Headers: h, ContentType: "application/json"}
	switch p {
	case receiver.GitHub:
		h.Set("X-GitHub-Event", "ping")
		h.Set("X-GitHub-Delivery", "8bf1a5e0-cc78-11e3-81ab-4c9367dc0958")
		d.Body = jsonBody(t, testdata(t, "github-ping.json"))
	case receiver.BitbucketServer:
		h.Set("X-Event-Key", "diagnostics:ping")
		h.Set("X-Request-Id", "1e3b5f7a-0c2d-4e6f-8a1b-3c5d7e9f1a2b")
		d.Body = jsonBody(t, testdata(t, "bitbucket-server-ping.json"))
	default:
		t.Fatalf("receivertest: provider %q has no ping of its own", p)
	}
	return d
}

// FormEncoded turns a GitHub JSON delivery into the form GitHub sends when
// the hook's content type is application/x-www-form-urlencoded (its
// default): the JSON in the field payload.
func (d Delivery) FormEncoded() Delivery {
	d.ContentType = "application/x-www-form-urlencoded"
	d.Body = []byte(url.Values{"payload": {string(d.Body)}}.Encode())
	d.Name += " (form-encoded)"
	return d
}

// Request makes the HTTP request of the delivery to u.
func (d Delivery) Request(u string) (*http.Request, error) {
	req, err := http.NewRequest(http.MethodPost, u, bytes.NewReader(d.Body))
	if err != nil {
		return nil, fmt.Errorf("receivertest: %w", err)
	}
	for k, v := range d.Headers {
		req.Header[k] = v
	}
	req.Header.Set("Content-Type", d.ContentType)
	return req, nil
}

// VaultHeaders is what the plugin receives of the delivery's headers when
// the mount passes through receiver.PassthroughHeaders.
func (d Delivery) VaultHeaders() map[string][]string {
	out := map[string][]string{}
	for _, name := range receiver.PassthroughHeaders() {
		if v := d.Headers.Values(name); len(v) > 0 {
			out[name] = v
		}
	}
	return out
}
