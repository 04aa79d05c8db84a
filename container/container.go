// Package container runs a commit's commands in a throw-away container.
//
// The Runner contract: the image is pinned and never pulled, the commit's
// files are copied to /git (the working directory) before the container
// starts, secrets live only in the container's environment, output is
// streamed as it is produced, and the container is removed whatever happens.
// Its PID 1 is an init of the plugin's (init.go, initproc) that stops the
// commands at Spec.Deadline by itself, followed or not.
package container

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path"
	"regexp"
	"strings"
	"time"
)

// Reasons a run ended, in Result.Reason.
const (
	// ReasonExit: the commands ended by themselves; ExitCode says how.
	ReasonExit = "exit"
	// ReasonTimeout: Spec.Timeout elapsed and the container was killed.
	ReasonTimeout = "timeout"
	// ReasonCanceled: the caller's context ended; the container was killed
	// (or never started).
	ReasonCanceled = "canceled"
	// ReasonOOMKilled: the kernel killed a process for exceeding MemoryBytes.
	ReasonOOMKilled = "oom_killed"
)

// labelManaged marks every container this package creates. Find, Attach and
// Remove only ever act on containers carrying it, so the runner never touches
// a container it did not start.
const labelManaged = "flant_gitops.managed"

// workDir is where Spec.Files lands and where the commands start.
const workDir = "/git"

var (
	// ErrInvalidSpec: the Spec cannot be run as given.
	ErrInvalidSpec = errors.New("invalid container spec")
	// ErrImageNotPinned: Spec.Image is a mutable tag, not a digest or an image ID.
	ErrImageNotPinned = errors.New("docker image is not pinned")
	// ErrImageMissing: the pinned image is not present on the Docker host.
	ErrImageMissing = errors.New("docker image is not present on the Docker host")
	// ErrDaemonUnreachable: the Docker engine did not answer.
	ErrDaemonUnreachable = errors.New("docker engine unreachable")
	// ErrNotManaged: the container exists but was not created by this package.
	ErrNotManaged = errors.New("container is not managed by flant_gitops")
	// ErrNeverStarted: a container was found created but never started (the
	// runner stopped between create and start); it has been removed.
	ErrNeverStarted = errors.New("container was created but never started")
	// ErrLeftRunning is the cancel cause that hands a container over: when
	// the ctx of Run or Attach is canceled with a cause wrapping it (see
	// context.WithCancelCause), they stop following a started container and
	// return at once, leaving it running for a later Attach, with an error
	// wrapping this one. Any other cause kills and removes the container.
	ErrLeftRunning = errors.New("container left running for another follower")
)

// Spec describes one run.
type Spec struct {
	// Image is pinned: "name@sha256:<64 hex>" or an image ID "sha256:<64 hex>".
	// It is never pulled.
	Image string
	// Commands run in order, each with /bin/sh -c in its own shell (a `cd` does
	// not carry over); the first non-zero exit stops the run with that code.
	Commands []string
	// Files writes a tar stream of the commit's files; entries are copied
	// under /git before the container starts. Nil means an empty /git.
	Files func(w io.Writer) error
	// ExtraFiles are written at absolute paths inside the container, mode
	// 0644, owned by root (for example a CA certificate). Not for secrets.
	ExtraFiles map[string][]byte
	// Env may hold secrets (wrapped tokens): it only ever reaches the
	// container's environment, never a label, a log or an error message.
	Env map[string]string
	// Labels name the run (for example flant_gitops.mount, flant_gitops.run);
	// The label flant_gitops.managed is added by the runner and may not be set here.
	Labels map[string]string
	// MemoryBytes limits memory (and memory+swap) when > 0.
	MemoryBytes int64
	// NanoCPUs limits CPU in 1e-9 CPUs when > 0.
	NanoCPUs int64
	// PidsLimit limits the number of processes when > 0.
	PidsLimit int64
	// NetworkMode is "bridge", "host", "none" or a network name; empty means
	// the daemon default (bridge).
	NetworkMode string
	// Timeout bounds the run from the moment the container starts; required.
	Timeout time.Duration
	// Deadline is when the run ends at the latest, absolute, so a later
	// Attach cannot extend it: the container's init stops the commands then
	// even when nobody follows it (see DeadlineMargin). Zero means the time
	// of the create plus Timeout.
	Deadline time.Time
	// Log receives stdout and stderr, demultiplexed, as they are produced. A
	// write error stops forwarding; the rest of the output is drained and
	// dropped so the container never blocks on it. Nil discards the output.
	Log io.Writer
}

// Result is the outcome of a run that reached the Docker engine.
type Result struct {
	ExitCode    int
	Reason      string // "", ReasonExit, ReasonTimeout, ReasonCanceled, ReasonOOMKilled
	ContainerID string
	Started     time.Time
	Finished    time.Time
	// Warning is for the operator: why this run has no init to stop it at
	// its deadline (then only its follower does).
	Warning string
}

// LineWriter is a log sink that also keeps the engine's timestamp of each
// line, so a later Attach can continue right after the last line it kept.
// Run and Attach use WriteLine instead of Write when the sink has it.
type LineWriter interface {
	io.Writer
	WriteLine(p []byte, at time.Time)
}

// Found is a managed container found by its labels.
type Found struct {
	ID      string
	Name    string
	Labels  map[string]string
	State   string // created, running, exited, ...
	Created time.Time
	// Deadline is the run's Spec.Deadline, zero for a container made by a
	// version that did not record it.
	Deadline time.Time
}

