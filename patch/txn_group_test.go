package patch

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-git/go-git/v5/plumbing"

	"github.com/flant/flant_gitops/gitwatch"
	"github.com/flant/flant_gitops/gitwatch/gittest"
)

// gate holds the first group of a Repo inside its CheckBase (after the
// fetch, before anything is built or pushed), so that the test can queue
// requests behind a group in flight.
type gate struct {
	started chan struct{}
	release chan struct{}
	first   bool
}

func newGate() *gate {
	return &gate{started: make(chan struct{}), release: make(chan struct{})}
}

func (g *gate) check(ctx context.Context, tip string, m *gitwatch.Mirror) error {
	if !g.first {
		g.first = true // the worker calls CheckBase from one goroutine
		close(g.started)
		select {
		case <-g.release:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// queued is how many requests wait for the repository's next group.
func (r *Repo) queued() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.queue)
}

type outcome struct {
	res TxnResult
	err error
}

// submit starts req in the background and, when wait, returns once it is
// queued: requests so submitted arrive in the order of the calls.
func submit(t *testing.T, ctx context.Context, r *Repo, req TxnRequest, wantQueued int) <-chan outcome {
	t.Helper()
	ch := make(chan outcome, 1)
	go func() {
		res, err := r.Patch(ctx, req)
		ch <- outcome{res, err}
	}()
	if wantQueued > 0 {
		waitFor(t, func() bool { return r.queued() == wantQueued })
	}
	return ch
}

// waitFor polls cond; it fails the test after a minute, a bound no healthy
// run comes near.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(time.Minute); !cond(); {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached within a minute")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// requestN is request i of a burst: its own file and its own trailers.
func (f *txnFixture) requestN(i int, cmds ...Command) TxnRequest {
	req := f.request(cmds...)
	req.Message = fmt.Sprintf("Bump app %d", i)
	req.Trailers = []Trailer{
		{Key: "Requested-By", Value: fmt.Sprintf("entity_%d (id-%d)", i, i)},
		{Key: "Vault-Request-Id", Value: fmt.Sprintf("req-%d", i)},
	}
	return req
}

// verifyCommits checks with gpg and git that every commit carries the
// plugin key's good signature.
func (f *txnFixture) verifyCommits(t *testing.T, commits ...string) {
	t.Helper()
	home := t.TempDir()
	pub, err := f.key.ArmoredPublic()
	if err != nil {
		t.Fatal(err)
	}
	pubPath := filepath.Join(t.TempDir(), "pub.asc")
	if err := os.WriteFile(pubPath, pub, 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("gpg", "--homedir", home, "--batch", "--import", pubPath).CombinedOutput(); err != nil {
		t.Fatalf("gpg --import (install gnupg): %v\n%s", err, out)
	}
	for _, c := range commits {
		out, err := gitIn(t, f.remote.Dir, []string{"GNUPGHOME=" + home}, "verify-commit", "--raw", c)
		if err != nil || !strings.Contains(out, "GOODSIG") || !strings.Contains(out, f.key.Fingerprint()) {
			t.Fatalf("git verify-commit %s: %v\n%s", c, err, out)
		}
	}
}

// TestGroupCommitChainsQueuedRequests queues requests behind a group in
// flight: they go out in one push, each its own signed commit with its own
// trailers, in arrival order.
func TestGroupCommitChainsQueuedRequests(t *testing.T) {
	const n = 8
	f := newTxnFixture(t, map[string]string{"seed.yaml": "s: 1\n"})
	ctx := context.Background()
	g := newGate()
	first := f.requestN(0, createFile("apps/0.yaml", "v: 0\n"))
	first.CheckBase = g.check
	before := f.remote.Head(t)
	f.srv.ResetStats()
	var pushMu sync.Mutex
	var pushes []GroupPush
	f.repo.OnPush = func(p GroupPush) {
		pushMu.Lock()
		defer pushMu.Unlock()
		pushes = append(pushes, p)
	}
	firstDone := submit(t, ctx, f.repo, first, 0)
	<-g.started
	var rest []<-chan outcome
	for i := 1; i <= n; i++ {
		rest = append(rest, submit(t, ctx, f.repo, f.requestN(i, createFile(fmt.Sprintf("apps/%d.yaml", i), fmt.Sprintf("v: %d\n", i))), i))
	}
	if q, held := f.repo.Queued(); q != n || held <= 0 {
		t.Fatalf("Queued() = %d requests, %d bytes while %d wait behind the first", q, held, n)
	}
	close(g.release)

	o := <-firstDone
	if o.err != nil || o.res.Parent != before {
		t.Fatalf("first: %+v %v", o.res, o.err)
	}
	parent := o.res.Commit
	commits := []string{o.res.Commit}
	for i, ch := range rest {
		o := <-ch
		if o.err != nil {
			t.Fatalf("request %d: %v", i+1, o.err)
		}
		// Arrival order: each commit sits on the one before it.
		want := fmt.Sprintf("apps/%d.yaml", i+1)
		if o.res.Parent != parent || o.res.NoOp || len(o.res.ChangedPaths) != 1 || o.res.ChangedPaths[0] != want || o.res.Attempts != 1 {
			t.Fatalf("request %d: %+v, want parent %s and changed %s", i+1, o.res, parent, want)
		}
		parent = o.res.Commit
		commits = append(commits, o.res.Commit)
	}
	if head := f.remote.Head(t); head != parent {
		t.Fatalf("server head %s, last answer %s", head, parent)
	}
	if st := f.srv.Stats(); st.ReceivePacks != 2 {
		t.Fatalf("%d pushes for %d requests queued behind one, want 2", st.ReceivePacks, n)
	}
	// OnPush heard both pushes, each with the commits it carried.
	pushMu.Lock()
	heard := append([]GroupPush(nil), pushes...)
	pushMu.Unlock()
	if len(heard) != 2 || heard[0].Commits != 1 || heard[0].Commit != commits[0] || heard[1].Commits != n || heard[1].Commit != parent ||
		heard[1].Branch != "main" || heard[1].Duration <= 0 {
		t.Fatalf("OnPush heard %+v, want the first alone, then %d commits ending at %s", heard, n, parent)
	}
	if q, held := f.repo.Queued(); q != 0 || held != 0 {
		t.Fatalf("Queued() = %d requests, %d bytes once every request was answered", q, held)
	}
	if out, err := gitIn(t, f.remote.Dir, nil, "fsck", "--strict"); err != nil {
		t.Fatalf("git fsck: %v\n%s", err, out)
	}
	for i, c := range commits {
		msg, _ := gitIn(t, f.remote.Dir, nil, "log", "-1", "--format=%B", c)
		want := fmt.Sprintf("Bump app %d\n\nRequested-By: entity_%d (id-%d)\nVault-Request-Id: req-%d\n%s", i, i, i, i, f.targetTrailers(t))
		if msg != want {
			t.Fatalf("commit %d message:\n%s\nwant\n%s", i, msg, want)
		}
	}
	f.verifyCommits(t, commits...)
}

// TestGroupMemberFailsAlone: in one group, a request whose edit fails on the
// tip it lands on answers its own error; no-ops and dry runs keep their
// meaning; the others land.
func TestGroupMemberFailsAlone(t *testing.T) {
	f := newTxnFixture(t, map[string]string{"taken.yaml": "t: 1\n", "values.yaml": "image:\n  tag: \"1.0\"\n"})
	ctx := context.Background()
	noOverwrite := "x: 1\n"
	tests := []struct {
		name    string
		req     TxnRequest
		check   func(error) bool
		noOp    bool
		dryRun  bool
		changed string
	}{
		{name: "lands", req: f.requestN(1, createFile("a.yaml", "a: 1\n")), changed: "a.yaml"},
		{name: "a file that exists, without overwrite: conflict",
			req:   f.requestN(2, Command{Path: "taken.yaml", CreateFile: &CreateFile{Content: &noOverwrite}}),
			check: func(err error) bool { var pe *Error; return errors.As(err, &pe) && pe.Kind == KindConflict }},
		{name: "lands after the conflict", req: f.requestN(3, createFile("b.yaml", "b: 1\n")), changed: "b.yaml"},
		{name: "a field that is not there: not found",
			req:   f.requestN(4, Command{Path: "values.yaml", SetField: &SetField{Field: "image.missing.deeper", Value: []byte(`"x"`)}}),
			check: func(err error) bool { var pe *Error; return errors.As(err, &pe) && pe.Kind == KindNotFound }},
		{name: "what an earlier member of the group wrote is a no-op", req: f.requestN(5, createFile("a.yaml", "a: 1\n")), noOp: true},
		{name: "a dry run pushes nothing", req: func() TxnRequest {
			r := f.requestN(6, createFile("dry.yaml", "d: 1\n"))
			r.DryRun = true
			return r
		}(), dryRun: true, changed: "dry.yaml"},
		{name: "lands last", req: f.requestN(7, Command{Path: "values.yaml", SetField: &SetField{Field: "image.tag", Value: []byte(`"1.1"`)}}), changed: "values.yaml"},
	}
	g := newGate()
	first := f.requestN(0, createFile("first.yaml", "f: 1\n"))
	first.CheckBase = g.check
	firstDone := submit(t, ctx, f.repo, first, 0)
	<-g.started
	var chans []<-chan outcome
	for i, tc := range tests {
		chans = append(chans, submit(t, ctx, f.repo, tc.req, i+1))
	}
	close(g.release)
	if o := <-firstDone; o.err != nil {
		t.Fatal(o.err)
	}
	var landed []string
	for i, tc := range tests {
		o := <-chans[i]
		t.Run(tc.name, func(t *testing.T) {
			switch {
			case tc.check != nil:
				if !tc.check(o.err) {
					t.Fatalf("err = %v", o.err)
				}
			case o.err != nil:
				t.Fatal(o.err)
			case o.res.NoOp != tc.noOp || (tc.dryRun && (o.res.Diff == "" || o.res.Commit != "")):
				t.Fatalf("result %+v", o.res)
			case tc.changed != "" && strings.Join(o.res.ChangedPaths, ",") != tc.changed:
				t.Fatalf("changed paths %v, want %s", o.res.ChangedPaths, tc.changed)
			}
		})
		if o.err == nil && !o.res.NoOp && !tc.dryRun {
			landed = append(landed, o.res.Commit)
		}
	}
	head := f.remote.Head(t)
	if len(landed) != 3 || landed[2] != head {
		t.Fatalf("landed %v, head %s", landed, head)
	}
	for path, want := range map[string]string{"a.yaml": "a: 1\n", "b.yaml": "b: 1\n", "taken.yaml": "t: 1\n", "values.yaml": "image:\n  tag: \"1.1\"\n", "dry.yaml": ""} {
		if got := f.show(t, head, path); got != want {
			t.Errorf("%s = %q, want %q", path, got, want)
		}
	}
	if n, _ := gitIn(t, f.remote.Dir, nil, "rev-list", "--count", head); n != "5" {
		t.Fatalf("%s commits on the branch, want 5 (initial, first, three landed)", n)
	}
}

// TestGroupCallerGoneIsNotCommitted: a request whose caller leaves while it
// waits in the queue, or while its group is being built, is never pushed.
func TestGroupCallerGoneIsNotCommitted(t *testing.T) {
	tests := []struct {
		name string
		// inCheck cancels from the request's own CheckBase: the group has
		// taken it and built nothing pushed yet.
		inCheck bool
	}{
		{"gone while queued", false},
		{"gone while its group is built", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newTxnFixture(t, map[string]string{"seed.yaml": "s: 1\n"})
			g := newGate()
			first := f.requestN(0, createFile("first.yaml", "f: 1\n"))
			first.CheckBase = g.check
			firstDone := submit(t, context.Background(), f.repo, first, 0)
			<-g.started

			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			gone := f.requestN(1, createFile("gone.yaml", "g: 1\n"))
			if tc.inCheck {
				gone.CheckBase = func(context.Context, string, *gitwatch.Mirror) error { cancel(); return nil }
			}
			goneDone := submit(t, ctx, f.repo, gone, 1)
			stayDone := submit(t, context.Background(), f.repo, f.requestN(2, createFile("stay.yaml", "s: 2\n")), 2)
			if !tc.inCheck {
				cancel()
				if o := <-goneDone; !errors.Is(o.err, context.Canceled) {
					t.Fatalf("gone: %+v %v", o.res, o.err)
				}
			}
			close(g.release)
			if o := <-firstDone; o.err != nil {
				t.Fatal(o.err)
			}
			if tc.inCheck {
				if o := <-goneDone; !errors.Is(o.err, context.Canceled) {
					t.Fatalf("gone: %+v %v", o.res, o.err)
				}
			}
			o := <-stayDone
			if o.err != nil {
				t.Fatal(o.err)
			}
			head := f.remote.Head(t)
			if o.res.Commit != head || f.show(t, head, "stay.yaml") == "" || f.show(t, head, "gone.yaml") != "" {
				t.Fatalf("stay %+v, head %s; gone.yaml = %q", o.res, head, f.show(t, head, "gone.yaml"))
			}
		})
	}
}

// TestGroupQueueBounds: a full queue refuses at once with a retry time; a
// group holds at most MaxGroup requests and MaxGroupBytes of them.
func TestGroupQueueBounds(t *testing.T) {
	tests := []struct {
		name      string
		limits    GroupLimits
		queue     int
		refused   int
		wantPush  int // pushes after the first group's
		bigValues bool
	}{
		{name: "a full queue answers QueueFullError", limits: GroupLimits{MaxQueued: 3}, queue: 5, refused: 2, wantPush: 1},
		{name: "groups of at most MaxGroup", limits: GroupLimits{MaxGroup: 3}, queue: 7, wantPush: 3},
		{name: "groups of at most MaxGroupBytes", limits: GroupLimits{MaxGroupBytes: 1000}, queue: 3, wantPush: 3, bigValues: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newTxnFixture(t, map[string]string{"seed.yaml": "s: 1\n"})
			f.repo.Group = tc.limits
			g := newGate()
			first := f.requestN(0, createFile("first.yaml", "f: 1\n"))
			first.CheckBase = g.check
			firstDone := submit(t, context.Background(), f.repo, first, 0)
			<-g.started
			f.srv.ResetStats()
			var chans []<-chan outcome
			refused := 0
			for i := 1; i <= tc.queue; i++ {
				content := fmt.Sprintf("v: %d\n", i)
				if tc.bigValues {
					content = fmt.Sprintf("v: %d\npad: %s\n", i, strings.Repeat("x", 600))
				}
				req := f.requestN(i, createFile(fmt.Sprintf("apps/%d.yaml", i), content))
				if i > tc.queue-tc.refused {
					_, err := f.repo.Patch(context.Background(), req)
					var full *QueueFullError
					if !errors.As(err, &full) || full.Queued != tc.limits.MaxQueued || full.RetryAfter < time.Second || !strings.Contains(err.Error(), "retry in") {
						t.Fatalf("request %d: err = %v, want a QueueFullError with a retry time", i, err)
					}
					refused++
					continue
				}
				chans = append(chans, submit(t, context.Background(), f.repo, req, i))
			}
			close(g.release)
			if o := <-firstDone; o.err != nil {
				t.Fatal(o.err)
			}
			for i, ch := range chans {
				if o := <-ch; o.err != nil {
					t.Fatalf("request %d: %v", i+1, o.err)
				}
			}
			if st := f.srv.Stats(); st.ReceivePacks != 1+tc.wantPush {
				t.Fatalf("%d pushes, want %d (the first group and %d more)", st.ReceivePacks, 1+tc.wantPush, tc.wantPush)
			}
			head := f.remote.Head(t)
			if n, _ := gitIn(t, f.remote.Dir, nil, "rev-list", "--count", head); n != fmt.Sprint(2+len(chans)) {
				t.Fatalf("%s commits, want %d", n, 2+len(chans))
			}
		})
	}
}

