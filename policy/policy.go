// Package policy authorizes patch requests with Open Policy Agent (Rego v1).
//
// A policy is a Rego module in package flant_gitops.patch that defines
// violations, a set of strings. The request is allowed only if the set is
// defined and empty; every other outcome denies (fail closed): a policy
// without that rule (for example a wrong package name), an evaluation error
// (built-in errors are strict, so a failing to_number cannot silently skip a
// violation), or a result that is not a set or array of strings.
//
// # Input document
//
// Decide gives the policy this input (field names are exactly these):
//
//	{
//	  "repository": "infra",                  // the configure/repository/NAME being patched
//	  "trusted_auth_mount_accessors": ["auth_jwt_0a1b2c3d"], // configure/policy: the auth mounts whose aliases the operator trusts
//	  "identity": {                           // ABSENT when the token has no Vault entity (root token, orphan token)
//	    "entity_id":   "5f0c…",
//	    "entity_name": "entity_a1b2",
//	    "aliases": [{
//	      "mount_type": "jwt",                // auth method type: "jwt", "oidc", "approle", …
//	      "mount_accessor": "auth_jwt_0a1b2c3d", // `vault auth list` shows it; Vault does not tell plugins the mount path
//	      "name":       "my-group/my-project", // the role's user_claim value
//	      "metadata":   {"project_path": "my-group/my-project"} // claims copied by the role's claim_mappings
//	    }],
//	    "groups":   ["team-payments"]         // identity group names
//	  },
//	  "commit": {"message": "Bump image to 1.2.5", "author": {"name": "CI", "email": "ci@example.com"}},
//	  "commands": [                           // always present, possibly empty
//	    {"path": "my-group/my-project/release.yml", "op": "setField", "field": "spec.values.image.tag"},
//	    {"path": "my-group/my-project/new.yml", "op": "createFile", "field": ""},
//	    {"path": "my-group/my-project/old.yml", "op": "deleteFile", "field": ""}
//	  ]
//	}
//
// The identity holds what Vault tells a plugin about the entity behind the
// token (EntityInfo and GroupsForEntity). Vault does not give a plugin the
// token's policies, so the input has none: decide on aliases and groups.
//
// The input is closed: a policy that reads any other field (input_schema.json
// lists them) is refused by [Compile] with a type error naming the field.
//
// Paths arrive cleaned (relative, no "." or ".." segments); the built-in
// policy still refuses any that are not.
//
// # Built-in policy
//
// Used while no custom policy is configured (see [BuiltinSource]): only .yml
// and .yaml files, only under "<project_path>/" where project_path comes from
// the metadata of the caller's jwt or oidc alias on an auth mount listed in
// trusted_auth_mount_accessors. With none listed it allows nothing: another
// JWT mount (GitHub Actions next to GitLab, a human SSO login) would share the
// same directory namespace. Configure the Vault JWT
// auth role with claim_mappings {"project_path": "project_path"} (GitLab) or
// {"repository": "project_path"} (GitHub Actions). Set the role's user_claim
// to a per-project claim (GitLab "project_path", GitHub "repository"): alias
// metadata is rewritten at each login, so an alias shared by several projects
// would carry whichever project logged in last.
//
// # Custom policies and their tests
//
// A custom policy replaces the built-in one entirely. It is compiled by
// [Compile] with the same Rego v1 parser; network built-ins (http.send,
// net.lookup_ip_addr) and opa.runtime are refused because the policy runs
// inside Vault. examples/allow_team_dirs.rego is a starting point. Rego unit
// tests live beside a policy in *_test.rego files and run with
//
//	opa test policy/builtin.rego policy/builtin_test.rego
//	opa test policy/examples/
//
// and with go test through the tester package (see rego_test.go). Keep a
// custom policy and the built-in one in separate opa test runs: both are
// package flant_gitops.patch, so loaded together their rules would merge.
package policy

import (
	"context"
	_ "embed"
	"encoding/json"
	"fmt"
	"slices"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/rego"
)

// policyPackage is the Rego package a policy must declare.
const policyPackage = "flant_gitops.patch"

