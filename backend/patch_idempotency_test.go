package backend

import (
	"context"
	"fmt"
	"net/http"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"

	"github.com/flant/flant_gitops/gitwatch/gittest"
)

// idemFixture is a backend on in-memory storage patching a real git server.
type idemFixture struct {
	b    *backend
	s    logical.Storage
	repo *gittest.Repo
}

func newIdemFixture(t testing.TB, s logical.Storage) *idemFixture {
	t.Helper()
	t.Setenv(cacheDirEnv, t.TempDir())
	srv := gittest.NewServer(t)
	repo := srv.NewRepo(t, "infra")
	repo.Commit(t, map[string]string{"release.yml": "tag: \"1.2.4\"\n"})
	f := &idemFixture{repo: repo}
	f.b, f.s = newIdemBackend(t, s)
	for _, w := range []struct {
		path string
		data map[string]any
	}{
		{"configure/policy", map[string]any{"policy": allowAllPolicy}},
		{"configure/repository/infra", map[string]any{"url": repo.URL(), "username": srv.Username(), "password": srv.Password()}},
	} {
		if resp, err := rawConfigReq(f.b, f.s, logical.UpdateOperation, w.path, w.data); err != nil || (resp != nil && resp.IsError()) {
			t.Fatalf("write %s: %s", w.path, errText(resp, err))
		}
	}
	return f
}

// newIdemBackend is a backend on storage s (new when nil), as a restarted
// plugin finds the storage its predecessor left.
func newIdemBackend(t testing.TB, s logical.Storage) (*backend, logical.Storage) {
	t.Helper()
	conf := logical.TestBackendConfig()
	if s == nil {
		s = &logical.InmemStorage{}
	}
	conf.StorageView = s
	lb, err := Factory(context.Background(), conf)
	if err != nil {
		t.Fatalf("Factory: %v", err)
	}
	b := lb.(*backend)
	t.Cleanup(func() { b.Cleanup(context.Background()) })
	return b, s
}

// caller is who sends a request: an entity, or a token accessor alone.
type caller struct{ entity, accessor string }

var (
	callerA   = caller{entity: "ent-a"}
	callerB   = caller{entity: "ent-b"}
	tokenOnly = caller{accessor: "acc-1"}
)

func (f *idemFixture) patch(b *backend, who caller, reqID, tag, key string) (*logical.Response, error) {
	data := map[string]any{"commands": []any{map[string]any{"path": "release.yml", "setField": map[string]any{"field": "tag", "value": tag}}}}
	if key != "" {
		data["idempotency_key"] = key
	}
	return b.HandleRequest(context.Background(), &logical.Request{
		Operation: logical.UpdateOperation, Path: "patch/infra", Storage: f.s, MountPoint: "flant_gitops/",
		ID: reqID, EntityID: who.entity, ClientTokenAccessor: who.accessor, Data: data,
	})
}