// TestGroupRacingOutsidePush: another writer pushes while a group is in
// flight; the group re-fetches and everything lands on top of it.
func TestGroupRacingOutsidePush(t *testing.T) {
	f := newTxnFixture(t, map[string]string{"seed.yaml": "s: 1\n"})
	g := newGate()
	first := f.requestN(0, createFile("apps/0.yaml", "v: 0\n"))
	first.CheckBase = g.check
	firstDone := submit(t, context.Background(), f.repo, first, 0)
	<-g.started
	var chans []<-chan outcome
	for i := 1; i <= 5; i++ {
		chans = append(chans, submit(t, context.Background(), f.repo, f.requestN(i, createFile(fmt.Sprintf("apps/%d.yaml", i), fmt.Sprintf("v: %d\n", i))), i))
	}
	// The first group fetched the tip before its gate: this moves the
	// branch under it.
	outside := f.remote.CommitDirect(t, map[string]string{"theirs.yaml": "t: 1\n"}, "outside writer")
	close(g.release)
	o := <-firstDone
	if o.err != nil || o.res.Attempts != 2 || o.res.Parent != outside {
		t.Fatalf("first: %+v %v; want 2 attempts, built on %s", o.res, o.err, outside)
	}
	for i, ch := range chans {
		if o := <-ch; o.err != nil {
			t.Fatalf("request %d: %v", i+1, o.err)
		}
	}
	head := f.remote.Head(t)
	if out, err := gitIn(t, f.remote.Dir, nil, "merge-base", "--is-ancestor", outside, head); err != nil {
		t.Fatalf("the outside commit is not below the head: %s", out)
	}
	for i := range 6 {
		if got := f.show(t, head, fmt.Sprintf("apps/%d.yaml", i)); got != fmt.Sprintf("v: %d\n", i) {
			t.Fatalf("apps/%d.yaml = %q", i, got)
		}
	}
	if f.show(t, head, "theirs.yaml") != "t: 1\n" {
		t.Fatal("the outside write was lost")
	}
	if n, _ := gitIn(t, f.remote.Dir, nil, "rev-list", "--count", outside+".."+head); n != "6" {
		t.Fatalf("%s commits above the outside one, want 6", n)
	}
}

