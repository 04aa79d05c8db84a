package backend

import (
	"context"
	"fmt"
	"sync"
	"time"

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
	trusted, keys, err := trustedForRule(ctx, s)
	if err != nil {
		return nil, err
	}
	cfg, err := getConfig(ctx, s)
	if err != nil {
		return nil, err
	}
	target := gitwatch.Target{URL: repo.URL, Branch: repo.Branch}
	rule := gitwatch.Rule{Trusted: trusted, Required: 1, Target: target}
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
	digest := rule.Digest()
	return func(ctx context.Context, tip string, m *gitwatch.Mirror) error {
		key := ""
		if digest != "" {
			key = tip + "\x00" + digest + "\x00" + m.SignaturesState()
		}
		q, ok := ps.tips.get(key, time.Now())
		if !ok {
			var err error
			if q, err = m.Accept(ctx, tip, rule); err != nil {
				return fmt.Errorf("checking the signatures of the tip %s: %w", tip, err)
			}
			ps.tips.put(key, q, time.Now())
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

// Bounds of tipMemo: a group asks about one tip, and the branches working
// at once are a few; a verdict is reused for a minute at most, since time
// alone can change it (a key or signature expiring or becoming valid).
const (
	tipMemoSize = 64
	tipMemoTTL  = time.Minute
)

// tipMemo remembers trusted-tip verdicts by tip, rule and signature refs.
// Every member of a group asks about the same tip, and whoever may push
// notes can make one check expensive: the check runs once per tip, not once
// per member.
type tipMemo struct {
	mu      sync.Mutex
	entries map[string]tipVerdict
	checks  int // verdicts computed, for tests
}

type tipVerdict struct {
	q  gitwatch.Quorum
	at time.Time
}

// get is the verdict remembered under key ("" never is).
func (t *tipMemo) get(key string, now time.Time) (gitwatch.Quorum, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	v, ok := t.entries[key]
	if key == "" || !ok || now.Sub(v.at) >= tipMemoTTL || now.Before(v.at) {
		return gitwatch.Quorum{}, false
	}
	return v.q, true
}

// put remembers a verdict, making room by dropping expired entries, then
// the oldest.
func (t *tipMemo) put(key string, q gitwatch.Quorum, now time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.checks++
	if key == "" {
		return
	}
	if t.entries == nil {
		t.entries = make(map[string]tipVerdict)
	}
	if _, ok := t.entries[key]; !ok && len(t.entries) >= tipMemoSize {
		oldest := ""
		for k, v := range t.entries {
			if now.Sub(v.at) >= tipMemoTTL || now.Before(v.at) {
				delete(t.entries, k)
				continue
			}
			if oldest == "" || v.at.Before(t.entries[oldest].at) {
				oldest = k
			}
		}
		if len(t.entries) >= tipMemoSize {
			delete(t.entries, oldest)
		}
	}
	t.entries[key] = tipVerdict{q: q, at: now}
}
