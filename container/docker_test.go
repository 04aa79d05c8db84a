package container_test

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/moby/moby/api/pkg/stdcopy"
	"github.com/moby/moby/client"

	"github.com/flant/flant_gitops/container"
	"github.com/flant/flant_gitops/container/dockertest"
)

// syncBuffer is a log sink that a test can read while a run writes to it,
// and that signals when a marker shows up.
type syncBuffer struct {
	mu     sync.Mutex
	buf    bytes.Buffer
	marker string
	seen   chan struct{}
}

func newSyncBuffer(marker string) *syncBuffer {
	return &syncBuffer{marker: marker, seen: make(chan struct{})}
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	n, err := b.buf.Write(p)
	if b.marker != "" && strings.Contains(b.buf.String(), b.marker) {
		select {
		case <-b.seen:
		default:
			close(b.seen)
		}
	}
	return n, err
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// waitFor blocks until the marker was written, or fails the test.
func (b *syncBuffer) waitFor(t *testing.T, done <-chan struct{}) {
	t.Helper()
	select {
	case <-b.seen:
	case <-done:
		t.Fatalf("the run ended before printing %q; log:\n%s", b.marker, b.String())
	case <-time.After(time.Minute):
		t.Fatalf("%q never appeared in the log:\n%s", b.marker, b.String())
	}
}

func commitFiles(files map[string]string) func(io.Writer) error {
	return func(w io.Writer) error {
		tw := tar.NewWriter(w)
		for _, name := range slices.Sorted(func(yield func(string) bool) {
			for k := range files {
				if !yield(k) {
					return
				}
			}
		}) {
			body := files[name]
			if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(body)), Typeflag: tar.TypeReg, Uid: 1000, Gid: 1000}); err != nil {
				return err
			}
			if _, err := io.WriteString(tw, body); err != nil {
				return err
			}
		}
		return tw.Close()
	}
}

// runLabels gives each test its own labels, so leftovers are attributable.
func runLabels(t *testing.T) map[string]string {
	b := make([]byte, 6)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return map[string]string{"flant_gitops.mount": "test", "flant_gitops.run": hex.EncodeToString(b)}
}

const secretValue = "s.wrapped-token-9f2c1b7d"

