package watch

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/flant/flant_gitops/backend/events"
	"github.com/flant/flant_gitops/container"
	"github.com/flant/flant_gitops/gitwatch"
)

// finishTimeout bounds the storage writes that record how a run ended; they
// use a context detached from the worker's, so a stopping plugin still
// records the interruption.
const finishTimeout = 30 * time.Second

// pollOnce is one pass of the watch: fetch, check, maybe run, record.
func (w *Worker) pollOnce(ctx context.Context, s Storage) {
	w.mu.Lock()
	trigger, force := w.trigger, w.forceRetry
	w.trigger, w.forceRetry = "", false
	now := w.deps.Now()
	w.lastPollAt = now
	w.mu.Unlock()
	if trigger == "" {
		trigger = "periodic"
	}

	w.sweepOrphans(ctx)
	w.mu.Lock()
	w.refusedBy = events.RefusedSignatures
	w.mu.Unlock()
	outcome, result := w.poll(ctx, s, trigger, force)
	if ctx.Err() != nil && outcome != OutcomeRan {
		return // the plugin is stopping; the next instance polls again
	}
	w.log().Debug("poll finished", "trigger", trigger, "outcome", outcome, "result", result)
	// Detached: a run interrupted by a stopping plugin is still reported.
	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), finishTimeout)
	defer cancel()
	var refused *Check
	head := ""
	err := w.updateState(fctx, s, func(st *State) {
		st.LastPollAt = now
		st.LastPollOutcome = outcome
		st.LastPollResult = result
		head, refused = st.HeadCommit, st.Quorum
	})
	if err != nil {
		w.log().Error("could not record the poll result", "error", err)
	}
	w.publish(events.Event{Kind: events.PollFinished, Time: now, Outcome: outcome, Reason: result, Trigger: trigger, Commit: head})
	if outcome == OutcomeRefused {
		e := refusalEvent(head, result, refused)
		w.mu.Lock()
		e.Cause = w.refusedBy
		w.mu.Unlock()
		w.publish(e)
	}
}

// refusalEvent describes a refused HEAD; qi is the signature count of the
// poll when the signatures refused it (nil when ancestry did).
func refusalEvent(head, reason string, qi *Check) events.Event {
	e := events.Event{Kind: events.CommitRefused, Commit: head, Outcome: OutcomeRefused, Reason: reason}
	if qi != nil && qi.Commit == head {
		e.Signers = append([]string(nil), qi.Signers...)
		if qi.Missing > 0 {
			e.Missing = append(e.Missing, fmt.Sprintf("%d more verified signature(s) of trusted signers (%d of %d)", qi.Missing, qi.Verified, qi.Required))
		}
		for _, r := range qi.Rules {
			if !r.OK {
				e.Missing = append(e.Missing, fmt.Sprintf("%d more signer(s) for rule %q (%s); could sign: %s",
					r.Missing, r.Name, strings.Join(r.Paths, ", "), strings.Join(r.CouldSign, ", ")))
			}
		}
	}
	return e
}

