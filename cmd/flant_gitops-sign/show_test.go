package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/flant/flant_gitops/gitwatch/gittest"
)

func TestShowFromTrustedKeys(t *testing.T) {
	srv := gittest.NewServer(t)
	repo := srv.NewRepo(t, "ops")
	repo.Commit(t, map[string]string{"deploy.txt": "v0\n"})
	alice := newClone(t, srv, repo, "Alice")
	aliceFP := alice.withGPG("Alice")
	bob := newClone(t, srv, repo, "Bob")
	bobFP := bob.withGPG("Bob")
	carol := newClone(t, srv, repo, "Carol")
	carolKey := carol.withSSH("carol")
	dave := newClone(t, srv, repo, "Dave")
	daveFP := dave.withGPG("Dave")

	// Alice signs her commit (git commit -S), Bob and Carol add notes.
	alice.git("commit", "--quiet", "--allow-empty", "-S", "-m", "release")
	alice.git("push", "--quiet", "origin", "HEAD:main")
	commit := alice.git("rev-parse", "HEAD")
	bob.git("fetch", "--quiet")
	bob.mustSign(commit)
	carol.git("fetch", "--quiet")
	carol.mustSign("--ssh", "--key", carolKey, commit)

	trusted := filepath.Join(alice.home, "trusted")
	if err := os.Mkdir(trusted, 0o755); err != nil {
		t.Fatal(err)
	}
	carolPub, err := os.ReadFile(carolKey + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(trusted, "carol.pub"), carolPub, 0o644); err != nil {
		t.Fatal(err)
	}
	for name, c := range map[string]struct {
		c  *clone
		fp string
	}{"alice.asc": {alice, aliceFP}, "bob.asc": {bob, bobFP}, "dave/laptop.asc": {dave, daveFP}} {
		if err := os.MkdirAll(filepath.Dir(filepath.Join(trusted, name)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(trusted, name), []byte(c.c.gpg.ExportPublic(t, c.fp)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// Dave is one signer with two keys: a gpg key and an SSH key.
	daveSSH := dave.withSSH("dave")
	davePub, err := os.ReadFile(daveSSH + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(trusted, "dave", "token.pub"), davePub, 0o644); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name string
		args []string
		code int
		want []string
	}{
		{"one signer missing", []string{"show", "--trusted", trusted, "--required", "4", "--check", commit}, exitMissing, []string{
			"commit " + commit,
			"  commit  OpenPGP " + aliceFP + ": trusted signer alice",
			"  note    OpenPGP " + bobFP + ": trusted signer bob",
			"  note    SSH ssh-ed25519 SHA256:",
			": trusted signer carol",
			"verified: 3 of 4 required (alice, bob, carol)",
			"missing: 1 more trusted signer(s); who could still sign: dave",
		}},
		{"enough", []string{"show", "--trusted", trusted, "--required", "3", "--check", commit}, exitOK, []string{
			"verified: 3 of 3 required", "ok: enough trusted signers",
		}},
		{"without --check the count is no failure", []string{"show", "--trusted", trusted, "--required", "4"}, exitOK, []string{
			"missing: 1 more trusted signer(s)",
		}},
		{"from the notes fetched before", []string{"show", "--no-fetch", "--trusted", trusted, "--required", "2", commit}, exitOK, []string{
			"ok: enough trusted signers",
		}},
	}
	// alice's clone has not fetched the notes yet: --no-fetch sees them
	// only after a fetch.
	alice.git("fetch", "--quiet", "origin", "+refs/notes/signatures:refs/notes/signatures")
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := alice.tool(tt.args...)
			if r.code != tt.code {
				t.Fatalf("want exit %d: %s", tt.code, r)
			}
			for _, w := range tt.want {
				if !strings.Contains(r.stdout, w) {
					t.Errorf("the output lacks %q:\n%s", w, r.stdout)
				}
			}
		})
	}

	// Dave signs with both keys: he counts once.
	dave.git("fetch", "--quiet")
	dave.mustSign(commit)
	dave.mustSign("--ssh", "--key", daveSSH, commit)
	r := alice.tool("show", "--trusted", trusted, "--required", "5", commit)
	for _, w := range []string{
		"  note    OpenPGP " + daveFP + ": trusted signer dave",
		": trusted signer dave\n  note",
		"verified: 4 of 5 required (alice, bob, carol, dave)",
		"missing: 1 more trusted signer(s)\n",
		"verdict: commit " + commit + " has 4 of 5 required verified signatures, 1 more needed (signed by: ",
	} {
		if !strings.Contains(r.stdout+"\n  note", w) {
			t.Errorf("show after dave signed with two keys lacks %q:\n%s", w, r.stdout)
		}
	}

	for _, tt := range []struct {
		name string
		args []string
		want string
	}{
		{"no trust given", []string{"show"}, "show needs to know whom to trust"},
		{"a file that is not a key", []string{"show", "--trusted", alice.dir}, "is neither NAME.asc"},
		{"a directory in a signer's directory", []string{"show", "--trusted", filepath.Dir(trusted)}, "holds key files, not directories"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if r := alice.tool(tt.args...); r.code != exitUsage || !strings.Contains(r.stderr, tt.want) {
				t.Fatalf("want a usage error %q: %s", tt.want, r)
			}
		})
	}
}
