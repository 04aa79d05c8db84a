package backend

import (
	"context"
	"encoding/json"
	"errors"

	"github.com/hashicorp/vault/sdk/logical"
)

// PluginFactory is the factory the plugin binary serves to Vault: Factory's
// backend, with coded errors answered as one sentence. Vault collects the
// error a backend returns into a multierror, so logical.CodedError(409,
// "branch moved") reaches the caller as "1 error occurred:\n\t* branch
// moved\n\n"; an answer with the status and Vault's own error body reads as
// the sentence it is, in the API answer and in the vault CLI. In-process
// callers (the tests) keep Factory and see the coded error itself.
func PluginFactory(ctx context.Context, conf *logical.BackendConfig) (logical.Backend, error) {
	lb, err := Factory(ctx, conf)
	if err != nil {
		return nil, err
	}
	return plainErrors{lb.(*backend)}, nil
}

// plainErrors is the backend as Vault sees it.
type plainErrors struct{ *backend }

func (p plainErrors) HandleRequest(ctx context.Context, req *logical.Request) (*logical.Response, error) {
	resp, err := p.backend.HandleRequest(ctx, req)
	var coded logical.HTTPCodedError
	if err == nil || !errors.As(err, &coded) || coded.Code() < 400 {
		return resp, err
	}
	return codedErrorResponse(coded.Code(), err.Error()), nil
}

// codedErrorResponse is the answer Vault would give for the error, without
// the multierror wrapping: the status, and {"errors": [msg]}.
func codedErrorResponse(code int, msg string) *logical.Response {
	body, err := json.Marshal(struct {
		Errors []string `json:"errors"`
	}{[]string{msg}})
	if err != nil {
		// A string always encodes; keep the status whatever happens.
		body = []byte(`{"errors":["the plugin could not encode its error message"]}`)
	}
	return &logical.Response{Data: map[string]any{
		logical.HTTPContentType: "application/json",
		logical.HTTPStatusCode:  code,
		// A string, so that audit devices HMAC it like other response data.
		logical.HTTPRawBody: string(body),
	}}
}
