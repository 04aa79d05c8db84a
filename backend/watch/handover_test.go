package watch

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/flant/flant_gitops/container"
	"github.com/flant/flant_gitops/internal/waittest"
)

// followingRun plays container.Docker.Run for a container that prints lines
// (with engine timestamps) and then runs until ctx ends: a cancel cause
// wrapping container.ErrLeftRunning leaves it running, any other kills it.
func followingRun(lines []string, at time.Time) func(ctx context.Context, spec container.Spec) (container.Result, error) {
	return func(ctx context.Context, spec container.Spec) (container.Result, error) {
		lw := spec.Log.(container.LineWriter)
		for i, l := range lines {
			lw.WriteLine([]byte(l+"\n"), at.Add(time.Duration(i)*time.Second))
		}
		<-ctx.Done()
		if cause := context.Cause(ctx); errors.Is(cause, container.ErrLeftRunning) {
			return container.Result{ContainerID: "c1", Started: at}, fmt.Errorf("stopped following container c1: %w", cause)
		}
		return container.Result{Reason: container.ReasonCanceled, ExitCode: 137, ContainerID: "c1"}, nil
	}
}

// TestHandOver: a planned handover leaves the run running with its log and
// resume point stored, and the next owner re-attaches to that same run;
// Stop (the mount is disabled) and a cancel still stop it.
func TestHandOver(t *testing.T) {
	engineAt := time.Date(2026, 3, 1, 9, 59, 0, 0, time.UTC)
	tests := []struct {
		name string
		// stop ends the first worker once its run is in the container.
		stop       func(h *harness, runID string)
		wantStatus string // of the run right after stop
		wantReason string
		// wantReattach: the next owner follows the same run to its end
		// instead of running the commit again.
		wantReattach bool
	}{
		{
			name:       "handover: left running, re-attached by the next owner",
			stop:       func(h *harness, _ string) { h.w.HandOver(context.Background()) },
			wantStatus: RunRunning, wantReattach: true,
		},
		{
			name:       "mount disabled: killed and interrupted",
			stop:       func(h *harness, _ string) { h.w.Stop(context.Background()) },
			wantStatus: RunInterrupted, wantReason: "the mount is disabled",
		},
		{
			name: "cancel by an operator still kills",
			stop: func(h *harness, id string) {
				if !h.w.CancelRun(context.Background(), id) {
					h.t.Fatal("cancel of the current run was refused")
				}
				h.w.HandOver(context.Background())
			},
			wantStatus: RunCanceled, wantReason: "canceled by an operator",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			ctx := context.Background()
			h.runner.run = followingRun([]string{"line 1", "line 2"}, engineAt)
			h.runner.started = make(chan container.Spec, 1)
			h.w.Start(h.s)
			spec := <-h.runner.started
			id := spec.Labels[LabelRun]
			waittest.Until(t, func() bool {
				p, _ := readRunLog(ctx, h.s, id, 0, 1<<20, h.w.logLimits.chunkSize)
				return p != nil && p.Text == "line 1\nline 2\n"
			})
			tt.stop(h, id)

			r, err := getRun(ctx, h.s, id)
			if err != nil {
				t.Fatal(err)
			}
			if r.Status != tt.wantStatus || !strings.Contains(r.Reason, tt.wantReason) {
				t.Fatalf("run after the stop: %s (%s), want %s (%s)", r.Status, r.Reason, tt.wantStatus, tt.wantReason)
			}
			if r.EngineID != "engine-1" {
				t.Errorf("the run's engine id is %q, want the runner's engine-1", r.EngineID)
			}
			if !tt.wantReattach {
				if h.state().CurrentRunID != "" {
					t.Errorf("a stopped run is still current: %+v", h.state())
				}
				return
			}
			if st := h.state(); r.ContainerID != "c1" || st.CurrentRunID != id || !strings.Contains(st.LastPollResult, "left running for the next active node") {
				t.Errorf("a run left running must keep its container, stay current and say so: %+v, state %+v", r, st)
			}

			// The next owner (same engine) finds the container by label.
			h.runner.mu.Lock()
			h.runner.run, h.runner.started = nil, nil
			h.runner.found = []container.Found{{ID: "c1", State: "running", Labels: h.w.labels(id)}}
			h.runner.attach = func(ctx context.Context, id string, log io.Writer, timeout time.Duration) (container.Result, error) {
				log.(container.LineWriter).WriteLine([]byte("line 3\n"), engineAt.Add(5*time.Second))
				return container.Result{Reason: container.ReasonExit, ContainerID: id}, nil
			}
			h.runner.mu.Unlock()
			h.w = h.newWorker()
			h.w.Start(h.s)
			defer h.w.Stop(ctx)
			waittest.Until(t, func() bool { return h.lastSuccessful() == commitB && h.state().CurrentRunID == "" })
			runs := h.runs()
			if len(runs) != 1 || runs[0].ID != id || runs[0].Status != RunSucceeded || h.runner.runs() != 1 {
				t.Fatalf("after the handover: runs %+v, %d containers started; want run %s succeeded, one container", runs, h.runner.runs(), id)
			}
			if got := h.runner.since[0]; !got.Equal(engineAt.Add(time.Second)) {
				t.Errorf("re-attached from %s, want the engine time of the last stored line %s", got, engineAt.Add(time.Second))
			}
			page, err := readRunLog(ctx, h.s, id, 0, 1<<20, h.w.logLimits.chunkSize)
			if err != nil {
				t.Fatal(err)
			}
			for _, l := range []string{"line 1\n", "line 2\n", "line 3\n"} {
				if strings.Count(page.Text, l) != 1 {
					t.Errorf("%q is not once in the log:\n%s", l, page.Text)
				}
			}
		})
	}
}

