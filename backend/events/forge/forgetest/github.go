package forgetest

import (
	"net/http"
	"strings"
	"testing"
	"time"
)

// NewGitHub starts a fake github.com API (APIURL is its root) holding the
// repository owner/repo, accepting token.
func NewGitHub(t testing.TB, token, repo string) *Server {
	return newServer(t, "github", token, repo, (*Server).github)
}

// NewGitHubEnterprise starts a fake GitHub Enterprise Server: the API is
// under /api/v3.
func NewGitHubEnterprise(t testing.TB, token, repo string) *Server {
	s := NewGitHub(t, token, repo)
	s.prefix = "/api/v3"
	return s
}

// APIURL is what configure/commit_status takes as api_url.
func (s *Server) APIURL() string { return s.URL + s.prefix }

var githubStates = map[string]bool{"pending": true, "success": true, "error": true, "failure": true}

func (s *Server) github(w http.ResponseWriter, r *http.Request, body []byte) {
	notFound := func() {
		writeJSON(w, http.StatusNotFound, map[string]any{"message": "Not Found", "documentation_url": "https://docs.github.com/rest/commits/statuses#create-a-commit-status", "status": "404"})
	}
	path := strings.TrimPrefix(r.URL.Path, s.prefix)
	parts := strings.Split(strings.TrimPrefix(path, "/"), "/")
	if !strings.HasPrefix(r.URL.Path, s.prefix+"/") || len(parts) != 5 || parts[0] != "repos" || parts[3] != "statuses" {
		s.violate("%s %s: not POST /repos/{owner}/{repo}/statuses/{sha} under %q", r.Method, r.URL.Path, s.prefix)
		notFound()
		return
	}
	if r.Method != http.MethodPost {
		s.violate("%s %s: the endpoint takes POST", r.Method, r.URL.Path)
		writeJSON(w, http.StatusNotFound, map[string]any{"message": "Not Found"})
		return
	}
	if a := r.Header.Get("Accept"); a != "application/vnd.github+json" {
		s.violate("Accept is %q, GitHub documents application/vnd.github+json", a)
	}
	if v := r.Header.Get("X-GitHub-Api-Version"); v != "2022-11-28" {
		s.violate("X-GitHub-Api-Version is %q, want 2022-11-28", v)
		writeJSON(w, http.StatusBadRequest, map[string]any{"message": "Unsupported 'X-GitHub-Api-Version' header value"})
		return
	}
	auth := r.Header.Get("Authorization")
	if auth != "Bearer "+s.token && auth != "token "+s.token {
		if !strings.HasPrefix(auth, "Bearer ") && !strings.HasPrefix(auth, "token ") {
			s.violate("Authorization header %q is neither Bearer nor token", authForm(r.Header, s.token))
		}
		writeJSON(w, http.StatusUnauthorized, map[string]any{"message": "Bad credentials", "documentation_url": "https://docs.github.com/rest", "status": "401"})
		return
	}
	if parts[1]+"/"+parts[2] != s.repo {
		notFound()
		return
	}
	m, bad := s.jsonBody(r, body, map[string]string{"state": "string", "target_url": "string|null", "description": "string|null", "context": "string"})
	if bad != "" {
		s.violate("%s", bad)
		writeJSON(w, http.StatusBadRequest, map[string]any{"message": "Problems parsing JSON"})
		return
	}
	sha := parts[4]
	var errs []map[string]any
	state := str(m, "state")
	if !githubStates[state] {
		errs = append(errs, map[string]any{"resource": "Status", "field": "state", "code": "custom", "message": "state is not included in the list"})
	}
	if tooLong(str(m, "description"), 140) {
		errs = append(errs, map[string]any{"resource": "Status", "field": "description", "code": "custom", "message": "description is too long (maximum is 140 characters)"})
	}
	if tooLong(str(m, "context"), 255) {
		errs = append(errs, map[string]any{"resource": "Status", "field": "context", "code": "custom", "message": "context is too long (maximum is 255 characters)"})
	}
	if !sha1Hex.MatchString(sha) {
		errs = append(errs, map[string]any{"resource": "Status", "field": "sha", "code": "custom", "message": "No commit found for SHA: " + sha})
	}
	if len(errs) > 0 {
		s.violate("validation failed: %v", errs)
		writeJSON(w, http.StatusUnprocessableEntity, map[string]any{"message": "Validation Failed", "errors": errs, "documentation_url": "https://docs.github.com/rest/commits/statuses#create-a-commit-status", "status": "422"})
		return
	}
	ctx := str(m, "context")
	if ctx == "" {
		ctx = "default"
	}
	st := Status{Repository: s.repo, SHA: sha, State: state, Context: ctx, Description: str(m, "description"), TargetURL: str(m, "target_url"), Auth: authForm(r.Header, s.token)}
	id := s.accept(st)
	now := time.Now().UTC().Format(time.RFC3339)
	writeJSON(w, http.StatusCreated, map[string]any{
		"url":         s.URL + s.prefix + "/repos/" + s.repo + "/statuses/" + sha,
		"avatar_url":  "https://github.com/images/error/hubot_happy.gif",
		"id":          id,
		"node_id":     "MDY6U3RhdHVzMQ==",
		"state":       state,
		"description": nullable(st.Description),
		"target_url":  nullable(st.TargetURL),
		"context":     ctx,
		"created_at":  now,
		"updated_at":  now,
		"creator":     map[string]any{"login": "octocat", "id": 1, "type": "User"},
	})
}

func nullable(s string) any {
	if s == "" {
		return nil
	}
	return s
}
