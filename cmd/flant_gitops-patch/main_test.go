package main

import (
	"bytes"
	"context"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

func env(kv ...string) func(string) string {
	m := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return func(k string) string { return m[k] }
}

// decodeBody is the request body as generic JSON, numbers kept exact.
func decodeBody(t *testing.T, body []byte) map[string]any {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	var m map[string]any
	if err := dec.Decode(&m); err != nil {
		t.Fatalf("the request body is not JSON: %v\n%s", err, body)
	}
	return m
}

func TestParseArgsBuildsTheRequest(t *testing.T) {
	dir := t.TempDir()
	contentFile := filepath.Join(dir, "new.yml")
	if err := os.WriteFile(contentFile, []byte("a: \"b\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	set := func(path, field string, value any) map[string]any {
		return map[string]any{"path": path, "setField": map[string]any{"field": field, "value": value}}
	}
	tests := []struct {
		name  string
		args  []string
		stdin string
		want  map[string]any
	}{
		{"a tag with a quote stays that exact string",
			[]string{"infra", "set", "g/p/release.yml", "spec.values.image.tag", `v1.2.3"x`},
			"", map[string]any{"commands": []any{set("g/p/release.yml", "spec.values.image.tag", `v1.2.3"x`)}}},
		{"JSON-looking values stay strings",
			[]string{"infra", "set", "a.yml", "a", "1.2.3", "set", "a.yml", "b", "true", "set", "a.yml", "c", `"quoted"`, "set", "a.yml", "d", `{"x":1}`},
			"", map[string]any{"commands": []any{set("a.yml", "a", "1.2.3"), set("a.yml", "b", "true"), set("a.yml", "c", `"quoted"`), set("a.yml", "d", `{"x":1}`)}}},
		{"an injection attempt is one string",
			[]string{"infra", "set", "a.yml", "tag", `1"}, {"path": "../../etc/passwd", "deleteFile": {}}, {"x": "`},
			"", map[string]any{"commands": []any{set("a.yml", "tag", `1"}, {"path": "../../etc/passwd", "deleteFile": {}}, {"x": "`)}}},
		{"set-json takes typed values",
			[]string{"infra", "set-json", "a.yml", "replicas", "3", "set-json", "a.yml", "on", "true", "set-json", "a.yml", "obj", `{"b": [1, null]}`, "set-json", "a.yml", "s", `"1.2"`},
			"", map[string]any{"commands": []any{set("a.yml", "replicas", json.Number("3")), set("a.yml", "on", true), set("a.yml", "obj", map[string]any{"b": []any{json.Number("1"), nil}}), set("a.yml", "s", "1.2")}}},
		{"create, from a file and from stdin, and delete",
			[]string{"--overwrite", "infra", "create", "x.yml", "k: v\n", "create", "y.yml", "@" + contentFile, "create", "z.yml", "@-", "delete", "old.yml"},
			"from: stdin\n", map[string]any{"commands": []any{
				map[string]any{"path": "x.yml", "createFile": map[string]any{"content": "k: v\n", "overwrite": true}},
				map[string]any{"path": "y.yml", "createFile": map[string]any{"content": "a: \"b\"\n", "overwrite": true}},
				map[string]any{"path": "z.yml", "createFile": map[string]any{"content": "from: stdin\n", "overwrite": true}},
				map[string]any{"path": "old.yml", "deleteFile": map[string]any{}},
			}}},
		{"commit options, aliased and create flags, dry run",
			[]string{"--message", `release "v1"`, "--author-name", "CI", "--author-email", "ci@example.com", "--allow-aliased", "--create-missing", "--dry-run", "infra", "set", "a.yml", "x.y", "1"},
			"", map[string]any{
				"commit":   map[string]any{"message": `release "v1"`, "author": map[string]any{"name": "CI", "email": "ci@example.com"}},
				"commands": []any{map[string]any{"path": "a.yml", "setField": map[string]any{"field": "x.y", "value": "1", "create": true, "allowAliased": true}}},
				"dry_run":  true,
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stderr bytes.Buffer
			inv, err := parseArgs(tt.args, env("VAULT_TOKEN", "t"), strings.NewReader(tt.stdin), &stderr)
			if err != nil {
				t.Fatalf("parseArgs: %v", err)
			}
			if got := decodeBody(t, inv.body); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("body\n got %#v\nwant %#v\n(raw %s)", got, tt.want, inv.body)
			}
		})
	}
}

func TestParseArgsRefusesBadUsage(t *testing.T) {
	tests := []struct {
		name string
		args []string
		env  func(string) string
		want string
	}{
		{"no token", []string{"infra", "delete", "a.yml"}, env(), "no Vault token"},
		{"role without id_token", []string{"--role", "ci", "infra", "delete", "a.yml"}, env("VAULT_TOKEN", "t"), "$VAULT_ID_TOKEN is empty"},
		{"role with another variable", []string{"--role", "ci", "--jwt-env", "MY_JWT", "infra", "delete", "a.yml"}, env("VAULT_ID_TOKEN", "x"), "$MY_JWT is empty"},
		{"no repo", []string{}, env("VAULT_TOKEN", "t"), "REPO is missing"},
		{"repo escaping the path", []string{"../sys", "delete", "a.yml"}, env("VAULT_TOKEN", "t"), "not a repository name"},
		{"mount escaping", []string{"--mount", "a/../sys", "infra", "delete", "a.yml"}, env("VAULT_TOKEN", "t"), "not a mount path"},
		{"no command", []string{"infra"}, env("VAULT_TOKEN", "t"), "no command"},
		{"unknown command", []string{"infra", "remove", "a.yml"}, env("VAULT_TOKEN", "t"), `unknown command "remove"`},
		{"set short of arguments", []string{"infra", "set", "a.yml", "tag"}, env("VAULT_TOKEN", "t"), "set needs 3 arguments, got 2"},
		{"set-json not JSON", []string{"infra", "set-json", "a.yml", "tag", "v1"}, env("VAULT_TOKEN", "t"), "not one JSON value"},
		{"set-json two values", []string{"infra", "set-json", "a.yml", "tag", "1 2"}, env("VAULT_TOKEN", "t"), "not one JSON value"},
		{"empty field", []string{"infra", "set", "a.yml", "", "v"}, env("VAULT_TOKEN", "t"), "FIELD is empty"},
		{"invalid UTF-8", []string{"infra", "set", "a.yml", "tag", "v\xff"}, env("VAULT_TOKEN", "t"), "not valid UTF-8"},
		{"missing content file", []string{"infra", "create", "a.yml", "@/nonexistent/x"}, env("VAULT_TOKEN", "t"), "read the content"},
		{"stdin twice", []string{"infra", "create", "a.yml", "@-", "create", "b.yml", "@-"}, env("VAULT_TOKEN", "t"), "@- can be given once"},
		{"author name alone", []string{"--author-name", "x", "infra", "delete", "a.yml"}, env("VAULT_TOKEN", "t"), "go together"},
		{"non-positive deadline", []string{"--deadline", "0s", "infra", "delete", "a.yml"}, env("VAULT_TOKEN", "t"), "--deadline must be positive"},
		{"VAULT_ADDR without a scheme", []string{"infra", "delete", "a.yml"}, env("VAULT_TOKEN", "t", "VAULT_ADDR", "vault.example.com:8200"), "not an http(s) URL"},
		{"unknown flag", []string{"--force", "infra", "delete", "a.yml"}, env("VAULT_TOKEN", "t"), "flag provided but not defined"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := run(context.Background(), tt.args, tt.env, strings.NewReader(""), &stdout, &stderr)
			if code != exitUsage {
				t.Errorf("exit %d, want %d (usage)", code, exitUsage)
			}
			if !strings.Contains(stderr.String(), tt.want) {
				t.Errorf("stderr %q does not say %q", stderr.String(), tt.want)
			}
			if stdout.Len() != 0 {
				t.Errorf("stdout %q on a usage error", stdout.String())
			}
		})
	}
}