func (f *idemFixture) commitsSince(t *testing.T, base string) int {
	t.Helper()
	out, err := exec.Command("git", "-C", f.repo.Dir, "rev-list", "--count", base+"..refs/heads/main").Output()
	if err != nil {
		t.Fatalf("git rev-list: %v", err)
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(out)))
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func TestIdempotencyKey(t *testing.T) {
	type step struct {
		who        caller
		tag, key   string
		wantStatus int
		wantReplay bool   // the answer repeats step replayOf's commit
		replayOf   int    // index of the step whose commit a replay repeats
		wantErr    string // part of the error
	}
	tests := []struct {
		name        string
		steps       []step
		wantCommits int
	}{
		{"same key, same request: the first result, no new commit", []step{
			{who: callerA, tag: "1.2.5", key: "job-1", wantStatus: 200},
			{who: callerA, tag: "1.2.5", key: "job-1", wantStatus: 200, wantReplay: true, replayOf: 0},
		}, 1},
		{"a newer release in between is not reverted by the repeat", []step{
			{who: callerA, tag: "1.2.5", key: "job-a", wantStatus: 200},
			{who: callerA, tag: "1.2.6", key: "job-b", wantStatus: 200},
			{who: callerA, tag: "1.2.5", key: "job-a", wantStatus: 200, wantReplay: true, replayOf: 0},
		}, 2},
		{"same key, another request: 422", []step{
			{who: callerA, tag: "1.2.5", key: "job-1", wantStatus: 200},
			{who: callerA, tag: "1.2.7", key: "job-1", wantStatus: http.StatusUnprocessableEntity, wantErr: "different request"},
		}, 1},
		{"another caller's same key is its own", []step{
			{who: callerA, tag: "1.2.5", key: "job-1", wantStatus: 200},
			{who: callerB, tag: "1.2.6", key: "job-1", wantStatus: 200},
		}, 2},
		{"a token without an entity is told by its accessor", []step{
			{who: tokenOnly, tag: "1.2.5", key: "job-1", wantStatus: 200},
			{who: tokenOnly, tag: "1.2.5", key: "job-1", wantStatus: 200, wantReplay: true, replayOf: 0},
			{who: caller{accessor: "acc-2"}, tag: "1.2.8", key: "job-1", wantStatus: 200},
		}, 2},
		{"without a key a repeat applies again", []step{
			{who: callerA, tag: "1.2.5", wantStatus: 200},
			{who: callerA, tag: "1.2.6", wantStatus: 200},
			{who: callerA, tag: "1.2.5", wantStatus: 200},
		}, 3},
		{"a key with a control byte", []step{
			{who: callerA, tag: "1.2.5", key: "job\n1", wantStatus: 400, wantErr: "printable ASCII"},
		}, 0},
		{"a key too long", []step{
			{who: callerA, tag: "1.2.5", key: strings.Repeat("k", 257), wantStatus: 400, wantErr: "at most 256"},
		}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newIdemFixture(t, nil)
			base := f.repo.Head(t)
			var commits []string
			for i, st := range tt.steps {
				resp, err := f.patch(f.b, st.who, fmt.Sprintf("req-%d", i), st.tag, st.key)
				if got := status(resp, err); got != st.wantStatus {
					t.Fatalf("step %d: status %d (%s), want %d", i, got, errText(resp, err), st.wantStatus)
				}
				if st.wantErr != "" && !strings.Contains(errText(resp, err), st.wantErr) {
					t.Fatalf("step %d: error %q, want it to say %q", i, errText(resp, err), st.wantErr)
				}
				if st.wantStatus != 200 {
					commits = append(commits, "")
					continue
				}
				commit, _ := resp.Data["commit"].(string)
				commits = append(commits, commit)
				_, replay := resp.Data["idempotent_replay"]
				if replay != st.wantReplay {
					t.Fatalf("step %d: idempotent_replay present=%t, want %t (%v)", i, replay, st.wantReplay, resp.Data)
				}
				if st.wantReplay && (commit != commits[st.replayOf] || resp.Data["changed_paths"] == nil) {
					t.Fatalf("step %d: replay answered %v, want step %d's commit %s", i, resp.Data, st.replayOf, commits[st.replayOf])
				}
			}
			if n := f.commitsSince(t, base); n != tt.wantCommits {
				t.Fatalf("%d commits on the branch, want %d", n, tt.wantCommits)
			}
		})
	}
}

// The record is in storage: a restarted plugin (a new backend on the same
// storage) still answers the first result.
func TestIdempotencyKeySurvivesARestart(t *testing.T) {
	f := newIdemFixture(t, nil)
	base := f.repo.Head(t)
	first, err := f.patch(f.b, callerA, "req-1", "1.2.5", "job-1")
	if status(first, err) != 200 {
		t.Fatalf("first: %s", errText(first, err))
	}
	f.b.Cleanup(context.Background())
	restarted, _ := newIdemBackend(t, f.s)
	again, err := f.patch(restarted, callerA, "req-2", "1.2.5", "job-1")
	if status(again, err) != 200 || again.Data["commit"] != first.Data["commit"] || again.Data["idempotent_replay"] != true {
		t.Fatalf("repeat after a restart: %v %s, want the first commit %v replayed", again, errText(again, err), first.Data["commit"])
	}
	if n := f.commitsSince(t, base); n != 1 {
		t.Fatalf("%d commits, want 1", n)
	}
}

