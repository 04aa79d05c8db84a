package backend

import (
	"regexp"
	"strings"
	"testing"
)

var envVarRe = regexp.MustCompile(`^VAULT_REQUEST_TOKEN_[A-Z0-9_]+$`)

// FuzzConfigureValidators feeds arbitrary text to the field validators: none
// may panic, and whatever they accept must satisfy what the runner relies on.
func FuzzConfigureValidators(f *testing.F) {
	for _, s := range []string{
		"deploy-token", "alpine@" + testDigest, testDigest, "https://git.example.com/a.git",
		"git@host:a/b.git", "512m", "1.5", "bridge", "release/1.2", "a..b", "", " ", "\x00",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if env, err := vaultRequestEnvVar(s); err == nil && !envVarRe.MatchString(env) {
			t.Errorf("name %q accepted with env var %q", s, env)
		}
		if img, err := validateDockerImage(s); err == nil && !strings.Contains(img, "sha256:") {
			t.Errorf("docker_image %q accepted without a digest", s)
		}
		if u, err := validateGitRepoURL(watchGitFields, s); err == nil && !(strings.HasPrefix(u, "https://") || strings.HasPrefix(u, "http://") || strings.HasPrefix(u, "ssh://") || scpLikeRe.MatchString(u)) {
			t.Errorf("git_repo_url %q accepted with another scheme", s)
		}
		if _, n, err := parseMemoryLimit(s); err == nil && n != 0 && n < minMemoryLimit {
			t.Errorf("memory_limit %q accepted as %d bytes, below Docker's minimum", s, n)
		}
		if _, n, err := parseCPULimit(s); err == nil && n < 0 {
			t.Errorf("cpu_limit %q accepted as %d nano CPUs", s, n)
		}
		if b, err := validateBranchName(watchGitFields, s); err == nil && (b == "" || strings.ContainsAny(b, " ~^:?*[\\") || strings.Contains(b, "..")) {
			t.Errorf("git_branch_name %q accepted", s)
		}
		if m, err := validateNetworkMode(s); err == nil && (m == "" || strings.Contains(m, ":")) {
			t.Errorf("network_mode %q accepted", s)
		}
		_, _ = validateVaultRequestPath(s)
		_, _ = validateCACert(s)
		_, _ = validateCommit(s)
	})
}
