package backend

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/hashicorp/vault/api"

	"github.com/flant/flant_gitops/backend/vaulttest"
	"github.com/flant/flant_gitops/backend/watch"
	"github.com/flant/flant_gitops/container/dockertest"
)

// TestE2EDockerEngine sends the runs of a real Vault's plugin to a Docker
// engine reached over mutual TLS (an mTLS proxy in front of this machine's
// engine): a signed commit runs there; the client key is never read back; a
// changed address needs the key again; a refused client certificate is an
// error in status, starts no run and no container, and the commit runs once
// the certificate is fixed.
func TestE2EDockerEngine(t *testing.T) {
	e := newWatchE2E(t)
	proxy := dockertest.NewTLSProxy(t)
	base := e.repo.Commit(t, map[string]string{"hello.txt": "base\n", "step.sh": "echo base\n"})

	resp, err := e.vault.Client.Logical().Write(vaulttest.MountPath+"/configure/docker_engine", engineFields(proxy))
	if err != nil {
		t.Fatalf("write configure/docker_engine: %v", err)
	}
	if resp != nil && len(resp.Warnings) > 0 {
		t.Fatalf("write of a reachable engine warned: %v", resp.Warnings)
	}
	e.configure(map[string]any{
		"git_repo_url":    e.repo.URL(),
		"git_branch_name": "main",
		"git_poll_period": fmt.Sprintf("%ds", int(watchE2EPollPeriod.Seconds())),
		"required_number_of_verified_signatures_on_commit": 1,
		"initial_last_successful_commit":                   base,
		"docker_image":                                     dockertest.Image(t, e.docker),
		"commands":                                         []string{"cat /git/hello.txt", "sh /git/step.sh"},
		"run_timeout":                                      "120s",
		"network_mode":                                     "none",
	})

	t.Run("read never returns client_key", func(t *testing.T) {
		read := e.read("configure/docker_engine")
		if _, ok := read["client_key"]; ok || read["client_key_set"] != true || read["host"] != proxy.URL {
			t.Fatalf("read = %v, want host and client_key_set without client_key", read)
		}
		for k, v := range read {
			if strings.Contains(fmt.Sprint(v), "PRIVATE KEY") {
				t.Fatalf("read field %s holds a private key", k)
			}
		}
		stdout, _, code := e.vault.CLI(t, "path-help", vaulttest.MountPath+"/configure/docker_engine")
		if code != 0 || !strings.Contains(stdout, "mutual TLS") || !strings.Contains(stdout, "client_key") {
			t.Errorf("path-help configure/docker_engine (exit %d):\n%s", code, stdout)
		}
	})

	t.Run("a signed commit runs through the engine's mTLS and succeeds", func(t *testing.T) {
		st := e.status()
		engine, _ := st["engine"].(map[string]any)
		if engine["host"] != proxy.URL || engine["reachable"] != true || engine["id"] == "" || engine["version"] == "" {
			t.Fatalf("status engine = %v", engine)
		}
		c := e.commit("through mTLS\n", "echo step done", 0)
		id, run := e.pollAndWait(c, watch.RunSucceeded)
		if log := e.log(id); !strings.Contains(log, "through mTLS") || !strings.Contains(log, "step done") {
			t.Errorf("run log:\n%s", log)
		}
		if !slices.Contains(proxy.Created(), fmt.Sprint(run["container_id"])) {
			t.Errorf("the run's container %v was not created through the proxy (it created %v)", run["container_id"], proxy.Created())
		}
		e.mountID, _ = e.status()["mount_id"].(string)
		e.noLeftovers()
	})

	t.Run("changing host without client_key is refused", func(t *testing.T) {
		_, err := e.vault.Client.Logical().Write(vaulttest.MountPath+"/configure/docker_engine", map[string]any{"host": "tcp://127.0.0.1:2376"})
		var re *api.ResponseError
		if !errors.As(err, &re) || re.StatusCode != 400 || !strings.Contains(err.Error(), "changing host") || !strings.Contains(err.Error(), "give client_key") {
			t.Fatalf("got %v, want a 400 naming host and asking for client_key", err)
		}
		if read := e.read("configure/docker_engine"); read["host"] != proxy.URL {
			t.Errorf("the refused write changed host to %v", read["host"])
		}
	})

	t.Run("a refused client certificate: error in status, no run, no container; fixed, the commit runs", func(t *testing.T) {
		wrong := engineFields(proxy)
		wrong["client_cert"], wrong["client_key"] = string(proxy.WrongClientCertPEM), string(proxy.WrongClientKeyPEM)
		resp, err := e.vault.Client.Logical().Write(vaulttest.MountPath+"/configure/docker_engine", wrong)
		if err != nil {
			t.Fatalf("write of a certificate the engine refuses: %v (it must be stored, with a warning)", err)
		}
		if resp == nil || len(resp.Warnings) == 0 || !strings.Contains(strings.Join(resp.Warnings, " "), "refused our client certificate") {
			t.Errorf("write warnings %v, want one saying the engine refused the certificate", resp)
		}
		createdBefore := len(proxy.Created())
		c := e.commit("after the certificate is fixed\n", "echo fixed", 0)
		st := e.pollUntilOutcome(watch.OutcomeError)
		if res := fmt.Sprint(st["last_poll_result"]); !strings.Contains(res, "refused our client certificate") || !strings.Contains(res, "no run starts") {
			t.Errorf("last_poll_result %q, want the refused certificate and that no run starts", res)
		}
		engine, _ := st["engine"].(map[string]any)
		t.Logf("status while the engine refuses the certificate: last_poll_result %q; engine %v", st["last_poll_result"], engine)
		if engine["reachable"] != false || !strings.Contains(fmt.Sprint(engine["error"]), "refused our client certificate") {
			t.Errorf("status engine = %v, want the refused certificate", engine)
		}
		if runs := e.runsFor(c); len(runs) != 0 {
			t.Errorf("runs were recorded while the engine refused the certificate: %v", runs)
		}
		if st["retry"] != nil {
			t.Errorf("the commit was counted as failing: retry %v", st["retry"])
		}
		if n := len(proxy.Created()); n != createdBefore {
			t.Errorf("%d containers were created while the engine refused the certificate", n-createdBefore)
		}
		if found := e.containers(); len(found) != 0 {
			t.Errorf("containers of the mount: %v", found)
		}

		e.write("configure/docker_engine", map[string]any{"client_cert": string(proxy.ClientCertPEM), "client_key": string(proxy.ClientKeyPEM)})
		id, run := e.pollAndWait(c, watch.RunSucceeded)
		if fmt.Sprint(run["attempt"]) != "1" || !strings.Contains(e.log(id), "fixed") {
			t.Errorf("run after the fix = %v, log %q; want attempt 1 with its output", run, e.log(id))
		}
		e.noLeftovers()
	})
}
