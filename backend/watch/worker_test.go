package watch

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/flant/flant_gitops/container"
	"github.com/flant/flant_gitops/gitwatch"
	"github.com/flant/flant_gitops/internal/waittest"
)

const (
	commitA = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	commitB = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
	commitC = "cccccccccccccccccccccccccccccccccccccccc"
)

// fakeClock is the worker's time, moved by the test.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// fakeMirror serves a HEAD, an ancestry relation and a quorum.
type fakeMirror struct {
	mu         sync.Mutex
	head       string
	notAncest  map[string]bool // commits that are not ancestors of head
	verified   int
	fetchErr   error
	fetches    int
	tarWritten []string
	untrusted  string // reported as the commit that broke a plugin chain
	content    map[string]string
	rules      []gitwatch.Rule
	signatures string // FetchResult.Signatures: where the signature refs point
}

func (m *fakeMirror) setHead(h string) { m.mu.Lock(); m.head = h; m.mu.Unlock() }

func (m *fakeMirror) Fetch(ctx context.Context) (gitwatch.FetchResult, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.fetches++
	return gitwatch.FetchResult{Head: m.head, Signatures: m.signatures}, m.fetchErr
}

func (m *fakeMirror) IsAncestor(ctx context.Context, ancestor, head string) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return !m.notAncest[ancestor], nil
}

func (m *fakeMirror) Accept(ctx context.Context, commit string, rule gitwatch.Rule) (gitwatch.Quorum, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.rules = append(m.rules, rule)
	required := rule.Required
	q := gitwatch.Quorum{Commit: commit, Required: required, Verified: m.verified, Untrusted: m.untrusted, UntrustedReason: "signed by 0 of 1"}
	for i := range m.verified {
		q.Signers = append(q.Signers, gitwatch.Signer{Fingerprint: fmt.Sprintf("FPR%d", i), Names: []string{fmt.Sprintf("key%d", i)}})
	}
	q.Missing = max(0, required-m.verified)
	q.OK = q.Missing == 0
	return q, nil
}

// ContentID is the commit id unless the test set another content for it
// (a re-wrapped commit shares its original's).
func (m *fakeMirror) ContentID(ctx context.Context, commit string) (string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if c, ok := m.content[commit]; ok {
		return c, nil
	}
	return "content-" + commit, nil
}

func (m *fakeMirror) WriteTar(ctx context.Context, commit string, w io.Writer) error {
	m.mu.Lock()
	m.tarWritten = append(m.tarWritten, commit)
	m.mu.Unlock()
	return nil
}

// fakeRunner answers Run with run(); a container "exists" while Run is in
// progress, so Find sees it.
type fakeRunner struct {
	mu      sync.Mutex
	run     func(ctx context.Context, spec container.Spec) (container.Result, error)
	specs   []container.Spec
	started chan container.Spec
	found   []container.Found
	attach  func(ctx context.Context, id string, log io.Writer, timeout time.Duration) (container.Result, error)
	attachT []time.Duration
	since   []time.Time // the since of each Attach
	// engine is the id EngineID answers ("engine-1" when empty); engineErr
	// and findErr make the engine unreachable.
	engine    string
	engineErr error
	findErr   error
	removed   []string // the ids Remove was called with
}

func (r *fakeRunner) Run(ctx context.Context, spec container.Spec) (container.Result, error) {
	r.mu.Lock()
	r.specs = append(r.specs, spec)
	run := r.run
	r.mu.Unlock()
	if r.started != nil {
		r.started <- spec
	}
	if run == nil {
		_, _ = spec.Log.Write([]byte("ok\n"))
		return container.Result{Reason: container.ReasonExit, ContainerID: "c1"}, nil
	}
	return run(ctx, spec)
}

func (r *fakeRunner) runs() int { r.mu.Lock(); defer r.mu.Unlock(); return len(r.specs) }

