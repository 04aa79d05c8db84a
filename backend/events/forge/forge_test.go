package forge_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/flant/flant_gitops/backend/events"
	"github.com/flant/flant_gitops/backend/events/forge"
	"github.com/flant/flant_gitops/backend/events/forge/forgetest"
)

const (
	token = "ghp_0123456789abcdefABCDEF0123456789abcd"
	sha   = "0123456789abcdef0123456789abcdef01234567"
)

type fake struct {
	name     forge.Provider
	start    func(t testing.TB, token, repo string) *forgetest.Server
	repo     string
	apiURL   func(*forgetest.Server) string
	pending  string
	failed   string
	canceled string
}

var fakes = []fake{
	{forge.GitHub, forgetest.NewGitHub, "acme/deploy", (*forgetest.Server).APIURL, "pending", "failure", "error"},
	{forge.GitHub, forgetest.NewGitHubEnterprise, "acme/deploy", (*forgetest.Server).APIURL, "pending", "failure", "error"},
	{forge.GitLab, forgetest.NewGitLab, "platform/infra/deploy", func(s *forgetest.Server) string { return s.URL }, "running", "failed", "canceled"},
	{forge.Gitea, forgetest.NewGitea, "acme/deploy", func(s *forgetest.Server) string { return s.URL }, "pending", "failure", "error"},
}

func TestClientAgainstEachForge(t *testing.T) {
	for _, f := range fakes {
		t.Run(string(f.name), func(t *testing.T) {
			srv := f.start(t, token, f.repo)
			c, err := forge.NewClient(f.name, nil)
			if err != nil {
				t.Fatal(err)
			}
			target := forge.Target{Provider: f.name, APIURL: f.apiURL(srv), Repository: f.repo, Token: token}
			ctx := context.Background()
			for _, st := range []forge.State{forge.Pending, forge.Failure, forge.Success, forge.Canceled} {
				err := c.SetStatus(ctx, target, forge.Status{Commit: sha, State: st, Context: "flant_gitops/abcd1234", Description: "d " + string(st), TargetURL: "https://dash.example.com/runs/r1", Ref: "main"})
				if err != nil {
					t.Fatalf("%s: %v", st, err)
				}
			}
			got := srv.Accepted()
			want := []string{f.pending, f.failed, "success", f.canceled}
			if len(got) != len(want) {
				t.Fatalf("accepted %d statuses, want %d: %+v", len(got), len(want), got)
			}
			for i, g := range got {
				wantRef := ""
				if f.name == forge.GitLab {
					wantRef = "main"
				}
				if g.State != want[i] || g.SHA != sha || g.Context != "flant_gitops/abcd1234" || g.TargetURL != "https://dash.example.com/runs/r1" || g.Repository != f.repo || g.Ref != wantRef {
					t.Errorf("status %d = %+v, want state %s", i, g, want[i])
				}
			}

			// A bad token and an unknown repository are refused for good.
			bad := target
			bad.Token = "wrong-token"
			var fe *forge.Error
			if err := c.SetStatus(ctx, bad, forge.Status{Commit: sha, State: forge.Success, Context: "c"}); !errors.As(err, &fe) || fe.Code != 401 || fe.Temporary {
				t.Errorf("bad token: %v, want a final 401", err)
			}
			other := target
			other.Repository = "acme/other"
			if err := c.SetStatus(ctx, other, forge.Status{Commit: sha, State: forge.Success, Context: "c"}); !errors.As(err, &fe) || fe.Code != 404 || fe.Temporary {
				t.Errorf("unknown repository: %v, want a final 404", err)
			}
			for _, b := range srv.Bodies() {
				if strings.Contains(b, token) {
					t.Fatalf("a request body carries the token: %s", b)
				}
			}
		})
	}
}

