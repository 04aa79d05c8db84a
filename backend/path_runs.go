package backend

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"

	"github.com/flant/flant_gitops/backend/watch"
)

const (
	defaultLogPage = 64 << 10
	maxLogPage     = 1 << 20
	// cancelWait bounds how long runs/ID/cancel waits for the container to
	// be gone before answering.
	cancelWait = 30 * time.Second
)

func pathRuns(b *backend) []*framework.Path {
	idField := &framework.FieldSchema{Type: framework.TypeString, Description: "Run id, as listed by `vault list flant_gitops/runs`."}
	return []*framework.Path{
		{
			Pattern:      "runs/?$",
			DisplayAttrs: &framework.DisplayAttributes{OperationPrefix: "flant-gitops", OperationSuffix: "runs"},
			Operations: map[logical.Operation]framework.OperationHandler{
				logical.ListOperation: &framework.PathOperation{
					Callback:  b.pathRunsList,
					Responses: listOK(`Per id: {"commit", "status", "reason", "created_at"}.`),
					Summary:   "List runs, newest first.",
				},
			},
			HelpSynopsis:    "Run history, newest first.",
			HelpDescription: pathRunsHelpDesc,
		},
		{
			Pattern:      "runs/" + framework.GenericNameRegex("id") + "/log$",
			DisplayAttrs: &framework.DisplayAttributes{OperationPrefix: "flant-gitops", OperationSuffix: "run-log"},
			Fields: map[string]*framework.FieldSchema{
				"id": idField,
				"offset": {
					Type:        framework.TypeInt,
					Query:       true,
					Description: "Byte offset to read from; use next_offset of the previous page to follow a running command.",
					Default:     0,
				},
				"limit": {
					Type:        framework.TypeInt,
					Query:       true,
					Description: fmt.Sprintf("Most bytes to return (default %d, at most %d).", defaultLogPage, maxLogPage),
					Default:     defaultLogPage,
				},
			},
			Operations: map[logical.Operation]framework.OperationHandler{
				logical.ReadOperation: &framework.PathOperation{
					Callback:  b.pathRunLogRead,
					Responses: okWith(runLogResponseFields()),
					Summary:   "Read a page of the run's output.",
				},
			},
			HelpSynopsis:    "The output of a run's commands, paged.",
			HelpDescription: pathRunLogHelpDesc,
		},
		{
			Pattern:      "runs/" + framework.GenericNameRegex("id") + "/cancel$",
			DisplayAttrs: &framework.DisplayAttributes{OperationPrefix: "flant-gitops", OperationVerb: "cancel", OperationSuffix: "run"},
			Fields:       map[string]*framework.FieldSchema{"id": idField},
			Operations: map[logical.Operation]framework.OperationHandler{
				logical.UpdateOperation: &framework.PathOperation{
					Callback:                    b.pathRunCancel,
					Responses:                   okWith(runResponseFields()),
					Summary:                     "Cancel a run in progress: its container is killed and removed.",
					ForwardPerformanceStandby:   true,
					ForwardPerformanceSecondary: true,
				},
			},
			HelpSynopsis:    "Cancel a run in progress.",
			HelpDescription: pathRunCancelHelpDesc,
		},
		{
			Pattern:      "runs/" + framework.GenericNameRegex("id") + "$",
			DisplayAttrs: &framework.DisplayAttributes{OperationPrefix: "flant-gitops", OperationSuffix: "run"},
			Fields:       map[string]*framework.FieldSchema{"id": idField},
			Operations: map[logical.Operation]framework.OperationHandler{
				logical.ReadOperation: &framework.PathOperation{
					Callback:  b.pathRunRead,
					Responses: okWith(runResponseFields()),
					Summary:   "Show one run.",
				},
			},
			HelpSynopsis:    "One run: commit, status, reason, exit code, signers, times.",
			HelpDescription: pathRunsHelpDesc,
		},
	}
}

func (b *backend) pathRunsList(ctx context.Context, req *logical.Request, _ *framework.FieldData) (*logical.Response, error) {
	ids, err := b.watch.ListRuns(ctx, watchStorage{req.Storage})
	if err != nil {
		return nil, err
	}
	info := make(map[string]any, len(ids))
	for _, id := range ids {
		r, err := b.watch.Run(ctx, watchStorage{req.Storage}, id)
		if errors.Is(err, watch.ErrRunNotFound) {
			continue // pruned while listing
		}
		if err != nil {
			return nil, err
		}
		info[id] = map[string]any{"commit": r.Commit, "status": r.Status, "reason": r.Reason, "created_at": formatTime(r.CreatedAt)}
	}
	return logical.ListResponseWithInfo(ids, info), nil
}

