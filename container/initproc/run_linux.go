package initproc

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"syscall"
	"time"
)

// forwarded are the signals passed on to the commands (docker stop sends
// TERM to PID 1, which the kernel would otherwise drop for an init without a
// handler).
var forwarded = []os.Signal{syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP, syscall.SIGQUIT, syscall.SIGUSR1, syscall.SIGUSR2}

// prSetChildSubreaper makes orphaned descendants ours to reap when the init
// is not PID 1 (as in tests); PID 1 is the reaper of its namespace anyway.
const prSetChildSubreaper = 36

func run(cfg Config, stderr io.Writer) int {
	start := time.Now()
	due := cfg.due(start)
	if !due.IsZero() && !start.Before(due) {
		fmt.Fprintf(stderr, "[flant_gitops: run_timeout had already passed at %s when the container started; nothing was run]\n", due.UTC().Format(time.RFC3339))
		return ExitTimeout
	}
	pid1 := os.Getpid() == 1
	if !pid1 {
		_, _, _ = syscall.RawSyscall(syscall.SYS_PRCTL, prSetChildSubreaper, 1, 0)
	}

	// Subscribed before the start, so neither an early exit nor an early
	// signal is missed.
	sigs := make(chan os.Signal, 64)
	signal.Notify(sigs, append([]os.Signal{syscall.SIGCHLD}, forwarded...)...)
	defer signal.Stop(sigs)

	path, err := exec.LookPath(cfg.Argv[0])
	if err != nil {
		fmt.Fprintf(stderr, "[flant_gitops: cannot start %s: %v]\n", cfg.Argv[0], err)
		return exitUsage
	}
	// The commands get a process group of their own, so the deadline and
	// forwarded signals reach every process they start.
	proc, err := os.StartProcess(path, cfg.Argv, &os.ProcAttr{
		Env:   os.Environ(),
		Files: []*os.File{os.Stdin, os.Stdout, os.Stderr},
		Sys:   &syscall.SysProcAttr{Setpgid: true},
	})
	if err != nil {
		fmt.Fprintf(stderr, "[flant_gitops: cannot start %s: %v]\n", cfg.Argv[0], err)
		return exitUsage
	}
	child := proc.Pid
	// Every process of the container when the init is PID 1 (a command that
	// left the group with setsid too); the commands' group otherwise.
	killAll := func(sig syscall.Signal) {
		if pid1 {
			_ = syscall.Kill(-1, sig)
			return
		}
		_ = syscall.Kill(-child, sig)
	}

	var deadline <-chan time.Time
	if !due.IsZero() {
		t := time.NewTimer(time.Until(due))
		defer t.Stop()
		deadline = t.C
	}
	// A missed SIGCHLD (signals coalesce) cannot leave the init waiting.
	poll := time.NewTicker(time.Second)
	defer poll.Stop()

	var grace <-chan time.Time
	timedOut := false
	for {
		select {
		case s := <-sigs:
			if s != syscall.SIGCHLD {
				_ = syscall.Kill(-child, s.(syscall.Signal))
				continue
			}
		case <-poll.C:
		case <-deadline:
			timedOut = true
			fmt.Fprintf(stderr, "[flant_gitops: run_timeout reached at %s; stopping the commands (TERM, then KILL after %s)]\n", due.UTC().Format(time.RFC3339), cfg.Grace)
			killAll(syscall.SIGTERM)
			g := time.NewTimer(cfg.Grace)
			defer g.Stop()
			grace = g.C
			continue
		case <-grace:
			killAll(syscall.SIGKILL)
			continue
		}
		if status, done := reap(child); done {
			if timedOut {
				// What the commands left behind goes too; as PID 1 the
				// kernel does that when the init exits.
				killAll(syscall.SIGKILL)
				return ExitTimeout
			}
			return exitCode(status)
		}
	}
}

// reap collects every exited child; done reports that child was one of them.
func reap(child int) (status syscall.WaitStatus, done bool) {
	for {
		var ws syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
		if err == syscall.EINTR {
			continue
		}
		if pid <= 0 || err != nil {
			return status, done
		}
		if pid == child {
			status, done = ws, true
		}
	}
}

// exitCode is the shell's convention: the code, or 128 plus the signal.
func exitCode(ws syscall.WaitStatus) int {
	if ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return ws.ExitStatus()
}
