package backend

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/flant/flant_gitops/backend/vaulttest"
	"github.com/flant/flant_gitops/backend/watch"
	"github.com/flant/flant_gitops/container"
	"github.com/flant/flant_gitops/container/dockertest"
	"github.com/flant/flant_gitops/gitwatch/gittest"
	"github.com/flant/flant_gitops/gitwatch/pgptest"
)

// watchE2E drives the watch through a real Vault with the built plugin, a
// real git server and the real Docker engine.
type watchE2E struct {
	t       *testing.T
	vault   *vaulttest.Server
	repo    *gittest.Repo
	gitSrv  *gittest.Server
	docker  *container.Docker
	keys    []*pgptest.Key
	mountID string
}

const watchE2EPollPeriod = 3 * time.Second

// TestE2EWatch is one scenario in phases that build on each other, so Vault
// and the plugin start once.
func TestE2EWatch(t *testing.T) {
	e := newWatchE2E(t)
	base := e.repo.Commit(t, map[string]string{"hello.txt": "base\n", "step.sh": "echo base\n"}, gittest.Message("base"))
	e.configure(map[string]any{
		"git_repo_url":    e.repo.URL(),
		"git_branch_name": "main",
		"git_poll_period": fmt.Sprintf("%ds", int(watchE2EPollPeriod.Seconds())),
		"required_number_of_verified_signatures_on_commit": 2,
		"initial_last_successful_commit":                   base,
		"docker_image":                                     dockertest.Image(t, e.docker),
		"commands":                                         []string{"cat /git/hello.txt", "sh /git/step.sh"},
		"run_timeout":                                      "120s",
		"memory_limit":                                     "64m",
		"network_mode":                                     "none",
	})

	var good string
	t.Run("signed by 2 of 3 runs, logs, succeeds, leaves no container", func(t *testing.T) {
		good = e.commit("hello from git\n", "echo step done", 0, 1)
		id, run := e.pollAndWait(good, watch.RunSucceeded)
		log := e.log(id)
		if !strings.Contains(log, "hello from git") || !strings.Contains(log, "step done") {
			t.Errorf("run log does not show the commit's file read from /git:\n%s", log)
		}
		if signers, _ := run["signers"].([]any); len(signers) != 2 {
			t.Errorf("run signers = %v, want the 2 who signed", run["signers"])
		}
		st := e.status()
		if st["last_successful_commit"] != good || st["head_commit"] != good || st["current_run"] != nil {
			t.Errorf("status after success: %v", st)
		}
		e.mountID, _ = st["mount_id"].(string)
		if e.mountID == "" {
			t.Fatalf("status has no mount_id: %v", st)
		}
		e.noLeftovers()
	})

	t.Run("under-signed commit starts no container and status says how many are missing", func(t *testing.T) {
		under := e.commit("under-signed\n", "echo should not run", 0)
		st := e.pollUntilOutcome(watch.OutcomeRefused)
		if res, _ := st["last_poll_result"].(string); !strings.Contains(res, "1 of 2") || !strings.Contains(res, "1 more needed") || !strings.Contains(res, e.keys[0].Fingerprint()) {
			t.Errorf("last_poll_result does not say how many are missing and who signed: %q", res)
		}
		sig, _ := st["signatures"].(map[string]any)
		if fmt.Sprint(sig["missing"]) != "1" || fmt.Sprint(sig["verified"]) != "1" {
			t.Errorf("status signatures = %v, want 1 verified, 1 missing", sig)
		}
		if runs := e.runsFor(under); len(runs) != 0 {
			t.Errorf("runs were recorded for an under-signed commit: %v", runs)
		}
		if st["last_successful_commit"] != good {
			t.Errorf("last_successful_commit moved to %v", st["last_successful_commit"])
		}
		e.noLeftovers()
	})

	t.Run("failing command fails with its exit code and is retried with backoff", func(t *testing.T) {
		bad := e.commit("failing\n", "echo about to fail; exit 3", 0, 2)
		id, run := e.pollAndWait(bad, watch.RunFailed)
		if fmt.Sprint(run["exit_code"]) != "3" || !strings.Contains(fmt.Sprint(run["reason"]), "code 3") {
			t.Errorf("failed run = %v, want exit code 3 in exit_code and reason", run)
		}
		if !strings.Contains(e.log(id), "about to fail") {
			t.Errorf("failed run's log lacks its output: %q", e.log(id))
		}
		// Asked again at once: backed off, no second run.
		st := e.pollUntilOutcome(watch.OutcomeBackoff)
		if n := len(e.runsFor(bad)); n != 1 {
			t.Errorf("%d runs of the failing commit right after the failure, want 1", n)
		}
		retry, _ := st["retry"].(map[string]any)
		next1 := watchParseTime(t, retry["next_attempt_at"])
		if want := watchParseTime(t, run["finished_at"]).Add(watchE2EPollPeriod); !next1.Equal(want) {
			t.Errorf("first retry at %s, want one poll period after the failure (%s)", next1, want)
		}
		time.Sleep(time.Until(next1))
		_, run2 := e.pollAndWaitAttempt(bad, 2)
		if run2["status"] != watch.RunFailed {
			t.Errorf("retry = %v, want failed again", run2)
		}
		retry, _ = e.status()["retry"].(map[string]any)
		if want := watchParseTime(t, run2["finished_at"]).Add(2 * watchE2EPollPeriod); !watchParseTime(t, retry["next_attempt_at"]).Equal(want) {
			t.Errorf("second retry at %v, want the delay doubled (%s)", retry["next_attempt_at"], want)
		}
		if fmt.Sprint(retry["consecutive_failures"]) != "2" {
			t.Errorf("consecutive_failures = %v, want 2", retry["consecutive_failures"])
		}
		if ls := e.status()["last_successful_commit"]; ls != good {
			t.Errorf("a failing commit became the last successful: %v", ls)
		}
		e.noLeftovers()
	})

	t.Run("a command outliving its timeout is killed with reason timeout", func(t *testing.T) {
		e.configure(map[string]any{"run_timeout": "4s"})
		slow := e.commit("slow\n", "echo sleeping; sleep 300", 0, 1)
		_, run := e.pollAndWait(slow, watch.RunFailed)
		if run["reason"] != container.ReasonTimeout {
			t.Errorf("timed-out run = %v, want reason %q", run, container.ReasonTimeout)
		}
		e.noLeftovers()
		e.configure(map[string]any{"run_timeout": "120s"})
	})

	t.Run("cancel of a running run removes its container; a poll meanwhile starts nothing", func(t *testing.T) {
		long := e.commit("long\n", "echo long run started; sleep 300", 0, 2)
		id := e.pollAndWaitLog(long, "long run started")

		// A poll during the run answers at once, naming the run, and
		// starts no second run.
		resp := e.pollOnce()
		if resp["current_run"] != id || !strings.Contains(fmt.Sprint(resp["message"]), "in progress") {
			t.Errorf("poll during the run answered %v, want the run %s in progress", resp, id)
		}
		if n := len(e.runsFor(long)); n != 1 {
			t.Errorf("%d runs of one commit after a poll during its run", n)
		}
		if found := e.containers(); len(found) != 1 {
			t.Errorf("%d containers of the mount during the run, want 1", len(found))
		}

		s, err := e.vault.Client.Logical().Write(vaulttest.MountPath+"/runs/"+id+"/cancel", nil)
		if err != nil {
			t.Fatalf("cancel: %v", err)
		}
		if s.Data["status"] != watch.RunCanceled {
			t.Errorf("cancel answered %v, want status canceled", s.Data)
		}
		e.noLeftovers()
		st := e.status()
		if retry, _ := st["retry"].(map[string]any); retry["held_after_cancel"] != true {
			t.Errorf("status after cancel: %v", st)
		}
	})

	// A reload is a handover: the old plugin leaves the container running
	// and the new one re-attaches to the same run (before the handover, a
	// reload killed the container and ran the commit again).
	t.Run("plugin reload during a run: the same run re-attached, one container, every line once", func(t *testing.T) {
		c := e.commit("reloaded\n", "echo reload begin; for i in $(seq 1 8); do echo line $i; sleep 1; done; echo reload end", 0, 1)
		first := e.pollAndWaitLog(c, "reload begin")
		before := e.containers()
		if len(before) != 1 {
			t.Fatalf("containers of the mount before the reload: %+v, want the run's", before)
		}
		e.vault.ReloadPlugin(t)
		deadline := time.Now().Add(2 * time.Minute)
		for e.status()["last_successful_commit"] != c {
			if time.Now().After(deadline) {
				t.Fatalf("the commit was not completed after the reload; runs: %v\nstatus: %v\n%s", e.runsFor(c), e.status(), lastLines(e.vault.Log(), 40))
			}
			time.Sleep(300 * time.Millisecond)
		}
		runs := e.runsFor(c)
		if len(runs) != 1 || runs[first]["status"] != watch.RunSucceeded || runs[first]["container_id"] != before[0].ID {
			t.Errorf("runs of the reloaded commit: %v, want only run %s, succeeded in container %s", runs, first, before[0].ID)
		}
		ls, err := e.vault.Client.Logical().Read(vaulttest.MountPath + "/configure/last_successful_commit")
		if err != nil {
			t.Fatal(err)
		}
		if ls.Data["commit"] != c || ls.Data["run_id"] != first {
			t.Errorf("last_successful_commit = %v, want %s from run %s", ls.Data, c, first)
		}
		log := e.log(first)
		for _, l := range []string{"reload begin", "line 1", "line 2", "line 3", "line 4", "line 5", "line 6", "line 7", "line 8", "reload end"} {
			if n := strings.Count(log, l+"\n"); n != 1 {
				t.Errorf("%q is %d times in the run's log, want once:\n%s", l, n, log)
			}
		}
		if !strings.Contains(e.vault.Log(), "left running for the next active node") {
			t.Errorf("the reloaded plugin did not log that it left the run running:\n%s", lastLines(e.vault.Log(), 40))
		}
		e.noLeftovers()
	})

	t.Run("force-push is refused naming the recovery path, which works", func(t *testing.T) {
		e.repo.Reset(t, good)
		rewritten := e.commit("rewritten\n", "echo rewritten history", 0, 1)
		st := e.pollUntilOutcome(watch.OutcomeRefused)
		if res := fmt.Sprint(st["last_poll_result"]); !strings.Contains(res, "not an ancestor") || !strings.Contains(res, "configure/last_successful_commit") {
			t.Errorf("force-push refusal does not name the recovery path: %q", res)
		}
		if runs := e.runsFor(rewritten); len(runs) != 0 {
			t.Errorf("a force-pushed commit ran: %v", runs)
		}
		if _, err := e.vault.Client.Logical().Write(vaulttest.MountPath+"/configure/last_successful_commit", map[string]any{"commit": good}); err != nil {
			t.Fatalf("set last_successful_commit: %v", err)
		}
		id, _ := e.pollAndWait(rewritten, watch.RunSucceeded)
		if !strings.Contains(e.log(id), "rewritten history") {
			t.Errorf("log = %q", e.log(id))
		}
		e.noLeftovers()
	})
}

