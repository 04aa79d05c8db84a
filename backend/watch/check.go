package watch

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/flant/flant_gitops/gitwatch"
)

// newCheck is the shown form of a quorum.
func newCheck(q gitwatch.Quorum) *Check {
	c := &Check{Commit: q.Commit, OK: q.OK, Required: q.Required, Verified: q.Verified, Missing: q.Missing,
		UntrustedCommit: q.Untrusted, UntrustedReason: q.UntrustedReason, NotCounted: q.Ignored, Text: q.Verdict(),
		ChangedSince: q.Changes.Since, ChangedFiles: q.Changes.Files, ChangedCapped: q.Changes.Capped}
	for _, s := range q.Signers {
		c.Signers = append(c.Signers, s.Label())
		sb := SignedBy{Name: s.Name}
		for _, k := range s.Keys {
			sb.Keys = append(sb.Keys, SignerKey{Fingerprint: k.Fingerprint, Kind: k.Kind, Source: k.Source})
		}
		c.SignedBy = append(c.SignedBy, sb)
	}
	for _, r := range q.Rules {
		c.Rules = append(c.Rules, RuleCheck{Name: r.Name, Paths: r.Paths, RequiredSigners: r.Required, Signers: r.Signers,
			Matched: r.Matched, MatchedCount: r.MatchedCount, BeyondCap: r.BeyondCap, Signed: r.Signed, Missing: r.Missing,
			CouldSign: r.CouldSign, OK: r.OK})
	}
	return c
}

// rule is what the watch checks a commit with: the mount's trusted
// signers, quorum and path rules, the plugin's keys on top of an accepted
// commit, the change measured from the last successful commit.
func rule(ws *Settings, last string) gitwatch.Rule {
	r := gitwatch.Rule{Trusted: ws.Keys, Required: ws.Required, PluginKeys: ws.PluginKeys,
		Target: gitwatch.Target{URL: ws.RepoURL, Branch: ws.Branch}, PathRules: ws.PathRules, Since: last}
	if last != "" {
		r.Accepted = []string{last}
	}
	return r
}

// checkFetchTimeout bounds the one fetch CheckCommit may make.
const checkFetchTimeout = time.Minute

// ErrCommitNotOnBranch: the commit is not in the mirror, even after a
// fetch of the watched branch.
var ErrCommitNotOnBranch = errors.New("the commit is not on the watched branch")

// CheckCommit checks commit's signatures as a poll would, without running
// anything and without touching the watch's state: the mirror answers as
// it is, fetching once (bounded) only when it does not hold the commit.
// last is the last successful commit the check measured the change from.
func (w *Worker) CheckCommit(ctx context.Context, s Storage, ws *Settings, commit string) (c *Check, last string, err error) {
	ls, err := effectiveLastSuccessful(ctx, s, ws.InitialLastSuccessful)
	if err != nil {
		return nil, "", err
	}
	m, err := w.mirrorFor(ctx, ws)
	if err != nil {
		return nil, "", err
	}
	r := rule(ws, ls.Commit)
	q, err := m.Accept(ctx, commit, r)
	if gitwatch.IsMissingCommit(err) {
		fctx, cancel := context.WithTimeout(ctx, checkFetchTimeout)
		_, ferr := m.Fetch(fctx)
		cancel()
		if ferr != nil {
			return nil, "", fmt.Errorf("commit %s is not in the mirror and fetching branch %s of %s failed: %w", commit, ws.Branch, ws.RepoURL, ferr)
		}
		q, err = m.Accept(ctx, commit, r)
	}
	if gitwatch.IsMissingCommit(err) {
		return nil, "", fmt.Errorf("%w: commit %s is not in branch %s of %s, or not pushed yet (fetched just now)", ErrCommitNotOnBranch, commit, ws.Branch, ws.RepoURL)
	}
	if err != nil {
		return nil, "", fmt.Errorf("verifying the signatures of %s: %w", commit, err)
	}
	return newCheck(q), ls.Commit, nil
}
