package watch

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/flant/flant_gitops/container"
	"github.com/flant/flant_gitops/internal/waittest"
)

func (m *fakeMirror) fetchCount() int { m.mu.Lock(); defer m.mu.Unlock(); return m.fetches }

// A burst of push notifications naming one commit costs one fetch; one
// naming what the last fetch saw costs none; one naming nothing, or a
// commit not seen yet, always gets a fetch after it.
func TestNotifyFoldsBurstsIntoOnePoll(t *testing.T) {
	h := newHarness(t)
	h.w.pollMinInterval = 300 * time.Millisecond
	h.w.Start(h.s)
	defer h.w.Stop(context.Background())
	waittest.Until(t, func() bool { return h.lastSuccessful() == commitB && !h.busy() })
	base := h.mirror.fetchCount()

	// The branch moves to C; a forge sends 100 deliveries of that push at
	// once (redeliveries, several hooks).
	h.mirror.setHead(commitC)
	var wg sync.WaitGroup
	answers := make([]NotifyAnswer, 100)
	for i := range answers {
		wg.Add(1)
		go func() { defer wg.Done(); answers[i] = h.w.Notify(h.s, commitC) }()
	}
	wg.Wait()
	started := 0
	for _, a := range answers {
		if strings.HasPrefix(a.Message, "poll started") {
			started++
		}
	}
	if started != 1 {
		t.Errorf("%d of 100 notifications started a poll, want 1", started)
	}
	waittest.Until(t, func() bool { return h.lastSuccessful() == commitC && !h.busy() })
	time.Sleep(2 * h.w.pollMinInterval) // past the fold: it must fetch nothing more
	if got := h.mirror.fetchCount() - base; got != 1 {
		t.Errorf("100 notifications of one push fetched %d times, want 1", got)
	}

	// The same commit again: already fetched.
	if a := h.w.Notify(h.s, commitC); !strings.Contains(a.Message, "nothing new") {
		t.Errorf("a notification of the fetched HEAD answered %q", a.Message)
	}
	// One naming no commit (a generic hook), then one naming an unseen
	// commit: each is followed by a fetch.
	for i, hint := range []string{"", commitA} {
		before := h.mirror.fetchCount()
		time.Sleep(h.w.pollMinInterval)
		h.w.Notify(h.s, hint)
		waittest.Until(t, func() bool { return h.mirror.fetchCount() > before })
		waittest.Until(t, func() bool { return !h.busy() })
		if i == 0 && h.mirror.fetchCount() != before+1 {
			t.Errorf("a notification without a commit fetched %d times, want 1", h.mirror.fetchCount()-before)
		}
	}
}

// A notification while a run is in progress is not lost: the poll follows
// the run.
func TestNotifyDuringRunPollsAfterIt(t *testing.T) {
	h := newHarness(t)
	h.w.pollMinInterval = 50 * time.Millisecond
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
	h.mirror.setHead(commitC)
	if a := h.w.Notify(h.s, commitC); !strings.HasPrefix(a.Message, "folded") {
		t.Errorf("a notification during a run answered %q, want it folded into the next poll", a.Message)
	}
	close(release)
	waittest.Until(t, func() bool { return h.lastSuccessful() == commitC })
}

func (h *harness) busy() bool { b, _ := h.w.Snapshot(); return b }