func newWatchE2E(t *testing.T) *watchE2E {
	t.Helper()
	docker := dockertest.Runner(t)
	git := gittest.NewServer(t)
	srv := vaulttest.NewServer(t, &vaulttest.Options{Env: []string{cacheDirEnv + "=" + t.TempDir()}})
	return newWatchE2EOn(t, git, srv, docker, "alice", "bob", "carol")
}

// newWatchE2EOn is a watchE2E on srv: the repository "ops" on git, a trusted
// key for each of signers, and the git credential.
func newWatchE2EOn(t *testing.T, git *gittest.Server, srv *vaulttest.Server, docker *container.Docker, signers ...string) *watchE2E {
	t.Helper()
	e := &watchE2E{t: t, vault: srv, repo: git.NewRepo(t, "ops"), gitSrv: git, docker: docker}
	for _, name := range signers {
		k := pgptest.NewKey(t, name)
		e.keys = append(e.keys, k)
		e.write(fmt.Sprintf("configure/trusted_pgp_public_key/%s", name), map[string]any{"public_key": k.PublicArmored(t)})
	}
	e.write("configure/git_credential", map[string]any{"username": git.Username(), "password": git.Password()})
	return e
}

// configureLongRun configures the watch of the tests whose run outlives a
// plugin or a node (2 signatures, sh /git/step.sh, a 300 s run_timeout) and
// records the mount id. A run's container outlives a failed test; what is
// left is removed at cleanup.
func (e *watchE2E) configureLongRun(image string) {
	e.t.Helper()
	initial := e.repo.Commit(e.t, map[string]string{"hello.txt": "base\n", "step.sh": "echo base\n"}, gittest.Message("base"))
	e.configure(map[string]any{
		"git_repo_url":    e.repo.URL(),
		"git_branch_name": "main",
		"git_poll_period": fmt.Sprintf("%ds", int(watchE2EPollPeriod.Seconds())),
		"required_number_of_verified_signatures_on_commit": 2,
		"initial_last_successful_commit":                   initial,
		"docker_image":                                     image,
		"commands":                                         []string{"sh /git/step.sh"},
		"run_timeout":                                      "300s",
		"memory_limit":                                     "64m",
		"network_mode":                                     "none",
	})
	e.mountID, _ = e.status()["mount_id"].(string)
	if e.mountID == "" {
		e.t.Fatal("status has no mount_id")
	}
	docker, mount := e.docker, e.mountID
	e.t.Cleanup(func() {
		found, _ := docker.Find(context.Background(), map[string]string{watch.LabelMount: mount})
		for _, f := range found {
			_ = docker.Remove(context.Background(), f.ID)
		}
	})
}

