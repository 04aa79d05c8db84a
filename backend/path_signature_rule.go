package backend

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"time"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"

	"github.com/flant/flant_gitops/gitwatch"
)

// signatureRuleEntry asks more signers for some paths.
type signatureRuleEntry struct {
	Name            string   `json:"name"`
	Paths           []string `json:"paths"`
	RequiredSigners int      `json:"required_signers"`
	Signers         []string `json:"signers,omitempty"`
}

// Bounds on what rules may hold, so a check's cost stays small.
const (
	maxSignatureRules  = 64
	maxPathsPerRule    = 64
	maxSignersPerRule  = 256
	maxRequiredSigners = 64
)

func (r *signatureRuleEntry) pathRule() gitwatch.PathRule {
	return gitwatch.PathRule{Name: r.Name, Paths: r.Paths, Required: r.RequiredSigners, Signers: r.Signers}
}

func listSignatureRules(ctx context.Context, s logical.Storage) ([]*signatureRuleEntry, error) {
	return listEntries[signatureRuleEntry](ctx, s, storagePrefixSignatureRule)
}

// pathRules are the mount's signature rules for a check.
func pathRules(ctx context.Context, s logical.Storage) ([]gitwatch.PathRule, error) {
	rules, err := listSignatureRules(ctx, s)
	if err != nil {
		return nil, err
	}
	out := make([]gitwatch.PathRule, 0, len(rules))
	for _, r := range rules {
		out = append(out, r.pathRule())
	}
	return out, nil
}

func pathSignatureRule(b *backend) []*framework.Path {
	return []*framework.Path{
		{
			Pattern:      "configure/signature_rule/?$",
			DisplayAttrs: &framework.DisplayAttributes{OperationPrefix: "flant-gitops", OperationSuffix: "signature-rules"},
			Operations: map[logical.Operation]framework.OperationHandler{
				logical.ListOperation: &framework.PathOperation{
					Callback:  b.pathSignatureRuleList,
					Responses: listOK(""),
					Summary:   "List the names of the signature rules.",
				},
			},
			HelpSynopsis:    pathSignatureRuleListHelpSyn,
			HelpDescription: pathSignatureRuleHelpDesc,
		},
		{
			Pattern:      "configure/signature_rule/(?P<name>.+)",
			DisplayAttrs: &framework.DisplayAttributes{OperationPrefix: "flant-gitops", OperationSuffix: "signature-rule"},
			Fields: map[string]*framework.FieldSchema{
				"name": {
					Type:        framework.TypeString,
					Description: "Name of the rule: letters, digits, '_', '.' or '-'.",
				},
				"paths": {
					Type: framework.TypeCommaStringSlice,
					Description: "Globs of the files the rule guards, from the repository root: '*', '?' and '[...]' match within one path segment, " +
						"a whole '**' segment matches any number of segments (prod/** is everything under prod/).",
				},
				"required_signers": {
					Type:        framework.TypeInt,
					Description: "How many distinct signers a commit changing a guarded file needs (at least 1).",
				},
				"signers": {
					Type:        framework.TypeCommaStringSlice,
					Description: "Names of the signers (configure/signer or configure/trusted_pgp_public_key) who count for this rule; empty: any trusted signer.",
				},
			},
			ExistenceCheck: b.signatureRuleExists,
			Operations: map[logical.Operation]framework.OperationHandler{
				logical.ReadOperation: &framework.PathOperation{
					Callback:  b.pathSignatureRuleRead,
					Responses: okWith(signatureRuleResponseFields()),
					Summary:   "Show a signature rule.",
				},
				logical.CreateOperation: &framework.PathOperation{
					Callback:                    b.keepsFormat(b.pathSignatureRuleWrite),
					Responses:                   okWith(signatureRuleResponseFields()),
					Summary:                     "Ask more signers for some paths.",
					ForwardPerformanceStandby:   true,
					ForwardPerformanceSecondary: true,
				},
				logical.UpdateOperation: &framework.PathOperation{
					Callback:                    b.keepsFormat(b.pathSignatureRuleWrite),
					Responses:                   okWith(signatureRuleResponseFields()),
					Summary:                     "Change a signature rule.",
					ForwardPerformanceStandby:   true,
					ForwardPerformanceSecondary: true,
				},
				logical.DeleteOperation: &framework.PathOperation{
					Callback:                    b.keepsFormat(b.pathSignatureRuleDelete),
					Responses:                   noContent(),
					Summary:                     "Delete a signature rule.",
					ForwardPerformanceStandby:   true,
					ForwardPerformanceSecondary: true,
				},
			},
			HelpSynopsis:    pathSignatureRuleHelpSyn,
			HelpDescription: pathSignatureRuleHelpDesc,
		},
	}
}

