// Package forgetest runs fake forges for tests: an HTTP server per forge
// (GitHub, GitLab, Gitea/Forgejo) that checks every commit-status request
// against that forge's documented API (method, path, authentication header,
// content type, body fields and their values, length limits) and answers as
// the forge does: 201 with the created status, 401 for a bad token, 404 for
// an unknown repository or project, GitHub's 422 validation errors,
// GitLab's 400 for a transition to the state a status already has, and
// rate limiting (GitHub's secondary limit 403 with retry-after, its
// primary limit 403 with x-ratelimit-reset, 429 with Retry-After).
//
// A request that breaks the documented API is answered with the forge's
// error and recorded as a violation; the server fails its test at cleanup
// when any was recorded, so a client that drifts from the API cannot pass.
package forgetest

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"
)

// Status is a status the fake accepted.
type Status struct {
	Repository  string // owner/repo or the GitLab project path
	SHA         string
	State       string // the forge's own word
	Context     string
	Description string
	TargetURL   string
	Ref         string // GitLab's ref
	Auth        string // the authentication header's form, token replaced by <token>
}

// Limit is a kind of rate-limit answer.
type Limit int

const (
	// Secondary is GitHub's secondary rate limit: 403 with retry-after.
	Secondary Limit = iota
	// Primary is GitHub's primary limit: 403, x-ratelimit-remaining 0 and
	// x-ratelimit-reset.
	Primary
	// TooMany is 429 with Retry-After (GitLab, GitHub, a proxy before Gitea).
	TooMany
	// Unavailable is 503 without advice.
	Unavailable
)

// Server is one fake forge.
type Server struct {
	*httptest.Server
	kind  string
	token string
	repo  string
	// prefix is GitHub Enterprise Server's /api/v3, "" for github.com.
	prefix string

	mu         sync.Mutex
	accepted   []Status
	violations []string
	bodies     []string
	requests   int
	limits     []Limit
	// always: every request is limited, cycling through these, until
	// StopLimiting.
	always     []Limit
	alwaysN    int
	retryAfter int
	limitedN   int
	states     map[string]string // GitLab: sha + name -> state
	nextID     int64

	// AllowViolations keeps the server from failing its test (tests of
	// the fake itself).
	AllowViolations bool
}

func newServer(t testing.TB, kind, token, repo string, h func(*Server, http.ResponseWriter, *http.Request, []byte)) *Server {
	s := &Server{kind: kind, token: token, repo: repo, retryAfter: 1, states: map[string]string{}}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		s.mu.Lock()
		s.requests++
		s.bodies = append(s.bodies, string(body))
		limited := len(s.limits) > 0 || len(s.always) > 0
		var lim Limit
		switch {
		case len(s.limits) > 0:
			lim, s.limits = s.limits[0], s.limits[1:]
		case len(s.always) > 0:
			lim = s.always[s.alwaysN%len(s.always)]
			s.alwaysN++
		}
		ra := s.retryAfter
		if limited {
			s.limitedN++
		}
		s.mu.Unlock()
		if limited {
			s.rateLimit(w, lim, ra)
			return
		}
		h(s, w, r, body)
	}))
	t.Cleanup(func() {
		s.Close()
		if v := s.Violations(); len(v) > 0 && !s.AllowViolations {
			t.Errorf("the fake %s received requests that break its documented API:\n  %s", kind, strings.Join(v, "\n  "))
		}
	})
	return s
}

// RateLimitNext answers the next requests with the given limits, in order,
// each telling the client to come back after seconds (Retry-After or the
// reset time).
func (s *Server) RateLimitNext(seconds int, limits ...Limit) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.limits = append(s.limits, limits...)
	s.retryAfter = seconds
}

// RateLimitAll answers every request with these limits in turn, each
// asking to come back after seconds, until StopLimiting.
func (s *Server) RateLimitAll(seconds int, limits ...Limit) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.always = append([]Limit(nil), limits...)
	s.retryAfter = seconds
}

// StopLimiting ends RateLimitAll and any limits still queued.
func (s *Server) StopLimiting() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.always, s.limits = nil, nil
}

// Limited counts the requests answered with a rate limit.
func (s *Server) Limited() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.limitedN
}

