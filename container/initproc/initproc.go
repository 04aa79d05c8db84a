// Package initproc is the init (PID 1) of a run's container: it starts the
// commands, forwards signals to them, reaps every zombie, and ends the run
// at its deadline by itself, so a run outlives its run_timeout by at most
// the kill grace even when nobody follows its container.
//
// The plugin binary is the init: started under the name Name (its argv[0]),
// its main hands over to Main before doing anything else. It takes only the
// standard library, so a test can build a small static init of its own.
package initproc

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"path/filepath"
	"strconv"
	"time"
)

// Name is the file name the init is started under inside the container; the
// plugin binary turns into the init when its argv[0] ends in it.
const Name = "flant_gitops-init"

// ExitTimeout is the init's exit code when it ended the commands at their
// deadline (the code timeout(1) uses). A command may exit with it too: the
// runner counts it as a timeout only when the container ended at or after
// the deadline.
const ExitTimeout = 124

// exitUsage is the exit code of an init that could not start the commands.
const exitUsage = 127

// DefaultGrace is how long the commands have between TERM and KILL at the
// deadline.
const DefaultGrace = 10 * time.Second

// Config is what the init needs to run the commands.
type Config struct {
	// Deadline is absolute, so a follower re-attaching later cannot extend
	// it; zero means none.
	Deadline time.Time
	// Timeout, when > 0, bounds the run from the init's own start as well:
	// a container clock behind the plugin's cannot stretch the run past it.
	Timeout time.Duration
	// Grace is the time between TERM and KILL at the deadline.
	Grace time.Duration
	// Argv is the command and its arguments.
	Argv []string
}

// Invoked reports whether a process started with args is the init.
func Invoked(args []string) bool {
	return len(args) > 0 && filepath.Base(args[0]) == Name
}

// Args are the arguments after argv[0] that make the init run argv under cfg.
func Args(cfg Config) []string {
	out := make([]string, 0, len(cfg.Argv)+4)
	if !cfg.Deadline.IsZero() {
		out = append(out, "-deadline="+strconv.FormatInt(cfg.Deadline.UnixNano(), 10))
	}
	if cfg.Timeout > 0 {
		out = append(out, "-timeout="+cfg.Timeout.String())
	}
	if cfg.Grace > 0 {
		out = append(out, "-grace="+cfg.Grace.String())
	}
	out = append(out, "--")
	return append(out, cfg.Argv...)
}

// Parse reads the arguments Args made (without argv[0]).
func Parse(args []string) (Config, error) {
	fs := flag.NewFlagSet(Name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	deadline := fs.Int64("deadline", 0, "")
	timeout := fs.Duration("timeout", 0, "")
	grace := fs.Duration("grace", DefaultGrace, "")
	if err := fs.Parse(args); err != nil {
		return Config{}, fmt.Errorf("%s: %w", Name, err)
	}
	cfg := Config{Timeout: *timeout, Grace: *grace, Argv: fs.Args()}
	if *deadline != 0 {
		cfg.Deadline = time.Unix(0, *deadline)
	}
	if len(cfg.Argv) == 0 {
		return Config{}, errors.New(Name + ": no command to run")
	}
	if cfg.Timeout < 0 || cfg.Grace < 0 {
		return Config{}, errors.New(Name + ": timeout and grace must not be negative")
	}
	return cfg, nil
}

// due is when the init ends the commands: the earlier of the deadline and
// start plus the timeout; zero means never.
func (c Config) due(start time.Time) time.Time {
	var at time.Time
	if c.Timeout > 0 {
		at = start.Add(c.Timeout)
	}
	if !c.Deadline.IsZero() && (at.IsZero() || c.Deadline.Before(at)) {
		at = c.Deadline
	}
	return at
}

// Main is the init: it runs the commands args describe (see Args) and
// returns the exit code of the container.
func Main(args []string, stderr io.Writer) int {
	cfg, err := Parse(args)
	if err != nil {
		fmt.Fprintf(stderr, "[flant_gitops: %v]\n", err)
		return exitUsage
	}
	return run(cfg, stderr)
}