// commit pushes hello.txt and step.sh, signed in the commit by the first
// signer and in git notes by the others (key indexes into e.keys).
func (e *watchE2E) commit(hello, step string, signers ...int) string {
	e.t.Helper()
	var opts []gittest.CommitOption
	if len(signers) > 0 {
		opts = append(opts, gittest.SignKey(e.keys[signers[0]]))
	}
	c := e.repo.Commit(e.t, map[string]string{"hello.txt": hello, "step.sh": step + "\n"}, opts...)
	for _, k := range signers[min(1, len(signers)):] {
		e.repo.NoteSignature(e.t, c, e.keys[k])
	}
	return c
}

func (e *watchE2E) write(path string, data map[string]any) {
	e.t.Helper()
	if _, err := e.vault.Client.Logical().Write(vaulttest.MountPath+"/"+path, data); err != nil {
		e.t.Fatalf("write %s: %v", path, err)
	}
}

func (e *watchE2E) configure(data map[string]any) { e.t.Helper(); e.write("configure", data) }

func (e *watchE2E) status() map[string]any {
	e.t.Helper()
	s, err := e.vault.Client.Logical().Read(vaulttest.MountPath + "/status")
	if err != nil || s == nil {
		e.t.Fatalf("read status: %v", err)
	}
	return s.Data
}