// A handover before the container started interrupts the run; the next
// owner runs the commit.
func TestHandOverBeforeTheContainerStarted(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	inRequests := make(chan struct{})
	var once bool
	h.w.deps.VaultRequests = func(ctx context.Context, s Storage) (map[string]string, map[string][]byte, error) {
		if !once {
			once = true
			close(inRequests)
			<-ctx.Done()
			return nil, nil, ctx.Err()
		}
		return nil, nil, nil
	}
	h.w.Start(h.s)
	<-inRequests
	h.w.HandOver(ctx)
	runs := h.runs()
	if len(runs) != 1 || runs[0].Status != RunInterrupted || !strings.Contains(runs[0].Reason, "before the run's container started") || h.runner.runs() != 0 {
		t.Fatalf("after a handover in the vault requests: %+v, %d containers", runs[0], h.runner.runs())
	}
	h.w = h.newWorker()
	h.w.Start(h.s)
	defer h.w.Stop(ctx)
	waittest.Until(t, func() bool { return h.lastSuccessful() == commitB })
}

// TestRecoveryFencing: a run whose container this node cannot find is
// retried at once when it ran on this node's engine (or nobody knows where);
// when it ran on another engine nothing starts until its deadline or an
// operator's retry=true, and it is re-attached if its container shows up.
func TestRecoveryFencing(t *testing.T) {
	const runID = "20260301T095900.000000Z-abcdef"
	type step func(h *harness)
	var (
		advancePastDeadline step = func(h *harness) {
			h.clock.advance(10 * time.Minute)
			h.w.RequestPoll(h.s, false)
		}
		// The deadline passed but not the margin for the init's kill grace
		// and clock skew: the old run may still be stopping, so the fence
		// holds; past the margin it lifts.
		advanceThroughMargin step = func(h *harness) {
			h.clock.advance(9*time.Minute + 30*time.Second)
			h.w.RequestPoll(h.s, false)
			at := h.clock.now()
			waittest.Until(h.t, func() bool { return h.state().LastPollAt.Equal(at) })
			if st := h.state(); st.LastPollOutcome != OutcomeFenced || h.runner.runs() != 0 {
				h.t.Fatalf("at %v, after the deadline but within the margin: outcome %s, %d containers; want fenced, none", at, st.LastPollOutcome, h.runner.runs())
			}
			h.clock.advance(time.Minute)
			h.w.RequestPoll(h.s, false)
		}
		retryTrue          step = func(h *harness) { h.w.RequestPoll(h.s, true) }
		containerReappears step = func(h *harness) {
			h.runner.mu.Lock()
			h.runner.found = []container.Found{{ID: "c-old", State: "running", Labels: h.w.labels(runID)}}
			h.runner.mu.Unlock()
			h.w.RequestPoll(h.s, false)
		}
		engineAnswers step = func(h *harness) {
			h.runner.mu.Lock()
			h.runner.findErr, h.runner.engineErr = nil, nil
			h.runner.mu.Unlock()
			h.w.RequestPoll(h.s, false)
		}
	)
	tests := []struct {
		name        string
		runEngine   string // the engine id stored with the run
		nodeEngine  string
		unreachable bool
		// wantHeld: the first recovery settles nothing and starts nothing,
		// with this poll outcome; then lift does what ends it.
		wantHeld string
		lift     step
		// After settling: the run's status and reason, and whether the
		// commit ran again in a new container.
		wantStatus string
		wantReason []string
		wantRerun  bool
	}{
		{
			name: "same engine: interrupted and retried", runEngine: "engine-1", nodeEngine: "engine-1",
			wantStatus: RunInterrupted, wantReason: []string{"container is gone"}, wantRerun: true,
		},
		{
			name: "unknown engine (an older record): interrupted and retried", runEngine: "", nodeEngine: "engine-1",
			wantStatus: RunInterrupted, wantReason: []string{"container is gone"}, wantRerun: true,
		},
		{
			name: "other engine: fenced until the deadline", runEngine: "engine-0", nodeEngine: "engine-1",
			wantHeld: OutcomeFenced, lift: advancePastDeadline,
			wantStatus: RunInterrupted, wantReason: []string{"started on Docker engine engine-0", "engine-1", "run_timeout and the stop margin passed at 2026-03-01T10:10:00Z", "may have run to its end there"}, wantRerun: true,
		},
		{
			name: "other engine: the fence holds through the margin after the deadline", runEngine: "engine-0", nodeEngine: "engine-1",
			wantHeld: OutcomeFenced, lift: advanceThroughMargin,
			wantStatus: RunInterrupted, wantReason: []string{"run_timeout and the stop margin passed"}, wantRerun: true,
		},
		{
			name: "other engine: fenced until retry=true", runEngine: "engine-0", nodeEngine: "engine-1",
			wantHeld: OutcomeFenced, lift: retryTrue,
			wantStatus: RunInterrupted, wantReason: []string{"started on Docker engine engine-0", "poll retry=true"}, wantRerun: true,
		},
		{
			name: "other engine: its container shows up and is re-attached", runEngine: "engine-0", nodeEngine: "engine-1",
			wantHeld: OutcomeFenced, lift: containerReappears,
			wantStatus: RunSucceeded,
		},
		{
			name: "engine unreachable: nothing starts until it answers", runEngine: "engine-1", nodeEngine: "engine-1", unreachable: true,
			wantHeld: OutcomeRecovering, lift: engineAnswers,
			wantStatus: RunInterrupted, wantReason: []string{"container is gone"}, wantRerun: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			ctx := context.Background()
			started := h.clock.now().Add(-time.Minute)
			r := &Run{ID: runID, Commit: commitB, Status: RunRunning, Attempt: 1, EngineID: tt.runEngine,
				CreatedAt: started, StartedAt: started, Deadline: started.Add(h.settings.RunTimeout)}
			if err := putRun(ctx, h.s, r); err != nil {
				t.Fatal(err)
			}
			if err := putState(ctx, h.s, &State{CurrentRunID: r.ID}); err != nil {
				t.Fatal(err)
			}
			h.runner.engine = tt.nodeEngine
			if tt.unreachable {
				h.runner.findErr = errors.New("docker engine unreachable")
				h.runner.engineErr = h.runner.findErr
			}
			h.runner.attach = func(ctx context.Context, id string, log io.Writer, timeout time.Duration) (container.Result, error) {
				return container.Result{Reason: container.ReasonExit, ContainerID: id}, nil
			}
			h.w.Start(h.s)
			defer h.w.Stop(ctx)

			if tt.wantHeld != "" {
				waittest.Until(t, func() bool { return h.state().LastPollOutcome == tt.wantHeld })
				// Later wakes (ticks, polls) check again and still start
				// nothing.
				for range 3 {
					h.clock.advance(time.Second)
					h.w.RequestPoll(h.s, false)
					at := h.clock.now()
					waittest.Until(t, func() bool { return h.state().LastPollAt.Equal(at) })
				}
				st := h.state()
				if got, _ := getRun(ctx, h.s, runID); got.Status != RunRunning || h.runner.runs() != 0 || st.LastPollOutcome != tt.wantHeld {
					t.Fatalf("held recovery: run %s, %d containers started, outcome %s; want running, none, %s", got.Status, h.runner.runs(), st.LastPollOutcome, tt.wantHeld)
				}
				if tt.wantHeld == OutcomeFenced {
					f := st.Fence
					if f == nil || f.RunID != runID || f.Commit != commitB || f.EngineID != tt.runEngine || f.NodeEngineID != tt.nodeEngine || !f.Until.Equal(r.Deadline.Add(container.DeadlineMargin)) ||
						!strings.Contains(f.Message, "may still be running there") || !strings.Contains(f.Message, "poll retry=true") || st.LastPollResult != f.Message {
						t.Errorf("fence in the state: %+v (result %q)", f, st.LastPollResult)
					}
				} else if st.Fence != nil || !strings.Contains(st.LastPollResult, "docker engine unreachable") || !strings.Contains(st.LastPollResult, "nothing starts") {
					t.Errorf("state while the engine is unreachable: %+v", st)
				}
				tt.lift(h)
			}

			waittest.Until(t, func() bool {
				got, _ := getRun(ctx, h.s, runID)
				return got.Finished() && h.lastSuccessful() == commitB && h.state().CurrentRunID == ""
			})
			got, _ := getRun(ctx, h.s, runID)
			if got.Status != tt.wantStatus {
				t.Errorf("the run left behind ended %s (%s), want %s", got.Status, got.Reason, tt.wantStatus)
			}
			for _, want := range tt.wantReason {
				if !strings.Contains(got.Reason, want) {
					t.Errorf("reason %q lacks %q", got.Reason, want)
				}
			}
			if rerun := h.runner.runs() == 1; rerun != tt.wantRerun || h.runner.runs() > 1 {
				t.Errorf("%d new containers, want a re-run: %v", h.runner.runs(), tt.wantRerun)
			}
			if st := h.state(); st.Fence != nil {
				t.Errorf("the fence stays after it was settled: %+v", st.Fence)
			}
		})
	}
}
