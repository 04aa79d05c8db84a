package backend

import (
	"context"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"
)

const (
	// vaultRequestEnvPrefix starts the name of the env var that carries a
	// request's wrapping token into the container.
	vaultRequestEnvPrefix = "VAULT_REQUEST_TOKEN_"

	defaultWrapTTL = time.Minute
	minWrapTTL     = time.Minute
)

// vaultRequestMethods are the methods a vault request may use.
var vaultRequestMethods = []string{"GET", "POST", "PUT", "LIST", "DELETE"}

// vaultRequestEnvVar derives VAULT_REQUEST_TOKEN_<NAME>: NAME upper-cased,
// with '-' and '.' turned into '_'. It refuses names that cannot make a
// valid environment variable name.
func vaultRequestEnvVar(name string) (string, error) {
	if err := validateName("vault_request", name); err != nil {
		return "", err
	}
	suffix := strings.Map(func(r rune) rune {
		if r == '-' || r == '.' {
			return '_'
		}
		return r
	}, strings.ToUpper(name))
	return vaultRequestEnvPrefix + suffix, nil
}

func pathVaultRequest(b *backend) []*framework.Path {
	return []*framework.Path{
		{
			Pattern: "configure/vault_request/?$",
			DisplayAttrs: &framework.DisplayAttributes{
				OperationPrefix: "flant-gitops",
				OperationSuffix: "vault-requests",
			},
			Operations: map[logical.Operation]framework.OperationHandler{
				logical.ListOperation: &framework.PathOperation{
					Callback:  b.pathVaultRequestList,
					Responses: listOK(""),
					Summary:   "List the names of the vault requests.",
				},
			},
			HelpSynopsis:    pathVaultRequestListHelpSyn,
			HelpDescription: pathVaultRequestHelpDesc,
		},
		{
			// NAME is matched broadly so that a bad name gets a 400 that
			// says what is allowed instead of a bare 404.
			Pattern: "configure/vault_request/(?P<name>.+)",
			DisplayAttrs: &framework.DisplayAttributes{
				OperationPrefix: "flant-gitops",
				OperationSuffix: "vault-request",
			},
			Fields: map[string]*framework.FieldSchema{
				"name": {
					Type:        framework.TypeString,
					Description: "Name of the request: letters, digits, '_', '.' or '-'. The wrapping token reaches the commands as VAULT_REQUEST_TOKEN_<NAME>, upper-cased with '-' and '.' turned into '_'.",
				},
				"path": {
					Type:        framework.TypeString,
					Description: "Vault API path of the request on the target Vault, e.g. secret/data/app or auth/token/create. The /v1/ form of the original flant_gitops (/v1/secret/data/app) is the same request; a read shows the path without /v1/. Required on first write.",
				},
				"method": {
					Type:          framework.TypeString,
					Default:       "GET",
					AllowedValues: []any{"GET", "POST", "PUT", "LIST", "DELETE"},
					Description:   "HTTP method of the request: GET (the default), POST, PUT, LIST or DELETE (any case).",
				},
				"options": {
					Type:        framework.TypeMap,
					Description: "Request data as a JSON object: the body of POST and PUT, query parameters of GET, LIST and DELETE. On the CLI pass the whole request as JSON on stdin: vault write PATH - <<< '{\"options\":{\"ttl\":\"1h\"}}'.",
				},
				"wrap_ttl": {
					Type:        framework.TypeDurationSecond,
					Default:     int(defaultWrapTTL.Seconds()),
					Description: "TTL of the wrapping token handed to the commands, at least 60s (the default); the commands must unwrap it within that time.",
				},
			},
			ExistenceCheck: b.vaultRequestExists,
			Operations: map[logical.Operation]framework.OperationHandler{
				logical.ReadOperation: &framework.PathOperation{
					Callback:  b.pathVaultRequestRead,
					Responses: okWith(vaultRequestResponseFields()),
					Summary:   "Read a vault request and its env var name.",
				},
				logical.CreateOperation: &framework.PathOperation{
					Callback:                    b.pathVaultRequestWrite,
					Responses:                   okWith(vaultRequestResponseFields()),
					Summary:                     "Add a vault request made before each run.",
					ForwardPerformanceStandby:   true,
					ForwardPerformanceSecondary: true,
				},
				logical.UpdateOperation: &framework.PathOperation{
					Callback:                    b.pathVaultRequestWrite,
					Responses:                   okWith(vaultRequestResponseFields()),
					Summary:                     "Change some fields of a vault request; fields not given keep their values.",
					ForwardPerformanceStandby:   true,
					ForwardPerformanceSecondary: true,
				},
				logical.DeleteOperation: &framework.PathOperation{
					Callback:                    b.pathVaultRequestDelete,
					Responses:                   noContent(),
					Summary:                     "Delete a vault request.",
					ForwardPerformanceStandby:   true,
					ForwardPerformanceSecondary: true,
				},
			},
			HelpSynopsis:    pathVaultRequestHelpSyn,
			HelpDescription: pathVaultRequestHelpDesc,
		},
	}
}