func (r *fakeRunner) Find(ctx context.Context, labels map[string]string) ([]container.Found, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.findErr != nil {
		return nil, r.findErr
	}
	var out []container.Found
	run, byRun := labels[LabelRun]
	for _, f := range r.found {
		if (!byRun || f.Labels[LabelRun] == run) && f.Labels[LabelMount] == labels[LabelMount] {
			out = append(out, f)
		}
	}
	return out, nil
}

func (r *fakeRunner) Attach(ctx context.Context, id string, log io.Writer, since time.Time, timeout time.Duration) (container.Result, error) {
	r.mu.Lock()
	r.attachT = append(r.attachT, timeout)
	r.since = append(r.since, since)
	r.mu.Unlock()
	return r.attach(ctx, id, log, timeout)
}

func (r *fakeRunner) Remove(ctx context.Context, id string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.removed = append(r.removed, id)
	r.found = slices.DeleteFunc(r.found, func(f container.Found) bool { return f.ID == id })
	return nil
}

func (r *fakeRunner) EngineID(ctx context.Context) (string, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.engineErr != nil {
		return "", r.engineErr
	}
	if r.engine == "" {
		return "engine-1", nil
	}
	return r.engine, nil
}

// blockingRun returns a run function that waits for release or ctx.
func blockingRun(release <-chan struct{}) func(ctx context.Context, spec container.Spec) (container.Result, error) {
	return func(ctx context.Context, spec container.Spec) (container.Result, error) {
		select {
		case <-release:
			return container.Result{Reason: container.ReasonExit, ContainerID: "c1"}, nil
		case <-ctx.Done():
			return container.Result{Reason: container.ReasonCanceled, ContainerID: "c1"}, nil
		}
	}
}

type harness struct {
	t        testing.TB
	s        Storage
	clock    *fakeClock
	mirror   *fakeMirror
	runner   *fakeRunner
	settings Settings
	vaultErr error
	mountID  string
	cacheDir string
	events   recordedEvents
	w        *Worker
}

func newHarness(t testing.TB) *harness {
	h := &harness{
		t:      t,
		s:      &memStorage{},
		clock:  &fakeClock{t: time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC)},
		mirror: &fakeMirror{head: commitB, notAncest: map[string]bool{}},
		runner: &fakeRunner{},
		settings: Settings{
			RepoURL: "https://git.example/repo.git", Branch: "main", PollPeriod: time.Minute,
			Required: 0, InitialLastSuccessful: commitA, Image: "sha256:" + strings.Repeat("1", 64),
			Commands: []string{"cat /git/file"}, RunTimeout: 10 * time.Minute,
		},
	}
	var id [8]byte
	if _, err := rand.Read(id[:]); err != nil {
		t.Fatal(err)
	}
	// A mount id of its own: tests on the real Docker engine find their
	// containers by it.
	h.mountID, h.cacheDir = "test-"+hex.EncodeToString(id[:]), t.TempDir()
	h.w = h.newWorker()
	return h
}

// newWorker makes a Worker over the same storage, as a plugin restart does.
func (h *harness) newWorker() *Worker {
	w := New(func() hclog.Logger { return hclog.NewNullLogger() }, Deps{
		Settings: func(ctx context.Context, s Storage) (*Settings, error) {
			ws := h.settings
			return &ws, nil
		},
		MountID: func(ctx context.Context, s Storage) (string, error) { return h.mountID, nil },
		MirrorFolder: func(_ hclog.Logger, mountID string, ws *Settings) (string, error) {
			return filepath.Join(h.cacheDir, mountID), nil
		},
		MirrorFingerprint: func(ws *Settings) string { return ws.RepoURL + "\x00" + ws.Branch },
		OpenMirror:        func(ctx context.Context, dir string, ws *Settings) (Mirror, error) { return h.mirror, nil },
		NewRunner:         func(ctx context.Context) (container.Runner, error) { return h.runner, nil },
		VaultRequests: func(ctx context.Context, s Storage) (map[string]string, map[string][]byte, error) {
			return map[string]string{"VAULT_ADDR": "https://vault.example"}, nil, h.vaultErr
		},
		Now:    h.clock.now,
		Events: &h.events,
	})
	w.logLimits.flushInterval = 10 * time.Millisecond
	w.pollMinInterval = 0
	if err := w.loadMountID(context.Background(), h.s); err != nil {
		h.t.Fatal(err)
	}
	return w
}

