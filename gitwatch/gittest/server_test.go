package gittest_test

import (
	"errors"
	"path/filepath"
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
