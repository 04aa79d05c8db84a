package backend

import (
	"context"
	"fmt"

	"github.com/hashicorp/vault/sdk/logical"

	"github.com/flant/flant_gitops/gitwatch"
)

// untrustedTipError refuses a patch on a tip the trust rule does not accept
// (require_trusted_tip): 409, the tip named, nothing pushed.
type untrustedTipError struct {
	repo, branch, tip string
	q                 gitwatch.Quorum
}

func (e *untrustedTipError) Error() string {
	// patch.BaseError around it names the tip and branch and says nothing
	// was pushed.
	msg := fmt.Sprintf("repository %q requires a trusted tip (require_trusted_tip) and this tip is not accepted: "+
		"it has %d of the %d required signatures by trusted keys", e.repo, e.q.Verified, e.q.Required)
	if e.q.Untrusted != "" {
		msg += "; " + e.q.UntrustedChainText(e.tip)
	}
	return msg + ". A trusted person signs the tip (a signatures note will do), then retry"
}

// trustedTipCheck builds the tip check of a require_trusted_tip repository
// with the watch's rule: the mount's trusted keys and quorum (at least one
// signature: a tip nobody signed is never "trusted"), the plugin's keys
// counting only on top of an accepted commit and only on commits made for
// this repository and branch, and the watch's last successful commit as an
// anchor when the repository is the watched branch.
func (ps *patchState) trustedTipCheck(ctx context.Context, s logical.Storage, repo *repositoryEntry) (func(context.Context, string, *gitwatch.Mirror) error, error) {
	keys, err := listTrustedKeys(ctx, s)
	if err != nil {
		return nil, err
	}
	cfg, err := getConfig(ctx, s)
	if err != nil {
		return nil, err
	}
	target := gitwatch.Target{URL: repo.URL, Branch: repo.Branch}
	rule := gitwatch.Rule{Required: 1, Target: target}
	for _, k := range keys {
		rule.Trusted = append(rule.Trusted, gitwatch.TrustedKey{Name: k.Name, Armored: k.PublicKey})
	}
	if rule.PluginKeys, err = pluginKeyFingerprints(ctx, s, keys); err != nil {
		return nil, err
	}
	if cfg != nil {
		rule.Required = max(1, cfg.RequiredSignatures)
		if sameTarget(gitwatch.Target{URL: cfg.GitRepoURL, Branch: cfg.GitBranchName}, target) {
			last, err := ps.b.watch.LastSuccessful(ctx, watchStorage{s}, cfg.InitialLastSuccessfulCommit)
			if err != nil {
				return nil, err
			}
			if last.Commit != "" {
				rule.Accepted = []string{last.Commit}
			}
		}
	}
	return func(ctx context.Context, tip string, m *gitwatch.Mirror) error {
		q, err := m.Accept(ctx, tip, rule)
		if err != nil {
			return fmt.Errorf("checking the signatures of the tip %s: %w", tip, err)
		}
		if !q.OK {
			return &untrustedTipError{repo: repo.Name, branch: repo.Branch, tip: tip, q: q}
		}
		return nil
	}, nil
}

// sameTarget compares two repository and branch pairs in canonical form
// (gitwatch.CanonicalRepoURL); one that cannot be read is no match.
func sameTarget(a, b gitwatch.Target) bool {
	ca, err := a.Canonical()
	if err != nil {
		return false
	}
	cb, err := b.Canonical()
	return err == nil && ca == cb
}
