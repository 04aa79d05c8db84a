package forge

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"code.gitea.io/sdk/gitea"
	"github.com/google/go-github/v75/github"
	gitlab "gitlab.com/gitlab-org/api/client-go/v2"
)

// Each SetStatus builds a fresh library client: the token and address are
// read from storage for every delivery, and no client-side rate-limit
// memory outlives one attempt (Deliverer owns the waiting).

// githubClient speaks the commit statuses API of GitHub and GitHub
// Enterprise Server through go-github.
type githubClient struct{ hc *http.Client }

func (c githubClient) SetStatus(ctx context.Context, t Target, s Status) error {
	owner, repo, err := splitOwnerRepo(t.Repository)
	if err != nil {
		return err
	}
	base, err := url.Parse(strings.TrimSuffix(t.APIURL, "/") + "/")
	if err != nil {
		return fmt.Errorf("api_url: %w", err)
	}
	hc := *c.hc
	hc.Transport = acceptTransport{next: c.hc.Transport, accept: "application/vnd.github+json"}
	gh := github.NewClient(&hc).WithAuthToken(t.Token)
	gh.BaseURL = base
	st := &github.RepoStatus{
		State:       github.Ptr(s.State.For(GitHub)),
		Context:     github.Ptr(s.Context),
		Description: github.Ptr(s.Description),
	}
	if s.TargetURL != "" {
		st.TargetURL = github.Ptr(s.TargetURL)
	}
	_, resp, err := gh.Repositories.CreateStatus(ctx, owner, repo, s.Commit, st)
	if err == nil {
		return nil
	}
	// Refused before sending: the library remembers no limit across
	// clients, but say when to come back all the same.
	var rl *github.RateLimitError
	if errors.As(err, &rl) {
		wait := time.Until(rl.Rate.Reset.Time)
		if wait <= 0 {
			wait = time.Minute
		}
		return &Error{Code: http.StatusForbidden, Temporary: true, RetryAfter: wait, Message: oneLine(rl.Message)}
	}
	var ab *github.AbuseRateLimitError
	if errors.As(err, &ab) {
		e := &Error{Code: http.StatusForbidden, Temporary: true, RetryAfter: time.Minute, Message: oneLine(ab.Message)}
		if ab.Response != nil {
			e.Code = ab.Response.StatusCode
		}
		if ab.RetryAfter != nil && *ab.RetryAfter > 0 {
			e.RetryAfter = *ab.RetryAfter
		}
		return e
	}
	if resp == nil || resp.Response == nil {
		return transportError(err)
	}
	msg := err.Error()
	var er *github.ErrorResponse
	if errors.As(err, &er) {
		msg = er.Message
		for _, fe := range er.Errors {
			msg += "; " + strings.TrimSpace(fe.Field+" "+fe.Code+" "+fe.Message)
		}
	}
	return classify(resp.StatusCode, resp.Header, msg, time.Now())
}

// acceptTransport sets the media type GitHub documents for its REST API.
type acceptTransport struct {
	next   http.RoundTripper
	accept string
}

func (t acceptTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Accept", t.accept)
	next := t.next
	if next == nil {
		next = http.DefaultTransport
	}
	return next.RoundTrip(r)
}

// gitlabClient speaks GitLab's commit statuses API through client-go.
type gitlabClient struct{ hc *http.Client }

func (c gitlabClient) SetStatus(ctx context.Context, t Target, s Status) error {
	if strings.Trim(t.Repository, "/") == "" {
		return &Error{Message: "no project path to set the status on"}
	}
	gl, err := gitlab.NewClient(t.Token, gitlab.WithBaseURL(t.APIURL), gitlab.WithHTTPClient(c.hc), gitlab.WithoutRetries())
	if err != nil {
		return fmt.Errorf("api_url: %w", err)
	}
	opt := &gitlab.SetCommitStatusOptions{
		State:       gitlab.BuildStateValue(s.State.For(GitLab)),
		Name:        gitlab.Ptr(s.Context),
		Description: gitlab.Ptr(s.Description),
	}
	if s.TargetURL != "" {
		opt.TargetURL = gitlab.Ptr(s.TargetURL)
	}
	if s.Ref != "" {
		opt.Ref = gitlab.Ptr(s.Ref)
	}
	_, resp, err := gl.Commits.SetCommitStatus(strings.Trim(t.Repository, "/"), s.Commit, opt, gitlab.WithContext(ctx))
	if err == nil {
		return nil
	}
	if resp == nil || resp.Response == nil {
		if errors.Is(err, gitlab.ErrNotFound) {
			return &Error{Code: http.StatusNotFound, Message: "404 Project Not Found"}
		}
		return transportError(err)
	}
	msg := err.Error()
	var er *gitlab.ErrorResponse
	if errors.As(err, &er) {
		msg = er.Message
	}
	if resp.StatusCode == http.StatusBadRequest && strings.Contains(msg, "Cannot transition status") {
		return fmt.Errorf("%w (%s)", ErrAlreadySet, oneLine(msg))
	}
	return classify(resp.StatusCode, resp.Header, msg, time.Now())
}

// giteaClient speaks the Gitea/Forgejo commit statuses API through the
// Gitea SDK.
type giteaClient struct{ hc *http.Client }

func (c giteaClient) SetStatus(ctx context.Context, t Target, s Status) error {
	owner, repo, err := splitOwnerRepo(t.Repository)
	if err != nil {
		return err
	}
	// SetGiteaVersion(""): no version probe before the request.
	cl, err := gitea.NewClient(strings.TrimSuffix(t.APIURL, "/"), gitea.SetHTTPClient(c.hc), gitea.SetToken(t.Token),
		gitea.SetGiteaVersion(""), gitea.SetContext(ctx))
	if err != nil {
		return fmt.Errorf("api_url: %w", err)
	}
	_, resp, err := cl.CreateStatus(owner, repo, s.Commit, gitea.CreateStatusOption{
		State:       gitea.StatusState(s.State.For(Gitea)),
		TargetURL:   s.TargetURL,
		Description: s.Description,
		Context:     s.Context,
	})
	if err == nil {
		return nil
	}
	if resp == nil || resp.Response == nil {
		return transportError(err)
	}
	return classify(resp.StatusCode, resp.Header, err.Error(), time.Now())
}

func splitOwnerRepo(r string) (string, string, error) {
	parts := strings.Split(strings.Trim(r, "/"), "/")
	if len(parts) != 2 || parts[0] == "" || parts[1] == "" {
		return "", "", &Error{Message: fmt.Sprintf("repository %q is not owner/repo", r)}
	}
	return parts[0], parts[1], nil
}
