package watch

import (
	"bytes"
	"context"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/flant/flant_gitops/container"
)

// lockedBuffer is a log sink the worker and the test share.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string { l.mu.Lock(); defer l.mu.Unlock(); return l.b.String() }

// captureLog sends the worker's log to a buffer.
func captureLog(h *harness) *lockedBuffer {
	var buf lockedBuffer
	logger := hclog.New(&hclog.LoggerOptions{Output: &buf, Level: hclog.Info})
	h.w.logger = func() hclog.Logger { return logger }
	return &buf
}

// TestSweepOrphans: a poll removes the mount's containers past their
// deadline and the margin, and logs each; it keeps those within the margin,
// those without a recorded deadline, and other mounts' containers.
func TestSweepOrphans(t *testing.T) {
	h := newHarness(t)
	h.mirror.head = commitA // up to date: the poll starts nothing
	log := captureLog(h)
	now := h.clock.now()
	mine := func(id, run, state string, deadline time.Time) container.Found {
		return container.Found{ID: id, State: state, Deadline: deadline, Labels: map[string]string{LabelMount: h.mountID, LabelRun: run, LabelCommit: commitB}}
	}
	other := mine("c-other-mount", "r5", "running", now.Add(-time.Hour))
	other.Labels = map[string]string{LabelMount: "another-mount", LabelRun: "r5"}
	h.runner.found = []container.Found{
		mine("c-exited-past", "r1", "exited", now.Add(-container.DeadlineMargin-time.Second)),
		mine("c-running-past", "r2", "running", now.Add(-time.Hour)),
		mine("c-within-margin", "r3", "running", now.Add(-container.DeadlineMargin+time.Second)),
		mine("c-no-deadline", "r4", "running", time.Time{}),
		other,
	}
	h.pollOnce()
	h.runner.mu.Lock()
	removed := slices.Clone(h.runner.removed)
	h.runner.mu.Unlock()
	slices.Sort(removed)
	if want := []string{"c-exited-past", "c-running-past"}; !slices.Equal(removed, want) {
		t.Fatalf("removed %v, want %v", removed, want)
	}
	for _, want := range []string{"removed an orphan container", "container=c-exited-past", "run=r1", "container=c-running-past", "run=r2", "state=running", "margin=1m0s"} {
		if !strings.Contains(log.String(), want) {
			t.Errorf("log lacks %q:\n%s", want, log.String())
		}
	}
	if st := h.state(); st.LastPollOutcome != OutcomeUpToDate {
		t.Errorf("the poll after the sweep: %s (%s)", st.LastPollOutcome, st.LastPollResult)
	}
	// Once past the margin, the one within it goes too.
	h.clock.advance(2 * time.Second)
	h.pollOnce()
	if h.runner.mu.Lock(); !slices.Contains(h.runner.removed, "c-within-margin") || slices.Contains(h.runner.removed, "c-no-deadline") || slices.Contains(h.runner.removed, "c-other-mount") {
		t.Errorf("removed after the margin: %v", h.runner.removed)
	}
	h.runner.mu.Unlock()
}

// TestRunSpecCarriesTheDeadline: the container's init gets the deadline
// stored with the run, the one a fence on it counts from.
func TestRunSpecCarriesTheDeadline(t *testing.T) {
	h := newHarness(t)
	h.pollOnce()
	h.runner.mu.Lock()
	specs := slices.Clone(h.runner.specs)
	h.runner.mu.Unlock()
	runs := h.runs()
	if len(specs) != 1 || len(runs) != 1 {
		t.Fatalf("%d containers, %d runs", len(specs), len(runs))
	}
	if !specs[0].Deadline.Equal(runs[0].Deadline) || !runs[0].Deadline.Equal(runs[0].StartedAt.Add(h.settings.RunTimeout)) {
		t.Fatalf("spec deadline %v, run deadline %v, started %v", specs[0].Deadline, runs[0].Deadline, runs[0].StartedAt)
	}
}

// TestRunWarningReachesStatus: a run without the plugin's init says so in
// the poll result `status` shows and in the log.
func TestRunWarningReachesStatus(t *testing.T) {
	h := newHarness(t)
	log := captureLog(h)
	h.runner.run = func(ctx context.Context, spec container.Spec) (container.Result, error) {
		return container.Result{Reason: container.ReasonExit, ContainerID: "c1", Warning: "this run has no init of the plugin's (test)"}, nil
	}
	h.pollOnce()
	st := h.state()
	if !strings.Contains(st.LastPollResult, "warning: this run has no init") || !strings.Contains(st.LastPollResult, "succeeded") {
		t.Errorf("poll result %q", st.LastPollResult)
	}
	if !strings.Contains(log.String(), "without the plugin's init") {
		t.Errorf("log:\n%s", log.String())
	}
}