func TestRunOutcomes(t *testing.T) {
	r := dockertest.Runner(t)
	image := dockertest.Image(t, r)

	tests := []struct {
		name       string
		changes    []string // image variant, see dockertest.BusyboxImage
		spec       container.Spec
		wantReason string
		wantExit   int
		wantLog    []string
		notInLog   []string
	}{
		{
			name: "reads a file of the commit from /git",
			spec: container.Spec{
				Commands: []string{"pwd", "cat hello.txt", "cat sub/dir/nested.txt >&2"},
				Files:    commitFiles(map[string]string{"hello.txt": "hello from the commit\n", "sub/dir/nested.txt": "nested file\n"}),
			},
			wantReason: container.ReasonExit,
			wantLog:    []string{"/git\n", "hello from the commit\n", "nested file\n"},
		},
		{
			name: "the commit's files are writable by the commands",
			spec: container.Spec{
				Commands: []string{"echo appended >> hello.txt && echo new > made.txt && cat hello.txt made.txt"},
				Files:    commitFiles(map[string]string{"hello.txt": "original\n"}),
			},
			wantReason: container.ReasonExit,
			wantLog:    []string{"original\nappended\nnew\n"},
		},
		{
			name:    "an image's non-root user owns /git",
			changes: []string{"USER nobody"},
			spec: container.Spec{
				Commands:   []string{"id -u", "echo built > out.txt && cat hello.txt out.txt /etc/flant_gitops/ca.pem"},
				Files:      commitFiles(map[string]string{"hello.txt": "from the commit\n"}),
				ExtraFiles: map[string][]byte{"/etc/flant_gitops/ca.pem": []byte("CA\n")},
			},
			wantReason: container.ReasonExit,
			wantLog:    []string{"65534\nfrom the commit\nbuilt\nCA\n"},
		},
		{
			name:       "exit code is propagated",
			spec:       container.Spec{Commands: []string{"exit 7"}},
			wantReason: container.ReasonExit,
			wantExit:   7,
		},
		{
			name:       "a failing command stops the run",
			spec:       container.Spec{Commands: []string{"echo first; exit 3", "echo second"}},
			wantReason: container.ReasonExit,
			wantExit:   3,
			wantLog:    []string{"first"},
			notInLog:   []string{"second"},
		},
		{
			name:       "each command runs in its own shell, in order",
			spec:       container.Spec{Commands: []string{"cd /tmp && pwd", "pwd", `printf '%s|%s\n' "a b" 'c$d;e'`}},
			wantReason: container.ReasonExit,
			wantLog:    []string{"/tmp\n/git\na b|c$d;e\n"},
		},
		{
			name:       "timeout kills the container",
			spec:       container.Spec{Commands: []string{"echo started; sleep 60", "echo never"}, Timeout: time.Second},
			wantReason: container.ReasonTimeout,
			wantExit:   137,
			wantLog:    []string{"started"},
			notInLog:   []string{"never"},
		},
		{
			name: "env reaches the commands but not the log",
			spec: container.Spec{
				Commands: []string{`test "$VAULT_REQUEST_TOKEN_DB" = "` + secretValue + `" && echo token-present`},
				Env:      map[string]string{"VAULT_REQUEST_TOKEN_DB": secretValue},
			},
			wantReason: container.ReasonExit,
			wantLog:    []string{"token-present"},
			notInLog:   []string{secretValue},
		},
		{
			name: "extra files land at their absolute paths",
			spec: container.Spec{
				Commands:   []string{"cat /etc/flant_gitops/ca.pem", "ls -ln /etc/flant_gitops/ca.pem"},
				ExtraFiles: map[string][]byte{"/etc/flant_gitops/ca.pem": []byte("-----BEGIN CERTIFICATE-----\n")},
			},
			wantReason: container.ReasonExit,
			wantLog:    []string{"-----BEGIN CERTIFICATE-----\n", "-rw-r--r--    1 0        0"},
		},
		{
			name:       "network mode none leaves only loopback",
			spec:       container.Spec{Commands: []string{"ls /sys/class/net"}, NetworkMode: "none"},
			wantReason: container.ReasonExit,
			wantLog:    []string{"lo\n"},
			notInLog:   []string{"eth0"},
		},
		{
			name:       "all capabilities are dropped",
			spec:       container.Spec{Commands: []string{"grep CapEff /proc/self/status", "chown 1 /tmp"}},
			wantReason: container.ReasonExit,
			wantExit:   1,
			wantLog:    []string{"CapEff:\t0000000000000000", "Operation not permitted"},
		},
		{
			name:       "memory limit kills with oom_killed",
			spec:       container.Spec{Commands: []string{"dd if=/dev/zero of=/dev/null bs=64M count=1"}, MemoryBytes: 32 << 20},
			wantReason: container.ReasonOOMKilled,
			wantExit:   137,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			labels := runLabels(t)
			defer dockertest.NoLeftovers(t, r, labels)
			spec := tt.spec
			spec.Image, spec.Labels = image, labels
			if tt.changes != nil {
				spec.Image = dockertest.Image(t, r, tt.changes...)
			}
			if spec.Timeout == 0 {
				spec.Timeout = time.Minute
			}
			var log bytes.Buffer
			spec.Log = &log

			res, err := r.Run(context.Background(), spec)
			if err != nil {
				t.Fatalf("Run: %v\nlog:\n%s", err, log.String())
			}
			if res.Reason != tt.wantReason || res.ExitCode != tt.wantExit {
				t.Errorf("got reason %q exit %d, want %q exit %d; log:\n%s", res.Reason, res.ExitCode, tt.wantReason, tt.wantExit, log.String())
			}
			if res.ContainerID == "" || res.Started.IsZero() || res.Finished.Before(res.Started) {
				t.Errorf("incomplete result %+v", res)
			}
			for _, want := range tt.wantLog {
				if !strings.Contains(log.String(), want) {
					t.Errorf("log lacks %q; log:\n%s", want, log.String())
				}
			}
			for _, bad := range tt.notInLog {
				if strings.Contains(log.String(), bad) {
					t.Errorf("log contains %q; log:\n%s", bad, log.String())
				}
			}
		})
	}
}

