package backend

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"

	"github.com/flant/flant_gitops/policy"
)

// maxPolicyBytes bounds a custom policy; real ones are a few kilobytes.
const maxPolicyBytes = 256 << 10

// policyEntry is what configure/policy holds: the custom rego (empty: the
// built-in policy) and the auth mounts whose aliases are trusted.
type policyEntry struct {
	Source    string    `json:"source"`
	Version   string    `json:"version"` // sha256 of Source: the prepared engine's cache key
	UpdatedAt time.Time `json:"updated_at"`
	// TrustedAuthMountAccessors reach the policy as
	// input.trusted_auth_mount_accessors.
	TrustedAuthMountAccessors []string `json:"trusted_auth_mount_accessors,omitempty"`
}

// mountAccessorRe is an auth mount accessor as Vault makes them:
// auth_<type>_<8 hex>.
var mountAccessorRe = regexp.MustCompile(`^auth_[A-Za-z0-9._-]+_[0-9a-f]{8}$`)

func parseMountAccessors(raw []string) ([]string, error) {
	out := []string{}
	for _, a := range raw {
		a = strings.TrimSpace(a)
		if a == "" {
			continue
		}
		if !mountAccessorRe.MatchString(a) {
			return nil, invalidf("trusted_auth_mount_accessors: %q is not an auth mount accessor: give the accessor (auth_jwt_0a1b2c3d) of the JWT/OIDC mount your CI logs in through, as `vault read -field=accessor sys/auth/jwt` prints it, not the mount's path (Vault tells plugins the accessor only)", a)
		}
		if !slices.Contains(out, a) {
			out = append(out, a)
		}
	}
	return out, nil
}

func policyVersion(source string) string {
	sum := sha256.Sum256([]byte(source))
	return hex.EncodeToString(sum[:])
}

func pathPolicy(ps *patchState) []*framework.Path {
	return []*framework.Path{{
		Pattern: "configure/policy$",
		DisplayAttrs: &framework.DisplayAttributes{
			OperationPrefix: "flant-gitops",
			OperationSuffix: "policy",
		},
		Fields: map[string]*framework.FieldSchema{
			"policy": {
				Type:        framework.TypeString,
				Description: "Rego v1 source in package flant_gitops.patch defining the set `violations`; a request is allowed only when it is defined and empty. Compiled on write. Not given: the built-in policy.",
			},
			"trusted_auth_mount_accessors": {
				Type:        framework.TypeCommaStringSlice,
				Description: "Accessors of the auth mounts (JWT/OIDC) whose aliases the policy may trust, e.g. the GitLab CI mount: `vault read -field=accessor sys/auth/jwt`. The built-in policy ignores aliases of any other mount and, with none named, allows nothing. A custom policy gets them as input.trusted_auth_mount_accessors. Empty clears the list.",
			},
		},
		Operations: map[logical.Operation]framework.OperationHandler{
			logical.UpdateOperation: &framework.PathOperation{
				Callback:                    ps.pathPolicyWrite,
				Responses:                   noContent(),
				Summary:                     "Replace the patch authorization policy and/or the trusted auth mounts; fields not given keep their values; a policy that does not compile is refused.",
				ForwardPerformanceStandby:   true,
				ForwardPerformanceSecondary: true,
			},
			logical.ReadOperation: &framework.PathOperation{
				Callback:  ps.pathPolicyRead,
				Responses: okWith(policyResponseFields()),
				Summary:   "Read the policy in force (the built-in one when none is written).",
			},
			logical.DeleteOperation: &framework.PathOperation{
				Callback:                    ps.pathPolicyDelete,
				Responses:                   noContent(),
				Summary:                     "Go back to the built-in policy; the trusted auth mounts are kept.",
				ForwardPerformanceStandby:   true,
				ForwardPerformanceSecondary: true,
			},
		},
		HelpSynopsis:    pathPolicyHelpSyn,
		HelpDescription: pathPolicyHelpDesc,
	}}
}

func (ps *patchState) pathPolicyWrite(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	rawSrc, hasSrc := d.GetOk("policy")
	rawTrusted, hasTrusted := d.GetOk("trusted_auth_mount_accessors")
	if !hasSrc && !hasTrusted {
		return errorResponse("nothing to write: give policy (policy=@policy.rego) and/or trusted_auth_mount_accessors")
	}
	ps.policyMu.Lock()
	defer ps.policyMu.Unlock()
	e, err := getEntry[policyEntry](ctx, req.Storage, storageKeyPolicy)
	if err != nil {
		return nil, err
	}
	if e == nil {
		e = &policyEntry{}
	}
	var engine *policy.Engine
	if hasSrc {
		src := rawSrc.(string)
		if strings.TrimSpace(src) == "" {
			return errorResponse("policy is empty: give Rego source (policy=@policy.rego); delete this path to go back to the built-in policy")
		}
		if len(src) > maxPolicyBytes {
			return errorResponse("policy is %d bytes, over the %d-byte limit", len(src), maxPolicyBytes)
		}
		engine, err = policy.Compile(ctx, src)
		if err != nil {
			if ctx.Err() != nil {
				return nil, fmt.Errorf("compiling the policy: %w", err)
			}
			return errorResponse("policy does not compile: %v", err)
		}
		e.Source, e.Version = src, policyVersion(src)
	}
	if hasTrusted {
		trusted, err := parseMountAccessors(rawTrusted.([]string))
		if err != nil {
			return respondErr(err)
		}
		e.TrustedAuthMountAccessors = trusted
	}
	e.UpdatedAt = time.Now().UTC()
	if err := putEntry(ctx, req.Storage, storageKeyPolicy, e); err != nil {
		return nil, err
	}
	if engine != nil {
		ps.policy, ps.policyVersion = engine, e.Version
	}
	return nil, nil
}