// poll returns the outcome word and the sentence `status` shows.
func (w *Worker) poll(ctx context.Context, s Storage, trigger string, force bool) (string, string) {
	ws, err := w.deps.Settings(ctx, s)
	if errors.Is(err, ErrNotConfigured) {
		return OutcomeNotConfigured, ErrNotConfigured.Error()
	}
	if err != nil {
		return OutcomeError, fmt.Sprintf("reading the configuration: %v", err)
	}
	w.mu.Lock()
	w.pollPeriod = ws.PollPeriod
	w.mu.Unlock()

	m, err := w.mirrorFor(ctx, ws)
	if err != nil {
		return OutcomeError, err.Error()
	}
	w.mu.Lock()
	w.target = gitwatch.Target{URL: ws.RepoURL, Branch: ws.Branch}
	w.mu.Unlock()
	fr, err := m.Fetch(ctx)
	if err != nil {
		return OutcomeError, fmt.Sprintf("fetching branch %s of %s: %v", ws.Branch, ws.RepoURL, err)
	}
	head := fr.Head
	w.mu.Lock()
	w.lastFetchedHead = head
	w.mu.Unlock()
	if err := w.updateState(ctx, s, func(st *State) { st.HeadCommit = head }); err != nil {
		return OutcomeError, err.Error()
	}
	last, err := effectiveLastSuccessful(ctx, s, ws.InitialLastSuccessful)
	if err != nil {
		return OutcomeError, err.Error()
	}
	st, err := getState(ctx, s)
	if err != nil {
		return OutcomeError, err.Error()
	}
	content, err := m.ContentID(ctx, head)
	if err != nil {
		return OutcomeError, fmt.Sprintf("reading commit %s: %v", head, err)
	}
	now := w.deps.Now()
	same := ""
	if head != st.FailedCommit {
		same = fmt.Sprintf(" (the same signed change as %s, under a re-wrapped signature)", st.FailedCommit)
	}
	switch decide(now, head, content, last.Commit, st, force) {
	case decideUpToDate:
		err := w.updateState(ctx, s, func(st *State) { st.Quorum = nil })
		if err != nil {
			return OutcomeError, err.Error()
		}
		return OutcomeUpToDate, fmt.Sprintf("up to date: HEAD %s is the last successful commit", head)
	case decideHeld:
		return OutcomeHeld, fmt.Sprintf("HEAD %s%s is not retried: its run was canceled by an operator; push a new commit or `vault write flant_gitops/poll retry=true`", head, same)
	case decideBackoff:
		return OutcomeBackoff, fmt.Sprintf("HEAD %s%s failed %d time(s) in a row; next attempt at %s (or `vault write flant_gitops/poll retry=true`)",
			head, same, st.Failures, st.NextAttemptAt.UTC().Format(time.RFC3339))
	}

	if last.Commit != "" {
		ok, err := m.IsAncestor(ctx, last.Commit, head)
		if err != nil && ctx.Err() != nil {
			return OutcomeError, err.Error()
		}
		if err != nil || !ok {
			why := "is not an ancestor of"
			if err != nil {
				why = fmt.Sprintf("cannot be checked as an ancestor (%v) of", err)
			}
			w.mu.Lock()
			w.refusedBy = events.RefusedAncestry
			w.mu.Unlock()
			return OutcomeRefused, fmt.Sprintf("refused: the last successful commit %s %s HEAD %s: the branch was force-pushed or rewritten. "+
				"Nothing runs until an operator checks the branch and sets the commit to continue from with "+
				"`vault write flant_gitops/configure/last_successful_commit commit=<sha>` (the commit after which runs resume; HEAD itself to skip it), "+
				"or deletes it to fall back to initial_last_successful_commit", last.Commit, why, head)
		}
	}

	rule := rule(ws, last.Commit)
	verdict := refusalKey(head, rule, fr.Signatures)
	// An operator's poll checks afresh; the periodic ones reuse a refusal.
	if v := w.rememberedRefusal(verdict, now, force || trigger == triggerPoll); v != nil {
		qi := *v.qi
		if err := w.updateState(ctx, s, func(st *State) { st.Quorum = &qi }); err != nil {
			return OutcomeError, err.Error()
		}
		return OutcomeRefused, v.msg
	}
	q, err := m.Accept(ctx, head, rule)
	if err != nil {
		return OutcomeError, fmt.Sprintf("verifying the signatures of %s: %v", head, err)
	}
	qi := newCheck(q)
	if err := w.updateState(ctx, s, func(st *State) { st.Quorum = qi }); err != nil {
		return OutcomeError, err.Error()
	}
	if !q.OK {
		// The same words as the signatures read path (Quorum.Verdict).
		msg := "refused: " + qi.Text
		w.rememberRefusal(verdict, now, qi, msg)
		return OutcomeRefused, msg
	}
	w.rememberRefusal("", now, nil, "")

	attempt := 1
	if st.sameChange(head, content) {
		attempt = st.Failures + 1
	}
	run, err := w.newRun(ctx, s, head, content, attempt, trigger, qi)
	if err != nil {
		return OutcomeError, err.Error()
	}
	warning := w.execute(ctx, s, run, ws, m)
	if warning != "" {
		warning = "; warning: " + warning
	}
	if !run.Finished() {
		return OutcomeRan, fmt.Sprintf("run %s for commit %s: running; its container was left running for the next active node%s", run.ID, head, warning)
	}
	return OutcomeRan, fmt.Sprintf("run %s for commit %s: %s%s", run.ID, head, run.Describe(), warning)
}

