package backend

import (
	"context"
	"errors"
	"net/http"
	"time"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"

	"github.com/flant/flant_gitops/backend/events"
)

// closeEventsTimeout bounds how long Clean waits for subscribers to stop.
const closeEventsTimeout = 10 * time.Second

func (b *backend) closeEvents(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, closeEventsTimeout)
	defer cancel()
	b.events.Close(ctx)
}

// publishPatch wraps the patch handler so every answer is published as one
// PatchFinished event, its outcome read from the answer the caller gets.
func (b *backend) publishPatch(h framework.OperationFunc) framework.OperationFunc {
	return func(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
		start := time.Now()
		resp, err := h(ctx, req, d)
		e := events.Event{Kind: events.PatchFinished, Target: d.Get("repository").(string), Duration: time.Since(start)}
		e.Outcome, e.Reason = patchOutcome(resp, err)
		if !patchTargetKnown(e.Outcome) {
			// The name is the caller's text until a configured target
			// answers to it: counting it would let callers grow metrics.
			if repo, gerr := getRepository(ctx, req.Storage, e.Target); gerr != nil || repo == nil {
				e.Target = ""
			}
		}
		if e.Outcome == events.PatchLanded {
			e.Commit, _ = resp.Data["commit"].(string)
			e.Branch, _ = resp.Data["branch"].(string)
		}
		if id, gerr := b.mount.get(ctx, req.Storage); gerr == nil {
			e.Mount = id
		}
		b.events.Publish(e)
		return resp, err
	}
}

// patchOutcome classifies a patch answer by what the caller was told.
func patchOutcome(resp *logical.Response, err error) (string, string) {
	if err != nil {
		var coded logical.HTTPCodedError
		if errors.As(err, &coded) {
			return outcomeOfCode(coded.Code()), err.Error()
		}
		return events.PatchError, err.Error()
	}
	if resp == nil {
		return events.PatchError, "no answer"
	}
	if resp.IsError() {
		return events.PatchInvalid, resp.Error().Error()
	}
	switch {
	case resp.Data["dry_run"] == true:
		return events.PatchDryRun, ""
	case resp.Data["no_op"] == true:
		return events.PatchNoop, ""
	}
	return events.PatchLanded, ""
}

// patchTargetKnown: these outcomes come only from a configured target.
func patchTargetKnown(outcome string) bool {
	switch outcome {
	case events.PatchLanded, events.PatchNoop, events.PatchDryRun, events.PatchConflict, events.PatchRefused:
		return true
	}
	return false
}

func outcomeOfCode(code int) string {
	switch code {
	case http.StatusBadRequest, http.StatusNotFound, http.StatusRequestEntityTooLarge:
		return events.PatchInvalid
	case http.StatusForbidden, http.StatusUnauthorized:
		return events.PatchDenied
	case http.StatusConflict:
		return events.PatchConflict
	case http.StatusUnprocessableEntity:
		return events.PatchRefused
	case http.StatusTooManyRequests:
		return events.PatchBusy
	}
	return events.PatchError
}