func TestHelpDocumentsGrammarAndExitCodes(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if code := run(context.Background(), []string{"-h"}, env(), strings.NewReader(""), &stdout, &stderr); code != exitOK {
		t.Fatalf("-h: exit %d", code)
	}
	for _, want := range []string{"set FILE FIELD VALUE", "set-json FILE FIELD JSON", "create FILE CONTENT", "delete FILE", "Exit codes: 0", "3 gave up", "-deadline", "-dry-run", "-role"} {
		if !strings.Contains(stderr.String(), want) {
			t.Errorf("-h does not mention %q", want)
		}
	}
}

func TestRetryable(t *testing.T) {
	tests := []struct {
		name  string
		f     failure
		key   bool // the request has an idempotency key (or is a dry run)
		retry bool
		hint  time.Duration
	}{
		{"never reached Vault", failure{err: syscall.ECONNREFUSED}, false, true, 0},
		{"answer lost, no key", failure{err: io.ErrUnexpectedEOF, sent: true}, false, false, 0},
		{"answer lost, with a key", failure{err: io.ErrUnexpectedEOF, sent: true}, true, true, 0},
		{"proxy 502, no key", failure{status: 502, msg: "Bad Gateway", sent: true}, false, false, 0},
		{"proxy 502, with a key", failure{status: 502, msg: "Bad Gateway", sent: true}, true, true, 0},
		{"proxy 504, no key", failure{status: 504, msg: "Gateway Timeout", sent: true}, false, false, 0},
		{"proxy 504, with a key", failure{status: 504, msg: "Gateway Timeout", sent: true}, true, true, 0},
		{"proxy 503, no key", failure{status: 503, msg: "Service Unavailable", sent: true}, false, false, 0},
		{"proxy 503, with a key, Retry-After", failure{status: 503, msg: "Service Unavailable", sent: true, retryAfter: time.Second}, true, true, time.Second},
		{"redirect refused, with a key", failure{err: fmt.Errorf("%w: to another host", errRedirect), sent: true}, true, false, 0},
		{"plugin's 502 with a key", failure{status: 502, msg: "git server: push refused", fromVault: true}, true, false, 0},
		{"same key, another request", failure{status: 422, msg: "this idempotency_key was already used", fromVault: true}, true, false, 0},
		{"full queue names its wait", failure{status: 429, msg: `branch "main" already has 256 patches waiting, the most it queues; nothing was done, retry in 1.5s`, fromVault: true}, false, true, 1500 * time.Millisecond},
		{"full queue, composite duration", failure{status: 429, msg: "... retry in 1m30s", fromVault: true}, false, true, 90 * time.Second},
		{"rate limit with Retry-After", failure{status: 429, msg: "request path \"x\": rate limit quota exceeded", retryAfter: 2 * time.Second, fromVault: true}, false, true, 2 * time.Second},
		{"429 without a time", failure{status: 429, msg: "slow down", fromVault: true}, false, true, 0},
		{"reconfigured while waiting", failure{status: 503, msg: `the patch target of branch "main" was reconfigured or removed; nothing was pushed, retry`, fromVault: true}, false, true, 0},
		{"sealed Vault", failure{status: 503, msg: "Vault is sealed", fromVault: true}, false, true, 0},
		{"branch kept moving", failure{status: 409, msg: `branch "main" moved under the patch 5 times in a row (concurrent pushes); nothing was pushed, retry later`, fromVault: true}, false, true, 0},
		{"content conflict", failure{status: 409, msg: `my/release.yml: spec.values.image.tag: the node carries anchor &tag read by aliases at lines 9, 12; set allowAliased to change them too`, fromVault: true}, false, false, 0},
		{"untrusted tip", failure{status: 409, msg: `the tip abc of "main" is not accepted by the watcher`, fromVault: true}, false, false, 0},
		{"bad request", failure{status: 400, msg: "commands[0].setField.field: bad", fromVault: true}, false, false, 0},
		{"denied", failure{status: 403, msg: "permission denied", fromVault: true}, false, false, 0},
		{"not found", failure{status: 404, msg: "repository \"infra\" is not configured", fromVault: true}, false, false, 0},
		{"too large", failure{status: 413, msg: "more than 256 commands", fromVault: true}, false, false, 0},
		{"git server", failure{status: 502, msg: "git server: authentication required", fromVault: true}, false, false, 0},
		{"internal", failure{status: 500, msg: "boom", fromVault: true}, false, false, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			retry, hint := retryable(&tt.f, tt.key)
			if retry != tt.retry || hint != tt.hint {
				t.Errorf("retryable = %v, %s; want %v, %s", retry, hint, tt.retry, tt.hint)
			}
		})
	}
}