// refusalTTL bounds how long a refused HEAD's verdict is reused: time alone
// can change it (a signature dated a little ahead of this clock, a key not
// yet valid).
const refusalTTL = 10 * time.Minute

// triggerPoll is the trigger of an operator's `vault write flant_gitops/poll`.
const triggerPoll = "poll"

// triggerWebhook is the trigger of a forge's delivery (Notify).
const triggerWebhook = "webhook"

// refusedVerdict is the last refused HEAD's check. Whoever may push notes
// can make one check expensive; remembered while HEAD, the rule (keys,
// quorum, plugin keys, last successful commit) and the signature refs stay
// the same, a refused HEAD costs the watch one check, not one per poll.
type refusedVerdict struct {
	key string
	at  time.Time
	qi  *Check
	msg string
}

// refusalKey identifies what a verdict depends on; "" when the rule cannot
// be digested (then nothing is remembered).
func refusalKey(head string, rule gitwatch.Rule, signatures string) string {
	d := rule.Digest()
	if d == "" {
		return ""
	}
	return head + "\x00" + d + "\x00" + signatures
}

// rememberedRefusal is the refusal remembered under key, or nil when there
// is none, it is too old, or fresh is asked for.
func (w *Worker) rememberedRefusal(key string, now time.Time, fresh bool) *refusedVerdict {
	w.mu.Lock()
	defer w.mu.Unlock()
	v := w.refused
	if fresh || key == "" || v == nil || v.key != key || now.Sub(v.at) >= refusalTTL || now.Before(v.at) {
		return nil
	}
	return v
}

// rememberRefusal keeps the verdict of a refused HEAD (key "" forgets).
func (w *Worker) rememberRefusal(key string, now time.Time, qi *Check, msg string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if key == "" {
		w.refused = nil
		return
	}
	w.refused = &refusedVerdict{key: key, at: now, qi: qi, msg: msg}
}

// Describe is the run's status and, when it has one, its reason.
func (r *Run) Describe() string {
	if r.Reason == "" {
		return r.Status
	}
	return r.Status + ": " + r.Reason
}

// newRun writes the run record, queued, before anything else happens for it.
func (w *Worker) newRun(ctx context.Context, s Storage, commit, content string, attempt int, trigger string, check *Check) (*Run, error) {
	now := w.deps.Now()
	id, err := newRunID(now)
	if err != nil {
		return nil, err
	}
	r := &Run{ID: id, Commit: commit, Content: content, Status: RunQueued, Attempt: attempt, Trigger: trigger, Signers: check.Signers,
		SignedBy: check.SignedBy, Rules: check.Rules, CreatedAt: now}
	if err := putRun(ctx, s, r); err != nil {
		return nil, err
	}
	if err := w.updateState(ctx, s, func(st *State) { st.CurrentRunID = id }); err != nil {
		return nil, err
	}
	return r, nil
}

// execute runs a queued run to its end and records the outcome. It returns
// the runner's warning for the operator (the run had no init to stop it at
// its deadline), or "".
func (w *Worker) execute(ctx context.Context, s Storage, run *Run, ws *Settings, m Mirror) string {
	runCtx, end := w.beginRun(ctx, run)
	defer end()

	res, runErr := w.startAndFollow(runCtx, s, run, ws, m)
	if res.Warning != "" {
		w.log().Warn("a run without the plugin's init: only its follower stops it at run_timeout", "run", run.ID, "why", res.Warning)
	}
	w.finish(runCtx, s, run, ws.PollPeriod, res, runErr)
	return res.Warning
}

