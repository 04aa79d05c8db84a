package backend

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/hashicorp/vault/api"

	"github.com/flant/flant_gitops/backend/vaulttest"
	"github.com/flant/flant_gitops/backend/watch"
	"github.com/flant/flant_gitops/container/dockertest"
	"github.com/flant/flant_gitops/gitwatch/gittest"
	"github.com/flant/flant_gitops/gitwatch/pgptest"
)

// TestE2ETrustChain: the plugin's own signature vouches only for its change.
// One real Vault with the built plugin, one real git server, real gpg
// signatures (git commit -S and trdl-style notes) and the Docker engine; the
// watched branch is also the patch target, its key trusted as the README
// used to recommend, quorum 1.
func TestE2ETrustChain(t *testing.T) {
	e := newWatchE2E(t)
	gpg := pgptest.NewGPG(t)
	pat := gpg.GenKey(t, "Pat")
	e.write("configure/trusted_pgp_public_key/pat", map[string]any{"public_key": gpg.ExportPublic(t, pat)})
	plugin := e.read("configure/signing_key")
	e.write("configure/trusted_pgp_public_key/patch-path", map[string]any{"public_key": plugin["public_key"]})

	git := e.repo
	base := git.Commit(t, map[string]string{"deploy.txt": "base\n", "values.yaml": "tag: 0\n"}, gittest.Message("base"))
	e.configure(map[string]any{
		"git_repo_url":    git.URL(),
		"git_branch_name": "main",
		"git_poll_period": fmt.Sprintf("%ds", int(watchE2EPollPeriod.Seconds())),
		"required_number_of_verified_signatures_on_commit": 1,
		"initial_last_successful_commit":                   base,
		"docker_image":                                     dockertest.Image(t, e.docker),
		"commands":                                         []string{"cat /git/deploy.txt /git/values.yaml"},
		"run_timeout":                                      "120s",
		"network_mode":                                     "none",
	})
	// CI patches as the root token; the trust chain, not the caller's
	// identity, is under test here (TestPatchThroughVaultWithGitLabJWT has that).
	e.write("configure/policy", map[string]any{"policy": "package flant_gitops.patch\n\nviolations := set()\n"})
	e.write("configure/repository/ops", map[string]any{"url": git.URL(), "username": e.gitSrv.Username(), "password": e.gitSrv.Password()})

	// push makes a commit on the current branch head (CI may have moved it).
	push := func(deploy string, opts ...gittest.CommitOption) string {
		t.Helper()
		git.Reset(t, git.Head(t))
		return git.Commit(t, map[string]string{"deploy.txt": deploy}, opts...)
	}

	t.Run("weak key refused on write", func(t *testing.T) {
		weak := pgptest.NewKey(t, "Weak", pgptest.RSA(1024))
		_, err := e.vault.Client.Logical().Write(vaulttest.MountPath+"/configure/trusted_pgp_public_key/weak", map[string]any{"public_key": weak.PublicArmored(t)})
		var re *api.ResponseError
		if !errors.As(err, &re) || re.StatusCode != 400 || !strings.Contains(err.Error(), "1024 bits") || !strings.Contains(err.Error(), "2048") {
			t.Fatalf("writing an RSA-1024 key answered %v, want 400 naming the size and the minimum", err)
		}
	})

	t.Run("laundering: an unsigned push under a CI patch runs nothing and status names it", func(t *testing.T) {
		evil := push("evil\n")
		patched := e.ciPatch("tag: 1\n")
		st := e.pollUntilOutcome(watch.OutcomeRefused)
		res := fmt.Sprint(st["last_poll_result"])
		sig, _ := st["signatures"].(map[string]any)
		if !strings.Contains(res, evil) || sig["untrusted_commit"] != evil || sig["commit"] != patched {
			t.Errorf("refusal does not name the unsigned commit %s under %s: result %q, signatures %v", evil, patched, res, sig)
		}
		if runs := e.runsFor(patched); len(runs) != 0 {
			t.Errorf("the laundered commit ran: %v", runs)
		}
		e.noLeftovers()
		// The operator throws the push away.
		git.Reset(t, base)
		git.ForcePush(t, base)
	})

	t.Run("an unsigned push patched by CI runs once a note signs the push", func(t *testing.T) {
		pushed := push("pushed, notes follow\n")
		patched := e.ciPatch("tag: 2\n")
		st := e.pollUntilOutcome(watch.OutcomeRefused)
		if sig, _ := st["signatures"].(map[string]any); sig["untrusted_commit"] != pushed {
			t.Errorf("before the notes: signatures %v, want untrusted_commit %s", sig, pushed)
		}
		git.NoteSignatureGPG(t, pushed, gpg, pat)
		id, run := e.pollAndWait(patched, watch.RunSucceeded)
		if log := e.log(id); !strings.Contains(log, "pushed, notes follow") || !strings.Contains(log, "tag: 2") {
			t.Errorf("run of %s did not see its tree: %q", patched, log)
		}
		if signers := fmt.Sprint(run["signers"]); !strings.Contains(signers, "patch-path") {
			t.Errorf("run signers %s, want the plugin's key counted", signers)
		}
		e.noLeftovers()
	})

	t.Run("signed with git commit -S, then two CI patches: each HEAD runs", func(t *testing.T) {
		signed := push("signed by Pat\n", gittest.SignGPG(gpg, pat))
		e.pollAndWait(signed, watch.RunSucceeded)
		for i, tag := range []string{"tag: 3\n", "tag: 4\n"} {
			patched := e.ciPatch(tag)
			id, _ := e.pollAndWait(patched, watch.RunSucceeded)
			if log := e.log(id); !strings.Contains(log, "signed by Pat") || !strings.Contains(log, strings.TrimSpace(tag)) {
				t.Errorf("patch %d: run log %q", i+1, log)
			}
		}
		if ls := e.status()["last_successful_commit"]; ls != git.Head(t) {
			t.Errorf("last_successful_commit %v, want HEAD %s", ls, git.Head(t))
		}
		e.noLeftovers()
	})

	// The policy may let CI patch staging and not main: the plugin's
	// signature on a staging commit must not make it run on main, whichever
	// plugin instance (any trusted key with the plugin's user ID) made it.
	t.Run("replay: a CI patch to staging pushed to the watched main runs nothing", func(t *testing.T) {
		accepted := git.Head(t) // the last successful commit
		// Another instance of the plugin, its key trusted here under a name
		// that says nothing, with a repository entry for staging.
		const other = "flant_gitops_staging"
		if err := e.vault.Client.Sys().Mount(other, &api.MountInput{Type: vaulttest.PluginName, Config: api.MountConfigInput{PluginVersion: vaulttest.PluginVersion}}); err != nil {
			t.Fatalf("mounting a second plugin instance: %v", err)
		}
		otherKey, err := e.vault.Client.Logical().Read(other + "/configure/signing_key")
		if err != nil || otherKey == nil {
			t.Fatalf("reading the second instance's signing key: %v", err)
		}
		e.write("configure/trusted_pgp_public_key/ci-bot", map[string]any{"public_key": otherKey.Data["public_key"]})
		staging := map[string]any{"url": git.URL(), "branch": "staging", "username": e.gitSrv.Username(), "password": e.gitSrv.Password()}
		e.write("configure/repository/ops-staging", staging)
		for path, data := range map[string]map[string]any{
			"configure/policy":                 {"policy": "package flant_gitops.patch\n\nviolations := set()\n"},
			"configure/repository/ops-staging": staging,
		} {
			if _, err := e.vault.Client.Logical().Write(other+"/"+path, data); err != nil {
				t.Fatalf("write %s/%s: %v", other, path, err)
			}
		}

		for _, mount := range []string{vaulttest.MountPath, other} {
			updateRef(t, git, "staging", accepted)
			s, err := e.vault.Client.Logical().Write(mount+"/patch/ops-staging", ciPatchBody("tag: staging only\n"))
			if err != nil || s == nil {
				t.Fatalf("%s: CI patch to staging: %v", mount, err)
			}
			replayed := fmt.Sprint(s.Data["commit"])
			if s.Data["parent"] != accepted {
				t.Fatalf("%s: the staging patch %v is not on the accepted %s", mount, s.Data, accepted)
			}
			updateRef(t, git, "main", replayed) // anyone with push access to main
			st := e.pollUntilOutcome(watch.OutcomeRefused)
			res := fmt.Sprint(st["last_poll_result"])
			sig, _ := st["signatures"].(map[string]any)
			if sig["untrusted_commit"] != replayed || !strings.Contains(fmt.Sprint(sig["untrusted_reason"]), `made for branch "staging"`) ||
				!strings.Contains(res, `not for branch "main"`) {
				t.Errorf("%s: refusal of the replayed %s does not name its target: result %q, signatures %v", mount, replayed, res, sig)
			}
			if runs := e.runsFor(replayed); len(runs) != 0 {
				t.Errorf("%s: the staging patch ran on main: %v", mount, runs)
			}
			updateRef(t, git, "main", accepted) // the operator throws the push away
		}
		e.noLeftovers()
	})

	t.Run("require_trusted_tip refuses a patch above an unsigned tip and pushes nothing", func(t *testing.T) {
		e.write("configure/repository/ops", map[string]any{"require_trusted_tip": true})
		tip := push("unsigned tip\n")
		_, err := e.vault.Client.Logical().Write(vaulttest.MountPath+"/patch/ops", ciPatchBody("tag: 5\n"))
		var re *api.ResponseError
		if !errors.As(err, &re) || re.StatusCode != 409 || !strings.Contains(err.Error(), tip) || !strings.Contains(err.Error(), "require_trusted_tip") {
			t.Fatalf("patch above the unsigned tip %s answered %v, want 409 naming it", tip, err)
		}
		if head := git.Head(t); head != tip {
			t.Errorf("branch moved to %s: something was pushed", head)
		}
		// Signed by a note, the same tip takes the patch.
		git.NoteSignatureGPG(t, tip, gpg, pat)
		e.ciPatch("tag: 5\n")
	})
}

func ciPatchBody(values string) map[string]any {
	return map[string]any{"commands": []any{map[string]any{"path": "values.yaml", "createFile": map[string]any{"content": values, "overwrite": true}}}}
}

// ciPatch writes patch/ops as CI would and returns the pushed commit.
func (e *watchE2E) ciPatch(values string) string {
	e.t.Helper()
	s, err := e.vault.Client.Logical().Write(vaulttest.MountPath+"/patch/ops", ciPatchBody(values))
	if err != nil || s == nil {
		e.t.Fatalf("CI patch: %v", err)
	}
	c := fmt.Sprint(s.Data["commit"])
	if head := e.repo.Head(e.t); head != c || s.Data["no_op"] == true {
		e.t.Fatalf("CI patch answered %v, branch head %s", s.Data, head)
	}
	return c
}