func TestRunRefusesBeforeCreating(t *testing.T) {
	r := dockertest.Runner(t)
	image := dockertest.Image(t, r)
	missing := "sha256:" + strings.Repeat("0", 64)

	tests := []struct {
		name    string
		mutate  func(*container.Spec)
		wantErr error
		wantMsg string
	}{
		{"mutable tag", func(s *container.Spec) { s.Image = "busybox:latest" }, container.ErrImageNotPinned, "busybox:latest"},
		{"short image id", func(s *container.Spec) { s.Image = image[:19] }, container.ErrImageNotPinned, "sha256:"},
		{"image not on the host", func(s *container.Spec) { s.Image = missing }, container.ErrImageMissing, "never pulls"},
		{"digest not on the host", func(s *container.Spec) { s.Image = "example.org/app@" + missing }, container.ErrImageMissing, "example.org/app@"},
		{"no commands", func(s *container.Spec) { s.Commands = nil }, container.ErrInvalidSpec, "no commands"},
		{"blank command", func(s *container.Spec) { s.Commands = []string{"true", "  "} }, container.ErrInvalidSpec, "command 2"},
		{"no timeout", func(s *container.Spec) { s.Timeout = 0 }, container.ErrInvalidSpec, "timeout"},
		{"negative memory", func(s *container.Spec) { s.MemoryBytes = -1 }, container.ErrInvalidSpec, "negative"},
		{"joining another container", func(s *container.Spec) { s.NetworkMode = "container:abc" }, container.ErrInvalidSpec, "network mode"},
		{"bad env name", func(s *container.Spec) { s.Env = map[string]string{"A-B": "x"} }, container.ErrInvalidSpec, "A-B"},
		{"reserved label", func(s *container.Spec) { s.Labels = map[string]string{container.LabelManaged: "false"} }, container.ErrInvalidSpec, "reserved"},
		{"relative extra file", func(s *container.Spec) { s.ExtraFiles = map[string][]byte{"etc/ca.pem": nil} }, container.ErrInvalidSpec, "absolute"},
		{"extra file over the commit", func(s *container.Spec) { s.ExtraFiles = map[string][]byte{"/git/x": nil} }, container.ErrInvalidSpec, "/git"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			labels := runLabels(t)
			defer dockertest.NoLeftovers(t, r, labels)
			spec := container.Spec{Image: image, Commands: []string{"true"}, Timeout: time.Minute}
			tt.mutate(&spec)
			if spec.Labels == nil {
				spec.Labels = labels
			}
			res, err := r.Run(context.Background(), spec)
			if !errors.Is(err, tt.wantErr) || !strings.Contains(err.Error(), tt.wantMsg) {
				t.Fatalf("got %v, want %v mentioning %q", err, tt.wantErr, tt.wantMsg)
			}
			if res.ContainerID != "" {
				t.Errorf("a container was created: %s", res.ContainerID)
			}
		})
	}
}

func TestRunFileFailuresRemoveTheContainer(t *testing.T) {
	r := dockertest.Runner(t)
	image := dockertest.Image(t, r)
	errGit := errors.New("object not found in the mirror")

	tests := []struct {
		name    string
		files   func(io.Writer) error
		wantErr error
	}{
		{"producer fails midway", func(w io.Writer) error {
			tw := tar.NewWriter(w)
			if err := tw.WriteHeader(&tar.Header{Name: "a", Mode: 0o644, Size: 4, Typeflag: tar.TypeReg}); err != nil {
				return err
			}
			return errGit
		}, errGit},
		{"entry escapes /git", commitFiles(map[string]string{"../etc/passwd": "x"}), container.ErrInvalidSpec},
		{"not a tar", func(w io.Writer) error {
			_, err := io.WriteString(w, strings.Repeat("not a tar archive ", 100))
			return err
		}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			labels := runLabels(t)
			defer dockertest.NoLeftovers(t, r, labels)
			res, err := r.Run(context.Background(), container.Spec{Image: image, Commands: []string{"true"}, Timeout: time.Minute, Labels: labels, Files: tt.files})
			if err == nil {
				t.Fatalf("Run succeeded with a broken archive: %+v", res)
			}
			if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Errorf("got %v, want %v", err, tt.wantErr)
			}
			if res.Reason != "" {
				t.Errorf("reason %q for a run that never started", res.Reason)
			}
		})
	}
}