func (h *harness) pollOnce() {
	h.t.Helper()
	h.w.pollOnce(context.Background(), h.s)
}

func (h *harness) state() *State {
	h.t.Helper()
	st, err := getState(context.Background(), h.s)
	if err != nil {
		h.t.Fatal(err)
	}
	return st
}

func (h *harness) runs() []*Run {
	h.t.Helper()
	ids, err := listRunIDs(context.Background(), h.s)
	if err != nil {
		h.t.Fatal(err)
	}
	var out []*Run
	for _, id := range ids {
		r, err := getRun(context.Background(), h.s, id)
		if err != nil {
			h.t.Fatal(err)
		}
		out = append(out, r)
	}
	return out
}

func (h *harness) lastSuccessful() string {
	h.t.Helper()
	ls, err := effectiveLastSuccessful(context.Background(), h.s, h.settings.InitialLastSuccessful)
	if err != nil {
		h.t.Fatal(err)
	}
	return ls.Commit
}

func TestPollOutcomes(t *testing.T) {
	tests := []struct {
		name        string
		setup       func(h *harness)
		wantOutcome string
		wantResult  []string
		wantRuns    int
		wantStatus  string
		wantLast    string
	}{
		{
			name:        "new signed commit runs and becomes the last successful",
			setup:       func(h *harness) { h.settings.Required, h.mirror.verified = 2, 2 },
			wantOutcome: OutcomeRan, wantResult: []string{"succeeded"}, wantRuns: 1, wantStatus: RunSucceeded, wantLast: commitB,
		},
		{
			name:        "head is already done",
			setup:       func(h *harness) { h.mirror.setHead(commitA) },
			wantOutcome: OutcomeUpToDate, wantResult: []string{"up to date"}, wantLast: commitA,
		},
		{
			name:        "under-signed commit starts no container",
			setup:       func(h *harness) { h.settings.Required, h.mirror.verified = 3, 1 },
			wantOutcome: OutcomeRefused, wantResult: []string{"1 of 3", "2 more needed", "key0 (key FPR0)"}, wantLast: commitA,
		},
		{
			name:        "a plugin commit on an untrusted one is refused naming that commit",
			setup:       func(h *harness) { h.settings.Required, h.mirror.untrusted = 1, commitC },
			wantOutcome: OutcomeRefused, wantResult: []string{"0 of 1", "plugin's signature vouches only for its own change", commitC + " below it is not accepted"}, wantLast: commitA,
		},
		{
			name:        "force-push names the recovery path",
			setup:       func(h *harness) { h.mirror.notAncest[commitA] = true },
			wantOutcome: OutcomeRefused, wantResult: []string{"not an ancestor", "configure/last_successful_commit"}, wantLast: commitA,
		},
		{
			name:        "fetch failure is reported",
			setup:       func(h *harness) { h.mirror.fetchErr = errors.New("connection refused") },
			wantOutcome: OutcomeError, wantResult: []string{"connection refused"}, wantLast: commitA,
		},
		{
			name: "failing command is recorded with its exit code",
			setup: func(h *harness) {
				h.runner.run = func(ctx context.Context, spec container.Spec) (container.Result, error) {
					return container.Result{Reason: container.ReasonExit, ExitCode: 3, ContainerID: "c"}, nil
				}
			},
			wantOutcome: OutcomeRan, wantResult: []string{"failed", "code 3"}, wantRuns: 1, wantStatus: RunFailed, wantLast: commitA,
		},
		{
			name: "timeout",
			setup: func(h *harness) {
				h.runner.run = func(ctx context.Context, spec container.Spec) (container.Result, error) {
					return container.Result{Reason: container.ReasonTimeout, ExitCode: 137, ContainerID: "c"}, nil
				}
			},
			wantOutcome: OutcomeRan, wantResult: []string{"failed: timeout"}, wantRuns: 1, wantStatus: RunFailed, wantLast: commitA,
		},
		{
			name: "a run that ended is judged by its exit even when cleanup failed",
			setup: func(h *harness) {
				h.runner.run = func(ctx context.Context, spec container.Spec) (container.Result, error) {
					return container.Result{Reason: container.ReasonExit, ContainerID: "c"}, errors.New("removing container c: removal already in progress")
				}
			},
			wantOutcome: OutcomeRan, wantResult: []string{"succeeded"}, wantRuns: 1, wantStatus: RunSucceeded, wantLast: commitB,
		},
		{
			name: "a run that never reached an end fails with the engine's error",
			setup: func(h *harness) {
				h.runner.run = func(ctx context.Context, spec container.Spec) (container.Result, error) {
					return container.Result{}, container.ErrImageMissing
				}
			},
			wantOutcome: OutcomeRan, wantResult: []string{"failed", "not present"}, wantRuns: 1, wantStatus: RunFailed, wantLast: commitA,
		},
		{
			name:        "a failing vault request starts no container",
			setup:       func(h *harness) { h.vaultErr = errors.New(`vault request "db": permission denied`) },
			wantOutcome: OutcomeRan, wantResult: []string{"no container started", `"db"`}, wantRuns: 1, wantStatus: RunFailed, wantLast: commitA,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			tt.setup(h)
			h.pollOnce()
			st := h.state()
			if st.LastPollOutcome != tt.wantOutcome {
				t.Errorf("outcome = %q (%s), want %q", st.LastPollOutcome, st.LastPollResult, tt.wantOutcome)
			}
			for _, want := range tt.wantResult {
				if !strings.Contains(st.LastPollResult, want) {
					t.Errorf("result %q does not say %q", st.LastPollResult, want)
				}
			}
			runs := h.runs()
			if len(runs) != tt.wantRuns {
				t.Fatalf("%d runs recorded, want %d", len(runs), tt.wantRuns)
			}
			wantContainers := 0
			if tt.wantRuns > 0 && h.vaultErr == nil {
				wantContainers = 1
			}
			if got := h.runner.runs(); got != wantContainers {
				t.Errorf("%d containers started, want %d", got, wantContainers)
			}
			if tt.wantRuns > 0 && runs[0].Status != tt.wantStatus {
				t.Errorf("run status %q (%s), want %q", runs[0].Status, runs[0].Reason, tt.wantStatus)
			}
			if got := h.lastSuccessful(); got != tt.wantLast {
				t.Errorf("last successful = %s, want %s", got, tt.wantLast)
			}
			if st.CurrentRunID != "" {
				t.Errorf("current run %s left after the poll", st.CurrentRunID)
			}
		})
	}
}

