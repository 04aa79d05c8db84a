package backend

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/flant/flant_gitops/backend/vaulttest"
	"github.com/flant/flant_gitops/backend/watch"
	"github.com/flant/flant_gitops/container/dockertest"
	"github.com/flant/flant_gitops/gitwatch/gittest"
)

// upgradeV2 is the "next release" of the upgrade test: the same source with
// another version string, registered beside vaulttest.PluginVersion.
const upgradeV2 = "v0.2.0-vaulttest"

// TestE2EUpgradeAndDowngrade moves a mount between two registered versions
// of the plugin the ways README "Upgrades" documents, through a real Vault,
// git server and Docker engine, each time while a run is running and patches
// are being sent: up with `vault secrets tune -plugin-version` and `vault
// plugin reload` (the tune alone changes nothing), down the same way, then up
// with a pin (sys/plugins/pins) and a reload. Each time the running run is
// re-attached (same run, one container, attempt 1, every line once), the
// stored configuration, keys, runs and last successful commit are intact,
// every patch lands (after retryable answers only) and the next commit runs
// under the new version.
func TestE2EUpgradeAndDowngrade(t *testing.T) {
	docker := dockertest.Runner(t)
	git := gittest.NewServer(t)
	srv := vaulttest.NewServer(t, &vaulttest.Options{
		Env:            []string{cacheDirEnv + "=" + t.TempDir()},
		PluginVersions: []string{upgradeV2},
	})
	e := newWatchE2EOn(t, git, srv, docker, "alice", "bob", "carol")
	e.configureLongRun(dockertest.Image(t, docker))
	infra := git.NewRepo(t, "infra")
	infra.Commit(t, map[string]string{"README": "infra\n"}, gittest.Message("base"))
	e.write("configure/policy", map[string]any{"policy": "package flant_gitops.patch\n\nviolations := set()\n"})
	e.write("configure/repository/infra", map[string]any{"url": infra.URL(), "username": git.Username(), "password": git.Password()})

	first := e.commit("under v1\n", "echo first run", 0, 1)
	e.pollAndWait(first, watch.RunSucceeded)
	if v := e.status()["version"]; v != vaulttest.PluginVersion {
		t.Fatalf("status version = %v before any upgrade, want %s", v, vaulttest.PluginVersion)
	}

	steps := []struct {
		name, to string
		pin      bool
	}{
		{"upgrade with secrets tune and plugin reload", upgradeV2, false},
		{"downgrade with secrets tune and plugin reload", vaulttest.PluginVersion, false},
		{"upgrade with a pinned version and plugin reload", upgradeV2, true},
	}
	for i, step := range steps {
		t.Run(step.name, func(t *testing.T) {
			e.t = t
			from := e.runningVersion()
			before := e.upgradeSnapshot()

			long := e.commit(fmt.Sprintf("long %d\n", i), "echo long begin; for i in $(seq 1 20); do echo line $i; sleep 1; done; echo long end", 0, 2)
			runID := e.pollAndWaitLog(long, "long begin")
			containers := e.containers()
			if len(containers) != 1 {
				t.Fatalf("containers before the move: %+v, want the run's one", containers)
			}

			if step.pin {
				e.cli("write", "sys/plugins/pins/secret/"+vaulttest.PluginName, "version="+step.to)
			} else {
				e.cli("secrets", "tune", "-plugin-version="+step.to, vaulttest.MountPath+"/")
			}
			// Neither a tune nor a pin moves a running mount: the reload does.
			if got := e.runningVersion(); got != from {
				t.Fatalf("the mount runs %s right after the tune or pin, want still %s until the reload", got, from)
			}
			if v := e.status()["version"]; v != from {
				t.Fatalf("status version = %v before the reload, want %s", v, from)
			}

			// Patches keep coming from three CI jobs across the reload.
			stop := make(chan struct{})
			patches := e.sendPatches(i, 3, stop)
			time.Sleep(500 * time.Millisecond)
			reloadAt := time.Now()
			e.cli("plugin", "reload", "-plugin="+vaulttest.PluginName)
			e.waitRunningVersion(step.to)
			time.Sleep(time.Second)
			close(stop)

			// The run outlives the move and is completed by the new version.
			deadline := time.Now().Add(2 * time.Minute)
			for e.status()["last_successful_commit"] != long {
				if time.Now().After(deadline) {
					t.Fatalf("the long run was not completed after the move; runs %v; status %v\n%s", e.runsFor(long), e.status(), lastLines(e.vault.Log(), 40))
				}
				time.Sleep(300 * time.Millisecond)
			}
			runs := e.runsFor(long)
			if r := runs[runID]; len(runs) != 1 || r["status"] != watch.RunSucceeded || r["container_id"] != containers[0].ID || fmt.Sprint(r["attempt"]) != "1" {
				t.Errorf("runs of the long commit: %v, want only run %s, attempt 1, succeeded in container %s", runs, runID, containers[0].ID)
			}
			log := e.log(runID)
			for _, l := range append(append([]string{"long begin"}, upgradeLines(20)...), "long end") {
				if n := strings.Count(log, l+"\n"); n != 1 {
					t.Errorf("%q is %d times in the run's log, want once:\n%s", l, n, log)
				}
			}
			ls := e.read("configure/last_successful_commit")
			if ls["commit"] != long || ls["run_id"] != runID {
				t.Errorf("last_successful_commit = %v, want %s from run %s", ls, long, runID)
			}

			// Configuration, keys and history are what they were.
			after := e.upgradeSnapshot()
			for k, v := range before {
				if !reflect.DeepEqual(after[k], v) {
					t.Errorf("%s changed across the move:\nbefore %v\nafter  %v", k, v, after[k])
				}
			}

			patches.check(t, infra, reloadAt)

			next := e.commit(fmt.Sprintf("after move %d\n", i), "echo next run", 0, 1)
			e.pollAndWait(next, watch.RunSucceeded)
			st := e.status()
			if st["version"] != step.to || st["last_successful_commit"] != next {
				t.Errorf("status after the next commit: version %v, last_successful_commit %v; want %s and %s", st["version"], st["last_successful_commit"], step.to, next)
			}
			e.noLeftovers()
		})
	}
	e.t = t

	// While the pin is in effect a tune of the version is refused; deleting
	// the pin and reloading gives the mount its own plugin_version again.
	if out, errOut, code := srv.CLI(t, "secrets", "tune", "-plugin-version="+vaulttest.PluginVersion, vaulttest.MountPath+"/"); code == 0 || !strings.Contains(out+errOut, "pinned version") {
		t.Errorf("secrets tune under a pin: exit %d\n%s%s\nwant it refused naming the pin", code, out, errOut)
	}
	e.cli("delete", "sys/plugins/pins/secret/"+vaulttest.PluginName)
	e.cli("plugin", "reload", "-plugin="+vaulttest.PluginName)
	e.waitRunningVersion(vaulttest.PluginVersion)
	if v := e.status()["version"]; v != vaulttest.PluginVersion {
		t.Errorf("status version %v after the pin was deleted, want the mount's own %s", v, vaulttest.PluginVersion)
	}

	// The catalog keeps both versions, each with its own sha256.
	list, err := srv.Client.Sys().ListPlugins(&api.ListPluginsInput{Type: api.PluginTypeSecrets})
	if err != nil {
		t.Fatalf("list plugins: %v", err)
	}
	got := map[string]string{}
	for _, p := range list.Details {
		if p.Name == vaulttest.PluginName {
			info, err := srv.Client.Sys().GetPlugin(&api.GetPluginInput{Name: p.Name, Type: api.PluginTypeSecrets, Version: p.Version})
			if err != nil {
				t.Fatalf("read the catalog entry of %s: %v", p.Version, err)
			}
			got[p.Version] = info.SHA256
		}
	}
	if !reflect.DeepEqual(got, srv.PluginSHA256s) {
		t.Errorf("catalog versions of %s: %v, want %v", vaulttest.PluginName, got, srv.PluginSHA256s)
	}
	for v, sum := range srv.PluginSHA256s {
		info, _, code := srv.CLI(t, "plugin", "info", "-format=json", "-version="+v, "secret", vaulttest.PluginName)
		if code != 0 || !strings.Contains(info, sum) || !strings.Contains(info, `"version": "`+v+`"`) {
			t.Errorf("vault plugin info -version=%s: exit %d\n%s", v, code, info)
		}
	}
}