func TestRunCancel(t *testing.T) {
	r := dockertest.Runner(t)
	image := dockertest.Image(t, r)

	t.Run("while running", func(t *testing.T) {
		labels := runLabels(t)
		defer dockertest.NoLeftovers(t, r, labels)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		log := newSyncBuffer("running")
		type outcome struct {
			res container.Result
			err error
		}
		done := make(chan outcome, 1)
		go func() {
			res, err := r.Run(ctx, container.Spec{Image: image, Commands: []string{"echo running; sleep 60"}, Timeout: 5 * time.Minute, Labels: labels, Log: log})
			done <- outcome{res, err}
		}()
		log.waitFor(t, ctx.Done())
		cancel()
		got := <-done
		if got.err != nil || got.res.Reason != container.ReasonCanceled || got.res.ExitCode != 137 {
			t.Fatalf("got %+v, %v; want reason canceled, exit 137", got.res, got.err)
		}
	})

	t.Run("before start", func(t *testing.T) {
		labels := runLabels(t)
		defer dockertest.NoLeftovers(t, r, labels)
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		res, err := r.Run(ctx, container.Spec{Image: image, Commands: []string{"true"}, Timeout: time.Minute, Labels: labels})
		if err != nil || res.Reason != container.ReasonCanceled || res.ContainerID != "" {
			t.Fatalf("got %+v, %v; want canceled without a container", res, err)
		}
	})
}