func TestRateLimitAnswersAreTemporaryWithTheirWait(t *testing.T) {
	cases := []struct {
		name  string
		f     fake
		limit forgetest.Limit
		code  int
	}{
		{"github secondary", fakes[0], forgetest.Secondary, 403},
		{"github primary", fakes[0], forgetest.Primary, 403},
		{"github 429", fakes[0], forgetest.TooMany, 429},
		{"gitlab 429", fakes[2], forgetest.TooMany, 429},
		{"gitea 503", fakes[3], forgetest.Unavailable, 503},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			srv := tc.f.start(t, token, tc.f.repo)
			srv.RateLimitNext(7, tc.limit)
			c, _ := forge.NewClient(tc.f.name, nil)
			target := forge.Target{Provider: tc.f.name, APIURL: tc.f.apiURL(srv), Repository: tc.f.repo, Token: token}
			err := c.SetStatus(context.Background(), target, forge.Status{Commit: sha, State: forge.Pending, Context: "c"})
			var fe *forge.Error
			if !errors.As(err, &fe) || !fe.Temporary || fe.Code != tc.code {
				t.Fatalf("err = %#v, want a temporary %d", err, tc.code)
			}
			if tc.limit != forgetest.Unavailable && (fe.RetryAfter < 5*time.Second || fe.RetryAfter > 10*time.Second) {
				t.Errorf("RetryAfter = %s, want about the 7 s the forge asked", fe.RetryAfter)
			}
			if err := c.SetStatus(context.Background(), target, forge.Status{Commit: sha, State: forge.Pending, Context: "c"}); err != nil {
				t.Fatalf("after the limit: %v", err)
			}
		})
	}
}

func TestGitLabSameStateIsDone(t *testing.T) {
	srv := forgetest.NewGitLab(t, token, "g/p")
	c, _ := forge.NewClient(forge.GitLab, nil)
	target := forge.Target{Provider: forge.GitLab, APIURL: srv.URL, Repository: "g/p", Token: token}
	st := forge.Status{Commit: sha, State: forge.Pending, Context: "c", Description: "running r1"}
	if err := c.SetStatus(context.Background(), target, st); err != nil {
		t.Fatal(err)
	}
	if err := c.SetStatus(context.Background(), target, st); !errors.Is(err, forge.ErrAlreadySet) {
		t.Fatalf("second running: %v, want ErrAlreadySet", err)
	}
}

func TestGitHubValidationIsFinal(t *testing.T) {
	srv := forgetest.NewGitHub(t, token, "a/b")
	srv.AllowViolations = true // the test sends what GitHub refuses on purpose
	c, _ := forge.NewClient(forge.GitHub, nil)
	target := forge.Target{Provider: forge.GitHub, APIURL: srv.URL, Repository: "a/b", Token: token}
	err := c.SetStatus(context.Background(), target, forge.Status{Commit: sha, State: forge.Success, Context: "c", Description: strings.Repeat("x", 141)})
	var fe *forge.Error
	if !errors.As(err, &fe) || fe.Code != 422 || fe.Temporary || !strings.Contains(fe.Message, "description") {
		t.Fatalf("err = %v, want a final 422 naming description", err)
	}
	if len(srv.Violations()) != 1 {
		t.Fatalf("violations = %v", srv.Violations())
	}
}

