package backend

import (
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math"
	"net/mail"
	"net/url"
	"regexp"
	"strconv"
	"strings"

	"github.com/distribution/reference"
	"github.com/docker/go-units"

	"github.com/flant/flant_gitops/container"
)

var (
	commitRe = regexp.MustCompile(`^[0-9a-f]{40}$`)
	// scpLikeRe is git's scp-like SSH syntax: user@host:path.
	scpLikeRe = regexp.MustCompile(`^[A-Za-z0-9._-]+@[A-Za-z0-9.-]+:[^/\\]`)
	// nameRe is the NAME of keyed paths (trusted keys, vault requests).
	nameRe = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]*$`)
)

const (
	maxNameLen = 128
	// minMemoryLimit is Docker's own lower bound for --memory.
	minMemoryLimit = 6 * 1024 * 1024
	maxCPULimit    = 1024
)

// gitFields names the fields a repository is given in, so that one set of
// validators speaks of the path the operator wrote.
type gitFields struct {
	url, branch string
	// credential says where the credential goes instead of into the URL.
	credential string
}

var (
	watchGitFields = gitFields{url: "git_repo_url", branch: "git_branch_name", credential: "flant_gitops/configure/git_credential"}
	patchGitFields = gitFields{url: "url", branch: "branch", credential: "this path's username and password"}
)

// validateGitRepoURL accepts https, http and ssh URLs (and git's scp-like
// user@host:path form, which is ssh) and refuses credentials inside the URL.
func validateGitRepoURL(f gitFields, raw string) (string, error) {
	s := strings.TrimSpace(raw)
	if s == "" {
		return "", invalidf("%s is empty: give the repository to watch, e.g. https://gitlab.example.com/group/project.git or ssh://git@gitlab.example.com/group/project.git", f.url)
	}
	if scpLikeRe.MatchString(s) && !strings.Contains(s, "://") {
		return s, nil
	}
	u, err := url.Parse(s)
	if err != nil {
		return "", invalidf("%s %q is not a URL (%v): use https://host/path.git, http://host/path.git or ssh://user@host/path.git", f.url, s, err)
	}
	switch u.Scheme {
	case "https", "http", "ssh":
	default:
		return "", invalidf("%s %q has scheme %q: use https://, http:// or ssh:// (file:// and git:// are not accepted)", f.url, s, u.Scheme)
	}
	if u.Host == "" {
		return "", invalidf("%s %q has no host: use e.g. https://gitlab.example.com/group/project.git", f.url, s)
	}
	if _, hasPassword := u.User.Password(); hasPassword {
		return "", invalidf("%s must not contain a password: remove it from the URL and write it to %s instead", f.url, f.credential)
	}
	if u.Scheme != "ssh" && u.User != nil {
		return "", invalidf("%s must not contain a user name for %s: write username and password to %s instead", f.url, u.Scheme, f.credential)
	}
	return s, nil
}

// validateBranchName applies the rules of git check-ref-format that matter
// for a branch name given without the refs/heads/ prefix.
func validateBranchName(f gitFields, raw string) (string, error) {
	s := strings.TrimSpace(raw)
	fix := "give a branch name such as main or release/1.2, without refs/heads/"
	switch {
	case s == "":
		return "", invalidf("%s is empty: %s", f.branch, fix)
	case strings.HasPrefix(s, "refs/"):
		return "", invalidf("%s %q starts with refs/: %s", f.branch, s, fix)
	case strings.HasPrefix(s, "-"), strings.HasPrefix(s, "/"), strings.HasSuffix(s, "/"),
		strings.HasSuffix(s, "."), strings.HasSuffix(s, ".lock"),
		strings.Contains(s, ".."), strings.Contains(s, "//"), strings.Contains(s, "@{"),
		strings.ContainsAny(s, " ~^:?*[\\\t\n"), s == "@":
		return "", invalidf("%s %q is not a valid git branch name: %s", f.branch, s, fix)
	}
	for _, r := range s {
		if r < 0x20 || r == 0x7f {
			return "", invalidf("%s contains a control character: %s", f.branch, fix)
		}
	}
	return s, nil
}

// validateAuthor checks a commit author given in the named fields: git
// writes it as "name <email>" on one line.
func validateAuthor(nameField, emailField, name, email string) error {
	if name == "" || strings.ContainsAny(name, "<>\n\r\x00") {
		return invalidf("%s must be non-empty, on one line, without '<' or '>'", nameField)
	}
	if _, err := mail.ParseAddress("x <" + email + ">"); err != nil || strings.ContainsAny(email, "<>\n\r\x00 ") {
		return invalidf("%s %q is not an email address", emailField, email)
	}
	return nil
}

// validateDockerImage accepts an image pinned by digest (name@sha256:...)
// or a local image ID (sha256:...): a tag can be moved to other content, so
// it is not enough to say which code runs. The rule is the runner's
// (container.CheckPinned); the reference is parsed here to say what is wrong.
func validateDockerImage(raw string) (string, error) {
	s := strings.TrimSpace(raw)
	fix := "pin it by digest as name@sha256:<64 hex> (see `docker images --digests`) or give the image ID sha256:<64 hex> (see `docker images --no-trunc -q NAME`)"
	if s == "" {
		return "", invalidf("docker_image is empty: %s", fix)
	}
	pinned := container.CheckPinned(s)
	if pinned == nil && !strings.Contains(s, "@") { // an image ID
		return s, nil
	}
	ref, err := reference.ParseNormalizedNamed(s)
	if err != nil {
		return "", invalidf("docker_image %q is not an image reference (%v): %s", s, err, fix)
	}
	digested, ok := ref.(reference.Digested)
	if !ok {
		return "", invalidf("docker_image %q is not pinned: %s", s, fix)
	}
	if d := digested.Digest(); d.Algorithm() != "sha256" || len(d.Encoded()) != 64 {
		return "", invalidf("docker_image %q uses digest %q: %s", s, d.String(), fix)
	}
	if pinned != nil {
		return "", invalidf("docker_image %q is not accepted by the runner (%v): %s", s, pinned, fix)
	}
	return s, nil
}

func validateCommit(raw string) (string, error) {
	s := strings.ToLower(strings.TrimSpace(raw))
	if s != "" && !commitRe.MatchString(s) {
		return "", invalidf("initial_last_successful_commit %q is not a full commit SHA: give the 40 hex characters of `git rev-parse COMMIT`, or an empty string to start from the current branch head", raw)
	}
	return s, nil
}

func validateCommands(cmds []string) ([]string, error) {
	out := make([]string, 0, len(cmds))
	for _, c := range cmds {
		if strings.TrimSpace(c) != "" {
			out = append(out, c)
		}
	}
	if len(out) == 0 {
		return nil, invalidf("commands is empty: give at least one shell command to run in the container, e.g. commands=\"sh /git/deploy.sh\" (repeat commands= for more)")
	}
	return out, nil
}

// parseMemoryLimit reads Docker's memory syntax ("512m", "1g"). An empty
// string or "0" means no limit.
func parseMemoryLimit(raw string) (string, int64, error) {
	s := strings.TrimSpace(raw)
	if s == "" || s == "0" {
		return "", 0, nil
	}
	n, err := units.RAMInBytes(s)
	if err != nil {
		return "", 0, invalidf("memory_limit %q is not a size: use a number with a unit such as 512m or 2g (b, k, m, g), or 0 for no limit", s)
	}
	if n < minMemoryLimit {
		return "", 0, invalidf("memory_limit %q is below Docker's minimum of 6m: raise it, or use 0 for no limit", s)
	}
	return s, n, nil
}

// parseCPULimit reads a number of CPUs ("1.5"). An empty string or "0"
// means no limit.
func parseCPULimit(raw string) (string, int64, error) {
	s := strings.TrimSpace(raw)
	if s == "" {
		return "", 0, nil
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
		return "", 0, invalidf("cpu_limit %q is not a number: give CPUs as a decimal such as 0.5 or 2, or 0 for no limit", s)
	}
	if f == 0 {
		return "", 0, nil
	}
	if f < 0.01 || f > maxCPULimit {
		return "", 0, invalidf("cpu_limit %q is out of range: give between 0.01 and %d CPUs, or 0 for no limit", s, maxCPULimit)
	}
	return strconv.FormatFloat(f, 'f', -1, 64), int64(math.Round(f * 1e9)), nil
}

func validateNetworkMode(raw string) (string, error) {
	s := strings.TrimSpace(raw)
	switch {
	case s == "":
		return "", invalidf("network_mode is empty: use bridge (the default), host, none or the name of a Docker network")
	case strings.HasPrefix(s, "container:"):
		return "", invalidf("network_mode %q would share another container's network: use bridge, host, none or the name of a Docker network", s)
	case container.CheckNetworkMode(s) != nil:
		return "", invalidf("network_mode %q is not a Docker network name: use bridge, host, none or a name made of letters, digits, '_', '.' and '-'", s)
	}
	return s, nil
}

// validateName checks NAME of keyed paths.
func validateName(kind, name string) error {
	if len(name) > maxNameLen || !nameRe.MatchString(name) {
		return invalidf("%s name %q is not valid: use up to %d letters, digits, '_', '.' or '-', starting with a letter or digit", kind, name, maxNameLen)
	}
	return nil
}

// validateVaultAddr accepts an http(s) URL with a host and nothing else.
func validateVaultAddr(raw string) (string, error) {
	s := strings.TrimRight(strings.TrimSpace(raw), "/")
	fix := "give the target Vault's address as https://vault.example.com:8200"
	u, err := url.Parse(s)
	if s == "" || err != nil {
		return "", invalidf("vault_addr %q is not a URL: %s", raw, fix)
	}
	if u.Scheme != "https" && u.Scheme != "http" {
		return "", invalidf("vault_addr %q must use https:// (or http:// for a local dev server): %s", s, fix)
	}
	if u.Host == "" || u.User != nil || (u.Path != "" && u.Path != "/") || u.RawQuery != "" {
		return "", invalidf("vault_addr %q must be scheme://host[:port] only, without user, path or query: %s", s, fix)
	}
	return s, nil
}

// validateCACert accepts one or more PEM certificates.
func validateCACert(raw string) (string, error) {
	s := strings.TrimSpace(raw)
	if s == "" {
		return "", nil
	}
	rest := []byte(s)
	count := 0
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			return "", invalidf("vault_cacert holds a PEM %q block: give only CA certificates (PEM \"CERTIFICATE\" blocks), never a private key", block.Type)
		}
		if _, err := x509.ParseCertificate(block.Bytes); err != nil {
			return "", invalidf("vault_cacert certificate %d cannot be parsed (%v): give the CA certificate in PEM form, e.g. vault_cacert=@ca.pem", count+1, err)
		}
		count++
	}
	if count == 0 || strings.TrimSpace(string(rest)) != "" {
		return "", invalidf("vault_cacert is not PEM: give the CA certificate(s) in PEM form, e.g. vault_cacert=@ca.pem")
	}
	return s + "\n", nil
}

// checkStringList refuses what a TypeStringSlice field would otherwise
// coerce silently: only a string (the CLI's key=value) or a list of strings
// is a list of strings.
func checkStringList(field string, raw any) error {
	switch v := raw.(type) {
	case string, []string:
		return nil
	case []any:
		for i, item := range v {
			if _, ok := item.(string); !ok {
				return invalidf("%s[%d] must be a string, got %s: give %s as a list of strings", field, i, jsonKindOf(item), field)
			}
		}
		return nil
	}
	return invalidf("%s must be a list of strings, got %s: give e.g. [\"sh /git/deploy.sh\"], or repeat %s= on the CLI", field, jsonKindOf(raw), field)
}

// jsonKindOf names the JSON type of a value Vault decoded from a request.
func jsonKindOf(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case bool:
		return "true or false"
	case string:
		return "a string"
	case map[string]any:
		return "an object"
	case []any:
		return "an array"
	case json.Number, float64, int, int64:
		return "a number"
	}
	return fmt.Sprintf("a %T", v)
}