// TestPoolBoundsGroupsAcrossRepositories: with one slot, a second
// repository's group waits until the first's push is done, then runs.
func TestPoolBoundsGroupsAcrossRepositories(t *testing.T) {
	a := newTxnFixture(t, map[string]string{"a.yaml": "a: 1\n"})
	b := newTxnFixture(t, map[string]string{"b.yaml": "b: 1\n"})
	pool := NewPool(1)
	a.repo.Pool, b.repo.Pool = pool, pool
	g := newGate()
	reqA := a.requestN(0, createFile("a2.yaml", "a: 2\n"))
	reqA.CheckBase = g.check
	aDone := submit(t, context.Background(), a.repo, reqA, 0)
	<-g.started
	bChecked := make(chan struct{})
	reqB := b.requestN(1, createFile("b2.yaml", "b: 2\n"))
	reqB.CheckBase = func(context.Context, string, *gitwatch.Mirror) error { close(bChecked); return nil }
	bDone := submit(t, context.Background(), b.repo, reqB, 0)
	// B's worker holds its request and waits for the pool's only slot.
	waitFor(t, func() bool { return pool.Waiting() == 1 })
	select {
	case <-bChecked:
		t.Fatal("the second repository worked while the only slot was held")
	default:
	}
	close(g.release)
	if o := <-aDone; o.err != nil {
		t.Fatal(o.err)
	}
	if o := <-bDone; o.err != nil || b.remote.Head(t) != o.res.Commit {
		t.Fatalf("b: %+v %v", o.res, o.err)
	}
}