func (b *backend) signatureRuleExists(ctx context.Context, req *logical.Request, d *framework.FieldData) (bool, error) {
	name := d.Get("name").(string)
	if validateName("signature_rule", name) != nil {
		return false, nil
	}
	e, err := getEntry[signatureRuleEntry](ctx, req.Storage, storagePrefixSignatureRule+name)
	return e != nil, err
}

func (b *backend) pathSignatureRuleList(ctx context.Context, req *logical.Request, _ *framework.FieldData) (*logical.Response, error) {
	names, err := req.Storage.List(ctx, storagePrefixSignatureRule)
	if err != nil {
		return nil, err
	}
	return logical.ListResponse(names), nil
}

func (b *backend) pathSignatureRuleRead(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	name := d.Get("name").(string)
	if err := validateName("signature_rule", name); err != nil {
		return respondErr(err)
	}
	e, err := getEntry[signatureRuleEntry](ctx, req.Storage, storagePrefixSignatureRule+name)
	if err != nil || e == nil {
		return nil, err
	}
	return &logical.Response{Data: signatureRuleResponse(e)}, nil
}

func signatureRuleResponse(e *signatureRuleEntry) map[string]any {
	signers := e.Signers
	if signers == nil {
		signers = []string{}
	}
	return map[string]any{
		"name":             e.Name,
		"paths":            e.Paths,
		"required_signers": e.RequiredSigners,
		"signers":          signers,
	}
}

func (b *backend) pathSignatureRuleWrite(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	name := d.Get("name").(string)
	if err := validateName("signature_rule", name); err != nil {
		return respondErr(err)
	}
	b.configMu.Lock()
	defer b.configMu.Unlock()
	old, err := getEntry[signatureRuleEntry](ctx, req.Storage, storagePrefixSignatureRule+name)
	if err != nil {
		return nil, err
	}
	e := &signatureRuleEntry{Name: name}
	if old != nil {
		*e = *old
	} else {
		names, err := req.Storage.List(ctx, storagePrefixSignatureRule)
		if err != nil {
			return nil, err
		}
		if len(names) >= maxSignatureRules {
			return respondErr(invalidf("there are already %d signature rules, the most a mount takes: join rules with the same signers into one with several paths", len(names)))
		}
	}
	if v, ok := d.GetOk("paths"); ok {
		e.Paths = v.([]string)
	}
	if v, ok := d.GetOk("required_signers"); ok {
		e.RequiredSigners = v.(int)
	}
	if v, ok := d.GetOk("signers"); ok {
		e.Signers = nil
		for _, s := range v.([]string) {
			if !slices.Contains(e.Signers, s) {
				e.Signers = append(e.Signers, s)
			}
		}
		sort.Strings(e.Signers)
	}
	switch {
	case len(e.Paths) == 0:
		return respondErr(invalidf("paths is missing: give the globs of the files the rule guards, e.g. paths=prod/**"))
	case len(e.Paths) > maxPathsPerRule:
		return respondErr(invalidf("paths has %d globs, more than the %d a rule takes", len(e.Paths), maxPathsPerRule))
	case e.RequiredSigners < 1:
		return respondErr(invalidf("required_signers must be at least 1, got %d: a rule that needs nobody guards nothing (delete the rule instead)", e.RequiredSigners))
	case e.RequiredSigners > maxRequiredSigners:
		return respondErr(invalidf("required_signers is %d, more than %d", e.RequiredSigners, maxRequiredSigners))
	case len(e.Signers) > maxSignersPerRule:
		return respondErr(invalidf("signers names %d signers, more than the %d a rule takes", len(e.Signers), maxSignersPerRule))
	}
	for _, p := range e.Paths {
		if err := gitwatch.ValidatePattern(p); err != nil {
			return respondErr(invalidf("paths: %v", err))
		}
	}
	if err := e.pathRule().Validate(); err != nil {
		return respondErr(invalidf("%v: name more signers or lower required_signers", err))
	}
	known, err := knownSignerNames(ctx, req.Storage)
	if err != nil {
		return nil, err
	}
	for _, s := range e.Signers {
		if !slices.Contains(known, s) {
			return respondErr(invalidf("signers names %q, which is neither a configure/signer nor a configure/trusted_pgp_public_key: write the signer first (known: %v)", s, known))
		}
	}
	if err := putEntry(ctx, req.Storage, storagePrefixSignatureRule+name, e); err != nil {
		return nil, err
	}
	resp := &logical.Response{Data: signatureRuleResponse(e)}
	if w, err := signatureRuleWarning(ctx, req.Storage, e); err != nil {
		return nil, err
	} else if w != "" {
		resp.AddWarning(w)
	}
	return resp, nil
}