func TestDescribe(t *testing.T) {
	run := "20260101T000000.000000Z-a1b2c3"
	long := strings.Repeat("the command failed in a long way ", 20)
	cases := []struct {
		name  string
		p     forge.Provider
		e     events.Event
		state forge.State
		desc  string // prefix
		none  bool
	}{
		{"started", forge.GitHub, events.Event{Kind: events.RunStarted, Commit: sha, Run: run, Attempt: 1}, forge.Pending, "running " + run, false},
		{"started again", forge.GitHub, events.Event{Kind: events.RunStarted, Commit: sha, Run: run, Attempt: 3}, forge.Pending, "running " + run + " (attempt 3)", false},
		{"succeeded", forge.GitHub, events.Event{Kind: events.RunFinished, Commit: sha, Run: run, Outcome: events.RunSucceeded, Duration: 61500 * time.Millisecond}, forge.Success, "succeeded: run " + run + " in 1m2s", false},
		{"failed", forge.GitLab, events.Event{Kind: events.RunFinished, Commit: sha, Run: run, Outcome: events.RunFailed, Reason: "the command exited with status 2"}, forge.Failure, "failed: run " + run + ": the command exited with status 2", false},
		{"failed long", forge.GitHub, events.Event{Kind: events.RunFinished, Commit: sha, Run: run, Outcome: events.RunFailed, Reason: long}, forge.Failure, "failed: run " + run + ": the command", false},
		{"canceled", forge.GitHub, events.Event{Kind: events.RunFinished, Commit: sha, Run: run, Outcome: events.RunCanceled}, forge.Canceled, "canceled: run " + run, false},
		{"interrupted stays pending", forge.GitHub, events.Event{Kind: events.RunFinished, Commit: sha, Run: run, Outcome: events.RunInterrupted}, forge.Pending, "interrupted: run " + run, false},
		{"refused", forge.Gitea, events.Event{Kind: events.CommitRefused, Commit: sha, Signers: []string{"alice"}, Missing: []string{"1 more verified signature(s) of trusted signers (1 of 2)"}}, forge.Failure,
			"refused: missing 1 more verified signature(s) of trusted signers (1 of 2); signed by alice", false},
		{"refused, long ids shortened", forge.GitHub, events.Event{Kind: events.CommitRefused, Commit: sha,
			Signers: []string{"alice 0123456789ABCDEF0123456789ABCDEF01234567", "bob,robert FEDCBA9876543210FEDCBA9876543210FEDCBA98"},
			Missing: []string{"1 more verified signature(s) of trusted signers (2 of 3)"}}, forge.Failure,
			"refused: missing 1 more verified signature(s) of trusted signers (2 of 3); signed by alice 89ABCDEF01234567, bob,robert 76543210FEDCBA98", false},
		{"refused unsigned", forge.GitHub, events.Event{Kind: events.CommitRefused, Commit: sha, Missing: []string{"2 more"}}, forge.Failure, "refused: missing 2 more; no trusted signature", false},
		{"refused by ancestry", forge.GitHub, events.Event{Kind: events.CommitRefused, Commit: sha, Reason: "HEAD is not a descendant of the last successful commit"}, forge.Failure, "refused: HEAD is not a descendant", false},
		{"poll", forge.GitHub, events.Event{Kind: events.PollFinished, Commit: sha}, "", "", true},
		{"patch", forge.GitHub, events.Event{Kind: events.PatchFinished, Commit: sha}, "", "", true},
		{"no commit", forge.GitHub, events.Event{Kind: events.RunStarted}, "", "", true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			state, desc, ok := forge.Describe(tc.p, tc.e)
			if ok == tc.none {
				t.Fatalf("ok = %v", ok)
			}
			if tc.none {
				return
			}
			if state != tc.state || !strings.HasPrefix(desc, tc.desc) {
				t.Errorf("got %s %q, want %s %q...", state, desc, tc.state, tc.desc)
			}
			if n := len([]rune(desc)); n > forge.LimitsOf(tc.p).Description {
				t.Errorf("description of %d characters over %s's limit", n, tc.p)
			}
		})
	}
}

