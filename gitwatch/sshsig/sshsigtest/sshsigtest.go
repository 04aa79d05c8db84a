// Package sshsigtest makes SSH keys and signatures with the real ssh-keygen
// for tests, and asks it for its verdict. A test that uses it fails (never
// skips) when ssh-keygen is missing: install Debian's openssh-client.
package sshsigtest

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// Key is a key pair made by ssh-keygen in a test's temporary directory.
type Key struct {
	// Path of the private key; the public key is Path+".pub".
	Path string
	// Public is the public key line ("ssh-ed25519 AAAA... comment").
	Public string
	// Type and Bits as given to ssh-keygen (Bits 0: its default).
	Type string
	Bits int
}

var seq atomic.Int64

// Require fails the test when ssh-keygen is not on PATH.
func Require(t testing.TB) string {
	t.Helper()
	p, err := exec.LookPath("ssh-keygen")
	if err != nil {
		t.Fatalf("ssh-keygen is required (apt-get install openssh-client): %v", err)
	}
	return p
}

// NewKey runs `ssh-keygen -t typ [-b bits]` without a passphrase.
func NewKey(t testing.TB, typ string, bits int) *Key {
	t.Helper()
	Require(t)
	path := filepath.Join(t.TempDir(), fmt.Sprintf("key%d", seq.Add(1)))
	args := []string{"-q", "-t", typ, "-N", "", "-C", fmt.Sprintf("%s-%d@test", typ, bits), "-f", path}
	if bits > 0 {
		args = append(args, "-b", strconv.Itoa(bits))
	}
	Run(t, nil, args...)
	pub, err := os.ReadFile(path + ".pub")
	if err != nil {
		t.Fatalf("sshsigtest: read public key: %v", err)
	}
	return &Key{Path: path, Public: strings.TrimSpace(string(pub)), Type: typ, Bits: bits}
}

// Sign runs `ssh-keygen -Y sign -n namespace` over message and returns the
// armored signature. Extra options (for example "-Ohashalg=sha256") go
// before the key. For RSA keys, -Ohashalg=sha256 makes an rsa-sha2-256
// signature and the default an rsa-sha2-512 one.
func (k *Key) Sign(t testing.TB, namespace string, message []byte, opts ...string) []byte {
	t.Helper()
	args := append([]string{"-Y", "sign", "-n", namespace}, opts...)
	args = append(args, "-f", k.Path)
	return Run(t, message, args...)
}

// Run runs ssh-keygen with args and stdin and returns its standard
// output; it fails the test when ssh-keygen fails.
func Run(t testing.TB, stdin []byte, args ...string) []byte {
	t.Helper()
	out, err := Exec(stdin, args...)
	if err != nil {
		t.Fatalf("ssh-keygen %s: %v", strings.Join(args, " "), err)
	}
	return out
}

// Exec runs ssh-keygen and returns its standard output, or an error that
// carries its standard error.
func Exec(stdin []byte, args ...string) ([]byte, error) {
	cmd := exec.Command("ssh-keygen", args...)
	cmd.Stdin = bytes.NewReader(stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.Bytes(), fmt.Errorf("%w: %s", err, strings.TrimSpace(stderr.String()))
	}
	return stdout.Bytes(), nil
}

// Verdict is ssh-keygen's answer to `-Y verify`.
type Verdict struct {
	OK     bool
	Output string // its standard output and error, for messages
}

// Verify asks `ssh-keygen -Y verify -f allowedSigners -I principal -n
// namespace -s sig -Overify-time=signTime [-r revoked]` about message.
// revoked, when not empty, is the content of a revocation file (public
// key lines, as git's gpg.ssh.revocationFile).
func Verify(t testing.TB, allowedSigners, principal, namespace string, sig, message []byte, signTime time.Time, revoked string) Verdict {
	t.Helper()
	Require(t)
	dir := t.TempDir()
	write := func(name, data string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(data), 0o600); err != nil {
			t.Fatalf("sshsigtest: %v", err)
		}
		return p
	}
	args := []string{"-Y", "verify", "-f", write("allowed_signers", allowedSigners), "-I", principal, "-n", namespace,
		"-s", write("sig", string(sig)), "-Overify-time=" + signTime.UTC().Format("20060102150405") + "Z"}
	if revoked != "" {
		args = append(args, "-r", write("revoked", revoked))
	}
	cmd := exec.Command("ssh-keygen", args...)
	// sshsig reads allowed_signers times without Z as UTC, ssh-keygen in
	// the local zone: compare them where the two are the same.
	cmd.Env = append(os.Environ(), "TZ=UTC")
	cmd.Stdin = bytes.NewReader(message)
	out, err := cmd.CombinedOutput()
	if _, isExit := err.(*exec.ExitError); err != nil && !isExit {
		t.Fatalf("ssh-keygen -Y verify did not run: %v", err)
	}
	return Verdict{OK: err == nil, Output: strings.TrimSpace(string(out))}
}
