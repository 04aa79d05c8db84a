package backend

import (
	"context"
	"strings"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"
)

func pathLastSuccessfulCommit(b *backend) []*framework.Path {
	return []*framework.Path{{
		Pattern:      "configure/last_successful_commit/?$",
		DisplayAttrs: &framework.DisplayAttributes{OperationPrefix: "flant-gitops", OperationSuffix: "last-successful-commit"},
		Fields: map[string]*framework.FieldSchema{
			"commit": {
				Type:        framework.TypeString,
				Description: "Full 40-hex id of the commit runs resume after: the next run is for a HEAD that descends from it (HEAD itself marks HEAD as done).",
			},
		},
		Operations: map[logical.Operation]framework.OperationHandler{
			logical.ReadOperation: &framework.PathOperation{
				Callback:  b.pathLastSuccessfulRead,
				Responses: okWith(lastSuccessfulResponseFields()),
				Summary:   "Show the last successful commit and where it came from.",
			},
			logical.UpdateOperation: &framework.PathOperation{
				Callback:                    b.pathLastSuccessfulWrite,
				Responses:                   noContent(),
				Summary:                     "Set the commit runs resume after (recovery after a force-push).",
				ForwardPerformanceStandby:   true,
				ForwardPerformanceSecondary: true,
			},
			logical.DeleteOperation: &framework.PathOperation{
				Callback:                    b.pathLastSuccessfulDelete,
				Responses:                   noContent(),
				Summary:                     "Forget it; initial_last_successful_commit applies again.",
				ForwardPerformanceStandby:   true,
				ForwardPerformanceSecondary: true,
			},
		},
		HelpSynopsis:    "The commit the next run must descend from; set it to recover from a force-push.",
		HelpDescription: pathLastSuccessfulHelpDesc,
	}}
}

func (b *backend) pathLastSuccessfulRead(ctx context.Context, req *logical.Request, _ *framework.FieldData) (*logical.Response, error) {
	cfg, err := getConfig(ctx, req.Storage)
	if err != nil {
		return nil, err
	}
	initial := ""
	if cfg != nil {
		initial = cfg.InitialLastSuccessfulCommit
	}
	ls, err := b.watch.LastSuccessful(ctx, watchStorage{req.Storage}, initial)
	if err != nil {
		return nil, err
	}
	if ls.Commit == "" {
		return nil, nil
	}
	data := map[string]any{"commit": ls.Commit, "source": ls.Source}
	if ls.RunID != "" {
		data["run_id"] = ls.RunID
	}
	if !ls.SetAt.IsZero() {
		data["set_at"] = formatTime(ls.SetAt)
	}
	return &logical.Response{Data: data}, nil
}

func (b *backend) pathLastSuccessfulWrite(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	commit := strings.ToLower(strings.TrimSpace(d.Get("commit").(string)))
	if !commitRe.MatchString(commit) {
		return errorResponse("commit must be a full 40-hex commit id (git rev-parse HEAD prints one), got %q", d.Get("commit"))
	}
	return nil, b.watch.SetLastSuccessful(ctx, watchStorage{req.Storage}, commit)
}

func (b *backend) pathLastSuccessfulDelete(ctx context.Context, req *logical.Request, _ *framework.FieldData) (*logical.Response, error) {
	return nil, b.watch.SetLastSuccessful(ctx, watchStorage{req.Storage}, "")
}

const pathLastSuccessfulHelpDesc = `
The last successful commit is the commit the watch considers done: a new HEAD
runs only when it descends from it. A successful run moves it to the run's
commit. Before the first success, initial_last_successful_commit of
flant_gitops/configure applies.

After a force-push the old commit is no longer an ancestor of HEAD and the
watch refuses to run (status says so). Check the new history, then write the
commit to resume after:

  vault write flant_gitops/configure/last_successful_commit commit=<sha>

Writing HEAD itself accepts HEAD without running it; writing its parent runs
HEAD at the next poll. Deleting falls back to initial_last_successful_commit.
Either clears the retry backoff of a failing commit.
`
