package forgetest

import (
	"net/http"
	"strings"
	"testing"
)

const (
	tok = "secret-token"
	sha = "0123456789abcdef0123456789abcdef01234567"
)

// TestFakesRefuseWhatTheForgesRefuse sends requests that break each API and
// checks the answer and that the break is recorded.
func TestFakesRefuseWhatTheForgesRefuse(t *testing.T) {
	gh := func(t *testing.T) *Server { return NewGitHub(t, tok, "a/b") }
	gl := func(t *testing.T) *Server { return NewGitLab(t, tok, "g/p") }
	gt := func(t *testing.T) *Server { return NewGitea(t, tok, "a/b") }
	ghHeaders := map[string]string{"Authorization": "Bearer " + tok, "Accept": "application/vnd.github+json", "X-GitHub-Api-Version": "2022-11-28", "Content-Type": "application/json"}
	with := func(h map[string]string, k, v string) map[string]string {
		out := map[string]string{}
		for a, b := range h {
			out[a] = b
		}
		if v == "" {
			delete(out, k)
		} else {
			out[k] = v
		}
		return out
	}
	cases := []struct {
		name      string
		srv       func(*testing.T) *Server
		method    string
		path      string
		headers   map[string]string
		body      string
		code      int
		violation string // "" when the request is valid
	}{
		{"github ok", gh, "POST", "/repos/a/b/statuses/" + sha, ghHeaders, `{"state":"success","context":"c"}`, 201, ""},
		{"github token form", gh, "POST", "/repos/a/b/statuses/" + sha, with(ghHeaders, "Authorization", "token "+tok), `{"state":"pending"}`, 201, ""},
		{"github old accept", gh, "POST", "/repos/a/b/statuses/" + sha, with(ghHeaders, "Accept", "application/json"), `{"state":"success"}`, 201, "Accept"},
		{"github no version", gh, "POST", "/repos/a/b/statuses/" + sha, with(ghHeaders, "X-GitHub-Api-Version", ""), `{"state":"success"}`, 400, "X-GitHub-Api-Version"},
		{"github basic auth", gh, "POST", "/repos/a/b/statuses/" + sha, with(ghHeaders, "Authorization", "Basic eDp5"), `{"state":"success"}`, 401, "neither Bearer nor token"},
		{"github bad token", gh, "POST", "/repos/a/b/statuses/" + sha, with(ghHeaders, "Authorization", "Bearer nope"), `{"state":"success"}`, 401, ""},
		{"github other repo", gh, "POST", "/repos/a/c/statuses/" + sha, ghHeaders, `{"state":"success"}`, 404, ""},
		{"github gitlab state", gh, "POST", "/repos/a/b/statuses/" + sha, ghHeaders, `{"state":"failed"}`, 422, "state"},
		{"github long description", gh, "POST", "/repos/a/b/statuses/" + sha, ghHeaders, `{"state":"success","description":"` + strings.Repeat("x", 141) + `"}`, 422, "description"},
		{"github unknown field", gh, "POST", "/repos/a/b/statuses/" + sha, ghHeaders, `{"state":"success","name":"c"}`, 400, "not part of the API"},
		{"github form body", gh, "POST", "/repos/a/b/statuses/" + sha, with(ghHeaders, "Content-Type", "application/x-www-form-urlencoded"), `state=success`, 400, "Content-Type"},
		{"github GET", gh, "GET", "/repos/a/b/statuses/" + sha, ghHeaders, ``, 404, "POST"},
		{"github wrong path", gh, "POST", "/repos/a/b/commits/" + sha + "/statuses", ghHeaders, `{"state":"success"}`, 404, "not POST"},
		{"gitlab ok", gl, "POST", "/api/v4/projects/g%2Fp/statuses/" + sha, map[string]string{"PRIVATE-TOKEN": tok, "Content-Type": "application/json"}, `{"state":"running","name":"c"}`, 201, ""},
		{"gitlab unencoded project", gl, "POST", "/api/v4/projects/g/p/statuses/" + sha, map[string]string{"PRIVATE-TOKEN": tok, "Content-Type": "application/json"}, `{"state":"running"}`, 404, "URL-encoded"},
		{"gitlab github state", gl, "POST", "/api/v4/projects/g%2Fp/statuses/" + sha, map[string]string{"PRIVATE-TOKEN": tok, "Content-Type": "application/json"}, `{"state":"failure"}`, 400, "state"},
		{"gitlab long name", gl, "POST", "/api/v4/projects/g%2Fp/statuses/" + sha, map[string]string{"PRIVATE-TOKEN": tok, "Content-Type": "application/json"}, `{"state":"running","name":"` + strings.Repeat("n", 256) + `"}`, 400, "255"},
		{"gitlab no token", gl, "POST", "/api/v4/projects/g%2Fp/statuses/" + sha, map[string]string{"Content-Type": "application/json"}, `{"state":"running"}`, 401, "PRIVATE-TOKEN"},
		{"gitlab unknown project", gl, "POST", "/api/v4/projects/g%2Fq/statuses/" + sha, map[string]string{"PRIVATE-TOKEN": tok, "Content-Type": "application/json"}, `{"state":"running"}`, 404, ""},
		{"gitea ok", gt, "POST", "/api/v1/repos/a/b/statuses/" + sha, map[string]string{"Authorization": "token " + tok, "Content-Type": "application/json"}, `{"state":"warning","context":"c","description":"","target_url":""}`, 201, ""},
		{"gitea gitlab state", gt, "POST", "/api/v1/repos/a/b/statuses/" + sha, map[string]string{"Authorization": "token " + tok, "Content-Type": "application/json"}, `{"state":"running"}`, 422, "state"},
		{"gitea private-token", gt, "POST", "/api/v1/repos/a/b/statuses/" + sha, map[string]string{"PRIVATE-TOKEN": tok, "Content-Type": "application/json"}, `{"state":"success"}`, 401, "not \"token"},
		{"gitea without /api/v1", gt, "POST", "/repos/a/b/statuses/" + sha, map[string]string{"Authorization": "token " + tok, "Content-Type": "application/json"}, `{"state":"success"}`, 404, "not POST"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			srv := tc.srv(t)
			srv.AllowViolations = true
			req, err := http.NewRequest(tc.method, srv.URL+tc.path, strings.NewReader(tc.body))
			if err != nil {
				t.Fatal(err)
			}
			for k, v := range tc.headers {
				req.Header.Set(k, v)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tc.code {
				t.Errorf("answer %d, want %d", resp.StatusCode, tc.code)
			}
			v := strings.Join(srv.Violations(), "\n")
			if tc.violation == "" && v != "" || tc.violation != "" && !strings.Contains(v, tc.violation) {
				t.Errorf("violations %q, want %q", v, tc.violation)
			}
			if n := len(srv.Accepted()); (tc.code == 201) != (n == 1) {
				t.Errorf("%d accepted for a %d", n, tc.code)
			}
		})
	}
}

