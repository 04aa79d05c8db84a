package backend

import (
	"fmt"
	"strings"
	"testing"

	"github.com/flant/flant_gitops/backend/vaulttest"
	"github.com/flant/flant_gitops/backend/watch"
	"github.com/flant/flant_gitops/container/dockertest"
	"github.com/flant/flant_gitops/gitwatch/gittest"
	"github.com/flant/flant_gitops/gitwatch/pgptest"
	"github.com/flant/flant_gitops/gitwatch/sshsig/sshsigtest"
)

// TestE2ESignersAndPathRules: the quorum counts people, and a signature
// rule asks more of them for prod/**. One real Vault with the built plugin,
// a real git server, keys made and signatures made by real gpg (git commit
// -S, and trdl-style notes of `gpg --detach-sign` of the commit id), the
// Docker engine.
func TestE2ESignersAndPathRules(t *testing.T) {
	e := newWatchE2EOn(t, gittest.NewServer(t), vaulttest.NewServer(t, &vaulttest.Options{Env: []string{cacheDirEnv + "=" + t.TempDir()}}), dockertest.Runner(t))
	gpg := pgptest.NewGPG(t)
	aliceLaptop, aliceToken := gpg.GenKey(t, "Alice"), gpg.GenKey(t, "AliceToken")
	bob, carol := gpg.GenKey(t, "Bob"), gpg.GenKey(t, "Carol")
	aliceSSH := sshsigtest.NewKey(t, "ed25519", 0) // made by ssh-keygen
	e.write("configure/signer/alice", map[string]any{"pgp_public_keys": []any{gpg.ExportPublic(t, aliceLaptop), gpg.ExportPublic(t, aliceToken)},
		"ssh_public_keys": []any{aliceSSH.Public}})
	e.write("configure/signer/bob", map[string]any{"pgp_public_keys": []any{gpg.ExportPublic(t, bob)}})
	e.write("configure/signer/carol", map[string]any{"pgp_public_keys": []any{gpg.ExportPublic(t, carol)}})
	if a := e.read("configure/signer/alice"); fmt.Sprint(a["pgp_public_keys"]) == "" || !strings.Contains(fmt.Sprint(a["pgp_public_keys"]), aliceToken) {
		t.Fatalf("signer alice = %v", a)
	}

	git := e.repo
	base := git.Commit(t, map[string]string{"prod/app.yaml": "replicas: 1\n", "staging/app.yaml": "replicas: 1\n"}, gittest.Message("base"))
	e.configure(map[string]any{
		"git_repo_url":    git.URL(),
		"git_branch_name": "main",
		"git_poll_period": fmt.Sprintf("%ds", int(watchE2EPollPeriod.Seconds())),
		"required_number_of_verified_signatures_on_commit": 2,
		"initial_last_successful_commit":                   base,
		"docker_image":                                     dockertest.Image(t, e.docker),
		"commands":                                         []string{"cat /git/prod/app.yaml /git/staging/app.yaml"},
		"run_timeout":                                      "120s",
		"network_mode":                                     "none",
	})

	t.Run("one person's two keys count once", func(t *testing.T) {
		c := git.Commit(t, map[string]string{"staging/app.yaml": "replicas: 2\n"}, gittest.SignGPG(gpg, aliceLaptop))
		git.NoteSignatureGPG(t, c, gpg, aliceToken)
		git.NoteSignatureSSH(t, c, aliceSSH) // her SSH key too: still one person
		st := e.pollUntilOutcome(watch.OutcomeRefused)
		sig, _ := st["signatures"].(map[string]any)
		res := fmt.Sprint(st["last_poll_result"])
		if fmt.Sprint(sig["verified"]) != "1" || !strings.Contains(res, "has 1 of 2 required verified signatures") ||
			!strings.Contains(res, "alice (pgp key "+aliceLaptop+" in commit, ") || !strings.Contains(res, "pgp key "+aliceToken+" in notes") ||
			!strings.Contains(res, "ssh key SHA256:") {
			t.Errorf("alice signing twice: result %q, signatures %v", res, sig)
		}
		git.NoteSignatureGPG(t, c, gpg, bob)
		_, run := e.pollAndWait(c, watch.RunSucceeded)
		signedBy := fmt.Sprint(run["signed_by"])
		if !strings.Contains(signedBy, "alice") || !strings.Contains(signedBy, "bob") || !strings.Contains(signedBy, aliceToken) ||
			!strings.Contains(fmt.Sprint(run["signers"]), "bob (pgp key "+bob+" in notes)") {
			t.Errorf("run record: signers %v, signed_by %v", run["signers"], run["signed_by"])
		}
	})

	e.configure(map[string]any{"required_number_of_verified_signatures_on_commit": 1})
	e.write("configure/signature_rule/prod", map[string]any{"paths": "prod/**", "required_signers": 2})

	t.Run("a change outside prod/** needs the mount's quorum only", func(t *testing.T) {
		c := git.Commit(t, map[string]string{"staging/app.yaml": "replicas: 3\n"}, gittest.SignGPG(gpg, carol))
		_, run := e.pollAndWait(c, watch.RunSucceeded)
		if rules, _ := run["rules"].([]any); len(rules) != 0 || !strings.Contains(fmt.Sprint(run["signers"]), "carol (pgp key "+carol) {
			t.Errorf("a staging change signed by carol: rules %v, signers %v", run["rules"], run["signers"])
		}
	})

	t.Run("prod/** needs two signers: refused with one, runs after a second signer's note", func(t *testing.T) {
		c := git.Commit(t, map[string]string{"prod/app.yaml": "replicas: 5\n"}, gittest.SignGPG(gpg, aliceLaptop))
		st := e.pollUntilOutcome(watch.OutcomeRefused)
		res := fmt.Sprint(st["last_poll_result"])
		want := `rule "prod" (prod/**) applies to prod/app.yaml and needs 2 signer(s): not met, signed by alice, 1 more needed; could still sign: bob, carol`
		if !strings.Contains(res, want) {
			t.Errorf("refusal %q does not say %q", res, want)
		}
		sig, _ := st["signatures"].(map[string]any)
		rules, _ := sig["rules"].([]any)
		if len(rules) != 1 || fmt.Sprint(rules[0].(map[string]any)["could_sign"]) != "[bob carol]" || fmt.Sprint(rules[0].(map[string]any)["missing"]) != "1" {
			t.Errorf("status signatures.rules = %v", sig["rules"])
		}
		if runs := e.runsFor(c); len(runs) != 0 {
			t.Errorf("the under-signed prod change ran: %v", runs)
		}

		// The read path says the same, in the same words.
		read := e.read("signatures/" + c)
		if read["ok"] != false || "refused: "+fmt.Sprint(read["verdict"]) != res || read["last_successful_commit"] == "" {
			t.Errorf("signatures/%s = %v\nstatus said %q", c, read, res)
		}

		// Bob adds his note: real gpg --detach-sign of the commit id, base64
		// on one line in refs/notes/signatures, the latest-signature tag
		// moved; the next poll runs it.
		git.NoteSignatureGPG(t, c, gpg, bob)
		id, run := e.pollAndWait(c, watch.RunSucceeded)
		if log := e.log(id); !strings.Contains(log, "replicas: 5") {
			t.Errorf("run log %q", log)
		}
		rules, _ = run["rules"].([]any)
		if len(rules) != 1 || rules[0].(map[string]any)["ok"] != true || fmt.Sprint(rules[0].(map[string]any)["signed"]) != "[alice bob]" {
			t.Errorf("run record rules = %v", run["rules"])
		}
		if read := e.read("signatures/" + c); read["ok"] != true {
			t.Errorf("signatures/%s after the note = %v", c, read)
		}
		e.noLeftovers()
	})
}