func (b *backend) pathRunRead(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	r, err := b.watch.Run(ctx, watchStorage{req.Storage}, d.Get("id").(string))
	if errors.Is(err, watch.ErrRunNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return &logical.Response{Data: runData(r)}, nil
}

func (b *backend) pathRunLogRead(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	id := d.Get("id").(string)
	offset, limit := int64(d.Get("offset").(int)), int64(d.Get("limit").(int))
	if offset < 0 {
		return errorResponse("offset must not be negative, got %d", offset)
	}
	if limit <= 0 || limit > maxLogPage {
		return errorResponse("limit must be between 1 and %d bytes, got %d", maxLogPage, limit)
	}
	r, err := b.watch.Run(ctx, watchStorage{req.Storage}, id)
	if errors.Is(err, watch.ErrRunNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	page, err := b.watch.ReadLog(ctx, watchStorage{req.Storage}, r.ID, offset, limit)
	if err != nil {
		return nil, err
	}
	return &logical.Response{Data: map[string]any{
		"log":           page.Text,
		"offset":        page.Offset,
		"next_offset":   page.NextOffset,
		"size":          page.Size,
		"dropped_bytes": page.Dropped,
		"status":        r.Status,
		"complete":      r.Finished() && page.NextOffset == page.Size,
	}}, nil
}

func (b *backend) pathRunCancel(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	id := d.Get("id").(string)
	r, err := b.watch.Run(ctx, watchStorage{req.Storage}, id)
	if errors.Is(err, watch.ErrRunNotFound) {
		return nil, logical.CodedError(http.StatusNotFound, fmt.Sprintf("run %q does not exist: `vault list flant_gitops/runs` shows the runs", id))
	}
	if err != nil {
		return nil, err
	}
	if r.Finished() {
		return errorResponse("run %s already ended: %s", id, r.Describe())
	}
	wctx, cancel := context.WithTimeout(ctx, cancelWait)
	defer cancel()
	if !b.watch.CancelRun(wctx, id) {
		return nil, logical.CodedError(http.StatusConflict, fmt.Sprintf("run %s is %s but not executing in this plugin instance (it is being recovered after a restart); retry in a few seconds", id, r.Status))
	}
	if r, err = b.watch.Run(ctx, watchStorage{req.Storage}, id); err != nil {
		return nil, err
	}
	return &logical.Response{Data: runData(r)}, nil
}

// runData is what `vault read runs/ID` shows.
func runData(r *watch.Run) map[string]any {
	d := map[string]any{
		"id":         r.ID,
		"commit":     r.Commit,
		"status":     r.Status,
		"reason":     r.Reason,
		"attempt":    r.Attempt,
		"signers":    r.Signers,
		"trigger":    r.Trigger,
		"created_at": r.CreatedAt.Format(time.RFC3339Nano),
	}
	if len(r.SignedBy) > 0 || len(r.Rules) > 0 {
		// The signers that counted with the keys that verified, and the
		// signature rules that applied, as signatures/COMMIT shows them.
		c := checkData(&watch.Check{SignedBy: r.SignedBy, Rules: r.Rules})
		d["signed_by"], d["rules"] = c["signed_by"], c["rules"]
	}
	if r.ExitCode != nil {
		d["exit_code"] = *r.ExitCode
	}
	if r.ContainerID != "" {
		d["container_id"] = r.ContainerID
	}
	if r.EngineID != "" {
		d["engine_id"] = r.EngineID
	}
	for k, t := range map[string]time.Time{"started_at": r.StartedAt, "finished_at": r.FinishedAt} {
		if !t.IsZero() {
			d[k] = t.Format(time.RFC3339Nano)
		}
	}
	return d
}

const pathRunsHelpDesc = `
Every attempt to run the commands for a commit is a run, written to storage
before its container starts. Statuses: queued (checks passed, preparing),
running (container started), succeeded (exit 0: its commit became the last
successful commit), failed (reason and exit_code say why: non-zero exit,
"timeout", a vault request, Docker), canceled (by runs/ID/cancel),
interrupted (the run's container was stopped or lost: the mount was
disabled, or it is gone; the commit is retried). A planned handover of the
active node (step-down, seal, shutdown, plugin reload) leaves a running
container running: the run stays running and the next owner re-attaches to
it. engine_id names the Docker engine a run started on: a run started on an
engine the active node cannot see is fenced (see status) rather than run
twice.

Run ids start with their creation time (UTC), so they sort by age. The API
lists them newest first; the CLI's table output re-sorts them, which puts the
newest last (use -format=json to keep the API's order).

The newest 50 runs are kept with their logs.
`

const pathRunLogHelpDesc = `
Reads the run's output (stdout and stderr of the commands) in the field log.
Pages are byte ranges: pass offset=<next_offset> to continue, for example to
follow a running command. size is the number of bytes written so far; the
oldest output beyond 2 MiB per run is dropped (dropped_bytes), keeping the
end, where failures show. complete is true once the run ended and the page
reaches the end of the log.
`

const pathRunCancelHelpDesc = `
Cancels the run in progress: its container is killed and removed, and the run
is recorded as canceled. The commit is then not retried until a new commit
arrives or "vault write flant_gitops/poll retry=true". Waits up to 30 seconds
for the container to be gone and answers with the run.
`