// TestRunSettingsWhileRunning checks what the engine actually applied.
func TestRunSettingsWhileRunning(t *testing.T) {
	r := dockertest.Runner(t)
	image := dockertest.Image(t, r)
	labels := runLabels(t)
	defer dockertest.NoLeftovers(t, r, labels)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	log := newSyncBuffer("ready")
	done := make(chan error, 1)
	go func() {
		_, err := r.Run(ctx, container.Spec{
			Image: image, Commands: []string{"echo ready; sleep 60"}, Timeout: 5 * time.Minute, Labels: labels,
			Env:         map[string]string{"VAULT_REQUEST_TOKEN_X": secretValue},
			MemoryBytes: 64 << 20, NanoCPUs: 500_000_000, PidsLimit: 64, NetworkMode: "none",
			Log: log,
		})
		done <- err
	}()
	log.waitFor(t, ctx.Done())

	// Output can precede the engine's own record of the start: poll for it.
	found := waitForState(t, r, labels, "running")
	insp, err := r.Client().ContainerInspect(ctx, found[0].ID, client.ContainerInspectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	c := insp.Container
	hc := c.HostConfig
	checks := []struct {
		what      string
		got, want any
	}{
		{"memory", hc.Memory, int64(64 << 20)},
		{"memory+swap", hc.MemorySwap, int64(64 << 20)},
		{"nano CPUs", hc.NanoCPUs, int64(500_000_000)},
		{"pids limit", *hc.PidsLimit, int64(64)},
		{"network mode", string(hc.NetworkMode), "none"},
		{"privileged", hc.Privileged, false},
		{"auto remove", hc.AutoRemove, false},
		{"cap drop", fmt.Sprint(hc.CapDrop), "[ALL]"},
		{"cap add", len(hc.CapAdd), 0},
		{"security opts", fmt.Sprint(hc.SecurityOpt), "[no-new-privileges]"},
		{"working dir", c.Config.WorkingDir, "/git"},
		{"managed label", c.Config.Labels[container.LabelManaged], "true"},
		{"run label", c.Config.Labels["flant_gitops.run"], labels["flant_gitops.run"]},
		{"image", c.Image, image},
	}
	for _, ch := range checks {
		if ch.got != ch.want {
			t.Errorf("%s: got %v, want %v", ch.what, ch.got, ch.want)
		}
	}
	for k, v := range c.Config.Labels {
		if strings.Contains(k+v, secretValue) {
			t.Errorf("label %s=%s carries the secret", k, v)
		}
	}
	for _, a := range append(c.Args, c.Path) {
		if strings.Contains(a, secretValue) {
			t.Errorf("command line carries the secret: %q", a)
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run after cancel: %v", err)
	}
}

// waitForState polls Find until exactly one container with labels is in state.
func waitForState(t *testing.T, r container.Runner, labels map[string]string, state string) []container.Found {
	t.Helper()
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(50 * time.Millisecond) {
		found, err := r.Find(context.Background(), labels)
		if err != nil {
			t.Fatal(err)
		}
		if len(found) == 1 && found[0].State == state {
			return found
		}
		if time.Now().After(deadline) {
			t.Fatalf("no single container with labels %v reached state %q: %+v", labels, state, found)
		}
	}
}

// TestReattach plays a plugin restart: a previous runner started containers
// and stopped following them; a new runner finds them by label.
func TestReattach(t *testing.T) {
	first := dockertest.Runner(t)
	image := dockertest.Image(t, first)
	ctx := context.Background()

	tests := []struct {
		name       string
		commands   []string
		start      bool
		timeout    time.Duration
		settle     string // wait until Find reports this state before attaching
		wantReason string
		wantExit   int
		wantLog    string
		wantErr    error
	}{
		{
			name:     "still running: follows it to its exit",
			commands: []string{"for i in $(seq 1 20); do echo tick $i; sleep 0.2; done; echo last line; exit 5"},
			start:    true, timeout: time.Minute, settle: "running",
			wantReason: container.ReasonExit, wantExit: 5, wantLog: "last line",
		},
		{
			name:     "already exited: reports its exit code",
			commands: []string{"exit 4"}, start: true, timeout: time.Minute, settle: "exited",
			wantReason: container.ReasonExit, wantExit: 4,
		},
		{
			name:     "time already up: killed",
			commands: []string{"sleep 60"}, start: true, timeout: 0, settle: "running",
			wantReason: container.ReasonTimeout, wantExit: 137,
		},
		{
			name:     "runs past the remaining time: killed",
			commands: []string{"echo still here; sleep 1; echo still here after attach; sleep 60"}, start: true, timeout: 3 * time.Second, settle: "running",
			wantReason: container.ReasonTimeout, wantExit: 137, wantLog: "still here after attach",
		},
		{
			name:     "created but never started: removed and reported",
			commands: []string{"true"}, start: false, timeout: time.Minute, settle: "created",
			wantErr: container.ErrNeverStarted,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			labels := runLabels(t)
			defer dockertest.NoLeftovers(t, first, labels)
			id, err := first.StartDetached(ctx, container.Spec{Image: image, Commands: tt.commands, Timeout: time.Minute, Labels: labels}, tt.start)
			if err != nil {
				if id != "" {
					_ = first.Remove(ctx, id)
				}
				t.Fatalf("starting the container of the previous runner: %v", err)
			}

			second := dockertest.Runner(t)
			found := waitForState(t, second, labels, tt.settle)
			if found[0].ID != id || found[0].Labels["flant_gitops.run"] != labels["flant_gitops.run"] {
				t.Fatalf("Find returned %+v, want container %s with the run label", found[0], id)
			}

			var log bytes.Buffer
			res, err := second.Attach(ctx, id, &log, time.Time{}, tt.timeout)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("Attach: got error %v, want %v", err, tt.wantErr)
			}
			if res.Reason != tt.wantReason || res.ExitCode != tt.wantExit || res.ContainerID != id {
				t.Errorf("got %+v, want reason %q exit %d", res, tt.wantReason, tt.wantExit)
			}
			if !strings.Contains(log.String(), tt.wantLog) {
				t.Errorf("log lacks %q:\n%s", tt.wantLog, log.String())
			}
		})
	}
}

