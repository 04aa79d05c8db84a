package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/ProtonMail/go-crypto/openpgp"
	"golang.org/x/crypto/ssh"

	"github.com/flant/flant_gitops/gitwatch/sshsig"
)

// signer makes the signer's detached signatures and recognizes them.
type signer interface {
	// sign makes a binary detached signature over msg.
	sign(ctx context.Context, msg []byte) ([]byte, error)
	// made reports whether s is a valid signature over msg by this signer's
	// key. Before sign has run, an SSH signer whose public key is not at
	// hand cannot tell and says false.
	made(s noteSig, msg []byte) bool
	// String names the key, for messages.
	String() string
}

// newSigner picks gpg or ssh-keygen the way `git commit -S` does.
func newSigner(ctx context.Context, g *gitCmd, inv *invocation) (signer, error) {
	format := inv.format
	if format == "" {
		f, err := g.config(ctx, "gpg.format")
		if err != nil {
			return nil, err
		}
		switch f {
		case "", "openpgp":
			format = kindOpenPGP
		case "ssh":
			format = kindSSH
		default:
			return nil, usagef("git config gpg.format is %q: this tool signs with openpgp or ssh (give --gpg or --ssh)", f)
		}
	}
	key := inv.key
	if key == "" {
		k, err := g.config(ctx, "user.signingkey")
		if err != nil {
			return nil, err
		}
		key = k
	}
	if format == kindSSH {
		return newSSHSigner(ctx, g, key)
	}
	return newGPGSigner(ctx, g, key)
}

// program is git's configured program for a format, else the default.
func program(ctx context.Context, g *gitCmd, keys []string, def string) (string, error) {
	for _, k := range keys {
		p, err := g.config(ctx, k)
		if err != nil || p != "" {
			return p, err
		}
	}
	return def, nil
}

