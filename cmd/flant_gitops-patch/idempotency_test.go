package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// keyOf is the idempotency key a run with args and environment kv sends
// ("" for none).
func keyOf(t *testing.T, args []string, kv ...string) string {
	t.Helper()
	inv, err := parseArgs(args, env(append([]string{"VAULT_TOKEN", "t"}, kv...)...), strings.NewReader(""), io.Discard)
	if err != nil {
		t.Fatalf("parseArgs(%q): %v", args, err)
	}
	var body struct {
		Key string `json:"idempotency_key"`
	}
	if err := json.Unmarshal(inv.body, &body); err != nil {
		t.Fatal(err)
	}
	if body.Key != inv.idemKey {
		t.Fatalf("the body carries key %q, the client retries by %q", body.Key, inv.idemKey)
	}
	return body.Key
}

func TestIdempotencyKeyFromTheJob(t *testing.T) {
	set := func(v string) []string {
		return []string{"infra", "set", "g/p/release.yml", "spec.values.image.tag", v}
	}
	gitlab := []string{"CI_JOB_ID", "4242"}
	github := []string{"GITHUB_RUN_ID", "987", "GITHUB_RUN_ATTEMPT", "2", "GITHUB_JOB", "release"}
	tests := []struct {
		name string
		args []string
		env  []string
		want string // a regexp; "" for no key
	}{
		{"GitLab job", set("1.2.5"), gitlab, `^gitlab-job/4242/infra/[0-9a-f]{32}$`},
		{"GitHub job", set("1.2.5"), github, `^github-run/987/2/release/infra/[0-9a-f]{32}$`},
		{"GitHub without an attempt", set("1.2.5"), []string{"GITHUB_RUN_ID", "987", "GITHUB_JOB", "release"}, `^github-run/987/1/release/infra/`},
		{"outside CI", set("1.2.5"), nil, ""},
		{"disabled", append([]string{"--idempotency-key", "none"}, set("1.2.5")...), gitlab, ""},
		{"given", append([]string{"--idempotency-key", "release-1.2.5"}, set("1.2.5")...), nil, `^release-1\.2\.5$`},
		{"a dry run carries none", append([]string{"--dry-run"}, set("1.2.5")...), gitlab, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := keyOf(t, tt.args, tt.env...)
			if tt.want == "" {
				if got != "" {
					t.Fatalf("key %q, want none", got)
				}
				return
			}
			if !regexp.MustCompile(tt.want).MatchString(got) {
				t.Fatalf("key %q, want %s", got, tt.want)
			}
		})
	}

	// One job: the same patch twice has one key; another patch, message,
	// repository or mount another.
	base := keyOf(t, set("1.2.5"), gitlab...)
	if again := keyOf(t, set("1.2.5"), gitlab...); again != base {
		t.Errorf("the same patch in one job: keys %q and %q, want one", base, again)
	}
	for name, args := range map[string][]string{
		"another value":      set("1.2.6"),
		"another message":    append([]string{"--message", "hotfix"}, set("1.2.5")...),
		"another repository": {"apps", "set", "g/p/release.yml", "spec.values.image.tag", "1.2.5"},
		"another mount":      append([]string{"--mount", "ops/flant_gitops"}, set("1.2.5")...),
	} {
		if k := keyOf(t, args, gitlab...); k == base {
			t.Errorf("%s in the same job has the same key %q", name, k)
		}
	}
	if k := keyOf(t, set("1.2.5"), "CI_JOB_ID", "4243"); k == base {
		t.Errorf("another job has the same key %q", k)
	}

	for _, bad := range []string{"", "a\nb", strings.Repeat("k", 257)} {
		if _, err := parseArgs(append([]string{"--idempotency-key", bad}, set("1")...), env("VAULT_TOKEN", "t"), strings.NewReader(""), io.Discard); err == nil {
			t.Errorf("--idempotency-key %q was accepted", bad)
		}
	}
}