// startAndFollow does the vault requests, marks the run running and runs the
// container. The returned error means the container did not run to an end.
func (w *Worker) startAndFollow(ctx context.Context, s Storage, run *Run, ws *Settings, m Mirror) (container.Result, error) {
	env, files, err := w.deps.VaultRequests(ctx, s)
	if err != nil {
		return container.Result{}, fmt.Errorf("no container started: %w", err)
	}
	runner, err := w.getRunner(ctx)
	if err != nil {
		return container.Result{}, fmt.Errorf("connecting to the Docker engine: %w", err)
	}
	// Recorded with the run, so a next owner that cannot find the container
	// knows whether its own engine would have it (fencing, recoverRun).
	engineID, err := runner.EngineID(ctx)
	if err != nil {
		return container.Result{}, fmt.Errorf("no container started: asking the Docker engine for its id: %w", err)
	}
	logw, err := openRunLog(ctx, s, run.ID, w.logLimits)
	if err != nil {
		return container.Result{}, err
	}
	now := w.deps.Now()
	run.Status, run.StartedAt, run.Deadline, run.EngineID = RunRunning, now, now.Add(ws.RunTimeout), engineID
	if err := putRun(ctx, s, run); err != nil {
		_ = logw.Close(context.WithoutCancel(ctx))
		return container.Result{}, err
	}
	w.publish(events.Event{Kind: events.RunStarted, Time: now, Commit: run.Commit, Run: run.ID, Attempt: run.Attempt,
		Trigger: run.Trigger, Signers: append([]string(nil), run.Signers...)})
	spec := container.Spec{
		Image:       ws.Image,
		Commands:    ws.Commands,
		Files:       func(wr io.Writer) error { return m.WriteTar(ctx, run.Commit, wr) },
		ExtraFiles:  files,
		Env:         env,
		Labels:      w.createLabels(run),
		MemoryBytes: ws.MemoryBytes,
		NanoCPUs:    ws.NanoCPUs,
		NetworkMode: ws.NetworkMode,
		Timeout:     ws.RunTimeout,
		// The container's init stops the run at the recorded deadline
		// itself, so a fence on it can lift at a known time.
		Deadline: run.Deadline,
		Log:      logw,
	}
	res, err := runner.Run(ctx, spec)
	if cerr := logw.Close(context.WithoutCancel(ctx)); cerr != nil {
		w.log().Warn("part of a run's log could not be stored", "run", run.ID, "error", cerr)
	}
	return res, err
}

// finish records how a run ended and what it means for the commit: success
// moves last_successful_commit, a failure schedules a retry with backoff, an
// interruption (plugin stopping) retries at once in the next instance, an
// operator's cancel holds the commit.
func (w *Worker) finish(runCtx context.Context, s Storage, run *Run, period time.Duration, res container.Result, runErr error) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(runCtx), finishTimeout)
	defer cancel()
	if errors.Is(runErr, container.ErrLeftRunning) {
		w.leaveRunning(ctx, s, run, res)
		return
	}
	cause := context.Cause(runCtx)
	now := w.deps.Now()
	if runErr != nil && res.Reason != "" {
		// The command's outcome is known; only the cleanup failed. Judging
		// the run by it would re-run a command that already succeeded.
		w.log().Warn("the run ended but its container could not be cleaned up", "run", run.ID, "container", res.ContainerID, "error", runErr)
	}
	classifyRun(run, res, runErr, cause)
	run.FinishedAt = now
	if res.ContainerID != "" {
		run.ContainerID = res.ContainerID
	}

	if run.Status == RunSucceeded {
		// last_successful_commit first: a crash between the two writes then
		// leaves a run that recovery marks succeeded, never a second run.
		ls := &LastSuccessful{Commit: run.Commit, Source: lastSuccessfulByRun, RunID: run.ID, SetAt: now}
		if err := putLastSuccessful(ctx, s, ls); err != nil {
			w.log().Error("could not record the last successful commit", "run", run.ID, "error", err)
			run.Status, run.Reason = RunFailed, "the command succeeded but recording the commit failed: "+err.Error()
		}
	}
	if err := putRun(ctx, s, run); err != nil {
		w.log().Error("could not record the end of a run", "run", run.ID, "status", run.Status, "error", err)
	}
	w.recordRunOutcome(ctx, s, run, period, now)
	began := run.StartedAt
	if began.IsZero() {
		began = run.CreatedAt
	}
	w.publish(events.Event{Kind: events.RunFinished, Time: now, Commit: run.Commit, Run: run.ID, Attempt: run.Attempt,
		Trigger: run.Trigger, Outcome: run.Status, Reason: run.Reason, Duration: now.Sub(began)})
	if err := pruneRuns(ctx, s, runsRetained); err != nil {
		w.log().Warn("could not prune old runs", "error", err)
	}
	w.log().Info("run finished", "run", run.ID, "commit", run.Commit, "status", run.Status, "reason", run.Reason)
}

