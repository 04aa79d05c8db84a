package gittest

import (
	"encoding/base64"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/plumbing/object"

	"github.com/flant/flant_gitops/gitwatch/pgptest"
)

// Repo is a bare repository on a Server plus a lazily made work tree clone
// used to build commits and notes.
type Repo struct {
	Name string
	// Dir is the bare repository directory.
	Dir string

	server *Server
	work   string
}

// URL is the repository's clone URL (credentials separate: Server.Username
// and Server.Password).
func (r *Repo) URL() string { return r.server.RepoURL(r.Name) }

// Head is the commit id of branch main on the server ("" when unborn).
func (r *Repo) Head(t testing.TB) string {
	t.Helper()
	return r.Rev(t, "refs/heads/main")
}

// Rev resolves a revision in the bare repository ("" when missing).
func (r *Repo) Rev(t testing.TB, rev string) string {
	t.Helper()
	out, err := gitOutput(r.Dir, "rev-parse", "--verify", "--quiet", rev+"^{commit}")
	if err != nil {
		return ""
	}
	return out
}

// CommitOption changes how Commit makes a commit.
type CommitOption func(*commitConfig)

type commitConfig struct {
	message    string
	deletes    []string
	executable map[string]bool
	symlinks   map[string]string
	gpg        *pgptest.GPG
	gpgKey     string
	key        *pgptest.Key
	signedAt   time.Time
	goGitKey   *pgptest.Key
	sshKey     string // private key path for gpg.format=ssh
}

// Message sets the commit message (default "change N files").
func Message(msg string) CommitOption { return func(c *commitConfig) { c.message = msg } }

// Delete removes paths in the commit.
func Delete(paths ...string) CommitOption {
	return func(c *commitConfig) { c.deletes = append(c.deletes, paths...) }
}

// Executable marks written files as mode 100755.
func Executable(paths ...string) CommitOption {
	return func(c *commitConfig) {
		for _, p := range paths {
			c.executable[p] = true
		}
	}
}

// Symlink adds a symbolic link path -> target.
func Symlink(path, target string) CommitOption {
	return func(c *commitConfig) { c.symlinks[path] = target }
}

// SignGPG signs the commit with real gpg through `git commit -S`, using the
// key with this fingerprint in g.
func SignGPG(g *pgptest.GPG, fingerprint string) CommitOption {
	return func(c *commitConfig) { c.gpg, c.gpgKey = g, fingerprint }
}

// SignKey signs the commit with a go-crypto key: the gpgsig header is added
// to the commit object exactly where git puts it.
func SignKey(k *pgptest.Key) CommitOption { return func(c *commitConfig) { c.key = k } }

// SignedAt dates the SignKey signature (default now).
func SignedAt(at time.Time) CommitOption { return func(c *commitConfig) { c.signedAt = at } }

// SignGoGit makes the commit with go-git's own Worktree.Commit and its
// SignKey option, as code that builds commits with go-git signs them.
func SignGoGit(k *pgptest.Key) CommitOption { return func(c *commitConfig) { c.goGitKey = k } }

// Commit writes files (path -> content) in the work tree, commits on top of
// the current work-tree head and force-pushes it to main, so that after
// Reset it rewrites history. It returns the new commit id.
func (r *Repo) Commit(t testing.TB, files map[string]string, opts ...CommitOption) string {
	t.Helper()
	c := commitConfig{executable: map[string]bool{}, symlinks: map[string]string{}}
	for _, o := range opts {
		o(&c)
	}
	if c.message == "" {
		c.message = "change " + strconv.Itoa(len(files)+len(c.symlinks)+len(c.deletes)) + " files"
	}
	work := r.workTree(t)

	paths := make([]string, 0, len(files))
	for p := range files {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	for _, p := range paths {
		full := filepath.Join(work, filepath.FromSlash(p))
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatalf("gittest: %v", err)
		}
		mode := os.FileMode(0o644)
		if c.executable[p] {
			mode = 0o755
		}
		if err := os.WriteFile(full, []byte(files[p]), mode); err != nil {
			t.Fatalf("gittest: %v", err)
		}
		if err := os.Chmod(full, mode); err != nil {
			t.Fatalf("gittest: %v", err)
		}
	}
	for p, target := range c.symlinks {
		full := filepath.Join(work, filepath.FromSlash(p))
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatalf("gittest: %v", err)
		}
		_ = os.Remove(full)
		if err := os.Symlink(target, full); err != nil {
			t.Fatalf("gittest: %v", err)
		}
	}
	for _, p := range c.deletes {
		runGit(t, work, nil, "rm", "--quiet", "-r", "--", p)
	}
	runGit(t, work, nil, "add", "--all")

	switch {
	case c.goGitKey != nil:
		r.commitGoGit(t, work, c.message, c.goGitKey)
	case c.sshKey != "":
		runGit(t, work, nil, "-c", "gpg.format=ssh", "-c", "user.signingkey="+c.sshKey,
			"commit", "--quiet", "--allow-empty", "-S", "-m", c.message)
	case c.gpg != nil:
		runGitEnv(t, work, []string{"GNUPGHOME=" + c.gpg.Home}, nil,
			"-c", "gpg.program=gpg", "-c", "user.signingkey="+c.gpgKey,
			"commit", "--quiet", "--allow-empty", "-S", "-m", c.message)
	default:
		runGit(t, work, nil, "commit", "--quiet", "--allow-empty", "--no-gpg-sign", "-m", c.message)
	}
	if c.key != nil {
		r.resignHead(t, work, c.key, c.signedAt)
	}
	runGit(t, work, nil, "push", "--quiet", "--force", "origin", "HEAD:refs/heads/main")
	return runGit(t, work, nil, "rev-parse", "HEAD")
}