func (ps *patchState) pathPolicyRead(ctx context.Context, req *logical.Request, _ *framework.FieldData) (*logical.Response, error) {
	e, err := getEntry[policyEntry](ctx, req.Storage, storageKeyPolicy)
	if err != nil {
		return nil, err
	}
	if e == nil {
		e = &policyEntry{}
	}
	data := map[string]any{
		"policy":                       e.Source,
		"builtin":                      e.Source == "",
		"trusted_auth_mount_accessors": nonNil(e.TrustedAuthMountAccessors),
	}
	if e.Source == "" {
		data["policy"] = policy.BuiltinSource()
	} else {
		data["version"] = e.Version
	}
	if !e.UpdatedAt.IsZero() {
		data["updated_at"] = e.UpdatedAt.Format(time.RFC3339)
	}
	resp := &logical.Response{Data: data}
	if e.Source == "" && len(e.TrustedAuthMountAccessors) == 0 {
		resp.AddWarning("no auth mount is trusted: the built-in policy denies every patch until trusted_auth_mount_accessors names the JWT/OIDC mount of your CI logins")
	}
	return resp, nil
}

func (ps *patchState) pathPolicyDelete(ctx context.Context, req *logical.Request, _ *framework.FieldData) (*logical.Response, error) {
	ps.policyMu.Lock()
	defer ps.policyMu.Unlock()
	e, err := getEntry[policyEntry](ctx, req.Storage, storageKeyPolicy)
	if err != nil || e == nil {
		return nil, err
	}
	if len(e.TrustedAuthMountAccessors) == 0 {
		return nil, deleteEntry(ctx, req.Storage, storageKeyPolicy)
	}
	kept := &policyEntry{TrustedAuthMountAccessors: e.TrustedAuthMountAccessors, UpdatedAt: time.Now().UTC()}
	return nil, putEntry(ctx, req.Storage, storageKeyPolicy, kept)
}

// policyDecider is the policy in force with the settings stored beside it.
type policyDecider struct {
	engine  *policy.Engine
	trusted []string
}

// Decide adds the operator's settings to the input and decides.
func (p *policyDecider) Decide(ctx context.Context, in policy.Input) (policy.Decision, error) {
	in.TrustedAuthMountAccessors = p.trusted
	return p.engine.Decide(ctx, in)
}

// policyEngine returns the prepared engine for the policy in storage. The
// entry is read on every request so that a write through another node takes
// effect; compiling happens only when its version changes.
func (ps *patchState) policyEngine(ctx context.Context, s logical.Storage) (*policyDecider, error) {
	e, err := getEntry[policyEntry](ctx, s, storageKeyPolicy)
	if err != nil {
		return nil, err
	}
	if e == nil {
		e = &policyEntry{}
	}
	version := e.Version
	if e.Source == "" {
		version = "builtin"
	}
	ps.policyMu.Lock()
	defer ps.policyMu.Unlock()
	if ps.policy == nil || ps.policyVersion != version {
		var engine *policy.Engine
		if e.Source == "" {
			engine, err = policy.Default(ctx)
		} else {
			engine, err = policy.Compile(ctx, e.Source)
		}
		if err != nil {
			// A stored policy compiled when written; failing now means the
			// engine changed under it. Deny rather than fall back to anything.
			return nil, fmt.Errorf("compiling the patch policy (version %s): %w", version, err)
		}
		ps.policy, ps.policyVersion = engine, version
	}
	return &policyDecider{engine: ps.policy, trusted: slices.Clone(e.TrustedAuthMountAccessors)}, nil
}

const pathPolicyHelpSyn = `The OPA policy that authorizes patch requests.`

const pathPolicyHelpDesc = `
Every write to flant_gitops/patch/NAME is decided by this Rego v1 policy,
after Vault's own ACL check. The policy is package flant_gitops.patch and
defines the set "violations": the request is allowed only when it is defined
and empty. An undefined result (for example a wrong package name) or an
evaluation error denies: the policy fails closed.

The input holds the repository name, the commit (message, author), the
commands (cleaned path, op, field) and the caller's Vault identity: entity id
and name, aliases with their auth mount type, mount accessor, name and
metadata (for example the project_path a GitLab JWT role copies with
claim_mappings), and group names. A token without an entity (the root token)
has no identity. Vault does not tell plugins the token's policies, so the
input has none. A policy that reads a field the input does not have is
refused when written, with the field named.

Without a written policy the built-in one applies: only .yml/.yaml files, only
under "<project_path>/" of the caller's JWT/OIDC alias on an auth mount named
in trusted_auth_mount_accessors. With no mount named it allows nothing, so
that a second JWT mount (GitHub Actions next to GitLab, a human SSO login)
cannot claim the same directories. Vault tells plugins a mount's accessor,
not its path:

  vault write flant_gitops/configure/policy \
      trusted_auth_mount_accessors="$(vault read -field=accessor sys/auth/jwt)"

Read this path to get the policy's source as a starting point; write compiles
and refuses a broken policy with the compiler's message; a write changes only
the fields it gives; delete goes back to the built-in policy and keeps the
trusted mounts.

  vault write flant_gitops/configure/policy policy=@policy.rego
`
