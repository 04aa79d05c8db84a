// Command flant_gitops-sign is the signer's tool of flant_gitops: it adds a
// signer's detached signature over a commit id to refs/notes/signatures (the
// notes the watcher and trdl read) and pushes it, and shows who signed a
// commit and what is still missing for it to run.
//
// It drives the signer's own git, gpg and ssh-keygen, so the keys, agents,
// pinentry and git credentials a `git commit -S` user already has are the
// ones used. Built with CGO_ENABLED=0 it is one static binary; on PATH as
// git-flant-sign it is also `git flant-sign`.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
)

// Exit codes, documented in the usage text.
const (
	exitOK      = 0 // signed, already signed, or shown (whatever the quorum)
	exitFailed  = 1 // git, gpg, ssh-keygen, the remote or Vault failed
	exitUsage   = 2 // bad arguments or environment; nothing was changed
	exitMissing = 3 // show --check: the commit does not have enough signatures yet
)

// version is linked in by `make release` (-X main.version=vX.Y.Z).
var version = "dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args, os.Getenv, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// programName is how the tool was called, for messages: "git flant-sign"
// when git runs it as a subcommand.
func programName(arg0 string) string {
	if strings.HasPrefix(filepath.Base(arg0), "git-") {
		return "git " + strings.TrimPrefix(filepath.Base(arg0), "git-")
	}
	return "flant_gitops-sign"
}

func run(ctx context.Context, argv []string, getenv func(string) string, stdout, stderr io.Writer) int {
	name := programName(argv[0])
	inv, err := parseArgs(name, argv[1:], stdout, stderr)
	if err != nil {
		if errors.Is(err, errHelp) {
			return exitOK
		}
		if errors.Is(err, errVersion) {
			printf(stdout, "flant_gitops-sign %s\n", version)
			return exitOK
		}
		printf(stderr, "%s: %v\n", name, err)
		printf(stderr, "Run %s -h for the usage.\n", name)
		return exitUsage
	}
	g := &gitCmd{dir: inv.dir, stderr: stderr}
	switch inv.command {
	case "sign":
		err = sign(ctx, g, inv, stdout, stderr)
	case "show":
		var ok bool
		ok, err = show(ctx, g, inv, getenv, stdout, stderr)
		if err == nil && inv.check && !ok {
			return exitMissing
		}
	}
	if err != nil {
		var u *usageError
		if errors.As(err, &u) {
			printf(stderr, "%s: %v\n", name, err)
			return exitUsage
		}
		printf(stderr, "%s %s: %v\n", name, inv.command, err)
		return exitFailed
	}
	return exitOK
}

// usageError is a problem with the arguments or the setup found before
// anything was changed.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, a ...any) error { return &usageError{fmt.Sprintf(format, a...)} }

func printf(w io.Writer, format string, a ...any) {
	// Output errors (a closed pipe) cannot be reported anywhere better.
	_, _ = fmt.Fprintf(w, format, a...)
}
