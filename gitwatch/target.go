package gitwatch

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"path"
	"strings"
)

// The trailers that name, inside what the plugin's signature covers, the
// repository and branch a plugin commit was made for. The patch path writes
// them as part of the message's last paragraph; Accept reads them there.
const (
	TrailerRepository = "Flant-Gitops-Repository"
	TrailerBranch     = "Flant-Gitops-Branch"
)

// Target is a repository and branch: the one a plugin commit was made for,
// or the one a rule watches.
type Target struct {
	URL    string
	Branch string
}

// ErrNoTarget means a commit message names no target: a plugin commit made
// before the plugin signed its target, or no plugin commit at all.
var ErrNoTarget = errors.New("the commit names no target repository and branch")

// Canonical is t with its URL in canonical form (CanonicalRepoURL) and the
// branch without a refs/heads/ prefix.
func (t Target) Canonical() (Target, error) {
	u, err := CanonicalRepoURL(t.URL)
	if err != nil {
		return Target{}, err
	}
	b := strings.TrimPrefix(strings.TrimSpace(t.Branch), "refs/heads/")
	if b == "" {
		return Target{}, errors.New("the branch is empty")
	}
	return Target{URL: u, Branch: b}, nil
}

// String names the target for the operator.
func (t Target) String() string {
	return fmt.Sprintf("branch %q of %s", t.Branch, t.URL)
}

// defaultPorts are dropped from canonical URLs: https://host:443/a is
// https://host/a.
var defaultPorts = map[string]string{"https": "443", "http": "80", "ssh": "22", "git": "9418"}

// CanonicalRepoURL is the one form in which repository URLs are compared,
// written by the patch path into its commits and read by every check of a
// plugin signature.
//
//   - The scheme and host are lower-cased, a host's trailing dot and the
//     scheme's default port dropped, any user name and password dropped.
//   - The path is cleaned, and a trailing "/" and then ".git" dropped:
//     https://host/a.git, https://host/a and https://HOST/a/ are one
//     repository, https://host/b and https://host/a/b are others.
//   - git's scp-like syntax user@host:a/b.git is ssh://host/a/b, the same
//     as ssh://user@host/a/b.git: the forges (GitLab, GitHub, Gitea) serve
//     both from one place. ssh+git:// and git+ssh:// are ssh://.
//   - Transports stay apart: http, https and ssh URLs of one host are
//     different targets, as are different ports: configure the watch and
//     the patch path with the same transport for one repository.
//   - A query is kept (it may select the repository), a fragment dropped
//     (it never reaches the server). file:// URLs and local paths are
//     file:///absolute/path.
func CanonicalRepoURL(raw string) (string, error) {
	s := strings.TrimSpace(raw)
	if s == "" {
		return "", errors.New("the repository URL is empty")
	}
	u, err := parseRepoURL(s)
	if err != nil {
		return "", err
	}
	scheme := strings.ToLower(u.Scheme)
	switch scheme {
	case "git+ssh", "ssh+git":
		scheme = "ssh"
	}
	p := path.Clean("/" + u.Path)
	p = strings.TrimSuffix(p, "/")
	p = strings.TrimSuffix(p, ".git")
	if p == "" || p == "/" {
		return "", fmt.Errorf("repository URL %q names no repository path", redactURL(s))
	}
	out := url.URL{Scheme: scheme, Path: p, RawQuery: u.RawQuery}
	if scheme == "file" {
		if u.Host != "" && !strings.EqualFold(u.Host, "localhost") {
			return "", fmt.Errorf("repository URL %q names a file on another host", redactURL(s))
		}
		return "file://" + out.EscapedPath() + queryPart(u.RawQuery), nil
	}
	host := strings.TrimSuffix(strings.ToLower(u.Hostname()), ".")
	if host == "" {
		return "", fmt.Errorf("repository URL %q has no host", redactURL(s))
	}
	if port := u.Port(); port != "" && port != defaultPorts[scheme] {
		host = net.JoinHostPort(host, port)
	} else if strings.Contains(host, ":") {
		host = "[" + host + "]" // an IPv6 address
	}
	out.Host = host
	return out.String(), nil
}

func queryPart(q string) string {
	if q == "" {
		return ""
	}
	return "?" + q
}

// parseRepoURL reads the forms git accepts for a remote: a URL with a
// scheme, the scp-like [user@]host:path, or a local path.
func parseRepoURL(s string) (*url.URL, error) {
	if strings.Contains(s, "://") {
		u, err := url.Parse(s)
		if err != nil {
			// url.Error repeats the URL, credentials included: keep its cause.
			var ue *url.Error
			if errors.As(err, &ue) {
				err = ue.Err
			}
			return nil, fmt.Errorf("repository URL %q cannot be read: %w", redactURL(s), err)
		}
		return u, nil
	}
	// git's rule: a colon before the first slash (outside an [IPv6]
	// address) makes it scp-like, else it is a local path.
	rest := s
	if at := strings.Index(rest, "@"); at >= 0 && (strings.Index(rest, "/") < 0 || at < strings.Index(rest, "/")) {
		rest = rest[at+1:]
	}
	host, p, scp := "", "", false
	if strings.HasPrefix(rest, "[") {
		if end := strings.Index(rest, "]:"); end > 0 {
			host, p, scp = rest[:end+1], rest[end+2:], true
		}
	} else if colon, slash := strings.Index(rest, ":"), strings.Index(rest, "/"); colon >= 0 && (slash < 0 || colon < slash) {
		host, p, scp = rest[:colon], rest[colon+1:], true
	}
	if scp {
		if host == "" || host == "[]" {
			return nil, fmt.Errorf("repository URL %q has no host", redactURL(s))
		}
		return &url.URL{Scheme: "ssh", Host: host, Path: p}, nil
	}
	if !strings.HasPrefix(s, "/") {
		return nil, fmt.Errorf("repository URL %q is neither a URL, nor user@host:path, nor an absolute path", redactURL(s))
	}
	return &url.URL{Scheme: "file", Path: s}, nil
}

// TargetOf reads the target trailers from a commit message: they are lines
// of its last paragraph, which must hold nothing but "Key: value" trailers,
// each target key exactly once. A message without them answers
// ErrNoTarget. The URL and branch are answered as written.
func TargetOf(message string) (Target, error) {
	msg := strings.TrimRight(message, "\n")
	i := strings.LastIndex(msg, "\n\n")
	if i < 0 {
		return Target{}, ErrNoTarget
	}
	var t Target
	seen := map[string]int{}
	for _, line := range strings.Split(msg[i+2:], "\n") {
		key, value, ok := strings.Cut(line, ": ")
		if !ok || !isTrailerToken(key) {
			// Not a trailer paragraph: nothing the plugin wrote.
			return Target{}, ErrNoTarget
		}
		switch key {
		case TrailerRepository:
			t.URL = value
		case TrailerBranch:
			t.Branch = value
		default:
			continue
		}
		seen[key]++
	}
	switch {
	case seen[TrailerRepository] == 0 && seen[TrailerBranch] == 0:
		return Target{}, ErrNoTarget
	case seen[TrailerRepository] != 1 || seen[TrailerBranch] != 1:
		return Target{}, fmt.Errorf("the commit's last paragraph has %d %s and %d %s trailers, one of each is required",
			seen[TrailerRepository], TrailerRepository, seen[TrailerBranch], TrailerBranch)
	}
	return t, nil
}

// isTrailerToken is git's trailer key: letters, digits and '-'.
func isTrailerToken(s string) bool {
	if s == "" {
		return false
	}
	for _, r := range s {
		if !(r == '-' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z') {
			return false
		}
	}
	return true
}