func TestRunSpec(t *testing.T) {
	h := newHarness(t)
	h.settings.MemoryBytes, h.settings.NanoCPUs, h.settings.NetworkMode = 64<<20, 5e8, "none"
	h.pollOnce()
	runs := h.runs()
	if len(runs) != 1 || len(h.runner.specs) != 1 {
		t.Fatalf("runs %d, containers %d", len(runs), len(h.runner.specs))
	}
	spec := h.runner.specs[0]
	if spec.Labels[LabelRun] != runs[0].ID || spec.Labels[LabelMount] == "" {
		t.Errorf("labels %v do not name the mount and run %s", spec.Labels, runs[0].ID)
	}
	if spec.MemoryBytes != 64<<20 || spec.NanoCPUs != 5e8 || spec.NetworkMode != "none" || spec.Timeout != 10*time.Minute {
		t.Errorf("limits not passed: %+v", spec)
	}
	if spec.Env["VAULT_ADDR"] == "" {
		t.Errorf("vault request env not passed: %v", spec.Env)
	}
	if err := spec.Files(io.Discard); err != nil {
		t.Fatal(err)
	}
	if len(h.mirror.tarWritten) != 1 || h.mirror.tarWritten[0] != commitB {
		t.Errorf("files of %v written, want HEAD %s", h.mirror.tarWritten, commitB)
	}
	page, err := readRunLog(context.Background(), h.s, runs[0].ID, 0, 100, h.w.logLimits.chunkSize)
	if err != nil {
		t.Fatal(err)
	}
	if page.Text != "ok\n" {
		t.Errorf("log = %q", page.Text)
	}
}

