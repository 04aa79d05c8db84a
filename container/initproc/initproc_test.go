package initproc

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// asInit makes the test binary the init when a test starts it again with
// this variable set: the unit tests drive the real Main in its own process,
// so its reaping never takes a child of the test runner.
const asInit = "INITPROC_TEST_AS_INIT"

func TestMain(m *testing.M) {
	if os.Getenv(asInit) == "1" {
		os.Exit(Main(os.Args[1:], os.Stderr))
	}
	os.Exit(m.Run())
}

// startInit starts the init on cfg, its output in out.
func startInit(t *testing.T, cfg Config, out *bytes.Buffer) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(os.Args[0], Args(cfg)...)
	cmd.Env = append(os.Environ(), asInit+"=1")
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting the init: %v", err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	return cmd
}

// wait returns the init's exit code.
func wait(t *testing.T, cmd *exec.Cmd) int {
	t.Helper()
	err := cmd.Wait()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ee):
		return ee.ExitCode()
	default:
		t.Fatalf("waiting for the init: %v", err)
		return -1
	}
}

func TestInitEnds(t *testing.T) {
	tests := []struct {
		name      string
		script    string
		timeout   time.Duration
		grace     time.Duration
		wantCode  int
		wantOut   string
		minWait   time.Duration
		ranMarker bool
	}{
		{name: "exit code passes through", script: "echo hi; exit 7", timeout: time.Minute, wantCode: 7, wantOut: "hi"},
		{name: "success", script: "true", timeout: time.Minute, wantCode: 0},
		{name: "death by signal is 128 plus it", script: "kill -TERM $$", timeout: time.Minute, wantCode: 128 + int(syscall.SIGTERM)},
		{name: "deadline stops a long command with TERM", script: "sleep 30", timeout: 300 * time.Millisecond, grace: 5 * time.Second,
			wantCode: ExitTimeout, wantOut: "run_timeout reached"},
		{name: "a command ignoring TERM is killed after the grace", script: `trap "" TERM; while :; do sleep 0.05; done`,
			timeout: 200 * time.Millisecond, grace: 700 * time.Millisecond, wantCode: ExitTimeout, wantOut: "run_timeout reached", minWait: 900 * time.Millisecond},
		{name: "a background process in the group is stopped too", script: "sleep 30 & wait", timeout: 300 * time.Millisecond, grace: 5 * time.Second,
			wantCode: ExitTimeout},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out bytes.Buffer
			start := time.Now()
			cmd := startInit(t, Config{Timeout: tt.timeout, Grace: tt.grace, Argv: []string{"/bin/sh", "-c", tt.script}}, &out)
			code := wait(t, cmd)
			took := time.Since(start)
			if code != tt.wantCode {
				t.Fatalf("exit code %d, want %d; output:\n%s", code, tt.wantCode, out.String())
			}
			if !strings.Contains(out.String(), tt.wantOut) {
				t.Fatalf("output %q lacks %q", out.String(), tt.wantOut)
			}
			if took < tt.minWait {
				t.Fatalf("ended after %s, before the grace (%s) had passed", took, tt.minWait)
			}
			// The grace is never waited for in full when TERM works.
			if tt.grace >= 5*time.Second && took >= tt.grace {
				t.Fatalf("took %s: the commands were not stopped by TERM", took)
			}
		})
	}
}

// TestInitDeadlineIsAbsolute: a deadline already passed runs nothing, and a
// near deadline wins over a longer timeout.
func TestInitDeadlineIsAbsolute(t *testing.T) {
	dir := t.TempDir()
	marker := filepath.Join(dir, "ran")
	tests := []struct {
		name     string
		deadline time.Time
		wantRan  bool
		wantOut  string
	}{
		{name: "passed", deadline: time.Now().Add(-time.Second), wantOut: "had already passed"},
		{name: "near", deadline: time.Now().Add(400 * time.Millisecond), wantRan: true, wantOut: "run_timeout reached"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_ = os.Remove(marker)
			var out bytes.Buffer
			cmd := startInit(t, Config{Deadline: tt.deadline, Timeout: time.Hour, Grace: time.Second,
				Argv: []string{"/bin/sh", "-c", "touch " + marker + "; sleep 30"}}, &out)
			if code := wait(t, cmd); code != ExitTimeout {
				t.Fatalf("exit code %d, want %d; output:\n%s", code, ExitTimeout, out.String())
			}
			_, err := os.Stat(marker)
			if ran := err == nil; ran != tt.wantRan {
				t.Fatalf("command ran: %v, want %v", ran, tt.wantRan)
			}
			if !strings.Contains(out.String(), tt.wantOut) {
				t.Fatalf("output %q lacks %q", out.String(), tt.wantOut)
			}
		})
	}
}