func TestForeignContainersAreLeftAlone(t *testing.T) {
	r := dockertest.Runner(t)
	image := dockertest.Image(t, r)
	ctx := context.Background()
	created, err := r.Client().ContainerCreate(ctx, client.ContainerCreateOptions{Image: image})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if _, err := r.Client().ContainerRemove(ctx, created.ID, client.ContainerRemoveOptions{Force: true}); err != nil {
			t.Errorf("removing the foreign container: %v", err)
		}
	}()

	if _, err := r.Attach(ctx, created.ID, io.Discard, time.Time{}, time.Minute); !errors.Is(err, container.ErrNotManaged) {
		t.Errorf("Attach on a foreign container: got %v, want ErrNotManaged", err)
	}
	if err := r.Remove(ctx, created.ID); !errors.Is(err, container.ErrNotManaged) {
		t.Errorf("Remove on a foreign container: got %v, want ErrNotManaged", err)
	}
	if _, err := r.Client().ContainerInspect(ctx, created.ID, client.ContainerInspectOptions{}); err != nil {
		t.Errorf("the foreign container is gone: %v", err)
	}
	if err := r.Remove(ctx, strings.Repeat("f", 64)); err != nil {
		t.Errorf("Remove of a missing container: %v", err)
	}
}

func TestNewDockerUnreachable(t *testing.T) {
	t.Setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
	_, err := container.NewDocker(context.Background())
	if !errors.Is(err, container.ErrDaemonUnreachable) || !strings.Contains(err.Error(), "/nonexistent/docker.sock") {
		t.Fatalf("got %v, want ErrDaemonUnreachable naming the socket", err)
	}
}

func BenchmarkRun(b *testing.B) {
	r := dockertest.Runner(b)
	image := dockertest.Image(b, r)
	files := commitFiles(map[string]string{"a.txt": strings.Repeat("x", 1<<10)})
	for b.Loop() {
		res, err := r.Run(context.Background(), container.Spec{Image: image, Commands: []string{"cat a.txt >/dev/null"}, Files: files, Timeout: time.Minute, Log: io.Discard})
		if err != nil || res.ExitCode != 0 {
			b.Fatalf("%+v, %v", res, err)
		}
	}
}

// lineSink is a LineWriter that keeps what it took and the engine's
// timestamp of the last line, as the plugin's run log does.
type lineSink struct {
	mu   sync.Mutex
	buf  bytes.Buffer
	last time.Time
}

func (s *lineSink) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.Write(p)
}

func (s *lineSink) WriteLine(p []byte, at time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.buf.Write(p)
	s.last = at
}

func (s *lineSink) snapshot() (string, time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.String(), s.last
}

// engineLines counts the lines the engine has logged for container id.
func engineLines(t *testing.T, r *container.Docker, id string) int {
	t.Helper()
	rc, err := r.Client().ContainerLogs(context.Background(), id, client.ContainerLogsOptions{ShowStdout: true, ShowStderr: true})
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	var out bytes.Buffer
	if _, err := stdcopy.StdCopy(&out, &out, rc); err != nil {
		t.Fatal(err)
	}
	return strings.Count(out.String(), "\n")
}