func TestBackoffIsFullJitterAfterTheHint(t *testing.T) {
	most := func(n int64) int64 { return n - 1 }
	least := func(int64) int64 { return 0 }
	b := backoff{base: 100 * time.Millisecond, max: time.Second}
	tests := []struct {
		name    string
		rand    func(int64) int64
		attempt int
		hint    time.Duration
		want    time.Duration
	}{
		{"first try, at most base", most, 0, 0, 100*time.Millisecond - 1},
		{"doubles", most, 3, 0, 800*time.Millisecond - 1},
		{"capped", most, 10, 0, time.Second - 1},
		{"huge attempt stays capped", most, 200, 0, time.Second - 1},
		{"full jitter reaches zero", least, 5, 0, 0},
		{"never before the hint", least, 5, 3 * time.Second, 3 * time.Second},
		{"jitter on top of the hint, bounded by it", most, 0, 50 * time.Millisecond, 100*time.Millisecond - 1},
		{"jitter on top of a long hint, capped", most, 10, 3 * time.Second, 4*time.Second - 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b.rand = tt.rand
			if got := b.delay(tt.attempt, tt.hint); got != tt.want {
				t.Errorf("delay(%d, %s) = %s, want %s", tt.attempt, tt.hint, got, tt.want)
			}
		})
	}
}

