package main

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/flant/flant_gitops/gitwatch/gittest"
)

// fakeOldPlugin answers as a plugin without signatures/ would (Vault's
// "unsupported path"), with its configuration and trusted keys, and records
// the tokens it was sent.
type fakeOldPlugin struct {
	mu     sync.Mutex
	tokens map[string]bool
	keys   map[string]string // name -> armored key
	cfg    map[string]any
}

func (f *fakeOldPlugin) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	f.tokens[r.Header.Get("X-Vault-Token")] = true
	f.mu.Unlock()
	answer := func(code int, body map[string]any) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		_ = json.NewEncoder(w).Encode(body)
	}
	path := strings.TrimPrefix(r.URL.Path, "/v1/flant_gitops/")
	switch {
	case strings.HasPrefix(path, "signatures/"):
		answer(404, map[string]any{"errors": []string{"1 error occurred:\n\t* unsupported path\n\n"}})
	case path == "configure" && r.Method == http.MethodGet:
		answer(200, map[string]any{"data": f.cfg})
	case path == "configure/trusted_pgp_public_key" && r.Method == "LIST":
		names := []string{}
		for n := range f.keys {
			names = append(names, n)
		}
		answer(200, map[string]any{"data": map[string]any{"keys": names}})
	case strings.HasPrefix(path, "configure/trusted_pgp_public_key/"):
		answer(200, map[string]any{"data": map[string]any{"public_key": f.keys[strings.TrimPrefix(path, "configure/trusted_pgp_public_key/")]}})
	default:
		answer(404, map[string]any{"errors": []string{}})
	}
}

// TestShowWithAnOlderPlugin: a plugin without signatures/ is asked for its
// quorum and trusted keys, and the tool counts with them.
func TestShowWithAnOlderPlugin(t *testing.T) {
	srv := gittest.NewServer(t)
	repo := srv.NewRepo(t, "ops")
	repo.Commit(t, map[string]string{"deploy.txt": "v0\n"})
	alice := newClone(t, srv, repo, "Alice")
	fp := alice.withGPG("Alice")
	alice.git("commit", "--quiet", "--allow-empty", "-S", "-m", "release")
	alice.git("push", "--quiet", "origin", "HEAD:main")

	fake := &fakeOldPlugin{tokens: map[string]bool{}, keys: map[string]string{"alice": alice.gpg.ExportPublic(t, fp)},
		cfg: map[string]any{"git_repo_url": repo.URL(), "git_branch_name": "main", "required_number_of_verified_signatures_on_commit": 2}}
	vault := httptest.NewServer(fake)
	defer vault.Close()
	alice.env = append(alice.env, "VAULT_ADDR="+vault.URL, "VAULT_TOKEN=s.signer")
	r := alice.tool("show", "--check")
	if r.code != exitMissing {
		t.Fatalf("show with an older plugin: %s", r)
	}
	for _, w := range []string{"trust: the plugin at " + vault.URL + "/v1/flant_gitops", "commit  OpenPGP " + fp + ": trusted signer alice", "verified: 1 of 2 required (alice)"} {
		if !strings.Contains(r.stdout, w) {
			t.Errorf("show lacks %q:\n%s", w, r.stdout)
		}
	}
	if len(fake.tokens) != 1 || !fake.tokens["s.signer"] {
		t.Fatalf("every request should carry VAULT_TOKEN, got %v", fake.tokens)
	}
}

// TestShowRefusesRedirects: the token never follows a redirect to another
// host, and a missing token is a usage error before any request.
func TestShowRefusesRedirects(t *testing.T) {
	srv := gittest.NewServer(t)
	repo := srv.NewRepo(t, "ops")
	repo.Commit(t, map[string]string{"deploy.txt": "v0\n"})
	alice := newClone(t, srv, repo, "Alice")
	var leaked sync.Map
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		leaked.Store(r.Header.Get("X-Vault-Token"), true)
	}))
	defer other.Close()
	// Another port of the same loopback is another host for the token.
	redirector := httptest.NewServer(http.RedirectHandler(other.URL+"/v1/flant_gitops/x", http.StatusTemporaryRedirect))
	defer redirector.Close()

	env := alice.env
	alice.env = append(env, "VAULT_ADDR="+redirector.URL, "VAULT_TOKEN=s.secret")
	r := alice.tool("show")
	if r.code != exitFailed || !strings.Contains(r.stderr, "redirect refused") {
		t.Fatalf("a redirect to another host should be refused: %s", r)
	}
	if _, ok := leaked.Load("s.secret"); ok {
		t.Fatal("the token reached the other host")
	}
	if strings.Contains(r.stdout+r.stderr, "s.secret") {
		t.Fatal("the token was printed")
	}
	alice.env = append(env, "VAULT_ADDR="+redirector.URL)
	if r := alice.tool("show"); r.code != exitUsage || !strings.Contains(r.stderr, "VAULT_TOKEN is not") {
		t.Fatalf("no token should be a usage error: %s", r)
	}
}
