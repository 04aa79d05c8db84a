package backend

import (
	"fmt"
	"strings"
	"testing"

	"github.com/flant/flant_gitops/backend/vaulttest"
	"github.com/flant/flant_gitops/backend/watch"
	"github.com/flant/flant_gitops/container/dockertest"
	"github.com/flant/flant_gitops/gitwatch/gittest"
	"github.com/flant/flant_gitops/gitwatch/sshsig"
	"github.com/flant/flant_gitops/gitwatch/sshsig/sshsigtest"
)

// TestE2ESSHSignatures: SSH signatures count toward the quorum. One real
// Vault with the built plugin, a real git server, keys made by the real
// ssh-keygen, a commit signed by `git commit -S` with gpg.format=ssh, a
// note signed by `ssh-keygen -Y sign -n git`, the Docker engine.
func TestE2ESSHSignatures(t *testing.T) {
	e := newWatchE2EOn(t, gittest.NewServer(t), vaulttest.NewServer(t, &vaulttest.Options{Env: []string{cacheDirEnv + "=" + t.TempDir()}}), dockertest.Runner(t))
	alice := sshsigtest.NewKey(t, "ed25519", 0)
	bob := sshsigtest.NewKey(t, "ecdsa", 256)
	carol := sshsigtest.NewKey(t, "rsa", 3072)
	fingerprint := func(k *sshsigtest.Key) string {
		t.Helper()
		pub, err := sshsig.ParsePublicKey(k.Public)
		if err != nil {
			t.Fatal(err)
		}
		return sshsig.Fingerprint(pub)
	}
	e.write("configure/signer/alice", map[string]any{"ssh_public_keys": []any{alice.Public}})
	// Bob's key comes with allowed_signers options, as git's file takes them.
	e.write("configure/signer/bob", map[string]any{"ssh_public_keys": []any{`namespaces="git",valid-after="20200101Z" ` + bob.Public}})
	e.write("configure/signer/carol", map[string]any{"ssh_public_keys": []any{carol.Public}})

	git := e.repo
	base := git.Commit(t, map[string]string{"deploy.txt": "base\n"}, gittest.Message("base"))
	e.configure(map[string]any{
		"git_repo_url":    git.URL(),
		"git_branch_name": "main",
		"git_poll_period": fmt.Sprintf("%ds", int(watchE2EPollPeriod.Seconds())),
		"required_number_of_verified_signatures_on_commit": 2,
		"initial_last_successful_commit":                   base,
		"docker_image":                                     dockertest.Image(t, e.docker),
		"commands":                                         []string{"cat /git/deploy.txt"},
		"run_timeout":                                      "120s",
		"network_mode":                                     "none",
	})

	t.Run("an ssh-signed commit and an ssh note by a second person run", func(t *testing.T) {
		c := git.Commit(t, map[string]string{"deploy.txt": "ssh signed\n"}, gittest.SignSSH(alice.Path))
		st := e.pollUntilOutcome(watch.OutcomeRefused)
		res := fmt.Sprint(st["last_poll_result"])
		if !strings.Contains(res, "1 of 2") || !strings.Contains(res, "alice (ssh key "+fingerprint(alice)+" in commit)") {
			t.Errorf("one SSH signature: result %q", res)
		}
		git.NoteSignatureSSH(t, c, bob)
		id, run := e.pollAndWait(c, watch.RunSucceeded)
		if log := e.log(id); !strings.Contains(log, "ssh signed") {
			t.Errorf("run log %q", log)
		}
		signers := fmt.Sprint(run["signers"])
		if !strings.Contains(signers, "alice (ssh key "+fingerprint(alice)+" in commit)") || !strings.Contains(signers, "bob (ssh key "+fingerprint(bob)+" in notes)") {
			t.Errorf("run signers %v, want alice's commit and bob's note by SSH key", run["signers"])
		}
		e.noLeftovers()
	})

	t.Run("a revoked SSH key counts zero", func(t *testing.T) {
		e.write("configure/signer/carol", map[string]any{"ssh_public_keys": []any{carol.Public}, "revoked_keys": []any{fingerprint(carol)}})
		c := git.Commit(t, map[string]string{"deploy.txt": "carol signed\n"}, gittest.SignSSH(carol.Path))
		git.NoteSignatureSSH(t, c, alice)
		st := e.pollUntilOutcome(watch.OutcomeRefused)
		res := fmt.Sprint(st["last_poll_result"])
		sig, _ := st["signatures"].(map[string]any)
		notCounted := fmt.Sprint(sig["not_counted"])
		if sig["commit"] != c || !strings.Contains(res, "1 of 2") || !strings.Contains(notCounted, fingerprint(carol)) || !strings.Contains(notCounted, "revoked") {
			t.Errorf("a commit by a revoked key: result %q, not counted %s", res, notCounted)
		}
		if runs := e.runsFor(c); len(runs) != 0 {
			t.Errorf("the commit signed by a revoked key ran: %v", runs)
		}
	})

	t.Run("a weak or namespace-bound key is refused on write", func(t *testing.T) {
		for _, line := range []string{sshsigtest.NewKey(t, "rsa", 1024).Public, `namespaces="file" ` + alice.Public} {
			if _, err := e.vault.Client.Logical().Write(vaulttest.MountPath+"/configure/signer/dave", map[string]any{"ssh_public_keys": []any{line}}); err == nil ||
				!strings.Contains(err.Error(), "400") {
				t.Errorf("writing %.40q answered %v, want 400", line, err)
			}
		}
	})
}