// Runner runs commands in containers. Implementations are safe for
// concurrent use.
type Runner interface {
	// Run creates, starts, follows and removes one container. Cancelling ctx
	// kills the container; the outcome is then ReasonCanceled with a nil
	// error. Cancelling it with a cause wrapping ErrLeftRunning instead
	// leaves a started container running (Result has its ID and start) and
	// returns an error wrapping ErrLeftRunning; a container not started yet
	// is removed as on any cancel. An error means the run could not be
	// carried out (bad spec, missing image, engine failure) or the container
	// could not be removed.
	Run(ctx context.Context, spec Spec) (Result, error)
	// Find lists managed containers, running or not, carrying all labels.
	Find(ctx context.Context, labels map[string]string) ([]Found, error)
	// Attach follows a managed container (after a restart of the caller),
	// waits for it up to timeout, and removes it. Its output is taken from
	// the engine's log, from the first line stamped after since (the zero
	// time: from the container's first line). Cancelling ctx kills the
	// container, or with a cause wrapping ErrLeftRunning leaves it as Run
	// does; a container created but never started is removed and reported
	// with ErrNeverStarted.
	Attach(ctx context.Context, id string, log io.Writer, since time.Time, timeout time.Duration) (Result, error)
	// Remove force-removes a managed container; a missing one is not an error.
	Remove(ctx context.Context, id string) error
	// EngineID names the engine the runner reaches (docker info's ID): a
	// container started on one engine cannot be found through another, so
	// a caller that finds no container can tell "gone" from "elsewhere".
	EngineID(ctx context.Context) (string, error)
}

var (
	pinnedDigest = regexp.MustCompile(`^[a-z0-9][a-z0-9._/:-]*@sha256:[0-9a-f]{64}$`)
	imageID      = regexp.MustCompile(`^sha256:[0-9a-f]{64}$`)
	envKey       = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
	networkName  = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]*$`)
)

// CheckPinned reports whether image is pinned by digest or by image ID; the
// backend uses it to validate configuration before any run.
func CheckPinned(image string) error {
	if pinnedDigest.MatchString(image) || imageID.MatchString(image) {
		return nil
	}
	return fmt.Errorf("%w: %q: use name@sha256:<digest> or an image ID sha256:<64 hex> so every run uses the same bytes", ErrImageNotPinned, image)
}

// CheckNetworkMode reports whether mode is "" (the default), bridge, host,
// none or a user-defined network name; the backend uses it to validate
// configuration before any run. container:<id> would join another
// container's namespaces: refused.
func CheckNetworkMode(mode string) error {
	switch mode {
	case "", "bridge", "host", "none":
		return nil
	}
	if !networkName.MatchString(mode) {
		return fmt.Errorf("%w: network mode %q: use bridge, host, none or a network name", ErrInvalidSpec, mode)
	}
	return nil
}

func (s *Spec) validate() error {
	if err := CheckPinned(s.Image); err != nil {
		return err
	}
	if len(s.Commands) == 0 {
		return fmt.Errorf("%w: no commands to run", ErrInvalidSpec)
	}
	for i, c := range s.Commands {
		if strings.TrimSpace(c) == "" {
			return fmt.Errorf("%w: command %d is empty", ErrInvalidSpec, i+1)
		}
		if strings.ContainsRune(c, 0) {
			return fmt.Errorf("%w: command %d contains a NUL byte", ErrInvalidSpec, i+1)
		}
	}
	if s.Timeout <= 0 {
		return fmt.Errorf("%w: a positive timeout is required", ErrInvalidSpec)
	}
	if s.MemoryBytes < 0 || s.NanoCPUs < 0 || s.PidsLimit < 0 {
		return fmt.Errorf("%w: memory, CPU and pids limits must not be negative", ErrInvalidSpec)
	}
	if err := CheckNetworkMode(s.NetworkMode); err != nil {
		return err
	}
	for k, v := range s.Env {
		if !envKey.MatchString(k) {
			return fmt.Errorf("%w: environment variable name %q is not a valid shell name", ErrInvalidSpec, k)
		}
		if strings.ContainsRune(v, 0) {
			// The value is a potential secret: name the key only.
			return fmt.Errorf("%w: environment variable %s contains a NUL byte", ErrInvalidSpec, k)
		}
	}
	for k := range s.Labels {
		if k == "" {
			return fmt.Errorf("%w: empty label name", ErrInvalidSpec)
		}
		if k == labelManaged || k == labelInit || k == labelDeadline {
			return fmt.Errorf("%w: label %s is reserved for the runner", ErrInvalidSpec, k)
		}
	}
	for p := range s.ExtraFiles {
		if _, err := extraFileName(p); err != nil {
			return err
		}
	}
	return nil
}

// extraFileName turns an absolute container path into a tar entry name
// relative to "/".
func extraFileName(p string) (string, error) {
	if !path.IsAbs(p) || path.Clean(p) != p || p == "/" {
		return "", fmt.Errorf("%w: extra file path %q must be absolute and clean", ErrInvalidSpec, p)
	}
	if p == workDir || strings.HasPrefix(p, workDir+"/") {
		return "", fmt.Errorf("%w: extra file path %q is inside %s, which holds the commit", ErrInvalidSpec, p, workDir)
	}
	if p == initDir || strings.HasPrefix(p, initDir+"/") {
		return "", fmt.Errorf("%w: extra file path %q is inside %s, which holds the plugin's init", ErrInvalidSpec, p, initDir)
	}
	return strings.TrimPrefix(p, "/"), nil
}
