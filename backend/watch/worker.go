package watch

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/flant/flant_gitops/backend/events"
	"github.com/flant/flant_gitops/container"
	"github.com/flant/flant_gitops/gitwatch"
)

// Container labels naming the mount and the run, so a restarted plugin finds
// its container again, and the commit, so an operator (or a test) can ask the
// engine for every container one commit ever had. Finding a run's container
// uses only LabelMount and LabelRun: containers started before LabelCommit
// existed are found too.
const (
	LabelMount  = "flant_gitops.mount"
	LabelRun    = "flant_gitops.run"
	LabelCommit = "flant_gitops.commit"
)

// pollMinInterval rate-limits `poll`: a CI pipeline calling it on every push
// cannot make the plugin hammer the git server.
const pollMinInterval = 2 * time.Second

// stopTimeout bounds how long Clean waits for the worker to record the end of
// an interrupted run (or to leave it running) before Vault tears the plugin
// down.
const stopTimeout = 60 * time.Second

var (
	// errCanceledByOperator is the cancel cause of runs/ID/cancel.
	errCanceledByOperator = errors.New("canceled by an operator")
	// errPluginStopping is the cancel cause when Vault unloads the backend
	// for good (Stop: the mount is disabled).
	errPluginStopping = errors.New("the plugin is stopping (the mount is disabled)")
	// errHandingOver is the cancel cause of HandOver: the run's container is
	// left running (container.ErrLeftRunning) for the next owner.
	errHandingOver = fmt.Errorf("the plugin hands over to the next active node (step-down, seal, shutdown or plugin reload): %w", container.ErrLeftRunning)
	// ErrNotConfigured: flant_gitops/configure was never written.
	ErrNotConfigured = errors.New("not configured: write flant_gitops/configure to start watching")
)

// Settings is everything one poll needs from configuration.
type Settings struct {
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
	// PathRules ask more signers for some paths (configure/signature_rule).
	PathRules []gitwatch.PathRule
}

// Mirror is the part of *gitwatch.Mirror the worker uses.
type Mirror interface {
	Fetch(ctx context.Context) (gitwatch.FetchResult, error)
	IsAncestor(ctx context.Context, ancestor, head string) (bool, error)
	Accept(ctx context.Context, commit string, rule gitwatch.Rule) (gitwatch.Quorum, error)
	ContentID(ctx context.Context, commit string) (string, error)
	WriteTar(ctx context.Context, commit string, w io.Writer) error
}

// Deps are the worker's ties to the outside: the backend fills them with
// the mount's configuration, git, Docker and Vault; unit tests with fakes.
type Deps struct {
	// Settings reads what one poll needs; ErrNotConfigured when nothing is
	// configured yet.
	Settings func(ctx context.Context, s Storage) (*Settings, error)
	// MountID returns the mount's id (stored, so it survives restarts): it
	// labels the containers and names the cache folder.
	MountID func(ctx context.Context, s Storage) (string, error)
	// MirrorFolder returns the cache folder of the mirror of ws for the
	// mount, ready to open; MirrorFingerprint changes whenever the remote or
	// its credentials change, which reopens the mirror.
	MirrorFolder      func(log hclog.Logger, mountID string, ws *Settings) (string, error)
	MirrorFingerprint func(ws *Settings) string
	OpenMirror        func(ctx context.Context, dir string, ws *Settings) (Mirror, error)
	NewRunner         func(ctx context.Context) (container.Runner, error)
	// VaultRequests returns the env and files a run gets from the configured
	// vault requests; an error fails the run before any container starts.
	VaultRequests func(ctx context.Context, s Storage) (map[string]string, map[string][]byte, error)
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Events hears what the watch decides (polls, refusals, runs); nil
	// means nobody listens. Publish must not block.
	Events events.Publisher
}

// activeRun is the run the worker is executing.
type activeRun struct {
	id     string
	commit string
	cancel context.CancelCauseFunc
	done   chan struct{}
}

// Worker is the per-mount background worker: the periodic tick and `poll`
// wake it; it fetches, checks, runs and records, one run at a time.
type Worker struct {
	logger    func() hclog.Logger
	deps      Deps
	logLimits logLimits
	// pollMinInterval is pollMinInterval except in unit tests.
	pollMinInterval time.Duration

	// stateMu serialises read-modify-write of watch/state between the worker
	// and the path handlers.
	stateMu sync.Mutex
	// mirrorMu serialises opening the mirror (mirrorFor).
	mirrorMu sync.Mutex

	mu      sync.Mutex
	mountID string // from storage: labels and cache folder survive restarts
	storage Storage
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
	// slotTimer wakes the worker at its poll slot when the slot falls
	// between two of Vault's ticks.
	slotTimer *time.Timer
	// lastFetchedHead is the HEAD the latest fetch saw; a push notification
	// naming it needs no new fetch.
	lastFetchedHead string
	// refusedBy is which check refused HEAD in the poll in progress
	// (events.Refused*), for its CommitRefused event.
	refusedBy string
	// Push notifications (Notify) fold into one poll per pollMinInterval.
	lastNotifyPoll time.Time
	notifyTimer    *time.Timer
	// notifyCommit is the one commit every folded notification named, ""
	// when they named none or several; it is all a fold needs to decide.
	notifyCommit string
	mirror       Mirror
	mirrorKey    string
	runner       container.Runner
	refused      *refusedVerdict // see poll.go
	// target is the repository and branch of the latest poll's settings,
	// which events name.
	target gitwatch.Target
}

