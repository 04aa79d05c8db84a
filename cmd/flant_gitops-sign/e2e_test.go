package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/flant/flant_gitops/backend/receiver"
	"github.com/flant/flant_gitops/backend/receiver/receivertest"
	"github.com/flant/flant_gitops/backend/vaulttest"
	"github.com/flant/flant_gitops/container/dockertest"
	"github.com/flant/flant_gitops/gitwatch"
	"github.com/flant/flant_gitops/gitwatch/gittest"
	"github.com/flant/flant_gitops/gitwatch/pgptest"
)

// signerPolicy is what a signer's Vault token needs (README "Signing"):
// the plugin's check of a commit, and waking the poll without retry.
const signerPolicy = `
path "flant_gitops/signatures/*" {
  capabilities = ["read"]
}
path "flant_gitops/poll" {
  capabilities = ["update"]
  denied_parameters = {
    "retry" = []
  }
}
`

// e2eVault is a real Vault with the built plugin watching a real git
// server, runs going to the Docker engine.
type e2eVault struct {
	t *testing.T
	v *vaulttest.Server
}

func (e *e2eVault) write(path string, data map[string]any) *api.Secret {
	e.t.Helper()
	s, err := e.v.Client.Logical().Write(vaulttest.MountPath+"/"+path, data)
	if err != nil {
		e.t.Fatalf("write %s: %v", path, err)
	}
	return s
}

func (e *e2eVault) status() map[string]any {
	e.t.Helper()
	s, err := e.v.Client.Logical().Read(vaulttest.MountPath + "/status")
	if err != nil || s == nil {
		e.t.Fatalf("read status: %v", err)
	}
	return s.Data
}

// poll is `vault write flant_gitops/poll` and waits for that poll's outcome.
func (e *e2eVault) poll() map[string]any {
	e.t.Helper()
	before := e.status()["last_poll_at"]
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, err := e.v.Client.Logical().Write(vaulttest.MountPath+"/poll", nil)
		var re *api.ResponseError
		if err == nil {
			break
		}
		if !errors.As(err, &re) || re.StatusCode != 429 || time.Now().After(deadline) {
			e.t.Fatalf("poll: %v", err)
		}
		time.Sleep(250 * time.Millisecond)
	}
	for deadline = time.Now().Add(time.Minute); ; time.Sleep(200 * time.Millisecond) {
		st := e.status()
		if st["last_poll_at"] != before && st["worker"] == "idle" {
			return st
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("no poll outcome within a minute; status %v", st)
		}
	}
}

// run waits for the run of commit to end and returns it with its log.
func (e *e2eVault) run(commit string) (map[string]any, string) {
	e.t.Helper()
	for deadline := time.Now().Add(2 * time.Minute); time.Now().Before(deadline); time.Sleep(300 * time.Millisecond) {
		list, err := e.v.Client.Logical().List(vaulttest.MountPath + "/runs")
		if err != nil {
			e.t.Fatalf("list runs: %v", err)
		}
		if list == nil {
			continue
		}
		info, _ := list.Data["key_info"].(map[string]any)
		for id, v := range info {
			if r, _ := v.(map[string]any); r["commit"] != commit {
				continue
			}
			s, err := e.v.Client.Logical().Read(vaulttest.MountPath + "/runs/" + id)
			if err != nil || s == nil {
				e.t.Fatalf("read run %s: %v", id, err)
			}
			if st := fmt.Sprint(s.Data["status"]); st == "running" || st == "queued" {
				continue
			}
			lg, err := e.v.Client.Logical().Read(vaulttest.MountPath + "/runs/" + id + "/log")
			if err != nil || lg == nil {
				e.t.Fatalf("read the log of run %s: %v", id, err)
			}
			return s.Data, fmt.Sprint(lg.Data["log"])
		}
	}
	e.t.Fatalf("no finished run of %s within 2 minutes; status %v", commit, e.status())
	return nil, ""
}