// knownSignerNames are the names a rule may count: every signer and
// every trusted key (a signer of its own), sorted.
func knownSignerNames(ctx context.Context, s logical.Storage) ([]string, error) {
	var out []string
	for _, prefix := range []string{storagePrefixSigner, storagePrefixTrustedKey} {
		names, err := s.List(ctx, prefix)
		if err != nil {
			return nil, fmt.Errorf("list %q in storage: %w", prefix, err)
		}
		for _, n := range names {
			if !slices.Contains(out, n) {
				out = append(out, n)
			}
		}
	}
	sort.Strings(out)
	return out, nil
}

// signatureRuleWarning says when the usable signers cannot meet the rule.
func signatureRuleWarning(ctx context.Context, s logical.Storage, e *signatureRuleEntry) (string, error) {
	keys, err := listTrustedKeys(ctx, s)
	if err != nil {
		return "", err
	}
	signers, err := listSigners(ctx, s)
	if err != nil {
		return "", err
	}
	if len(e.Signers) > 0 {
		keys = slices.DeleteFunc(slices.Clone(keys), func(k *trustedKeyEntry) bool { return !slices.Contains(e.Signers, k.Name) })
		signers = slices.DeleteFunc(slices.Clone(signers), func(x *signerEntry) bool { return !slices.Contains(e.Signers, x.Name) })
	}
	usable, _ := usableSigners(keys, signers, time.Now())
	if usable >= e.RequiredSigners {
		return "", nil
	}
	return fmt.Sprintf("rule %q needs %d signers but only %d usable signer(s) can sign for it now, so no commit touching %v can be accepted until more are trusted", e.Name, e.RequiredSigners, usable, e.Paths), nil
}

func (b *backend) pathSignatureRuleDelete(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	name := d.Get("name").(string)
	if err := validateName("signature_rule", name); err != nil {
		return respondErr(err)
	}
	b.configMu.Lock()
	defer b.configMu.Unlock()
	return nil, deleteEntry(ctx, req.Storage, storagePrefixSignatureRule+name)
}

const pathSignatureRuleListHelpSyn = `List the signature rules.`

const pathSignatureRuleHelpSyn = `Ask more signers for some paths: a commit changing a guarded file needs required_signers signers.`

const pathSignatureRuleHelpDesc = `
A signature rule guards files by glob. The files a commit changes are the
tree difference between the last successful commit and the commit (on the
first run, with no last successful commit, every file of the commit). Each
rule a changed file falls under must hold: required_signers distinct
signers (of signers when set) signed the commit; and
required_number_of_verified_signatures_on_commit of flant_gitops/configure
holds as well, whatever rules apply. A commit changing no guarded file needs
only that quorum.

The plugin's own signature (patch commits) never counts for a rule: a patch
under a guarded path needs the rule's signers on the commit beyond the
plugin.

Globs are matched against the slash-separated path from the repository
root: '*', '?' and '[...]' match within one segment, and a whole '**'
segment matches any number of segments: prod/** is everything under prod/,
**/*.yaml every YAML file, prod/*.yaml only those directly in prod/. A
check lists at most 10000 changed files; past that every rule applies.

Examples:

  vault write flant_gitops/configure/signature_rule/prod paths=prod/** required_signers=2
  vault write flant_gitops/configure/signature_rule/db paths=db/**,migrations/** \
      required_signers=1 signers=dba-alice,dba-bob
  vault read  flant_gitops/signatures/<commit>
`

func signatureRuleResponseFields() map[string]*framework.FieldSchema {
	return map[string]*framework.FieldSchema{
		"name":             respString("Name of the rule."),
		"paths":            respStrings("Globs of the guarded files."),
		"required_signers": respInt("How many distinct signers a commit changing a guarded file needs."),
		"signers":          respStrings("The signers who count for the rule; empty: any trusted signer."),
	}
}
