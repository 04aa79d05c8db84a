package backend

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"
	"github.com/moby/moby/client"

	"github.com/flant/flant_gitops/backend/receiver"
	"github.com/flant/flant_gitops/backend/receiver/receivertest"
	"github.com/flant/flant_gitops/backend/vaulttest"
	"github.com/flant/flant_gitops/backend/watch"
	"github.com/flant/flant_gitops/container"
	"github.com/flant/flant_gitops/container/dockertest"
	"github.com/flant/flant_gitops/gitwatch/gittest"
)

// haSlowLines is how many lines the slow run prints, one a second, so that a
// takeover happens while it runs and lines are printed during it.
const haSlowLines = 20

// haReattachNote is the start of the note a re-attaching node puts into the
// run's log (worker_poll.go reattach).
const haReattachNote = "[flant_gitops: the plugin restarted"

// TestE2EHACluster runs the plugin on a 3-node Raft cluster of real Vault
// servers that share this machine's Docker engine: requests through a
// standby, kill -9 of the active node mid-run, and a step-down mid-run. The
// cluster and the watch configuration are shared; each subtest uses its own
// commit and can run alone (-run 'TestE2EHACluster/kill').
func TestE2EHACluster(t *testing.T) {
	docker := dockertest.Runner(t)
	image := dockertest.Image(t, docker)
	// Each node has its own mirror cache, as on separate machines.
	var nodeEnv [][]string
	for range 3 {
		nodeEnv = append(nodeEnv, []string{cacheDirEnv + "=" + t.TempDir()})
	}
	cluster := vaulttest.NewCluster(t, &vaulttest.ClusterOptions{NodeEnv: nodeEnv})

	base := haWatchSetup(t, cluster, docker, image)
	git := base.gitSrv
	// One engine for every node, configured in Vault and reached through
	// mutual TLS: the setting is replicated, so whichever node becomes
	// active reaches the same containers.
	proxy := dockertest.NewTLSProxy(t)
	base.write("configure/docker_engine", engineFields(proxy))
	if e, _ := base.status()["engine"].(map[string]any); e["host"] != proxy.URL || e["reachable"] != true {
		t.Fatalf("status engine after configure/docker_engine: %v", e)
	}

	t.Run("patch and poll through a standby", func(t *testing.T) {
		standby := cluster.Standbys(t)[0]
		e := base.on(t, standby)

		// Patch: a CI job logs in and patches through the standby.
		remote := git.NewRepo(t, "infra")
		remote.Commit(t, map[string]string{"my-group/my-project/release.yml": "image:\n  tag: \"1.0.0\" # set by CI\n"}, gittest.Message("initial"))
		issuer := vaulttest.SetUpCIPatch(t, cluster.Leader(t).Client, vaulttest.CIPatch{
			Issuer: haIssuer, Audience: haAudience,
			Repository: "infra", URL: remote.URL(), Username: git.Username(), Password: git.Password(),
		})
		ci := haCILogin(t, issuer, standby.Client)
		s, err := ci.Logical().WriteWithContext(t.Context(), vaulttest.MountPath+"/patch/infra", map[string]any{
			"commit": map[string]any{"message": "Bump image through a standby"},
			"commands": []any{map[string]any{"path": "my-group/my-project/release.yml",
				"setField": map[string]any{"field": "image.tag", "value": "1.0.1"}}},
		})
		if err != nil || s == nil {
			t.Fatalf("patch through standby %s: %v", standby.ID, err)
		}
		if head := remote.Head(t); s.Data["commit"] != head || s.Data["no_op"] != false {
			t.Fatalf("patch through standby %s answered %v; the server's head is %s", standby.ID, s.Data, head)
		}
		got, err := exec.Command("git", "-C", remote.Dir, "show", fmt.Sprint(s.Data["commit"])+":my-group/my-project/release.yml").CombinedOutput()
		if err != nil || !strings.Contains(string(got), `tag: "1.0.1" # set by CI`) {
			t.Errorf("release.yml after the patch (%v):\n%s", err, got)
		}

		// Poll: answered by the standby (forwarded), and the run it
		// starts is visible through it.
		c := e.commit("through a standby\n", "echo polled through a standby", 0, 1)
		if resp := e.pollOnce(); resp["message"] == nil {
			t.Errorf("poll through standby %s answered %v", standby.ID, resp)
		}
		id, _ := e.waitRun(c, "succeeded", func(_ string, r map[string]any) bool { return r["status"] == watch.RunSucceeded })
		if log := e.log(id); !strings.Contains(log, "polled through a standby") {
			t.Errorf("run log read through the standby: %q", log)
		}
		if st := e.status(); st["last_successful_commit"] != c {
			t.Errorf("status through the standby: %v", st)
		}
	})

	t.Run("a webhook delivered to a standby wakes the active node's poll", func(t *testing.T) {
		standby := cluster.Standbys(t)[0]
		e := base.on(t, standby)
		tuneHooks(t, cluster.Leader(t).Client)
		s, err := standby.Client.Logical().WriteWithContext(t.Context(), vaulttest.MountPath+"/configure/receiver/generic", map[string]any{"provider": "generic"})
		if err != nil || s == nil {
			t.Fatalf("creating a receiver through standby %s: %v", standby.ID, err)
		}
		token, _ := s.Data["token"].(string)
		c := e.commit("delivered to a standby\n", "echo woken through a standby", 0, 1)
		req, err := receivertest.Push(t, receiver.Generic, "refs/heads/main", c, token).Request(standby.Client.Address() + fmt.Sprint(s.Data["url_path"]))
		if err != nil {
			t.Fatal(err)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("delivering to standby %s: %v", standby.ID, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `"accepted":true`) {
			t.Fatalf("delivery to standby %s: %d %s", standby.ID, resp.StatusCode, body)
		}
		_, run := e.waitRun(c, "succeeded", func(_ string, r map[string]any) bool { return r["status"] == watch.RunSucceeded })
		if run["trigger"] != "webhook" {
			t.Errorf("the run was started by %v, want the webhook", run["trigger"])
		}
	})

	t.Run("kill -9 of the active node mid-run: re-attached, every line logged once", func(t *testing.T) {
		var killed *vaulttest.Node
		cid := haTakeover(t, cluster, base, "kill -9", func(t *testing.T) *vaulttest.Node {
			killed = cluster.Leader(t)
			killed.Kill9(t)
			return killed
		}, func(t *testing.T) {
			// The cluster is whole again for what follows; the run goes
			// on meanwhile.
			start := time.Now()
			killed.Restart(t)
			cluster.WaitHealthy(t)
			t.Logf("%s restarted and rejoined in %s", killed.ID, time.Since(start).Round(time.Millisecond))
		})
		if !slices.Contains(proxy.Created(), cid) {
			t.Errorf("the run's container %q was not created through the configured engine (created there: %v)", cid, proxy.Created())
		}
	})

	t.Run("step-down of the active node mid-run: re-attached, not run again", func(t *testing.T) {
		cid := haTakeover(t, cluster, base, "step-down", func(t *testing.T) *vaulttest.Node {
			return cluster.StepDown(t)
		}, nil)
		if !slices.Contains(proxy.Created(), cid) {
			t.Errorf("the run's container %q was not created through the configured engine (created there: %v)", cid, proxy.Created())
		}
	})
}

// on is a copy of the watch helpers for subtest t, talking to node n.
func (e *watchE2E) on(t *testing.T, n *vaulttest.Node) *watchE2E {
	c := *e
	c.t, c.vault = t, n.Server
	return &c
}

// haTakeover starts a slow run, disrupts the active node mid-run (disrupt
// returns the node that was active) and checks that the next active node
// finished that same run: one run, succeeded, one container ever, every line
// in its log once. after, if set, runs once the re-attach was seen.
func haTakeover(t *testing.T, cluster *vaulttest.Cluster, base *watchE2E, what string, disrupt func(*testing.T) *vaulttest.Node, after func(*testing.T)) (containerID string) {
	leader := cluster.Leader(t)
	e := base.on(t, leader)
	script := fmt.Sprintf("for i in $(seq 1 %d); do echo line $i; sleep 1; done", haSlowLines)
	creates := watchContainerCreates(t, e)
	commit := e.commit(what+"\n", script, 0, 1)
	id := e.pollAndWaitLog(commit, "line 3")

	start := time.Now()
	old := disrupt(t)
	next := cluster.WaitLeaderChange(t, old)
	active := time.Since(start)
	t.Logf("%s of %s: %s active after %s", what, old.ID, next.ID, active.Round(time.Millisecond))
	e = base.on(t, next)

	// Wait for the re-attach note (or for the run to be settled some other
	// way, which the checks below then report).
	reattached := haWaitReattach(t, next.Client, id, commit)
	if !reattached.IsZero() {
		t.Logf("%s: the re-attach note was readable in runs/%s/log %s after the %s (%s after %s was active)",
			what, id, reattached.Sub(start).Round(time.Millisecond), what, reattached.Sub(start.Add(active)).Round(time.Millisecond), next.ID)
	}
	if at, ok := haLogTime(next.Log(), "re-attaching to the container of an unfinished run", start); ok {
		t.Logf("%s: %s logged its re-attach %s after the %s", what, next.ID, at.Sub(start).Round(time.Millisecond), what)
	}
	if at, ok := haLogTime(next.Log(), "enabling active operation", start); ok {
		t.Logf("%s: %s logged taking the active role %s after the %s", what, next.ID, at.Sub(start).Round(time.Millisecond), what)
	}
	if at, ok := haLogTime(old.Log(), "left running for the next active node", start); ok {
		t.Logf("%s: %s logged leaving the run's container running %s after the %s", what, old.ID, at.Sub(start).Round(time.Millisecond), what)
	}
	haLogStatus(t, e, what+", after the re-attach")
	if after != nil {
		after(t)
	}

	// The commit completes, whichever way.
	deadline := time.Now().Add(2 * time.Minute)
	for e.status()["last_successful_commit"] != commit {
		if time.Now().After(deadline) {
			t.Fatalf("the commit was not completed within 2 minutes of the %s; runs %v; status %v", what, e.runsFor(commit), e.status())
		}
		time.Sleep(300 * time.Millisecond)
	}

	runs := e.runsFor(commit)
	if len(runs) != 1 || runs[id] == nil || runs[id]["status"] != watch.RunSucceeded {
		var b strings.Builder
		for rid, r := range runs {
			fmt.Fprintf(&b, "\n  %s: %v (%v), attempt %v", rid, r["status"], r["reason"], r["attempt"])
		}
		t.Errorf("runs of the commit after the %s:%s\nwant only run %s, succeeded", what, b.String(), id)
	}
	if created := creates.created(t, watch.LabelRun, id); len(created) != 1 {
		t.Errorf("containers ever created for run %s: %d %v, want 1", id, len(created), created)
	}
	if all := creates.created(t, watch.LabelCommit, commit); len(all) != 1 {
		t.Errorf("containers ever created for commit %s: %d %v, want 1", commit, len(all), all)
	}
	log := e.log(id)
	count := map[string]int{}
	for line := range strings.SplitSeq(log, "\n") {
		count[line]++
	}
	for i := 1; i <= haSlowLines; i++ {
		if n := count[fmt.Sprintf("line %d", i)]; n != 1 {
			t.Errorf("%q is %d times in the run's log, want once", fmt.Sprintf("line %d", i), n)
		}
	}
	if t.Failed() {
		t.Logf("log of run %s:\n%s", id, log)
	}
	e.noLeftovers()
	containerID, _ = runs[id]["container_id"].(string)
	return containerID
}

// haLogStatus logs the status an operator reads at this point, for the
// closing note on what each case looks like.
func haLogStatus(t *testing.T, e *watchE2E, when string) map[string]any {
	t.Helper()
	st := e.status()
	delete(st, "trusted_key_problems")
	out, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("status (%s):\n%s", when, out)
	return st
}

// haWaitReattach polls runs/ID/log through c until the re-attach note is
// there and returns when it was seen; it returns the zero time when the run
// (or the commit, through another run) settled without one. Reads fail for
// a moment while the new active node sets up its mounts, so errors are
// retried.
func haWaitReattach(t *testing.T, c *api.Client, id, commit string) time.Time {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	var last error
	for time.Now().Before(deadline) {
		// The first page is the whole of this short log.
		s, err := c.Logical().ReadWithContext(t.Context(), vaulttest.MountPath+"/runs/"+id+"/log")
		if err == nil && s != nil && strings.Contains(fmt.Sprint(s.Data["log"]), haReattachNote) {
			return time.Now()
		}
		last = err
		if err == nil {
			r, err := c.Logical().ReadWithContext(t.Context(), vaulttest.MountPath+"/runs/"+id)
			if err == nil && r != nil && (&watch.Run{Status: fmt.Sprint(r.Data["status"])}).Finished() {
				t.Logf("run %s ended %v (%v) without a re-attach", id, r.Data["status"], r.Data["reason"])
				return time.Time{}
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Errorf("no re-attach of run %s (commit %s) within 2 minutes (last error: %v)", id, commit, last)
	return time.Time{}
}

// containerCreates follows the engine's create events of one mount's
// containers from the moment it is made, so containers already removed count
// too; it reads them live rather than from the engine's short event buffer,
// which a busy machine can roll over during a run.
type containerCreates struct {
	cancel context.CancelFunc
	done   chan struct{}
	mu     sync.Mutex
	seen   []map[string]string // the labels of each created container, with "id"
	err    error
}

func watchContainerCreates(t *testing.T, e *watchE2E) *containerCreates {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	c := &containerCreates{cancel: cancel, done: make(chan struct{})}
	t.Cleanup(c.stop)
	since := time.Now()
	res := e.docker.Client().Events(ctx, client.EventsListOptions{
		Since:   fmt.Sprintf("%d.%09d", since.Unix(), since.Nanosecond()),
		Filters: make(client.Filters).Add("type", "container").Add("event", "create").Add("label", watch.LabelMount+"="+e.mountID),
	})
	go func() {
		defer close(c.done)
		for {
			select {
			case m := <-res.Messages:
				attrs := maps.Clone(m.Actor.Attributes)
				if attrs == nil {
					attrs = map[string]string{}
				}
				attrs["id"] = m.Actor.ID
				c.mu.Lock()
				c.seen = append(c.seen, attrs)
				c.mu.Unlock()
			case err := <-res.Err:
				if err != nil && !errors.Is(err, io.EOF) && ctx.Err() == nil {
					c.mu.Lock()
					c.err = err
					c.mu.Unlock()
				}
				return
			}
		}
	}()
	return c
}

func (c *containerCreates) stop() {
	c.cancel()
	<-c.done
}

// created returns the ids of the containers created so far whose label is
// value; the engine's event for a create reaches the stream within moments,
// so it is read after the run has ended.
func (c *containerCreates) created(t *testing.T, label, value string) []string {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		t.Fatalf("reading the engine's container events: %v", c.err)
	}
	var ids []string
	for _, attrs := range c.seen {
		if attrs[label] == value {
			ids = append(ids, attrs["id"])
		}
	}
	return ids
}

// haLogTime returns the time of the first line of a Vault log at or after
// from that contains needle.
func haLogTime(log, needle string, from time.Time) (time.Time, bool) {
	sc := bufio.NewScanner(strings.NewReader(log))
	sc.Buffer(make([]byte, 0, 64*1024), 1024*1024)
	for sc.Scan() {
		line := sc.Text()
		if !strings.Contains(line, needle) {
			continue
		}
		stamp, _, _ := strings.Cut(line, " ")
		at, err := time.Parse(time.RFC3339Nano, stamp)
		if err == nil && !at.Before(from.Truncate(time.Millisecond)) {
			return at, true
		}
	}
	return time.Time{}, false
}

// haWatchSetup configures the mount's watch on the cluster for the HA tests
// (configureLongRun) with two trusted keys and the git credential.
func haWatchSetup(t *testing.T, cluster *vaulttest.Cluster, docker *container.Docker, image string) *watchE2E {
	t.Helper()
	base := newWatchE2EOn(t, gittest.NewServer(t), cluster.Leader(t).Server, docker, "alice", "bob")
	base.configureLongRun(image)
	return base
}

const (
	haIssuer   = "https://gitlab.example.com"
	haAudience = "https://vault.example.com"
)

// haCILogin logs a CI job of my-group/my-project in through node's client,
// as `vault write auth/jwt/login` in the job would.
func haCILogin(t *testing.T, issuer *vaulttest.JWTIssuer, node *api.Client) *api.Client {
	t.Helper()
	c, err := node.Clone()
	if err != nil {
		t.Fatal(err)
	}
	c.ClearToken()
	jwt := issuer.Token(t, haAudience, vaulttest.GitLabClaims("my-group/my-project", "main", "branch"))
	s, err := c.Logical().WriteWithContext(t.Context(), "auth/jwt/login", map[string]any{"role": "gitlab-ci", "jwt": jwt})
	if err != nil || s == nil || s.Auth == nil {
		t.Fatalf("CI login through %s: %v", node.Address(), err)
	}
	c.SetToken(s.Auth.ClientToken)
	return c
}
