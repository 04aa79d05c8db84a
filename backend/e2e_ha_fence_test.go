package backend

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/flant/flant_gitops/backend/vaulttest"
	"github.com/flant/flant_gitops/backend/watch"
	"github.com/flant/flant_gitops/container"
	"github.com/flant/flant_gitops/container/dockertest"
)

// haOtherEngine is the id the mTLS proxy answers for the second engine.
const haOtherEngine = "flant-gitops-test-engine-b"

// TestE2EHAFencing runs the plugin on a 3-node Raft cluster whose nodes do
// NOT share a Docker engine: node1 (the first active node) uses this
// machine's engine; node2 and node3 reach, through DOCKER_HOST, the mTLS proxy
// pretending to be another engine, which cannot see node1's containers.
// kill -9 of node1 mid-run: the new active node cannot find the run's
// container and must not start a second one while the first may still run;
// status shows the fence; after the first container ended, an operator's
// `poll retry=true` marks the run interrupted and the commit runs again.
func TestE2EHAFencing(t *testing.T) {
	docker := dockertest.Runner(t)
	image := dockertest.Image(t, docker)
	realEngine, err := docker.EngineID(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	proxy := dockertest.NewTLSProxy(t)
	proxy.SimulateOtherEngine(haOtherEngine)
	// DOCKER_CERT_PATH holds the client's PEMs under Docker's file names.
	certs := t.TempDir()
	for name, pem := range map[string][]byte{"ca.pem": proxy.CAPEM, "cert.pem": proxy.ClientCertPEM, "key.pem": proxy.ClientKeyPEM} {
		if err := os.WriteFile(filepath.Join(certs, name), pem, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	nodeEnv := [][]string{{cacheDirEnv + "=" + t.TempDir()}}
	for range 2 {
		nodeEnv = append(nodeEnv, []string{cacheDirEnv + "=" + t.TempDir(),
			"DOCKER_HOST=" + proxy.URL, "DOCKER_TLS_VERIFY=1", "DOCKER_CERT_PATH=" + certs})
	}
	cluster := vaulttest.NewCluster(t, &vaulttest.ClusterOptions{NodeEnv: nodeEnv})
	first := cluster.Nodes[0]
	for range 4 {
		if cluster.Leader(t) == first {
			break
		}
		cluster.WaitLeaderChange(t, cluster.StepDown(t))
	}
	if cluster.Leader(t) != first {
		t.Fatalf("%s, the node on this machine's engine, did not become active", first.ID)
	}

	base := haWatchSetup(t, cluster, docker, image)
	e := base.on(t, first)
	if eng, _ := e.status()["engine"].(map[string]any); eng["id"] != realEngine {
		t.Fatalf("status engine on %s: %v, want this machine's engine %s", first.ID, eng, realEngine)
	}

	script := fmt.Sprintf("for i in $(seq 1 %d); do echo line $i; sleep 1; done", haSlowLines)
	commit := e.commit("fenced\n", script, 0, 1)
	id := e.pollAndWaitLog(commit, "line 3")
	if r := e.read("runs/" + id); r["engine_id"] != realEngine {
		t.Fatalf("run %s records engine %v, want %s", id, r["engine_id"], realEngine)
	}
	original := e.containers()
	if len(original) != 1 {
		t.Fatalf("containers of the mount: %+v, want the run's", original)
	}

	start := time.Now()
	first.Kill9(t)
	next := cluster.WaitLeaderChange(t, first)
	t.Logf("kill -9 of %s: %s active after %s", first.ID, next.ID, time.Since(start).Round(time.Millisecond))
	e = base.on(t, next)

	// The new active node fences the run instead of running it again.
	fenced := haWaitStatus(t, next.Client, "fenced", func(st map[string]any) bool { return st["fenced"] != nil })
	t.Logf("kill -9: the fence was in %s's status %s after the kill", next.ID, time.Since(start).Round(time.Millisecond))
	st := haLogStatus(t, e, "kill -9 with different engines: fenced")
	f, _ := st["fenced"].(map[string]any)
	if f["run_id"] != id || f["commit"] != commit || f["engine_id"] != realEngine || f["node_engine_id"] != haOtherEngine || st["last_poll_outcome"] != watch.OutcomeFenced {
		t.Errorf("status fenced = %v (outcome %v), want run %s of %s on %s seen from %s", f, st["last_poll_outcome"], id, commit, realEngine, haOtherEngine)
	}
	if msg := fmt.Sprint(f["message"]); !strings.Contains(msg, "may still be running there") || !strings.Contains(msg, "poll retry=true") {
		t.Errorf("the fence does not tell the operator what happens and how to lift it: %q", msg)
	}
	// The fence never lifts while the old run may still be stopping: its
	// init ends it at its deadline, and the margin covers the kill grace
	// and the nodes' clock skew.
	until := watchParseTime(t, f["until"])
	if until.Sub(fenced) < 4*time.Minute {
		t.Errorf("the fence lifts at %s, want the run's deadline (run_timeout 300s after its start) and the margin", until)
	}
	if labelled := original[0].Deadline; labelled.IsZero() || !until.Equal(labelled.Add(container.DeadlineMargin)) {
		t.Errorf("the fence lifts at %s, want the deadline its container's init keeps (%s) plus %s", until, labelled, container.DeadlineMargin)
	}

	// Polls while fenced start nothing: one container of the mount on the
	// real engine (the first, still running), none through the proxy.
	for range 3 {
		e.pollOnce()
		time.Sleep(watchE2EPollPeriod)
		if got := e.containers(); len(got) != 1 || got[0].ID != original[0].ID || len(proxy.Created()) != 0 {
			t.Fatalf("while fenced: containers %+v, created through the other engine %v; want only %s", got, proxy.Created(), original[0].ID)
		}
	}
	if r := e.read("runs/" + id); r["status"] != watch.RunRunning {
		t.Errorf("the fenced run is %v, want still running", r["status"])
	}

	// The operator checks that the first container ended (the orphaned
	// plugin of the killed node left it to run out) and retries.
	haWaitContainerExited(t, docker, original[0].ID)
	retried := time.Now()
	haPollRetry(t, next.Client)
	rerun, _ := e.waitRun(commit, "succeeded after the retry", func(rid string, r map[string]any) bool {
		return rid != id && r["status"] == watch.RunSucceeded
	})
	t.Logf("poll retry=true: the commit ran again and succeeded %s later", time.Since(retried).Round(time.Millisecond))
	haLogStatus(t, e, "kill -9 with different engines: after poll retry=true")

	r := e.read("runs/" + id)
	if reason := fmt.Sprint(r["reason"]); r["status"] != watch.RunInterrupted || !strings.Contains(reason, "started on Docker engine "+realEngine) || !strings.Contains(reason, "retry=true") {
		t.Errorf("the fenced run ended %v (%v), want interrupted saying where it ran and that an operator retried", r["status"], reason)
	}
	if rr := e.read("runs/" + rerun); rr["engine_id"] != haOtherEngine {
		t.Errorf("the re-run: %v, want it on %s", rr, haOtherEngine)
	}
	if st := e.status(); st["fenced"] != nil || st["last_successful_commit"] != commit {
		t.Errorf("status after the retry: %v", st)
	}
	if created := proxy.Created(); len(created) != 1 {
		t.Errorf("containers created through the other engine: %v, want the re-run's", created)
	}
	if err := docker.Remove(context.Background(), original[0].ID); err != nil {
		t.Errorf("removing the first container, which its dead node left: %v", err)
	}
	e.noLeftovers()
}

// haWaitStatus reads status through c until ok; reads fail for a moment while
// a new active node sets up its mounts, so errors are retried.
func haWaitStatus(t *testing.T, c *api.Client, what string, ok func(map[string]any) bool) time.Time {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	var last any
	for time.Now().Before(deadline) {
		s, err := c.Logical().ReadWithContext(t.Context(), vaulttest.MountPath+"/status")
		if err == nil && s != nil && ok(s.Data) {
			return time.Now()
		}
		last = err
		if err == nil && s != nil {
			last = s.Data
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("status did not show %s within 2 minutes; last: %v", what, last)
	return time.Time{}
}

// haWaitContainerExited waits until container id has exited.
func haWaitContainerExited(t *testing.T, docker *container.Docker, id string) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for time.Now().Before(deadline) {
		found, err := docker.Find(t.Context(), map[string]string{})
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range found {
			if f.ID == id && f.State == "exited" {
				return
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("container %s did not exit within 2 minutes", id)
}

// haPollRetry writes `poll retry=true` through c, asking again while
// rate-limited.
func haPollRetry(t *testing.T, c *api.Client) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, err := c.Logical().WriteWithContext(t.Context(), vaulttest.MountPath+"/poll", map[string]any{"retry": true})
		var re *api.ResponseError
		switch {
		case err == nil:
			return
		case errors.As(err, &re) && re.StatusCode == 429 && time.Now().Before(deadline):
			time.Sleep(250 * time.Millisecond)
		default:
			t.Fatalf("poll retry=true: %v", err)
		}
	}
}
