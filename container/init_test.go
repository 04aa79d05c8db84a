package container_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"strings"
	"testing"
	"time"

	mcontainer "github.com/moby/moby/api/types/container"
	"github.com/moby/moby/client"

	"github.com/flant/flant_gitops/container"
	"github.com/flant/flant_gitops/container/dockertest"
)

// leaveRunning starts spec through r and stops following it, as a node that
// hands over or dies does, once marker is in the log; it returns the
// container's id.
func leaveRunning(t *testing.T, r *container.Docker, spec container.Spec, marker string) string {
	t.Helper()
	sink := newSyncBuffer(marker)
	spec.Log = sink
	ctx, cancel := context.WithCancelCause(context.Background())
	defer cancel(nil)
	done := make(chan struct{})
	var res container.Result
	var err error
	go func() { defer close(done); res, err = r.Run(ctx, spec) }()
	sink.waitFor(t, done)
	cancel(errHandover)
	<-done
	if !errors.Is(err, container.ErrLeftRunning) || res.ContainerID == "" {
		t.Fatalf("leaving the run: %+v, %v", res, err)
	}
	return res.ContainerID
}

// TestOrphanEndsAtItsDeadline: a container whose follower is gone (the node
// died) ends by itself at its deadline with the init's timeout code, and a
// later follower reports a timeout however long it would still wait. On a
// container without our init (the runner of today's main) the orphan runs on.
func TestOrphanEndsAtItsDeadline(t *testing.T) {
	withInit := dockertest.RunnerWithInit(t)
	image := dockertest.Image(t, withInit)
	tests := []struct {
		name     string
		runner   *container.Docker
		wantEnd  bool
		wantCode int
	}{
		{name: "with the init it ends at its deadline", runner: withInit, wantEnd: true, wantCode: container.ExitTimeout},
		{name: "without an init it runs on", runner: dockertest.Runner(t), wantEnd: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			labels := runLabels(t)
			defer dockertest.NoLeftovers(t, tt.runner, labels)
			deadline := time.Now().Add(4 * time.Second)
			id := leaveRunning(t, tt.runner, container.Spec{Image: image, Commands: []string{"echo started; sleep 300"},
				Timeout: time.Hour, Deadline: deadline, Labels: labels}, "started")
			defer func() { _ = tt.runner.Remove(context.Background(), id) }()

			found, err := tt.runner.Find(context.Background(), labels)
			if err != nil || len(found) != 1 || !found[0].Deadline.Equal(deadline.UTC().Truncate(time.Nanosecond)) {
				t.Fatalf("Find: %+v, %v; want the container with its deadline %v", found, err, deadline)
			}
			// Nobody follows: ask the engine when it stops.
			ctx, cancel := context.WithTimeout(context.Background(), time.Until(deadline)+container.KillGrace+3*time.Second)
			defer cancel()
			wait := tt.runner.Client().ContainerWait(ctx, id, client.ContainerWaitOptions{Condition: mcontainer.WaitConditionNotRunning})
			select {
			case exit := <-wait.Result:
				if !tt.wantEnd {
					t.Fatalf("the container ended (code %d) with nobody following and no init", exit.StatusCode)
				}
				if int(exit.StatusCode) != tt.wantCode {
					t.Fatalf("exit code %d, want %d", exit.StatusCode, tt.wantCode)
				}
				// The TERM works on sleep: it ends at once, well within the grace.
				if now := time.Now(); now.Before(deadline) || now.After(deadline.Add(container.KillGrace)) {
					t.Fatalf("ended at %v, deadline %v", now, deadline)
				}
			case err := <-wait.Error:
				if tt.wantEnd {
					t.Fatalf("the container still runs %s after its deadline: %v", time.Since(deadline).Round(time.Second), err)
				}
				return
			}
			// A later follower, with a timeout far beyond, reports it.
			res, err := dockertest.Runner(t).Attach(context.Background(), id, nil, time.Time{}, time.Hour)
			if err != nil || res.Reason != container.ReasonTimeout || res.ExitCode != container.ExitTimeout {
				t.Fatalf("Attach after the deadline: %+v, %v; want reason timeout, exit %d", res, err, container.ExitTimeout)
			}
		})
	}
}