func TestCleanError(t *testing.T) {
	tests := []struct{ in, want string }{
		{"1 error occurred:\n\t* branch \"main\" moved under the patch 5 times\n\n", `branch "main" moved under the patch 5 times`},
		{"2 errors occurred:\n\t* a\n\t* b\n\n", "a; b"},
		{"permission denied", "permission denied"},
		{"  plain with a\n\t* star line  ", "plain with a\n\t* star line"},
	}
	for _, tt := range tests {
		if got := cleanError(tt.in); got != tt.want {
			t.Errorf("cleanError(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

// reply is one scripted answer of the fake Vault; hangUp closes the
// connection without an answer.
type reply struct {
	status int
	body   string
	hangUp bool
}

const sha = "0123456789abcdef0123456789abcdef01234567"

var okPatch = reply{200, `{"data": {"commit": "` + sha + `", "parent": "fedcba", "branch": "main", "changed_paths": ["g/p/release.yml"], "no_op": false, "attempts": 1}}`, false}

func vaultErr(status int, msg string) reply {
	b, _ := json.Marshal(map[string]any{"errors": []string{"1 error occurred:\n\t* " + msg + "\n\n"}})
	return reply{status: status, body: string(b)}
}

type seen struct {
	path, token, namespace string
	body                   []byte
}

// fakeVault answers the scripted replies per path, in order (the last one
// repeats), and records every request.
func fakeVault(t *testing.T, script map[string][]reply) (*httptest.Server, func() []seen) {
	t.Helper()
	var mu sync.Mutex
	var log []seen
	next := map[string]int{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		mu.Lock()
		log = append(log, seen{r.URL.Path, r.Header.Get("X-Vault-Token"), r.Header.Get("X-Vault-Namespace"), body})
		replies := script[r.URL.Path]
		i := next[r.URL.Path]
		next[r.URL.Path]++
		mu.Unlock()
		if len(replies) == 0 {
			http.Error(w, `{"errors": ["unsupported path"]}`, http.StatusNotFound)
			return
		}
		rep := replies[min(i, len(replies)-1)]
		if rep.hangUp {
			conn, _, err := w.(http.Hijacker).Hijack()
			if err == nil {
				conn.Close()
			}
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(rep.status)
		_, _ = io.WriteString(w, rep.body)
	}))
	t.Cleanup(srv.Close)
	return srv, func() []seen {
		mu.Lock()
		defer mu.Unlock()
		return append([]seen(nil), log...)
	}
}

func TestRunRetriesWhatMayPassAndExitCodes(t *testing.T) {
	saved := defaultBackoff
	defaultBackoff = backoff{base: time.Millisecond, max: 5 * time.Millisecond, rand: saved.rand}
	t.Cleanup(func() { defaultBackoff = saved })

	const patchPath = "/v1/flant_gitops/patch/infra"
	moved := vaultErr(409, `branch "main" moved under the patch 5 times in a row (concurrent pushes); nothing was pushed, retry later`)
	tests := []struct {
		name     string
		replies  []reply
		deadline string
		code     int
		tries    int
		stdout   string
		stderr   string
	}{
		{"committed", []reply{okPatch}, "", exitOK, 1, sha + "\n", "committed 0123456789ab on main"},
		{"full queue, then committed", []reply{vaultErr(429, `branch "main" already has 2 patches waiting, the most it queues; nothing was done, retry in 3ms`), okPatch}, "", exitOK, 2, sha + "\n", "retry in 3ms; trying again in"},
		{"reconfigured, then committed", []reply{vaultErr(503, `the patch target of branch "main" was reconfigured or removed; nothing was pushed, retry`), okPatch}, "", exitOK, 2, sha + "\n", "HTTP 503"},
		{"branch kept moving twice, then committed", []reply{moved, moved, okPatch}, "", exitOK, 3, sha + "\n", "moved under the patch"},
		{"connection dropped in a CI job, then committed", []reply{{hangUp: true}, okPatch}, "", exitOK, 2, sha + "\n", "EOF"},
		{"connection dropped without a key is final", []reply{{hangUp: true}, okPatch}, "", exitRefused, 1, "", "has no idempotency key, so it is not sent again"},
		{"a proxy's 504 in a CI job, then committed", []reply{{504, "<html>Gateway Timeout</html>", false}, okPatch}, "", exitOK, 2, sha + "\n", "HTTP 504"},
		{"a proxy's 503 without a key is final", []reply{{503, "<html>Service Unavailable</html>", false}, okPatch}, "", exitRefused, 1, "", "has no idempotency key"},
		{"no_op", []reply{{200, `{"data": {"commit": "` + sha + `", "parent": "` + sha + `", "branch": "main", "changed_paths": [], "no_op": true, "attempts": 0}}`, false}}, "", exitOK, 1, sha + "\n", "no_op"},
		{"content conflict is final", []reply{vaultErr(409, "a.yml: tag: the node carries anchor &x; set allowAliased"), okPatch}, "", exitRefused, 1, "", "refused: HTTP 409: a.yml: tag: the node carries anchor"},
		{"bad request is final", []reply{{400, `{"errors": ["commands[0]: bad field"]}`, false}, okPatch}, "", exitRefused, 1, "", "HTTP 400: commands[0]: bad field"},
		{"denied is final", []reply{vaultErr(403, "patch denied by the policy: outside my-group/"), okPatch}, "", exitRefused, 1, "", "patch denied by the policy"},
		{"not found is final", []reply{vaultErr(404, `repository "infra" is not configured`), okPatch}, "", exitRefused, 1, "", "not configured"},
		{"too large is final", []reply{vaultErr(413, "more than 256 commands"), okPatch}, "", exitRefused, 1, "", "HTTP 413"},
		{"a proxy's page", []reply{{502, "<html>Bad Gateway</html>", false}}, "", exitRefused, 1, "", "HTTP 502: <html>Bad Gateway</html>"},
		{"kept moving until the deadline", []reply{moved}, "200ms", exitGaveUp, -1, "", "gave up"},
		{"full queue naming a wait past the deadline", []reply{vaultErr(429, "... nothing was done, retry in 1h")}, "", exitGaveUp, 1, "", "would be after the deadline"},
		{"not Vault's JSON on success", []reply{{200, "ok", false}}, "", exitRefused, 1, "", "not Vault's JSON"},
	}
	// These run in a GitLab job, so the request carries an idempotency key.
	inCI := map[string]bool{"connection dropped in a CI job, then committed": true, "a proxy's 504 in a CI job, then committed": true}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv, requests := fakeVault(t, map[string][]reply{patchPath: tt.replies})
			args := []string{"infra", "set", "g/p/release.yml", "spec.values.image.tag", `v1.2.3"x`}
			if tt.deadline != "" {
				args = append([]string{"--deadline", tt.deadline}, args...)
			}
			vars := []string{"VAULT_ADDR", srv.URL, "VAULT_TOKEN", "s.secret-token", "VAULT_NAMESPACE", "team-a"}
			if inCI[tt.name] {
				vars = append(vars, "CI_JOB_ID", "4242")
			}
			var stdout, stderr bytes.Buffer
			code := run(context.Background(), args, env(vars...), strings.NewReader(""), &stdout, &stderr)
			if code != tt.code {
				t.Errorf("exit %d, want %d; stderr:\n%s", code, tt.code, stderr.String())
			}
			reqs := requests()
			if tt.tries >= 0 && len(reqs) != tt.tries {
				t.Errorf("%d requests, want %d", len(reqs), tt.tries)
			}
			if tt.tries < 0 && len(reqs) < 2 {
				t.Errorf("%d requests: a retryable answer was not retried", len(reqs))
			}
			if stdout.String() != tt.stdout {
				t.Errorf("stdout %q, want %q", stdout.String(), tt.stdout)
			}
			if !strings.Contains(stderr.String(), tt.stderr) {
				t.Errorf("stderr %q does not say %q", stderr.String(), tt.stderr)
			}
			if strings.Contains(stdout.String()+stderr.String(), "s.secret-token") {
				t.Error("the token was printed")
			}
			for _, r := range reqs {
				if r.token != "s.secret-token" || r.namespace != "team-a" {
					t.Errorf("request with token %q namespace %q", r.token, r.namespace)
				}
				var body struct {
					Commands []struct {
						SetField struct {
							Value string `json:"value"`
						} `json:"setField"`
					} `json:"commands"`
				}
				if err := json.Unmarshal(r.body, &body); err != nil || len(body.Commands) != 1 || body.Commands[0].SetField.Value != `v1.2.3"x` {
					t.Errorf("request body %s does not carry the tag as sent (%v)", r.body, err)
				}
			}
		})
	}
}

