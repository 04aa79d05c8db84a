package backend

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/vault/api"
	"github.com/hashicorp/vault/sdk/logical"

	"github.com/flant/flant_gitops/backend/approle"
)

// containerVaultCACertPath is where the target Vault's CA lands in the
// container when vault_cacert is set; VAULT_CACERT points at it.
const containerVaultCACertPath = "/etc/flant_gitops/vault-ca.pem"

// prepareVaultRequests makes every configured vault request, wrapped, with
// the AppRole token, right before a run's container starts. env holds one
// VAULT_REQUEST_TOKEN_<NAME> per request plus VAULT_ADDR, VAULT_CACERT and
// VAULT_TLS_SERVER_NAME; files holds the CA file VAULT_CACERT names. With no
// requests configured nothing is contacted and both are empty.
//
// The first failing request fails the whole preparation with the request's
// name and the target's answer. Wrapping tokens already made for the other
// requests are dropped, not revoked: they never left this process, can be
// used once, and expire after their wrap_ttl.
func (b *backend) prepareVaultRequests(ctx context.Context, s logical.Storage) (map[string]string, map[string][]byte, error) {
	env, files := map[string]string{}, map[string][]byte{}
	reqs, err := listVaultRequests(ctx, s)
	if err != nil {
		return nil, nil, fmt.Errorf("vault requests: %w", err)
	}
	if len(reqs) == 0 {
		return env, files, nil
	}

	// A rotation that fails here does not fail the run while the current
	// secret_id still works; the periodic function keeps retrying it.
	var t approle.Target
	inFn := false
	err = b.approle.WithTarget(ctx, approleStorage(s), func(target *approle.Target, login approle.Login) error {
		inFn = true
		if target == nil {
			return fmt.Errorf("vault requests %s are configured but configure_vault_access is not: write flant_gitops/configure_vault_access or delete the requests",
				requestNames(reqs))
		}
		t = *target
		c, token, err := login()
		if err != nil {
			return fmt.Errorf("vault requests %s: %w", requestNames(reqs), err)
		}
		for _, r := range reqs {
			name, err := requestEnvVar(r)
			if err != nil {
				return fmt.Errorf("vault request %q: %w", r.Name, err)
			}
			wrapped, err := wrappedRequest(ctx, c, token, r)
			if err != nil {
				return fmt.Errorf("vault request %q (%s %s on %s): %w", r.Name, requestMethod(r), r.Path, t.Addr, err)
			}
			env[name] = wrapped
		}
		return nil
	})
	if err != nil && !inFn {
		return nil, nil, fmt.Errorf("vault requests: %w", err)
	}
	if err != nil {
		return nil, nil, err
	}

	env["VAULT_ADDR"] = t.Addr
	if t.TLSServerName != "" {
		env["VAULT_TLS_SERVER_NAME"] = t.TLSServerName
	}
	if t.CACert != "" {
		env["VAULT_CACERT"] = containerVaultCACertPath
		files[containerVaultCACertPath] = []byte(t.CACert)
	}
	return env, files, nil
}

func requestNames(reqs []*vaultRequestEntry) string {
	names := make([]string, len(reqs))
	for i, r := range reqs {
		names[i] = strconv.Quote(r.Name)
	}
	return strings.Join(names, ", ")
}

func requestMethod(r *vaultRequestEntry) string {
	if r.Method == "" {
		return http.MethodGet
	}
	return strings.ToUpper(r.Method)
}

// requestEnvVar is the stored VAULT_REQUEST_TOKEN_<NAME>, derived again
// from the name for an entry stored without it.
func requestEnvVar(r *vaultRequestEntry) (string, error) {
	if r.EnvVar != "" {
		return r.EnvVar, nil
	}
	return vaultRequestEnvVar(r.Name)
}

// wrappedRequest makes r with token and returns the wrapping token of the
// answer. Non-2xx answers come back as *api.ResponseError carrying the
// target's own error messages.
func wrappedRequest(ctx context.Context, c *api.Client, token string, r *vaultRequestEntry) (string, error) {
	ttl := r.WrapTTL
	if ttl <= 0 {
		ttl = defaultWrapTTL
	}
	path := strings.TrimPrefix(strings.TrimPrefix(r.Path, "/"), "v1/")
	if path == "" {
		return "", errors.New("the request has no path")
	}
	wrapTTL := fmt.Sprintf("%ds", int64(ttl/time.Second))
	cl := approle.As(c, token, wrapTTL)

	// The raw calls do not apply the client timeout themselves.
	ctx, cancel := context.WithTimeout(ctx, approle.ClientTimeout)
	defer cancel()

	var (
		resp *api.Response
		err  error
	)
	switch m := requestMethod(r); m {
	case http.MethodGet, "LIST":
		q := queryValues(r.Options)
		if m == "LIST" {
			q.Set("list", "true")
		}
		resp, err = cl.Logical().ReadRawWithDataWithContext(ctx, path, q)
	case http.MethodPost, http.MethodPut:
		body, jerr := json.Marshal(bodyOptions(r.Options))
		if jerr != nil {
			return "", fmt.Errorf("encode options as JSON: %w", jerr)
		}
		resp, err = cl.Logical().WriteRawWithContext(ctx, path, body)
	case http.MethodDelete:
		q := queryValues(r.Options)
		resp, err = cl.WithRequestCallbacks(func(req *api.Request) {
			req.ClientToken, req.WrapTTL = token, wrapTTL
			for k, v := range q {
				req.Params[k] = v
			}
		}).Logical().DeleteRawWithContext(ctx, path)
	default:
		return "", fmt.Errorf("method %q is not supported: use GET, LIST, POST, PUT or DELETE", r.Method)
	}
	if resp != nil {
		defer resp.Body.Close()
	}
	if err != nil {
		return "", err
	}
	secret, err := api.ParseSecret(resp.Body)
	if err != nil {
		return "", fmt.Errorf("read the target's answer (HTTP %d): %w", resp.StatusCode, err)
	}
	if secret == nil || secret.WrapInfo == nil || secret.WrapInfo.Token == "" {
		return "", fmt.Errorf("the target answered HTTP %d without a wrapped response: the path returned nothing to wrap", resp.StatusCode)
	}
	return secret.WrapInfo.Token, nil
}

func bodyOptions(opts map[string]any) map[string]any {
	if opts == nil {
		return map[string]any{}
	}
	return opts
}

// queryValues turns options into query parameters for GET, LIST and DELETE:
// lists become repeated parameters, everything else its JSON text (strings
// without quotes).
func queryValues(opts map[string]any) url.Values {
	q := url.Values{}
	for k, v := range opts {
		switch v := v.(type) {
		case []any:
			for _, e := range v {
				q.Add(k, scalarText(e))
			}
		default:
			q.Set(k, scalarText(v))
		}
	}
	return q
}

func scalarText(v any) string {
	if s, ok := v.(string); ok {
		return s
	}
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprint(v)
	}
	return string(b)
}
