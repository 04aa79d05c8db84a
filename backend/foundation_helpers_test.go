package backend

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/hashicorp/vault/sdk/helper/errutil"
	"github.com/hashicorp/vault/sdk/logical"
)

// Commit ids of the watch tests: fake, full length.
const (
	commitA = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	commitB = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
	commitC = "cccccccccccccccccccccccccccccccccccccccc"
)

// newTestBackend is a backend on in-memory storage, set up as Vault would,
// without the gRPC boundary. Its system view answers entity and groups as
// the caller's identity (nil for none).
func newTestBackend(t *testing.T, entity *logical.Entity, groups []*logical.Group) (*backend, logical.Storage) {
	t.Helper()
	conf := logical.TestBackendConfig()
	conf.StorageView = &logical.InmemStorage{}
	sys := conf.System.(*logical.StaticSystemView)
	sys.EntityVal, sys.GroupsVal = entity, groups
	lb, err := Factory(context.Background(), conf)
	if err != nil {
		t.Fatalf("Factory: %v", err)
	}
	b := lb.(*backend)
	t.Cleanup(func() { b.Cleanup(context.Background()) })
	return b, conf.StorageView
}

// configReq sends one request and fails the test on a Go error (a 500).
func configReq(t *testing.T, b *backend, s logical.Storage, op logical.Operation, path string, data map[string]any) *logical.Response {
	t.Helper()
	resp, err := rawConfigReq(b, s, op, path, data)
	if err != nil {
		t.Fatalf("%s %s: %v", op, path, err)
	}
	return resp
}

func rawConfigReq(b *backend, s logical.Storage, op logical.Operation, path string, data map[string]any) (*logical.Response, error) {
	req := &logical.Request{
		Operation:  op,
		Path:       path,
		Data:       data,
		Storage:    s,
		MountPoint: "flant_gitops/",
	}
	if op == logical.UpdateOperation || op == logical.CreateOperation {
		// Vault turns a write into create or update with the existence
		// check; do the same so both callbacks are exercised.
		checkFound, exists, err := b.HandleExistenceCheck(context.Background(), req)
		var userErr errutil.UserError
		if errors.As(err, &userErr) {
			// Vault answers field conversion errors here with a 400.
			return logical.ErrorResponse(userErr.Error()), nil
		}
		if err != nil {
			return nil, err
		}
		if checkFound {
			req.Operation = logical.UpdateOperation
			if !exists {
				req.Operation = logical.CreateOperation
			}
		}
	}
	return b.HandleRequest(context.Background(), req)
}

// mustOK fails unless resp is a success.
func mustOK(t *testing.T, resp *logical.Response, what string) {
	t.Helper()
	if resp != nil && resp.IsError() {
		t.Fatalf("%s: unexpected error response: %v", what, resp.Error())
	}
}

// mustBadRequest fails unless resp is a 400 whose message contains every
// wanted fragment.
func mustBadRequest(t *testing.T, resp *logical.Response, err error, want ...string) {
	t.Helper()
	if err != nil {
		t.Fatalf("want a 400 error response, got Go error (500): %v", err)
	}
	if resp == nil || !resp.IsError() {
		t.Fatalf("want a 400 error response, got %#v", resp)
	}
	if status := status(resp, nil); status != http.StatusBadRequest {
		t.Fatalf("want HTTP 400, got %d for %v", status, resp.Error())
	}
	msg := resp.Error().Error()
	for _, w := range want {
		if !strings.Contains(msg, w) {
			t.Errorf("error %q does not mention %q", msg, w)
		}
	}
}

// status is the HTTP status Vault would answer for a handler's result.
func status(resp *logical.Response, err error) int {
	var coded logical.HTTPCodedError
	switch {
	case errors.As(err, &coded):
		return coded.Code()
	case err != nil:
		return http.StatusInternalServerError
	case resp != nil && resp.IsError():
		return http.StatusBadRequest
	}
	return http.StatusOK
}

func errText(resp *logical.Response, err error) string {
	if err != nil {
		return err.Error()
	}
	if resp != nil && resp.IsError() {
		return resp.Error().Error()
	}
	return ""
}

func isUnsupported(err error) bool {
	return errors.Is(err, logical.ErrUnsupportedOperation) || errors.Is(err, logical.ErrUnsupportedPath)
}