// leaveRunning records a run whose container was handed over (HandOver): it
// stays running with its container id, for the next owner to re-attach. The
// run log was flushed with its resume point when the runner returned.
func (w *Worker) leaveRunning(ctx context.Context, s Storage, run *Run, res container.Result) {
	if res.ContainerID != "" {
		run.ContainerID = res.ContainerID
	}
	run.Status = RunRunning
	if err := putRun(ctx, s, run); err != nil {
		// The record already says running; only a container id learnt
		// just now is missing, and the next owner finds it by label.
		w.log().Warn("could not record the run left running", "run", run.ID, "error", err)
	}
	w.log().Info("left running for the next active node", "run", run.ID, "commit", run.Commit, "container", run.ContainerID)
}

// classifyRun sets status, reason and exit code from the runner's answer.
// A run whose outcome the runner knows is judged by it whatever the cause;
// a handover before the container started is an interruption.
func classifyRun(run *Run, res container.Result, runErr error, cause error) {
	handover := errors.Is(cause, container.ErrLeftRunning)
	switch {
	case errors.Is(cause, errCanceledByOperator):
		run.Status, run.Reason = RunCanceled, errCanceledByOperator.Error()
	case handover && (res.Reason == "" || res.Reason == container.ReasonCanceled):
		run.Status, run.Reason = RunInterrupted, "the plugin handed over to the next active node before the run's container started; the commit is retried"
	case errors.Is(cause, errPluginStopping):
		run.Status, run.Reason = RunInterrupted, errPluginStopping.Error()+"; the container was removed and the commit is retried"
	case errors.Is(runErr, container.ErrNeverStarted):
		run.Status, run.Reason = RunInterrupted, "the run's container was created but never started (the plugin stopped in between); it was removed and the commit is retried"
	case runErr != nil && res.Reason == "":
		run.Status, run.Reason = RunFailed, runErr.Error()
	case res.Reason == container.ReasonExit && res.ExitCode == 0:
		run.Status, run.Reason = RunSucceeded, ""
	case res.Reason == container.ReasonExit:
		run.Status, run.Reason = RunFailed, fmt.Sprintf("the command exited with code %d", res.ExitCode)
	case res.Reason == container.ReasonTimeout:
		run.Status, run.Reason = RunFailed, container.ReasonTimeout
	case res.Reason == container.ReasonOOMKilled:
		run.Status, run.Reason = RunFailed, "killed: out of memory (memory_limit)"
	default:
		run.Status, run.Reason = RunFailed, fmt.Sprintf("the container ended without an exit status (%q)", res.Reason)
	}
	if res.Reason == container.ReasonExit || res.Reason == container.ReasonOOMKilled || (res.Reason == container.ReasonTimeout && res.ExitCode != 0) {
		code := res.ExitCode
		run.ExitCode = &code
	}
}