func TestGitLabTransitions(t *testing.T) {
	srv := NewGitLab(t, tok, "g/p")
	post := func(state string) int {
		req, _ := http.NewRequest("POST", srv.URL+"/api/v4/projects/g%2Fp/statuses/"+sha, strings.NewReader(`{"state":"`+state+`","name":"c"}`))
		req.Header.Set("PRIVATE-TOKEN", tok)
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	for i, step := range []struct {
		state string
		code  int
	}{{"running", 201}, {"running", 400}, {"pending", 400}, {"success", 201}, {"success", 400}, {"failed", 201}} {
		if got := post(step.state); got != step.code {
			t.Errorf("step %d %s: %d, want %d", i, step.state, got, step.code)
		}
	}
}

func TestRateLimitAnswers(t *testing.T) {
	srv := NewGitHub(t, tok, "a/b")
	srv.RateLimitNext(3, Secondary, Primary, TooMany)
	for _, want := range []struct {
		code   int
		header string
	}{{403, "Retry-After"}, {403, "X-Ratelimit-Reset"}, {429, "Retry-After"}} {
		resp, err := http.Post(srv.URL+"/repos/a/b/statuses/"+sha, "application/json", strings.NewReader(`{}`))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want.code || resp.Header.Get(want.header) == "" {
			t.Errorf("answer %d with %s=%q, want %d with it", resp.StatusCode, want.header, resp.Header.Get(want.header), want.code)
		}
	}
	if srv.Limited() != 3 {
		t.Errorf("limited %d", srv.Limited())
	}
}
