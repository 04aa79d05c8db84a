package gitwatch

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/go-git/go-git/v5/plumbing/transport"
	githttp "github.com/go-git/go-git/v5/plumbing/transport/http"
	gitssh "github.com/go-git/go-git/v5/plumbing/transport/ssh"
	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

// Auth holds the credentials for the remote. The zero value is anonymous
// access. It is never logged or returned by the package.
type Auth struct {
	// Username and Password for HTTP(S) basic auth (a token as password
	// works with GitLab and GitHub). For SSH, Username overrides the user in
	// the URL (default "git").
	Username, Password string
	// SSHPrivateKey is a PEM or OpenSSH private key (unencrypted).
	SSHPrivateKey []byte
	// SSHKnownHosts is known_hosts content; required with SSH: the server's
	// host key must match it.
	SSHKnownHosts []byte
}

// String hides the secrets if an Auth ends up in a format string.
func (a Auth) String() string {
	kind := "anonymous"
	switch {
	case len(a.SSHPrivateKey) > 0:
		kind = "ssh key"
	case a.Password != "":
		kind = "basic"
	}
	return fmt.Sprintf("gitwatch.Auth{%s, user %q}", kind, a.Username)
}

// GoString keeps %#v from printing the secrets.
func (a Auth) GoString() string { return a.String() }

// TransportAuth builds the go-git auth method for url (nil for anonymous
// access), with the same checks the mirror applies: SSH needs a key and a
// known_hosts that pins the server. Code that pushes with go-git uses it.
func (a Auth) TransportAuth(url string) (transport.AuthMethod, error) {
	ep, err := transport.NewEndpoint(url)
	if err != nil {
		return nil, fmt.Errorf("git URL %q is not valid: %w", url, err)
	}
	switch ep.Protocol {
	case "http", "https":
		if len(a.SSHPrivateKey) > 0 {
			return nil, fmt.Errorf("an SSH private key is configured but the git URL uses %s; use an ssh:// or user@host:path URL", ep.Protocol)
		}
		if a.Username == "" && a.Password == "" {
			return nil, nil
		}
		return &githttp.BasicAuth{Username: a.Username, Password: a.Password}, nil
	case "ssh":
		if len(a.SSHPrivateKey) == 0 {
			return nil, errors.New("the git URL uses SSH but no SSH private key is configured")
		}
		user := a.Username
		if user == "" {
			user = ep.User
		}
		if user == "" {
			user = "git"
		}
		signer, err := ssh.ParsePrivateKey(a.SSHPrivateKey)
		if err != nil {
			return nil, fmt.Errorf("SSH private key cannot be parsed (passphrase-protected keys are not supported): %w", err)
		}
		callback, algos, err := hostKeyCheck(a.SSHKnownHosts)
		if err != nil {
			return nil, err
		}
		auth := &gitssh.PublicKeys{User: user, Signer: signer}
		auth.HostKeyCallback = callback
		auth.HostKeyAlgorithms = algos
		return auth, nil
	case "file":
		return nil, nil
	default:
		return nil, fmt.Errorf("git URL scheme %q is not supported; use https, http or ssh", ep.Protocol)
	}
}

// hostKeyCheck makes a host key callback from known_hosts content, and the
// host key algorithms it can check, so that the server is asked for a key
// type we can verify.
func hostKeyCheck(knownHosts []byte) (ssh.HostKeyCallback, []string, error) {
	if len(bytes.TrimSpace(knownHosts)) == 0 {
		return nil, nil, errors.New("SSH known_hosts is required with SSH auth (get it with `ssh-keyscan HOST`); host keys are never accepted blindly")
	}
	algos, err := knownHostAlgorithms(knownHosts)
	if err != nil {
		return nil, nil, err
	}
	// knownhosts only reads files; it reads them fully in New, so the file
	// can go right after.
	f, err := os.CreateTemp("", "gitwatch-known-hosts-*")
	if err != nil {
		return nil, nil, fmt.Errorf("write known_hosts for the SSH client: %w", err)
	}
	defer os.Remove(f.Name())
	if _, err := f.Write(knownHosts); err != nil {
		f.Close()
		return nil, nil, fmt.Errorf("write known_hosts for the SSH client: %w", err)
	}
	if err := f.Close(); err != nil {
		return nil, nil, fmt.Errorf("write known_hosts for the SSH client: %w", err)
	}
	cb, err := knownhosts.New(f.Name())
	if err != nil {
		return nil, nil, fmt.Errorf("SSH known_hosts is not valid: %w", err)
	}
	return cb, algos, nil
}

// knownHostAlgorithms lists the host key algorithms of the known_hosts keys.
func knownHostAlgorithms(knownHosts []byte) ([]string, error) {
	seen := make(map[string]bool)
	var algos []string
	add := func(a ...string) {
		for _, s := range a {
			if !seen[s] {
				seen[s] = true
				algos = append(algos, s)
			}
		}
	}
	rest := knownHosts
	for len(bytes.TrimSpace(rest)) > 0 {
		_, _, key, _, next, err := ssh.ParseKnownHosts(rest)
		if errors.Is(err, io.EOF) {
			break // only comments left
		}
		if err != nil {
			return nil, fmt.Errorf("SSH known_hosts is not valid: %w", err)
		}
		rest = next
		switch t := key.Type(); t {
		case ssh.KeyAlgoRSA:
			add(ssh.KeyAlgoRSASHA512, ssh.KeyAlgoRSASHA256, ssh.KeyAlgoRSA)
		default:
			add(t)
		}
	}
	if len(algos) == 0 {
		return nil, errors.New("SSH known_hosts holds no host keys")
	}
	return algos, nil
}

// redactURL drops credentials embedded in a URL before it goes in an error.
func redactURL(url string) string {
	scheme, rest, ok := strings.Cut(url, "://")
	if !ok {
		return url
	}
	if at := strings.LastIndex(rest, "@"); at >= 0 {
		if slash := strings.Index(rest, "/"); slash < 0 || at < slash {
			rest = "***@" + rest[at+1:]
		}
	}
	return scheme + "://" + rest
}