// A failing commit is retried with a growing delay, never before it is due,
// and a new commit is not held back by the old one's backoff.
func TestFailureBackoff(t *testing.T) {
	h := newHarness(t)
	h.runner.run = func(ctx context.Context, spec container.Spec) (container.Result, error) {
		return container.Result{Reason: container.ReasonExit, ExitCode: 1}, nil
	}
	period := h.settings.PollPeriod
	steps := []struct {
		advance    time.Duration
		wantRuns   int
		wantOutcom string
	}{
		{0, 1, OutcomeRan},                        // first failure: retry after 1 period
		{period - time.Second, 1, OutcomeBackoff}, // too early
		{time.Second, 2, OutcomeRan},              // due: second failure, next after 2 periods
		{period, 2, OutcomeBackoff},               // one period is not enough now
		{period, 3, OutcomeRan},                   // two periods: third failure
		{3 * period, 3, OutcomeBackoff},           // 4 periods needed
		{period, 4, OutcomeRan},                   // due
	}
	for i, step := range steps {
		h.clock.advance(step.advance)
		h.pollOnce()
		st := h.state()
		if got := h.runner.runs(); got != step.wantRuns || st.LastPollOutcome != step.wantOutcom {
			t.Fatalf("step %d: %d runs, outcome %q (%s); want %d, %q", i, got, st.LastPollOutcome, st.LastPollResult, step.wantRuns, step.wantOutcom)
		}
	}
	st := h.state()
	if st.Failures != 4 || st.FailedCommit != commitB {
		t.Errorf("failures %d of %s, want 4 of %s", st.Failures, st.FailedCommit, commitB)
	}
	if runs := h.runs(); runs[0].Attempt != 4 {
		t.Errorf("newest run is attempt %d, want 4", runs[0].Attempt)
	}
	if h.lastSuccessful() != commitA {
		t.Errorf("a failing commit was recorded as successful")
	}

	// A new commit runs at once despite the backoff of the old one.
	h.mirror.setHead(commitC)
	h.runner.run = nil
	h.pollOnce()
	if got := h.runner.runs(); got != 5 {
		t.Errorf("new commit did not run at once: %d runs", got)
	}
	if h.lastSuccessful() != commitC {
		t.Errorf("last successful = %s, want %s", h.lastSuccessful(), commitC)
	}
	if st := h.state(); st.FailedCommit != "" || st.Failures != 0 {
		t.Errorf("retry state not cleared by a success: %+v", st)
	}
}