func TestScrub(t *testing.T) {
	cases := []struct{ in, gone, kept string }{
		{"login failed with hvs.CAESIJ0123456789abcdefghijklmnop", "hvs.CAES", "login failed"},
		{"token s.AbCdEfGhIjKlMnOpQrStUvWx used", "s.AbCdEf", "used"},
		{"push to https://oauth2:glpat-abcdefgh12345678@gitlab.example.com/g/p.git", "glpat-", "gitlab.example.com/g/p.git"},
		{"Authorization: Bearer abcdefghijklmnop1234", "abcdefghijklmnop1234", "Bearer"},
		{"password=hunter2hunter2 rejected", "hunter2", "rejected"},
		{"jwt eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl", "eyJ", "jwt"},
		{"random Zm9vYmFyYmF6cXV4MTIzNDU2Nzg5MGFiY2RlZmdo end", "Zm9vYmFy", "end"},
		{"commit " + sha + " is not a descendant of 89abcdef0123456789abcdef0123456789abcdef", "[redacted]", sha},
		{"configure required_number_of_verified_signatures_on_commit", "[redacted]", "required_number_of_verified_signatures_on_commit"},
		{"line one\nline two\ttab", "\n", "line one line two tab"},
		{"password: correcthorse is wrong", "correcthorse", "password"},
		{"the token expired; write trusted_pgp_public_key: the key is revoked", "[redacted]", "token expired; write trusted_pgp_public_key: the key is revoked"},
		{"token configured for another host", "[redacted]", "token configured for another host"},
	}
	for _, tc := range cases {
		out := forge.Scrub(tc.in)
		if strings.Contains(out, tc.gone) || !strings.Contains(out, tc.kept) {
			t.Errorf("Scrub(%q) = %q: want %q gone and %q kept", tc.in, out, tc.gone, tc.kept)
		}
	}
	if out := forge.Scrub("the secret is plainword", "plainword"); strings.Contains(out, "plainword") {
		t.Errorf("a configured secret stayed: %q", out)
	}
}

func TestTemplates(t *testing.T) {
	v := forge.Vars{Mount: "0123456789abcdef", Branch: "release/1.x", Repository: "acme/deploy", Run: "r-1", Commit: sha}
	if got := forge.Context("", v); got != "flant_gitops/01234567" {
		t.Errorf("default context = %q", got)
	}
	if got := forge.Context("deploy/{{branch}}/{{mount}}", v); got != "deploy/release/1.x/01234567" {
		t.Errorf("context = %q", got)
	}
	if got := forge.TargetURL("https://dash.example.com/{{branch}}/runs/{{run}}?c={{commit}}", v); got != "https://dash.example.com/release%2F1.x/runs/r-1?c="+sha {
		t.Errorf("target = %q", got)
	}
	if got := forge.TargetURL("https://dash.example.com/runs/{{run}}", forge.Vars{Commit: sha}); got != "" {
		t.Errorf("a refusal has no run, so no link: %q", got)
	}
	for _, bad := range []string{"{{user}}", "flant/{{mount", "   ", "x\ny", strings.Repeat("c", 200)} {
		if err := forge.CheckContextTemplate(forge.GitHub, bad); err == nil {
			t.Errorf("context template %q accepted", bad)
		}
	}
	for _, bad := range []string{"dash/{{run}}", "ftp://x/{{run}}", "https://u:p@x/{{run}}", "https://x/{{token}}"} {
		if err := forge.CheckTargetURLTemplate(bad); err == nil {
			t.Errorf("target template %q accepted", bad)
		}
	}
	if err := forge.CheckTargetURLTemplate("https://dash.example.com/runs/{{run}}"); err != nil {
		t.Error(err)
	}
}

func TestRepositoryFromURL(t *testing.T) {
	cases := []struct {
		p    forge.Provider
		url  string
		want string
	}{
		{forge.GitHub, "https://github.com/acme/deploy.git", "acme/deploy"},
		{forge.GitHub, "git@github.com:acme/deploy.git", "acme/deploy"},
		{forge.GitHub, "ssh://git@github.com/acme/deploy", "acme/deploy"},
		{forge.GitLab, "https://gitlab.example.com/platform/infra/deploy.git", "platform/infra/deploy"},
		{forge.GitLab, "ssh://git@gitlab.example.com:2222/platform/deploy.git", "platform/deploy"},
		{forge.Gitea, "http://127.0.0.1:3000/acme/deploy.git", "acme/deploy"},
		{forge.GitHub, "https://github.com/acme/sub/deploy.git", ""},
		{forge.GitLab, "https://gitlab.example.com/deploy.git", ""},
	}
	for _, tc := range cases {
		got, err := forge.RepositoryFromURL(tc.p, tc.url)
		if tc.want == "" {
			if err == nil {
				t.Errorf("%s %s: got %q, want an error", tc.p, tc.url, got)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("%s %s = %q, %v; want %q", tc.p, tc.url, got, err, tc.want)
		}
	}
}

// recorder is a Client that records statuses and fails as told.
type recorder struct {
	mu   sync.Mutex
	got  []forge.Status
	errs []error
	sent chan forge.Status
}

func (r *recorder) SetStatus(_ context.Context, _ forge.Target, s forge.Status) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.errs) > 0 {
		err := r.errs[0]
		r.errs = r.errs[1:]
		return err
	}
	r.got = append(r.got, s)
	r.sent <- s
	return nil
}