// runTool runs a signing program, msg on stdin; its stderr is kept for the
// error (gpg and ssh-keygen talk to the terminal, not stderr, for
// passphrases and touches).
func runTool(ctx context.Context, prog string, stdin []byte, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, prog, args...)
	cmd.Stdin = bytes.NewReader(stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		if errors.Is(err, exec.ErrNotFound) {
			return nil, fmt.Errorf("%s is not on PATH: install it or set git config (gpg.program, gpg.ssh.program): %w", prog, err)
		}
		return nil, fmt.Errorf("%s %s: %w: %s", prog, strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.Bytes(), nil
}

// gpgSigner signs with gpg --detach-sign, as `git signatures add` does.
type gpgSigner struct {
	prog    string
	key     string
	keyring openpgp.EntityList // the key's public part, from gpg --export
}

func newGPGSigner(ctx context.Context, g *gitCmd, key string) (*gpgSigner, error) {
	prog, err := program(ctx, g, []string{"gpg.openpgp.program", "gpg.program"}, "gpg")
	if err != nil {
		return nil, err
	}
	if key == "" {
		// git signs with the committer's identity when no key is set.
		ident, err := g.run(ctx, nil, "var", "GIT_COMMITTER_IDENT")
		if err != nil {
			return nil, usagef("no signing key: set git config user.signingkey or give --key (%v)", err)
		}
		if i := strings.LastIndex(ident, ">"); i >= 0 {
			ident = ident[:i+1]
		}
		key = ident
	}
	pub, err := runTool(ctx, prog, nil, "--export", key)
	if err != nil {
		return nil, err
	}
	keyring, err := openpgp.ReadKeyRing(bytes.NewReader(pub))
	if err != nil || len(keyring) == 0 {
		return nil, usagef("gpg has no public key %q (gpg --list-secret-keys shows yours; set it with --key or git config user.signingkey)", key)
	}
	return &gpgSigner{prog: prog, key: key, keyring: keyring}, nil
}

func (s *gpgSigner) sign(ctx context.Context, msg []byte) ([]byte, error) {
	raw, err := runTool(ctx, s.prog, msg, "--local-user", s.key, "--detach-sign")
	if err != nil {
		return nil, err
	}
	// What gpg made must be what the watcher will check: a signature over
	// the id by this key (a gpg wrapper could have signed something else).
	if _, err := pgpSignedBy(s.keyring, raw, msg); err != nil {
		return nil, fmt.Errorf("gpg made a signature that does not verify with the public key of %q: %w", s.key, err)
	}
	return raw, nil
}

func (s *gpgSigner) made(sig noteSig, msg []byte) bool {
	if sig.kind != kindOpenPGP {
		return false
	}
	_, err := pgpSignedBy(s.keyring, sig.raw, msg)
	return err == nil
}

func (s *gpgSigner) String() string {
	fps := make([]string, 0, len(s.keyring))
	for _, e := range s.keyring {
		fps = append(fps, pgpFingerprint(e))
	}
	return "OpenPGP key " + strings.Join(fps, ", ")
}

// sshSigner signs with ssh-keygen -Y sign -n git, as git does for
// gpg.format=ssh.
type sshSigner struct {
	prog    string
	keyFile string
	pub     ssh.PublicKey // nil until known
	cleanup func()
}

func newSSHSigner(ctx context.Context, g *gitCmd, key string) (*sshSigner, error) {
	prog, err := program(ctx, g, []string{"gpg.ssh.program"}, "ssh-keygen")
	if err != nil {
		return nil, err
	}
	s := &sshSigner{prog: prog, cleanup: func() {}}
	literal, isLiteral := strings.CutPrefix(key, "key::")
	if !isLiteral && strings.HasPrefix(key, "ssh-") {
		literal, isLiteral = key, true // git's older literal form
	}
	switch {
	case key == "":
		return nil, usagef("no SSH signing key: set git config user.signingkey to your key file (or key::ssh-ed25519 AAAA...) or give --key")
	case isLiteral:
		pub, _, _, _, err := ssh.ParseAuthorizedKey([]byte(literal))
		if err != nil {
			return nil, usagef("the SSH signing key %q is not a public key: %v", key, err)
		}
		// ssh-keygen wants a file; the private half is in ssh-agent.
		f, err := os.CreateTemp("", "flant_gitops-sign-*.pub")
		if err != nil {
			return nil, err
		}
		s.cleanup = func() { _ = os.Remove(f.Name()) }
		_, werr := f.WriteString(literal + "\n")
		if cerr := f.Close(); werr == nil {
			werr = cerr
		}
		if werr != nil {
			s.cleanup()
			return nil, werr
		}
		s.keyFile, s.pub = f.Name(), pub
	default:
		if rest, ok := strings.CutPrefix(key, "~/"); ok {
			home, err := os.UserHomeDir()
			if err != nil {
				return nil, err
			}
			key = filepath.Join(home, rest)
		}
		if _, err := os.Stat(key); err != nil {
			return nil, usagef("SSH signing key file: %v", err)
		}
		s.keyFile = key
		for _, p := range []string{key, key + ".pub"} {
			if data, err := os.ReadFile(p); err == nil {
				if pub, _, _, _, err := ssh.ParseAuthorizedKey(data); err == nil {
					s.pub = pub
					break
				}
			}
		}
	}
	return s, nil
}

func (s *sshSigner) sign(ctx context.Context, msg []byte) ([]byte, error) {
	armored, err := runTool(ctx, s.prog, msg, "-Y", "sign", "-n", sshNamespace, "-f", s.keyFile)
	if err != nil {
		return nil, err
	}
	raw, err := dearmorSSH(armored)
	if err != nil {
		return nil, err
	}
	sig, err := sshsig.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("ssh-keygen made something else than a signature: %w", err)
	}
	if s.pub != nil && !bytes.Equal(s.pub.Marshal(), sig.PublicKey.Marshal()) {
		return nil, fmt.Errorf("ssh-keygen signed with %s, not with the key of %s (%s)", sshsig.Fingerprint(sig.PublicKey), s.keyFile, sshsig.Fingerprint(s.pub))
	}
	// What the watcher will check: the id, namespace git, this key.
	if err := sshsig.Verify(sig, msg, sshNamespace, sig.PublicKey); err != nil {
		return nil, fmt.Errorf("ssh-keygen made a signature the watcher would not count: %w", err)
	}
	s.pub = sig.PublicKey
	return raw, nil
}

func (s *sshSigner) made(sig noteSig, msg []byte) bool {
	if sig.kind != kindSSH || s.pub == nil {
		return false
	}
	return sshsig.Verify(sig.ssh, msg, sshNamespace, s.pub) == nil
}

func (s *sshSigner) String() string {
	if s.pub == nil {
		return "SSH key " + s.keyFile
	}
	return "SSH key " + sshsig.Fingerprint(s.pub)
}