// Accepted lists the statuses created, in order.
func (s *Server) Accepted() []Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Status(nil), s.accepted...)
}

// Violations lists the requests that broke the documented API.
func (s *Server) Violations() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.violations...)
}

// Bodies returns every request body received, accepted or not.
func (s *Server) Bodies() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.bodies...)
}

// Requests counts the requests received.
func (s *Server) Requests() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.requests
}

func (s *Server) violate(format string, args ...any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.violations = append(s.violations, fmt.Sprintf(format, args...))
}

func (s *Server) accept(st Status) int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.accepted = append(s.accepted, st)
	s.nextID++
	return s.nextID
}

func (s *Server) rateLimit(w http.ResponseWriter, lim Limit, seconds int) {
	switch lim {
	case Secondary:
		w.Header().Set("Retry-After", strconv.Itoa(seconds))
		writeJSON(w, http.StatusForbidden, map[string]any{
			"message":           "You have exceeded a secondary rate limit. Please wait a few minutes before you try again.",
			"documentation_url": "https://docs.github.com/rest/overview/rate-limits-for-the-rest-api#about-secondary-rate-limits",
		})
	case Primary:
		w.Header().Set("X-RateLimit-Limit", "5000")
		w.Header().Set("X-RateLimit-Remaining", "0")
		w.Header().Set("X-RateLimit-Used", "5000")
		w.Header().Set("X-RateLimit-Reset", strconv.FormatInt(time.Now().Add(time.Duration(seconds)*time.Second).Unix()+1, 10))
		writeJSON(w, http.StatusForbidden, map[string]any{
			"message":           "API rate limit exceeded for user ID 1.",
			"documentation_url": "https://docs.github.com/rest/overview/rate-limits-for-the-rest-api#about-the-primary-rate-limit",
		})
	case TooMany:
		w.Header().Set("Retry-After", strconv.Itoa(seconds))
		if s.kind == "gitlab" {
			w.Header().Set("RateLimit-Limit", "600")
			w.Header().Set("RateLimit-Remaining", "0")
			w.Header().Set("Content-Type", "text/plain")
			w.WriteHeader(http.StatusTooManyRequests)
			_, _ = io.WriteString(w, "Retry later\n")
			return
		}
		writeJSON(w, http.StatusTooManyRequests, map[string]any{"message": "Too Many Requests"})
	default:
		w.Header().Set("Content-Type", "text/html")
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = io.WriteString(w, "<html><body>503 Service Unavailable</body></html>")
	}
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

var sha1Hex = regexp.MustCompile(`^[0-9a-f]{40}$`)

// jsonBody checks the content type and decodes a JSON object; the
// allowed fields are listed with their JSON kinds.
func (s *Server) jsonBody(r *http.Request, body []byte, allowed map[string]string) (map[string]any, string) {
	if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		return nil, fmt.Sprintf("Content-Type is %q, want application/json", ct)
	}
	var m map[string]any
	if err := json.Unmarshal(body, &m); err != nil {
		return nil, fmt.Sprintf("the body is not a JSON object: %v", err)
	}
	for k, v := range m {
		kind, ok := allowed[k]
		if !ok {
			return nil, fmt.Sprintf("field %q is not part of the API", k)
		}
		switch v.(type) {
		case nil:
			if kind != "string|null" {
				return nil, fmt.Sprintf("field %q is null", k)
			}
		case string:
			if !strings.HasPrefix(kind, "string") {
				return nil, fmt.Sprintf("field %q must be a %s", k, kind)
			}
		case float64:
			if kind != "number" {
				return nil, fmt.Sprintf("field %q must be a %s", k, kind)
			}
		default:
			return nil, fmt.Sprintf("field %q has a %T", k, v)
		}
	}
	return m, ""
}

func str(m map[string]any, k string) string {
	v, _ := m[k].(string)
	return v
}

func tooLong(s string, n int) bool { return utf8.RuneCountInString(s) > n }

// authForm names the header form used, the token replaced by <token>.
func authForm(h http.Header, token string) string {
	for _, name := range []string{"Authorization", "Private-Token"} {
		if v := h.Get(name); v != "" {
			return name + ": " + strings.ReplaceAll(v, token, "<token>")
		}
	}
	return ""
}
