package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hashicorp/vault/api"

	"github.com/flant/flant_gitops/backend/vaulttest"
	"github.com/flant/flant_gitops/container/dockertest"
	"github.com/flant/flant_gitops/gitwatch/gittest"
)

// readmeSigning is the README's "## Signing" section and its sh blocks, in
// order.
func readmeSigning(t *testing.T) (section string, blocks []string) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(vaulttest.RepoRoot(t), "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(b), "\n## Signing\n")
	if !ok {
		t.Fatal(`README.md has no "## Signing" section`)
	}
	section, _, _ = strings.Cut(section, "\n## ")
	rest := section
	for {
		_, block, ok := strings.Cut(rest, "```sh\n")
		if !ok {
			return section, blocks
		}
		block, rest, _ = strings.Cut(block, "```")
		blocks = append(blocks, block)
	}
}

// The README's sh blocks, by what they do.
const (
	blockGPGKey = iota
	blockSSHKey
	blockInstall
	blockShow
	blockSign
	blockPoll
	blockOperator
	readmeBlocks
)

// runBlock runs a README block with bash, as a person pastes it, in dir.
func runBlock(t *testing.T, env []string, dir, block string) string {
	t.Helper()
	cmd := exec.Command("bash", "-euo", "pipefail", "-c", block)
	cmd.Dir, cmd.Env = dir, env
	cmd.Stdin = strings.NewReader("") // no terminal: ssh-keygen takes an empty passphrase
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("README block failed: %v\n%s\noutput:\n%s", err, block, out)
	}
	return string(out)
}

