package backend

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"strings"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"

	"github.com/flant/flant_gitops/backend/watch"
)

var commitIDRe = regexp.MustCompile(`^[0-9a-f]{40}$`)

func pathSignatures(b *backend) []*framework.Path {
	return []*framework.Path{{
		Pattern:      "signatures/(?P<commit>.+)",
		DisplayAttrs: &framework.DisplayAttributes{OperationPrefix: "flant-gitops", OperationSuffix: "signatures"},
		Fields: map[string]*framework.FieldSchema{
			"commit": {Type: framework.TypeString, Description: "The full 40-hex id of a commit of the watched branch."},
		},
		Operations: map[logical.Operation]framework.OperationHandler{
			logical.ReadOperation: &framework.PathOperation{
				Callback:  b.pathSignaturesRead,
				Responses: okWith(signaturesResponseFields()),
				Summary:   "Who signed a commit, the signature rules its change touches and what each still misses.",
				// The active node holds the mirror the watch keeps.
				ForwardPerformanceStandby:   true,
				ForwardPerformanceSecondary: true,
			},
		},
		HelpSynopsis:    "Check a commit's signatures as the watch would: who signed, the rules that apply, what is missing.",
		HelpDescription: pathSignaturesHelpDesc,
	}}
}

func (b *backend) pathSignaturesRead(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	commit := strings.ToLower(strings.TrimSpace(d.Get("commit").(string)))
	if !commitIDRe.MatchString(commit) {
		return respondErr(invalidf("commit %q is not a full commit id: give the 40 hex digits `git rev-parse COMMIT` prints", d.Get("commit")))
	}
	ws, err := loadWatchSettings(ctx, req.Storage)
	if errors.Is(err, watch.ErrNotConfigured) {
		return respondErr(invalidf("the watch is not configured: write flant_gitops/configure first"))
	}
	if err != nil {
		return nil, err
	}
	c, last, err := b.watch.CheckCommit(ctx, watchStorage{req.Storage}, ws, commit)
	if errors.Is(err, watch.ErrCommitNotOnBranch) {
		return nil, logical.CodedError(http.StatusNotFound, err.Error())
	}
	if err != nil {
		return nil, fmt.Errorf("checking commit %s: %w", commit, err)
	}
	data := checkData(c)
	data["last_successful_commit"] = last
	return &logical.Response{Data: data}, nil
}

// checkData is a signature check as status and signatures/COMMIT answer
// it: the same fields, the same words.
func checkData(c *watch.Check) map[string]any {
	signedBy := make([]map[string]any, 0, len(c.SignedBy))
	for _, s := range c.SignedBy {
		keys := make([]map[string]any, 0, len(s.Keys))
		for _, k := range s.Keys {
			keys = append(keys, map[string]any{"fingerprint": k.Fingerprint, "kind": k.Kind, "source": k.Source})
		}
		signedBy = append(signedBy, map[string]any{"name": s.Name, "keys": keys})
	}
	rules := make([]map[string]any, 0, len(c.Rules))
	for _, r := range c.Rules {
		rules = append(rules, map[string]any{
			"name":             r.Name,
			"paths":            orEmpty(r.Paths),
			"required_signers": r.RequiredSigners,
			"signers":          orEmpty(r.Signers),
			"matched":          orEmpty(r.Matched),
			"matched_count":    r.MatchedCount,
			"beyond_cap":       r.BeyondCap,
			"signed":           orEmpty(r.Signed),
			"missing":          r.Missing,
			"could_sign":       orEmpty(r.CouldSign),
			"ok":               r.OK,
		})
	}
	data := map[string]any{
		"commit":           c.Commit,
		"ok":               c.OK,
		"verdict":          c.Text,
		"required":         c.Required,
		"verified":         c.Verified,
		"missing":          c.Missing,
		"signers":          orEmpty(c.Signers),
		"signed_by":        signedBy,
		"rules":            rules,
		"not_counted":      orEmpty(c.NotCounted),
		"untrusted_commit": c.UntrustedCommit,
		"untrusted_reason": c.UntrustedReason,
		"changed_since":    c.ChangedSince,
		"changed_files":    c.ChangedFiles,
		"changed_capped":   c.ChangedCapped,
	}
	return data
}

func orEmpty(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

func signaturesResponseFields() map[string]*framework.FieldSchema {
	f := checkResponseFields()
	f["last_successful_commit"] = respString("The last successful commit the change was measured from; empty when there is none (every file of the commit counts as changed).")
	return f
}

// checkResponseFields describe checkData.
func checkResponseFields() map[string]*framework.FieldSchema {
	return map[string]*framework.FieldSchema{
		"commit":   respString("The commit checked."),
		"ok":       respBool("Whether the commit is accepted: the quorum and every rule its change touches hold."),
		"verdict":  respString("The check in words, the same as a refusal in status: who signed with which key, each rule that applies, what is missing and who could still sign."),
		"required": respInt("required_number_of_verified_signatures_on_commit: the quorum of signers."),
		"verified": respInt("How many distinct signers (people, not keys) counted."),
		"missing":  respInt("How many more signers the quorum needs (0 when met)."),
		"signers":  respStrings("Each signer who counted, with the keys that verified: `alice (pgp key FINGERPRINT in commit)`."),
		"signed_by": {Type: framework.TypeSlice, Required: true, Description: "Each signer who counted: name, and keys (fingerprint, " +
			"kind pgp or ssh, source commit or notes) whose signatures verified."},
		"rules": {Type: framework.TypeSlice, Required: true, Description: "Each signature rule the change touches: name, paths, " +
			"required_signers, signers (empty: any), matched (some changed files it applies to), matched_count, beyond_cap (applies " +
			"because the change is past the file cap), signed, missing, could_sign, ok."},
		"not_counted":      respStrings("Signatures and keys that did not count, and why (unknown keys, expired, revoked, bad signatures)."),
		"untrusted_commit": respString("When the plugin's signature did not count: the commit below it that is not accepted; else empty."),
		"untrusted_reason": respString("Why untrusted_commit is not accepted; else empty."),
		"changed_since":    respString("The commit the change is measured from; empty: every file of the commit counted as changed."),
		"changed_files":    respInt("How many changed files the check considered (only when a rule is configured)."),
		"changed_capped":   respBool("The change had more files than a check lists, so every rule applies."),
	}
}

const pathSignaturesHelpDesc = `
Checks a commit of the watched branch the way the watch checks HEAD, and
says in the same words: who signed (each signer, the key that verified and
whether the signature is the commit's own or in refs/notes/signatures), the
signature rules the change touches (the change being the files that differ
from the last successful commit; every file when there is none) with the
files that made each apply, what each rule and the quorum still miss, who
could still sign, and what did not count (unknown keys, expired or revoked
keys, bad signatures).

Nothing runs and the watch's state is not touched. The mirror answers as it
is; only when it lacks the commit is the branch fetched once (bounded), and a
commit still missing then gets 404. The read is served by the active node.

  vault read flant_gitops/signatures/$(git rev-parse HEAD)

flant_gitops-sign show uses it when VAULT_ADDR is set.
`
