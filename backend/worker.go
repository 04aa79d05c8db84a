package backend

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/vault/sdk/logical"

	"github.com/flant/flant_gitops/container"
	"github.com/flant/flant_gitops/gitwatch"
)

// Container labels naming the mount and the run, so a restarted plugin finds
// its container again.
const (
	labelMount = "flant_gitops.mount"
	labelRun   = "flant_gitops.run"
)

// pollMinInterval rate-limits `poll`: a CI pipeline calling it on every push
// cannot make the plugin hammer the git server.
const pollMinInterval = 2 * time.Second

// stopTimeout bounds how long Clean waits for the worker to record the end of
// an interrupted run before Vault tears the plugin down.
const stopTimeout = 60 * time.Second

var (
	// errCanceledByOperator is the cancel cause of runs/ID/cancel.
	errCanceledByOperator = errors.New("canceled by an operator")
	// errPluginStopping is the cancel cause when Vault unloads the backend.
	errPluginStopping = errors.New("the plugin is stopping (reload, unmount or seal)")
	// errNotConfigured: flant_gitops/configure was never written.
	errNotConfigured = errors.New("not configured: write flant_gitops/configure to start watching")
)

// watchSettings is everything one poll needs from configuration.
type watchSettings struct {
	RepoURL               string
	Branch                string
	PollPeriod            time.Duration
	Required              int
	InitialLastSuccessful string
	Image                 string
	Commands              []string
	RunTimeout            time.Duration
	MemoryBytes           int64
	NanoCPUs              int64
	NetworkMode           string
	Auth                  gitwatch.Auth
	Keys                  []gitwatch.TrustedKey
	// PluginKeys are the fingerprints of the plugin's own signing keys,
	// which count only on top of an accepted commit.
	PluginKeys []string
}

// mirror is the part of *gitwatch.Mirror the worker uses.
type mirror interface {
	Fetch(ctx context.Context) (gitwatch.FetchResult, error)
	IsAncestor(ctx context.Context, ancestor, head string) (bool, error)
	Accept(ctx context.Context, commit string, rule gitwatch.Rule) (gitwatch.Quorum, error)
	ContentID(ctx context.Context, commit string) (string, error)
	WriteTar(ctx context.Context, commit string, w io.Writer) error
}

// watchDeps are the worker's ties to the outside, replaced by fakes in unit
// tests.
type watchDeps struct {
	settings   func(ctx context.Context, s logical.Storage) (*watchSettings, error)
	openMirror func(ctx context.Context, dir string, ws *watchSettings) (mirror, error)
	newRunner  func(ctx context.Context) (container.Runner, error)
	// vaultRequests returns the env and files a run gets from the configured
	// vault requests; an error fails the run before any container starts.
	vaultRequests func(ctx context.Context, s logical.Storage) (map[string]string, map[string][]byte, error)
	now           func() time.Time
	// mount is the backend's id, shared with the patch half; unit tests
	// leave it nil for one of their own.
	mount *mountIdentity
}

// activeRun is the run the worker is executing.
type activeRun struct {
	id     string
	commit string
	cancel context.CancelCauseFunc
	done   chan struct{}
}

// watcher is the per-mount background worker: the periodic tick and `poll`
// wake it; it fetches, checks, runs and records, one run at a time.
type watcher struct {
	logger    func() hclog.Logger
	cacheBase string
	deps      watchDeps
	logLimits logLimits
	// pollMinInterval is pollMinInterval except in unit tests.
	pollMinInterval time.Duration

	// stateMu serialises read-modify-write of watch/state between the worker
	// and the path handlers.
	stateMu sync.Mutex

	mu      sync.Mutex
	mountID string // from storage: labels and cache folder survive restarts
	storage logical.Storage
	cancel  context.CancelCauseFunc // stops the worker; nil when not started
	done    chan struct{}
	// stopped is set by stop: a tick or poll racing Clean must not start a
	// worker that nothing would ever stop.
	stopped        bool
	wake           chan struct{}
	busy           bool
	current        *activeRun
	lastPollAt     time.Time
	pollPeriod     time.Duration
	lastManualPoll time.Time
	trigger        string // what asked for the pending poll
	forceRetry     bool
	mirror         mirror
	mirrorKey      string
	runner         container.Runner
}

// newWatcher takes the logger as a function because Vault hands the backend
// its logger after construction.
func newWatcher(logger func() hclog.Logger, deps watchDeps) *watcher {
	if deps.now == nil {
		deps.now = time.Now
	}
	if deps.mount == nil {
		deps.mount = &mountIdentity{}
	}
	return &watcher{
		logger:          logger,
		cacheBase:       cacheBase(),
		deps:            deps,
		logLimits:       defaultLogLimits(),
		pollMinInterval: pollMinInterval,
		wake:            make(chan struct{}, 1),
	}
}

