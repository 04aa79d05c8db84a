package patch

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/go-git/go-git/v5/plumbing/transport"
	githttp "github.com/go-git/go-git/v5/plumbing/transport/http"
	gitssh "github.com/go-git/go-git/v5/plumbing/transport/ssh"
	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"

	"github.com/flant/flant_gitops/gitwatch"
)

// pushAuth builds the go-git auth method for pushing to url with the same
// credentials the mirror fetches with. gitwatch keeps its own conversion
// unexported, so the push side has this one.
func pushAuth(ep *transport.Endpoint, a gitwatch.Auth) (transport.AuthMethod, error) {
	switch ep.Protocol {
	case "http", "https":
		if len(a.SSHPrivateKey) > 0 {
			return nil, fmt.Errorf("an SSH private key is configured but the repository URL uses %s; use an ssh:// or user@host:path URL", ep.Protocol)
		}
		if a.Username == "" && a.Password == "" {
			return nil, nil
		}
		return &githttp.BasicAuth{Username: a.Username, Password: a.Password}, nil
	case "ssh":
		if len(a.SSHPrivateKey) == 0 {
			return nil, errors.New("the repository URL uses SSH but no SSH private key is configured")
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
			return nil, fmt.Errorf("the SSH private key cannot be parsed (passphrase-protected keys are not supported): %w", err)
		}
		cb, algos, err := knownHostsCheck(a.SSHKnownHosts)
		if err != nil {
			return nil, err
		}
		auth := &gitssh.PublicKeys{User: user, Signer: signer}
		auth.HostKeyCallback = cb
		auth.HostKeyAlgorithms = algos
		return auth, nil
	default:
		return nil, fmt.Errorf("repository URL scheme %q is not supported; use https, http or ssh", ep.Protocol)
	}
}

// knownHostsCheck verifies the server's host key against known_hosts content;
// host keys are never accepted blindly. It also lists the host key algorithms
// known_hosts can vouch for, so the server offers a key that can be checked.
func knownHostsCheck(content []byte) (ssh.HostKeyCallback, []string, error) {
	if len(bytes.TrimSpace(content)) == 0 {
		return nil, nil, errors.New("known_hosts is required with SSH (get it with `ssh-keyscan HOST`)")
	}
	var algos []string
	seen := map[string]bool{}
	rest := content
	for len(bytes.TrimSpace(rest)) > 0 {
		_, _, key, _, next, err := ssh.ParseKnownHosts(rest)
		if errors.Is(err, io.EOF) {
			break // only comments left
		}
		if err != nil {
			return nil, nil, fmt.Errorf("known_hosts is not valid: %w", err)
		}
		rest = next
		names := []string{key.Type()}
		if key.Type() == ssh.KeyAlgoRSA {
			names = []string{ssh.KeyAlgoRSASHA512, ssh.KeyAlgoRSASHA256, ssh.KeyAlgoRSA}
		}
		for _, n := range names {
			if !seen[n] {
				seen[n] = true
				algos = append(algos, n)
			}
		}
	}
	if len(algos) == 0 {
		return nil, nil, errors.New("known_hosts holds no host keys")
	}
	// knownhosts reads only files, fully, in New (hashed host names included),
	// so the file can go right after.
	f, err := os.CreateTemp("", "flant-gitops-known-hosts-*")
	if err != nil {
		return nil, nil, fmt.Errorf("writing known_hosts for the SSH client: %w", err)
	}
	defer os.Remove(f.Name())
	if _, err := f.Write(content); err != nil {
		f.Close()
		return nil, nil, fmt.Errorf("writing known_hosts for the SSH client: %w", err)
	}
	if err := f.Close(); err != nil {
		return nil, nil, fmt.Errorf("writing known_hosts for the SSH client: %w", err)
	}
	cb, err := knownhosts.New(f.Name())
	if err != nil {
		return nil, nil, fmt.Errorf("known_hosts is not valid: %w", err)
	}
	return cb, algos, nil
}

// CheckAuth reports whether the credentials fit the repository URL (basic
// auth for HTTP(S), a parseable key with known_hosts for SSH), so that a
// misconfiguration is refused when written rather than at the first patch.
func CheckAuth(url string, a gitwatch.Auth) error {
	ep, err := transport.NewEndpoint(url)
	if err != nil {
		return fmt.Errorf("the repository URL is not valid: %w", err)
	}
	_, err = pushAuth(ep, a)
	return err
}
