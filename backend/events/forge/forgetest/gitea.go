package forgetest

import (
	"net/http"
	"strings"
	"testing"
	"time"
)

// NewGitea starts a fake Gitea/Forgejo holding owner/repo, accepting
// token. APIURL is its root (the client adds /api/v1).
func NewGitea(t testing.TB, token, repo string) *Server {
	return newServer(t, "gitea", token, repo, (*Server).gitea)
}

var giteaStates = map[string]bool{"pending": true, "success": true, "error": true, "failure": true, "warning": true}

func (s *Server) gitea(w http.ResponseWriter, r *http.Request, body []byte) {
	parts := strings.Split(strings.TrimPrefix(r.URL.Path, "/"), "/")
	if len(parts) != 7 || parts[0] != "api" || parts[1] != "v1" || parts[2] != "repos" || parts[5] != "statuses" {
		s.violate("%s %s: not POST /api/v1/repos/{owner}/{repo}/statuses/{sha}", r.Method, r.URL.Path)
		writeJSON(w, http.StatusNotFound, map[string]any{"errors": nil, "message": "not found", "url": s.URL + "/api/swagger"})
		return
	}
	if r.Method != http.MethodPost {
		s.violate("%s %s: the endpoint takes POST", r.Method, r.URL.Path)
		w.WriteHeader(http.StatusMethodNotAllowed)
		return
	}
	auth := r.Header.Get("Authorization")
	if !strings.HasPrefix(auth, "token ") && !strings.HasPrefix(auth, "Bearer ") {
		s.violate("Authorization header %q is not \"token ...\"", authForm(r.Header, s.token))
	}
	if auth != "token "+s.token && auth != "Bearer "+s.token {
		writeJSON(w, http.StatusUnauthorized, map[string]any{"message": "user does not exist [uid: 0, name: ]", "url": s.URL + "/api/swagger"})
		return
	}
	if parts[3]+"/"+parts[4] != s.repo {
		writeJSON(w, http.StatusNotFound, map[string]any{"errors": []string{"repository does not exist"}, "message": "The target couldn't be found.", "url": s.URL + "/api/swagger"})
		return
	}
	m, bad := s.jsonBody(r, body, map[string]string{"state": "string", "target_url": "string", "description": "string", "context": "string"})
	if bad != "" {
		s.violate("%s", bad)
		writeJSON(w, http.StatusUnprocessableEntity, map[string]any{"message": bad, "url": s.URL + "/api/swagger"})
		return
	}
	sha := parts[6]
	state := str(m, "state")
	if !giteaStates[state] {
		s.violate("state %q is not one of pending, success, error, failure, warning", state)
		writeJSON(w, http.StatusUnprocessableEntity, map[string]any{"message": "[State]: invalid state", "url": s.URL + "/api/swagger"})
		return
	}
	if !sha1Hex.MatchString(sha) {
		s.violate("sha %q is not a commit id", sha)
	}
	if tooLong(str(m, "description"), 255) || tooLong(str(m, "context"), 255) {
		s.violate("description or context longer than 255 characters")
	}
	st := Status{Repository: s.repo, SHA: sha, State: state, Context: str(m, "context"), Description: str(m, "description"), TargetURL: str(m, "target_url"), Auth: authForm(r.Header, s.token)}
	id := s.accept(st)
	now := time.Now().UTC().Format(time.RFC3339)
	writeJSON(w, http.StatusCreated, map[string]any{
		"id": id, "status": state, "target_url": st.TargetURL, "description": st.Description,
		"url": s.URL + "/api/v1/repos/" + s.repo + "/statuses/" + sha, "context": st.Context,
		"creator": map[string]any{"id": 1, "login": "bot"}, "created_at": now, "updated_at": now,
	})
}