// TestInitDeadlineOutlastsReattach: a follower that re-attaches with a long
// timeout does not extend the run; Run itself reports the init's timeout.
func TestInitDeadlineOutlastsReattach(t *testing.T) {
	r := dockertest.RunnerWithInit(t)
	image := dockertest.Image(t, r)
	t.Run("Run", func(t *testing.T) {
		labels := runLabels(t)
		defer dockertest.NoLeftovers(t, r, labels)
		sink := newSyncBuffer("")
		start := time.Now()
		res, err := r.Run(context.Background(), container.Spec{Image: image, Commands: []string{"sleep 300"}, Timeout: 3 * time.Second, Labels: labels, Log: sink})
		if err != nil || res.Reason != container.ReasonTimeout || res.ExitCode != container.ExitTimeout || res.Warning != "" {
			t.Fatalf("got %+v, %v; want reason timeout, exit %d", res, err, container.ExitTimeout)
		}
		if took := time.Since(start); took > 3*time.Second+container.KillGrace {
			t.Fatalf("took %s", took)
		}
		if !strings.Contains(sink.String(), "run_timeout reached") {
			t.Fatalf("the log does not say the init stopped it: %q", sink.String())
		}
	})
	t.Run("Attach", func(t *testing.T) {
		labels := runLabels(t)
		defer dockertest.NoLeftovers(t, r, labels)
		deadline := time.Now().Add(5 * time.Second)
		id := leaveRunning(t, r, container.Spec{Image: image, Commands: []string{"echo started; sleep 300"}, Timeout: time.Hour, Deadline: deadline, Labels: labels}, "started")
		res, err := dockertest.Runner(t).Attach(context.Background(), id, nil, time.Time{}, time.Hour)
		if err != nil || res.Reason != container.ReasonTimeout || res.ExitCode != container.ExitTimeout {
			t.Fatalf("got %+v, %v; want reason timeout, exit %d", res, err, container.ExitTimeout)
		}
		if time.Now().After(deadline.Add(container.KillGrace)) {
			t.Fatalf("the re-attached run ended at %v, past its deadline %v and the grace", time.Now(), deadline)
		}
	})
}

// TestInitVolume: the init reaches the container from a read-only volume
// kept per engine and binary; commands run as the image's user, exit codes
// pass through, and a command exiting with the init's code before the
// deadline is not a timeout.
func TestInitVolume(t *testing.T) {
	r := dockertest.RunnerWithInit(t)
	tests := []struct {
		name       string
		changes    []string
		commands   []string
		wantReason string
		wantExit   int
		wantLog    string
	}{
		{name: "the init is PID 1 and read-only", commands: []string{"cat /proc/1/cmdline | tr '\\0' ' '", "! touch /.flant_gitops/x", "echo $$"},
			wantReason: container.ReasonExit, wantLog: "/.flant_gitops/flant_gitops-init"},
		{name: "a non-root image", changes: []string{"USER nobody"}, commands: []string{"id -u", "exit 3"}, wantReason: container.ReasonExit, wantExit: 3, wantLog: "65534"},
		{name: "code 124 before the deadline is the command's", commands: []string{"exit 124"}, wantReason: container.ReasonExit, wantExit: 124},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			image := dockertest.Image(t, r, tt.changes...)
			labels := runLabels(t)
			defer dockertest.NoLeftovers(t, r, labels)
			sink := newSyncBuffer("")
			res, err := r.Run(context.Background(), container.Spec{Image: image, Commands: tt.commands, Timeout: time.Minute, Labels: labels, Log: sink})
			if err != nil || res.Reason != tt.wantReason || res.ExitCode != tt.wantExit || res.Warning != "" {
				t.Fatalf("got %+v, %v; want %s, exit %d; log:\n%s", res, err, tt.wantReason, tt.wantExit, sink.String())
			}
			if !strings.Contains(sink.String(), tt.wantLog) {
				t.Fatalf("log lacks %q:\n%s", tt.wantLog, sink.String())
			}
		})
	}
	bin, err := os.ReadFile(dockertest.InitBinary(t))
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(bin)
	name := "flant_gitops-init-" + hex.EncodeToString(sum[:])[:16]
	ctx := context.Background()
	if v, err := r.Client().VolumeInspect(ctx, name, client.VolumeInspectOptions{}); err != nil || v.Volume.Labels[container.LabelManaged] != "true" {
		t.Fatalf("init volume %s: %+v, %v", name, v, err)
	}

	// Someone removes it (docker volume prune), and a mount by an older
	// runner makes it again, empty and unlabelled: the next run puts the
	// init back.
	if _, err := r.Client().VolumeRemove(ctx, name, client.VolumeRemoveOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Client().VolumeCreate(ctx, client.VolumeCreateOptions{Name: name}); err != nil {
		t.Fatal(err)
	}
	image := dockertest.Image(t, r)
	res, err := r.Run(ctx, container.Spec{Image: image, Commands: []string{"test -x /.flant_gitops/flant_gitops-init"}, Timeout: time.Minute})
	if err != nil || res.Reason != container.ReasonExit || res.ExitCode != 0 {
		t.Fatalf("a run after the volume was replaced: %+v, %v", res, err)
	}
}

