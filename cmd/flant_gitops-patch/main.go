// Command flant_gitops-patch is the CI client of the flant_gitops patch path:
// it logs in to Vault with the job's id_token (or uses VAULT_TOKEN), builds a
// patch request from its arguments with encoding/json, sends it, retries what
// the answer says may pass later, and prints the commit SHA.
//
// It depends on the standard library only, so `CGO_ENABLED=0 go build` gives
// a small static binary a job can download as an artifact.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

// Exit codes, documented in the usage text.
const (
	exitOK       = 0 // committed, no_op, or a dry run answered
	exitRefused  = 1 // Vault or the plugin answered an error that a retry cannot fix
	exitUsage    = 2 // bad arguments or environment; nothing was sent
	exitGaveUp   = 3 // only retryable failures until the deadline
	programName  = "flant_gitops-patch"
	defaultMount = "flant_gitops"
)

// version is linked in by `make release` (-X main.version=vX.Y.Z), so a job
// log shows which release it ran; a plain `go build` says "dev".
var version = "dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Getenv, os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run is the whole program with its environment handed in, so tests run it
// in-process.
func run(ctx context.Context, args []string, getenv func(string) string, stdin io.Reader, stdout, stderr io.Writer) int {
	inv, err := parseArgs(args, getenv, stdin, stderr)
	if err != nil {
		if errors.Is(err, errHelp) {
			return exitOK
		}
		if errors.Is(err, errVersion) {
			printf(stdout, "%s %s\n", programName, version)
			return exitOK
		}
		printf(stderr, "%s: %v\n", programName, err)
		printf(stderr, "Run %s -h for the usage.\n", programName)
		return exitUsage
	}
	c, err := newClient(inv, getenv)
	if err != nil {
		printf(stderr, "%s: %v\n", programName, err)
		return exitUsage
	}
	return c.patch(ctx, inv, stdout, stderr)
}

func printf(w io.Writer, format string, a ...any) {
	// Output errors (a closed pipe) cannot be reported anywhere better.
	_, _ = fmt.Fprintf(w, format, a...)
}
