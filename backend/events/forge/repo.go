package forge

import (
	"fmt"
	"net/url"
	"regexp"
	"strings"
)

// scpLike is git's user@host:path form of an SSH URL.
var scpLike = regexp.MustCompile(`^(?:[^@/]+@)?([^:/]+):(.+)$`)

// RepositoryFromURL derives the repository a status goes to from the
// watched repository's URL, https or ssh (ssh://git@host/o/r.git or
// git@host:o/r.git): owner/repo for GitHub and Gitea, the project's full
// path (groups and subgroups) for GitLab.
func RepositoryFromURL(p Provider, repoURL string) (string, error) {
	path := ""
	if m := scpLike.FindStringSubmatch(repoURL); m != nil && !strings.Contains(repoURL, "://") {
		path = m[2]
	} else {
		u, err := url.Parse(repoURL)
		if err != nil || u.Host == "" {
			return "", fmt.Errorf("cannot tell the repository from git_repo_url %q: set repository (owner/repo or the GitLab project path)", repoURL)
		}
		path = u.Path
	}
	path = strings.TrimSuffix(strings.Trim(path, "/"), ".git")
	path = strings.Trim(path, "/")
	if err := CheckRepository(p, path); err != nil {
		return "", fmt.Errorf("cannot tell the repository from git_repo_url %q (%v): set repository explicitly", repoURL, err)
	}
	return path, nil
}

// CheckRepository validates a repository as p names it.
func CheckRepository(p Provider, r string) error {
	parts := strings.Split(r, "/")
	for _, s := range parts {
		if s == "" || s == "." || s == ".." || strings.ContainsAny(s, " \t\n?#%\\") {
			return fmt.Errorf("repository %q is not a clean path of names", r)
		}
	}
	if p == GitLab {
		if len(parts) < 2 {
			return fmt.Errorf("repository %q: a GitLab project path is group/project (or group/subgroup/project)", r)
		}
		return nil
	}
	if len(parts) != 2 {
		return fmt.Errorf("repository %q: give owner/repo", r)
	}
	return nil
}