// The periodic tick never waits for a run and never starts a second one.
func TestTickDuringRunReturnsAtOnce(t *testing.T) {
	h := newHarness(t)
	release := make(chan struct{})
	h.runner.run = blockingRun(release)
	h.runner.started = make(chan container.Spec, 4)
	h.w.Start(h.s)
	defer h.w.Stop(context.Background())
	select {
	case <-h.runner.started:
	case <-time.After(10 * time.Second):
		t.Fatal("the startup poll did not start a run")
	}
	for range 5 {
		h.clock.advance(2 * h.settings.PollPeriod)
		done := make(chan struct{})
		go func() { h.w.Tick(h.s); close(done) }()
		select {
		case <-done:
		case <-time.After(2 * time.Second):
			t.Fatal("tick blocked while a run was in progress")
		}
		a := h.w.RequestPoll(h.s, false)
		if !strings.Contains(a.Message, "in progress") || a.CurrentRun == "" {
			t.Errorf("poll during a run answered %+v", a)
		}
	}
	if got := h.runner.runs(); got != 1 {
		t.Fatalf("%d containers started during one run", got)
	}
	close(release)
	// The queued poll after the run finds HEAD done and starts nothing.
	waittest.Until(t, func() bool { st := h.state(); return st.LastPollOutcome == OutcomeUpToDate })
	if got := h.runner.runs(); got != 1 {
		t.Errorf("%d containers started in all", got)
	}
}

func TestCancelHoldsCommit(t *testing.T) {
	h := newHarness(t)
	h.runner.run = blockingRun(make(chan struct{}))
	h.runner.started = make(chan container.Spec, 1)
	h.w.Start(h.s)
	defer h.w.Stop(context.Background())
	spec := <-h.runner.started
	if h.w.CancelRun(context.Background(), "not-this-one") {
		t.Error("cancel of an unknown run reported success")
	}
	if !h.w.CancelRun(context.Background(), spec.Labels[LabelRun]) {
		t.Fatal("cancel of the current run was refused")
	}
	r, err := getRun(context.Background(), h.s, spec.Labels[LabelRun])
	if err != nil {
		t.Fatal(err)
	}
	if r.Status != RunCanceled {
		t.Fatalf("run %s after cancel, want canceled", r.Status)
	}
	waittest.Until(t, func() bool { return h.state().CurrentRunID == "" })
	h.w.mu.Lock()
	h.w.lastManualPoll = time.Time{}
	h.w.mu.Unlock()
	h.clock.advance(24 * time.Hour)
	h.w.RequestPoll(h.s, false)
	waittest.Until(t, func() bool { return h.state().LastPollOutcome == OutcomeHeld })
	if got := h.runner.runs(); got != 1 {
		t.Errorf("a canceled commit was retried without retry=true: %d runs", got)
	}
	h.runner.mu.Lock()
	h.runner.run = nil
	h.runner.mu.Unlock()
	h.w.RequestPoll(h.s, true)
	waittest.Until(t, func() bool { return h.lastSuccessful() == commitB })
}

// Stopping the plugin during a run records it as interrupted; the next
// instance retries the commit at once, and exactly one run succeeds.
func TestStopDuringRunIsRetriedOnce(t *testing.T) {
	h := newHarness(t)
	h.runner.run = blockingRun(make(chan struct{}))
	h.runner.started = make(chan container.Spec, 1)
	h.w.Start(h.s)
	<-h.runner.started
	h.w.Stop(context.Background())
	runs := h.runs()
	if len(runs) != 1 || runs[0].Status != RunInterrupted {
		t.Fatalf("after stop: %d runs, first %+v", len(runs), runs[0])
	}

	h.runner.mu.Lock()
	h.runner.run = nil
	h.runner.mu.Unlock()
	h.runner.started = nil
	h.w = h.newWorker()
	h.w.Start(h.s)
	defer h.w.Stop(context.Background())
	waittest.Until(t, func() bool { return h.lastSuccessful() == commitB })
	waittest.Until(t, func() bool { return h.state().CurrentRunID == "" })
	count := map[string]int{}
	for _, r := range h.runs() {
		count[r.Status]++
	}
	if count[RunSucceeded] != 1 || count[RunInterrupted] != 1 || len(h.runs()) != 2 {
		t.Errorf("runs after restart: %v", count)
	}
}

