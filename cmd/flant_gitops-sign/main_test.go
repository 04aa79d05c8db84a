package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"

	"github.com/flant/flant_gitops/gitwatch/pgptest"
)

func TestParseArgs(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		want    invocation
		wantErr string
	}{
		{"sign HEAD by default", []string{"sign"}, invocation{command: "sign", commit: "HEAD", remote: "origin", retries: 10, required: 1, mount: "flant_gitops"}, ""},
		{"sign with flags", []string{"sign", "--ssh", "--key", "k", "--remote", "up", "--retries", "3", "abc"},
			invocation{command: "sign", commit: "abc", remote: "up", format: "ssh", key: "k", retries: 3, required: 1, mount: "flant_gitops"}, ""},
		{"global flags before the command", []string{"-C", "/r", "show", "--trusted", "d", "--required", "2", "--check", "--mount", "/gitops/", "x"},
			invocation{command: "show", commit: "x", dir: "/r", remote: "origin", trusted: "d", required: 2, check: true, retries: 10, mount: "gitops"}, ""},
		{"gpg", []string{"sign", "--gpg"}, invocation{command: "sign", commit: "HEAD", remote: "origin", format: "openpgp", retries: 10, required: 1, mount: "flant_gitops"}, ""},
		{"unknown command", []string{"verify"}, invocation{}, `unknown command "verify"`},
		{"a flag after the commit", []string{"sign", "HEAD", "--ssh"}, invocation{}, "takes one commit"},
		{"a commit like a flag", []string{"sign", "--", "-x"}, invocation{}, "looks like a flag"},
		{"no retries", []string{"sign", "--retries", "0"}, invocation{}, "--retries must be at least 1"},
		{"negative quorum", []string{"show", "--required", "-1"}, invocation{}, "--required must not be negative"},
		{"an option as remote", []string{"sign", "--remote", "--upload-pack=x"}, invocation{}, "is not a remote name"},
		{"empty mount", []string{"show", "--mount", "/"}, invocation{}, "--mount must not be empty"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseArgs("flant_gitops-sign", tt.args, io.Discard, io.Discard)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("want error %q, got %v", tt.wantErr, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if *got != tt.want {
				t.Fatalf("got %+v\nwant %+v", *got, tt.want)
			}
		})
	}
}

func TestRunUsageAndVersion(t *testing.T) {
	tests := []struct {
		argv       []string
		code       int
		out, errs  string
		notInOut   string
		nameInHelp string
	}{
		{argv: []string{"flant_gitops-sign", "--version"}, code: exitOK, out: "flant_gitops-sign dev\n"},
		{argv: []string{"/usr/local/bin/git-flant-sign", "-h"}, code: exitOK, nameInHelp: "git flant-sign sign [flags] [COMMIT]"},
		{argv: []string{"flant_gitops-sign", "sign", "a", "b"}, code: exitUsage, errs: "Run flant_gitops-sign -h for the usage."},
	}
	for _, tt := range tests {
		var out, errs bytes.Buffer
		code := run(context.Background(), tt.argv, func(string) string { return "" }, &out, &errs)
		if code != tt.code || !strings.Contains(out.String(), tt.out) || !strings.Contains(errs.String(), tt.errs) || !strings.Contains(out.String(), tt.nameInHelp) {
			t.Errorf("%q: exit %d\nstdout %s\nstderr %s", tt.argv, code, out.String(), errs.String())
		}
	}
}

func TestParseSignatureLines(t *testing.T) {
	k := pgptest.NewKey(t, "Alice")
	const id = "0123456789abcdef0123456789abcdef01234567"
	sig := k.SignDetached(t, []byte(id), time.Time{})
	line := base64.StdEncoding.EncodeToString(sig)
	note := line + "\n\n" + "not base64!\n" + base64.RawStdEncoding.EncodeToString(sig) + "\n" +
		base64.StdEncoding.EncodeToString([]byte("SSHSIG\x00\x00\x00\x01junk")) + "\n"
	got := parseSignatureLines(note)
	kinds := []string{}
	for _, s := range got {
		kinds = append(kinds, s.kind)
	}
	want := []string{kindOpenPGP, kindUnknown, kindOpenPGP, kindUnknown}
	if strings.Join(kinds, ",") != strings.Join(want, ",") {
		t.Fatalf("kinds %v, want %v", kinds, want)
	}
	if got[0].issuer() != k.Fingerprint() {
		t.Fatalf("issuer %q, want %q", got[0].issuer(), k.Fingerprint())
	}
	if got[3].err == nil || !strings.Contains(got[3].err.Error(), "SSH signature is truncated") {
		t.Fatalf("a broken SSHSIG blob should say so: %v", got[3].err)
	}
	if e, err := pgpSignedBy(openpgp.EntityList{k.Entity}, got[2].raw, []byte(id)); err != nil || e != k.Entity {
		t.Fatalf("the unpadded line should verify: %v", err)
	}
}

func TestRedact(t *testing.T) {
	tests := []struct{ in, want string }{
		{"fatal: unable to access 'https://git:s3cret@host/a.git/'", "fatal: unable to access 'https://git:***@host/a.git/'"},
		{"https://host/a.git", "https://host/a.git"},
		{"ssh://git@host/a.git", "ssh://git@host/a.git"},
	}
	for _, tt := range tests {
		if got := redact(tt.in); got != tt.want {
			t.Errorf("redact(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
	err := &gitError{args: []string{"push"}, err: errors.New("exit status 128"), stderr: "https://u:pw@h/x"}
	if strings.Contains(err.Error(), "pw") {
		t.Fatalf("a git error carries the password: %v", err)
	}
}