// A redirect is followed only to the same host, never out of https: every
// request carries the Vault token or the id_token. The other end of a
// refused redirect must never see a request.
func TestRedirectsThatWouldLeakTheToken(t *testing.T) {
	var mu sync.Mutex
	var leaked []string
	elsewhere := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		mu.Lock()
		leaked = append(leaked, r.Header.Get("X-Vault-Token")+" "+string(body))
		mu.Unlock()
		_, _ = io.WriteString(w, okPatch.body)
	}))
	t.Cleanup(elsewhere.Close)
	redirectTo := func(target string) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			if strings.HasPrefix(r.URL.Path, "/moved") {
				_, _ = io.WriteString(w, okPatch.body)
				return
			}
			to := target + r.URL.Path
			if target == "" {
				to = "/moved" + r.URL.Path
			}
			http.Redirect(w, r, to, http.StatusTemporaryRedirect)
		}
	}
	tlsTo := func(target string) (*httptest.Server, string) {
		srv := httptest.NewTLSServer(redirectTo(target))
		t.Cleanup(srv.Close)
		ca := filepath.Join(t.TempDir(), "ca.pem")
		if err := os.WriteFile(ca, pemCert(srv.Certificate().Raw), 0o644); err != nil {
			t.Fatal(err)
		}
		return srv, ca
	}
	plainTo := func(target string) *httptest.Server {
		srv := httptest.NewServer(redirectTo(target))
		t.Cleanup(srv.Close)
		return srv
	}
	httpsToHTTP, ca1 := tlsTo(elsewhere.URL)
	// The same host and port over http: only the scheme changes.
	httpsSameHost, ca2 := tlsTo("")
	httpsSameHostDown := strings.Replace(httpsSameHost.URL, "https://", "http://", 1)
	httpsDowngrade, ca3 := tlsTo(httpsSameHostDown)
	httpToOtherHost := plainTo(elsewhere.URL)
	httpToOtherPort := plainTo(strings.Replace(elsewhere.URL, "127.0.0.1", "localhost", 1))
	sameHost := plainTo("")

	tests := []struct {
		name, addr, cacert string
		role               bool // log in with an id_token first
		code               int
		stderr             string
	}{
		{"https to another host over http", httpsToHTTP.URL, ca1, false, exitRefused, "from https to http"},
		{"https to http on the same host", httpsDowngrade.URL, ca3, false, exitRefused, "from https to http"},
		{"login redirected to another host", httpToOtherHost.URL, "", true, exitRefused, "another host"},
		{"to another host", httpToOtherHost.URL, "", false, exitRefused, "another host"},
		{"to another name of the host", httpToOtherPort.URL, "", false, exitRefused, "another host"},
		{"on the same host over https", httpsSameHost.URL, ca2, false, exitOK, ""},
		{"on the same host", sameHost.URL, "", false, exitOK, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			mu.Lock()
			leaked = nil
			mu.Unlock()
			vars := []string{"VAULT_ADDR", tt.addr, "VAULT_TOKEN", "s.secret-token", "VAULT_CACERT", tt.cacert, "CI_JOB_ID", "7"}
			args := []string{"--deadline", "5s", "infra", "delete", "a.yml"}
			if tt.role {
				vars = append(vars, "VAULT_ID_TOKEN", "eyJ.secret-id-token")
				args = append([]string{"--role", "ci"}, args...)
			}
			var stdout, stderr bytes.Buffer
			code := run(context.Background(), args, env(vars...), strings.NewReader(""), &stdout, &stderr)
			if code != tt.code || !strings.Contains(stderr.String(), tt.stderr) {
				t.Fatalf("exit %d, want %d saying %q; stderr:\n%s", code, tt.code, tt.stderr, stderr.String())
			}
			mu.Lock()
			defer mu.Unlock()
			if len(leaked) > 0 {
				t.Fatalf("the other end got %d requests: %q", len(leaked), leaked)
			}
			if strings.Contains(stdout.String()+stderr.String(), "secret") {
				t.Fatalf("a token was printed: %s %s", stdout.String(), stderr.String())
			}
		})
	}
}

// An answer that does not come within the attempt's time is lost: sent
// again only with a key, when the plugin answers from the first request.
func TestAnswerTooLateIsRetriedOnlyWithAKey(t *testing.T) {
	savedAttempt, savedBackoff := attemptTimeout, defaultBackoff
	attemptTimeout = 300 * time.Millisecond
	defaultBackoff = backoff{base: time.Millisecond, max: 5 * time.Millisecond, rand: savedBackoff.rand}
	t.Cleanup(func() { attemptTimeout, defaultBackoff = savedAttempt, savedBackoff })
	for _, tc := range []struct {
		name  string
		vars  []string
		code  int
		tries int32
	}{
		{"in a CI job (a key)", []string{"CI_JOB_ID", "77"}, exitOK, 2},
		{"without a key", nil, exitRefused, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var tries atomic.Int32
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				_, _ = io.Copy(io.Discard, r.Body) // so the server notices the client leave
				if tries.Add(1) == 1 {
					select { // the first answer comes too late
					case <-r.Context().Done():
					case <-time.After(5 * time.Second):
					}
					return
				}
				_, _ = io.WriteString(w, okPatch.body)
			}))
			t.Cleanup(srv.Close)
			var stdout, stderr bytes.Buffer
			code := run(context.Background(), []string{"infra", "delete", "a.yml"}, env(append([]string{"VAULT_ADDR", srv.URL, "VAULT_TOKEN", "t"}, tc.vars...)...), strings.NewReader(""), &stdout, &stderr)
			if code != tc.code || tries.Load() != tc.tries {
				t.Fatalf("exit %d after %d tries, want %d after %d; stderr:\n%s", code, tries.Load(), tc.code, tc.tries, stderr.String())
			}
		})
	}
}
