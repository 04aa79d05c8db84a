package backend

import (
	"errors"
	"net/http"
	"testing"

	"github.com/hashicorp/vault/sdk/logical"

	"github.com/flant/flant_gitops/backend/events"
)

func TestPatchOutcome(t *testing.T) {
	tests := []struct {
		name string
		resp *logical.Response
		err  error
		want string
	}{
		{"landed", &logical.Response{Data: map[string]any{"commit": "abc", "no_op": false}}, nil, events.PatchLanded},
		{"no-op", &logical.Response{Data: map[string]any{"commit": "abc", "no_op": true}}, nil, events.PatchNoop},
		{"dry run", &logical.Response{Data: map[string]any{"dry_run": true, "no_op": false}}, nil, events.PatchDryRun},
		{"bad request", logical.ErrorResponse("commands is missing"), nil, events.PatchInvalid},
		{"unknown repository", nil, logical.CodedError(http.StatusNotFound, "repository x is not configured"), events.PatchInvalid},
		{"policy", nil, logical.CodedError(http.StatusForbidden, "patch denied by the policy"), events.PatchDenied},
		{"conflict", nil, logical.CodedError(http.StatusConflict, "the branch kept moving"), events.PatchConflict},
		{"server refused", nil, logical.CodedError(http.StatusUnprocessableEntity, "pre-receive hook declined"), events.PatchRefused},
		{"busy", nil, logical.CodedError(http.StatusTooManyRequests, "retry in 1s"), events.PatchBusy},
		{"git down", nil, logical.CodedError(http.StatusBadGateway, "git server: connection refused"), events.PatchError},
		{"plain error", nil, errors.New("storage failed"), events.PatchError},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, reason := patchOutcome(tt.resp, tt.err)
			if got != tt.want {
				t.Errorf("outcome %q (%s), want %q", got, reason, tt.want)
			}
			if got != events.PatchLanded && got != events.PatchNoop && got != events.PatchDryRun && reason == "" {
				t.Errorf("outcome %q without a reason", got)
			}
		})
	}
}