func TestRecovery(t *testing.T) {
	tests := []struct {
		name       string
		container  bool // the container still exists
		lsRunID    bool // last_successful_commit already names the run
		wantStatus string
		wantAttach bool
		wantLast   string
	}{
		{"container gone: interrupted and retried", false, false, RunInterrupted, false, commitB},
		{"container still running: re-attached", true, false, RunSucceeded, true, commitB},
		{"success recorded before the crash", false, true, RunSucceeded, false, commitB},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			ctx := context.Background()
			started := h.clock.now().Add(-time.Minute)
			r := &Run{ID: "20260301T095900.000000Z-abcdef", Commit: commitB, Status: RunRunning, Attempt: 1,
				CreatedAt: started, StartedAt: started, Deadline: started.Add(h.settings.RunTimeout)}
			if err := putRun(ctx, h.s, r); err != nil {
				t.Fatal(err)
			}
			if err := putState(ctx, h.s, &State{CurrentRunID: r.ID}); err != nil {
				t.Fatal(err)
			}
			if tt.lsRunID {
				if err := putLastSuccessful(ctx, h.s, &LastSuccessful{Commit: commitB, Source: lastSuccessfulByRun, RunID: r.ID}); err != nil {
					t.Fatal(err)
				}
			}
			// The dead instance stored one line and its engine timestamp.
			lastLine := time.Date(2026, 3, 1, 9, 59, 30, 123456789, time.UTC)
			lw, err := openRunLog(ctx, h.s, r.ID, h.w.logLimits)
			if err != nil {
				t.Fatal(err)
			}
			lw.WriteLine([]byte("first line\n"), lastLine)
			if err := lw.Close(ctx); err != nil {
				t.Fatal(err)
			}
			if tt.container {
				h.runner.found = []container.Found{{ID: "c-old", State: "running", Labels: h.w.labels(r.ID)}}
				h.runner.attach = func(ctx context.Context, id string, log io.Writer, timeout time.Duration) (container.Result, error) {
					_, _ = log.Write([]byte("rest of output\n"))
					return container.Result{Reason: container.ReasonExit, ContainerID: id}, nil
				}
			}
			h.w.Start(h.s)
			defer h.w.Stop(ctx)
			waittest.Until(t, func() bool {
				st := h.state()
				return st.CurrentRunID == "" && st.LastPollOutcome != ""
			})
			got, err := getRun(ctx, h.s, r.ID)
			if err != nil {
				t.Fatal(err)
			}
			if got.Status != tt.wantStatus {
				t.Errorf("recovered run is %s (%s), want %s", got.Status, got.Reason, tt.wantStatus)
			}
			if attached := len(h.runner.attachT) > 0; attached != tt.wantAttach {
				t.Errorf("attached = %v, want %v", attached, tt.wantAttach)
			}
			if tt.wantAttach && h.runner.attachT[0] != 9*time.Minute {
				t.Errorf("re-attached with timeout %s, want the 9m left of the run", h.runner.attachT[0])
			}
			if tt.wantAttach {
				if !h.runner.since[0].Equal(lastLine) {
					t.Errorf("re-attached from %s, want the stored line's %s", h.runner.since[0], lastLine)
				}
				page, err := readRunLog(ctx, h.s, r.ID, 0, 1<<20, h.w.logLimits.chunkSize)
				if err != nil {
					t.Fatal(err)
				}
				want := "first line\n\n[flant_gitops: the plugin restarted and re-attached; the output continues after the last line stored]\nrest of output\n"
				if page.Text != want {
					t.Errorf("log after re-attach = %q, want %q", page.Text, want)
				}
			}
			if h.lastSuccessful() != tt.wantLast {
				t.Errorf("last successful %s, want %s", h.lastSuccessful(), tt.wantLast)
			}
			succeeded := 0
			for _, r := range h.runs() {
				if r.Status == RunSucceeded {
					succeeded++
				}
			}
			if succeeded != 1 {
				t.Errorf("%d succeeded runs for one commit, want exactly 1", succeeded)
			}
		})
	}
}