// TestShallowColdStart: a cold mirror fetches only the tip; pushes from it
// land on a real git server; later fetches are incremental; Deepen brings
// history for an operation that walks it.
func TestShallowColdStart(t *testing.T) {
	srv := gittest.NewServer(t)
	remote := srv.NewRepo(t, "infra")
	var history []string
	for i := range 5 {
		files := map[string]string{fmt.Sprintf("old/%d.yaml", i): strings.Repeat(fmt.Sprintf("line %d\n", i), 2000)}
		history = append(history, remote.Commit(t, files, gittest.Message(fmt.Sprintf("history %d", i))))
	}
	dir := filepath.Join(t.TempDir(), "mirror")
	r, err := OpenRepo(context.Background(), dir, Remote{
		URL: remote.URL(), Branch: "main",
		Auth: gitwatch.Auth{Username: srv.Username(), Password: srv.Password()},
	})
	if err != nil {
		t.Fatal(err)
	}
	k, err := GenerateSigningKey("flant_gitops", "flant_gitops@localhost", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	f := &txnFixture{srv: srv, remote: remote, repo: r, key: k}

	res, err := r.Patch(context.Background(), f.request(createFile("new.yaml", "n: 1\n")))
	if err != nil || res.Parent != history[4] {
		t.Fatalf("first patch: %+v %v", res, err)
	}
	if out, err := gitIn(t, dir, nil, "rev-parse", "--is-shallow-repository"); err != nil || out != "true" {
		t.Fatalf("the cold mirror is not shallow: %s %v", out, err)
	}
	if _, err := r.Mirror().Repository().CommitObject(plumbing.NewHash(history[3])); err == nil {
		t.Fatal("the cold mirror holds history below the tip")
	}
	if out, err := gitIn(t, remote.Dir, nil, "fsck", "--strict"); err != nil {
		t.Fatalf("git fsck on the server after a push from the shallow mirror: %v\n%s", err, out)
	}

	// Incremental: two outside commits, then a patch fetches only them.
	remote.Git(t, "pull", "--quiet", "--ff-only", "origin", "main")
	remote.Commit(t, map[string]string{"o1.yaml": "o: 1\n"})
	outside := remote.Commit(t, map[string]string{"o2.yaml": "o: 2\n"})
	srv.ResetStats()
	res, err = r.Patch(context.Background(), f.request(createFile("new2.yaml", "n: 2\n")))
	if err != nil || res.Parent != outside || remote.Head(t) != res.Commit {
		t.Fatalf("second patch: %+v %v", res, err)
	}
	if st := srv.Stats(); st.UploadPackBytes > 4096 {
		t.Fatalf("the incremental fetch took %d bytes, want only the two small new commits", st.UploadPackBytes)
	}
	if got := f.show(t, res.Commit, "o1.yaml"); got != "o: 1\n" {
		t.Fatalf("o1.yaml = %q", got)
	}
	if out, err := gitIn(t, remote.Dir, nil, "fsck", "--strict"); err != nil {
		t.Fatalf("git fsck: %v\n%s", err, out)
	}

	// Deepen: history below the first fetched tip, on demand.
	if err := r.Mirror().Deepen(context.Background(), history[4], 3); err != nil {
		t.Fatal(err)
	}
	for _, h := range history[1:4] {
		if _, err := r.Mirror().Repository().CommitObject(plumbing.NewHash(h)); err != nil {
			t.Fatalf("commit %s missing after Deepen: %v", h, err)
		}
	}
}

// The marker a test hook refuses, as secret push protection refuses a key.
const (
	refusedMarker = "FORBIDDEN-MARKER"
	refusedReason = "push protection: a secret was found in the commit, remove it"
)

// TestGroupRefusedMemberAlone: the server's pre-receive hook refuses any
// push holding a commit that adds the marker. Queued behind a group in
// flight, the members go out as one group; each answers what its own push
// alone would have: the clean ones land (each its own commit, in arrival
// order), a marked one answers a RefusedError naming the hook's reason, and
// nothing marked reaches the branch. A no-op on top of a refused commit is
// rebuilt without it and answers for its own content.
func TestGroupRefusedMemberAlone(t *testing.T) {
	tests := []struct {
		name  string
		n     int
		bad   []int
		noOps map[int]int // member -> the marked member whose file it writes again
	}{
		{name: "one of eight", n: 8, bad: []int{3}},
		{name: "the first and the last of eight", n: 8, bad: []int{0, 7}},
		{name: "three of sixteen", n: 16, bad: []int{2, 9, 10}},
		{name: "every one of four", n: 4, bad: []int{0, 1, 2, 3}},
		{name: "a no-op on a refused commit is refused for its own content", n: 6, bad: []int{1}, noOps: map[int]int{4: 1}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newTxnFixture(t, map[string]string{"seed.yaml": "s: 1\n"})
			f.remote.PreReceive(t, gittest.RefuseContent(refusedMarker, refusedReason))
			bad := map[int]bool{}
			for _, i := range tc.bad {
				bad[i] = true
			}
			content := func(i int) string {
				if j, ok := tc.noOps[i]; ok {
					i = j
				}
				if bad[i] {
					return fmt.Sprintf("v: %d\ntoken: %s-%d\n", i, refusedMarker, i)
				}
				return fmt.Sprintf("v: %d\n", i)
			}
			file := func(i int) string {
				if j, ok := tc.noOps[i]; ok {
					i = j
				}
				return fmt.Sprintf("apps/%d.yaml", i)
			}
			refused := func(i int) bool {
				j, noOp := tc.noOps[i]
				return bad[i] || noOp && bad[j]
			}
			g := newGate()
			first := f.requestN(100, createFile("first.yaml", "f: 1\n"))
			first.CheckBase = g.check
			firstDone := submit(t, context.Background(), f.repo, first, 0)
			<-g.started
			var chans []<-chan outcome
			for i := range tc.n {
				chans = append(chans, submit(t, context.Background(), f.repo, f.requestN(i, createFile(file(i), content(i))), i+1))
			}
			f.srv.ResetStats()
			close(g.release)
			if o := <-firstDone; o.err != nil {
				t.Fatal(o.err)
			}
			var landed []string
			for i, ch := range chans {
				o := <-ch
				var re *RefusedError
				switch {
				case refused(i) && (!errors.As(o.err, &re) || !strings.Contains(o.err.Error(), refusedReason) || !strings.Contains(o.err.Error(), f.remote.URL())):
					t.Fatalf("member %d: %+v %v, want a RefusedError naming the hook's reason", i, o.res, o.err)
				case !refused(i) && (o.err != nil || o.res.NoOp):
					t.Fatalf("member %d: %+v %v, want it landed", i, o.res, o.err)
				case !refused(i):
					if len(landed) > 0 && o.res.Parent != landed[len(landed)-1] {
						t.Fatalf("member %d built on %s, want the previous member's %s", i, o.res.Parent, landed[len(landed)-1])
					}
					landed = append(landed, o.res.Commit)
				}
			}
			head := f.remote.Head(t)
			if want := tc.n - len(tc.bad) - len(tc.noOps); len(landed) != want {
				t.Fatalf("%d landed, want %d", len(landed), want)
			}
			if len(landed) > 0 && landed[len(landed)-1] != head {
				t.Fatalf("head %s, last landed %s", head, landed[len(landed)-1])
			}
			for i := range tc.n {
				if got := f.show(t, head, file(i)); (got == content(i)) == refused(i) {
					t.Fatalf("%s = %q on the branch (refused: %v)", file(i), got, refused(i))
				}
			}
			if out, _ := gitIn(t, f.remote.Dir, nil, "log", "-p", head); strings.Contains(out, refusedMarker) {
				t.Fatal("a marked commit reached the branch")
			}
			// The first group's push is counted too.
			t.Logf("%d members, %d refused: %d pushes", tc.n, len(tc.bad)+len(tc.noOps), f.srv.Stats().ReceivePacks-1)
		})
	}
}

