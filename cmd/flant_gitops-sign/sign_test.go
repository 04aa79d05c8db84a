package main

import (
	"context"
	"encoding/base64"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/flant/flant_gitops/gitwatch"
	"github.com/flant/flant_gitops/gitwatch/gittest"
)

// watcherCount is what the watcher makes of commit: a mirror of the server
// (fetching the signature refs as the plugin does) and the quorum count.
func watcherCount(t *testing.T, srv *gittest.Server, repo *gittest.Repo, commit string, required int, trusted ...gitwatch.TrustedKey) gitwatch.Quorum {
	t.Helper()
	ctx := context.Background()
	m, err := gitwatch.OpenMirror(ctx, t.TempDir(), repo.URL(), "main", gitwatch.Auth{Username: srv.Username(), Password: srv.Password()})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Fetch(ctx); err != nil {
		t.Fatal(err)
	}
	q, err := m.Accept(ctx, commit, gitwatch.Rule{Trusted: trusted, Required: required})
	if err != nil {
		t.Fatal(err)
	}
	return q
}

// noteLines are the signature lines of a note.
func noteLines(note string) []string {
	var out []string
	for l := range strings.SplitSeq(note, "\n") {
		if l = strings.TrimSpace(l); l != "" {
			out = append(out, l)
		}
	}
	return out
}

func TestSignWithGPGIsCountedByTheWatcher(t *testing.T) {
	srv := gittest.NewServer(t)
	repo := srv.NewRepo(t, "ops")
	commit := repo.Commit(t, map[string]string{"deploy.txt": "v1\n"})
	alice := newClone(t, srv, repo, "Alice")
	fp := alice.withGPG("Alice")

	out := alice.mustSign()
	if !strings.Contains(out, "signed "+commit) || !strings.Contains(out, fp) {
		t.Fatalf("sign should name the commit and the key %s:\n%s", fp, out)
	}
	lines := noteLines(remoteNote(t, repo, commit))
	if len(lines) != 1 {
		t.Fatalf("want one signature line, got %q", lines)
	}
	// The line is what `git signatures add` writes: gpg's binary detached
	// signature over the 40-hex id, base64 on one line; gpg itself agrees.
	sig, err := base64.StdEncoding.DecodeString(lines[0])
	if err != nil {
		t.Fatalf("the note line is not base64: %v", err)
	}
	sigFile := filepath.Join(t.TempDir(), "sig")
	if err := os.WriteFile(sigFile, sig, 0o600); err != nil {
		t.Fatal(err)
	}
	verify := exec.Command("gpg", "--batch", "--verify", sigFile, "-")
	verify.Env, verify.Stdin = alice.gpg.Env(), strings.NewReader(commit)
	if out, err := verify.CombinedOutput(); err != nil {
		t.Fatalf("gpg --verify of the note signature over the commit id: %v\n%s", err, out)
	}

	q := watcherCount(t, srv, repo, commit, 1, gitwatch.TrustedKey{Name: "alice", Armored: alice.gpg.ExportPublic(t, fp)})
	if !q.OK || q.Verified != 1 || q.Signers[0].Fingerprint != fp || !slices.Equal(q.Signers[0].Sources, []string{gitwatch.SourceNotes}) {
		t.Fatalf("the watcher should count alice's note signature: %+v", q)
	}
}

