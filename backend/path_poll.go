package backend

import (
	"context"
	"net/http"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"
)

func pathPoll(b *backend) []*framework.Path {
	return []*framework.Path{{
		Pattern:      "poll/?$",
		DisplayAttrs: &framework.DisplayAttributes{OperationPrefix: "flant-gitops", OperationVerb: "poll"},
		Fields: map[string]*framework.FieldSchema{
			"retry": {
				Type:        framework.TypeBool,
				Description: "Also run HEAD again now when its last run failed (ignoring the backoff) or was canceled by an operator.",
				Default:     false,
			},
		},
		Operations: map[logical.Operation]framework.OperationHandler{
			logical.UpdateOperation: &framework.PathOperation{
				Callback:                    b.pathPollWrite,
				Responses:                   okWith(pollResponseFields()),
				Summary:                     "Poll the branch now instead of at the next period.",
				ForwardPerformanceStandby:   true,
				ForwardPerformanceSecondary: true,
			},
		},
		HelpSynopsis:    "Poll the branch now (rate-limited); answers at once.",
		HelpDescription: pathPollHelpDesc,
	}}
}

func (b *backend) pathPollWrite(_ context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	if !b.WriteSafeReplicationState() {
		return nil, logical.ErrReadOnly
	}
	a := b.watch.RequestPoll(watchStorage{req.Storage}, d.Get("retry").(bool))
	if !a.Started {
		// A coded error, not RespondWithStatusCode: Vault then puts the message
		// in "errors", where the CLI and API clients show it.
		return nil, logical.CodedError(http.StatusTooManyRequests, a.Message)
	}
	data := map[string]any{"started": a.Started, "message": a.Message}
	if a.CurrentRun != "" {
		data["current_run"] = a.CurrentRun
	}
	return &logical.Response{Data: data}, nil
}

const pathPollHelpDesc = `
Asks the worker to poll the branch now instead of at the next
git_poll_period, for example from a CI job right after a push. The answer
comes at once and says what was started: a poll, or a poll queued behind the
run in progress (its id in current_run). Read flant_gitops/status for the
outcome and flant_gitops/runs for the run it started, if any.

Polls are rate-limited: a request within 2 seconds of the previous one is
answered 429 with the time to ask again.

With retry=true, a HEAD whose last run failed is run again without waiting
for its backoff, and a HEAD whose run was canceled by an operator is run
again.
`