// recordRunOutcome updates the retry bookkeeping after a run ended.
func (w *Worker) recordRunOutcome(ctx context.Context, s Storage, run *Run, period time.Duration, now time.Time) {
	err := w.updateState(ctx, s, func(st *State) {
		if st.CurrentRunID == run.ID {
			st.CurrentRunID = ""
		}
		st.LastRunID = run.ID
		if !st.sameChange(run.Commit, run.Content) {
			st.Failures, st.Held = 0, false
		}
		st.FailedCommit, st.FailedContent = run.Commit, run.Content
		switch run.Status {
		case RunSucceeded:
			st.FailedCommit, st.FailedContent, st.Failures, st.Held, st.NextAttemptAt = "", "", 0, false, time.Time{}
		case RunInterrupted:
			// Not the commit's fault: retry at once, no backoff step.
			st.Held, st.NextAttemptAt = false, now
		case RunCanceled:
			st.Held = true
		default:
			st.Failures++
			st.Held = false
			st.NextAttemptAt = now.Add(retryDelay(st.Failures, period))
		}
	})
	if err != nil {
		w.log().Error("could not record the retry state of a run", "run", run.ID, "error", err)
	}
}

// recoverRuns settles runs a previous owner left unfinished: a container
// still there is re-attached (and followed to its end); a container that is
// gone from this node's engine means the run was interrupted and its commit
// is retried at once. A run started on another engine, which this node cannot
// see, is fenced until its deadline or an operator's retry (force). It
// reports whether every run is settled; until then nothing new starts, and
// status says why (State.Fence, a fenced or recovering poll outcome).
func (w *Worker) recoverRuns(ctx context.Context, s Storage, force bool) bool {
	settled, fence, problem := true, (*Fence)(nil), ""
	ids, err := listRunIDs(ctx, s)
	if err != nil {
		settled, problem = false, fmt.Sprintf("the runs a previous owner may have left cannot be listed (%v); nothing starts until they can", err)
	}
	for _, id := range ids {
		r, err := getRun(ctx, s, id)
		if err != nil {
			w.log().Error("could not read a run to recover", "run", id, "error", err)
			continue
		}
		if r.Finished() {
			continue
		}
		ok, f, why := w.recoverRun(ctx, s, r, force)
		if ctx.Err() != nil {
			return false
		}
		if !ok {
			settled = false
			if fence == nil && f != nil {
				fence = f
			}
			if problem == "" {
				problem = why
			}
		}
	}
	if settled && !w.hadFence(ctx, s) {
		return true
	}
	now := w.deps.Now()
	err = w.updateState(ctx, s, func(st *State) {
		if fence != nil && (st.Fence == nil || st.Fence.RunID != fence.RunID) {
			w.log().Warn("a run started on another Docker engine may still be running there; nothing starts until its run_timeout passes or an operator retries",
				"run", fence.RunID, "commit", fence.Commit, "engine", fence.EngineID, "this_engine", fence.NodeEngineID, "until", fence.Until)
		}
		st.Fence = fence
		if settled {
			return
		}
		st.LastPollAt, st.LastPollOutcome, st.LastPollResult = now, OutcomeRecovering, problem
		if fence != nil {
			st.LastPollOutcome, st.LastPollResult = OutcomeFenced, fence.Message
		}
	})
	if err != nil {
		w.log().Error("could not record the state of the recovery", "error", err)
	}
	return settled
}

// hadFence reports whether the stored state still shows a fence to clear.
func (w *Worker) hadFence(ctx context.Context, s Storage) bool {
	st, err := getState(ctx, s)
	return err != nil || st.Fence != nil
}

