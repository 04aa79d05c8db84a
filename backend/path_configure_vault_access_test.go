package backend

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"

	"github.com/flant/flant_gitops/backend/vaulttest"
)

func vaultAccessData() map[string]any {
	return map[string]any{
		"vault_addr":    "https://vault.example.com:8200/",
		"role_name":     "myrole",
		"role_id":       "role-id-1",
		"secret_id":     "secret-id-very-secret",
		"secret_id_ttl": "120m",
	}
}

func TestVaultAccessReadIsRedacted(t *testing.T) {
	b, s := newTestBackend(t, nil, nil)
	ca, _ := vaulttest.NewTestCA(t, "test CA")
	data := vaultAccessData()
	data["vault_cacert"] = vaulttest.CACertPEM(ca)
	data["vault_tls_server_name"] = "vault.internal"
	mustOK(t, configReq(t, b, s, logical.UpdateOperation, "configure_vault_access", data), "write")

	resp := configReq(t, b, s, logical.ReadOperation, "configure_vault_access", nil)
	if _, ok := resp.Data["secret_id"]; ok {
		t.Fatalf("read returned a secret_id field: %#v", resp.Data)
	}
	if strings.Contains(fmt.Sprint(resp.Data), "secret-id-very-secret") {
		t.Fatalf("read leaks the secret_id value: %#v", resp.Data)
	}
	want := map[string]any{
		"vault_addr":            "https://vault.example.com:8200",
		"vault_tls_server_name": "vault.internal",
		"approle_mount_point":   "auth/approle",
		"role_name":             "myrole",
		"role_id":               "role-id-1",
		"secret_id_ttl":         int64(7200),
	}
	for k, v := range want {
		if resp.Data[k] != v {
			t.Errorf("read %s = %#v, want %#v", k, resp.Data[k], v)
		}
	}
	if !strings.Contains(resp.Data["vault_cacert"].(string), "BEGIN CERTIFICATE") || resp.Data["secret_id_expires_at"] == "" {
		t.Errorf("read = %#v, want the CA and an expiry", resp.Data)
	}
}

func TestVaultAccessPartialUpdateRotatesSecretIDOnly(t *testing.T) {
	b, s := newTestBackend(t, nil, nil)
	mustOK(t, configReq(t, b, s, logical.UpdateOperation, "configure_vault_access", vaultAccessData()), "create")
	before, _ := getVaultAccess(t.Context(), s)
	time.Sleep(10 * time.Millisecond)
	mustOK(t, configReq(t, b, s, logical.UpdateOperation, "configure_vault_access", map[string]any{"secret_id": "second"}), "update")
	after, _ := getVaultAccess(t.Context(), s)
	if after.SecretID != "second" || !after.SecretIDIssuedAt.After(before.SecretIDIssuedAt) {
		t.Errorf("secret_id not replaced with a new issue time: %+v", after)
	}
	if after.RoleID != before.RoleID || after.VaultAddr != before.VaultAddr || after.SecretIDTTL != before.SecretIDTTL {
		t.Errorf("fields not given changed: before %+v after %+v", before, after)
	}
	mustOK(t, configReq(t, b, s, logical.DeleteOperation, "configure_vault_access", nil), "delete")
	if v, _ := getVaultAccess(t.Context(), s); v != nil {
		t.Errorf("access after delete = %+v", v)
	}
}

func TestVaultAccessValidation(t *testing.T) {
	cases := []struct {
		name  string
		field string
		value any
		want  []string
	}{
		{"ftp addr", "vault_addr", "ftp://vault:8200", []string{"vault_addr", "https://"}},
		{"addr with path", "vault_addr", "https://vault:8200/v1/", []string{"vault_addr", "without user, path or query"}},
		{"no addr", "vault_addr", "", []string{"vault_addr"}},
		{"bad server name", "vault_tls_server_name", "https://vault", []string{"vault_tls_server_name"}},
		{"bad cacert", "vault_cacert", "not pem", []string{"vault_cacert", "PEM"}},
		{"key as cacert", "vault_cacert", "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", []string{"vault_cacert", "never a private key"}},
		{"bad mount", "approle_mount_point", "auth/../sys", []string{"approle_mount_point"}},
		{"bad role", "role_name", "my role", []string{"role_name"}},
		{"empty role_id", "role_id", " ", []string{"role_id is empty"}},
		{"empty secret_id", "secret_id", "", []string{"secret_id is empty"}},
		{"short ttl", "secret_id_ttl", "30s", []string{"secret_id_ttl", "at least 1m"}},
		{"negative ttl", "secret_id_ttl", -5, []string{"secret_id_ttl"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b, s := newTestBackend(t, nil, nil)
			data := vaultAccessData()
			data[tc.field] = tc.value
			resp, err := rawConfigReq(b, s, logical.UpdateOperation, "configure_vault_access", data)
			mustBadRequest(t, resp, err, tc.want...)
			if v, _ := getVaultAccess(t.Context(), s); v != nil {
				t.Errorf("a refused write stored access")
			}
		})
	}
}

func TestVaultAccessFirstWriteNeedsRequiredFields(t *testing.T) {
	b, s := newTestBackend(t, nil, nil)
	resp, err := rawConfigReq(b, s, logical.UpdateOperation, "configure_vault_access", map[string]any{"vault_addr": "https://vault:8200"})
	mustBadRequest(t, resp, err, "missing role_id, role_name, secret_id")
}