// TestReattachLosesNoOutput plays a plugin that dies mid-run while the
// container keeps printing: the new runner's Attach continues from the
// engine timestamp of the last line kept, so every line is there once.
func TestReattachLosesNoOutput(t *testing.T) {
	r := dockertest.Runner(t)
	image := dockertest.Image(t, r)
	ctx := context.Background()
	const total = 60
	script := fmt.Sprintf("i=0; while [ $i -lt %d ]; do i=$((i+1)); echo line $i; sleep 0.05; done", total)

	tests := []struct {
		name   string
		settle string // the container's state when the new runner attaches
	}{
		{"still printing at re-attach", "running"},
		{"exited before re-attach", "exited"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			labels := runLabels(t)
			defer dockertest.NoLeftovers(t, r, labels)
			id, err := r.StartDetached(ctx, container.Spec{Image: image, Commands: []string{script}, Timeout: time.Minute, Labels: labels}, true)
			if err != nil {
				if id != "" {
					_ = r.Remove(ctx, id)
				}
				t.Fatal(err)
			}

			sink := &lineSink{}
			stop, err := r.FollowLogs(ctx, id, sink)
			if err != nil {
				_ = r.Remove(ctx, id)
				t.Fatal(err)
			}
			waitFor(t, func() bool { s, _ := sink.snapshot(); return strings.Contains(s, "line 10\n") })
			stop() // the plugin dies
			before, since := sink.snapshot()
			kept := strings.Count(before, "\n")
			// Lines the engine logs while nobody follows.
			waitFor(t, func() bool { return engineLines(t, r, id) >= kept+10 })
			waitForState(t, r, labels, tt.settle)

			res, err := dockertest.Runner(t).Attach(ctx, id, sink, since, time.Minute)
			if err != nil || res.Reason != container.ReasonExit || res.ExitCode != 0 {
				t.Fatalf("Attach: %+v, %v", res, err)
			}
			got, _ := sink.snapshot()
			var want strings.Builder
			for i := 1; i <= total; i++ {
				fmt.Fprintf(&want, "line %d\n", i)
			}
			if got != want.String() {
				t.Errorf("log after re-attach is not every line once, in order (%d kept before):\n%s", kept, got)
			}
		})
	}
}

// waitFor polls cond for up to a minute.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(time.Minute); !cond(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within a minute")
		}
	}
}

// errHandover is how a caller hands its container over: a cancel cause
// wrapping container.ErrLeftRunning.
var errHandover = fmt.Errorf("the plugin hands over to the next active node: %w", container.ErrLeftRunning)

