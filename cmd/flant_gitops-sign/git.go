package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"regexp"
	"strings"
)

// gitCmd runs the signer's git in one repository.
type gitCmd struct {
	dir    string // "" is the current directory
	stderr io.Writer
}

// gitError is a git command that failed, with what it printed.
type gitError struct {
	args   []string
	err    error
	stderr string
}

func (e *gitError) Error() string {
	msg := strings.TrimSpace(e.stderr)
	if msg == "" {
		msg = e.err.Error()
	}
	return fmt.Sprintf("git %s: %s", strings.Join(e.args, " "), redact(msg))
}

func (e *gitError) Unwrap() error { return e.err }

// credentialsInURL finds a password written into a URL (https://user:pass@host).
var credentialsInURL = regexp.MustCompile(`(://[^/@:\s]*):[^/@\s]*@`)

// redact drops passwords written into remote URLs from what git printed,
// so an error message never carries one.
func redact(s string) string {
	return credentialsInURL.ReplaceAllString(s, "$1:***@")
}

// run runs git and returns its stdout with the trailing newline removed.
func (g *gitCmd) run(ctx context.Context, stdin []byte, args ...string) (string, error) {
	out, err := g.raw(ctx, stdin, args...)
	return strings.TrimRight(out, "\n"), err
}

// raw runs git and returns its stdout as is.
func (g *gitCmd) raw(ctx context.Context, stdin []byte, args ...string) (string, error) {
	full := args
	if g.dir != "" {
		full = append([]string{"-C", g.dir}, args...)
	}
	cmd := exec.CommandContext(ctx, "git", full...)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		if errors.Is(err, exec.ErrNotFound) {
			return "", fmt.Errorf("git is not on PATH: install git: %w", err)
		}
		if ctx.Err() != nil {
			return "", fmt.Errorf("git %s: %w", strings.Join(args, " "), ctx.Err())
		}
		return stdout.String(), &gitError{args: args, err: err, stderr: stderr.String()}
	}
	return stdout.String(), nil
}

// config reads one git config value ("" when unset).
func (g *gitCmd) config(ctx context.Context, key string) (string, error) {
	out, err := g.run(ctx, nil, "config", "--get", key)
	var ge *gitError
	var exit *exec.ExitError
	if errors.As(err, &ge) && errors.As(ge.err, &exit) && exit.ExitCode() == 1 {
		return "", nil // unset
	}
	return out, err
}

// revParse resolves rev to a 40-hex object id ("" when it does not exist).
func (g *gitCmd) revParse(ctx context.Context, rev string) (string, error) {
	out, err := g.run(ctx, nil, "rev-parse", "--verify", "--quiet", "--end-of-options", rev)
	var ge *gitError
	if errors.As(err, &ge) && strings.TrimSpace(ge.stderr) == "" {
		return "", nil
	}
	return out, err
}

// isAncestor is `git merge-base --is-ancestor a b`.
func (g *gitCmd) isAncestor(ctx context.Context, a, b string) (bool, error) {
	_, err := g.run(ctx, nil, "merge-base", "--is-ancestor", a, b)
	var ge *gitError
	var exit *exec.ExitError
	if errors.As(err, &ge) && errors.As(ge.err, &exit) && exit.ExitCode() == 1 {
		return false, nil
	}
	return err == nil, err
}

// resolveCommit turns what the signer typed into the commit's 40-hex id.
func (g *gitCmd) resolveCommit(ctx context.Context, rev string) (string, error) {
	if _, err := g.run(ctx, nil, "rev-parse", "--git-dir"); err != nil {
		return "", usagef("not in a git repository (run it inside your clone, or give -C DIR): %v", err)
	}
	id, err := g.revParse(ctx, rev+"^{commit}")
	if err != nil {
		return "", err
	}
	if id == "" {
		return "", usagef("%q is not a commit in this repository (git fetch first if it is new)", rev)
	}
	return id, nil
}