// recoverRun settles one unfinished run, or says why it cannot yet: with a
// fence when the run may still be running on another engine.
func (w *Worker) recoverRun(ctx context.Context, s Storage, r *Run, force bool) (settled bool, fence *Fence, problem string) {
	ls, err := getLastSuccessful(ctx, s)
	if err != nil {
		w.log().Error("could not read the last successful commit", "error", err)
		return false, nil, fmt.Sprintf("run %s left by a previous owner cannot be settled: %v", r.ID, err)
	}
	var ws *Settings
	var period time.Duration
	if ws, err = w.deps.Settings(ctx, s); err == nil {
		period = ws.PollPeriod
	}
	if ls != nil && ls.RunID == r.ID {
		// It succeeded and the plugin stopped before writing the record.
		w.finish(ctx, s, r, period, container.Result{Reason: container.ReasonExit}, nil)
		return true, nil, ""
	}
	var found []container.Found
	runner, err := w.getRunner(ctx)
	if err == nil {
		found, err = runner.Find(ctx, w.labels(r.ID))
	}
	var here string
	if err == nil && len(found) == 0 && r.EngineID != "" {
		here, err = runner.EngineID(ctx)
	}
	if err != nil {
		// Without the engine the container's fate is unknown: nothing
		// starts rather than risk a second run of the same commit.
		w.log().Error("cannot check for the container of an unfinished run; nothing starts until the Docker engine answers", "run", r.ID, "error", err)
		return false, nil, fmt.Sprintf("run %s (commit %s) was left unfinished by a previous owner and the Docker engine cannot be asked for its container (%v); nothing starts until it answers", r.ID, r.Commit, err)
	}
	if len(found) > 0 {
		w.reattach(ctx, s, r, runner, found[len(found)-1].ID, period)
		return true, nil, ""
	}
	reason := "the plugin stopped during the run and its container is gone; the commit is retried"
	if r.EngineID != "" && r.EngineID != here {
		until := fenceUntil(r, ws)
		now := w.deps.Now()
		var lifted string
		switch {
		case force:
			lifted = "an operator asked for `poll retry=true`"
		case !until.IsZero() && !now.Before(until):
			lifted = "its run_timeout and the stop margin passed at " + until.UTC().Format(time.RFC3339)
		default:
			untilText := "an operator writes `vault write flant_gitops/poll retry=true`"
			if !until.IsZero() {
				untilText = fmt.Sprintf("its run_timeout and a margin of %s for stopping it pass at %s, or %s after checking that it ended",
					container.DeadlineMargin, until.UTC().Format(time.RFC3339), untilText)
			}
			return false, &Fence{
				RunID: r.ID, Commit: r.Commit, EngineID: r.EngineID, NodeEngineID: here, Until: until,
				Message: fmt.Sprintf("fenced: run %s of commit %s was started on Docker engine %s, which this node (engine %s) cannot see, so it may still be running there; "+
					"nothing starts until %s; then the run is marked interrupted and the commit runs again",
					r.ID, r.Commit, r.EngineID, here, untilText),
			}, ""
		}
		reason = fmt.Sprintf("started on Docker engine %s, which this node (engine %s) cannot see; after %s the commit is retried; it may have run to its end there",
			r.EngineID, here, lifted)
	}
	r.Status, r.Reason, r.FinishedAt = RunInterrupted, reason, w.deps.Now()
	if err := putRun(ctx, s, r); err != nil {
		w.log().Error("could not mark a run interrupted", "run", r.ID, "error", err)
		return false, nil, fmt.Sprintf("run %s left by a previous owner cannot be marked interrupted: %v", r.ID, err)
	}
	w.recordRunOutcome(ctx, s, r, period, w.deps.Now())
	w.log().Info("run interrupted by a plugin restart; its commit is retried", "run", r.ID, "commit", r.Commit, "reason", r.Reason)
	return true, nil, ""
}

