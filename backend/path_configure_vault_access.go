package backend

import (
	"context"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"
)

const defaultApproleMountPoint = "auth/approle"

// mountPointRe is a Vault mount path such as auth/approle or auth/team-a/approle.
var mountPointRe = regexp.MustCompile(`^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*$`)

func pathConfigureVaultAccess(b *backend) []*framework.Path {
	return []*framework.Path{{
		Pattern: "configure_vault_access$",
		DisplayAttrs: &framework.DisplayAttributes{
			OperationPrefix: "flant-gitops",
			OperationSuffix: "vault-access-configuration",
		},
		Fields: map[string]*framework.FieldSchema{
			"vault_addr": {
				Type:        framework.TypeString,
				Description: "Address of the target Vault the vault requests are made to, e.g. https://vault.example.com:8200. It may be this Vault. Required on first write.",
			},
			"vault_tls_server_name": {
				Type:        framework.TypeString,
				Description: "Host name to verify the target Vault's TLS certificate against, when it differs from the host in vault_addr.",
			},
			"vault_cacert": {
				Type:        framework.TypeString,
				Description: "PEM CA certificate(s) that sign the target Vault's TLS certificate, e.g. vault_cacert=@ca.pem; empty uses the system roots. Also given to the commands as VAULT_CACERT.",
			},
			"approle_mount_point": {
				Type:        framework.TypeString,
				Default:     defaultApproleMountPoint,
				Description: "Path of the AppRole auth method on the target Vault. Default auth/approle.",
			},
			"role_name": {
				Type:        framework.TypeString,
				Description: "AppRole role name on the target Vault; used to generate fresh secret_ids. Required on first write.",
			},
			"role_id": {
				Type:        framework.TypeString,
				Description: "role_id of that role (vault read auth/approle/role/NAME/role-id). Required on first write.",
			},
			"secret_id": {
				Type:         framework.TypeString,
				Description:  "A secret_id of that role (vault write -f auth/approle/role/NAME/secret-id). Write-only: never returned; the plugin replaces it with fresh ones before it expires. Required on first write.",
				DisplayAttrs: &framework.DisplayAttributes{Sensitive: true},
			},
			"secret_id_ttl": {
				Type:        framework.TypeDurationSecond,
				Description: "How long a secret_id of the role lives (the role's secret_id_ttl, e.g. 120m); the plugin rotates it before then. 0 means it does not expire.",
			},
		},
		ExistenceCheck: b.vaultAccessExists,
		Operations: map[logical.Operation]framework.OperationHandler{
			logical.ReadOperation: &framework.PathOperation{
				Callback:  b.pathVaultAccessRead,
				Responses: okWith(vaultAccessResponseFields()),
				Summary:   "Read the target Vault access without the secret_id.",
			},
			logical.CreateOperation: &framework.PathOperation{
				Callback:                    b.pathVaultAccessWrite,
				Responses:                   noContent(),
				Summary:                     "Configure AppRole access to the target Vault.",
				ForwardPerformanceStandby:   true,
				ForwardPerformanceSecondary: true,
			},
			logical.UpdateOperation: &framework.PathOperation{
				Callback:                    b.pathVaultAccessWrite,
				Responses:                   noContent(),
				Summary:                     "Change some fields of the target Vault access; fields not given keep their values.",
				ForwardPerformanceStandby:   true,
				ForwardPerformanceSecondary: true,
			},
			logical.DeleteOperation: &framework.PathOperation{
				Callback:                    b.pathVaultAccessDelete,
				Responses:                   noContent(),
				Summary:                     "Delete the target Vault access.",
				ForwardPerformanceStandby:   true,
				ForwardPerformanceSecondary: true,
			},
		},
		HelpSynopsis:    pathVaultAccessHelpSyn,
		HelpDescription: pathVaultAccessHelpDesc,
	}}
}

func (b *backend) vaultAccessExists(ctx context.Context, req *logical.Request, _ *framework.FieldData) (bool, error) {
	v, err := getVaultAccess(ctx, req.Storage)
	return v != nil, err
}

func (b *backend) pathVaultAccessRead(ctx context.Context, req *logical.Request, _ *framework.FieldData) (*logical.Response, error) {
	v, err := getVaultAccess(ctx, req.Storage)
	if err != nil || v == nil {
		return nil, err
	}
	return &logical.Response{Data: vaultAccessResponse(v)}, nil
}