func newTestDeliverer(t *testing.T, c forge.Client, set *forge.Settings) *forge.Deliverer {
	return newCountingDeliverer(t, c, set, nil)
}

func newCountingDeliverer(t *testing.T, c forge.Client, set *forge.Settings, failed *atomic.Int64) *forge.Deliverer {
	opt := forge.Options{
		Settings:   func(context.Context) (*forge.Settings, error) { return set, nil },
		NewClient:  func(forge.Provider) (forge.Client, error) { return c, nil },
		MinBackoff: time.Millisecond,
		MaxBackoff: 4 * time.Millisecond,
	}
	if failed != nil {
		opt.FailedAttempt = func() { failed.Add(1) }
	}
	d := forge.NewDeliverer(opt)
	d.Start()
	t.Cleanup(func() { d.Stop(context.Background()) })
	return d
}

var settings = &forge.Settings{Provider: forge.GitHub, APIURL: "https://api.github.com", Token: token, RepoURL: "https://github.com/acme/deploy.git"}

func TestDelivererDedupesRefusals(t *testing.T) {
	rec := &recorder{sent: make(chan forge.Status, 10)}
	d := newTestDeliverer(t, rec, settings)
	refusal := events.Event{Kind: events.CommitRefused, Mount: "0123456789abcdef", Commit: sha, Missing: []string{"1 more"}}
	d.Handle(context.Background(), refusal)
	<-rec.sent
	for range 5 {
		d.Handle(context.Background(), refusal) // every poll publishes it again
	}
	other := refusal
	other.Missing = []string{"2 more"} // a trusted key was revoked: new words
	d.Handle(context.Background(), other)
	second := <-rec.sent
	if second.Description != "refused: missing 2 more; no trusted signature" {
		t.Fatalf("second status %q", second.Description)
	}
	waitFor(t, func() bool { return d.Snapshot().Delivered == 2 })
	snap := d.Snapshot()
	if snap.Skipped != 5 || len(rec.got) != 2 {
		t.Fatalf("snapshot %+v, sent %d", snap, len(rec.got))
	}
	if snap.Last == nil || snap.Last.Result != forge.ResultDelivered || snap.Last.Context != "flant_gitops/01234567" {
		t.Fatalf("last = %+v", snap.Last)
	}
}

func TestDelivererRetriesTemporaryAndGivesUpOnFinal(t *testing.T) {
	rec := &recorder{sent: make(chan forge.Status, 10), errs: []error{
		&forge.Error{Code: 502, Temporary: true, Message: "bad gateway"},
		&forge.Error{Code: 403, Temporary: true, RetryAfter: time.Millisecond, Message: "secondary rate limit"},
		&forge.Error{Message: "network down", Temporary: true},
	}}
	var failed atomic.Int64
	d := newCountingDeliverer(t, rec, settings, &failed)
	d.Handle(context.Background(), events.Event{Kind: events.RunStarted, Commit: sha, Run: "r1", Mount: "m"})
	got := <-rec.sent
	if got.State != forge.Pending {
		t.Fatalf("state %s", got.State)
	}
	waitFor(t, func() bool { return d.Snapshot().Delivered == 1 })
	snap := d.Snapshot()
	if snap.Last.Attempts != 4 || snap.Last.Result != forge.ResultDelivered {
		t.Fatalf("last = %+v, want delivered on the 4th attempt", snap.Last)
	}

	rec.mu.Lock()
	rec.errs = []error{&forge.Error{Code: 401, Message: "Bad credentials"}}
	rec.mu.Unlock()
	d.Handle(context.Background(), events.Event{Kind: events.RunFinished, Outcome: events.RunSucceeded, Commit: sha, Run: "r1", Mount: "m"})
	waitFor(t, func() bool { s := d.Snapshot(); return s.Failed == 1 })
	last := d.Snapshot().Last
	if last.Result != forge.ResultRefused || last.HTTPCode != 401 || last.Attempts != 1 {
		t.Fatalf("last = %+v, want refused 401 after one attempt", last)
	}
	if n := failed.Load(); n != 4 {
		t.Fatalf("%d failed attempts reported for the metrics, want 4 (three retried, one refused)", n)
	}
}