// New makes the worker of one mount; nothing runs before Start. It takes
// the logger as a function because Vault hands the backend its logger after
// construction.
func New(logger func() hclog.Logger, deps Deps) *Worker {
	if deps.Now == nil {
		deps.Now = time.Now
	}
	return &Worker{
		logger:          logger,
		deps:            deps,
		logLimits:       defaultLogLimits(),
		pollMinInterval: pollMinInterval,
		wake:            make(chan struct{}, 1),
	}
}

// publish sends e to the subscribers with the mount and target filled in.
func (w *Worker) publish(e events.Event) {
	if w.deps.Events == nil {
		return
	}
	w.mu.Lock()
	e.Mount, e.Repository, e.Branch = w.mountID, w.target.URL, w.target.Branch
	w.mu.Unlock()
	if e.Time.IsZero() {
		e.Time = w.deps.Now()
	}
	w.deps.Events.Publish(e)
}

func (w *Worker) log() hclog.Logger {
	if l := w.logger(); l != nil {
		return l.Named("watch")
	}
	return hclog.NewNullLogger()
}

// Start launches the worker once; later calls, and any call after stop, do
// nothing. The storage is the mount's view, valid until stop.
func (w *Worker) Start(s Storage) {
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

// Stop ends the worker for good, as when the mount is disabled: a run in
// progress is killed, its container removed and the run recorded as
// interrupted. It waits for the worker.
func (w *Worker) Stop(ctx context.Context) { w.stop(ctx, errPluginStopping) }

// HandOver ends the worker for a planned handover (a step-down, seal,
// shutdown or plugin reload): a run in progress is not stopped. Its container
// is left running, its record stays running with its container id, its log
// and resume point are flushed, and the next owner's recovery re-attaches to
// it and continues the log. It waits for the worker.
func (w *Worker) HandOver(ctx context.Context) { w.stop(ctx, errHandingOver) }

func (w *Worker) stop(ctx context.Context, cause error) {
	w.mu.Lock()
	cancel, done := w.cancel, w.done
	w.stopped = true
	for _, t := range []*time.Timer{w.slotTimer, w.notifyTimer} {
		if t != nil {
			t.Stop()
		}
	}
	w.mu.Unlock()
	if cancel == nil {
		return
	}
	cancel(cause)
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
func (w *Worker) signalLocked() {
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// slotHorizon: a poll slot this close after a tick gets a timer of its own
// rather than waiting for the next tick (Vault ticks about once a minute).
const slotHorizon = 90 * time.Second

// Tick is the periodic function's whole job: decide, maybe wake, return.
func (w *Worker) Tick(s Storage) {
	w.Start(s)
	w.mu.Lock()
	defer w.mu.Unlock()
	w.tickLocked()
}

func (w *Worker) tickLocked() {
	if w.stopped || w.busy {
		return
	}
	now := w.deps.Now()
	offset := pollOffset(w.mountID, w.pollPeriod)
	if !pollDue(now, w.lastPollAt, w.pollPeriod, offset) {
		next := nextPollAt(w.lastPollAt, w.pollPeriod, offset)
		if wait := next.Sub(now); wait <= slotHorizon {
			if w.slotTimer != nil {
				w.slotTimer.Stop()
			}
			w.slotTimer = time.AfterFunc(wait, func() {
				w.mu.Lock()
				defer w.mu.Unlock()
				w.tickLocked()
			})
		}
		return
	}
	if w.trigger == "" {
		w.trigger = "periodic"
	}
	w.signalLocked()
}

// NextPollAt is when the next periodic poll is due (the zero time: at the
// next tick, nothing polled yet). Each mount has its own slot in the period.
func (w *Worker) NextPollAt() time.Time {
	w.mu.Lock()
	defer w.mu.Unlock()
	return nextPollAt(w.lastPollAt, w.pollPeriod, pollOffset(w.mountID, w.pollPeriod))
}

// NotifyAnswer is what Notify tells a push notification.
type NotifyAnswer struct {
	// Message says what the notification caused, for the receiver's answer.
	Message string
}

// Notify is a push notification (a forge's webhook delivery): it asks for a
// poll, which fetches and verifies as always. commit is the commit the
// notification says the branch now points at, "" when it names none; it is
// only a hint: a notification naming the HEAD the last fetch already saw
// costs nothing. Notifications fold: the first one polls at once, those
// within pollMinInterval of it fold into one poll at the end of the
// interval, which is dropped when the fetch since then saw every commit
// they named.
func (w *Worker) Notify(s Storage, commit string) NotifyAnswer {
	w.Start(s)
	w.mu.Lock()
	defer w.mu.Unlock()
	now := w.deps.Now()
	if commit != "" && commit == w.lastFetchedHead && w.notifyTimer == nil {
		return NotifyAnswer{Message: fmt.Sprintf("the branch was last fetched at %s: nothing new to fetch", commit)}
	}
	if next := w.lastNotifyPoll.Add(w.pollMinInterval); now.Before(next) || w.busy {
		if w.notifyTimer == nil {
			w.notifyCommit = commit
			w.notifyTimer = time.AfterFunc(max(next.Sub(now), 0), w.notifyDue)
		} else if commit != w.notifyCommit {
			w.notifyCommit = ""
		}
		return NotifyAnswer{Message: fmt.Sprintf("folded into the poll at %s", next.UTC().Format(time.RFC3339Nano))}
	}
	w.notifyPollLocked(now)
	return NotifyAnswer{Message: "poll started: fetching the branch"}
}

// notifyDue ends a fold: one poll, unless the fetches since saw every
// commit the folded notifications named.
func (w *Worker) notifyDue() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.notifyTimer = nil
	if w.stopped || (w.notifyCommit != "" && w.notifyCommit == w.lastFetchedHead) {
		return
	}
	w.notifyPollLocked(w.deps.Now())
}

func (w *Worker) notifyPollLocked(now time.Time) {
	w.lastNotifyPoll = now
	if w.trigger == "" || w.trigger == "periodic" {
		w.trigger = triggerWebhook
	}
	w.signalLocked()
}

// PollAnswer is what `poll` tells its caller.
type PollAnswer struct {
	Started    bool
	Message    string
	CurrentRun string
	RetryAfter time.Duration
}

// RequestPoll asks for a poll now, unless one was asked for too recently.
func (w *Worker) RequestPoll(s Storage, retry bool) PollAnswer {
	w.Start(s)
	w.mu.Lock()
	defer w.mu.Unlock()
	now := w.deps.Now()
	if next := w.lastManualPoll.Add(w.pollMinInterval); now.Before(next) {
		return PollAnswer{
			Message:    fmt.Sprintf("rate-limited: a poll was requested at %s; ask again after %s", w.lastManualPoll.UTC().Format(time.RFC3339Nano), next.UTC().Format(time.RFC3339Nano)),
			RetryAfter: next.Sub(now),
		}
	}
	w.lastManualPoll = now
	w.trigger = triggerPoll
	w.forceRetry = w.forceRetry || retry
	w.signalLocked()
	if w.busy {
		a := PollAnswer{Started: true, Message: "the worker is busy; a poll is queued and runs as soon as it is free"}
		if w.current != nil {
			a.CurrentRun = w.current.id
			a.Message = fmt.Sprintf("run %s (commit %s) is in progress; a poll is queued to follow it", w.current.id, w.current.commit)
		}
		return a
	}
	return PollAnswer{Started: true, Message: "poll started: fetching the branch; read flant_gitops/status for the outcome"}
}

// CancelRun cancels the run if this worker is executing it and waits for the
// container to be gone (bounded by ctx). It reports whether the run was ours.
func (w *Worker) CancelRun(ctx context.Context, id string) bool {
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

// Snapshot is the worker's in-memory view, for `status`.
func (w *Worker) Snapshot() (busy bool, currentRun string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.current != nil {
		currentRun = w.current.id
	}
	return w.busy, currentRun
}

func (w *Worker) loop(ctx context.Context) {
	defer close(w.done)
	defer w.closeRunner()
	w.mu.Lock()
	s := w.storage
	w.mu.Unlock()
	// Until every run a previous owner left is settled (re-attached,
	// finished, or known to be gone), nothing new starts: recovery is tried
	// again on every wake.
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
				w.mu.Lock()
				force := w.forceRetry
				w.mu.Unlock()
				recovered = w.recoverRuns(ctx, s, force)
			}
			if recovered {
				w.pollOnce(ctx, s)
			}
		}
		w.setBusy(false)
	}
}

