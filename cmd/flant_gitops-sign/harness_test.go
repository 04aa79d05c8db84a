package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/flant/flant_gitops/gitwatch/gittest"
	"github.com/flant/flant_gitops/gitwatch/pgptest"
)

// binDir holds the tool built as a signer would install it: the static
// binary and git-flant-sign, a copy for `git flant-sign`.
var binDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "flant_gitops-sign-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binDir = dir
	build := exec.Command("go", "build", "-trimpath", "-o", filepath.Join(dir, "flant_gitops-sign"), ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "go build the signer's tool: %v\n%s", err, out)
		os.Exit(1)
	}
	if err := os.Link(filepath.Join(dir, "flant_gitops-sign"), filepath.Join(dir, "git-flant-sign")); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// clone is one signer's machine: a clone of the remote with its own HOME,
// git identity and keys, and the tool on PATH.
type clone struct {
	t    testing.TB
	dir  string
	home string
	env  []string
	gpg  *pgptest.GPG
}

// authURL is the repository URL with the server's credentials in it, as a
// signer's clone would carry them in a credential helper.
func authURL(t testing.TB, srv *gittest.Server, repo *gittest.Repo) string {
	t.Helper()
	u, err := url.Parse(repo.URL())
	if err != nil {
		t.Fatal(err)
	}
	u.User = url.UserPassword(srv.Username(), srv.Password())
	return u.String()
}

// newClone clones repo for a signer called name.
func newClone(t testing.TB, srv *gittest.Server, repo *gittest.Repo, name string) *clone {
	t.Helper()
	home := t.TempDir()
	c := &clone{t: t, dir: filepath.Join(home, "work"), home: home}
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "GIT_") && !strings.HasPrefix(kv, "HOME=") && !strings.HasPrefix(kv, "PATH=") &&
			!strings.HasPrefix(kv, "GNUPGHOME=") && !strings.HasPrefix(kv, "VAULT_") && !strings.HasPrefix(kv, "SSH_AUTH_SOCK=") {
			c.env = append(c.env, kv)
		}
	}
	c.env = append(c.env, "HOME="+home, "GIT_CONFIG_NOSYSTEM=1", "GIT_TERMINAL_PROMPT=0",
		"PATH="+binDir+string(os.PathListSeparator)+os.Getenv("PATH"))
	c.run("git", "clone", "--quiet", authURL(t, srv, repo), c.dir)
	c.git("config", "user.name", name)
	c.git("config", "user.email", strings.ToLower(name)+"@example.com")
	return c
}

// withGPG gives the signer a gpg home with a new key, set as
// user.signingkey; it returns the key's fingerprint.
func (c *clone) withGPG(name string) string {
	c.t.Helper()
	c.gpg = pgptest.NewGPG(c.t)
	c.env = append(c.env, "GNUPGHOME="+c.gpg.Home)
	fp := c.gpg.GenKey(c.t, name)
	c.git("config", "user.signingkey", fp)
	return fp
}

// withSSH makes an ed25519 key with ssh-keygen and returns the private
// key's path (the public key is beside it, .pub).
func (c *clone) withSSH(name string) string {
	c.t.Helper()
	if _, err := exec.LookPath("ssh-keygen"); err != nil {
		c.t.Fatalf("ssh-keygen is not on PATH; install it (apt-get install -y openssh-client): %v", err)
	}
	key := filepath.Join(c.home, "id_"+strings.ToLower(name))
	c.run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", key)
	return key
}

// git runs git in the clone and returns its trimmed stdout.
func (c *clone) git(args ...string) string {
	c.t.Helper()
	return c.run("git", append([]string{"-C", c.dir}, args...)...)
}

func (c *clone) run(name string, args ...string) string {
	c.t.Helper()
	r := c.exec(name, args...)
	if r.code != 0 {
		c.t.Fatalf("%s %s: exit %d\n%s%s", name, strings.Join(args, " "), r.code, r.stdout, r.stderr)
	}
	return strings.TrimSpace(r.stdout)
}

type result struct {
	stdout, stderr string
	code           int
}

func (r result) String() string {
	return fmt.Sprintf("exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
}

// exec runs a program in the clone with the signer's environment; a
// program that cannot start is exit -1.
func (c *clone) exec(name string, args ...string) result {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if _, err := os.Stat(filepath.Join(binDir, name)); err == nil {
		name = filepath.Join(binDir, name) // exec looks names up on the test's PATH
	}
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir, cmd.Env = c.dir, c.env
	if _, err := os.Stat(c.dir); err != nil {
		cmd.Dir = c.home
	}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	var exitErr *exec.ExitError
	switch {
	case errors.As(err, &exitErr):
		code = exitErr.ExitCode()
	case err != nil:
		// Not Fatalf: exec also runs on goroutines and in subtests.
		return result{out.String(), fmt.Sprintf("run %s: %v\n%s", name, err, errb.String()), -1}
	}
	return result{out.String(), errb.String(), code}
}

// tool runs flant_gitops-sign in the clone.
func (c *clone) tool(args ...string) result {
	c.t.Helper()
	return c.exec("flant_gitops-sign", args...)
}

// mustSign runs sign and fails the test unless it succeeded.
func (c *clone) mustSign(args ...string) string {
	c.t.Helper()
	r := c.tool(append([]string{"sign"}, args...)...)
	if r.code != 0 {
		c.t.Fatalf("flant_gitops-sign sign %s: %s", strings.Join(args, " "), r)
	}
	return r.stdout
}

// remoteNote is the signatures note of commit on the server, read through
// the tag the watcher fetches, and the note via the notes ref; both must
// agree after a signer's push.
func remoteNote(t testing.TB, repo *gittest.Repo, commit string) string {
	t.Helper()
	notes := repo.Rev(t, "refs/notes/signatures")
	tag := repo.Rev(t, "refs/tags/latest-signature")
	if notes == "" || notes != tag {
		t.Fatalf("on the server refs/notes/signatures is %q and latest-signature %q: the tag must follow the notes commit", notes, tag)
	}
	cmd := exec.Command("git", "-C", repo.Dir, "notes", "--ref", "signatures", "show", commit)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("no signatures note for %s on the server: %v", commit, err)
	}
	return string(out)
}

func writeFile(path, content string) error { return os.WriteFile(path, []byte(content), 0o644) }