// TestGroupFairShare: one caller's no-op requests fill a branch's queue (by
// count, or by bytes) behind a group in flight. Another caller's request is
// still accepted: the first caller's newest waiting request makes room for
// it and answers a FairShare QueueFullError; the first caller, above its
// share while others wait, is refused, the others are not. The newcomer goes
// out in the next group, not behind the first caller's backlog.
func TestGroupFairShare(t *testing.T) {
	big := strings.Repeat("x", 8<<10)
	tests := []struct {
		name    string
		limits  GroupLimits
		fill    int // the first caller's requests that fit
		content string
	}{
		{name: "256 requests fill the queue", limits: GroupLimits{MaxQueued: 256}, fill: 256, content: "s: 1\n"},
		{name: "requests of 8 KiB fill the byte budget", fill: 10, content: "s: " + big + "\n"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newTxnFixture(t, map[string]string{"seed.yaml": tc.content})
			g := newGate()
			first := f.requestN(0, createFile("first.yaml", "f: 1\n"))
			first.CheckBase = g.check
			noOp := func(i int) TxnRequest {
				req := f.requestN(i, createFile("seed.yaml", tc.content))
				req.Caller = "entity-flood"
				return req
			}
			f.repo.Group = tc.limits
			if tc.limits == (GroupLimits{}) {
				// The group in flight and the flood fill it to the byte.
				f.repo.Group.MaxQueuedBytes = requestSize(first) + int64(tc.fill)*requestSize(noOp(0))
			}
			firstDone := submit(t, context.Background(), f.repo, first, 0)
			<-g.started
			var flood []<-chan outcome
			for i := range tc.fill {
				flood = append(flood, submit(t, context.Background(), f.repo, noOp(i), i+1))
			}
			if _, err := f.repo.Patch(context.Background(), noOp(tc.fill)); !isQueueFull(err, -1) {
				t.Fatalf("one more from the same caller: %v, want a QueueFullError", err)
			}

			// Another project's request is accepted, and goes in the next
			// group: when it is checked, most of the flood still waits.
			var waitingAtCheck int
			other := f.requestN(1000, createFile("other.yaml", "o: 1\n"))
			other.Caller = "entity-other"
			other.CheckBase = func(context.Context, string, *gitwatch.Mirror) error {
				waitingAtCheck = f.repo.queued()
				return nil
			}
			otherDone := submit(t, context.Background(), f.repo, other, 0)
			// The flood's newest made room for it (in the same step).
			if o := <-flood[tc.fill-1]; !isQueueFull(o.err, FairShare) || !strings.Contains(o.err.Error(), "taken out of the queue") {
				t.Fatalf("the flood's newest: %v, want a FairShare QueueFullError", o.err)
			}
			// Above its share while another waits: refused, for it only.
			if _, err := f.repo.Patch(context.Background(), noOp(tc.fill+1)); !isQueueFull(err, FairShare) {
				t.Fatalf("the flood again: %v, want a FairShare QueueFullError", err)
			}
			close(g.release)
			if o := <-firstDone; o.err != nil {
				t.Fatal(o.err)
			}
			o := <-otherDone
			if o.err != nil || f.remote.Head(t) != o.res.Commit && f.show(t, f.remote.Head(t), "other.yaml") != "o: 1\n" {
				t.Fatalf("the other caller: %+v %v, want it landed", o.res, o.err)
			}
			if tc.fill > 64 && waitingAtCheck < tc.fill-64 {
				t.Fatalf("%d of the flood waited when the other caller's group ran, want its group to be the next (at least %d waiting)", waitingAtCheck, tc.fill-64)
			}
			for i, ch := range flood[:tc.fill-1] {
				if o := <-ch; o.err != nil || !o.res.NoOp {
					t.Fatalf("flood %d: %+v %v", i, o.res, o.err)
				}
			}
		})
	}
}