func (w *watcher) log() hclog.Logger {
	if l := w.logger(); l != nil {
		return l.Named("watch")
	}
	return hclog.NewNullLogger()
}

// start launches the worker once; later calls, and any call after stop, do
// nothing. The storage is the mount's view, valid until stop.
func (w *watcher) start(s logical.Storage) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.cancel != nil || w.stopped {
		return
	}
	ctx, cancel := context.WithCancelCause(context.Background())
	w.storage = s
	w.cancel = cancel
	w.done = make(chan struct{})
	w.trigger = "startup"
	go w.loop(ctx)
	w.signalLocked()
}

// stop cancels the worker (a run in progress is killed and recorded as
// interrupted, to be retried by the next instance) and waits for it.
func (w *watcher) stop(ctx context.Context) {
	w.mu.Lock()
	cancel, done := w.cancel, w.done
	w.stopped = true
	w.mu.Unlock()
	if cancel == nil {
		return
	}
	cancel(errPluginStopping)
	ctx, stopWait := context.WithTimeout(ctx, stopTimeout)
	defer stopWait()
	select {
	case <-done:
	case <-ctx.Done():
		w.log().Warn("the watch worker did not stop in time; a run left running is recovered on the next start", "timeout", stopTimeout)
	}
}

// signalLocked wakes the worker without ever blocking: a wake already pending
// covers this one.
func (w *watcher) signalLocked() {
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// tick is the periodic function's whole job: decide, maybe wake, return.
func (w *watcher) tick(s logical.Storage) {
	w.start(s)
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.busy || !pollDue(w.deps.now(), w.lastPollAt, w.pollPeriod) {
		return
	}
	if w.trigger == "" {
		w.trigger = "periodic"
	}
	w.signalLocked()
}

// pollAnswer is what `poll` tells its caller.
type pollAnswer struct {
	Started    bool
	Message    string
	CurrentRun string
	RetryAfter time.Duration
}

// requestPoll asks for a poll now, unless one was asked for too recently.
func (w *watcher) requestPoll(s logical.Storage, retry bool) pollAnswer {
	w.start(s)
	w.mu.Lock()
	defer w.mu.Unlock()
	now := w.deps.now()
	if next := w.lastManualPoll.Add(w.pollMinInterval); now.Before(next) {
		return pollAnswer{
			Message:    fmt.Sprintf("rate-limited: a poll was requested at %s; ask again after %s", w.lastManualPoll.UTC().Format(time.RFC3339Nano), next.UTC().Format(time.RFC3339Nano)),
			RetryAfter: next.Sub(now),
		}
	}
	w.lastManualPoll = now
	w.trigger = "poll"
	w.forceRetry = w.forceRetry || retry
	w.signalLocked()
	if w.busy {
		a := pollAnswer{Started: true, Message: "the worker is busy; a poll is queued and runs as soon as it is free"}
		if w.current != nil {
			a.CurrentRun = w.current.id
			a.Message = fmt.Sprintf("run %s (commit %s) is in progress; a poll is queued to follow it", w.current.id, w.current.commit)
		}
		return a
	}
	return pollAnswer{Started: true, Message: "poll started: fetching the branch; read flant_gitops/status for the outcome"}
}

// cancelRun cancels the run if this worker is executing it and waits for the
// container to be gone (bounded by ctx). It reports whether the run was ours.
func (w *watcher) cancelRun(ctx context.Context, id string) bool {
	w.mu.Lock()
	cur := w.current
	w.mu.Unlock()
	if cur == nil || cur.id != id {
		return false
	}
	cur.cancel(errCanceledByOperator)
	select {
	case <-cur.done:
	case <-ctx.Done():
	}
	return true
}

// snapshot is the worker's in-memory view, for `status`.
func (w *watcher) snapshot() (busy bool, currentRun string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.current != nil {
		currentRun = w.current.id
	}
	return w.busy, currentRun
}

func (w *watcher) loop(ctx context.Context) {
	defer close(w.done)
	defer w.closeRunner()
	w.mu.Lock()
	s := w.storage
	w.mu.Unlock()
	recovered := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-w.wake:
		}
		w.setBusy(true)
		// Until the mount id is known nothing can be labelled or found; a
		// storage failure here is retried on the next wake.
		if err := w.loadMountID(ctx, s); err != nil {
			w.log().Error("cannot start watching", "error", err)
		} else {
			if !recovered {
				w.recoverRuns(ctx, s)
				recovered = true
			}
			w.pollOnce(ctx, s)
		}
		w.setBusy(false)
	}
}

