package watch

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/flant/flant_gitops/container"
	"github.com/flant/flant_gitops/gitwatch"
	"github.com/flant/flant_gitops/gitwatch/gittest"
	"github.com/flant/flant_gitops/gitwatch/pgptest"
	"github.com/flant/flant_gitops/internal/waittest"
)

const commitB2 = "b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2"

// The same signed change under a re-wrapped signature keeps what was decided
// about it: an operator's cancel holds it, a failure's backoff delays it and
// the attempts go on counting.
func TestRewrappedCommitKeepsRetryState(t *testing.T) {
	tests := []struct {
		name        string
		cancel      bool
		wantOutcome string
		wantAttempt int // of the retry; a cancel is no failure
	}{
		{"canceled commit stays held", true, OutcomeHeld, 1},
		{"failing commit stays in backoff", false, OutcomeBackoff, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			h.mirror.content = map[string]string{commitB: "change-b", commitB2: "change-b"}
			ctx := context.Background()
			if tt.cancel {
				h.runner.run = blockingRun(make(chan struct{}))
				h.runner.started = make(chan container.Spec, 1)
				h.w.Start(h.s)
				defer h.w.Stop(ctx)
				spec := <-h.runner.started
				if !h.w.CancelRun(ctx, spec.Labels[LabelRun]) {
					t.Fatal("cancel refused")
				}
				waittest.Until(t, func() bool { return h.state().CurrentRunID == "" && h.state().Held })
				h.w.Stop(ctx)
			} else {
				h.runner.run = func(ctx context.Context, spec container.Spec) (container.Result, error) {
					return container.Result{Reason: container.ReasonExit, ExitCode: 1}, nil
				}
				h.pollOnce()
			}
			h.runner.mu.Lock()
			h.runner.run, h.runner.started = nil, nil
			h.runner.mu.Unlock()

			h.mirror.setHead(commitB2)
			h.w = h.newWorker()
			h.pollOnce()
			st := h.state()
			if st.LastPollOutcome != tt.wantOutcome || !strings.Contains(st.LastPollResult, "same signed change as "+commitB) {
				t.Errorf("re-wrapped commit: outcome %q (%s), want %q naming %s", st.LastPollOutcome, st.LastPollResult, tt.wantOutcome, commitB)
			}
			if n := h.runner.runs(); n != 1 {
				t.Errorf("%d containers started, want only the first", n)
			}

			// An operator's retry runs it, counting the attempts of the same change.
			h.w.mu.Lock()
			h.w.forceRetry = true
			h.w.mu.Unlock()
			h.pollOnce()
			var again *Run
			for _, r := range h.runs() {
				if r.Commit == commitB2 {
					again = r
				}
			}
			if h.lastSuccessful() != commitB2 || again == nil || again.Attempt != tt.wantAttempt {
				t.Errorf("after retry=true: last successful %s, run of %s %+v; want it run as attempt %d", h.lastSuccessful(), commitB2, again, tt.wantAttempt)
			}
		})
	}
}

// The same through real git: a signed commit whose run an operator
// canceled, force-pushed again with a Comment line added to its signature
// armor (a new commit id, a signature that still verifies), stays held.
func TestRewrappedCommitHitsTheHoldRealGit(t *testing.T) {
	srv := gittest.NewServer(t)
	repo := srv.NewRepo(t, "ops")
	alice := pgptest.NewKey(t, "Alice")
	base := repo.Commit(t, map[string]string{"deploy.sh": "echo base\n"})
	signed := repo.Commit(t, map[string]string{"deploy.sh": "echo stopped by an operator\n"}, gittest.SignKey(alice))

	h := newHarness(t)
	h.settings.RepoURL, h.settings.InitialLastSuccessful, h.settings.Required = repo.URL(), base, 1
	h.settings.Auth = gitwatch.Auth{Username: srv.Username(), Password: srv.Password()}
	h.settings.Keys = []gitwatch.TrustedKey{{Name: "alice", Armored: alice.PublicArmored(t)}}
	realMirror := func(ctx context.Context, dir string, ws *Settings) (Mirror, error) {
		return gitwatch.OpenMirror(ctx, dir, ws.RepoURL, ws.Branch, ws.Auth)
	}
	h.w.deps.OpenMirror = realMirror
	h.runner.run = blockingRun(make(chan struct{}))
	h.runner.started = make(chan container.Spec, 1)
	ctx := context.Background()
	h.w.Start(h.s)
	spec := <-h.runner.started
	if !h.w.CancelRun(ctx, spec.Labels[LabelRun]) {
		t.Fatal("cancel refused")
	}
	waittest.Until(t, func() bool { st := h.state(); return st.CurrentRunID == "" && st.Held && st.FailedCommit == signed })
	h.w.Stop(ctx)

	rewrapped := repo.Rewrap(t, signed, "same change, new id")
	h.runner.mu.Lock()
	h.runner.run, h.runner.started = nil, nil
	h.runner.mu.Unlock()
	h.w = h.newWorker()
	h.w.deps.OpenMirror = realMirror
	h.clock.advance(24 * time.Hour)
	h.pollOnce()
	st := h.state()
	if st.HeadCommit != rewrapped {
		t.Fatalf("HEAD seen %s, want the re-wrapped %s", st.HeadCommit, rewrapped)
	}
	if st.LastPollOutcome != OutcomeHeld {
		t.Errorf("the re-wrapped commit %s: outcome %q (%s), want held", rewrapped, st.LastPollOutcome, st.LastPollResult)
	}
	if n := h.runner.runs(); n != 1 {
		t.Errorf("%d containers started, want only the canceled one", n)
	}
}