// isQueueFull: err is a QueueFullError of kind (any kind when -1).
func isQueueFull(err error, kind QueueFullKind) bool {
	var full *QueueFullError
	return errors.As(err, &full) && (kind < 0 || full.Kind == kind) && full.RetryAfter >= time.Second && strings.Contains(err.Error(), "retry in")
}

// TestGroupQueueBytesBoundHeap: 16 requests of 24 MiB (24 files of 1 MiB,
// within Vault's default request and JSON string limits) arrive behind a
// push in flight, with small requests of other callers. The branch's and
// the plugin's byte budgets (sized from the memory limit, the default here)
// refuse what does not fit with a QueueBytes or PluginBytes error and a time
// to retry, so the heap held while they wait stays bounded; the small
// requests land, and so do the big ones that fit.
func TestGroupQueueBytesBoundHeap(t *testing.T) {
	for _, tc := range []struct {
		name     string
		memLimit int64
	}{
		{"the default memory limit", DefaultMemoryLimit},
		{"GOMEMLIMIT=1GiB", 1 << 30},
	} {
		t.Run(tc.name, func(t *testing.T) {
			old := debug.SetMemoryLimit(tc.memLimit)
			defer debug.SetMemoryLimit(old)
			testQueueBytesBoundHeap(t)
		})
	}
}