// CommitDirect writes a commit with files (path -> content) on top of main
// straight into the bare repository, without a work tree or a push: cheap
// on large repositories, for benchmarks. It returns the new commit id.
func (r *Repo) CommitDirect(t testing.TB, files map[string]string, message string) string {
	t.Helper()
	index := filepath.Join(t.TempDir(), "index")
	env := []string{"GIT_INDEX_FILE=" + index}
	parent := r.Head(t)
	if parent != "" {
		runGitEnv(t, r.Dir, env, nil, "read-tree", parent)
	}
	for path, content := range files {
		blob := runGit(t, r.Dir, []byte(content), "hash-object", "-w", "--stdin")
		runGitEnv(t, r.Dir, env, nil, "update-index", "--add", "--cacheinfo", "100644,"+blob+","+path)
	}
	tree := runGitEnv(t, r.Dir, env, nil, "write-tree")
	args := []string{"commit-tree", tree, "-m", message}
	if parent != "" {
		args = append(args, "-p", parent)
	}
	commit := runGit(t, r.Dir, nil, args...)
	runGit(t, r.Dir, nil, "update-ref", "refs/heads/main", commit)
	return commit
}

// Reset moves the work tree to commit (for example an older one), so the
// next Commit force-pushes a history that does not descend from the
// current head.
func (r *Repo) Reset(t testing.TB, commit string) {
	t.Helper()
	work := r.workTree(t)
	runGit(t, work, nil, "fetch", "--quiet", "origin")
	runGit(t, work, nil, "reset", "--quiet", "--hard", commit)
}

// ForcePush points main at commit on the server directly.
func (r *Repo) ForcePush(t testing.TB, commit string) {
	t.Helper()
	work := r.workTree(t)
	runGit(t, work, nil, "push", "--quiet", "--force", "origin", commit+":refs/heads/main")
}

// NoteSignature signs commit with a go-crypto key the way `git signatures
// add` does (binary detached signature over the 40-hex id, no newline,
// base64 on one line) and appends it to the signatures notes.
func (r *Repo) NoteSignature(t testing.TB, commit string, k *pgptest.Key) {
	t.Helper()
	sig := k.SignDetached(t, []byte(commit), time.Time{})
	r.AddNoteLines(t, commit, base64.StdEncoding.EncodeToString(sig))
}

// NoteSignatureGPG is NoteSignature with real gpg and a key in g.
func (r *Repo) NoteSignatureGPG(t testing.TB, commit string, g *pgptest.GPG, fingerprint string) {
	t.Helper()
	sig := g.SignDetached(t, fingerprint, []byte(commit))
	r.AddNoteLines(t, commit, base64.StdEncoding.EncodeToString(sig))
}

