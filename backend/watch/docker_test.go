package watch

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/moby/moby/client"

	"github.com/flant/flant_gitops/container"
	"github.com/flant/flant_gitops/container/dockertest"
	"github.com/flant/flant_gitops/internal/waittest"
)

// dyingLog is the run log of a plugin instance that dies: once killed it
// takes nothing more, like a process that is gone.
type dyingLog struct {
	mu   sync.Mutex
	w    *runLogWriter
	dead bool
}

func (d *dyingLog) Write(p []byte) (int, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.dead {
		_, _ = d.w.Write(p)
	}
	return len(p), nil
}

func (d *dyingLog) WriteLine(p []byte, at time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.dead {
		d.w.WriteLine(p, at)
	}
}

// kill stops the log as a dying plugin does: what its last flush stored
// stays, the rest of its buffer is gone.
func (d *dyingLog) kill() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.dead = true
	d.w.mu.Lock()
	d.w.buf, d.w.dirty, d.w.point = nil, false, d.w.pointAt
	d.w.mu.Unlock()
}

// A plugin that died without Clean leaves its container running; the next
// instance finds it by label on the real Docker engine, follows it to its
// end, records the outcome once and leaves nothing behind. What the
// container printed while no plugin followed it is in the log once.
func TestRecoveryReattachesRealContainer(t *testing.T) {
	docker := dockertest.Runner(t)
	image := dockertest.Image(t, docker)
	h := newHarness(t)
	h.w.deps.NewRunner = func(context.Context) (container.Runner, error) { return docker, nil }
	ctx := context.Background()

	id, err := newRunID(h.clock.now())
	if err != nil {
		t.Fatal(err)
	}
	labels := h.w.labels(id)
	lw, err := openRunLog(ctx, h.s, id, logLimits{chunkSize: 64 << 10, maxChunks: 32, flushInterval: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	dying := &dyingLog{w: lw}
	orphanDone := make(chan struct{})
	go func() {
		// The dead instance's Run: abandoned, it keeps running to the end.
		defer close(orphanDone)
		_, _ = docker.Run(context.WithoutCancel(ctx), container.Spec{
			Image: image, Labels: labels, Timeout: time.Minute, Log: dying,
			Commands: []string{"echo before the restart; sleep 2; echo while no plugin follows; sleep 3; echo after the restart"},
		})
	}()
	t.Cleanup(func() { <-orphanDone })
	waittest.Until(t, func() bool {
		page, err := readRunLog(ctx, h.s, id, 0, 1<<20, lw.limits.chunkSize)
		return err == nil && strings.Contains(page.Text, "before the restart")
	})
	waittest.Until(t, func() bool { p, _ := lw.resumePoint(); return !p.IsZero() })
	dying.kill()
	_ = lw.Close(ctx)
	// The container prints while no plugin follows it.
	waittest.Until(t, func() bool {
		rc, err := docker.Client().ContainerLogs(ctx, found1(t, docker, labels), client.ContainerLogsOptions{ShowStdout: true})
		if err != nil {
			return false
		}
		defer rc.Close()
		b, _ := io.ReadAll(rc)
		return bytes.Contains(b, []byte("while no plugin follows"))
	})
	now := h.clock.now()
	run := &Run{ID: id, Commit: commitB, Status: RunRunning, Attempt: 1, CreatedAt: now, StartedAt: now, Deadline: now.Add(time.Minute)}
	if err := putRun(ctx, h.s, run); err != nil {
		t.Fatal(err)
	}

	h.w.Start(h.s)
	defer h.w.Stop(ctx)
	waittest.Until(t, func() bool {
		r, err := getRun(ctx, h.s, id)
		return err == nil && r.Finished()
	})
	got, err := getRun(ctx, h.s, id)
	if err != nil {
		t.Fatal(err)
	}
	if got.Status != RunSucceeded || got.ContainerID == "" {
		t.Errorf("re-attached run ended %s (%s), container %q", got.Status, got.Reason, got.ContainerID)
	}
	page, err := readRunLog(ctx, h.s, id, 0, 1<<20, h.w.logLimits.chunkSize)
	if err != nil {
		t.Fatal(err)
	}
	want := "before the restart\n\n[flant_gitops: the plugin restarted and re-attached; the output continues after the last line stored]\n" +
		"while no plugin follows\nafter the restart\n"
	if page.Text != want {
		t.Errorf("log after re-attaching = %q, want every line once: %q", page.Text, want)
	}
	if h.lastSuccessful() != commitB {
		t.Errorf("last successful %s, want %s", h.lastSuccessful(), commitB)
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

// found1 returns the ID of the one container carrying labels.
func found1(t *testing.T, r container.Runner, labels map[string]string) string {
	t.Helper()
	found, err := r.Find(context.Background(), labels)
	if err != nil || len(found) != 1 {
		t.Fatalf("containers with %v: %+v, %v", labels, found, err)
	}
	return found[0].ID
}

// leaveRunning starts spec through r and stops following it once started,
// as a node that dies does; it returns the container's id.
func leaveRunning(t *testing.T, r *container.Docker, spec container.Spec) string {
	t.Helper()
	ctx, cancel := context.WithCancelCause(context.Background())
	defer cancel(nil)
	done := make(chan struct{})
	var res container.Result
	var err error
	go func() { defer close(done); res, err = r.Run(ctx, spec) }()
	waittest.Until(t, func() bool {
		found, ferr := r.Find(context.Background(), spec.Labels)
		return ferr == nil && len(found) == 1 && found[0].State == "running"
	})
	cancel(errHandingOver)
	<-done
	if !errors.Is(err, container.ErrLeftRunning) || res.ContainerID == "" {
		t.Fatalf("leaving the run: %+v, %v", res, err)
	}
	t.Cleanup(func() { _ = r.Remove(context.Background(), res.ContainerID) })
	return res.ContainerID
}

// TestSweepRemovesRealOrphans: containers of the mount that nobody follows
// on the real engine: one whose init ended it at its deadline, one without
// an init still running past it (a plugin binary that could not be the
// init), and a live one. A poll past the deadline and its margin removes the
// first two, logs them and keeps the live one.
func TestSweepRemovesRealOrphans(t *testing.T) {
	withInit := dockertest.RunnerWithInit(t)
	noInit := dockertest.Runner(t)
	image := dockertest.Image(t, withInit)
	h := newHarness(t)
	h.mirror.head = commitA // up to date: the poll starts nothing
	h.w.deps.NewRunner = func(context.Context) (container.Runner, error) { return noInit, nil }
	log := captureLog(h)

	deadline := time.Now().Add(2 * time.Second)
	spec := func(run string, deadline time.Time) container.Spec {
		return container.Spec{Image: image, Commands: []string{"sleep 300"}, Timeout: time.Hour, Deadline: deadline,
			Labels: map[string]string{LabelMount: h.mountID, LabelRun: run}}
	}
	ended := leaveRunning(t, withInit, spec("ended-by-init", deadline))
	running := leaveRunning(t, noInit, spec("no-init", deadline))
	live := leaveRunning(t, withInit, spec("live", time.Now().Add(time.Hour)))

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	wait := noInit.Client().ContainerWait(ctx, ended, client.ContainerWaitOptions{Condition: "not-running"})
	select {
	case exit := <-wait.Result:
		if exit.StatusCode != container.ExitTimeout {
			t.Fatalf("the orphan with an init ended with %d, want %d", exit.StatusCode, container.ExitTimeout)
		}
	case err := <-wait.Error:
		t.Fatalf("the orphan with an init did not end by itself: %v", err)
	}

	h.clock.mu.Lock()
	h.clock.t = deadline.Add(container.DeadlineMargin + time.Second)
	h.clock.mu.Unlock()
	h.pollOnce()

	found, err := noInit.Find(ctx, map[string]string{LabelMount: h.mountID})
	if err != nil {
		t.Fatal(err)
	}
	if len(found) != 1 || found[0].ID != live {
		t.Fatalf("after the sweep: %+v; want only the live container %s", found, live)
	}
	for _, want := range []string{"removed an orphan container", ended, running, "state=exited", "state=running"} {
		if !strings.Contains(log.String(), want) {
			t.Errorf("log lacks %q:\n%s", want, log.String())
		}
	}
}
