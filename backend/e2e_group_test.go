package backend_test

import (
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"
)

// pushGate installs a pre-receive hook in the server's repository that holds
// every push while the gate is closed: the test can then queue requests
// behind a group whose push is in flight. Commits written straight into the
// repository (CommitDirect) pass by it, as another writer's push would.
// More steps of the hook (gittest.PreReceive) run after the gate.
type pushGate struct{ dir string }

func newPushGate(t *testing.T, e *patchE2E, steps ...string) *pushGate {
	t.Helper()
	g := &pushGate{dir: t.TempDir()}
	e.remote.PreReceive(t, append([]string{fmt.Sprintf(`if [ -f %[1]s/hold ]; then
  touch %[1]s/started
  while [ -f %[1]s/hold ]; do sleep 0.05; done
fi`, g.dir)}, steps...)...)
	// A test that fails with the gate closed must not leave a push held
	// while Vault stops.
	t.Cleanup(func() { os.Remove(filepath.Join(g.dir, "hold")) })
	return g
}

func (g *pushGate) close(t *testing.T) {
	t.Helper()
	os.Remove(filepath.Join(g.dir, "started"))
	if err := os.WriteFile(filepath.Join(g.dir, "hold"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
}

// waitHeld returns once a push is held at the gate.
func (g *pushGate) waitHeld(t *testing.T) {
	t.Helper()
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(20 * time.Millisecond) {
		if _, err := os.Stat(filepath.Join(g.dir, "started")); err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("no push reached the gate within a minute")
		}
	}
}

func (g *pushGate) open(t *testing.T) {
	t.Helper()
	if err := os.Remove(filepath.Join(g.dir, "hold")); err != nil {
		t.Fatal(err)
	}
}

type answer struct {
	data   map[string]any
	reqID  string
	status int
	err    error
}

// burstCaller is one CI project logged in through the JWT auth method.
type burstCaller struct {
	project string
	client  *api.Client
	entity  string // "name (id)" as the Requested-By trailer shows it
}

func (e *patchE2E) callers(t *testing.T, n int) []burstCaller {
	t.Helper()
	var out []burstCaller
	for i := range n {
		project := fmt.Sprintf("burst/project-%02d", i)
		c, err := e.login(t, e.gitlabToken(t, project, e2eAudience))
		if err != nil {
			t.Fatalf("login %s: %v", project, err)
		}
		name, id := e.entityOf(t, c)
		out = append(out, burstCaller{project: project, client: c, entity: fmt.Sprintf("%s (%s)", name, id)})
	}
	return out
}

func burstFiles(n int) map[string]string {
	files := map[string]string{"seed.yml": "s: 1\n"}
	for i := range n {
		files[fmt.Sprintf("burst/project-%02d/values.yml", i)] = "image:\n  tag: v0\n"
	}
	return files
}

// sendAll sends every body at once, each from its caller, and returns the
// answers in order.
func sendAll(callers []burstCaller, bodies []map[string]any) []answer {
	out := make([]answer, len(bodies))
	var wg sync.WaitGroup
	for i := range bodies {
		wg.Add(1)
		go func() {
			defer wg.Done()
			d, id, st, err := patchReq(callers[i].client, bodies[i])
			out[i] = answer{d, id, st, err}
		}()
	}
	wg.Wait()
	return out
}

// checkCommit asserts that commit carries the caller's trailers and the
// plugin key's good signature (gpg home with the key imported).
func (e *patchE2E) checkCommit(t *testing.T, gnupg, commit string, c burstCaller, reqID string) {
	t.Helper()
	msg, _ := e.git(t, nil, "log", "-1", "--format=%B", commit)
	for _, want := range []string{"Requested-By: " + c.entity, "Vault-Request-Id: " + reqID} {
		if reqID == "" || !strings.Contains(msg, want) {
			t.Fatalf("commit %s lacks %q:\n%s", commit, want, msg)
		}
	}
	out, err := e.git(t, []string{"GNUPGHOME=" + gnupg}, "verify-commit", "--raw", commit)
	if err != nil || !strings.Contains(out, "GOODSIG") {
		t.Fatalf("git verify-commit %s: %v\n%s", commit, err, out)
	}
}

// pluginGPG imports the plugin's public key into a new gpg home.
func (e *patchE2E) pluginGPG(t *testing.T) string {
	t.Helper()
	s, err := e.v.Client.Logical().Read("flant_gitops/configure/signing_key")
	if err != nil || s == nil {
		t.Fatalf("read signing_key: %v", err)
	}
	pub, _ := s.Data["public_key"].(string)
	home := t.TempDir()
	keyFile := filepath.Join(t.TempDir(), "plugin.asc")
	if err := os.WriteFile(keyFile, []byte(pub), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("gpg", "--homedir", home, "--batch", "--import", keyFile).CombinedOutput(); err != nil {
		t.Fatalf("gpg --import (install gnupg): %v\n%s", err, out)
	}
	return home
}

// TestPatchBurstGroupCommit drives bursts of CI patches through Vault to a
// real git server: one conflicting request fails alone with 409 while the
// rest land, each as its own signed commit with its own caller's trailers;
// a burst racing another writer's push lands on top of it.
func TestPatchBurstGroupCommit(t *testing.T) {
	const n = 8
	e := newPatchE2E(t, burstFiles(n))
	callers := e.callers(t, n)
	gnupg := e.pluginGPG(t)
	gate := newPushGate(t, e)
	tag := func(i int, v string) map[string]any {
		return map[string]any{"commands": []any{setField(callers[i].project+"/values.yml", "image.tag", v)}}
	}

	t.Run("one conflicting request answers 409 alone, the rest land", func(t *testing.T) {
		before := e.remote.Head(t)
		// A first request holds the branch's push at the gate, so the burst
		// queues behind it and goes out as a group.
		gate.close(t)
		firstDone := make(chan answer, 1)
		go func() {
			d, id, st, err := patchReq(callers[0].client, tag(0, "first"))
			firstDone <- answer{d, id, st, err}
		}()
		gate.waitHeld(t)
		var bodies []map[string]any
		for i := range n {
			bodies = append(bodies, tag(i, fmt.Sprintf("v%d", i+1)))
		}
		const bad = 3
		bodies[bad] = map[string]any{"commands": []any{map[string]any{
			"path": callers[bad].project + "/values.yml", "createFile": map[string]any{"content": "clobbered: true\n"},
		}}}
		answers := make(chan []answer, 1)
		go func() { answers <- sendAll(callers, bodies) }()
		time.Sleep(500 * time.Millisecond) // let the burst reach the queue; the outcome holds either way
		gate.open(t)
		first := <-firstDone
		if first.err != nil {
			t.Fatalf("first: status %d %v", first.status, first.err)
		}
		got := <-answers
		landed := 1
		for i, a := range got {
			if i == bad {
				if a.status != http.StatusConflict || !strings.Contains(fmt.Sprint(a.err), "overwrite") {
					t.Fatalf("the conflicting request: status %d %v, want 409 naming overwrite", a.status, a.err)
				}
				continue
			}
			if a.err != nil || a.data["no_op"] != false {
				t.Fatalf("request %d: status %d %v %v", i, a.status, a.err, a.data)
			}
			commit, _ := a.data["commit"].(string)
			if paths := fmt.Sprint(a.data["changed_paths"]); paths != "["+callers[i].project+"/values.yml]" {
				t.Fatalf("request %d: changed_paths %s", i, paths)
			}
			e.checkCommit(t, gnupg, commit, callers[i], a.reqID)
			landed++
		}
		head := e.remote.Head(t)
		if c, _ := e.git(t, nil, "rev-list", "--count", before+".."+head); c != fmt.Sprint(landed) {
			t.Fatalf("%s new commits for %d landed requests", c, landed)
		}
		for i := range n {
			want := fmt.Sprintf("image:\n  tag: v%d\n", i+1)
			if i == bad {
				want = "image:\n  tag: v0\n" // untouched
			}
			if s := e.show(t, head, callers[i].project+"/values.yml"); s != want {
				t.Fatalf("%s/values.yml = %q, want %q", callers[i].project, s, want)
			}
		}
		if out, err := e.git(t, nil, "fsck", "--strict"); err != nil {
			t.Fatalf("git fsck: %v\n%s", err, out)
		}
	})

	t.Run("a burst racing another writer's push lands on top of it", func(t *testing.T) {
		gate.close(t)
		firstDone := make(chan answer, 1)
		go func() {
			d, id, st, err := patchReq(callers[0].client, tag(0, "race-first"))
			firstDone <- answer{d, id, st, err}
		}()
		gate.waitHeld(t)
		var bodies []map[string]any
		for i := range n {
			bodies = append(bodies, tag(i, fmt.Sprintf("race-%d", i)))
		}
		answers := make(chan []answer, 1)
		go func() { answers <- sendAll(callers, bodies) }()
		// Another writer moves the branch while the plugin's push is held.
		outside := e.remote.CommitDirect(t, map[string]string{"seed.yml": "s: outside\n"}, "another writer")
		gate.open(t)
		if a := <-firstDone; a.err != nil {
			t.Fatalf("first: status %d %v", a.status, a.err)
		}
		got := <-answers
		for i, a := range got {
			if a.err != nil {
				t.Fatalf("request %d: status %d %v", i, a.status, a.err)
			}
			e.checkCommit(t, gnupg, a.data["commit"].(string), callers[i], a.reqID)
		}
		head := e.remote.Head(t)
		if out, err := e.git(t, nil, "merge-base", "--is-ancestor", outside, head); err != nil {
			t.Fatalf("the other writer's commit is not below the head: %s", out)
		}
		if c, _ := e.git(t, nil, "rev-list", "--count", outside+".."+head); c != fmt.Sprint(n+1) {
			t.Fatalf("%s commits above the other writer's, want %d", c, n+1)
		}
		if s := e.show(t, head, "seed.yml"); s != "s: outside\n" {
			t.Fatalf("seed.yml = %q: the other writer's change was lost", s)
		}
		for i := range n {
			if s := e.show(t, head, callers[i].project+"/values.yml"); s != fmt.Sprintf("image:\n  tag: race-%d\n", i) {
				t.Fatalf("%s/values.yml = %q", callers[i].project, s)
			}
		}
	})
}

// TestPatchQueueOverflow: with FLANT_GITOPS_PATCH_QUEUE=3 and a push held in
// flight, three requests wait and the rest are answered 429 with a time to
// retry; when the push returns the three land, none of the refused.
func TestPatchQueueOverflow(t *testing.T) {
	const queue, extra = 3, 4
	const n = 1 + queue + extra
	e := newPatchE2EEnv(t, burstFiles(n), []string{"FLANT_GITOPS_PATCH_QUEUE=" + fmt.Sprint(queue)})
	callers := e.callers(t, n)
	gate := newPushGate(t, e)
	gate.close(t)
	before := e.remote.Head(t)
	results := make(chan answer, n)
	send := func(i int) {
		d, id, st, err := patchReq(callers[i].client, map[string]any{"commands": []any{setField(callers[i].project+"/values.yml", "image.tag", fmt.Sprintf("q%d", i))}})
		results <- answer{d, id, st, err}
	}
	go send(0)
	gate.waitHeld(t)
	for i := 1; i < n; i++ {
		go send(i)
	}
	// While the push is held only the refused can answer.
	for range extra {
		a := <-results
		if a.status != http.StatusTooManyRequests || !strings.Contains(fmt.Sprint(a.err), "retry in") || !strings.Contains(fmt.Sprint(a.err), fmt.Sprintf("%d patches waiting", queue)) {
			t.Fatalf("status %d %v, want 429 with a retry time", a.status, a.err)
		}
	}
	gate.open(t)
	for range 1 + queue {
		if a := <-results; a.err != nil || a.data["no_op"] != false {
			t.Fatalf("status %d %v", a.status, a.err)
		}
	}
	if c, _ := e.git(t, nil, "rev-list", "--count", before+".."+e.remote.Head(t)); c != fmt.Sprint(1+queue) {
		t.Fatalf("%s new commits, want %d: the refused must leave nothing", c, 1+queue)
	}
}