// loadMountID learns the mount's id, which names the containers and the
// cache folder.
func (w *watcher) loadMountID(ctx context.Context, s logical.Storage) error {
	id, err := w.deps.mount.get(ctx, s)
	if err != nil {
		return err
	}
	w.mu.Lock()
	w.mountID = id
	w.mu.Unlock()
	return nil
}

func (w *watcher) setBusy(b bool) {
	w.mu.Lock()
	w.busy = b
	w.mu.Unlock()
}

// updateState applies f to the stored watch state under stateMu.
func (w *watcher) updateState(ctx context.Context, s logical.Storage, f func(st *watchState)) error {
	w.stateMu.Lock()
	defer w.stateMu.Unlock()
	st, err := getWatchState(ctx, s)
	if err != nil {
		return err
	}
	f(st)
	return putWatchState(ctx, s, st)
}

// mirrorFor reuses the open mirror while the repository, branch and
// credentials stay the same; the cache folder depends on repository and
// branch only, so a rotated password does not cost a full clone.
func (w *watcher) mirrorFor(ctx context.Context, ws *watchSettings) (mirror, error) {
	t := mirrorTarget{URL: ws.RepoURL, Branch: ws.Branch, Auth: ws.Auth}
	key := t.fingerprint()
	w.mu.Lock()
	m, mk, mountID := w.mirror, w.mirrorKey, w.mountID
	w.mu.Unlock()
	if m != nil && mk == key {
		return m, nil
	}
	dir, err := mirrorFolder(w.log(), w.cacheBase, mountID, mirrorKindWatch, t, nil)
	if err != nil {
		return nil, err
	}
	m, err = w.deps.openMirror(ctx, dir, ws)
	if err != nil {
		return nil, fmt.Errorf("opening the mirror of %s: %w", ws.RepoURL, err)
	}
	w.mu.Lock()
	w.mirror, w.mirrorKey = m, key
	w.mu.Unlock()
	return m, nil
}

func (w *watcher) getRunner(ctx context.Context) (container.Runner, error) {
	w.mu.Lock()
	r := w.runner
	w.mu.Unlock()
	if r != nil {
		return r, nil
	}
	r, err := w.deps.newRunner(ctx)
	if err != nil {
		return nil, err
	}
	w.mu.Lock()
	w.runner = r
	w.mu.Unlock()
	return r, nil
}

// closeRunner releases the Docker client when the worker ends.
func (w *watcher) closeRunner() {
	w.mu.Lock()
	r := w.runner
	w.runner = nil
	w.mu.Unlock()
	if c, ok := r.(io.Closer); ok {
		if err := c.Close(); err != nil {
			w.log().Warn("closing the Docker client", "error", err)
		}
	}
}

func (w *watcher) labels(runID string) map[string]string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return map[string]string{labelMount: w.mountID, labelRun: runID}
}

// signerLabels names each signer by its trusted names and fingerprint.
func signerLabels(signers []gitwatch.Signer) []string {
	out := make([]string, 0, len(signers))
	for _, s := range signers {
		name := strings.Join(s.Names, ",")
		if name == "" && len(s.UserIDs) > 0 {
			name = s.UserIDs[0]
		}
		out = append(out, strings.TrimSpace(name+" "+s.Fingerprint))
	}
	return out
}

// setLastSuccessful records the operator's last successful commit (an empty
// commit deletes it) and forgets a failing or held commit.
func (w *watcher) setLastSuccessful(ctx context.Context, s logical.Storage, commit string) error {
	var err error
	if commit == "" {
		err = deleteEntry(ctx, s, lastSuccessfulKey)
	} else {
		err = putLastSuccessful(ctx, s, &lastSuccessful{Commit: commit, Source: lastSuccessfulOperator, SetAt: w.deps.now()})
	}
	if err != nil {
		return err
	}
	return w.clearRetry(ctx, s)
}

// readLog reads a page of a run's log in the chunking the worker wrote it.
func (w *watcher) readLog(ctx context.Context, s logical.Storage, id string, offset, limit int64) (*logPage, error) {
	return readRunLog(ctx, s, id, offset, limit, w.logLimits.chunkSize)
}

// clearRetry forgets a failing or held commit after an operator moved the
// last successful commit.
func (w *watcher) clearRetry(ctx context.Context, s logical.Storage) error {
	return w.updateState(ctx, s, func(st *watchState) {
		st.FailedCommit, st.FailedContent, st.Failures, st.Held, st.NextAttemptAt = "", "", 0, false, time.Time{}
	})
}
