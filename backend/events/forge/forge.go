// Package forge sets commit statuses on the forge that hosts the watched
// repository (GitHub, GitLab, Gitea/Forgejo), so the people who push a
// commit see on the forge whether it ran, failed or was refused and why.
//
// It is a subscriber of the events bus: Deliverer maps each event to one
// status, drops repeats, and sends them from a small queue of its own with
// retries, so a forge that is down or rate-limits never delays a run. A
// status is built only from event fields (states, run ids, signer names,
// operator sentences), never from a run's log, and descriptions are
// cleaned of anything that looks like a token before they leave.
package forge

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// Provider names a forge's API.
type Provider string

const (
	GitHub Provider = "github"
	GitLab Provider = "gitlab"
	Gitea  Provider = "gitea" // Gitea and Forgejo share the API
)

// Providers lists the supported forges, for validation messages.
var Providers = []Provider{GitHub, GitLab, Gitea}

// ParseProvider checks a configured provider name.
func ParseProvider(s string) (Provider, error) {
	for _, p := range Providers {
		if string(p) == s {
			return p, nil
		}
	}
	return "", fmt.Errorf("unknown provider %q: use github, gitlab or gitea (also for Forgejo)", s)
}

// State is what a status says, in the plugin's words; each client maps it
// to its forge's own word (State.For).
type State string

const (
	// Pending: a run is in progress (GitLab: running).
	Pending State = "pending"
	// Success: the run succeeded.
	Success State = "success"
	// Failure: the run failed, or the signatures refused the commit.
	Failure State = "failure"
	// Canceled: an operator canceled the run (GitLab: canceled; GitHub and
	// Gitea have no such state and say error).
	Canceled State = "canceled"
)

// For is the forge's word for s.
func (s State) For(p Provider) string {
	switch p {
	case GitLab:
		switch s {
		case Pending:
			return "running"
		case Failure:
			return "failed"
		}
		return string(s)
	default:
		if s == Canceled {
			return "error"
		}
		return string(s)
	}
}

// Limits are a forge's documented bounds on a status's texts, in
// characters (runes).
type Limits struct {
	Description int
	Context     int
}

// LimitsOf returns p's limits: GitHub's description is at most 140
// characters, GitLab's description and name 255; Gitea documents none, so
// the same 255 as GitLab keeps its pages readable.
func LimitsOf(p Provider) Limits {
	if p == GitHub {
		return Limits{Description: 140, Context: 255}
	}
	return Limits{Description: 255, Context: 255}
}

// Status is one commit status to set.
type Status struct {
	Commit      string `json:"commit"`
	State       State  `json:"state"`
	Context     string `json:"context"`
	Description string `json:"description"`
	TargetURL   string `json:"target_url,omitempty"`
	// Ref is the watched branch; GitLab files the status under it (the
	// others have no such field).
	Ref string `json:"ref,omitempty"`
}

// Target is where statuses go: the forge's API and the repository (GitHub
// and Gitea: owner/repo; GitLab: the project's full path).
type Target struct {
	Provider   Provider
	APIURL     string
	Repository string
	Token      string
}

// Client sets commit statuses on one forge.
type Client interface {
	SetStatus(ctx context.Context, t Target, s Status) error
}

// NewClient returns the client of p. hc carries the requests (nil: a client
// with a 30 s timeout); none of the clients retries on its own: Deliverer
// decides.
func NewClient(p Provider, hc *http.Client) (Client, error) {
	if hc == nil {
		hc = &http.Client{Timeout: 30 * time.Second}
	}
	switch p {
	case GitHub:
		return githubClient{hc: hc}, nil
	case GitLab:
		return gitlabClient{hc: hc}, nil
	case Gitea:
		return giteaClient{hc: hc}, nil
	}
	_, err := ParseProvider(string(p))
	return nil, err
}

// DefaultAPIURL is p's public API address, or "" when p has none.
func DefaultAPIURL(p Provider) string {
	if p == GitHub {
		return "https://api.github.com"
	}
	return ""
}