func TestSignWithSSH(t *testing.T) {
	srv := gittest.NewServer(t)
	repo := srv.NewRepo(t, "ops")
	commit := repo.Commit(t, map[string]string{"deploy.txt": "v1\n"})

	tests := []struct {
		name  string
		setup func(c *clone, key string) []string // returns the sign arguments
	}{
		{"--ssh with the private key file", func(c *clone, key string) []string { return []string{"--ssh", "--key", key} }},
		{"gpg.format=ssh and user.signingkey the .pub file", func(c *clone, key string) []string {
			c.git("config", "gpg.format", "ssh")
			c.git("config", "user.signingkey", key+".pub")
			return nil
		}},
		{"gpg.format=ssh and a key:: literal from ssh-agent", func(c *clone, key string) []string {
			if _, err := os.Stat(key); err != nil {
				return nil // set up by the first call: the agent holds the key
			}
			sockDir, err := os.MkdirTemp("", "agent") // a socket path must stay short
			if err != nil {
				c.t.Fatal(err)
			}
			c.t.Cleanup(func() { os.RemoveAll(sockDir) })
			agent := c.run("ssh-agent", "-s", "-a", filepath.Join(sockDir, "s"))
			var pid string
			for _, kv := range strings.Split(agent, ";") {
				kv = strings.TrimSpace(kv)
				if v, ok := strings.CutPrefix(kv, "SSH_AUTH_SOCK="); ok {
					c.env = append(c.env, "SSH_AUTH_SOCK="+v)
				}
				if v, ok := strings.CutPrefix(kv, "SSH_AGENT_PID="); ok {
					pid = v
				}
			}
			c.t.Cleanup(func() { _ = exec.Command("kill", pid).Run() })
			c.run("ssh-add", "-q", key)
			if err := os.Remove(key); err != nil { // only the agent has it now
				c.t.Fatal(err)
			}
			pub, err := os.ReadFile(key + ".pub")
			if err != nil {
				c.t.Fatal(err)
			}
			c.git("config", "gpg.format", "ssh")
			c.git("config", "user.signingkey", "key::"+strings.TrimSpace(string(pub)))
			return nil
		}},
	}
	var signers []string
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newClone(t, srv, repo, fmt.Sprintf("Signer%d", i))
			key := c.withSSH(fmt.Sprintf("signer%d", i))
			pub, err := os.ReadFile(key + ".pub")
			if err != nil {
				t.Fatal(err)
			}
			signers = append(signers, string(pub))
			out := c.mustSign(tt.setup(c, key)...)
			if !strings.Contains(out, "SSH key SHA256:") {
				t.Fatalf("sign should name the SSH key:\n%s", out)
			}
			lines := noteLines(remoteNote(t, repo, commit))
			if len(lines) != len(signers) {
				t.Fatalf("want %d signature lines, got %d", len(signers), len(lines))
			}
			// The line is the SSHSIG blob; armored again it verifies with
			// ssh-keygen -Y verify, namespace git, over the id.
			raw, err := base64.StdEncoding.DecodeString(lines[len(lines)-1])
			if err != nil || !strings.HasPrefix(string(raw), "SSHSIG") {
				t.Fatalf("the new line is not a base64 SSHSIG blob: %v", err)
			}
			sshVerify(t, c, raw, pub, commit)
			// And the watcher counts it for the trusted key.
			q := watcherCount(t, srv, repo, commit, 1, gitwatch.TrustedKey{Name: "signer", SSH: strings.TrimSpace(string(pub))})
			if !q.OK || q.Verified != 1 || q.Signers[0].Kind != gitwatch.KindSSH || !slices.Equal(q.Signers[0].Sources, []string{gitwatch.SourceNotes}) {
				t.Fatalf("the watcher should count the SSH note signature: %+v", q)
			}
			// Again: idempotent.
			if out := c.mustSign(tt.setup(c, key)...); !strings.Contains(out, "already signed") {
				t.Fatalf("a second sign with the same key should say already signed:\n%s", out)
			}
		})
	}
}