func TestDelivererGivesUpAfterItsBound(t *testing.T) {
	rec := &recorder{sent: make(chan forge.Status, 10)}
	for range 100 {
		rec.errs = append(rec.errs, &forge.Error{Code: 503, Temporary: true})
	}
	d := forge.NewDeliverer(forge.Options{
		Settings:    func(context.Context) (*forge.Settings, error) { return settings, nil },
		NewClient:   func(forge.Provider) (forge.Client, error) { return rec, nil },
		MinBackoff:  time.Millisecond,
		MaxBackoff:  2 * time.Millisecond,
		GiveUpAfter: 20 * time.Millisecond,
	})
	d.Start()
	defer d.Stop(context.Background())
	d.Handle(context.Background(), events.Event{Kind: events.RunStarted, Commit: sha, Run: "r1", Mount: "m"})
	waitFor(t, func() bool { return d.Snapshot().Failed == 1 })
	if last := d.Snapshot().Last; last.Result != forge.ResultGaveUp || last.HTTPCode != 503 {
		t.Fatalf("last = %+v", last)
	}
}

// blocker holds every attempt until released, so the test can queue more.
type blocker struct {
	recorder
	release chan struct{}
}

func (b *blocker) SetStatus(ctx context.Context, t forge.Target, s forge.Status) error {
	<-b.release
	return b.recorder.SetStatus(ctx, t, s)
}

func TestDelivererKeepsTheNewestStatePerCommit(t *testing.T) {
	b := &blocker{recorder: recorder{sent: make(chan forge.Status, 10)}, release: make(chan struct{})}
	d := newTestDeliverer(t, b, settings)
	other := strings.Repeat("b", 40)
	d.Handle(context.Background(), events.Event{Kind: events.RunStarted, Commit: other, Run: "r0", Mount: "m"}) // in flight
	waitFor(t, func() bool { return d.Snapshot().Queued == 0 })
	d.Handle(context.Background(), events.Event{Kind: events.RunStarted, Commit: sha, Run: "r1", Mount: "m"})
	d.Handle(context.Background(), events.Event{Kind: events.RunFinished, Outcome: events.RunFailed, Commit: sha, Run: "r1", Mount: "m"})
	if q := d.Snapshot().Queued; q != 1 {
		t.Fatalf("queued %d, want 1: the failure replaced the pending", q)
	}
	close(b.release)
	first, second := <-b.sent, <-b.sent
	if first.Commit != other || second.Commit != sha || second.State != forge.Failure {
		t.Fatalf("sent %+v then %+v", first, second)
	}
}

func TestDelivererOffSendsNothing(t *testing.T) {
	rec := &recorder{sent: make(chan forge.Status, 10)}
	d := newTestDeliverer(t, rec, nil)
	d.Handle(context.Background(), events.Event{Kind: events.RunStarted, Commit: sha, Run: "r1", Mount: "m"})
	stopped := forge.NewDeliverer(forge.Options{Settings: func(context.Context) (*forge.Settings, error) { return settings, nil }})
	stopped.Handle(context.Background(), events.Event{Kind: events.RunStarted, Commit: sha, Run: "r1", Mount: "m"})
	if s := d.Snapshot(); s.Queued != 0 || s.Last != nil {
		t.Fatalf("off: %+v", s)
	}
	if s := stopped.Snapshot(); s.Queued != 0 || s.Running {
		t.Fatalf("not started (a standby node): %+v", s)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in 30s")
		}
		time.Sleep(time.Millisecond)
	}
}