// violationsQuery is the document Decide evaluates.
const violationsQuery = "data." + policyPackage + ".violations"

// builtinFile names the built-in module in compiler messages.
const builtinFile = "builtin.rego"

// customFile names a custom module in compiler messages.
const customFile = "policy.rego"

//go:embed builtin.rego
var builtinSource string

// inputSchemaJSON describes the input document. The compiler type-checks a
// policy against it, so a policy that reads a field the input never has (a
// typo, or a field Vault does not give plugins, such as the token's
// policies) is refused when it is written instead of silently never
// matching.
//
//go:embed input_schema.json
var inputSchemaJSON []byte

var inputSchema = func() *ast.SchemaSet {
	var schema any
	if err := json.Unmarshal(inputSchemaJSON, &schema); err != nil {
		panic(fmt.Sprintf("policy: embedded input_schema.json: %v", err))
	}
	ss := ast.NewSchemaSet()
	ss.Put(ast.SchemaRootRef, schema)
	return ss
}()

// BuiltinSource returns the Rego source of the built-in policy, a starting
// point for a custom one.
func BuiltinSource() string { return builtinSource }

// Identity is the caller's Vault identity.
type Identity struct {
	EntityID   string
	EntityName string
	Aliases    []Alias
	Groups     []string // identity group names
}

// Alias is one auth-method alias of the caller's entity.
type Alias struct {
	MountType     string            // auth method type, e.g. "jwt", "oidc", "approle"
	MountAccessor string            // e.g. "auth_jwt_0a1b2c3d"; Vault gives plugins the accessor, not the path
	Name          string            // alias name, the role's user_claim for JWT
	Metadata      map[string]string // for JWT/OIDC: claims copied by the role's claim_mappings
}

// Input is what a policy decides on; see the package comment for its shape
// in Rego.
type Input struct {
	Repository string
	// TrustedAuthMountAccessors are the auth mounts whose aliases the
	// operator trusts (configure/policy); always present, possibly empty.
	TrustedAuthMountAccessors []string
	Identity                  *Identity // nil when the token has no entity; the built-in policy denies
	Commit                    CommitInput
	Commands                  []CommandInput
}

// CommitInput describes the commit the request asks for.
type CommitInput struct {
	Message string
	Author  Person
}

// Person is a commit author.
type Person struct {
	Name  string
	Email string
}

// CommandInput is one edit of the request.
type CommandInput struct {
	Path  string // cleaned, relative to the repository root
	Op    string // "setField", "createFile" or "deleteFile"
	Field string // the field path of setField, empty otherwise
}

// Decision is the outcome of a policy evaluation.
type Decision struct {
	Allowed    bool
	Violations []string // sorted; non-empty whenever Allowed is false
}

// Engine evaluates one compiled policy. Its query is prepared once; an
// Engine is safe for concurrent use.
type Engine struct {
	query rego.PreparedEvalQuery
	// pkg is the package the policy declares, to explain an undefined result.
	pkg string
}

// Default compiles the built-in policy.
func Default(ctx context.Context) (*Engine, error) {
	e, err := compile(ctx, builtinFile, builtinSource)
	if err != nil {
		return nil, fmt.Errorf("built-in policy: %w", err)
	}
	return e, nil
}

// Compile compiles a custom policy. The error carries the Rego parser's or
// compiler's message with line numbers (file name "policy.rego"), meant to
// be shown to the operator who wrote the policy. A policy in another package
// compiles but denies every request.
func Compile(ctx context.Context, source string) (*Engine, error) {
	return compile(ctx, customFile, source)
}

