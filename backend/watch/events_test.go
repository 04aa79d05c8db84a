package watch

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"

	"github.com/flant/flant_gitops/backend/events"
	"github.com/flant/flant_gitops/container"
)

// recordedEvents is a Publisher that keeps what it is given.
type recordedEvents struct {
	mu   sync.Mutex
	list []events.Event
}

func (r *recordedEvents) Publish(e events.Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.list = append(r.list, e)
}

func (r *recordedEvents) kinds() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, e := range r.list {
		out = append(out, string(e.Kind)+":"+e.Outcome)
	}
	return out
}

func (r *recordedEvents) of(k events.Kind) events.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, e := range r.list {
		if e.Kind == k {
			return e
		}
	}
	return events.Event{}
}

func TestPollPublishesWhatHappened(t *testing.T) {
	tests := []struct {
		name  string
		setup func(h *harness)
		want  []string
		check func(t *testing.T, h *harness)
	}{
		{
			name:  "a signed commit runs",
			setup: func(h *harness) { h.settings.Required, h.mirror.verified = 1, 1 },
			want:  []string{"run.started:", "run.finished:succeeded", "poll.finished:ran"},
			check: func(t *testing.T, h *harness) {
				started, finished := h.events.of(events.RunStarted), h.events.of(events.RunFinished)
				if started.Commit != commitB || started.Run == "" || started.Run != finished.Run || started.Attempt != 1 {
					t.Errorf("run events do not name the run: %+v / %+v", started, finished)
				}
				if len(started.Signers) != 1 {
					t.Errorf("run.started names signers %v, want the one that counted", started.Signers)
				}
				if started.Repository != "https://git.example/repo.git" || started.Branch != "main" || started.Mount != h.mountID {
					t.Errorf("run.started names %q %q %q, want the watched target and the mount", started.Repository, started.Branch, started.Mount)
				}
			},
		},
		{
			name:  "an under-signed commit is refused",
			setup: func(h *harness) { h.settings.Required, h.mirror.verified = 3, 1 },
			want:  []string{"poll.finished:refused", "commit.refused:refused"},
			check: func(t *testing.T, h *harness) {
				e := h.events.of(events.CommitRefused)
				if e.Commit != commitB || len(e.Missing) != 1 || !strings.Contains(e.Missing[0], "2 more") || !strings.Contains(e.Reason, "1 of 3") || e.Cause != events.RefusedSignatures {
					t.Errorf("refusal event = %+v, want commit %s, 2 more signatures missing", e, commitB)
				}
			},
		},
		{
			name:  "a force-push is refused without a signature count",
			setup: func(h *harness) { h.mirror.notAncest[commitA] = true },
			want:  []string{"poll.finished:refused", "commit.refused:refused"},
			check: func(t *testing.T, h *harness) {
				if e := h.events.of(events.CommitRefused); len(e.Missing) != 0 || !strings.Contains(e.Reason, "not an ancestor") || e.Cause != events.RefusedAncestry {
					t.Errorf("refusal event = %+v, want the ancestry reason and nothing missing", e)
				}
			},
		},
		{
			name: "a failing command",
			setup: func(h *harness) {
				h.runner.run = func(ctx context.Context, spec container.Spec) (container.Result, error) {
					return container.Result{Reason: container.ReasonExit, ExitCode: 3, ContainerID: "c"}, nil
				}
			},
			want: []string{"run.started:", "run.finished:failed", "poll.finished:ran"},
			check: func(t *testing.T, h *harness) {
				if e := h.events.of(events.RunFinished); !strings.Contains(e.Reason, "code 3") || e.Duration < 0 {
					t.Errorf("run.finished = %+v, want the exit code in the reason", e)
				}
			},
		},
		{
			name:  "a vault request failing before any container",
			setup: func(h *harness) { h.vaultErr = errors.New("permission denied") },
			want:  []string{"run.finished:failed", "poll.finished:ran"},
		},
		{
			name:  "up to date",
			setup: func(h *harness) { h.mirror.setHead(commitA) },
			want:  []string{"poll.finished:up_to_date"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			tt.setup(h)
			h.pollOnce()
			if got := h.events.kinds(); strings.Join(got, " ") != strings.Join(tt.want, " ") {
				t.Fatalf("events %v, want %v", got, tt.want)
			}
			if tt.check != nil {
				tt.check(t, h)
			}
		})
	}
}
