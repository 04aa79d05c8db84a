package backend

import (
	"reflect"
	"testing"

	"github.com/hashicorp/vault/sdk/logical"
)

func TestVaultRequestEnvVar(t *testing.T) {
	cases := []struct {
		name, want string
		ok         bool
	}{
		{"db", "VAULT_REQUEST_TOKEN_DB", true},
		{"deploy-token", "VAULT_REQUEST_TOKEN_DEPLOY_TOKEN", true},
		{"app.v2_x", "VAULT_REQUEST_TOKEN_APP_V2_X", true},
		{"9lives", "VAULT_REQUEST_TOKEN_9LIVES", true},
		{"", "", false},
		{"has space", "", false},
		{"semi;colon", "", false},
		{"dollar$", "", false},
		{"ünicode", "", false},
		{"-leading", "", false},
	}
	for _, tc := range cases {
		got, err := vaultRequestEnvVar(tc.name)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("vaultRequestEnvVar(%q) = %q, %v; want %q (ok=%v)", tc.name, got, err, tc.want, tc.ok)
		}
	}
}

func TestVaultRequestWriteReadListDelete(t *testing.T) {
	b, s := newTestBackend(t, nil, nil)
	resp := configReq(t, b, s, logical.UpdateOperation, "configure/vault_request/deploy-token", map[string]any{
		"path":     "auth/token/create",
		"method":   "post",
		"options":  map[string]any{"ttl": "1h", "policies": []any{"deploy"}},
		"wrap_ttl": "2m",
	})
	mustOK(t, resp, "write")
	mustOK(t, configReq(t, b, s, logical.UpdateOperation, "configure/vault_request/db", map[string]any{"path": "database/creds/app"}), "write db")

	resp = configReq(t, b, s, logical.ReadOperation, "configure/vault_request/deploy-token", nil)
	want := map[string]any{
		"name":     "deploy-token",
		"path":     "auth/token/create",
		"method":   "POST",
		"options":  map[string]any{"ttl": "1h", "policies": []any{"deploy"}},
		"wrap_ttl": int64(120),
		"env_var":  "VAULT_REQUEST_TOKEN_DEPLOY_TOKEN",
	}
	if !reflect.DeepEqual(resp.Data, want) {
		t.Errorf("read:\n got %#v\nwant %#v", resp.Data, want)
	}
	resp = configReq(t, b, s, logical.ReadOperation, "configure/vault_request/db", nil)
	if resp.Data["method"] != "GET" || resp.Data["wrap_ttl"] != int64(60) {
		t.Errorf("defaults: got %#v, want GET and 60s", resp.Data)
	}

	// Partial update keeps the other fields.
	mustOK(t, configReq(t, b, s, logical.UpdateOperation, "configure/vault_request/deploy-token", map[string]any{"wrap_ttl": "5m"}), "update")
	r, _ := getVaultRequest(t.Context(), s, "deploy-token")
	if r.Path != "auth/token/create" || r.Method != "POST" || r.WrapTTL.Minutes() != 5 {
		t.Errorf("after partial update: %+v", r)
	}

	resp = configReq(t, b, s, logical.ListOperation, "configure/vault_request/", nil)
	if !reflect.DeepEqual(resp.Data["keys"], []string{"db", "deploy-token"}) {
		t.Errorf("list = %#v", resp.Data["keys"])
	}
	all, err := listVaultRequests(t.Context(), s)
	if err != nil || len(all) != 2 || all[1].EnvVar != "VAULT_REQUEST_TOKEN_DEPLOY_TOKEN" {
		t.Errorf("listVaultRequests = %+v, %v", all, err)
	}

	mustOK(t, configReq(t, b, s, logical.DeleteOperation, "configure/vault_request/db", nil), "delete")
	if resp := configReq(t, b, s, logical.ReadOperation, "configure/vault_request/db", nil); resp != nil {
		t.Errorf("read after delete = %#v", resp)
	}
}

func TestVaultRequestValidation(t *testing.T) {
	cases := []struct {
		name, reqName string
		data          map[string]any
		want          []string
	}{
		{"bad name", "my request", map[string]any{"path": "a/b"}, []string{"vault_request name", "letters, digits"}},
		{"env collision", "deploy.token", map[string]any{"path": "a/b"}, []string{"VAULT_REQUEST_TOKEN_DEPLOY_TOKEN", "\"deploy-token\""}},
		{"case collision", "DEPLOY_TOKEN", map[string]any{"path": "a/b"}, []string{"VAULT_REQUEST_TOKEN_DEPLOY_TOKEN"}},
		{"unknown method", "x", map[string]any{"path": "a/b", "method": "PATCH"}, []string{"method", "GET, POST, PUT, LIST or DELETE"}},
		{"short wrap_ttl", "x", map[string]any{"path": "a/b", "wrap_ttl": "59s"}, []string{"wrap_ttl", "at least 60s"}},
		{"missing path", "x", map[string]any{}, []string{"path is missing"}},
		{"v1 only", "x", map[string]any{"path": "/v1/"}, []string{"path", "names no API path"}},
		{"double slash after v1", "x", map[string]any{"path": "/v1//secret"}, []string{"path", "not part of /v1/"}},
		{"v1 without slash", "x", map[string]any{"path": "v1/secret/data/x"}, []string{"ambiguous", "/v1/secret/data/x"}},
		{"root path", "x", map[string]any{"path": "/secret/data/x"}, []string{"path", "not part of /v1/"}},
		{"dotdot path", "x", map[string]any{"path": "secret/../sys/seal"}, []string{"path", "'..'"}},
		{"query in path", "x", map[string]any{"path": "secret/x?version=1"}, []string{"path", "options"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b, s := newTestBackend(t, nil, nil)
			mustOK(t, configReq(t, b, s, logical.UpdateOperation, "configure/vault_request/deploy-token", map[string]any{"path": "auth/token/create"}), "seed request")
			resp, err := rawConfigReq(b, s, logical.UpdateOperation, "configure/vault_request/"+tc.reqName, tc.data)
			mustBadRequest(t, resp, err, tc.want...)
			if all, _ := listVaultRequests(t.Context(), s); len(all) != 1 {
				t.Errorf("a refused write changed the requests: %d stored", len(all))
			}
		})
	}
}

// TestVaultRequestV1Path: the /v1/<path> form of the original flant_gitops is the same request as
// <path>, and a read shows the canonical form without /v1/.
func TestVaultRequestV1Path(t *testing.T) {
	cases := []struct{ name, path, want string }{
		{"v1 form", "/v1/secret/data/app", "secret/data/app"},
		{"canonical form", "secret/data/app", "secret/data/app"},
		{"v1 form with spaces around", "  /v1/auth/token/create ", "auth/token/create"},
		{"a mount named v1 under v1", "/v1/v1/data/app", "v1/data/app"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b, s := newTestBackend(t, nil, nil)
			resp := configReq(t, b, s, logical.UpdateOperation, "configure/vault_request/app", map[string]any{"path": tc.path})
			mustOK(t, resp, "write")
			if resp.Data["path"] != tc.want {
				t.Errorf("write answered path %q, want %q", resp.Data["path"], tc.want)
			}
			resp = configReq(t, b, s, logical.ReadOperation, "configure/vault_request/app", nil)
			if resp.Data["path"] != tc.want {
				t.Errorf("read shows path %q, want %q", resp.Data["path"], tc.want)
			}
			r, err := getVaultRequest(t.Context(), s, "app")
			if err != nil || r.Path != tc.want {
				t.Errorf("stored %+v, %v; want path %q", r, err, tc.want)
			}
		})
	}
}