// loadMountID learns the mount's id, which names the containers and the
// cache folder.
func (w *Worker) loadMountID(ctx context.Context, s Storage) error {
	id, err := w.deps.MountID(ctx, s)
	if err != nil {
		return err
	}
	w.mu.Lock()
	w.mountID = id
	w.mu.Unlock()
	return nil
}

func (w *Worker) setBusy(b bool) {
	w.mu.Lock()
	w.busy = b
	w.mu.Unlock()
}

// updateState applies f to the stored watch state under stateMu.
func (w *Worker) updateState(ctx context.Context, s Storage, f func(st *State)) error {
	w.stateMu.Lock()
	defer w.stateMu.Unlock()
	st, err := getState(ctx, s)
	if err != nil {
		return err
	}
	f(st)
	return putState(ctx, s, st)
}

// mirrorFor reuses the open mirror while the repository, branch and
// credentials stay the same; the cache folder depends on repository and
// branch only, so a rotated password does not cost a full clone.
func (w *Worker) mirrorFor(ctx context.Context, ws *Settings) (Mirror, error) {
	// The poll and the signatures read path (CheckCommit) may both open
	// it: one opens, the other reuses.
	w.mirrorMu.Lock()
	defer w.mirrorMu.Unlock()
	key := w.deps.MirrorFingerprint(ws)
	w.mu.Lock()
	m, mk, mountID := w.mirror, w.mirrorKey, w.mountID
	w.mu.Unlock()
	if m != nil && mk == key {
		return m, nil
	}
	dir, err := w.deps.MirrorFolder(w.log(), mountID, ws)
	if err != nil {
		return nil, err
	}
	m, err = w.deps.OpenMirror(ctx, dir, ws)
	if err != nil {
		return nil, fmt.Errorf("opening the mirror of %s: %w", ws.RepoURL, err)
	}
	w.mu.Lock()
	w.mirror, w.mirrorKey = m, key
	w.mu.Unlock()
	return m, nil
}