// TestE2EReadmeSigning runs the README's Signing section: the operator's
// commands, then Bob's, from a new gpg key to the run his signature
// completes, and an SSH signer's setup.
func TestE2EReadmeSigning(t *testing.T) {
	section, blocks := readmeSigning(t)
	if len(blocks) != readmeBlocks {
		t.Fatalf("the README's Signing section has %d sh blocks, want %d (update this test with it)", len(blocks), readmeBlocks)
	}
	// make build puts both names in bin/; this test has them in binDir.
	for _, w := range []string{"bin/flant_gitops-sign", "bin/git-flant-sign"} {
		if !strings.Contains(blocks[blockInstall], w) || !strings.Contains(section, w) {
			t.Fatalf("the install block should install %s:\n%s", w, blocks[blockInstall])
		}
	}

	docker := dockertest.Runner(t)
	image := dockertest.Image(t, docker)
	v := vaulttest.NewServer(t, &vaulttest.Options{Env: []string{"FLANT_GITOPS_CACHE_DIR=" + t.TempDir()}})
	e := &e2eVault{t: t, v: v}
	srv := gittest.NewServer(t)
	repo := srv.NewRepo(t, "ops")
	base := repo.Commit(t, map[string]string{"deploy.txt": "base\n"}, gittest.Message("base"))
	alice := newClone(t, srv, repo, "Alice")
	aliceFP := alice.withGPG("Alice")
	e.write("configure/trusted_pgp_public_key/alice", map[string]any{"public_key": alice.gpg.ExportPublic(t, aliceFP)})
	e.write("configure/git_credential", map[string]any{"username": srv.Username(), "password": srv.Password()})
	e.write("configure", map[string]any{
		"git_repo_url": repo.URL(), "git_branch_name": "main", "git_poll_period": "1h",
		"required_number_of_verified_signatures_on_commit": 2,
		"initial_last_successful_commit":                   base,
		"docker_image":                                     image,
		"commands":                                         []string{"cat /git/deploy.txt"},
		"run_timeout":                                      "120s",
		"network_mode":                                     "none",
	})

	// Bob's machine: his clone, a gpg that cannot ask for a passphrase here
	// (a wrapper first on PATH gives an empty one), the tool installed.
	bob := newClone(t, srv, repo, "Bob")
	gnupg, err := os.MkdirTemp("", "gnupg") // gpg-agent's socket path must stay short
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		kill := exec.Command("gpgconf", "--kill", "gpg-agent")
		kill.Env = append(os.Environ(), "GNUPGHOME="+gnupg)
		_ = kill.Run()
		os.RemoveAll(gnupg)
	})
	if err := os.Chmod(gnupg, 0o700); err != nil {
		t.Fatal(err)
	}
	realGPG, err := exec.LookPath("gpg")
	if err != nil {
		t.Fatalf("gpg is not on PATH; install GnuPG (apt-get install -y gnupg): %v", err)
	}
	wrappers := t.TempDir()
	if err := os.WriteFile(filepath.Join(wrappers, "gpg"), []byte("#!/bin/sh\nexec "+realGPG+
		" --batch --pinentry-mode loopback --passphrase '' \"$@\"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	pathEnv := "PATH=" + strings.Join([]string{wrappers, binDir, filepath.Dir(v.VaultBinary), os.Getenv("PATH")}, string(os.PathListSeparator))
	bob.env = append(bob.env, "GNUPGHOME="+gnupg, pathEnv, "VAULT_ADDR="+v.Addr)
	runBlock(t, bob.env, bob.home, blocks[blockGPGKey])
	if _, err := os.Stat(filepath.Join(bob.home, "bob.asc")); err != nil {
		t.Fatalf("the key block should leave bob.asc for the operator: %v", err)
	}

	// The operator trusts bob.asc and writes the signers' policy.
	opEnv := append(v.CLIEnv(), pathEnv)
	runBlock(t, opEnv, bob.home, blocks[blockOperator])
	tok, err := v.Client.Auth().Token().Create(&api.TokenCreateRequest{Policies: []string{"flant_gitops-signer"}})
	if err != nil {
		t.Fatal(err)
	}
	bob.env = append(bob.env, "VAULT_TOKEN="+tok.Auth.ClientToken)

	// Alice pushes a commit she signed; it needs a second signature.
	alice.git("fetch", "--quiet")
	alice.git("reset", "--quiet", "--hard", "origin/main")
	if err := writeFile(alice.dir+"/deploy.txt", "release 2\n"); err != nil {
		t.Fatal(err)
	}
	alice.git("commit", "--quiet", "-S", "-am", "release 2")
	alice.git("push", "--quiet", "origin", "HEAD:main")
	commit := alice.git("rev-parse", "HEAD")

	out := runBlock(t, bob.env, bob.dir, blocks[blockShow])
	for _, w := range []string{"commit " + commit, "alice (pgp key " + aliceFP + " in commit)", "verified: 1 of 2 required (alice)", "missing: 1 more trusted signer(s)"} {
		if !strings.Contains(out, w) {
			t.Errorf("the show block's output lacks %q:\n%s", w, out)
		}
	}
	if out := runBlock(t, bob.env, bob.dir, blocks[blockSign]); !strings.Contains(out, "signed "+commit) {
		t.Errorf("the sign block's output lacks %q:\n%s", "signed "+commit, out)
	}
	// Bob's own token wakes the poll; show --check then passes.
	out = runBlock(t, bob.env, bob.dir, blocks[blockPoll])
	if !strings.Contains(out, "ok: the plugin accepts this commit") {
		t.Errorf("the poll block's show lacks the plugin's ok:\n%s", out)
	}
	run, log := e.run(commit)
	if run["status"] != "succeeded" || !strings.Contains(log, "release 2") {
		t.Fatalf("the run of %s: %v\n%s", commit, run, log)
	}

	// An SSH signer set up as the README says signs with ssh-keygen.
	dan := newClone(t, srv, repo, "Dan")
	dan.env = append(dan.env, pathEnv)
	if err := os.Mkdir(filepath.Join(dan.home, ".ssh"), 0o700); err != nil {
		t.Fatal(err)
	}
	runBlock(t, dan.env, dan.home, blocks[blockSSHKey])
	if out := dan.mustSign(commit); !strings.Contains(out, "SSH key SHA256:") {
		t.Fatalf("the README's SSH setup should sign with ssh-keygen:\n%s", out)
	}
	// Without Vault: --trusted with alice.asc, bob.asc and Dan's .pub.
	keys := filepath.Join(dan.home, "keys")
	if err := os.Mkdir(keys, 0o755); err != nil {
		t.Fatal(err)
	}
	danPub, err := os.ReadFile(filepath.Join(dan.home, ".ssh", "id_ed25519.pub"))
	if err != nil {
		t.Fatal(err)
	}
	bobAsc, err := os.ReadFile(filepath.Join(bob.home, "bob.asc"))
	if err != nil {
		t.Fatal(err)
	}
	for name, data := range map[string][]byte{"alice.asc": []byte(alice.gpg.ExportPublic(t, aliceFP)), "bob.asc": bobAsc, "dan.pub": danPub} {
		if err := os.WriteFile(filepath.Join(keys, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	r := dan.tool("show", "--trusted", keys, "--required", "3", "--check", commit)
	if r.code != exitOK || !strings.Contains(r.stdout, "verified: 3 of 3 required (alice, bob, dan)") {
		t.Fatalf("show --trusted with an SSH key: %s", r)
	}
}