// vaultAccessResponse is the allow-list of what a read shows: never the
// secret_id, only when it was issued and when it expires.
func vaultAccessResponse(v *vaultAccessEntry) map[string]any {
	expires := ""
	if t := v.secretIDExpiresAt(); !t.IsZero() {
		expires = t.UTC().Format(time.RFC3339)
	}
	return map[string]any{
		"vault_addr":            v.VaultAddr,
		"vault_tls_server_name": v.VaultTLSServerName,
		"vault_cacert":          v.VaultCACert,
		"approle_mount_point":   v.ApproleMountPoint,
		"role_name":             v.RoleName,
		"role_id":               v.RoleID,
		"secret_id_ttl":         int64(v.SecretIDTTL.Seconds()),
		"secret_id_issued_at":   v.SecretIDIssuedAt.UTC().Format(time.RFC3339),
		"secret_id_expires_at":  expires,
	}
}

func (b *backend) pathVaultAccessWrite(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	b.configMu.Lock()
	defer b.configMu.Unlock()

	v, err := getVaultAccess(ctx, req.Storage)
	if err != nil {
		return nil, err
	}
	creating := v == nil
	if creating {
		v = &vaultAccessEntry{ApproleMountPoint: defaultApproleMountPoint}
	}
	before := *v
	if err := applyVaultAccessFields(v, d, time.Now()); err != nil {
		return respondErr(err)
	}
	// A rotation record left from an earlier access (deleted, then written
	// anew) belongs to the old target too.
	targetChanged := creating
	if !creating {
		changed := vaultTargetChanges(&before, v)
		if _, given := d.GetOk("secret_id"); len(changed) > 0 && !given && before.SecretID != "" {
			return respondErr(secretMustFollow(changed, "secret_id",
				"give secret_id (a secret_id of the role on the new target) in the same write, or delete configure_vault_access and write it anew"))
		}
		targetChanged = len(changed) > 0
	}
	var missing []string
	for field, value := range map[string]string{"vault_addr": v.VaultAddr, "role_name": v.RoleName, "role_id": v.RoleID, "secret_id": v.SecretID} {
		if value == "" {
			missing = append(missing, field)
		}
	}
	if len(missing) > 0 {
		slices.Sort(missing)
		return respondErr(invalidf("missing %s: configure_vault_access needs vault_addr, role_name, role_id and secret_id (see `vault path-help %sconfigure_vault_access`)", strings.Join(missing, ", "), req.MountPoint))
	}
	if err := putVaultAccess(ctx, req.Storage, v); err != nil {
		return nil, err
	}
	if targetChanged {
		// A rotation in flight holds secret_ids of the old target; they
		// must never be sent to the new one.
		if err := b.approle.ForgetRotation(ctx, approleStorage(req.Storage)); err != nil {
			return nil, err
		}
	}
	return nil, nil
}