// sshVerify checks an SSHSIG blob with the real ssh-keygen -Y verify.
func sshVerify(t *testing.T, c *clone, raw, pub []byte, msg string) {
	t.Helper()
	dir := t.TempDir()
	var armored strings.Builder
	armored.WriteString("-----BEGIN SSH SIGNATURE-----\n")
	b64 := base64.StdEncoding.EncodeToString(raw)
	for len(b64) > 70 {
		armored.WriteString(b64[:70] + "\n")
		b64 = b64[70:]
	}
	armored.WriteString(b64 + "\n-----END SSH SIGNATURE-----\n")
	sigFile, allowed := filepath.Join(dir, "sig"), filepath.Join(dir, "allowed_signers")
	if err := os.WriteFile(sigFile, []byte(armored.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(allowed, []byte("signer@example.com namespaces=\"git\" "+string(pub)), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("ssh-keygen", "-Y", "verify", "-f", allowed, "-I", "signer@example.com", "-n", "git", "-s", sigFile)
	cmd.Stdin, cmd.Env = strings.NewReader(msg), c.env
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("ssh-keygen -Y verify of the note signature: %v\n%s", err, out)
	}
}

func TestSignIsIdempotent(t *testing.T) {
	srv := gittest.NewServer(t)
	repo := srv.NewRepo(t, "ops")
	repo.Commit(t, map[string]string{"deploy.txt": "v1\n"})
	alice := newClone(t, srv, repo, "Alice")
	fp := alice.withGPG("Alice")

	// A commit Alice signed herself (git commit -S): her note would count
	// for nothing more.
	alice.git("commit", "--quiet", "--allow-empty", "-S", "-m", "signed by alice")
	alice.git("push", "--quiet", "origin", "HEAD:main")
	own := alice.git("rev-parse", "HEAD")
	if out := alice.mustSign(own); !strings.Contains(out, "already signed") || !strings.Contains(out, "in the commit itself") {
		t.Fatalf("signing a commit signed with the same key should say so:\n%s", out)
	}
	if repo.Rev(t, "refs/notes/signatures") != "" {
		t.Fatal("nothing should have been pushed")
	}

	// A note, then the same again: one line, the notes commit unchanged.
	base := alice.git("rev-parse", "HEAD~1")
	alice.mustSign(base)
	before := repo.Rev(t, "refs/notes/signatures")
	out := alice.mustSign(base)
	if !strings.Contains(out, "already signed by OpenPGP key "+fp) {
		t.Fatalf("the second sign should say already signed:\n%s", out)
	}
	if after := repo.Rev(t, "refs/notes/signatures"); after != before {
		t.Fatalf("the second sign moved the notes from %s to %s", before, after)
	}
	if lines := noteLines(remoteNote(t, repo, base)); len(lines) != 1 {
		t.Fatalf("want one line after signing twice, got %d", len(lines))
	}
	// git flant-sign is the same tool.
	if r := alice.exec("git", "flant-sign", "sign", base); r.code != 0 || !strings.Contains(r.stdout, "already signed") {
		t.Fatalf("git flant-sign sign: %s", r)
	}
}

func TestSignRefusesACommitNotOnTheRemote(t *testing.T) {
	srv := gittest.NewServer(t)
	repo := srv.NewRepo(t, "ops")
	repo.Commit(t, map[string]string{"deploy.txt": "v1\n"})
	alice := newClone(t, srv, repo, "Alice")
	alice.withGPG("Alice")
	alice.git("commit", "--quiet", "--allow-empty", "-m", "local only")
	local := alice.git("rev-parse", "HEAD")

	tests := []struct {
		name string
		args []string
		code int
		want string
	}{
		{"a commit only this clone has", []string{"sign", local}, exitFailed, "commit " + local + " is on no branch of origin: push it first"},
		{"no such commit", []string{"sign", "0000000000000000000000000000000000000001"}, exitUsage, "is not a commit in this repository"},
		{"no such remote", []string{"sign", "--remote", "upstream"}, exitUsage, `no remote "upstream"`},
		{"two commits", []string{"sign", "HEAD", "HEAD~1"}, exitUsage, "takes one commit"},
		{"both formats", []string{"sign", "--gpg", "--ssh"}, exitUsage, "exclude each other"},
		{"no command", []string{}, exitUsage, "give a command"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := alice.tool(tt.args...)
			if r.code != tt.code || !strings.Contains(r.stderr, tt.want) {
				t.Fatalf("want exit %d and %q, got %s", tt.code, tt.want, r)
			}
			if strings.Contains(r.stderr+r.stdout, srv.Password()) {
				t.Fatal("the output carries the git password")
			}
		})
	}
	if repo.Rev(t, "refs/notes/signatures") != "" {
		t.Fatal("nothing should have been pushed")
	}
}

// TestParallelSigners: two signers started at the same moment, on the same
// commit and on different commits, round after round: every signature
// lands, none is lost, and the tag follows the notes commit.
func TestParallelSigners(t *testing.T) {
	srv := gittest.NewServer(t)
	repo := srv.NewRepo(t, "ops")
	repo.Commit(t, map[string]string{"deploy.txt": "v0\n"})
	alice := newClone(t, srv, repo, "Alice")
	alice.withGPG("Alice")
	bob := newClone(t, srv, repo, "Bob")
	bobKey := bob.withSSH("bob")
	bob.git("config", "gpg.format", "ssh")
	bob.git("config", "user.signingkey", bobKey)

	const rounds = 10
	retried := 0
	defer func() { t.Logf("%d rounds, %d pushes refused by the other signer's and retried", rounds, retried) }()
	var expected = map[string]int{} // commit -> signature lines it must have
	for round := range rounds {
		first := repo.Commit(t, map[string]string{"deploy.txt": fmt.Sprintf("v%d\n", round)})
		second := first
		if round%2 == 1 { // odd rounds: each signs a commit of its own
			second = repo.Commit(t, map[string]string{"other.txt": fmt.Sprintf("v%d\n", round)})
		}
		expected[first]++
		expected[second]++
		alice.git("fetch", "--quiet", "origin")
		bob.git("fetch", "--quiet", "origin")

		var wg sync.WaitGroup
		results := make([]result, 2)
		start := make(chan struct{})
		for i, job := range []struct {
			c      *clone
			commit string
		}{{alice, first}, {bob, second}} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				results[i] = job.c.exec("flant_gitops-sign", "sign", job.commit)
			}()
		}
		close(start)
		wg.Wait()
		for i, r := range results {
			if r.code != 0 {
				t.Fatalf("round %d signer %d: %s", round, i, r)
			}
			retried += strings.Count(r.stderr, "merging and pushing again")
		}
		for commit, n := range expected {
			if got := len(noteLines(remoteNote(t, repo, commit))); got != n {
				t.Fatalf("round %d: %s has %d signature lines, want %d: a signature was lost", round, commit, got, n)
			}
		}
	}
}