func TestRunLogsInWithTheIDToken(t *testing.T) {
	saved := defaultBackoff
	defaultBackoff = backoff{base: time.Millisecond, max: 5 * time.Millisecond, rand: saved.rand}
	t.Cleanup(func() { defaultBackoff = saved })

	const idToken = "eyJhbGciOi.job-id-token.sig"
	const clientToken = "hvs.from-login"
	loginOK := reply{200, `{"auth": {"client_token": "` + clientToken + `"}}`, false}
	tests := []struct {
		name      string
		login     []reply
		code      int
		patched   bool
		revoked   bool
		stderr    string
		extraArgs []string
	}{
		{"login, patch, revoke", []reply{loginOK}, exitOK, true, true, "committed", nil},
		{"login retried after a sealed Vault", []reply{vaultErr(503, "Vault is sealed"), loginOK}, exitOK, true, true, "HTTP 503", nil},
		{"claims refused at login", []reply{{400, `{"errors": ["error validating claims: claim \"namespace_path\" does not match any associated bound claim values"]}`, false}}, exitRefused, false, false, "login at auth/jwt refused: HTTP 400: error validating claims", nil},
		{"login answers no token", []reply{{200, `{"data": {}}`, false}}, exitRefused, false, false, "answered no token", nil},
		{"another auth mount", []reply{loginOK}, exitOK, true, true, "committed", []string{"--auth-mount", "gitlab"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			mount := "jwt"
			for i, a := range tt.extraArgs {
				if a == "--auth-mount" {
					mount = tt.extraArgs[i+1]
				}
			}
			srv, requests := fakeVault(t, map[string][]reply{
				"/v1/auth/" + mount + "/login": tt.login,
				"/v1/flant_gitops/patch/infra": {okPatch},
				"/v1/auth/token/revoke-self":   {{204, "", false}},
			})
			args := append(append([]string{"--role", "gitlab-ci"}, tt.extraArgs...), "infra", "delete", "g/p/old.yml")
			var stdout, stderr bytes.Buffer
			// VAULT_TOKEN is set too: --role wins, and neither token is printed.
			code := run(context.Background(), args, env("VAULT_ADDR", srv.URL, "VAULT_ID_TOKEN", idToken, "VAULT_TOKEN", "s.ambient"), strings.NewReader(""), &stdout, &stderr)
			if code != tt.code {
				t.Errorf("exit %d, want %d; stderr:\n%s", code, tt.code, stderr.String())
			}
			if !strings.Contains(stderr.String(), tt.stderr) {
				t.Errorf("stderr %q does not say %q", stderr.String(), tt.stderr)
			}
			out := stdout.String() + stderr.String()
			for _, secret := range []string{idToken, clientToken, "s.ambient"} {
				if strings.Contains(out, secret) {
					t.Errorf("printed %q", secret)
				}
			}
			var patched, revoked bool
			for _, r := range requests() {
				switch r.path {
				case "/v1/auth/" + mount + "/login":
					var login map[string]string
					if err := json.Unmarshal(r.body, &login); err != nil || login["role"] != "gitlab-ci" || login["jwt"] != idToken || r.token != "" {
						t.Errorf("login request %s with token %q", r.body, r.token)
					}
				case "/v1/flant_gitops/patch/infra":
					patched = true
					if r.token != clientToken {
						t.Errorf("patch sent with token %q, want the login's", r.token)
					}
				case "/v1/auth/token/revoke-self":
					revoked = true
					if r.token != clientToken {
						t.Errorf("revoke-self with token %q", r.token)
					}
				}
			}
			if patched != tt.patched || revoked != tt.revoked {
				t.Errorf("patched %v revoked %v, want %v %v", patched, revoked, tt.patched, tt.revoked)
			}
		})
	}
}