// applyVaultAccessFields copies the given fields into v, validating each.
func applyVaultAccessFields(v *vaultAccessEntry, d *framework.FieldData, now time.Time) error {
	if raw, ok := d.GetOk("vault_addr"); ok {
		s, err := validateVaultAddr(raw.(string))
		if err != nil {
			return err
		}
		v.VaultAddr = s
	}
	if raw, ok := d.GetOk("vault_tls_server_name"); ok {
		s := strings.TrimSpace(raw.(string))
		if s != "" && (strings.ContainsAny(s, "/: ")) {
			return invalidf("vault_tls_server_name %q is not a host name: give only the name in the target Vault's certificate, e.g. vault.example.com", s)
		}
		v.VaultTLSServerName = s
	}
	if raw, ok := d.GetOk("vault_cacert"); ok {
		s, err := validateCACert(raw.(string))
		if err != nil {
			return err
		}
		v.VaultCACert = s
	}
	if raw, ok := d.GetOk("approle_mount_point"); ok {
		s := strings.Trim(strings.TrimSpace(raw.(string)), "/")
		if !mountPointRe.MatchString(s) || strings.Contains("/"+s+"/", "/../") {
			return invalidf("approle_mount_point %q is not a mount path: give the AppRole auth path on the target Vault, e.g. auth/approle", raw)
		}
		v.ApproleMountPoint = s
	}
	if raw, ok := d.GetOk("role_name"); ok {
		s := strings.TrimSpace(raw.(string))
		if len(s) > maxNameLen || !nameRe.MatchString(s) {
			return invalidf("role_name %q is not an AppRole role name: give the name used in auth/approle/role/NAME on the target Vault", s)
		}
		v.RoleName = s
	}
	if raw, ok := d.GetOk("role_id"); ok {
		s := strings.TrimSpace(raw.(string))
		if s == "" {
			return invalidf("role_id is empty: give the output of `vault read -field=role_id auth/approle/role/NAME/role-id` on the target Vault")
		}
		v.RoleID = s
	}
	if raw, ok := d.GetOk("secret_id"); ok {
		s := strings.TrimSpace(raw.(string))
		if s == "" {
			return invalidf("secret_id is empty: give the output of `vault write -f -field=secret_id auth/approle/role/NAME/secret-id` on the target Vault")
		}
		v.SecretID = s
		v.SecretIDIssuedAt = now
	}
	if raw, ok := d.GetOk("secret_id_ttl"); ok {
		ttl := time.Duration(raw.(int)) * time.Second
		if ttl < 0 {
			return invalidf("secret_id_ttl must not be negative: give the role's secret_id_ttl, e.g. 120m, or 0 when secret_ids do not expire")
		}
		if ttl > 0 && ttl < time.Minute {
			return invalidf("secret_id_ttl %s is too short to rotate the secret_id in time: give at least 1m (set the role's secret_id_ttl accordingly), or 0 when secret_ids do not expire", ttl)
		}
		v.SecretIDTTL = ttl
	}
	return nil
}

func (b *backend) pathVaultAccessDelete(ctx context.Context, req *logical.Request, _ *framework.FieldData) (*logical.Response, error) {
	b.configMu.Lock()
	err := deleteEntry(ctx, req.Storage, storageKeyVaultAccess)
	if err == nil {
		// Its secret_ids go nowhere once the access is gone; an unused
		// one expires with its TTL on the target.
		err = b.approle.ForgetRotation(ctx, approleStorage(req.Storage))
	}
	b.configMu.Unlock()
	if err != nil {
		return nil, err
	}
	// Revoke the token made with the deleted access now rather than leave it
	// to its TTL; outside configMu, as rotation takes the client's lock first.
	b.approle.Reset(ctx)
	return nil, nil
}

const pathVaultAccessHelpSyn = `AppRole access to the Vault that the vault requests are made to.`

const pathVaultAccessHelpDesc = `
Before each run the plugin logs in to the target Vault (this Vault or another
one) with AppRole and makes the requests of configure/vault_request, wrapped;
the wrapping tokens reach the commands as VAULT_REQUEST_TOKEN_<NAME>.

On the target Vault:

  vault auth enable approle
  vault policy write mypolicy mypolicy.hcl
  vault write auth/approle/role/myrole secret_id_ttl=120m token_ttl=90s token_policies=mypolicy
  vault read  -field=role_id auth/approle/role/myrole/role-id
  vault write -f -field=secret_id auth/approle/role/myrole/secret-id

Then here:

  vault write flant_gitops/configure_vault_access \
      vault_addr=https://vault.example.com:8200 role_name=myrole \
      role_id=ROLE_ID secret_id=SECRET_ID secret_id_ttl=120m vault_cacert=@ca.pem

With secret_id_ttl set, the plugin replaces the secret_id once two thirds of
it have passed: it generates a new one, logs in with it, then destroys the
old one. The role's token policy must allow that:

  path "auth/approle/role/myrole/secret-id"         { capabilities = ["update"] }
  path "auth/approle/role/myrole/secret-id/destroy" { capabilities = ["update"] }
  path "auth/approle/role/myrole/secret-id-accessor/destroy" { capabilities = ["update"] }

A read never shows secret_id. A later write changes only the fields it gives,
so "vault write flant_gitops/configure_vault_access secret_id=..." replaces
just the secret_id. A write that changes where the secret_id goes
(vault_addr, vault_cacert, vault_tls_server_name, approle_mount_point) must
give secret_id again: the stored one is never sent to another place.
`