func testQueueBytesBoundHeap(t *testing.T) {
	const big, bigMiB, small = 16, 24, 4
	f := newTxnFixture(t, map[string]string{"seed.yaml": "s: 1\n"})
	plugin, branch := QueueBudgets()
	f.repo.Budget = NewBudget(plugin)
	g := newGate()
	first := f.requestN(0, createFile("first.yaml", "f: 1\n"))
	first.CheckBase = g.check
	firstDone := submit(t, context.Background(), f.repo, first, 0)
	<-g.started

	heap := func() uint64 {
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m.HeapAlloc
	}
	before := heap()
	bigDone := make(chan outcome, big)
	for i := range big {
		go func() {
			// Built here, so that nothing but the queue keeps it.
			var cmds []Command
			for j := range bigMiB {
				cmds = append(cmds, createFile(fmt.Sprintf("big/%d/%d.txt", i, j), strings.Repeat(string(rune('a'+j)), 1<<20)))
			}
			req := f.requestN(100+i, cmds...)
			req.Caller = fmt.Sprintf("entity-big-%d", i)
			res, err := f.repo.Patch(context.Background(), req)
			bigDone <- outcome{res, err}
		}()
	}
	var smallDone []<-chan outcome
	for i := range small {
		req := f.requestN(200+i, createFile(fmt.Sprintf("small/%d.yaml", i), fmt.Sprintf("v: %d\n", i)))
		req.Caller = fmt.Sprintf("entity-small-%d", i)
		smallDone = append(smallDone, submit(t, context.Background(), f.repo, req, 0))
	}
	// Every big one is answered or waiting.
	refused := 0
	waitFor(t, func() bool {
		for {
			select {
			case o := <-bigDone:
				var full *QueueFullError
				if !errors.As(o.err, &full) || full.Kind != QueueBytes && full.Kind != PluginBytes || !strings.Contains(o.err.Error(), "retry in") {
					t.Fatalf("a big request: %v, want a byte budget's QueueFullError", o.err)
				}
				refused++
			default:
				return refused+f.repo.queued() >= big+small
			}
		}
	})
	after := heap()
	held := after - min(after, before)
	t.Logf("budgets: plugin %s, branch %s; %d of %d requests of %d MiB refused; the heap grew by %s while they waited (without the budgets: about %d MiB)",
		mib(plugin), mib(branch), refused, big, bigMiB, mib(int64(held)), big*bigMiB)
	if limit := uint64(2 * plugin); held > limit {
		t.Fatalf("the heap grew by %s while the requests waited, want at most %s (twice the plugin's budget)", mib(int64(held)), mib(int64(limit)))
	}
	close(g.release)
	if o := <-firstDone; o.err != nil {
		t.Fatal(o.err)
	}
	for i, ch := range smallDone {
		if o := <-ch; o.err != nil || o.res.NoOp {
			t.Fatalf("small request %d: %+v %v, want it landed", i, o.res, o.err)
		}
	}
	for range big - refused {
		if o := <-bigDone; o.err != nil {
			t.Fatalf("a big request that waited: %v", o.err)
		}
	}
	if f.repo.Budget.Used() != 0 {
		t.Fatalf("the plugin's budget holds %d bytes after every request finished", f.repo.Budget.Used())
	}
}

// TestRemoteMessages: what the server prints on the sideband reaches the
// caller as one bounded line, without control characters.
func TestRemoteMessages(t *testing.T) {
	tests := []struct {
		name string
		in   []string
		want string
	}{
		{"lines joined", []string{"remote: first\n", "second\r\n"}, "first; second"},
		{"colour codes and progress dropped", []string{"\x1b[31mrefused\x1b[0m\r", "\r\n"}, "[31mrefused[0m"},
		{"empty", []string{"\n\n"}, ""},
		{"bounded", []string{strings.Repeat("x", 3*maxRemoteMessage)}, strings.Repeat("x", maxRemoteMessage)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := &remoteMessages{}
			for _, s := range tc.in {
				if n, err := m.Write([]byte(s)); n != len(s) || err != nil {
					t.Fatalf("Write = %d, %v", n, err)
				}
			}
			if got := m.text(); got != tc.want {
				t.Fatalf("text() = %q, want %q", got, tc.want)
			}
		})
	}
}