// CheckAPIURL validates an api_url: absolute http(s), no credentials, no
// query or fragment.
func CheckAPIURL(p Provider, raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return fmt.Errorf("api_url %q is not a URL: %w", raw, err)
	}
	if u.Scheme != "https" && u.Scheme != "http" || u.Host == "" {
		return fmt.Errorf("api_url %q must be an absolute https:// address, e.g. %s", raw, exampleAPIURL(p))
	}
	if u.User != nil {
		return fmt.Errorf("api_url must not carry credentials: give the token in the token field")
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return fmt.Errorf("api_url %q must not have a query or fragment", raw)
	}
	if p == GitLab && strings.Contains(u.Path, "/api/v4") || p == Gitea && strings.Contains(u.Path, "/api/v1") {
		return fmt.Errorf("api_url %q: give the forge's address without the API path, e.g. %s", raw, exampleAPIURL(p))
	}
	return nil
}

func exampleAPIURL(p Provider) string {
	switch p {
	case GitLab:
		return "https://gitlab.example.com"
	case Gitea:
		return "https://gitea.example.com"
	}
	return "https://api.github.com (GitHub Enterprise Server: https://github.example.com/api/v3)"
}

// Error is a forge's refusal or an unreachable forge, classified for the
// retry decision.
type Error struct {
	// Code is the HTTP status, 0 when no answer came.
	Code int
	// Temporary: worth trying again (rate limits, 5xx, network errors).
	Temporary bool
	// RetryAfter is the forge's own word on when to try again (Retry-After,
	// GitHub's x-ratelimit-reset), zero when it gave none.
	RetryAfter time.Duration
	// Message is the forge's message (or the transport error); it never
	// carries the token.
	Message string
}

func (e *Error) Error() string {
	if e.Code == 0 {
		return e.Message
	}
	if e.Message == "" {
		return fmt.Sprintf("HTTP %d", e.Code)
	}
	return fmt.Sprintf("HTTP %d: %s", e.Code, e.Message)
}

// ErrAlreadySet is GitLab's 400 for a status that is already in the state
// asked for ("Cannot transition status via :run from :running"): the
// status stands as wanted, so delivery is done.
var ErrAlreadySet = errors.New("the status already has that state")

// classify turns an answer into an *Error (nil for 2xx). now reads
// x-ratelimit-reset, an absolute time.
func classify(code int, h http.Header, message string, now time.Time) error {
	if code >= 200 && code < 300 {
		return nil
	}
	e := &Error{Code: code, Message: oneLine(message)}
	e.RetryAfter = retryAfter(h, now)
	lower := strings.ToLower(message)
	switch {
	case code == http.StatusTooManyRequests, code >= 500, code == http.StatusRequestTimeout:
		e.Temporary = true
	case code == http.StatusForbidden && (e.RetryAfter > 0 || h.Get("X-Ratelimit-Remaining") == "0" || strings.Contains(lower, "rate limit")):
		// GitHub's primary and secondary rate limits answer 403. Without a
		// time given, GitHub asks for at least a minute.
		e.Temporary = true
		if e.RetryAfter == 0 {
			e.RetryAfter = time.Minute
		}
	}
	return e
}

// retryAfter reads Retry-After (seconds or an HTTP date), then GitHub's
// x-ratelimit-reset (epoch seconds) when the remaining count is 0.
func retryAfter(h http.Header, now time.Time) time.Duration {
	if v := strings.TrimSpace(h.Get("Retry-After")); v != "" {
		var secs int64
		if _, err := fmt.Sscanf(v, "%d", &secs); err == nil && secs >= 0 {
			return time.Duration(secs) * time.Second
		}
		if t, err := http.ParseTime(v); err == nil && t.After(now) {
			return t.Sub(now)
		}
	}
	if h.Get("X-Ratelimit-Remaining") == "0" {
		var reset int64
		if _, err := fmt.Sscanf(h.Get("X-Ratelimit-Reset"), "%d", &reset); err == nil {
			if t := time.Unix(reset, 0); t.After(now) {
				return t.Sub(now)
			}
		}
	}
	return 0
}

// transportError wraps a request that got no answer.
func transportError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		// url.Error repeats the URL, which holds no secret here; keep the
		// cause short.
		err = ue.Err
	}
	return &Error{Temporary: true, Message: oneLine(err.Error())}
}

func oneLine(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if r := []rune(s); len(r) > 300 {
		s = string(r[:300]) + "…"
	}
	return s
}