// TestHandOver plays a planned handover: the follower stops following with
// ErrLeftRunning, the container keeps running, and the next follower's
// Attach from the last kept line's timestamp sees every line once and the
// exit. Any other cancel cause still kills and removes.
func TestHandOver(t *testing.T) {
	r := dockertest.Runner(t)
	image := dockertest.Image(t, r)
	const total = 60
	script := fmt.Sprintf("i=0; while [ $i -lt %d ]; do i=$((i+1)); echo line $i; sleep 0.1; done", total)
	var want strings.Builder
	for i := 1; i <= total; i++ {
		fmt.Fprintf(&want, "line %d\n", i)
	}

	// detachAt follows with follow until the sink holds line n, then cancels
	// with cause and returns follow's answer.
	detachAt := func(t *testing.T, sink *lineSink, n int, cause error, follow func(ctx context.Context) (container.Result, error)) (container.Result, error) {
		t.Helper()
		ctx, cancel := context.WithCancelCause(context.Background())
		defer cancel(nil)
		type outcome struct {
			res container.Result
			err error
		}
		done := make(chan outcome, 1)
		go func() {
			res, err := follow(ctx)
			done <- outcome{res, err}
		}()
		waitFor(t, func() bool { s, _ := sink.snapshot(); return strings.Contains(s, fmt.Sprintf("line %d\n", n)) })
		cancel(cause)
		select {
		case got := <-done:
			return got.res, got.err
		case <-time.After(time.Minute):
			t.Fatal("the follower did not return within a minute of the cancel")
			return container.Result{}, nil
		}
	}
	// handedOver checks the follower left the container running and
	// returns the timestamp to continue from.
	handedOver := func(t *testing.T, labels map[string]string, res container.Result, err error, sink *lineSink) time.Time {
		t.Helper()
		if !errors.Is(err, container.ErrLeftRunning) || !errors.Is(err, errHandover) || res.ContainerID == "" {
			t.Fatalf("got %+v, %v; want the container's id and an error wrapping ErrLeftRunning and the cause", res, err)
		}
		found, ferr := r.Find(context.Background(), labels)
		if ferr != nil || len(found) != 1 || found[0].ID != res.ContainerID || found[0].State != "running" {
			t.Fatalf("after the handover: %+v, %v; want container %s still running", found, ferr, res.ContainerID)
		}
		s, since := sink.snapshot()
		if since.IsZero() || !strings.HasSuffix(s, "\n") {
			t.Fatalf("the sink has no whole last line with a timestamp: %q at %v", s, since)
		}
		// Lines the engine logs while nobody follows.
		kept := strings.Count(s, "\n")
		waitFor(t, func() bool { return engineLines(t, r, res.ContainerID) >= kept+5 })
		return since
	}

	tests := []struct {
		name string
		play func(t *testing.T, labels map[string]string, sink *lineSink) (last container.Result, lastErr error)
	}{
		{
			name: "Run hands over, Attach follows to the end",
			play: func(t *testing.T, labels map[string]string, sink *lineSink) (container.Result, error) {
				res, err := detachAt(t, sink, 10, errHandover, func(ctx context.Context) (container.Result, error) {
					return r.Run(ctx, container.Spec{Image: image, Commands: []string{script}, Timeout: time.Minute, Labels: labels, Log: sink})
				})
				since := handedOver(t, labels, res, err, sink)
				return dockertest.Runner(t).Attach(context.Background(), res.ContainerID, sink, since, time.Minute)
			},
		},
		{
			name: "Run hands over, Attach hands over, Attach follows to the end",
			play: func(t *testing.T, labels map[string]string, sink *lineSink) (container.Result, error) {
				res, err := detachAt(t, sink, 10, errHandover, func(ctx context.Context) (container.Result, error) {
					return r.Run(ctx, container.Spec{Image: image, Commands: []string{script}, Timeout: time.Minute, Labels: labels, Log: sink})
				})
				since := handedOver(t, labels, res, err, sink)
				second := dockertest.Runner(t)
				res, err = detachAt(t, sink, 30, errHandover, func(ctx context.Context) (container.Result, error) {
					return second.Attach(ctx, res.ContainerID, sink, since, time.Minute)
				})
				since = handedOver(t, labels, res, err, sink)
				return dockertest.Runner(t).Attach(context.Background(), res.ContainerID, sink, since, time.Minute)
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			labels := runLabels(t)
			defer dockertest.NoLeftovers(t, r, labels)
			defer func() { // a failed handover leaves the container to the test
				if found, err := r.Find(context.Background(), labels); err == nil {
					for _, f := range found {
						_ = r.Remove(context.Background(), f.ID)
					}
				}
			}()
			sink := &lineSink{}
			res, err := tt.play(t, labels, sink)
			if err != nil || res.Reason != container.ReasonExit || res.ExitCode != 0 {
				t.Fatalf("the last follower: %+v, %v; want exit 0", res, err)
			}
			if got, _ := sink.snapshot(); got != want.String() {
				t.Errorf("the log over the handovers is not every line once, in order:\n%s", got)
			}
		})
	}

	t.Run("another cause kills and removes", func(t *testing.T) {
		labels := runLabels(t)
		defer dockertest.NoLeftovers(t, r, labels)
		sink := &lineSink{}
		res, err := detachAt(t, sink, 3, errors.New("canceled by an operator"), func(ctx context.Context) (container.Result, error) {
			return r.Run(ctx, container.Spec{Image: image, Commands: []string{script}, Timeout: time.Minute, Labels: labels, Log: sink})
		})
		if err != nil || res.Reason != container.ReasonCanceled || res.ExitCode != 137 {
			t.Fatalf("got %+v, %v; want reason canceled, exit 137", res, err)
		}
	})

	t.Run("not started yet: nothing is left", func(t *testing.T) {
		labels := runLabels(t)
		defer dockertest.NoLeftovers(t, r, labels)
		ctx, cancel := context.WithCancelCause(context.Background())
		cancel(errHandover)
		res, err := r.Run(ctx, container.Spec{Image: image, Commands: []string{"true"}, Timeout: time.Minute, Labels: labels})
		if err != nil || res.Reason != container.ReasonCanceled || res.ContainerID != "" {
			t.Fatalf("got %+v, %v; want canceled without a container", res, err)
		}
	})
}