func TestRunOutputs(t *testing.T) {
	answer := `{"data": {"commit": "` + sha + `", "parent": "fedcba", "branch": "main", "changed_paths": ["a.yml"], "no_op": false, "attempts": 1, "dry_run": true, "diff": "--- a/a.yml\n+++ b/a.yml\n-x\n+y\n"}, "warnings": ["endpoint is deprecated"]}`
	tests := []struct {
		name   string
		flags  []string
		stdout string
		stderr string
	}{
		{"dry run prints the diff", []string{"--dry-run"}, "--- a/a.yml\n+++ b/a.yml\n-x\n+y\n", "dry run: would change a.yml on main"},
		{"json prints the answer", []string{"--json"}, "", "warning: endpoint is deprecated"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv, requests := fakeVault(t, map[string][]reply{"/v1/flant_gitops/patch/infra": {{200, answer, false}}})
			var stdout, stderr bytes.Buffer
			args := append(tt.flags, "infra", "set", "a.yml", "x", "y")
			if code := run(context.Background(), args, env("VAULT_ADDR", srv.URL, "VAULT_TOKEN", "t"), strings.NewReader(""), &stdout, &stderr); code != exitOK {
				t.Fatalf("exit %d: %s", code, stderr.String())
			}
			if tt.stdout != "" && stdout.String() != tt.stdout {
				t.Errorf("stdout %q, want %q", stdout.String(), tt.stdout)
			}
			if tt.flags[0] == "--json" {
				var got map[string]any
				if err := json.Unmarshal(stdout.Bytes(), &got); err != nil || got["commit"] != sha || got["no_op"] != false {
					t.Errorf("--json printed %q (%v)", stdout.String(), err)
				}
			}
			if !strings.Contains(stderr.String(), tt.stderr) {
				t.Errorf("stderr %q does not say %q", stderr.String(), tt.stderr)
			}
			if tt.flags[0] == "--dry-run" && decodeBody(t, requests()[0].body)["dry_run"] != true {
				t.Error("the request does not ask for a dry run")
			}
		})
	}
}