func TestDelivererHonoursRetryAfter(t *testing.T) {
	cases := []struct {
		name       string
		retryAfter time.Duration
		result     string
	}{
		{"waits as told", 10 * time.Minute, forge.ResultRetrying},
		{"past the bound: given up at once", 2 * time.Hour, forge.ResultGaveUp},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rec := &recorder{sent: make(chan forge.Status, 1), errs: []error{&forge.Error{Code: 429, Temporary: true, RetryAfter: tc.retryAfter}}}
			d := newTestDeliverer(t, rec, settings)
			d.Handle(context.Background(), events.Event{Kind: events.RunStarted, Commit: sha, Run: "r1", Mount: "m"})
			var last *forge.Outcome
			waitFor(t, func() bool { last = d.Snapshot().Last; return last != nil })
			if last.Result != tc.result || last.HTTPCode != 429 || last.Attempts != 1 {
				t.Fatalf("last = %+v", last)
			}
			if tc.result == forge.ResultRetrying {
				// The forge's word wins over the 1 ms backoff; jitter adds under a second.
				if wait := last.NextAttemptAt.Sub(last.At); wait < tc.retryAfter-100*time.Millisecond || wait > tc.retryAfter+time.Second {
					t.Fatalf("next attempt %s after the answer, want %s (+ <1s jitter)", wait, tc.retryAfter)
				}
				if s := d.Snapshot(); s.Queued != 1 {
					t.Fatalf("queued %d while waiting", s.Queued)
				}
			}
		})
	}
}

// memOutbox is an Outbox in memory.
type memOutbox struct {
	mu    sync.Mutex
	kept  []forge.Waiting
	saves int
}

func (o *memOutbox) Load(context.Context) ([]forge.Waiting, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]forge.Waiting(nil), o.kept...), nil
}

func (o *memOutbox) Save(_ context.Context, q []forge.Waiting) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.kept, o.saves = append([]forge.Waiting(nil), q...), o.saves+1
	return nil
}

func (o *memOutbox) len() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return len(o.kept)
}

func TestDelivererOutboxOutlivesARestart(t *testing.T) {
	box := &memOutbox{}
	down := &recorder{sent: make(chan forge.Status, 1), errs: []error{&forge.Error{Code: 503, Temporary: true, RetryAfter: 10 * time.Minute}}}
	first := forge.NewDeliverer(forge.Options{
		Settings:  func(context.Context) (*forge.Settings, error) { return settings, nil },
		NewClient: func(forge.Provider) (forge.Client, error) { return down, nil },
		Outbox:    box,
	})
	first.Start()
	first.Handle(context.Background(), events.Event{Kind: events.RunFinished, Outcome: events.RunSucceeded, Commit: sha, Run: "r1", Mount: "m"})
	waitFor(t, func() bool { l := first.Snapshot().Last; return l != nil && l.Result == forge.ResultRetrying })
	first.Stop(context.Background())
	if box.len() != 1 {
		t.Fatalf("outbox after stop holds %d, want the waiting success", box.len())
	}

	up := &recorder{sent: make(chan forge.Status, 1)}
	second := forge.NewDeliverer(forge.Options{
		Settings:  func(context.Context) (*forge.Settings, error) { return settings, nil },
		NewClient: func(forge.Provider) (forge.Client, error) { return up, nil },
		Outbox:    box,
	})
	second.Start()
	defer second.Stop(context.Background())
	got := <-up.sent
	if got.Commit != sha || got.State != forge.Success {
		t.Fatalf("the next instance sent %+v", got)
	}
	waitFor(t, func() bool { return box.len() == 0 })
	// The restored status counts as seen: the same event again is a repeat.
	second.Handle(context.Background(), events.Event{Kind: events.RunFinished, Outcome: events.RunSucceeded, Commit: sha, Run: "r1", Mount: "m"})
	if s := second.Snapshot(); s.Skipped != 1 {
		t.Fatalf("snapshot %+v, want the repeat skipped", s)
	}
}