func (b *backend) vaultRequestExists(ctx context.Context, req *logical.Request, d *framework.FieldData) (bool, error) {
	name := d.Get("name").(string)
	if validateName("vault_request", name) != nil {
		return false, nil
	}
	r, err := getVaultRequest(ctx, req.Storage, name)
	return r != nil, err
}

func (b *backend) pathVaultRequestList(ctx context.Context, req *logical.Request, _ *framework.FieldData) (*logical.Response, error) {
	names, err := req.Storage.List(ctx, storagePrefixVaultRequest)
	if err != nil {
		return nil, err
	}
	return logical.ListResponse(names), nil
}

func (b *backend) pathVaultRequestRead(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	name := d.Get("name").(string)
	if err := validateName("vault_request", name); err != nil {
		return respondErr(err)
	}
	r, err := getVaultRequest(ctx, req.Storage, name)
	if err != nil || r == nil {
		return nil, err
	}
	return &logical.Response{Data: vaultRequestResponse(r)}, nil
}

// vaultRequestResponse is the allow-list of what a read shows.
func vaultRequestResponse(r *vaultRequestEntry) map[string]any {
	options := r.Options
	if options == nil {
		options = map[string]any{}
	}
	return map[string]any{
		"name":     r.Name,
		"path":     r.Path,
		"method":   r.Method,
		"options":  options,
		"wrap_ttl": int64(r.WrapTTL.Seconds()),
		"env_var":  r.EnvVar,
	}
}

func (b *backend) pathVaultRequestWrite(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	name := d.Get("name").(string)
	envVar, err := vaultRequestEnvVar(name)
	if err != nil {
		return respondErr(err)
	}

	b.configMu.Lock()
	defer b.configMu.Unlock()

	all, err := listVaultRequests(ctx, req.Storage)
	if err != nil {
		return nil, err
	}
	var entry *vaultRequestEntry
	for _, other := range all {
		switch {
		case other.Name == name:
			entry = other
		case other.EnvVar == envVar:
			return respondErr(invalidf("vault_request name %q gives env var %s, which vault_request %q already uses: choose a name that differs by more than case, '-', '.' or '_'", name, envVar, other.Name))
		}
	}
	creating := entry == nil
	if creating {
		entry = &vaultRequestEntry{Name: name, Method: "GET", WrapTTL: defaultWrapTTL}
	}
	entry.EnvVar = envVar
	if err := applyVaultRequestFields(entry, d); err != nil {
		return respondErr(err)
	}
	if entry.Path == "" {
		return respondErr(invalidf("path is missing: give the Vault API path to request, e.g. path=secret/data/app"))
	}
	if err := putEntry(ctx, req.Storage, storagePrefixVaultRequest+name, entry); err != nil {
		return nil, err
	}
	return &logical.Response{Data: vaultRequestResponse(entry)}, nil
}