func TestRunGivesUpOnAnUnreachableVault(t *testing.T) {
	saved := defaultBackoff
	defaultBackoff = backoff{base: time.Millisecond, max: 5 * time.Millisecond, rand: saved.rand}
	t.Cleanup(func() { defaultBackoff = saved })

	// A port nobody listens on: bound, then closed.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := "http://" + l.Addr().String()
	l.Close()
	var stdout, stderr bytes.Buffer
	code := run(context.Background(), []string{"--deadline", "100ms", "infra", "delete", "a.yml"}, env("VAULT_ADDR", addr, "VAULT_TOKEN", "t"), strings.NewReader(""), &stdout, &stderr)
	if code != exitGaveUp {
		t.Errorf("exit %d, want %d; stderr:\n%s", code, exitGaveUp, stderr.String())
	}
	if !strings.Contains(stderr.String(), "trying again") || !strings.Contains(stderr.String(), "gave up") {
		t.Errorf("stderr %q does not show the retries and the giving up", stderr.String())
	}
}

func TestCACert(t *testing.T) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, okPatch.body)
	}))
	t.Cleanup(srv.Close)
	dir := t.TempDir()
	ca := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(ca, pemCert(srv.Certificate().Raw), 0o644); err != nil {
		t.Fatal(err)
	}
	notPEM := filepath.Join(dir, "x.pem")
	if err := os.WriteFile(notPEM, []byte("nope"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, cacert string
		code         int
	}{
		{"trusted CA", ca, exitOK},
		{"an untrusted certificate is final", "", exitRefused},
		{"missing file is usage", filepath.Join(dir, "none.pem"), exitUsage},
		{"not PEM is usage", notPEM, exitUsage},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := run(context.Background(), []string{"infra", "delete", "a.yml"}, env("VAULT_ADDR", srv.URL, "VAULT_TOKEN", "t", "VAULT_CACERT", tt.cacert), strings.NewReader(""), &stdout, &stderr)
			if code != tt.code {
				t.Errorf("exit %d, want %d: %s", code, tt.code, stderr.String())
			}
		})
	}
}