func upgradeLines(n int) []string {
	var out []string
	for i := 1; i <= n; i++ {
		out = append(out, fmt.Sprintf("line %d", i))
	}
	return out
}

// cli runs the vault CLI and fails the test on a non-zero exit.
func (e *watchE2E) cli(args ...string) string {
	e.t.Helper()
	out, errOut, code := e.vault.CLI(e.t, args...)
	if code != 0 {
		e.t.Fatalf("vault %s: exit %d\n%s%s", strings.Join(args, " "), code, out, errOut)
	}
	return out
}

// runningVersion is the plugin version Vault says the mount runs.
func (e *watchE2E) runningVersion() string {
	e.t.Helper()
	m, err := e.vault.Client.Sys().GetMount(vaulttest.MountPath)
	if err != nil {
		e.t.Fatalf("read the mount: %v", err)
	}
	return m.RunningVersion
}

// waitRunningVersion waits until the mount runs version and answers.
func (e *watchE2E) waitRunningVersion(version string) {
	e.t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		_, err := e.vault.Client.Logical().Read(vaulttest.MountPath + "/configure")
		if err == nil && e.runningVersion() == version {
			return
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("the mount does not run %s a minute after the reload (runs %s, last error %v)\n%s", version, e.runningVersion(), err, lastLines(e.vault.Log(), 40))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// upgradeSnapshot reads what a move between versions must not change: the
// configuration, the trusted keys, the plugin's signing key, a patch
// repository, and every finished run.
func (e *watchE2E) upgradeSnapshot() map[string]any {
	e.t.Helper()
	snap := map[string]any{
		"configure":                  e.read("configure"),
		"configure/signing_key":      e.read("configure/signing_key")["public_key"],
		"configure/repository/infra": e.read("configure/repository/infra"),
		"configure/policy":           e.read("configure/policy"),
		"configure/trusted_pgp_keys": e.listKeys("configure/trusted_pgp_public_key"),
	}
	list, err := e.vault.Client.Logical().List(vaulttest.MountPath + "/runs")
	if err != nil || list == nil {
		e.t.Fatalf("list runs: %v", err)
	}
	info, _ := list.Data["key_info"].(map[string]any)
	for id, v := range info {
		if r, _ := v.(map[string]any); (&watch.Run{Status: fmt.Sprint(r["status"])}).Finished() {
			snap["runs/"+id] = e.read("runs/" + id)
		}
	}
	return snap
}

func (e *watchE2E) listKeys(path string) []any {
	e.t.Helper()
	s, err := e.vault.Client.Logical().List(vaulttest.MountPath + "/" + path)
	if err != nil || s == nil {
		e.t.Fatalf("list %s: %v", path, err)
	}
	keys, _ := s.Data["keys"].([]any)
	return keys
}

// sentPatches are patches sent while the plugin version changes.
type sentPatches struct {
	wg      sync.WaitGroup
	mu      sync.Mutex
	commits map[string]string // file -> commit
	// spans are when each landed patch was sent and answered.
	spans   [][2]time.Time
	errs    []string // answers that may not be retried
	retried []string // answers retried, for the log
}

// sendPatches has jobs senders patch the repository infra one new file
// after another until stop, each patch with an idempotency key, retrying
// only what the CI client retries (no answer, 429, 503, a branch that
// moved) for up to two minutes.
func (e *watchE2E) sendPatches(step, jobs int, stop <-chan struct{}) *sentPatches {
	p := &sentPatches{commits: map[string]string{}}
	for j := 0; j < jobs; j++ {
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			for n := 0; ; n++ {
				select {
				case <-stop:
					return
				default:
				}
				file := fmt.Sprintf("queued/%d-%d-%d.txt", step, j, n)
				if !p.send(e.vault.Client, file) {
					return
				}
			}
		}()
	}
	return p
}

// send sends one patch until it lands or is answered what may not be
// retried; false when it did not land.
func (p *sentPatches) send(c *api.Client, file string) bool {
	body := map[string]any{
		"commands":        []any{map[string]any{"path": file, "createFile": map[string]any{"content": file + "\n"}}},
		"idempotency_key": "upgrade-" + file,
	}
	start := time.Now()
	deadline := start.Add(2 * time.Minute)
	for {
		s, err := c.Logical().Write(vaulttest.MountPath+"/patch/infra", body)
		p.mu.Lock()
		switch {
		case err == nil && s != nil:
			p.commits[file] = fmt.Sprint(s.Data["commit"])
			p.spans = append(p.spans, [2]time.Time{start, time.Now()})
			p.mu.Unlock()
			return true
		case !patchRetryable(err) || time.Now().After(deadline):
			p.errs = append(p.errs, fmt.Sprintf("%s: %v", file, err))
			p.mu.Unlock()
			return false
		}
		p.retried = append(p.retried, fmt.Sprintf("%s: %v", file, err))
		p.mu.Unlock()
		time.Sleep(250 * time.Millisecond)
	}
}

// patchRetryable is the CI client's rule (cmd/flant_gitops-patch retryable)
// for a request with an idempotency key.
func patchRetryable(err error) bool {
	var re *api.ResponseError
	if !errors.As(err, &re) {
		return true // no answer: with the key a retry is safe
	}
	switch re.StatusCode {
	case 429, 503:
		return true
	case 409:
		return strings.Contains(err.Error(), "moved under the patch")
	}
	return false
}

// check waits for the patches: every one landed on infra's main, and any
// answer before that was one the CI client retries.
func (p *sentPatches) check(t *testing.T, infra *gittest.Repo, reloadAt time.Time) {
	t.Helper()
	p.wg.Wait()
	waited := 0
	for _, sp := range p.spans {
		if sp[0].Before(reloadAt) && sp[1].After(reloadAt) {
			waited++
		}
	}
	t.Logf("%d patches landed (%d of them sent before the reload began and answered after), %d answers retried", len(p.commits), waited, len(p.retried))
	if waited == 0 {
		t.Errorf("no patch was waiting when the reload began: the test did not test that")
	}
	for _, r := range p.retried {
		t.Logf("retried: %s", r)
	}
	if len(p.errs) > 0 {
		t.Errorf("patches answered what may not be retried: %v", p.errs)
	}
	infra.Git(t, "fetch", "--quiet", "origin", "+refs/heads/main:refs/remotes/origin/main")
	history := infra.Git(t, "log", "--format=%H", "refs/remotes/origin/main")
	for file, c := range p.commits {
		if !strings.Contains(history, c) {
			t.Errorf("patch of %s answered commit %s, which is not on infra's main:\n%s", file, c, history)
		}
		if got := infra.Git(t, "show", "refs/remotes/origin/main:"+file); got != file+"\n" && strings.TrimSpace(got) != file {
			t.Errorf("infra's main has %q in %s", got, file)
		}
	}
}