func compile(ctx context.Context, filename, source string) (*Engine, error) {
	module, err := ast.ParseModuleWithOpts(filename, source, ast.ParserOptions{RegoVersion: ast.RegoV1})
	if err != nil {
		return nil, fmt.Errorf("parse policy: %w", err)
	}
	// Compiling the module here, not inside rego.New, gives the operator the
	// compiler's own message instead of one wrapped in bundle wording.
	compiler := ast.NewCompiler().
		WithDefaultRegoVersion(ast.RegoV1).
		WithSchemas(inputSchema).
		WithUnsafeBuiltins(unsafeBuiltins())
	if compiler.Compile(map[string]*ast.Module{filename: module}); compiler.Failed() {
		return nil, fmt.Errorf("compile policy: %w", compiler.Errors)
	}
	query, err := rego.New(
		rego.Query(violationsQuery),
		rego.Compiler(compiler),
		rego.SetRegoVersion(ast.RegoV1),
		// Without strict errors a failing built-in makes its expression
		// undefined, which would silently drop a violation: fail open.
		rego.StrictBuiltinErrors(true),
		rego.UnsafeBuiltins(unsafeBuiltins()),
	).PrepareForEval(ctx)
	if err != nil {
		return nil, fmt.Errorf("prepare policy query %s: %w", violationsQuery, err)
	}
	return &Engine{query: query, pkg: module.Package.Path.String()}, nil
}

// unsafeBuiltins are refused at compile time: a policy runs inside Vault on
// every patch request and must not reach the network or read the process
// environment.
func unsafeBuiltins() map[string]struct{} {
	return map[string]struct{}{
		ast.HTTPSend.Name:        {},
		ast.NetLookupIPAddr.Name: {},
		ast.OPARuntime.Name:      {},
	}
}

// Decide evaluates the policy on in. A policy that is undefined, fails or
// yields something other than strings denies, with a violation saying why;
// the error is reserved for ctx ending before a decision was made.
func (e *Engine) Decide(ctx context.Context, in Input) (Decision, error) {
	// OPA notices cancellation only between evaluation steps, so a short
	// policy could still run to the end on an already ended context.
	if err := ctx.Err(); err != nil {
		return Decision{}, fmt.Errorf("policy evaluation not started: %w", err)
	}
	rs, err := e.query.Eval(ctx, rego.EvalParsedInput(in.value()))
	if err != nil {
		if ctxErr := ctx.Err(); ctxErr != nil {
			return Decision{}, fmt.Errorf("policy evaluation stopped: %w", ctxErr)
		}
		return deny(fmt.Sprintf("policy evaluation failed, denying: %v", err)), nil
	}
	if len(rs) == 0 || len(rs[0].Expressions) == 0 {
		return deny(fmt.Sprintf("policy defines no %s (its package is %s; it must be package %s with a violations rule), denying",
			violationsQuery, e.pkg, policyPackage)), nil
	}
	if len(rs) > 1 {
		return deny(fmt.Sprintf("policy gave %d results for %s, want one, denying", len(rs), violationsQuery)), nil
	}
	violations, err := stringsOf(rs[0].Expressions[0].Value)
	if err != nil {
		return deny(fmt.Sprintf("%s %v, denying", violationsQuery, err)), nil
	}
	slices.Sort(violations)
	return Decision{Allowed: len(violations) == 0, Violations: violations}, nil
}

func deny(reason string) Decision {
	return Decision{Allowed: false, Violations: []string{reason}}
}

// stringsOf accepts a set or an array of strings (sets reach Go as slices).
func stringsOf(v any) ([]string, error) {
	items, ok := v.([]any)
	if !ok {
		return nil, fmt.Errorf("must be a set of strings, got %s", describe(v))
	}
	out := make([]string, 0, len(items))
	for _, item := range items {
		s, ok := item.(string)
		if !ok {
			return nil, fmt.Errorf("must be a set of strings, got an element %s", describe(item))
		}
		out = append(out, s)
	}
	return out, nil
}

// describe names a Rego value's type and shows it briefly.
func describe(v any) string {
	var kind string
	switch v.(type) {
	case map[string]any:
		kind = "object"
	case []any:
		kind = "array"
	case bool:
		kind = "boolean"
	case nil:
		kind = "null"
	case string:
		kind = "string"
	default:
		kind = "number"
	}
	text := fmt.Sprint(v)
	if term, err := ast.InterfaceToValue(v); err == nil {
		text = term.String()
	}
	const max = 80
	if len(text) > max {
		text = text[:max] + "…"
	}
	return kind + " " + text
}