// A record left in flight by an instance that is gone may or may not have
// landed: the repeat is a 409 that says how to find out, and does nothing.
func TestIdempotencyKeyInterruptedFirst(t *testing.T) {
	f := newIdemFixture(t, nil)
	base := f.repo.Head(t)
	caller, err := idempotencyCaller(&logical.Request{EntityID: callerA.entity})
	if err != nil {
		t.Fatal(err)
	}
	// The first request's own pending record, as a crash would leave it.
	first, err := f.patch(f.b, callerA, "req-first", "1.2.5", "job-1")
	if status(first, err) != 200 {
		t.Fatal(errText(first, err))
	}
	skey := idempotencyStorageKey(caller, "job-1")
	rec, err := getEntry[idempotencyRecord](context.Background(), f.s, skey)
	if err != nil || rec == nil || !rec.Done {
		t.Fatalf("record after the first: %+v, %v", rec, err)
	}
	rec.Done, rec.Result = false, nil
	if err := putEntry(context.Background(), f.s, skey, rec); err != nil {
		t.Fatal(err)
	}
	resp, err := f.patch(f.b, callerA, "req-2", "1.2.5", "job-1")
	if st, msg := status(resp, err), errText(resp, err); st != http.StatusConflict || !strings.Contains(msg, "Vault-Request-Id: req-first") || !strings.Contains(msg, "new key") {
		t.Fatalf("repeat of an interrupted first: %d %q, want 409 naming its Vault-Request-Id", st, msg)
	}
	if n := f.commitsSince(t, base); n != 1 {
		t.Fatalf("%d commits, want 1", n)
	}
}

// A first request that fails pushed nothing: its record goes, and the
// repeat runs.
func TestIdempotencyKeyAfterAFailure(t *testing.T) {
	f := newIdemFixture(t, nil)
	base := f.repo.Head(t)
	bad := func(b *backend) (*logical.Response, error) {
		return b.HandleRequest(context.Background(), &logical.Request{
			Operation: logical.UpdateOperation, Path: "patch/infra", Storage: f.s, MountPoint: "flant_gitops/", ID: "req-1", EntityID: callerA.entity,
			Data: map[string]any{"idempotency_key": "job-1", "commands": []any{map[string]any{"path": "missing.yml", "setField": map[string]any{"field": "tag", "value": "1"}}}},
		})
	}
	if resp, err := bad(f.b); status(resp, err) != http.StatusNotFound {
		t.Fatalf("edit of a missing file: %d %s, want 404", status(resp, err), errText(resp, err))
	}
	f.repo.Commit(t, map[string]string{"missing.yml": "tag: 0\n"})
	base = f.repo.Head(t)
	if resp, err := bad(f.b); status(resp, err) != 200 || resp.Data["idempotent_replay"] != nil {
		t.Fatalf("repeat once the file exists: %d %s %v, want it applied", status(resp, err), errText(resp, err), resp)
	}
	if n := f.commitsSince(t, base); n != 1 {
		t.Fatalf("%d commits, want 1", n)
	}
}

// Repeats that arrive while the first is in flight wait for it and answer
// its commit: one commit however many arrive together.
func TestIdempotencyKeyConcurrentRepeats(t *testing.T) {
	f := newIdemFixture(t, nil)
	base := f.repo.Head(t)
	const n = 8
	var wg sync.WaitGroup
	commits := make([]string, n)
	replays := make([]bool, n)
	errs := make([]string, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := f.patch(f.b, callerA, fmt.Sprintf("req-%d", i), "1.2.5", "job-1")
			if status(resp, err) != 200 {
				errs[i] = errText(resp, err)
				return
			}
			commits[i], _ = resp.Data["commit"].(string)
			replays[i] = resp.Data["idempotent_replay"] == true
		}()
	}
	wg.Wait()
	firsts := 0
	for i := range n {
		if errs[i] != "" {
			t.Fatalf("request %d: %s", i, errs[i])
		}
		if commits[i] != commits[0] {
			t.Fatalf("commits %v, want one", commits)
		}
		if !replays[i] {
			firsts++
		}
	}
	if firsts != 1 {
		t.Fatalf("%d answers were not replays, want 1", firsts)
	}
	if c := f.commitsSince(t, base); c != 1 {
		t.Fatalf("%d commits, want 1", c)
	}
}