func (w *Worker) getRunner(ctx context.Context) (container.Runner, error) {
	w.mu.Lock()
	r := w.runner
	w.mu.Unlock()
	if r != nil {
		return r, nil
	}
	r, err := w.deps.NewRunner(ctx)
	if err != nil {
		return nil, err
	}
	w.mu.Lock()
	w.runner = r
	w.mu.Unlock()
	return r, nil
}

// closeRunner releases the Docker client when the worker ends.
func (w *Worker) closeRunner() {
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

func (w *Worker) labels(runID string) map[string]string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return map[string]string{LabelMount: w.mountID, LabelRun: runID}
}

// createLabels are the labels a run's container is created with.
func (w *Worker) createLabels(r *Run) map[string]string {
	l := w.labels(r.ID)
	l[LabelCommit] = r.Commit
	return l
}

// SetLastSuccessful records the operator's last successful commit (an empty
// commit deletes it) and forgets a failing or held commit.
func (w *Worker) SetLastSuccessful(ctx context.Context, s Storage, commit string) error {
	var err error
	if commit == "" {
		err = deleteEntry(ctx, s, lastSuccessfulKey)
	} else {
		err = putLastSuccessful(ctx, s, &LastSuccessful{Commit: commit, Source: lastSuccessfulOperator, SetAt: w.deps.Now()})
	}
	if err != nil {
		return err
	}
	return w.clearRetry(ctx, s)
}

// ReadLog reads a page of run id's log: at most limit bytes from offset, in
// the chunking the worker wrote it.
func (w *Worker) ReadLog(ctx context.Context, s Storage, id string, offset, limit int64) (*LogPage, error) {
	return readRunLog(ctx, s, id, offset, limit, w.logLimits.chunkSize)
}

// State reads the worker's memory across polls, for `status`; an empty
// State before the first poll.
func (w *Worker) State(ctx context.Context, s Storage) (*State, error) {
	return getState(ctx, s)
}

// LastSuccessful returns the commit the next run must descend from: the
// stored one, else initial (the configured initial_last_successful_commit),
// else one with an empty Commit.
func (w *Worker) LastSuccessful(ctx context.Context, s Storage, initial string) (*LastSuccessful, error) {
	return effectiveLastSuccessful(ctx, s, initial)
}

// ListRuns returns the ids of the stored runs, newest first.
func (w *Worker) ListRuns(ctx context.Context, s Storage) ([]string, error) {
	return listRunIDs(ctx, s)
}

// Run reads one run; the error wraps ErrRunNotFound when there is none.
func (w *Worker) Run(ctx context.Context, s Storage, id string) (*Run, error) {
	return getRun(ctx, s, id)
}

// clearRetry forgets a failing or held commit after an operator moved the
// last successful commit.
func (w *Worker) clearRetry(ctx context.Context, s Storage) error {
	return w.updateState(ctx, s, func(st *State) {
		st.FailedCommit, st.FailedContent, st.Failures, st.Held, st.NextAttemptAt = "", "", 0, false, time.Time{}
	})
}
