package forgetest

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

// NewGitLab starts a fake GitLab holding the project at path (group/project),
// accepting token. APIURL is its root (the client adds /api/v4).
func NewGitLab(t testing.TB, token, project string) *Server {
	return newServer(t, "gitlab", token, project, (*Server).gitlab)
}

var gitlabStates = map[string]bool{"pending": true, "running": true, "success": true, "failed": true, "canceled": true, "skipped": true}

// gitlabEvent is the state machine's event that leads to a state, as
// GitLab names it in its 400 answer.
var gitlabEvent = map[string]string{"pending": "enqueue", "running": "run", "success": "success", "failed": "drop", "canceled": "cancel", "skipped": "skip"}

func gitlabFinished(state string) bool {
	return state == "success" || state == "failed" || state == "canceled" || state == "skipped"
}

func (s *Server) gitlab(w http.ResponseWriter, r *http.Request, body []byte) {
	const prefix = "/api/v4/projects/"
	raw := r.URL.EscapedPath()
	if !strings.HasPrefix(raw, prefix) {
		s.violate("%s %s: not under /api/v4/projects/", r.Method, raw)
		writeJSON(w, http.StatusNotFound, map[string]any{"error": "404 Not Found"})
		return
	}
	parts := strings.Split(strings.TrimPrefix(raw, prefix), "/")
	if len(parts) != 3 || parts[1] != "statuses" {
		s.violate("%s %s: not POST /api/v4/projects/:id/statuses/:sha with :id the URL-encoded project path", r.Method, raw)
		writeJSON(w, http.StatusNotFound, map[string]any{"error": "404 Not Found"})
		return
	}
	if r.Method != http.MethodPost {
		s.violate("%s %s: the endpoint takes POST", r.Method, raw)
		writeJSON(w, http.StatusMethodNotAllowed, map[string]any{"error": "405 Not Allowed"})
		return
	}
	tok := r.Header.Get("Private-Token")
	if a := r.Header.Get("Authorization"); tok == "" && strings.HasPrefix(a, "Bearer ") {
		tok = strings.TrimPrefix(a, "Bearer ")
	}
	if tok == "" {
		s.violate("no PRIVATE-TOKEN (or Authorization: Bearer) header")
	}
	if tok != s.token {
		writeJSON(w, http.StatusUnauthorized, map[string]any{"message": "401 Unauthorized"})
		return
	}
	project, err := url.PathUnescape(parts[0])
	if err != nil || strings.Contains(parts[0], "/") {
		s.violate("project id %q is not URL-encoded", parts[0])
	}
	if project != s.repo {
		writeJSON(w, http.StatusNotFound, map[string]any{"message": "404 Project Not Found"})
		return
	}
	m, bad := s.jsonBody(r, body, map[string]string{"state": "string", "ref": "string", "name": "string", "context": "string",
		"target_url": "string", "description": "string", "coverage": "number", "pipeline_id": "number"})
	if bad != "" {
		s.violate("%s", bad)
		writeJSON(w, http.StatusBadRequest, map[string]any{"error": bad})
		return
	}
	sha := parts[2]
	state := str(m, "state")
	switch {
	case !gitlabStates[state]:
		s.violate("state %q is not one of pending, running, success, failed, canceled, skipped", state)
		writeJSON(w, http.StatusBadRequest, map[string]any{"error": "state does not have a valid value"})
		return
	case !sha1Hex.MatchString(sha):
		s.violate("sha %q is not a commit id", sha)
		writeJSON(w, http.StatusNotFound, map[string]any{"message": "404 Commit Not Found"})
		return
	}
	name := str(m, "name")
	if name == "" {
		name = str(m, "context")
	}
	if name == "" {
		name = "default"
	}
	for field, v := range map[string]string{"name": name, "description": str(m, "description"), "target_url": str(m, "target_url")} {
		if tooLong(v, 255) {
			s.violate("%s is longer than 255 characters", field)
			writeJSON(w, http.StatusBadRequest, map[string]any{"message": map[string]any{field: []string{"is too long (maximum is 255 characters)"}}})
			return
		}
	}
	key := sha + "\x00" + name
	s.mu.Lock()
	cur := s.states[key]
	if cur != "" && (cur == state || !gitlabFinished(cur) && state == "pending" && cur == "running") {
		s.mu.Unlock()
		writeJSON(w, http.StatusBadRequest, map[string]any{"message": "Cannot transition status via :" + gitlabEvent[state] + " from :" + cur +
			" (Reason(s): Status cannot transition via \"" + gitlabEvent[state] + "\")"})
		return
	}
	// A finished status and a new state: GitLab makes a new one.
	s.states[key] = state
	s.mu.Unlock()
	if tooLong(str(m, "ref"), 255) {
		s.violate("ref is longer than 255 characters")
	}
	st := Status{Repository: project, SHA: sha, State: state, Context: name, Description: str(m, "description"), TargetURL: str(m, "target_url"), Ref: str(m, "ref"), Auth: authForm(r.Header, s.token)}
	id := s.accept(st)
	now := time.Now().UTC().Format(time.RFC3339)
	writeJSON(w, http.StatusCreated, map[string]any{
		"id": id, "sha": sha, "ref": nullable(st.Ref), "status": state, "name": name,
		"target_url": nullable(st.TargetURL), "description": nullable(st.Description),
		"created_at": now, "started_at": nil, "finished_at": nil, "allow_failure": false, "coverage": nil, "pipeline_id": 1,
		"author": map[string]any{"id": 1, "username": "flant-gitops-bot", "name": "bot", "state": "active"},
	})
}