func pemCert(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

// TestStandardLibraryOnly keeps the client small and static: no Vault SDK,
// no backend, nothing outside the standard library but the module's own
// internal packages, whose dependencies the same list holds to that rule.
func TestStandardLibraryOnly(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "-f", "{{if not .Standard}}{{.ImportPath}}{{end}}", ".").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	for _, pkg := range strings.Fields(string(out)) {
		if pkg != "github.com/flant/flant_gitops/cmd/flant_gitops-patch" && !strings.HasPrefix(pkg, "github.com/flant/flant_gitops/internal/") {
			t.Errorf("the CI client imports %s; keep it to the standard library", pkg)
		}
	}
}

// FuzzRequestCarriesArgumentsExactly: whatever a job passes (quotes,
// backslashes, braces, control characters), the body is JSON in which every
// argument reads back exactly, or the arguments are refused as usage.
func FuzzRequestCarriesArgumentsExactly(f *testing.F) {
	f.Add("g/p/release.yml", "spec.values.image.tag", `v1.2.3"x`, "release")
	f.Add("a.yml", `$["x"]`, `1"}, {"path": "../x", "deleteFile": {}}, {"a": "`, "m\n\"")
	f.Add("a.yml", "a", "\\u0000\x00\t", "")
	f.Fuzz(func(t *testing.T, file, field, value, message string) {
		var stderr bytes.Buffer
		args := []string{"--message", message, "infra", "set", file, field, value}
		inv, err := parseArgs(args, env("VAULT_TOKEN", "t"), strings.NewReader(""), &stderr)
		if err != nil {
			return // refused before anything was sent
		}
		var body struct {
			Commit *struct {
				Message string `json:"message"`
			} `json:"commit"`
			Commands []struct {
				Path     string `json:"path"`
				SetField struct {
					Field string          `json:"field"`
					Value json.RawMessage `json:"value"`
				} `json:"setField"`
			} `json:"commands"`
		}
		if err := json.Unmarshal(inv.body, &body); err != nil {
			t.Fatalf("the body is not JSON: %v\n%s", err, inv.body)
		}
		var got string
		if len(body.Commands) != 1 || json.Unmarshal(body.Commands[0].SetField.Value, &got) != nil {
			t.Fatalf("the body has not one set with a string value: %s", inv.body)
		}
		c := body.Commands[0]
		if c.Path != file || c.SetField.Field != field || got != value {
			t.Errorf("sent %q %q %q, the body reads %q %q %q", file, field, value, c.Path, c.SetField.Field, got)
		}
		if message != "" && (body.Commit == nil || body.Commit.Message != message) {
			t.Errorf("message %q, the body reads %+v", message, body.Commit)
		}
	})
}

// TestVersionFlag: --version prints the linked version (make release sets
// main.version) and sends nothing, even without a token.
func TestVersionFlag(t *testing.T) {
	var stdout, stderr bytes.Buffer
	noToken := func(string) string { return "" }
	if code := run(context.Background(), []string{"--version"}, noToken, strings.NewReader(""), &stdout, &stderr); code != exitOK {
		t.Fatalf("--version exit %d, stderr %q", code, stderr.String())
	}
	if got, want := stdout.String(), programName+" "+version+"\n"; got != want {
		t.Errorf("--version printed %q, want %q", got, want)
	}
}