func TestPollRateLimit(t *testing.T) {
	h := newHarness(t)
	h.w.pollMinInterval = 2 * time.Second
	h.mirror.setHead(commitA)
	h.w.Start(h.s)
	defer h.w.Stop(context.Background())
	if a := h.w.RequestPoll(h.s, false); !a.Started {
		t.Fatalf("first poll refused: %+v", a)
	}
	a := h.w.RequestPoll(h.s, false)
	if a.Started || a.RetryAfter != 2*time.Second || !strings.Contains(a.Message, "rate-limited") {
		t.Errorf("second poll at once answered %+v", a)
	}
	h.clock.advance(2 * time.Second)
	if a := h.w.RequestPoll(h.s, false); !a.Started {
		t.Errorf("poll after the interval refused: %+v", a)
	}
}

// BenchmarkTickDuringRun measures the periodic function's work while a run
// is in progress: it must stay a few lock operations, never I/O.
func BenchmarkTickDuringRun(b *testing.B) {
	h := newHarness(b)
	release := make(chan struct{})
	h.runner.run = blockingRun(release)
	h.runner.started = make(chan container.Spec, 1)
	h.w.Start(h.s)
	<-h.runner.started
	b.ResetTimer()
	for b.Loop() {
		h.clock.advance(h.settings.PollPeriod)
		h.w.Tick(h.s)
	}
	b.StopTimer()
	close(release)
	h.w.Stop(context.Background())
	if got := h.runner.runs(); got != 1 {
		b.Fatalf("%d runs started by ticks during one run", got)
	}
}

// BenchmarkRunLogWrite measures streaming container output into storage
// chunks (in-memory storage: the cost of chunking, not of Vault).
func BenchmarkRunLogWrite(b *testing.B) {
	ctx := context.Background()
	line := []byte(strings.Repeat("x", 119) + "\n")
	w, err := openRunLog(ctx, &memStorage{}, "bench", defaultLogLimits())
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(line)))
	for b.Loop() {
		if _, err := w.Write(line); err != nil {
			b.Fatal(err)
		}
	}
	if err := w.Close(ctx); err != nil {
		b.Fatal(err)
	}
}

// TestStartAfterStopStartsNothing: Clean may run before the worker was ever
// started (or race a periodic tick or a poll); whatever asks for a start
// afterwards must not launch a worker that no Clean will stop.
func TestStartAfterStopStartsNothing(t *testing.T) {
	tests := []struct {
		name  string
		start func(w *Worker, s Storage)
	}{
		{"start", func(w *Worker, s Storage) { w.Start(s) }},
		{"tick", func(w *Worker, s Storage) { w.Tick(s) }},
		{"poll", func(w *Worker, s Storage) { w.RequestPoll(s, false) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			h.w.Stop(context.Background())
			tt.start(h.w, h.s)
			h.w.mu.Lock()
			started := h.w.cancel != nil
			h.w.mu.Unlock()
			if started {
				h.w.Stop(context.Background())
				t.Fatal("a worker was started after stop")
			}
			if n := h.runner.runs(); n != 0 {
				t.Fatalf("%d runs after stop, want none", n)
			}
		})
	}
}

// The poll checks HEAD with the plugin's keys named and the last successful
// commit as the anchor of a plugin chain.
func TestPollPassesTheTrustRule(t *testing.T) {
	h := newHarness(t)
	h.settings.Required, h.mirror.verified = 1, 1
	h.settings.PluginKeys = []string{"PLUGINFP"}
	h.pollOnce()
	if len(h.mirror.rules) != 1 {
		t.Fatalf("%d signature checks, want 1", len(h.mirror.rules))
	}
	r := h.mirror.rules[0]
	if !slices.Equal(r.PluginKeys, []string{"PLUGINFP"}) || !slices.Equal(r.Accepted, []string{commitA}) || r.Required != 1 {
		t.Errorf("rule = %+v, want plugin key PLUGINFP, accepted %s, required 1", r, commitA)
	}
}
