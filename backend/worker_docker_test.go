package backend

import (
	"context"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/flant/flant_gitops/container"
	"github.com/flant/flant_gitops/container/dockertest"
)

// A plugin that died without Clean leaves its container running; the next
// instance finds it by label on the real Docker engine, follows it to its
// end, records the outcome once and leaves nothing behind.
func TestRecoveryReattachesRealContainer(t *testing.T) {
	docker := dockertest.Runner(t)
	image := dockertest.Image(t, docker)
	h := newWatchHarness(t)
	h.w.deps.newRunner = func(context.Context) (container.Runner, error) { return docker, nil }
	ctx := context.Background()

	id, err := newRunID(h.clock.now())
	if err != nil {
		t.Fatal(err)
	}
	labels := h.w.labels(id)
	orphanDone := make(chan struct{})
	go func() {
		// The dead instance's Run: abandoned, its output lost with it.
		defer close(orphanDone)
		_, _ = docker.Run(context.WithoutCancel(ctx), container.Spec{
			Image: image, Labels: labels, Timeout: time.Minute, Log: io.Discard,
			Commands: []string{"echo before the restart; sleep 3; echo after the restart"},
		})
	}()
	t.Cleanup(func() { <-orphanDone })
	waitForWatch(t, func() bool {
		found, err := docker.Find(ctx, labels)
		return err == nil && len(found) == 1 && found[0].State == "running"
	})
	now := h.clock.now()
	run := &runRecord{ID: id, Commit: watchCommitB, Status: runRunning, Attempt: 1, CreatedAt: now, StartedAt: now, Deadline: now.Add(time.Minute)}
	if err := putRun(ctx, h.s, run); err != nil {
		t.Fatal(err)
	}

	h.w.start(h.s)
	defer h.w.stop(ctx)
	waitForWatch(t, func() bool {
		r, err := getRun(ctx, h.s, id)
		return err == nil && r.finished()
	})
	got, err := getRun(ctx, h.s, id)
	if err != nil {
		t.Fatal(err)
	}
	if got.Status != runSucceeded || got.ContainerID == "" {
		t.Errorf("re-attached run ended %s (%s), container %q", got.Status, got.Reason, got.ContainerID)
	}
	page, err := readRunLog(ctx, h.s, id, 0, 1<<20, h.w.logLimits.chunkSize)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(page.Text, "after the restart") {
		t.Errorf("log after re-attaching lacks the container's later output: %q", page.Text)
	}
	if h.lastSuccessful() != watchCommitB {
		t.Errorf("last successful %s, want %s", h.lastSuccessful(), watchCommitB)
	}
	if n := len(h.runs()); n != 1 {
		t.Errorf("%d runs recorded, want the re-attached one only", n)
	}
	if n := h.runner.runs(); n != 0 {
		t.Errorf("%d fake containers started", n)
	}
	<-orphanDone // the abandoned Run races the re-attached one to remove it
	dockertest.NoLeftovers(t, docker, labels)
}
