// Command devgit serves the Git repositories under a directory over smart
// HTTP on loopback (`git http-backend` behind net/http/cgi), with optional
// basic auth, for `make enable`. With -user set, authenticated clients may
// also push (the patch path of flant_gitops pushes its commits here); a
// development aid, not a Git server.
//
//	go run ./scripts/devgit -root .dev/git -addr 127.0.0.1:8280 -user dev -password dev
package main

import (
	"context"
	"crypto/subtle"
	"errors"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"net/http/cgi"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

func main() {
	root := flag.String("root", ".dev/git", "directory holding the bare repositories")
	addr := flag.String("addr", "127.0.0.1:8280", "loopback address to listen on")
	user := flag.String("user", "", "basic auth user (empty: no authentication)")
	password := flag.String("password", "", "basic auth password; prefer DEVGIT_PASSWORD in the environment")
	flag.Parse()
	if *password == "" {
		*password = os.Getenv("DEVGIT_PASSWORD")
	}
	if err := run(*root, *addr, *user, *password); err != nil {
		log.Fatalf("devgit: %v", err)
	}
}

func run(root, addr, user, password string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("bad -addr %q: %w", addr, err)
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("-addr %q: listen on a loopback address only, this server has no TLS", addr)
	}
	abs, err := filepath.Abs(root)
	if err != nil {
		return fmt.Errorf("resolve -root: %w", err)
	}
	backend, err := gitHTTPBackend()
	if err != nil {
		return err
	}
	h := &cgi.Handler{
		Path: backend[0],
		Args: backend[1:],
		Env: []string{
			"GIT_PROJECT_ROOT=" + abs,
			"GIT_HTTP_EXPORT_ALL=1",
		},
	}
	srv := &http.Server{
		Addr:              addr,
		Handler:           withAuth(user, password, h),
		ReadHeaderTimeout: 10 * time.Second,
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		<-ctx.Done()
		shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(shutdown)
	}()
	log.Printf("devgit: serving %s at http://%s/", abs, addr)
	if err := srv.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve: %w", err)
	}
	return nil
}

// gitHTTPBackend finds `git http-backend` through `git --exec-path`.
func gitHTTPBackend() ([]string, error) {
	out, err := exec.Command("git", "--exec-path").Output()
	if err != nil {
		return nil, fmt.Errorf("git is not installed (apt-get install git): %w", err)
	}
	p := filepath.Join(strings.TrimSpace(string(out)), "git-http-backend")
	if _, err := os.Stat(p); err != nil {
		return nil, fmt.Errorf("git-http-backend not found at %s: %w", p, err)
	}
	return []string{p}, nil
}

func withAuth(user, password string, next *cgi.Handler) http.Handler {
	if user == "" {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u, p, ok := r.BasicAuth()
		if !ok || subtle.ConstantTimeCompare([]byte(u), []byte(user)) != 1 || subtle.ConstantTimeCompare([]byte(p), []byte(password)) != 1 {
			w.Header().Set("WWW-Authenticate", `Basic realm="devgit"`)
			http.Error(w, "authentication required", http.StatusUnauthorized)
			return
		}
		// git http-backend enables receive-pack (push) only for a request
		// that carries REMOTE_USER, which net/http/cgi does not set.
		authed := *next
		authed.Env = append(append([]string(nil), next.Env...), "REMOTE_USER="+u)
		authed.ServeHTTP(w, r)
	})
}