// pollOnce writes poll, asking again while rate-limited.
func (e *watchE2E) pollOnce() map[string]any {
	e.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		s, err := e.vault.Client.Logical().Write(vaulttest.MountPath+"/poll", nil)
		var re *api.ResponseError
		switch {
		case err == nil:
			return s.Data
		case errors.As(err, &re) && re.StatusCode == 429 && time.Now().Before(deadline):
			time.Sleep(250 * time.Millisecond)
		default:
			e.t.Fatalf("poll: %v", err)
		}
	}
}

// pollUntilOutcome polls and waits for that poll's outcome.
func (e *watchE2E) pollUntilOutcome(want string) map[string]any {
	e.t.Helper()
	before := e.status()["last_poll_at"]
	e.pollOnce()
	deadline := time.Now().Add(time.Minute)
	for {
		st := e.status()
		if st["last_poll_at"] != before && st["worker"] == "idle" {
			if st["last_poll_outcome"] != want {
				e.t.Fatalf("poll outcome %v (%v), want %s", st["last_poll_outcome"], st["last_poll_result"], want)
			}
			return st
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("no poll outcome within a minute; status %v", st)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// runsFor returns the runs of commit by id.
func (e *watchE2E) runsFor(commit string) map[string]map[string]any {
	e.t.Helper()
	list, err := e.vault.Client.Logical().List(vaulttest.MountPath + "/runs")
	if err != nil {
		e.t.Fatalf("list runs: %v", err)
	}
	out := map[string]map[string]any{}
	if list == nil {
		return out
	}
	info, _ := list.Data["key_info"].(map[string]any)
	for id, v := range info {
		if r, _ := v.(map[string]any); r["commit"] == commit {
			s, err := e.vault.Client.Logical().Read(vaulttest.MountPath + "/runs/" + id)
			if err != nil || s == nil {
				e.t.Fatalf("read run %s: %v", id, err)
			}
			out[id] = s.Data
		}
	}
	return out
}

// waitRun waits until a run of commit satisfies ok.
func (e *watchE2E) waitRun(commit, what string, ok func(id string, r map[string]any) bool) (string, map[string]any) {
	e.t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for time.Now().Before(deadline) {
		for id, r := range e.runsFor(commit) {
			if ok(id, r) {
				return id, r
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	e.t.Fatalf("no run of %s %s within 2 minutes; runs %v; status %v\n%s", commit, what, e.runsFor(commit), e.status(), lastLines(e.vault.Log(), 30))
	return "", nil
}

func (e *watchE2E) pollAndWait(commit, status string) (string, map[string]any) {
	e.t.Helper()
	e.pollOnce()
	return e.waitRun(commit, "ending "+status, func(_ string, r map[string]any) bool {
		if (&watch.Run{Status: fmt.Sprint(r["status"])}).Finished() && r["status"] != status {
			e.t.Fatalf("run of %s ended %v, want %s: %v", commit, r["status"], status, r)
		}
		return r["status"] == status
	})
}

func (e *watchE2E) pollAndWaitAttempt(commit string, attempt int) (string, map[string]any) {
	e.t.Helper()
	e.pollOnce()
	return e.waitRun(commit, fmt.Sprintf("attempt %d finished", attempt), func(_ string, r map[string]any) bool {
		return fmt.Sprint(r["attempt"]) == fmt.Sprint(attempt) && (&watch.Run{Status: fmt.Sprint(r["status"])}).Finished()
	})
}

// pollAndWaitLog waits for a running run of commit whose log shows text.
func (e *watchE2E) pollAndWaitLog(commit, text string) string {
	e.t.Helper()
	e.pollOnce()
	id, _ := e.waitRun(commit, "running and logging "+text, func(id string, r map[string]any) bool {
		return r["status"] == watch.RunRunning && strings.Contains(e.log(id), text)
	})
	return id
}

// log reads the whole log of a run, page by page.
func (e *watchE2E) log(id string) string {
	e.t.Helper()
	var b strings.Builder
	offset := 0
	for {
		s, err := e.vault.Client.Logical().ReadWithData(vaulttest.MountPath+"/runs/"+id+"/log", map[string][]string{
			"offset": {fmt.Sprint(offset)}, "limit": {"4096"},
		})
		if err != nil || s == nil {
			e.t.Fatalf("read log of %s: %v", id, err)
		}
		b.WriteString(fmt.Sprint(s.Data["log"]))
		n, ok := s.Data["next_offset"].(json.Number)
		if !ok {
			e.t.Fatalf("log of %s: next_offset is %T", id, s.Data["next_offset"])
		}
		next, err := strconv.Atoi(n.String())
		if err != nil {
			e.t.Fatal(err)
		}
		if next == offset {
			return b.String()
		}
		offset = next
	}
}

func (e *watchE2E) containers() []container.Found {
	e.t.Helper()
	found, err := e.docker.Find(context.Background(), map[string]string{watch.LabelMount: e.mountID})
	if err != nil {
		e.t.Fatalf("listing the mount's containers: %v", err)
	}
	return found
}

func (e *watchE2E) noLeftovers() {
	e.t.Helper()
	dockertest.NoLeftovers(e.t, e.docker, map[string]string{watch.LabelMount: e.mountID})
}

func watchParseTime(t *testing.T, v any) time.Time {
	t.Helper()
	ts, err := time.Parse(time.RFC3339Nano, fmt.Sprint(v))
	if err != nil {
		t.Fatalf("not a time: %v", v)
	}
	return ts
}

// read answers the data of a read of path under the mount.
func (e *watchE2E) read(path string) map[string]any {
	e.t.Helper()
	s, err := e.vault.Client.Logical().Read(vaulttest.MountPath + "/" + path)
	if err != nil || s == nil {
		e.t.Fatalf("read %s: %v", path, err)
	}
	return s.Data
}

// TestE2EUnmountStopsTheRun: disabling the mount is the one Clean that is
// not a handover (Vault taints the mount first): the run's container is
// killed and removed, not left running for an owner that will never come.
func TestE2EUnmountStopsTheRun(t *testing.T) {
	e := newWatchE2E(t)
	base := e.repo.Commit(t, map[string]string{"hello.txt": "base\n", "step.sh": "echo base\n"}, gittest.Message("base"))
	e.configure(map[string]any{
		"git_repo_url": e.repo.URL(), "git_poll_period": fmt.Sprintf("%ds", int(watchE2EPollPeriod.Seconds())),
		"required_number_of_verified_signatures_on_commit": 1, "initial_last_successful_commit": base,
		"docker_image": dockertest.Image(t, e.docker), "commands": []string{"sh /git/step.sh"}, "run_timeout": "300s",
	})
	e.mountID, _ = e.status()["mount_id"].(string)
	t.Cleanup(func() { // what a failure left
		for _, f := range e.containers() {
			_ = e.docker.Remove(context.Background(), f.ID)
		}
	})
	c := e.commit("unmounted\n", "echo unmount begin; sleep 120", 0)
	e.pollAndWaitLog(c, "unmount begin")
	if got := e.containers(); len(got) != 1 {
		t.Fatalf("containers of the mount before the unmount: %+v", got)
	}
	if err := e.vault.Client.Sys().UnmountWithContext(t.Context(), vaulttest.MountPath); err != nil {
		t.Fatalf("disabling the mount: %v", err)
	}
	// Clean stops the worker before the disable returns.
	if got := e.containers(); len(got) != 0 {
		t.Errorf("containers of the mount after it was disabled: %+v, want none\n%s", got, lastLines(e.vault.Log(), 30))
	}
	if strings.Contains(e.vault.Log(), "left running for the next active node") {
		t.Errorf("the unmount was taken for a handover:\n%s", lastLines(e.vault.Log(), 30))
	}
}
