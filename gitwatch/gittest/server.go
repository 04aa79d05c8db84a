// Package gittest runs a real Git smart-HTTP server on loopback for tests:
// `git http-backend` behind net/http/cgi, with basic auth, pushes enabled,
// and counters of what clients asked for. Repositories are made and changed
// through the real git command line (commits, gpg-signed commits, go-crypto
// and go-git signed commits, trdl-style notes signatures, force-pushes).
//
// A missing git fails the test with what to install; nothing is skipped.
package gittest

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"net/http"
	"net/http/cgi"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// Server is a smart-HTTP git server over the bare repositories in Root.
type Server struct {
	// Root holds the bare repositories, one NAME.git directory each.
	Root string

	username, password string
	http               *httptest.Server

	mu    sync.Mutex
	stats Stats
}

// Stats counts client requests, to assert what a fetch cost without timing.
type Stats struct {
	// RefAdvertisements is the number of GET info/refs?service=git-upload-pack.
	RefAdvertisements int
	// UploadPacks is the number of POST git-upload-pack (object negotiation
	// and transfer).
	UploadPacks int
	// UploadPackBytes is the response size of those POSTs (the packs).
	UploadPackBytes int64
	// ReceivePacks is the number of POST git-receive-pack (pushes).
	ReceivePacks int
	// Unauthorized is the number of requests refused for bad credentials.
	Unauthorized int
}

// NewServer starts a server with generated credentials; it stops when the
// test ends.
func NewServer(t testing.TB) *Server {
	t.Helper()
	gitPath := requireGit(t)
	out, err := exec.Command(gitPath, "--exec-path").Output()
	if err != nil {
		t.Fatalf("gittest: git --exec-path: %v", err)
	}
	backend := filepath.Join(strings.TrimSpace(string(out)), "git-http-backend")
	if _, err := os.Stat(backend); err != nil {
		t.Fatalf("gittest: git-http-backend not found at %s (install git's full package): %v", backend, err)
	}
	s := &Server{
		Root:     t.TempDir(),
		username: "git-" + randomHex(t, 4),
		password: randomHex(t, 16),
	}
	cgiHandler := &cgi.Handler{
		Path: backend,
		Env: []string{
			"GIT_PROJECT_ROOT=" + s.Root,
			"GIT_HTTP_EXPORT_ALL=1",
			"REMOTE_USER=" + s.username,
			"GIT_CONFIG_NOSYSTEM=1",
			"GIT_CONFIG_GLOBAL=/dev/null",
			"HOME=" + s.Root,
		},
	}
	s.http = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		user, pass, ok := r.BasicAuth()
		if !ok || user != s.username || pass != s.password {
			s.count(func(st *Stats) { st.Unauthorized++ })
			w.Header().Set("WWW-Authenticate", `Basic realm="gittest"`)
			http.Error(w, "authentication required", http.StatusUnauthorized)
			return
		}
		cw := &countingWriter{ResponseWriter: w}
		cgiHandler.ServeHTTP(cw, r)
		s.count(func(st *Stats) {
			switch {
			case r.Method == http.MethodGet && strings.HasSuffix(r.URL.Path, "/info/refs") && r.URL.Query().Get("service") == "git-upload-pack":
				st.RefAdvertisements++
			case r.Method == http.MethodPost && strings.HasSuffix(r.URL.Path, "/git-upload-pack"):
				st.UploadPacks++
				st.UploadPackBytes += cw.n
			case r.Method == http.MethodPost && strings.HasSuffix(r.URL.Path, "/git-receive-pack"):
				st.ReceivePacks++
			}
		})
	}))
	t.Cleanup(s.http.Close)
	return s
}

type countingWriter struct {
	http.ResponseWriter
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.ResponseWriter.Write(p)
	c.n += int64(n)
	return n, err
}

func (s *Server) count(f func(*Stats)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f(&s.stats)
}

// Stats returns the request counters so far.
func (s *Server) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stats
}

// ResetStats zeroes the request counters.
func (s *Server) ResetStats() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stats = Stats{}
}

// URL is the server's base URL (http://127.0.0.1:PORT).
func (s *Server) URL() string { return s.http.URL }

// Username is the basic-auth user the server accepts.
func (s *Server) Username() string { return s.username }

// Password is the basic-auth password the server accepts.
func (s *Server) Password() string { return s.password }

// RepoURL is the clone URL of repository name (without credentials).
func (s *Server) RepoURL(name string) string { return s.http.URL + "/" + name + ".git" }

// NewRepo creates an empty bare repository NAME.git with branch main.
func (s *Server) NewRepo(t testing.TB, name string) *Repo {
	t.Helper()
	dir := filepath.Join(s.Root, name+".git")
	runGit(t, "", nil, "init", "--quiet", "--bare", "--initial-branch=main", dir)
	runGit(t, dir, nil, "config", "http.receivepack", "true")
	return &Repo{Name: name, Dir: dir, server: s}
}

// ServeRepo serves an existing bare repository (for example one made by
// scripts/mkrepo.sh) as NAME.git, without copying it.
func (s *Server) ServeRepo(t testing.TB, name, bareDir string) *Repo {
	t.Helper()
	abs, err := filepath.Abs(bareDir)
	if err != nil {
		t.Fatalf("gittest: %v", err)
	}
	link := filepath.Join(s.Root, name+".git")
	if err := os.Symlink(abs, link); err != nil {
		t.Fatalf("gittest: serve %s: %v", bareDir, err)
	}
	return &Repo{Name: name, Dir: abs, server: s}
}

func randomHex(t testing.TB, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatalf("gittest: random: %v", err)
	}
	return hex.EncodeToString(b)
}

func requireGit(t testing.TB) string {
	t.Helper()
	p, err := exec.LookPath("git")
	if err != nil {
		t.Fatalf("gittest: git is not on PATH; install it (apt-get install -y git): %v", err)
	}
	return p
}

// gitEnv isolates git from the host's configuration and fixes identities.
func gitEnv(extra []string) []string {
	env := append(os.Environ(),
		"GIT_CONFIG_NOSYSTEM=1",
		"GIT_CONFIG_GLOBAL=/dev/null",
		"GIT_AUTHOR_NAME=Gittest Author",
		"GIT_AUTHOR_EMAIL=author@example.com",
		"GIT_COMMITTER_NAME=Gittest Committer",
		"GIT_COMMITTER_EMAIL=committer@example.com",
		"GIT_TERMINAL_PROMPT=0",
	)
	return append(env, extra...)
}

// runGit runs git in dir and returns trimmed stdout; failure fails the test.
func runGit(t testing.TB, dir string, stdin []byte, args ...string) string {
	t.Helper()
	return runGitEnv(t, dir, nil, stdin, args...)
}

func runGitEnv(t testing.TB, dir string, env []string, stdin []byte, args ...string) string {
	t.Helper()
	return strings.TrimSpace(runGitRaw(t, dir, env, stdin, args...))
}

// runGitRaw is runGitEnv without trimming the output.
func runGitRaw(t testing.TB, dir string, env []string, stdin []byte, args ...string) string {
	t.Helper()
	cmd := exec.Command("git", args...)
	cmd.Dir = dir
	cmd.Env = gitEnv(env)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("gittest: git %s (in %s): %v\n%s", strings.Join(args, " "), dir, err, stderr.String())
	}
	return stdout.String()
}
