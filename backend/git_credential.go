package backend

import (
	"bytes"
	"errors"
	"strings"

	"golang.org/x/crypto/ssh"

	"github.com/flant/flant_gitops/gitwatch"
)

// gitCredential is a credential for a git remote, as both
// configure/git_credential (the watched repository) and
// configure/repository/NAME (a patch target) take and store it: username
// and password (or access token) for HTTP(S), or an unencrypted SSH private
// key with the known_hosts lines that pin the server.
type gitCredential struct {
	Username      string `json:"username,omitempty"`
	Password      string `json:"password,omitempty"`
	SSHPrivateKey string `json:"ssh_private_key,omitempty"`
	KnownHosts    string `json:"known_hosts,omitempty"`
}

func (c gitCredential) auth() gitwatch.Auth {
	return gitwatch.Auth{
		Username:      c.Username,
		Password:      c.Password,
		SSHPrivateKey: []byte(c.SSHPrivateKey),
		SSHKnownHosts: []byte(c.KnownHosts),
	}
}

// errNoCredential: all four fields are empty; each path says what to do
// instead.
var errNoCredential = errors.New("no credential given")

// newGitCredential is the one set of credential-pair rules. From the four
// fields as written it returns the credential as stored (user name, key
// and known_hosts trimmed; key and known_hosts ending in a newline), or
// says what is wrong: one kind only; a user name with the password and a
// password with the user name; known_hosts with the SSH key and the key
// with known_hosts; a key that parses and has no passphrase; known_hosts
// with at least one host key line. All four empty is errNoCredential.
func newGitCredential(username, password, sshKey, knownHosts string) (gitCredential, error) {
	c := gitCredential{
		Username:      strings.TrimSpace(username),
		Password:      password,
		SSHPrivateKey: strings.TrimSpace(sshKey),
		KnownHosts:    strings.TrimSpace(knownHosts),
	}
	basic := c.Username != "" || c.Password != ""
	viaSSH := c.SSHPrivateKey != "" || c.KnownHosts != ""
	switch {
	case basic && viaSSH:
		return gitCredential{}, invalidf("give either username and password (HTTPS) or ssh_private_key and known_hosts (SSH), not both")
	case !basic && !viaSSH:
		return gitCredential{}, errNoCredential
	case basic && c.Username == "":
		return gitCredential{}, invalidf("username is empty: HTTPS basic authentication needs a user name with the password (for a GitLab token use e.g. username=oauth2)")
	case basic && c.Password == "":
		return gitCredential{}, invalidf("password is empty: give the password or access token for username %q", c.Username)
	case viaSSH && c.SSHPrivateKey == "":
		return gitCredential{}, invalidf("ssh_private_key is empty: known_hosts alone cannot authenticate; give the private key too")
	case viaSSH && c.KnownHosts == "":
		return gitCredential{}, invalidf("known_hosts is empty: give the server's host key lines, e.g. known_hosts=\"$(ssh-keyscan gitlab.example.com)\", so the plugin can tell the real server from an impostor")
	}
	if viaSSH {
		if err := checkSSHPrivateKey(c.SSHPrivateKey); err != nil {
			return gitCredential{}, err
		}
		c.SSHPrivateKey += "\n"
		if err := checkKnownHosts(c.KnownHosts); err != nil {
			return gitCredential{}, err
		}
		c.KnownHosts += "\n"
	}
	return c, nil
}

func checkSSHPrivateKey(key string) error {
	_, err := ssh.ParseRawPrivateKey([]byte(key))
	var missing *ssh.PassphraseMissingError
	switch {
	case errors.As(err, &missing):
		return invalidf("ssh_private_key is protected by a passphrase: the plugin cannot type it; give an unencrypted deploy key (ssh-keygen -p -N '' -f KEY)")
	case err != nil:
		// The parser's message never includes key material.
		return invalidf("ssh_private_key cannot be parsed (%v): give the private key file's whole content, e.g. ssh_private_key=@id_ed25519", err)
	}
	return nil
}

func checkKnownHosts(text string) error {
	rest := []byte(text)
	entries := 0
	for len(bytes.TrimSpace(rest)) > 0 {
		_, _, _, _, next, err := ssh.ParseKnownHosts(rest)
		if err != nil {
			return invalidf("known_hosts cannot be parsed (%v): give lines as ssh-keyscan prints them, e.g. \"gitlab.example.com ssh-ed25519 AAAA...\"", err)
		}
		entries++
		rest = next
	}
	if entries == 0 {
		return invalidf("known_hosts holds no host key line: give lines as ssh-keyscan prints them")
	}
	return nil
}