// reattach follows a container a previous instance started, to its end.
func (w *Worker) reattach(ctx context.Context, s Storage, r *Run, runner container.Runner, containerID string, period time.Duration) {
	runCtx, end := w.beginRun(ctx, r)
	defer end()
	w.log().Info("re-attaching to the container of an unfinished run", "run", r.ID, "container", containerID)
	if err := w.updateState(ctx, s, func(st *State) { st.CurrentRunID = r.ID }); err != nil {
		w.log().Error("could not record the re-attached run", "run", r.ID, "error", err)
	}
	r.Status, r.ContainerID = RunRunning, containerID
	if err := putRun(ctx, s, r); err != nil {
		w.log().Error("could not record the re-attached run", "run", r.ID, "error", err)
	}
	logw, err := openRunLog(ctx, s, r.ID, w.logLimits)
	if err != nil {
		w.finish(runCtx, s, r, period, container.Result{}, err)
		return
	}
	// The engine's log continues after the last line stored, so nothing the
	// container printed meanwhile is lost; a log stored without a point (by
	// an older version) can only continue from now.
	since, stored := logw.resumePoint()
	note := "\n[flant_gitops: the plugin restarted and re-attached; the output continues after the last line stored]\n"
	if since.IsZero() && stored && !logw.pointPlaced() {
		since = time.Now()
		note = "\n[flant_gitops: the plugin restarted; output resumes here and some may be missing]\n"
	}
	_, _ = logw.Write([]byte(note))
	remaining := r.Deadline.Sub(w.deps.Now())
	res, runErr := runner.Attach(runCtx, containerID, logw, since, remaining)
	if cerr := logw.Close(context.WithoutCancel(ctx)); cerr != nil {
		w.log().Warn("part of a run's log could not be stored", "run", r.ID, "error", cerr)
	}
	w.finish(runCtx, s, r, period, res, runErr)
}

// beginRun makes run the worker's current run, cancellable through
// runs/ID/cancel and Clean; end clears it and wakes whoever waits for it.
func (w *Worker) beginRun(ctx context.Context, run *Run) (context.Context, func()) {
	runCtx, cancel := context.WithCancelCause(ctx)
	active := &activeRun{id: run.ID, commit: run.Commit, cancel: cancel, done: make(chan struct{})}
	w.mu.Lock()
	w.current = active
	w.mu.Unlock()
	return runCtx, func() {
		w.mu.Lock()
		w.current = nil
		w.mu.Unlock()
		close(active.done)
		cancel(nil)
	}
}

// fenceUntil is when a fence on r lifts: its deadline, when the container's
// init stopped it, plus container.DeadlineMargin for the init's kill grace
// and the clock skew between this node and the node or engine that started
// it; so the next run of the commit never overlaps it. Zero: unknown.
func fenceUntil(r *Run, ws *Settings) time.Time {
	until := r.Deadline
	if until.IsZero() && ws != nil && !r.StartedAt.IsZero() {
		until = r.StartedAt.Add(ws.RunTimeout)
	}
	if until.IsZero() {
		return until
	}
	return until.Add(container.DeadlineMargin)
}

// sweepOrphans removes the mount's containers on this node's engine that are
// past their deadline and its margin: orphans nobody follows (their node died
// after a fence lifted, or they ran on an engine other nodes do not reach),
// which their init ended or, without one, still run. It runs between runs, so
// the worker's own run is never among them; one a later recovery would have
// re-attached is over anyway. Each removal is logged.
func (w *Worker) sweepOrphans(ctx context.Context) {
	w.mu.Lock()
	mountID := w.mountID
	w.mu.Unlock()
	if mountID == "" {
		return
	}
	runner, err := w.getRunner(ctx)
	if err != nil {
		return // the poll reports an engine that cannot be used
	}
	found, err := runner.Find(ctx, map[string]string{LabelMount: mountID})
	if err != nil {
		w.log().Warn("cannot look for orphan containers of this mount", "error", err)
		return
	}
	now := w.deps.Now()
	for _, f := range found {
		// A container without a recorded deadline (made by an older
		// version) is left to recovery and the operator.
		if f.Deadline.IsZero() || now.Before(f.Deadline.Add(container.DeadlineMargin)) {
			continue
		}
		if err := runner.Remove(ctx, f.ID); err != nil {
			w.log().Warn("cannot remove an orphan container past its deadline", "container", f.ID, "run", f.Labels[LabelRun], "error", err)
			continue
		}
		w.log().Warn("removed an orphan container of this mount past its run deadline; nobody followed it",
			"container", f.ID, "run", f.Labels[LabelRun], "commit", f.Labels[LabelCommit], "state", f.State,
			"deadline", f.Deadline.UTC().Format(time.RFC3339), "margin", container.DeadlineMargin)
	}
}