// Records expire after 24 hours (the periodic sweep removes them), and the
// number one caller holds is bounded without taking the others' room.
func TestIdempotencyRecordsExpireAndAreBounded(t *testing.T) {
	f := newIdemFixture(t, nil)
	now := time.Now()
	ps := f.b.patch
	ps.idem.now = func() time.Time { return now }
	ps.idem.maxPerCaller, ps.idem.maxTotal = 2, 3
	ok := func(who caller, tag, key string) {
		t.Helper()
		if resp, err := f.patch(f.b, who, "r", tag, key); status(resp, err) != 200 {
			t.Fatalf("patch %s: %s", key, errText(resp, err))
		}
	}
	ok(callerA, "1", "a1")
	ok(callerA, "2", "a2")
	resp, err := f.patch(f.b, callerA, "r", "3", "a3")
	if st, msg := status(resp, err), errText(resp, err); st != http.StatusTooManyRequests || !strings.Contains(msg, "the most one caller may") {
		t.Fatalf("a third key of one caller: %d %q, want 429", st, msg)
	}
	ok(callerA, "3", "") // without a key it goes
	ok(callerB, "4", "b1")
	resp, err = f.patch(f.b, caller{entity: "ent-c"}, "r", "5", "c1")
	if st, msg := status(resp, err), errText(resp, err); st != http.StatusTooManyRequests || !strings.Contains(msg, "this mount holds 3") {
		t.Fatalf("past the mount's bound: %d %q, want 429", st, msg)
	}

	// Within 24 hours the sweep keeps everything.
	now = now.Add(23 * time.Hour)
	ps.sweepIdempotency(context.Background(), f.s)
	if _, total, _ := countIdempotencyRecords(context.Background(), f.s); total != 3 {
		t.Fatalf("%d records after 23 hours, want 3", total)
	}
	if resp, err := f.patch(f.b, callerA, "r", "1", "a1"); resp == nil || resp.Data["idempotent_replay"] != true {
		t.Fatalf("repeat after 23 hours: %v %s, want a replay", resp, errText(resp, err))
	}
	now = now.Add(2 * time.Hour)
	// Vault's periodic function runs the sweep.
	if err := f.b.periodic(context.Background(), &logical.Request{Storage: f.s}); err != nil {
		t.Fatal(err)
	}
	if _, total, _ := countIdempotencyRecords(context.Background(), f.s); total != 0 {
		t.Fatalf("%d records after 25 hours, want the sweep to remove them all", total)
	}
	ok(caller{entity: "ent-c"}, "5", "c1")
}

// The records are in the storage-key table, and hold digests only: not the
// request's content, nor the caller's entity id or token accessor.
func TestIdempotencyRecordsInTheStorageTable(t *testing.T) {
	rs := &recordingStorage{}
	f := newIdemFixture(t, rs)
	const content = "password: not-for-the-record-7f3a\n"
	resp, err := f.b.HandleRequest(context.Background(), &logical.Request{
		Operation: logical.UpdateOperation, Path: "patch/infra", Storage: f.s, MountPoint: "flant_gitops/", ID: "req-1", ClientTokenAccessor: "accessor-in-clear-91c2",
		Data: map[string]any{"idempotency_key": "job-1", "commands": []any{map[string]any{"path": "secret.yml", "createFile": map[string]any{"content": content}}}},
	})
	if status(resp, err) != 200 {
		t.Fatal(errText(resp, err))
	}
	var tableKeys []string
	for _, k := range storageKeys {
		tableKeys = append(tableKeys, k.key)
	}
	rs.mu.Lock()
	defer rs.mu.Unlock()
	records := 0
	for _, e := range rs.puts {
		if !sealWrapCovers(tableKeys, e.Key) {
			t.Errorf("storage entry %q is not in the storage-key table", e.Key)
		}
		if !strings.HasPrefix(e.Key, storagePrefixIdempotency) {
			continue
		}
		records++
		if strings.Contains(string(e.Value), "not-for-the-record") || strings.Contains(e.Key+string(e.Value), "accessor-in-clear") {
			t.Errorf("idempotency record %s holds the request's content or the caller's accessor: %s", e.Key, e.Value)
		}
	}
	if records != 2 { // pending, then done
		t.Fatalf("%d idempotency record writes, want 2", records)
	}
}

// BenchmarkPatchIdempotencyKey compares a patch (a real commit and push)
// with and without a key, and a repeat answered from the record: the cost of
// the record is two storage writes and a read, against a git push.
func BenchmarkPatchIdempotencyKey(b *testing.B) {
	for _, mode := range []string{"no key", "key", "repeat"} {
		b.Run(mode, func(b *testing.B) {
			f := newIdemFixture(b, nil)
			if mode == "repeat" {
				if resp, err := f.patch(f.b, callerA, "r", "1.0.0", "k"); status(resp, err) != 200 {
					b.Fatal(errText(resp, err))
				}
			}
			b.ResetTimer()
			for i := range b.N {
				key, tag := "", fmt.Sprintf("1.0.%d", i+1)
				switch mode {
				case "key":
					key = fmt.Sprintf("k%d", i)
				case "repeat":
					key, tag = "k", "1.0.0"
				}
				if resp, err := f.patch(f.b, callerA, "r", tag, key); status(resp, err) != 200 {
					b.Fatal(errText(resp, err))
				}
			}
		})
	}
}
