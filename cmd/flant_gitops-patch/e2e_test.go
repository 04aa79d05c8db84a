package main_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	yaml "go.yaml.in/yaml/v3"

	"github.com/flant/flant_gitops/backend/vaulttest"
	"github.com/flant/flant_gitops/gitwatch/gittest"
)

const (
	issuer   = "https://gitlab.example.com"
	audience = "https://vault.example.com"
)

const releaseYML = `# Release of my-project; CI bumps the tag.
spec:
  values:
    image:
      repository: registry.example.com/my/image
      tag: "1.2.4" # set by CI
`

// ciEnv is a real Vault with the plugin, Vault's JWT auth method trusting a
// test key as it would trust GitLab's, a real git server, and the CLI binary
// built as a job would download it.
type ciEnv struct {
	v      *vaulttest.Server
	remote *gittest.Repo
	gitlab *vaulttest.JWTIssuer
	github *vaulttest.JWTIssuer // set by recipeEnv
	bin    string               // directory holding flant_gitops-patch
}

// newCIEnv's env goes to Vault's (and so the plugin's) environment.
func newCIEnv(t *testing.T, env ...string) *ciEnv {
	t.Helper()
	binDir := t.TempDir()
	build := exec.Command("go", "build", "-trimpath", "-o", filepath.Join(binDir, "flant_gitops-patch"), ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build the CLI: %v\n%s", err, out)
	}

	v := vaulttest.NewServer(t, &vaulttest.Options{Env: append([]string{"FLANT_GITOPS_CACHE_DIR=" + t.TempDir()}, env...)})
	srv := gittest.NewServer(t)
	remote := srv.NewRepo(t, "infra")
	remote.Commit(t, map[string]string{
		"my-group/my-project/release.yml": releaseYML,
		"my-group/my-project/old.yml":     "a: 1\n",
		"other-group/app/release.yml":     releaseYML,
	}, gittest.Message("initial"))

	// Only projects of my-group, on protected refs, may log in.
	gitlab := vaulttest.SetUpCIPatch(t, v.Client, vaulttest.CIPatch{
		Issuer:      issuer,
		Audience:    audience,
		BoundClaims: map[string]any{"namespace_path": []string{"my-group"}, "ref_protected": "true"},
		Repository:  "infra", URL: remote.URL(), Username: srv.Username(), Password: srv.Password(),
	})
	return &ciEnv{v: v, remote: remote, gitlab: gitlab, bin: binDir}
}

// idToken mints a GitLab-shaped CI id_token for a project's tag pipeline.
func (e *ciEnv) idToken(t *testing.T, projectPath string) string {
	t.Helper()
	return e.gitlab.Token(t, audience, vaulttest.GitLabClaims(projectPath, "v1.2.3", "tag"))
}

// jobEnv is a CI job's environment: Vault's address, the id_token and the
// job's variables, the CLI on PATH, and no Vault token of the test's.
func (e *ciEnv) jobEnv(vars ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "VAULT_") && !strings.HasPrefix(kv, "PATH=") {
			env = append(env, kv)
		}
	}
	env = append(env, "PATH="+e.bin+string(os.PathListSeparator)+os.Getenv("PATH"), "VAULT_ADDR="+e.v.Addr)
	if e.v.CACertPath != "" {
		env = append(env, "VAULT_CACERT="+e.v.CACertPath)
	}
	return append(env, vars...)
}

type result struct {
	stdout, stderr string
	code           int
}

func run(t *testing.T, env []string, name string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = env
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	var exitErr *exec.ExitError
	switch {
	case errors.As(err, &exitErr):
		code = exitErr.ExitCode()
	case err != nil:
		t.Fatalf("run %s: %v", name, err)
	}
	return result{out.String(), errb.String(), code}
}

