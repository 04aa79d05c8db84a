package backend

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"
	"time"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"

	"github.com/flant/flant_gitops/policy"
)

const storageKeyPolicy = "patch/policy"

// maxPolicyBytes bounds a custom policy; real ones are a few kilobytes.
const maxPolicyBytes = 256 << 10

// policyEntry is the custom rego written at configure/policy.
type policyEntry struct {
	Source    string    `json:"source"`
	Version   string    `json:"version"` // sha256 of Source: the prepared engine's cache key
	UpdatedAt time.Time `json:"updated_at"`
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
				Description: "Rego v1 source in package flant_gitops.patch defining the set `violations`; a request is allowed only when it is defined and empty. Compiled on write.",
			},
		},
		Operations: map[logical.Operation]framework.OperationHandler{
			logical.UpdateOperation: &framework.PathOperation{
				Callback: ps.pathPolicyWrite,
				Summary:  "Replace the patch authorization policy; a policy that does not compile is refused.",
			},
			logical.ReadOperation: &framework.PathOperation{
				Callback: ps.pathPolicyRead,
				Summary:  "Read the policy in force (the built-in one when none is written).",
			},
			logical.DeleteOperation: &framework.PathOperation{
				Callback: ps.pathPolicyDelete,
				Summary:  "Go back to the built-in policy.",
			},
		},
		HelpSynopsis:    pathPolicyHelpSyn,
		HelpDescription: pathPolicyHelpDesc,
	}}
}

func (ps *patchState) pathPolicyWrite(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	src := d.Get("policy").(string)
	if strings.TrimSpace(src) == "" {
		return errorResponse("policy is empty: give Rego source (policy=@policy.rego); delete this path to go back to the built-in policy")
	}
	if len(src) > maxPolicyBytes {
		return errorResponse("policy is %d bytes, over the %d-byte limit", len(src), maxPolicyBytes)
	}
	engine, err := policy.Compile(ctx, src)
	if err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("compiling the policy: %w", err)
		}
		return errorResponse("policy does not compile: %v", err)
	}
	e := &policyEntry{Source: src, Version: policyVersion(src), UpdatedAt: time.Now().UTC()}
	if err := putEntry(ctx, req.Storage, storageKeyPolicy, e); err != nil {
		return nil, err
	}
	ps.cachePolicy(e.Version, engine)
	return nil, nil
}

func (ps *patchState) pathPolicyRead(ctx context.Context, req *logical.Request, _ *framework.FieldData) (*logical.Response, error) {
	e, err := getEntry[policyEntry](ctx, req.Storage, storageKeyPolicy)
	if err != nil {
		return nil, err
	}
	if e == nil {
		return &logical.Response{Data: map[string]any{
			"policy":  policy.BuiltinSource(),
			"builtin": true,
		}}, nil
	}
	return &logical.Response{Data: map[string]any{
		"policy":     e.Source,
		"builtin":    false,
		"version":    e.Version,
		"updated_at": e.UpdatedAt.Format(time.RFC3339),
	}}, nil
}

func (ps *patchState) pathPolicyDelete(ctx context.Context, req *logical.Request, _ *framework.FieldData) (*logical.Response, error) {
	return nil, deleteEntry(ctx, req.Storage, storageKeyPolicy)
}

// policyEngine returns the prepared engine for the policy in storage. The
// entry is read on every request so that a write through another node takes
// effect; compiling happens only when its version changes.
func (ps *patchState) policyEngine(ctx context.Context, s logical.Storage) (*policy.Engine, error) {
	e, err := getEntry[policyEntry](ctx, s, storageKeyPolicy)
	if err != nil {
		return nil, err
	}
	version, src := "builtin", ""
	if e != nil {
		version, src = e.Version, e.Source
	}
	ps.policyMu.Lock()
	defer ps.policyMu.Unlock()
	if ps.policy != nil && ps.policyVersion == version {
		return ps.policy, nil
	}
	var engine *policy.Engine
	if e == nil {
		engine, err = policy.Default(ctx)
	} else {
		engine, err = policy.Compile(ctx, src)
	}
	if err != nil {
		// A stored policy compiled when written; failing now means the
		// engine changed under it. Deny rather than fall back to anything.
		return nil, fmt.Errorf("compiling the patch policy (version %s): %w", version, err)
	}
	ps.policy, ps.policyVersion = engine, version
	return engine, nil
}

func (ps *patchState) cachePolicy(version string, engine *policy.Engine) {
	ps.policyMu.Lock()
	defer ps.policyMu.Unlock()
	ps.policy, ps.policyVersion = engine, version
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
under "<project_path>/" of the caller's JWT alias. Read this path to get its
source as a starting point; write compiles and refuses a broken policy with
the compiler's message; delete goes back to the built-in policy.

  vault write flant_gitops/configure/policy policy=@policy.rego
`