// AddNoteLines appends raw lines to the signatures note of commit (as
// `git notes --ref signatures append`), points the latest-signature tag at
// the notes commit and force-pushes both.
func (r *Repo) AddNoteLines(t testing.TB, commit string, lines ...string) {
	t.Helper()
	work := r.workTree(t)
	runGit(t, work, nil, "fetch", "--quiet", "--force", "origin",
		"+refs/heads/main:refs/remotes/origin/main")
	if r.Rev(t, "refs/notes/signatures") != "" {
		runGit(t, work, nil, "fetch", "--quiet", "--force", "origin", "+refs/notes/signatures:refs/notes/signatures")
	}
	runGit(t, work, nil, "notes", "--ref", "signatures", "append", "-m", strings.Join(lines, "\n"), commit)
	runGit(t, work, nil, "tag", "--force", "--no-sign", "latest-signature", "refs/notes/signatures")
	runGit(t, work, nil, "push", "--quiet", "--force", "origin", "refs/notes/signatures", "refs/tags/latest-signature")
}

// Git runs git in the work tree clone and returns its trimmed stdout.
func (r *Repo) Git(t testing.TB, args ...string) string {
	t.Helper()
	return runGit(t, r.workTree(t), nil, args...)
}

func (r *Repo) workTree(t testing.TB) string {
	t.Helper()
	if r.work != "" {
		return r.work
	}
	r.work = t.TempDir()
	runGit(t, "", nil, "clone", "--quiet", r.Dir, r.work)
	if r.Head(t) == "" {
		runGit(t, r.work, nil, "checkout", "--quiet", "-B", "main")
	}
	runGit(t, r.work, nil, "config", "commit.gpgsign", "false")
	return r.work
}

// resignHead replaces HEAD by the same commit with a gpgsig header made by k.
func (r *Repo) resignHead(t testing.TB, work string, k *pgptest.Key, at time.Time) {
	t.Helper()
	raw := runGitRaw(t, work, nil, nil, "cat-file", "commit", "HEAD")
	signed := InsertSignature(raw, k.ArmorSignDetached(t, []byte(raw), at))
	h := runGit(t, work, []byte(signed), "hash-object", "-t", "commit", "-w", "--stdin")
	runGit(t, work, nil, "reset", "--quiet", "--soft", h)
}

// InsertSignature adds an armored signature to a raw unsigned commit as a
// gpgsig header at the end of the headers, continuation lines indented by
// one space, as git does.
func InsertSignature(rawCommit, armored string) string {
	headers, body, _ := strings.Cut(rawCommit, "\n\n")
	sig := strings.ReplaceAll(strings.TrimRight(armored, "\n"), "\n", "\n ")
	return headers + "\ngpgsig " + sig + "\n\n" + body
}

func (r *Repo) commitGoGit(t testing.TB, work, message string, k *pgptest.Key) {
	t.Helper()
	repo, err := git.PlainOpen(work)
	if err != nil {
		t.Fatalf("gittest: go-git open %s: %v", work, err)
	}
	wt, err := repo.Worktree()
	if err != nil {
		t.Fatalf("gittest: go-git worktree: %v", err)
	}
	now := time.Now()
	sig := &object.Signature{Name: "Gittest Committer", Email: "committer@example.com", When: now}
	if _, err := wt.Commit(message, &git.CommitOptions{
		AllowEmptyCommits: true,
		Author:            sig,
		Committer:         sig,
		SignKey:           k.Entity,
	}); err != nil {
		t.Fatalf("gittest: go-git commit: %v", err)
	}
}

func gitOutput(dir string, args ...string) (string, error) {
	cmd := exec.Command("git", args...)
	cmd.Dir = dir
	cmd.Env = gitEnv(nil)
	out, err := cmd.Output()
	return strings.TrimSpace(string(out)), err
}

// Rewrap makes a copy of the signed commit whose signature armor carries an
// extra "Comment:" header line (the signature itself is unchanged and still
// verifies), points main at it on the server and returns its id: a new
// commit id for the same signed content, as an attacker with push access
// can make.
func (r *Repo) Rewrap(t testing.TB, commit, comment string) string {
	t.Helper()
	raw := runGitRaw(t, r.Dir, nil, nil, "cat-file", "commit", commit)
	const begin = "gpgsig -----BEGIN PGP SIGNATURE-----\n"
	if !strings.Contains(raw, begin) {
		t.Fatalf("gittest: commit %s has no OpenPGP gpgsig header to re-wrap", commit)
	}
	rewrapped := strings.Replace(raw, begin, begin+" Comment: "+comment+"\n", 1)
	h := runGit(t, r.Dir, []byte(rewrapped), "hash-object", "-t", "commit", "-w", "--stdin")
	runGit(t, r.Dir, nil, "update-ref", "refs/heads/main", h)
	return h
}