func applyVaultRequestFields(r *vaultRequestEntry, d *framework.FieldData) error {
	if raw, ok := d.GetOk("path"); ok {
		p, err := validateVaultRequestPath(raw.(string))
		if err != nil {
			return err
		}
		r.Path = p
	}
	if raw, ok := d.GetOk("method"); ok {
		m := strings.ToUpper(strings.TrimSpace(raw.(string)))
		if !slices.Contains(vaultRequestMethods, m) {
			return invalidf("method %q is not supported: use GET, POST, PUT, LIST or DELETE", raw)
		}
		r.Method = m
	}
	if raw, ok := d.GetOk("options"); ok {
		r.Options = raw.(map[string]any)
	}
	if raw, ok := d.GetOk("wrap_ttl"); ok {
		ttl := time.Duration(raw.(int)) * time.Second
		if ttl < minWrapTTL {
			return invalidf("wrap_ttl %s is too short: give at least 60s so the commands have time to unwrap the token", ttl)
		}
		r.WrapTTL = ttl
	}
	return nil
}

// validateVaultRequestPath returns the canonical form of a request path: the API path without
// /v1/. The original flant_gitops wrote paths as /v1/<path>, so that form is the same request and
// is stored, and read back, without the prefix.
func validateVaultRequestPath(raw string) (string, error) {
	p := strings.TrimSpace(raw)
	v1 := strings.HasPrefix(p, "/v1/")
	p = strings.TrimPrefix(p, "/v1/")
	fix := "give the API path, e.g. secret/data/app (or /v1/secret/data/app)"
	switch {
	case p == "":
		return "", invalidf("path %q names no API path: %s", raw, fix)
	case strings.HasPrefix(p, "/"):
		return "", invalidf("path %q starts with a / that is not part of /v1/: %s", raw, fix)
	case !v1 && strings.HasPrefix(p, "v1/"):
		// Without the leading slash it could be a mount named v1; say which form is meant.
		return "", invalidf("path %q is ambiguous: write /v1/%s for the API path %s", raw, p[3:], p[3:])
	case strings.ContainsAny(p, " ?#\t\n\\"):
		return "", invalidf("path %q contains a space, '?', '#' or '\\': %s, and put parameters in options", p, fix)
	case strings.Contains("/"+p+"/", "/../"), strings.Contains("/"+p+"/", "/./"), strings.Contains(p, "//"):
		return "", invalidf("path %q has empty, '.' or '..' segments: %s", p, fix)
	}
	return p, nil
}

func (b *backend) pathVaultRequestDelete(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	name := d.Get("name").(string)
	if err := validateName("vault_request", name); err != nil {
		return respondErr(err)
	}
	b.configMu.Lock()
	defer b.configMu.Unlock()
	return nil, deleteEntry(ctx, req.Storage, storagePrefixVaultRequest+name)
}

const pathVaultRequestListHelpSyn = `List the vault requests made before each run.`

const pathVaultRequestHelpSyn = `A Vault request made, wrapped, before each run; its token reaches the commands.`

const pathVaultRequestHelpDesc = `
Before each run the plugin logs in to the target Vault (configure_vault_access)
and makes every configured request in wrapped mode. The wrapping token of
request NAME is passed to the commands as VAULT_REQUEST_TOKEN_<NAME> (NAME
upper-cased, '-' and '.' turned into '_'); the commands get the response with
"vault unwrap" or "vault write sys/wrapping/unwrap token=...". A name that
cannot make a valid variable, or that gives the same variable as another
request, is refused. A read shows the variable as env_var.

Example:

  vault write flant_gitops/configure/vault_request/app-secret path=secret/data/app wrap_ttl=2m

  # options is a JSON object, so give the whole request as JSON on stdin:
  vault write flant_gitops/configure/vault_request/deploy-token - <<'EOF'
  {"path": "auth/token/create", "method": "post", "options": {"ttl": "1h", "policies": ["deploy"]}}
  EOF
  # the commands see VAULT_REQUEST_TOKEN_APP_SECRET and VAULT_REQUEST_TOKEN_DEPLOY_TOKEN
`