// TestE2ESecondSignerThroughVault: the quorum is 2; Alice signs her commit
// (git commit -S), the plugin refuses it; Bob runs flant_gitops-sign sign;
// `show` asks the plugin and says what is missing before and nothing
// after; the forge's delivery of the signature tag's push starts the run.
func TestE2ESecondSignerThroughVault(t *testing.T) {
	docker := dockertest.Runner(t)
	image := dockertest.Image(t, docker)
	v := vaulttest.NewServer(t, &vaulttest.Options{Env: []string{"FLANT_GITOPS_CACHE_DIR=" + t.TempDir()}})
	e := &e2eVault{t: t, v: v}
	srv := gittest.NewServer(t)
	repo := srv.NewRepo(t, "ops")
	base := repo.Commit(t, map[string]string{"deploy.txt": "base\n"}, gittest.Message("base"))

	alice := newClone(t, srv, repo, "Alice")
	aliceFP := alice.withGPG("Alice")
	bob := newClone(t, srv, repo, "Bob")
	bobFP := bob.withGPG("Bob")
	carol := pgptest.NewKey(t, "Carol")
	e.write("configure/trusted_pgp_public_key/alice", map[string]any{"public_key": alice.gpg.ExportPublic(t, aliceFP)})
	e.write("configure/trusted_pgp_public_key/bob", map[string]any{"public_key": bob.gpg.ExportPublic(t, bobFP)})
	e.write("configure/trusted_pgp_public_key/carol", map[string]any{"public_key": carol.PublicArmored(t)})
	e.write("configure/git_credential", map[string]any{"username": srv.Username(), "password": srv.Password()})
	e.write("configure", map[string]any{
		"git_repo_url":    repo.URL(),
		"git_branch_name": "main",
		"git_poll_period": "1h", // only the explicit polls below
		"required_number_of_verified_signatures_on_commit": 2,
		"initial_last_successful_commit":                   base,
		"docker_image":                                     image,
		"commands":                                         []string{"cat /git/deploy.txt"},
		"run_timeout":                                      "120s",
		"network_mode":                                     "none",
	})

	// A webhook receiver, with the forge's headers passed to the mount as
	// the README's "Push to run" says.
	if err := v.Client.Sys().TuneMountWithContext(t.Context(), vaulttest.MountPath,
		api.MountConfigInput{PassthroughRequestHeaders: receiver.PassthroughHeaders()}); err != nil {
		t.Fatalf("tuning the mount's passthrough_request_headers: %v", err)
	}
	hook := e.write("configure/receiver/github", map[string]any{"provider": "github"})
	hookURL, _ := hook.Data["url_path"].(string)

	// A signer's token that may only read what show needs.
	if _, errOut, code := v.CLIStdin(t, signerPolicy, "policy", "write", "signer", "-"); code != 0 {
		t.Fatalf("vault policy write: %s", errOut)
	}
	tok, err := v.Client.Auth().Token().Create(&api.TokenCreateRequest{Policies: []string{"signer"}})
	if err != nil {
		t.Fatal(err)
	}
	signerEnv := []string{"VAULT_ADDR=" + v.Addr, "VAULT_TOKEN=" + tok.Auth.ClientToken}
	alice.env = append(alice.env, signerEnv...)

	// Alice's signed commit alone: refused, and show says who is missing.
	alice.git("fetch", "--quiet")
	alice.git("reset", "--quiet", "--hard", "origin/main")
	if err := writeFile(alice.dir+"/deploy.txt", "release 1\n"); err != nil {
		t.Fatal(err)
	}
	alice.git("commit", "--quiet", "-S", "-am", "release 1")
	alice.git("push", "--quiet", "origin", "HEAD:main")
	commit := alice.git("rev-parse", "HEAD")
	if st := e.poll(); st["last_poll_outcome"] != "refused" {
		t.Fatalf("one signature of 2 should be refused: %v", st)
	}
	r := alice.tool("show", "--check")
	if r.code != exitMissing {
		t.Fatalf("show --check before the second signature: %s", r)
	}
	for _, w := range []string{
		"trust: the plugin at " + v.Addr + "/v1/flant_gitops",
		"signatures on the remote:\n  commit  OpenPGP " + aliceFP + "\n",
		"counted by the plugin:\n  alice (pgp key " + aliceFP + " in commit)\n",
		"verified: 1 of 2 required (alice)",
		"missing: 1 more trusted signer(s)",
		"verdict: commit " + commit + " has 1 of 2 required verified signatures, 1 more needed",
	} {
		if !strings.Contains(r.stdout, w) {
			t.Errorf("show lacks %q:\n%s", w, r.stdout)
		}
	}

	// Bob signs with the tool. The plugin judges with the notes of its last
	// poll: show lists Bob's note and says so, until the next poll.
	bob.git("fetch", "--quiet")
	bob.mustSign(commit)
	r = alice.tool("show", "--check", commit)
	if r.code != exitMissing || !strings.Contains(r.stdout, "  note    OpenPGP "+bobFP+"\n") ||
		!strings.Contains(r.stdout, "counts once it polls again") {
		t.Fatalf("show right after bob signed: %s", r)
	}
	// The forge announces the push of the signature tag (GitHub sends a
	// push event for it): that wakes the poll, which counts Bob's note and
	// runs the commit, with git_poll_period at an hour.
	notes := bob.git("rev-parse", "refs/notes/signatures")
	d := receivertest.Push(t, receiver.GitHub, gitwatch.SignatureTag, notes, "")
	req, err := d.Request(v.Addr + hookURL)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `"accepted":true`) {
		t.Fatalf("the delivery of the signature tag's push: %d %s", resp.StatusCode, body)
	}
	run, log := e.run(commit)
	if run["status"] != "succeeded" || run["trigger"] != "webhook" || !strings.Contains(log, "release 1") {
		t.Fatalf("the run of %s: %v\n%s", commit, run, log)
	}
	r = alice.tool("show", "--check", commit)
	if r.code != exitOK || !strings.Contains(r.stdout, "ok: the plugin accepts this commit") {
		t.Fatalf("show after the run: %s", r)
	}
	// The signer's token wakes the poll but may not retry a run.
	for _, tt := range []struct {
		args []string
		code int
	}{{[]string{"write", "-f", "flant_gitops/poll"}, 0}, {[]string{"write", "flant_gitops/poll", "retry=true"}, 2}} {
		cmd := exec.Command(v.VaultBinary, tt.args...)
		cmd.Env = append(os.Environ(), signerEnv...)
		out, err := cmd.CombinedOutput()
		code := 0
		var exitErr *exec.ExitError
		if errors.As(err, &exitErr) {
			code = exitErr.ExitCode()
		}
		if code != tt.code && !(tt.code == 0 && strings.Contains(string(out), "429")) {
			t.Errorf("vault %s with the signer's token: exit %d, want %d\n%s", strings.Join(tt.args, " "), code, tt.code, out)
		}
	}
	signers, _ := json.Marshal(run["signers"])
	if !strings.Contains(string(signers), bobFP) || !strings.Contains(string(signers), aliceFP) {
		t.Fatalf("the run should name both signers: %s", signers)
	}
}
