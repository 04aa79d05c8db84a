package backend

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"github.com/flant/flant_gitops/backend/events/notify"
	"github.com/flant/flant_gitops/backend/vaulttest"
	"github.com/flant/flant_gitops/backend/watch"
	"github.com/flant/flant_gitops/container/dockertest"
	"github.com/flant/flant_gitops/gitwatch/gittest"
)

// notifyReceiver is a notification endpoint as the spec asks receivers to
// be: every request is verified with the Standard Webhooks library, which
// also refuses a webhook-timestamp more than 5 minutes off (401); the
// requests are kept raw for the tests' searches.
type notifyReceiver struct {
	t   *testing.T
	srv *httptest.Server

	mu     sync.Mutex
	secret string
	down   bool // answer 503 to every verified request
	got    []notifyRequest
}

type notifyRequest struct {
	header   http.Header
	body     []byte
	code     int
	verified bool
	id, typ  string
	data     map[string]any
}

func newNotifyReceiver(t *testing.T) *notifyReceiver {
	r := &notifyReceiver{t: t}
	r.srv = httptest.NewServer(http.HandlerFunc(r.serve))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *notifyReceiver) serve(w http.ResponseWriter, req *http.Request) {
	body, _ := io.ReadAll(req.Body)
	got := notifyRequest{header: req.Header.Clone(), body: body, id: req.Header.Get(notify.HeaderID)}
	r.mu.Lock()
	defer r.mu.Unlock()
	got.code = http.StatusUnauthorized
	if wh, err := standardwebhooks.NewWebhook(r.secret); err == nil && req.Method == http.MethodPost {
		if err := wh.Verify(body, req.Header); err == nil {
			got.verified = true
		} else {
			r.t.Errorf("a notification fails verification: %v (id %s)", err, got.id)
		}
	}
	var env struct {
		Type string         `json:"type"`
		Data map[string]any `json:"data"`
	}
	if err := json.Unmarshal(body, &env); err == nil {
		got.typ, got.data = env.Type, env.Data
	}
	if got.verified {
		got.code = http.StatusOK
		if r.down {
			got.code = http.StatusServiceUnavailable
		}
	}
	r.got = append(r.got, got)
	w.WriteHeader(got.code)
}

func (r *notifyReceiver) requests() []notifyRequest {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]notifyRequest(nil), r.got...)
}

