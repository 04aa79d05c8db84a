package main_test

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// lossyProxy stands in front of Vault: the first patch request goes through
// and lands, but its answer is dropped (the connection closes); later patch
// requests wait until release is closed.
type lossyProxy struct {
	*httptest.Server
	lost    chan int // the status of the answer dropped
	release chan struct{}
	patches atomic.Int32
}

func newLossyProxy(t *testing.T, vaultAddr, patchPath string) *lossyProxy {
	t.Helper()
	target, err := url.Parse(vaultAddr)
	if err != nil {
		t.Fatal(err)
	}
	rp := httputil.NewSingleHostReverseProxy(target)
	p := &lossyProxy{lost: make(chan int, 1), release: make(chan struct{})}
	p.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != patchPath {
			rp.ServeHTTP(w, r)
			return
		}
		if p.patches.Add(1) == 1 {
			rec := httptest.NewRecorder()
			rp.ServeHTTP(rec, r)
			p.lost <- rec.Code
			if conn, _, err := w.(http.Hijacker).Hijack(); err == nil {
				_ = conn.Close()
			}
			return
		}
		<-p.release
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(p.Close)
	return p
}

// Job A sets 1.2.5; it lands but the answer is lost; job B sets 1.2.6; A
// retries. With the job's idempotency key the retry answers A's first
// commit: the branch ends at 1.2.6 with exactly one commit of A. Without a
// key the client does not send it again and says why.
func TestCIClientRetryAfterALostAnswerKeepsTheNewerRelease(t *testing.T) {
	const file = "my-group/my-project/release.yml"
	for _, tc := range []struct {
		name     string
		flags    []string
		wantCode int
	}{
		{"with the job's key", nil, 0},
		{"without a key", []string{"--idempotency-key", "none"}, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newCIEnv(t)
			initial := e.remote.Head(t)
			proxy := newLossyProxy(t, e.v.Addr, "/v1/flant_gitops/patch/infra")
			token := "VAULT_ID_TOKEN=" + e.idToken(t, "my-group/my-project")
			cli := filepath.Join(e.bin, "flant_gitops-patch")
			set := func(tag string) []string {
				return append(append([]string{"--role", "gitlab-ci", "--deadline", "2m"}, tc.flags...), "infra", "set", file, "spec.values.image.tag", tag)
			}

			jobA := exec.Command(cli, set("1.2.5")...)
			jobA.Env = append(e.jobEnv(token, "CI_JOB_ID=1001"), "VAULT_ADDR="+proxy.URL)
			var outA, errA bytes.Buffer
			jobA.Stdout, jobA.Stderr = &outA, &errA
			if err := jobA.Start(); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = jobA.Process.Kill() })
			select {
			case code := <-proxy.lost:
				if code != http.StatusOK {
					t.Fatalf("job A's first request answered %d before its answer was dropped", code)
				}
			case <-time.After(2 * time.Minute):
				t.Fatal("job A's patch never reached Vault")
			}
			landedA := e.remote.Head(t)
			if got := tagOf(t, fileAt(t, e, landedA, file)); got != "1.2.5" {
				t.Fatalf("after job A's lost answer the tag is %q, want 1.2.5 (it landed)", got)
			}

			b := run(t, e.jobEnv(token, "CI_JOB_ID=1002"), cli, set("1.2.6")...)
			if b.code != 0 {
				t.Fatalf("job B: exit %d\n%s", b.code, b.stderr)
			}
			close(proxy.release)
			err := jobA.Wait()
			codeA := 0
			if ee, ok := err.(*exec.ExitError); ok {
				codeA = ee.ExitCode()
			} else if err != nil {
				t.Fatal(err)
			}
			t.Logf("job A stderr:\n%s", errA.String())
			if codeA != tc.wantCode {
				t.Fatalf("job A: exit %d, want %d\n%s", codeA, tc.wantCode, errA.String())
			}

			head := e.remote.Head(t)
			if got := tagOf(t, fileAt(t, e, head, file)); got != "1.2.6" {
				t.Fatalf("the branch ends at tag %q, want 1.2.6 (job B's newer release)", got)
			}
			if n := strings.TrimSpace(e.git(t, "rev-list", "--count", initial+"..refs/heads/main")); n != "2" {
				t.Fatalf("%s commits since the start, want 2 (one of A, one of B):\n%s", n, e.git(t, "log", "--oneline", initial+"..refs/heads/main"))
			}
			if parent := strings.TrimSpace(e.git(t, "rev-parse", head+"^")); parent != landedA {
				t.Fatalf("B's commit sits on %s, want A's %s", parent, landedA)
			}
			switch tc.wantCode {
			case 0:
				if got := strings.TrimSpace(outA.String()); got != landedA {
					t.Errorf("job A printed %q, want its first commit %s", got, landedA)
				}
				if !strings.Contains(errA.String(), "trying again") || !strings.Contains(errA.String(), "repeat of an earlier request with the same idempotency key") {
					t.Errorf("job A's stderr does not show the retry answered from the first result:\n%s", errA.String())
				}
				if n := proxy.patches.Load(); n != 2 {
					t.Errorf("%d patch requests of job A, want 2", n)
				}
			default:
				if !strings.Contains(errA.String(), "has no idempotency key, so it is not sent again") {
					t.Errorf("job A's stderr does not say why it did not retry:\n%s", errA.String())
				}
				if n := proxy.patches.Load(); n != 1 {
					t.Errorf("%d patch requests of job A, want 1", n)
				}
			}
		})
	}
}

// The same key with another request is a 422 that says so, and commits
// nothing.
func TestCIClientSameKeyAnotherRequest(t *testing.T) {
	const file = "my-group/my-project/release.yml"
	e := newCIEnv(t)
	job := e.jobEnv("VAULT_ID_TOKEN=" + e.idToken(t, "my-group/my-project"))
	cli := filepath.Join(e.bin, "flant_gitops-patch")
	set := func(tag string) []string {
		return []string{"--role", "gitlab-ci", "--idempotency-key", "release-of-the-day", "infra", "set", file, "spec.values.image.tag", tag}
	}
	first := run(t, job, cli, set("1.2.7")...)
	if first.code != 0 {
		t.Fatalf("first: exit %d\n%s", first.code, first.stderr)
	}
	again := run(t, job, cli, set("1.2.7")...)
	if again.code != 0 || again.stdout != first.stdout || !strings.Contains(again.stderr, "repeat of an earlier request") {
		t.Fatalf("the same request again: exit %d %q\n%s; want the first commit %s", again.code, again.stdout, again.stderr, first.stdout)
	}
	other := run(t, job, cli, set("1.2.8")...)
	if other.code != 1 || !strings.Contains(other.stderr, "HTTP 422") || !strings.Contains(other.stderr, "already used by you for a different request") {
		t.Fatalf("another request with the key: exit %d\n%s; want 422 saying so", other.code, other.stderr)
	}
	if head := e.remote.Head(t); head != strings.TrimSpace(first.stdout) {
		t.Fatalf("the branch is at %s, want the first commit %s", head, first.stdout)
	}
}