func TestInitForwardsSignals(t *testing.T) {
	tests := []struct {
		sig  syscall.Signal
		name string
	}{{syscall.SIGTERM, "TERM"}, {syscall.SIGINT, "INT"}, {syscall.SIGUSR1, "USR1"}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			ready := filepath.Join(dir, "ready")
			var out bytes.Buffer
			script := `trap 'echo got-` + tt.name + `; exit 3' ` + tt.name + `; touch ` + ready + `; while :; do sleep 0.05; done`
			cmd := startInit(t, Config{Timeout: time.Minute, Argv: []string{"/bin/sh", "-c", script}}, &out)
			waitFor(t, func() bool { _, err := os.Stat(ready); return err == nil })
			if err := cmd.Process.Signal(tt.sig); err != nil {
				t.Fatal(err)
			}
			if code := wait(t, cmd); code != 3 {
				t.Fatalf("exit code %d, want 3 from the trap; output:\n%s", code, out.String())
			}
			if !strings.Contains(out.String(), "got-"+tt.name) {
				t.Fatalf("the command did not get %s: %q", tt.name, out.String())
			}
		})
	}
}

// TestInitReapsOrphans: a process whose parent exited is reparented to the
// init (PID 1, or the subreaper here) and must not stay a zombie.
func TestInitReapsOrphans(t *testing.T) {
	dir := t.TempDir()
	ready := filepath.Join(dir, "ready")
	var out bytes.Buffer
	// The subshell exits at once: its sleep becomes the init's, and exits
	// while the main command still runs.
	script := `(sleep 0.2 &); touch ` + ready + `; sleep 2`
	cmd := startInit(t, Config{Timeout: time.Minute, Argv: []string{"/bin/sh", "-c", script}}, &out)
	waitFor(t, func() bool { _, err := os.Stat(ready); return err == nil })
	time.Sleep(time.Second)
	if z := zombiesOf(t, cmd.Process.Pid); len(z) > 0 {
		t.Fatalf("zombies left under the init: %v", z)
	}
	if code := wait(t, cmd); code != 0 {
		t.Fatalf("exit code %d; output:\n%s", code, out.String())
	}
}

func TestArgsRoundTrip(t *testing.T) {
	dl := time.Unix(1700000000, 123456789)
	tests := []struct {
		name string
		cfg  Config
	}{
		{name: "all", cfg: Config{Deadline: dl, Timeout: time.Minute, Grace: 3 * time.Second, Argv: []string{"/bin/sh", "-c", "x", "--", "-deadline=1"}}},
		{name: "argv only", cfg: Config{Grace: DefaultGrace, Argv: []string{"/bin/true"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Parse(Args(tt.cfg))
			if err != nil {
				t.Fatal(err)
			}
			if !got.Deadline.Equal(tt.cfg.Deadline) || got.Timeout != tt.cfg.Timeout || got.Grace != tt.cfg.Grace || !slices.Equal(got.Argv, tt.cfg.Argv) {
				t.Fatalf("got %+v, want %+v", got, tt.cfg)
			}
		})
	}
	for _, bad := range [][]string{{"--"}, {"-timeout=-1s", "--", "x"}, {"-deadline=x", "--", "x"}} {
		if _, err := Parse(bad); err == nil {
			t.Fatalf("Parse(%q) accepted", bad)
		}
	}
	if code := Main([]string{"--"}, &bytes.Buffer{}); code != exitUsage {
		t.Fatalf("Main without a command: %d", code)
	}
}

func TestDue(t *testing.T) {
	start := time.Unix(1000, 0)
	tests := []struct {
		name string
		cfg  Config
		want time.Time
	}{
		{name: "none", cfg: Config{}, want: time.Time{}},
		{name: "timeout", cfg: Config{Timeout: time.Minute}, want: start.Add(time.Minute)},
		{name: "deadline", cfg: Config{Deadline: start.Add(time.Hour)}, want: start.Add(time.Hour)},
		{name: "deadline earlier", cfg: Config{Deadline: start.Add(time.Second), Timeout: time.Minute}, want: start.Add(time.Second)},
		{name: "timeout earlier (container clock behind)", cfg: Config{Deadline: start.Add(time.Hour), Timeout: time.Minute}, want: start.Add(time.Minute)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.cfg.due(start); !got.Equal(tt.want) {
				t.Fatalf("due %v, want %v", got, tt.want)
			}
		})
	}
	if !Invoked([]string{"/.flant_gitops/" + Name, "--"}) || Invoked([]string{"/usr/bin/flant_gitops"}) || Invoked(nil) {
		t.Fatal("Invoked does not go by argv[0]'s base name")
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for end := time.Now().Add(10 * time.Second); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatal("condition not met in 10s")
}

// zombiesOf lists the zombie children of pid, from /proc.
func zombiesOf(t *testing.T, pid int) []int {
	t.Helper()
	stats, err := filepath.Glob("/proc/[0-9]*/stat")
	if err != nil {
		t.Fatal(err)
	}
	var out []int
	for _, p := range stats {
		b, err := os.ReadFile(p)
		if err != nil {
			continue // gone meanwhile
		}
		// pid (comm) state ppid ...: comm may hold spaces, so split after ')'.
		s := string(b)
		i := strings.LastIndexByte(s, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(s[i+1:])
		if len(f) < 2 || f[0] != "Z" {
			continue
		}
		if ppid, _ := strconv.Atoi(f[1]); ppid == pid {
			child, _ := strconv.Atoi(filepath.Base(filepath.Dir(p)))
			out = append(out, child)
		}
	}
	return out
}
