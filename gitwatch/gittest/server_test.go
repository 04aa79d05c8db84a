package gittest_test

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/config"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/go-git/go-git/v5/plumbing/transport"
	githttp "github.com/go-git/go-git/v5/plumbing/transport/http"

	"github.com/flant/flant_gitops/gitwatch/gittest"
)

// TestServerCloneAndPushOverHTTP proves what the other packages rely on:
// go-git can clone with the generated credentials, push over smart HTTP
// (receive-pack enabled), and bad credentials are refused.
func TestServerCloneAndPushOverHTTP(t *testing.T) {
	srv := gittest.NewServer(t)
	repo := srv.NewRepo(t, "push")
	first := repo.Commit(t, map[string]string{"a.txt": "one"})
	auth := &githttp.BasicAuth{Username: srv.Username(), Password: srv.Password()}

	_, err := git.PlainClone(filepath.Join(t.TempDir(), "bad"), false, &git.CloneOptions{
		URL:  repo.URL(),
		Auth: &githttp.BasicAuth{Username: srv.Username(), Password: "wrong"},
	})
	if !errors.Is(err, transport.ErrAuthenticationRequired) {
		t.Fatalf("clone with a wrong password = %v, want ErrAuthenticationRequired", err)
	}

	dir := filepath.Join(t.TempDir(), "clone")
	clone, err := git.PlainClone(dir, false, &git.CloneOptions{URL: repo.URL(), Auth: auth})
	if err != nil {
		t.Fatalf("clone: %v", err)
	}
	head, err := clone.Head()
	if err != nil || head.Hash().String() != first {
		t.Fatalf("cloned head = %v, %v; want %s", head, err, first)
	}
	wt, err := clone.Worktree()
	if err != nil {
		t.Fatal(err)
	}
	sig := &object.Signature{Name: "T", Email: "t@example.com", When: time.Now()}
	second, err := wt.Commit("from go-git", &git.CommitOptions{AllowEmptyCommits: true, Author: sig, Committer: sig})
	if err != nil {
		t.Fatal(err)
	}
	srv.ResetStats()
	if err := clone.Push(&git.PushOptions{Auth: auth, RefSpecs: []config.RefSpec{"refs/heads/main:refs/heads/main"}}); err != nil {
		t.Fatalf("push over HTTP: %v", err)
	}
	if got := repo.Head(t); got != second.String() {
		t.Errorf("server head after push = %s, want %s", got, second)
	}
	if st := srv.Stats(); st.ReceivePacks != 1 {
		t.Errorf("stats after push = %+v, want one receive-pack", st)
	}
	if st := srv.Stats(); st.Unauthorized != 0 {
		t.Errorf("push needed %d unauthorized round trips, want 0", st.Unauthorized)
	}
}

// TestPreReceiveRefusesContent: a RefuseContent hook refuses a push that
// adds the marker, with its reason on the pusher's terminal, and lets the
// others in.
func TestPreReceiveRefusesContent(t *testing.T) {
	srv := gittest.NewServer(t)
	repo := srv.NewRepo(t, "hooked")
	first := repo.Commit(t, map[string]string{"a.txt": "one\n"})
	repo.PreReceive(t, gittest.RefuseContent("FORBIDDEN-MARKER", "secret detected, remove it"))
	tests := []struct {
		name    string
		content string
		refused bool
	}{
		{"a commit adding the marker is refused", "x FORBIDDEN-MARKER y\n", true},
		{"a commit without it lands", "two\n", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := repo.Head(t)
			dir := filepath.Join(t.TempDir(), "clone")
			url := strings.Replace(repo.URL(), "http://", "http://"+srv.Username()+":"+srv.Password()+"@", 1)
			run := func(args ...string) (string, error) {
				cmd := exec.Command("git", args...)
				cmd.Dir = dir
				cmd.Env = append(os.Environ(), "GIT_CONFIG_NOSYSTEM=1", "GIT_CONFIG_GLOBAL=/dev/null",
					"GIT_AUTHOR_NAME=T", "GIT_AUTHOR_EMAIL=t@example.com", "GIT_COMMITTER_NAME=T", "GIT_COMMITTER_EMAIL=t@example.com")
				out, err := cmd.CombinedOutput()
				return string(out), err
			}
			if out, err := exec.Command("git", "clone", "--quiet", url, dir).CombinedOutput(); err != nil {
				t.Fatalf("clone: %v\n%s", err, out)
			}
			if err := os.WriteFile(filepath.Join(dir, "b.txt"), []byte(tc.content), 0o644); err != nil {
				t.Fatal(err)
			}
			if out, err := run("add", "b.txt"); err != nil {
				t.Fatal(out)
			}
			if out, err := run("commit", "--quiet", "--no-gpg-sign", "-m", "b"); err != nil {
				t.Fatal(out)
			}
			out, err := run("push", "origin", "HEAD:refs/heads/main")
			switch {
			case tc.refused && (err == nil || !strings.Contains(out, "remote: secret detected, remove it") || repo.Head(t) != before):
				t.Fatalf("push: %v\n%s\nhead %s, want refused with the reason, head %s", err, out, repo.Head(t), before)
			case !tc.refused && (err != nil || repo.Head(t) == before || repo.Head(t) == first):
				t.Fatalf("push: %v\n%s", err, out)
			}
		})
	}
}