// TestSignRacesATagMove: between the signer's fetch and push, another tool
// moves latest-signature alone, to a notes commit of its own that does not
// descend from the notes ref. The leased push is refused, the signer fetches again, merges
// the tag's notes into the notes ref and pushes: both signatures are there.
// gpg.program is a wrapper that makes the move on the first signature.
func TestSignRacesATagMove(t *testing.T) {
	srv := gittest.NewServer(t)
	repo := srv.NewRepo(t, "ops")
	base := repo.Commit(t, map[string]string{"deploy.txt": "v0\n"})
	commit := repo.Commit(t, map[string]string{"deploy.txt": "v1\n"})
	alice := newClone(t, srv, repo, "Alice")
	alice.withGPG("Alice")
	carol := newClone(t, srv, repo, "Carol")
	carol.withGPG("Carol")
	// Carol's tool pushes a note and moves only the tag (a hand-made notes
	// commit), as an older script might.
	sig := carol.gpg.SignDetached(t, carol.git("config", "user.signingkey"), []byte(commit))
	carolLine := base64.StdEncoding.EncodeToString(sig)
	carol.git("notes", "--ref", "signatures", "add", "-m", carolLine, commit)
	// The notes ref and the tag exist on the server already (alice signed
	// the commit below), so the tag moves to a notes history of its own.
	alice.mustSign(base)

	marker := filepath.Join(alice.home, "moved")
	wrapper := filepath.Join(alice.home, "gpg-wrapper")
	script := fmt.Sprintf(`#!/bin/sh
case " $* " in *" --detach-sign "*)
  if [ ! -e %[1]q ]; then
    touch %[1]q
    git -C %[2]q push --quiet --force origin refs/notes/signatures:refs/tags/latest-signature >&2 || exit 1
  fi ;;
esac
exec gpg "$@"
`, marker, carol.dir)
	if err := os.WriteFile(wrapper, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	alice.git("config", "gpg.program", wrapper)

	r := alice.tool("sign", commit)
	if r.code != 0 {
		t.Fatalf("sign: %s", r)
	}
	if _, err := os.Stat(marker); err != nil {
		t.Fatal("the wrapper never moved the tag: the race did not happen")
	}
	if !strings.Contains(r.stderr, "moved on origin while signing") {
		t.Fatalf("the signer should have been refused once and retried:\n%s", r)
	}
	lines := noteLines(remoteNote(t, repo, commit))
	if len(lines) != 2 || !slices.Contains(lines, carolLine) {
		t.Fatalf("want carol's line and alice's after the race, got %q", lines)
	}
	if lines := noteLines(remoteNote(t, repo, base)); len(lines) != 1 {
		t.Fatalf("the merge lost the note on %s: %q", base, lines)
	}
}

// TestSignReportsAServerRefusal: a server rule that refuses the notes push
// is final (no retry) and its words reach the signer.
func TestSignReportsAServerRefusal(t *testing.T) {
	srv := gittest.NewServer(t)
	repo := srv.NewRepo(t, "ops")
	commit := repo.Commit(t, map[string]string{"deploy.txt": "v1\n"})
	repo.PreReceive(t, `if grep -q refs/notes/ "$UPDATES"; then echo "notes are read-only here" >&2; exit 1; fi`)
	alice := newClone(t, srv, repo, "Alice")
	alice.withGPG("Alice")
	r := alice.tool("sign", "--retries", "5", commit)
	if r.code != exitFailed || !strings.Contains(r.stderr, "refused") || !strings.Contains(r.stderr, "hook declined") ||
		!strings.Contains(r.stderr, "the server said: notes are read-only here") {
		t.Fatalf("a hook's refusal should fail at once, naming it: %s", r)
	}
	if strings.Contains(r.stderr, "pushing again") {
		t.Fatalf("a hook's refusal was retried: %s", r)
	}
	if repo.Rev(t, "refs/notes/signatures") != "" || repo.Rev(t, "refs/tags/latest-signature") != "" {
		t.Fatal("nothing may land when the push is refused")
	}
}