// TestInitFallback: a binary that cannot be the init (dynamically linked)
// does not stop runs: they go on with the follower alone, and the run's log
// and Result say so.
func TestInitFallback(t *testing.T) {
	ctx := context.Background()
	r, err := container.NewDocker(ctx, container.WithInit("/bin/ls"))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	image := dockertest.Image(t, r)
	labels := runLabels(t)
	defer dockertest.NoLeftovers(t, r, labels)
	sink := newSyncBuffer("")
	res, err := r.Run(ctx, container.Spec{Image: image, Commands: []string{"sleep 30"}, Timeout: 2 * time.Second, Labels: labels, Log: sink})
	if err != nil || res.Reason != container.ReasonTimeout || res.ExitCode != 137 {
		t.Fatalf("got %+v, %v; want the follower's timeout (kill, 137)", res, err)
	}
	for _, s := range []string{res.Warning, sink.String()} {
		if !strings.Contains(s, "dynamically linked") || !strings.Contains(s, "no init") {
			t.Fatalf("the fallback is not explained: %q", s)
		}
	}
}

// BenchmarkInitDelivery compares ways of getting the init into each run:
// none (the baseline), the init volume (filled once, mounted read-only), and
// copying a binary of the plugin's size (64 MiB) into every container. Read
// the ratios against "no init".
func BenchmarkInitDelivery(b *testing.B) {
	plain := dockertest.Runner(b)
	image := dockertest.Image(b, plain)
	blob := make([]byte, 64<<20)
	for i := range blob {
		blob[i] = byte(i * 7)
	}
	cases := []struct {
		name   string
		runner *container.Docker
		extra  map[string][]byte
	}{
		{name: "no init", runner: plain},
		{name: "init volume", runner: dockertest.RunnerWithInit(b)},
		{name: "copy 64MiB per run", runner: plain, extra: map[string][]byte{"/opt/flant_gitops-init": blob}},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			spec := container.Spec{Image: image, Commands: []string{"true"}, ExtraFiles: c.extra, Timeout: time.Minute, Log: io.Discard}
			// The volume is filled by the first run, outside the timing.
			if _, err := c.runner.Run(context.Background(), spec); err != nil {
				b.Fatal(err)
			}
			for b.Loop() {
				res, err := c.runner.Run(context.Background(), spec)
				if err != nil || res.ExitCode != 0 {
					b.Fatalf("%+v, %v", res, err)
				}
			}
		})
	}
}