// readmeJobCommands are the script lines of the README's CI client job that
// call the CLI (the download line needs the network and is left out).
func readmeJobCommands(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(vaulttest.RepoRoot(t), "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(b), "\n### CI client\n")
	if !ok {
		t.Fatal("README.md has no \"### CI client\" section")
	}
	_, block, ok := strings.Cut(section, "```yaml\n")
	if !ok {
		t.Fatal("the CI client section has no yaml block")
	}
	block, _, _ = strings.Cut(block, "```")
	var jobs map[string]struct {
		Script []string `yaml:"script"`
	}
	if err := yaml.Unmarshal([]byte(block), &jobs); err != nil {
		t.Fatalf("the README's CI client job is not YAML: %v", err)
	}
	var cmds []string
	for _, j := range jobs {
		for _, line := range j.Script {
			if strings.HasPrefix(line, "flant_gitops-patch ") {
				cmds = append(cmds, line)
			}
		}
	}
	if len(cmds) == 0 {
		t.Fatal("the README's CI client job does not call flant_gitops-patch")
	}
	return cmds
}

// git runs git in the server's bare repository and returns its output as is.
func (e *ciEnv) git(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command("git", append([]string{"-C", e.remote.Dir}, args...)...).Output()
	if err != nil {
		t.Fatalf("git %s: %v", strings.Join(args, " "), err)
	}
	return string(out)
}

func fileAt(t *testing.T, e *ciEnv, rev, path string) string {
	t.Helper()
	return e.git(t, "show", rev+":"+path)
}

// tagOf reads spec.values.image.tag the way a YAML consumer would.
func tagOf(t *testing.T, doc string) string {
	t.Helper()
	var v struct {
		Spec struct {
			Values struct {
				Image struct {
					Tag string `yaml:"tag"`
				} `yaml:"image"`
			} `yaml:"values"`
		} `yaml:"spec"`
	}
	if err := yaml.Unmarshal([]byte(doc), &v); err != nil {
		t.Fatalf("not YAML after the patch: %v\n%s", err, doc)
	}
	return v.Spec.Values.Image.Tag
}

// TestCIClientThroughVaultJWT runs the CLI as a GitLab job would: a real
// Vault with the plugin, Vault's JWT auth method, a GitLab-shaped id_token, a
// real git server.
func TestCIClientThroughVaultJWT(t *testing.T) {
	e := newCIEnv(t)
	const tag = `v1.2.3"x`
	job := e.jobEnv("VAULT_ID_TOKEN="+e.idToken(t, "my-group/my-project"),
		"CI_PROJECT_PATH=my-group/my-project", "CI_COMMIT_TAG="+tag)
	cli := filepath.Join(e.bin, "flant_gitops-patch")
	initial := e.remote.Head(t)

	t.Run("dry run prints the diff and pushes nothing", func(t *testing.T) {
		r := run(t, job, cli, "--role", "gitlab-ci", "--dry-run", "infra", "set", "my-group/my-project/release.yml", "spec.values.image.tag", tag)
		if r.code != 0 {
			t.Fatalf("exit %d: %s", r.code, r.stderr)
		}
		if !strings.Contains(r.stdout, `-      tag: "1.2.4" # set by CI`) || !strings.Contains(r.stdout, `+      tag: "v1.2.3\"x" # set by CI`) {
			t.Errorf("the diff does not show the change:\n%s", r.stdout)
		}
		if head := e.remote.Head(t); head != initial {
			t.Errorf("a dry run moved the branch to %s", head)
		}
	})

	t.Run("the README job's command commits the exact tag", func(t *testing.T) {
		for _, line := range readmeJobCommands(t) {
			r := run(t, job, "sh", "-c", line)
			if r.code != 0 {
				t.Fatalf("%s: exit %d: %s", line, r.code, r.stderr)
			}
			sha := strings.TrimSpace(r.stdout)
			if head := e.remote.Head(t); sha != head {
				t.Fatalf("printed %q, the branch is at %s", sha, head)
			}
			if got := tagOf(t, fileAt(t, e, sha, "my-group/my-project/release.yml")); got != tag {
				t.Errorf("the commit's tag reads %q, want %q", got, tag)
			}
			if msg := e.git(t, "log", "-1", "--format=%B", sha); !strings.Contains(msg, "my-group/my-project: release "+tag) || !strings.Contains(msg, "Requested-By: ") {
				t.Errorf("commit message %q", msg)
			}
			if strings.Contains(r.stdout+r.stderr, "hvs.") {
				t.Error("a Vault token was printed")
			}
		}
	})

	t.Run("the same again is no_op", func(t *testing.T) {
		before := e.remote.Head(t)
		r := run(t, job, cli, "--role", "gitlab-ci", "infra", "set", "my-group/my-project/release.yml", "spec.values.image.tag", tag)
		if r.code != 0 || strings.TrimSpace(r.stdout) != before || !strings.Contains(r.stderr, "no_op") {
			t.Errorf("exit %d stdout %q stderr %q; want 0, %s, no_op", r.code, r.stdout, r.stderr, before)
		}
		if head := e.remote.Head(t); head != before {
			t.Errorf("a no_op moved the branch to %s", head)
		}
	})

	t.Run("typed values, create and delete in one commit", func(t *testing.T) {
		content := filepath.Join(t.TempDir(), "new.yml")
		if err := os.WriteFile(content, []byte("created: by CI\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		r := run(t, job, cli, "--role", "gitlab-ci", "--create-missing", "--author-name", "Release Bot", "--author-email", "release@example.com",
			"infra",
			"set-json", "my-group/my-project/release.yml", "spec.replicas", "3",
			"create", "my-group/my-project/new.yml", "@"+content,
			"delete", "my-group/my-project/old.yml")
		if r.code != 0 {
			t.Fatalf("exit %d: %s", r.code, r.stderr)
		}
		sha := strings.TrimSpace(r.stdout)
		if got := fileAt(t, e, sha, "my-group/my-project/release.yml"); !strings.Contains(got, "  replicas: 3\n") {
			t.Errorf("release.yml after set-json:\n%s", got)
		}
		if got := fileAt(t, e, sha, "my-group/my-project/new.yml"); got != "created: by CI\n" {
			t.Errorf("new.yml %q", got)
		}
		if _, err := exec.Command("git", "-C", e.remote.Dir, "cat-file", "-e", sha+":my-group/my-project/old.yml").CombinedOutput(); err == nil {
			t.Error("old.yml is still there")
		}
		if author := e.git(t, "log", "-1", "--format=%an <%ae>", sha); author != "Release Bot <release@example.com>\n" {
			t.Errorf("author %q", author)
		}
	})

	t.Run("a content conflict is refused once, not retried", func(t *testing.T) {
		before := e.remote.Head(t)
		r := run(t, job, cli, "--role", "gitlab-ci", "infra", "create", "my-group/my-project/release.yml", "a: 1\n")
		if r.code != 1 || !strings.Contains(r.stderr, "HTTP 409") || strings.Contains(r.stderr, "trying again") {
			t.Errorf("exit %d stderr %q; want 1 and one 409", r.code, r.stderr)
		}
		if head := e.remote.Head(t); head != before {
			t.Errorf("the branch moved to %s", head)
		}
	})

	t.Run("outside the project's directory the policy refuses", func(t *testing.T) {
		r := run(t, job, cli, "--role", "gitlab-ci", "infra", "set", "other-group/app/release.yml", "spec.values.image.tag", "evil")
		if r.code != 1 || !strings.Contains(r.stderr, "HTTP 403") {
			t.Errorf("exit %d stderr %q; want 1 and 403", r.code, r.stderr)
		}
	})

	t.Run("a token from another namespace is refused at login", func(t *testing.T) {
		before := e.remote.Head(t)
		foreign := e.jobEnv("VAULT_ID_TOKEN="+e.idToken(t, "other-group/app"), "CI_PROJECT_PATH=other-group/app", "CI_COMMIT_TAG=evil")
		for _, line := range readmeJobCommands(t) {
			r := run(t, foreign, "sh", "-c", line)
			if r.code != 1 || !strings.Contains(r.stderr, "login at auth/jwt refused: HTTP 400") || !strings.Contains(r.stderr, "namespace_path") {
				t.Errorf("exit %d stderr %q; want 1, refused at login naming namespace_path", r.code, r.stderr)
			}
			if r.stdout != "" {
				t.Errorf("stdout %q", r.stdout)
			}
		}
		if head := e.remote.Head(t); head != before {
			t.Errorf("the branch moved to %s", head)
		}
	})

	t.Run("VAULT_TOKEN is used without --role", func(t *testing.T) {
		s, err := e.v.Client.Logical().Write("auth/jwt/login", map[string]any{"role": "gitlab-ci", "jwt": e.idToken(t, "my-group/my-project")})
		if err != nil {
			t.Fatal(err)
		}
		env := e.jobEnv("VAULT_TOKEN=" + s.Auth.ClientToken)
		r := run(t, env, cli, "infra", "set", "my-group/my-project/release.yml", "spec.values.image.tag", "v2")
		if r.code != 0 {
			t.Fatalf("exit %d: %s", r.code, r.stderr)
		}
		if got := tagOf(t, fileAt(t, e, strings.TrimSpace(r.stdout), "my-group/my-project/release.yml")); got != "v2" {
			t.Errorf("tag %q", got)
		}
		if strings.Contains(r.stdout+r.stderr, s.Auth.ClientToken) {
			t.Error("the token was printed")
		}
	})
}

// syncBuffer is a process's stderr, read while it runs.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// TestCIClientRetriesAFullQueue: with one patch allowed to wait per branch
// and a push held at the git server, a job is answered 429 with a time to
// retry; the CLI waits it out and its patch lands once the push returns.
func TestCIClientRetriesAFullQueue(t *testing.T) {
	e := newCIEnv(t, "FLANT_GITOPS_PATCH_QUEUE=1")
	gate := t.TempDir()
	hook := fmt.Sprintf("#!/bin/sh\ncat >/dev/null\nif [ -f %[1]s/hold ]; then\n  touch %[1]s/started\n  while [ -f %[1]s/hold ]; do sleep 0.05; done\nfi\n", gate)
	if err := os.WriteFile(filepath.Join(e.remote.Dir, "hooks", "pre-receive"), []byte(hook), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(gate, "hold"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	job := e.jobEnv("VAULT_ID_TOKEN=" + e.idToken(t, "my-group/my-project"))
	cli := filepath.Join(e.bin, "flant_gitops-patch")
	before := e.remote.Head(t)

	type proc struct {
		cmd            *exec.Cmd
		stdout, stderr *syncBuffer
		done           chan error
	}
	start := func(file string) *proc {
		p := &proc{stdout: &syncBuffer{}, stderr: &syncBuffer{}, done: make(chan error, 1)}
		p.cmd = exec.Command(cli, "--role", "gitlab-ci", "--deadline", "2m", "infra", "create", "my-group/my-project/"+file, "file: "+file+"\n")
		p.cmd.Env = job
		p.cmd.Stdout, p.cmd.Stderr = p.stdout, p.stderr
		if err := p.cmd.Start(); err != nil {
			t.Fatal(err)
		}
		go func() { p.done <- p.cmd.Wait() }()
		t.Cleanup(func() { _ = p.cmd.Process.Kill() }) // an error once it has ended
		return p
	}
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		for deadline := time.Now().Add(time.Minute); !cond(); time.Sleep(20 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("%s did not happen within a minute", what)
			}
		}
	}

	held := start("held.yml")
	waitFor("a push held at the git server", func() bool {
		_, err := os.Stat(filepath.Join(gate, "started"))
		return err == nil
	})
	// One of these two waits in the queue, the other is answered 429.
	waiting := []*proc{start("a.yml"), start("b.yml")}
	waitFor("a 429 answer", func() bool {
		return strings.Contains(waiting[0].stderr.String()+waiting[1].stderr.String(), "HTTP 429")
	})
	if err := os.Remove(filepath.Join(gate, "hold")); err != nil {
		t.Fatal(err)
	}

	var shas []string
	retried := 0
	for i, p := range append([]*proc{held}, waiting...) {
		if err := <-p.done; err != nil {
			t.Fatalf("job %d: %v\n%s", i, err, p.stderr.String())
		}
		stderr := p.stderr.String()
		if strings.Contains(stderr, "HTTP 429") {
			retried++
			t.Logf("job %d retried:\n%s", i, stderr)
			if !strings.Contains(stderr, "nothing was done, retry in") || !strings.Contains(stderr, "trying again in") {
				t.Errorf("job %d's stderr does not show the wait it honoured:\n%s", i, stderr)
			}
		}
		shas = append(shas, strings.TrimSpace(p.stdout.String()))
	}
	if retried == 0 {
		t.Fatal("no job was answered 429")
	}
	if c := strings.TrimSpace(e.git(t, "rev-list", "--count", before+".."+e.remote.Head(t))); c != "3" {
		t.Errorf("%s new commits, want 3", c)
	}
	for _, sha := range shas {
		if _, err := exec.Command("git", "-C", e.remote.Dir, "merge-base", "--is-ancestor", sha, "HEAD").CombinedOutput(); err != nil {
			t.Errorf("printed commit %q is not on the branch", sha)
		}
	}
}

// TestCIClientRetriesABranchThatKeptMoving: while another writer moves the
// branch at every push of the plugin, the plugin answers 409 "moved under the
// patch"; the CLI tries again and lands once the branch holds still. A 409
// about the content in the same run is not retried (TestCIClientThroughVaultJWT).
func TestCIClientRetriesABranchThatKeptMoving(t *testing.T) {
	e := newCIEnv(t)
	flag := t.TempDir()
	// The hook runs inside git's quarantine, where ref updates are refused;
	// the other writer works outside it, on the objects already there.
	hook := fmt.Sprintf(`#!/bin/sh
cat >/dev/null
if [ -f %[1]s/move ]; then
  (
    unset GIT_QUARANTINE_PATH GIT_OBJECT_DIRECTORY GIT_ALTERNATE_OBJECT_DIRECTORIES
    c=$(git -c user.name=other -c user.email=other@example.com commit-tree refs/heads/main^{tree} -p refs/heads/main -m "another writer") &&
      git update-ref refs/heads/main "$c" && echo moved >>%[1]s/moves
  ) 2>>%[1]s/errors
fi
exit 0
`, flag)
	if err := os.WriteFile(filepath.Join(e.remote.Dir, "hooks", "pre-receive"), []byte(hook), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(flag, "move"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	job := e.jobEnv("VAULT_ID_TOKEN=" + e.idToken(t, "my-group/my-project"))
	stdout, stderr := &syncBuffer{}, &syncBuffer{}
	cmd := exec.Command(filepath.Join(e.bin, "flant_gitops-patch"), "--role", "gitlab-ci", "--deadline", "2m",
		"infra", "set", "my-group/my-project/release.yml", "spec.values.image.tag", "v3")
	cmd.Env = job
	cmd.Stdout, cmd.Stderr = stdout, stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() { _ = cmd.Process.Kill() }) // an error once it has ended
	for deadline := time.Now().Add(time.Minute); !strings.Contains(stderr.String(), "moved under the patch"); time.Sleep(20 * time.Millisecond) {
		select {
		case err := <-done:
			t.Fatalf("the CLI ended (%v) before a 409 \"moved under the patch\"; stderr:\n%s", err, stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("no 409 \"moved under the patch\" within a minute; stderr:\n%s", stderr.String())
		}
	}
	if err := os.Remove(filepath.Join(flag, "move")); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("the CLI failed: %v\n%s", err, stderr.String())
	}
	t.Logf("stderr:\n%s", stderr.String())
	if !strings.Contains(stderr.String(), "HTTP 409") || !strings.Contains(stderr.String(), "trying again in") {
		t.Errorf("stderr does not show the 409 retried:\n%s", stderr.String())
	}
	sha := strings.TrimSpace(stdout.String())
	if head := e.remote.Head(t); sha != head {
		t.Fatalf("printed %q, the branch is at %s", sha, head)
	}
	if got := tagOf(t, fileAt(t, e, sha, "my-group/my-project/release.yml")); got != "v3" {
		t.Errorf("tag %q", got)
	}
	if moves := strings.Count(e.gitFile(t, filepath.Join(flag, "moves")), "moved"); moves < 2 {
		t.Errorf("the other writer moved the branch %d times", moves)
	}
}

func (e *ciEnv) gitFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