// waitFor waits for a request that satisfies ok.
func (r *notifyReceiver) waitFor(what string, ok func(notifyRequest) bool) notifyRequest {
	r.t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for time.Now().Before(deadline) {
		for _, q := range r.requests() {
			if ok(q) {
				return q
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	r.t.Fatalf("no notification %s within 2 minutes; got %d requests: %v", what, len(r.requests()), r.summary())
	return notifyRequest{}
}

func (r *notifyReceiver) summary() []string {
	var out []string
	for _, q := range r.requests() {
		out = append(out, fmt.Sprintf("%s %s %v %d", q.id, q.typ, q.data["run"], q.code))
	}
	return out
}

// delivered is a request answered 2xx of type typ for run (or commit).
func delivered(typ, key, value string) func(notifyRequest) bool {
	return func(q notifyRequest) bool { return q.code == http.StatusOK && q.typ == typ && q.data[key] == value }
}

// TestE2ENotifications drives notifications through a real Vault, the
// built plugin, a real git server and real Docker: runs are told started
// and finished, a 503 is retried under the same id, a refusal is told once
// though every poll refuses, an endpoint that hangs delays no run, and a
// notification pending across a plugin reload is still delivered.
func TestE2ENotifications(t *testing.T) {
	e := newWatchE2E(t)
	rec := newNotifyReceiver(t)
	hang := make(chan struct{})
	down := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { <-hang }))
	t.Cleanup(down.Close)
	t.Cleanup(func() { close(hang) })

	base := e.repo.Commit(t, map[string]string{"hello.txt": "base\n", "step.sh": "echo base\n"}, gittest.Message("base"))
	e.configure(map[string]any{
		"git_repo_url":    e.repo.URL(),
		"git_branch_name": "main",
		"git_poll_period": fmt.Sprintf("%ds", int(watchE2EPollPeriod.Seconds())),
		"required_number_of_verified_signatures_on_commit": 2,
		"initial_last_successful_commit":                   base,
		"docker_image":                                     dockertest.Image(t, e.docker),
		"commands":                                         []string{"sh /git/step.sh"},
		"run_timeout":                                      "120s",
		"network_mode":                                     "none",
	})
	created, err := e.vault.Client.Logical().Write(vaulttest.MountPath+"/configure/notification/relay", map[string]any{"url": rec.srv.URL + "/flant_gitops"})
	if err != nil {
		t.Fatal(err)
	}
	rec.mu.Lock()
	rec.secret, _ = created.Data["generated_secret"].(string)
	rec.mu.Unlock()
	if rec.secret == "" {
		t.Fatalf("create answered no generated_secret: %v", created.Data)
	}
	e.write("configure/notification/hangs", map[string]any{"url": down.URL})

	t.Run("a run is told started and finished, though another endpoint hangs", func(t *testing.T) {
		good := e.commit("one\n", "echo step one", 0, 1)
		// The hanging endpoint gets the same notifications and never
		// answers: the run still ends.
		id, _ := e.pollAndWait(good, watch.RunSucceeded)
		started := rec.waitFor("run.started delivered", delivered("run.started", "run", id))
		fin := rec.waitFor("run.finished delivered", delivered("run.finished", "run", id))
		if fin.data["outcome"] != watch.RunSucceeded || fin.data["commit"] != good {
			t.Errorf("run.finished data = %v", fin.data)
		}
		if signers, _ := started.data["signers"].([]any); started.data["commit"] != good || len(signers) != 2 {
			t.Errorf("run.started data = %v", started.data)
		}
	})

	t.Run("a notification answered 503 is retried under the same id and body", func(t *testing.T) {
		next := e.commit("two\n", "echo step two", 0, 2)
		rec.mu.Lock()
		rec.down = true
		rec.mu.Unlock()
		id, _ := e.pollAndWait(next, watch.RunSucceeded)
		first := rec.waitFor("run.started refused with 503", func(q notifyRequest) bool {
			return q.typ == "run.started" && q.data["run"] == id && q.code == http.StatusServiceUnavailable
		})
		rec.mu.Lock()
		rec.down = false
		rec.mu.Unlock()
		again := rec.waitFor("run.started retried", delivered("run.started", "run", id))
		if again.id != first.id || string(again.body) != string(first.body) {
			t.Errorf("retry: id %s body %s, first attempt id %s body %s", again.id, again.body, first.id, first.body)
		}
		if again.header.Get(notify.HeaderTimestamp) == "" {
			t.Error("no webhook-timestamp")
		}
		rec.waitFor("run.finished delivered", delivered("run.finished", "run", id))
	})

	t.Run("an under-signed commit is told once however often it is polled", func(t *testing.T) {
		under := e.commit("under\n", "echo never", 0)
		for range 3 {
			e.pollUntilOutcome(watch.OutcomeRefused)
		}
		q := rec.waitFor("commit.refused", delivered("commit.refused", "commit", under))
		if missing := fmt.Sprint(q.data["missing"]); !strings.Contains(missing, "1 more") {
			t.Errorf("commit.refused missing = %s", missing)
		}
		// Everything queued by these polls is out before counting.
		waitNotificationsIdle(t, e, "relay")
		ids := map[string]bool{}
		for _, r := range rec.requests() {
			if r.typ == "commit.refused" && r.data["commit"] == under {
				ids[r.id] = true
			}
		}
		if len(ids) != 1 {
			t.Errorf("%d commit.refused notifications for one refused commit polled 3 times, want 1", len(ids))
		}
	})

	t.Run("status shows each endpoint's delivery", func(t *testing.T) {
		st, _ := e.status()["notifications"].(map[string]any)
		relay, _ := st["relay"].(map[string]any)
		if relay == nil || fmt.Sprint(relay["last_http_code"]) != "200" || fmt.Sprint(relay["delivered"]) == "0" || fmt.Sprint(relay["pending"]) != "0" {
			t.Errorf("status notifications.relay = %v", relay)
		}
		if hangs, _ := st["hangs"].(map[string]any); hangs == nil || fmt.Sprint(hangs["pending"]) == "0" {
			t.Errorf("status notifications.hangs = %v, want pending notifications", hangs)
		}
	})

	t.Run("a notification pending across a plugin reload is delivered", func(t *testing.T) {
		rec.mu.Lock()
		rec.down = true
		rec.mu.Unlock()
		next := e.commit("three\n", "echo step three", 1, 2)
		id, _ := e.pollAndWait(next, watch.RunSucceeded)
		// One endpoint's notifications go out in order: run.started is
		// the one being retried, run.finished waits behind it.
		first := rec.waitFor("run.started refused with 503", func(q notifyRequest) bool {
			return q.typ == "run.started" && q.data["run"] == id && q.code == http.StatusServiceUnavailable
		})
		e.vault.ReloadPlugin(t)
		rec.mu.Lock()
		rec.down = false
		rec.mu.Unlock()
		got := rec.waitFor("run.started after the reload", delivered("run.started", "run", id))
		if got.id != first.id || string(got.body) != string(first.body) {
			t.Errorf("after the reload: id %s, the pending one was %s", got.id, first.id)
		}
		rec.waitFor("run.finished after the reload", delivered("run.finished", "run", id))
	})

	for _, q := range rec.requests() {
		if !q.verified {
			t.Errorf("a request the receiver could not verify: %s %v", q.id, q.header)
		}
	}
}

// waitNotificationsIdle waits until the endpoint has nothing pending and
// its delivered count stays put over two reads a second apart.
func waitNotificationsIdle(t *testing.T, e *watchE2E, name string) {
	t.Helper()
	read := func() map[string]any {
		st, _ := e.status()["notifications"].(map[string]any)
		m, _ := st[name].(map[string]any)
		return m
	}
	deadline := time.Now().Add(2 * time.Minute)
	for time.Now().Before(deadline) {
		a := read()
		time.Sleep(time.Second)
		b := read()
		if fmt.Sprint(a["pending"]) == "0" && fmt.Sprint(b["pending"]) == "0" && fmt.Sprint(a["delivered"]) == fmt.Sprint(b["delivered"]) {
			return
		}
	}
	t.Fatalf("notifications of %s never idle: %v", name, read())
}

// TestE2ENotificationsCarryNoSecret is the no-secret walk: runs whose
// command prints its wrapped token (VAULT_REQUEST_TOKEN_APP) and a marker,
// one succeeding and one failing; every header and body sent to the
// endpoint during them is searched for every token and secret_id the
// target Vault handed out, the configured secret_id, the git password,
// the notification secret and every line of the runs' logs, and none is
// found.
func TestE2ENotificationsCarryNoSecret(t *testing.T) {
	f := newTargetFixture(t, "10m")
	srv := vaulttest.NewServer(t, nil)
	image := dockertest.Image(t, dockertest.Runner(t))
	gs := gittest.NewServer(t)
	repo := gs.NewRepo(t, "ops")
	repo.Commit(t, map[string]string{"README": "one\n"})
	rec := newNotifyReceiver(t)
	marker := fmt.Sprintf("marker-%d", time.Now().UnixNano())

	write := func(path string, data map[string]any) map[string]any {
		t.Helper()
		s, err := srv.Client.Logical().Write(vaulttest.MountPath+"/"+path, data)
		if err != nil {
			t.Fatalf("write %s: %v", path, err)
		}
		if s == nil {
			return nil
		}
		return s.Data
	}
	created := write("configure/notification/relay", map[string]any{"url": rec.srv.URL, "events": strings.Join(notify.Types, ",")})
	secret, _ := created["generated_secret"].(string)
	rec.mu.Lock()
	rec.secret = secret
	rec.mu.Unlock()
	write("configure/git_credential", map[string]any{"username": gs.Username(), "password": gs.Password()})
	write("configure", map[string]any{
		"git_repo_url":    repo.URL(),
		"docker_image":    image,
		"commands":        []string{`echo "TOKEN=$VAULT_REQUEST_TOKEN_APP"; echo "` + marker + `"; sh /git/exit.sh`},
		"run_timeout":     "2m",
		"network_mode":    "none",
		"git_poll_period": "1h",
	})
	write("configure_vault_access", f.accessFields("10m"))
	write("configure/vault_request/app", map[string]any{"path": "secret/data/app"})

	var runIDs []string
	for _, exit := range []string{"exit 0", "echo failing on purpose; exit 3"} {
		repo.Commit(t, map[string]string{"exit.sh": exit + "\n"})
		id, run := pollRun(t, srv, repo.Head(t))
		runIDs = append(runIDs, id)
		rec.waitFor("run.finished of "+id, delivered("run.finished", "run", id))
		if want := map[bool]string{true: watch.RunSucceeded, false: watch.RunFailed}[exit == "exit 0"]; run["status"] != want {
			t.Fatalf("run %s is %v (%v), want %s", id, run["status"], run["reason"], want)
		}
	}

	var sent strings.Builder
	for _, q := range rec.requests() {
		for k, vs := range q.header {
			fmt.Fprintf(&sent, "%s: %s\n", k, strings.Join(vs, ", "))
		}
		sent.Write(q.body)
		sent.WriteString("\n")
	}
	if !strings.Contains(sent.String(), "run.finished") || !strings.Contains(sent.String(), "run.started") {
		t.Fatalf("the walk saw no run notifications:\n%s", sent.String())
	}
	needles := map[string]string{
		"the configured secret_id":               f.secretID,
		"the git password":                       gs.Password(),
		"the notification secret":                secret,
		"the notification secret's key (base64)": strings.TrimPrefix(secret, notify.SecretPrefix),
	}
	printedToken := false
	for _, id := range runIDs {
		log := runLog(t, srv, id)
		for i, line := range strings.Split(log, "\n") {
			line = strings.TrimSpace(line)
			if len(line) < 6 {
				continue // a short line matches JSON by chance
			}
			needles[fmt.Sprintf("line %d of the log of run %s", i+1, id)] = line
			if strings.HasPrefix(line, "TOKEN=") && len(line) > len("TOKEN=")+20 {
				printedToken = true
				needles["the wrapped token printed by run "+id] = strings.TrimPrefix(line, "TOKEN=")
			}
		}
		if !strings.Contains(log, marker) {
			t.Errorf("run %s did not print the marker; log:\n%s", id, log)
		}
	}
	if !printedToken {
		t.Fatal("no run printed a wrapped token: the walk would prove nothing")
	}
	for what, s := range needles {
		if s != "" && strings.Contains(sent.String(), s) {
			t.Errorf("%s appears in a notification", what)
		}
	}
	assertNoSecrets(t, f.tg, sent.String())
}

// TestE2ENotificationsHA: on a 3-node Raft cluster, an endpoint configured
// through a standby gets the active node's notifications, and one pending
// when the active node steps down is delivered by the next one under the
// same id.
func TestE2ENotificationsHA(t *testing.T) {
	docker := dockertest.Runner(t)
	image := dockertest.Image(t, docker)
	var nodeEnv [][]string
	for range 3 {
		nodeEnv = append(nodeEnv, []string{cacheDirEnv + "=" + t.TempDir()})
	}
	cluster := vaulttest.NewCluster(t, &vaulttest.ClusterOptions{NodeEnv: nodeEnv})
	base := haWatchSetup(t, cluster, docker, image)
	rec := newNotifyReceiver(t)

	standby := cluster.Standbys(t)[0]
	created, err := standby.Client.Logical().Write(vaulttest.MountPath+"/configure/notification/relay", map[string]any{"url": rec.srv.URL})
	if err != nil || created == nil {
		t.Fatalf("creating the endpoint through standby %s: %v", standby.ID, err)
	}
	rec.mu.Lock()
	rec.secret, _ = created.Data["generated_secret"].(string)
	rec.down = true
	rec.mu.Unlock()

	leader := cluster.Leader(t)
	e := base.on(t, leader)
	c := e.commit("notified across a step-down\n", "echo step-down", 0, 1)
	id, _ := e.pollAndWait(c, watch.RunSucceeded)
	first := rec.waitFor("run.started refused with 503", func(q notifyRequest) bool {
		return q.typ == "run.started" && q.data["run"] == id && q.code == http.StatusServiceUnavailable
	})
	old := cluster.StepDown(t)
	next := cluster.Leader(t)
	t.Logf("step-down: %s was active, %s is now", old.ID, next.ID)
	rec.mu.Lock()
	rec.down = false
	rec.mu.Unlock()
	got := rec.waitFor("run.started after the step-down", delivered("run.started", "run", id))
	if got.id != first.id || string(got.body) != string(first.body) {
		t.Errorf("after the step-down: id %s, the pending one was %s", got.id, first.id)
	}
	rec.waitFor("run.finished after the step-down", delivered("run.finished", "run", id))
	// The delivery shows through any node (status is forwarded).
	deadline := time.Now().Add(time.Minute)
	for {
		st, _ := base.on(t, cluster.Standbys(t)[0]).status()["notifications"].(map[string]any)
		relay, _ := st["relay"].(map[string]any)
		if fmt.Sprint(relay["pending"]) == "0" && fmt.Sprint(relay["last_http_code"]) == "200" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("status through a standby: %v", relay)
		}
		time.Sleep(200 * time.Millisecond)
	}
	for _, q := range rec.requests() {
		if !q.verified {
			t.Errorf("a request the receiver could not verify: %s", q.id)
		}
	}
}
