package gitwatch

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/go-git/go-git/v5/plumbing"
)

// DefaultMaxPluginChain bounds how many plugin-signed commits below a commit
// Accept follows. When one more would have to be followed, the walk stops
// there and the plugin's signature does not count: a trusted person signs
// one of the commits (a note on HEAD will do) or an operator sets the last
// successful commit. Each step verifies one commit's signatures.
const DefaultMaxPluginChain = 256

// Rule says which commits are accepted.
//
// A trusted person's signature vouches for the whole tree of the commit it
// signs. A plugin key (the patch path's own signing key, which signs
// whatever tip it builds on) vouches only for the change it made: its
// signature counts towards Required only when the commit has exactly one
// parent and that parent is accepted: a commit listed in Accepted, a commit
// meeting Required with trusted persons alone, or a plugin-signed commit
// accepted by this same rule. The plugin's signature never counts on a merge
// or a root commit: the patch path makes neither.
//
// The plugin's signature vouches for "this change, made for this target":
// it counts only on a commit whose target trailers (TargetOf) name Target.
// A plugin commit made for another repository or branch, or one that names
// no target (made before the plugin wrote targets), never counts in the
// walk; it is accepted only as one of Accepted or below one.
type Rule struct {
	Trusted  []TrustedKey
	Required int
	// PluginKeys are the primary fingerprints of the plugin's signing keys,
	// current and earlier (upper-case hex); trusted keys with these
	// fingerprints count only as described above, whatever their names.
	PluginKeys []string
	// Accepted are commits accepted whatever their signatures: the last
	// successful commit, which the watch already ran.
	Accepted []string
	// MaxPluginChain bounds the walk (DefaultMaxPluginChain when zero).
	MaxPluginChain int
	// Target is the repository and branch whose commits are checked,
	// compared in canonical form (CanonicalRepoURL). Without one, no plugin
	// signature counts.
	Target Target
	// PathRules ask more signers for some paths (pathrules.go); the quorum
	// above holds as well, whatever rules apply.
	PathRules []PathRule
	// Since is the commit the change is measured from for PathRules (the
	// last successful commit); empty: every file of the commit counts as
	// changed.
	Since string
	// MaxChangedFiles bounds the changed files considered
	// (DefaultMaxChangedFiles when zero); past it every path rule applies.
	MaxChangedFiles int
}

// commitEval is what one commit's signatures say under a Rule.
type commitEval struct {
	q       Quorum // every trusted signer, plugin keys included
	persons []Signer
	plugin  *Signer // a plugin key that signed, nil when none
	parents []plumbing.Hash
	message string
}

// targetCheck says why a plugin signature on e does not count for want
// (the rule's canonical target, or wantErr why it has none); "" when e
// was made for want.
func targetCheck(e commitEval, want Target, wantErr error) string {
	if wantErr != nil {
		return fmt.Sprintf("the plugin's signature counts only on a commit made for the checked repository and branch, and those cannot be compared: %v", wantErr)
	}
	got, err := TargetOf(e.message)
	if errors.Is(err, ErrNoTarget) {
		return "a plugin commit that names no target repository and branch (made before the plugin signed its target): " +
			"it counts only as the last successful commit or below it"
	}
	if err == nil {
		got, err = got.Canonical()
	}
	if err != nil {
		return fmt.Sprintf("a plugin commit whose target cannot be read: %v", err)
	}
	if got != want {
		return fmt.Sprintf("a plugin commit made for %s, not for %s", got, want)
	}
	return ""
}

// acceptQuorum counts the signatures on commit h under rule's quorum
// (Accept adds the path rules). The answer is a Quorum as verify gives it,
// with plugin keys counted only on top of an accepted parent; when they did
// not count, Untrusted names the commit that broke the chain and
// UntrustedReason says why.
func (m *Mirror) acceptQuorum(ctx context.Context, h plumbing.Hash, rule Rule, signers *trustedSet, problems []string, plugin map[string]bool, now time.Time) (Quorum, error) {
	commit := h.String()
	accepted := make(map[plumbing.Hash]bool, len(rule.Accepted))
	for _, c := range rule.Accepted {
		if a, err := parseCommitID(c); err == nil {
			accepted[a] = true
		}
	}
	target, targetErr := rule.Target.Canonical()
	if rule.Target == (Target{}) {
		targetErr = errors.New("the check names no target")
	}
	steps := 0
	eval := func(c plumbing.Hash) (commitEval, error) {
		if err := ctx.Err(); err != nil {
			return commitEval{}, err
		}
		e, err := m.evaluate(c, signers, problems, rule.Required, plugin, now)
		if err != nil && m.Shallow && errors.Is(err, plumbing.ErrObjectNotFound) {
			// A shallow mirror (the patch path's) may hold only the tip:
			// bring the history this walk reaches, with some room ahead.
			if derr := m.Deepen(ctx, commit, steps+16); derr != nil {
				return commitEval{}, derr
			}
			e, err = m.evaluate(c, signers, problems, rule.Required, plugin, now)
		}
		steps++
		return e, err
	}

	head, err := eval(h)
	if err != nil {
		return Quorum{}, err
	}
	q := head.q
	q.Signers, q.Verified = head.persons, len(head.persons)
	q.setOK()
	switch {
	case accepted[h]:
		q.OK, q.Missing, q.Anchored = true, 0, true
		return q, nil
	case q.OK || head.plugin == nil:
		return q, nil
	}

	maxChain := rule.MaxPluginChain
	if maxChain <= 0 {
		maxChain = DefaultMaxPluginChain
	}
	targetOK := func(e commitEval) string { return targetCheck(e, target, targetErr) }
	untrusted, why, err := walkPluginChain(h, head, rule.Required, maxChain, accepted, targetOK, eval)
	if err != nil {
		return Quorum{}, err
	}
	if untrusted != "" {
		q.Untrusted, q.UntrustedReason = untrusted, why
		if untrusted == h.String() {
			q.Ignored = append(q.Ignored, fmt.Sprintf("signature by the plugin's key %s on %s does not count: %s", head.plugin.Fingerprint, untrusted, why))
		} else {
			q.Ignored = append(q.Ignored, fmt.Sprintf("signature by the plugin's key %s does not count: the plugin vouches only for its own change and %s is not accepted (%s)",
				head.plugin.Fingerprint, untrusted, why))
		}
		return q, nil
	}
	q.Signers = append(q.Signers, *head.plugin)
	q.Verified++
	q.PluginCounted = true
	q.setOK()
	return q, nil
}

// walkPluginChain walks down from a plugin-signed head through its run of
// plugin-signed commits to an accepted one; each plugin commit on the way
// must pass targetOK (which answers "" or why not). It answers "" when the
// chain is accepted, else the commit that breaks it and why.
func walkPluginChain(h plumbing.Hash, head commitEval, required, maxChain int, accepted map[plumbing.Hash]bool,
	targetOK func(commitEval) string, eval func(plumbing.Hash) (commitEval, error)) (string, string, error) {
	if len(head.parents) != 1 {
		return h.String(), fmt.Sprintf("it has %d parents; the plugin's signature counts only on a commit with exactly one parent", len(head.parents)), nil
	}
	if why := targetOK(head); why != "" {
		return h.String(), why, nil
	}
	c := head.parents[0]
	for steps := 1; ; steps++ {
		if accepted[c] {
			return "", "", nil
		}
		e, err := eval(c)
		if err != nil {
			return "", "", err
		}
		persons := len(e.persons)
		switch {
		case persons >= required:
			return "", "", nil
		case e.plugin == nil:
			return c.String(), fmt.Sprintf("signed by %d of %d required trusted persons and not the last successful commit", persons, required), nil
		case persons+1 < required:
			return c.String(), fmt.Sprintf("a plugin commit with %d of the %d other trusted signatures it needs", persons, required-1), nil
		case len(e.parents) != 1:
			return c.String(), fmt.Sprintf("a plugin-signed commit with %d parents", len(e.parents)), nil
		}
		if why := targetOK(e); why != "" {
			return c.String(), why, nil
		}
		if steps > maxChain {
			return c.String(), fmt.Sprintf("the walk stopped after %d plugin-signed commits in a row without reaching an accepted commit: a trusted person must sign one of them", maxChain), nil
		}
		c = e.parents[0]
	}
}

// evaluate counts the trusted signatures on one commit and splits them
// into persons and plugin keys.
func (m *Mirror) evaluate(h plumbing.Hash, signers *trustedSet, problems []string, required int, plugin map[string]bool, now time.Time) (commitEval, error) {
	m.mu.Lock()
	blobs, ignored, err := m.signatureBlobs(h)
	var parents []plumbing.Hash
	var message string
	if err == nil {
		co, cerr := m.repo.CommitObject(h)
		if cerr != nil {
			err = fmt.Errorf("read commit %s: %w", h, cerr)
		} else {
			parents, message = co.ParentHashes, co.Message
		}
	}
	m.mu.Unlock()
	if err != nil {
		return commitEval{}, err
	}
	q := countLoaded(h.String(), signers, problems, required, blobs, now)
	q.Ignored = append(ignored, q.Ignored...)
	e := commitEval{q: q, parents: parents, message: message}
	// All plugin keys together count at most once: one signer, one change.
	for i := range q.Signers {
		if plugin[q.Signers[i].Fingerprint] {
			s := q.Signers[i]
			e.plugin = &s
			continue
		}
		e.persons = append(e.persons, q.Signers[i])
	}
	return e, nil
}

// setOK recomputes OK and Missing from Verified.
func (q *Quorum) setOK() {
	q.OK = q.Verified >= q.Required
	q.Missing = 0
	if !q.OK {
		q.Missing = q.Required - q.Verified
	}
}

// UntrustedChainText explains, for the operator, why the plugin's signature
// on commit (the commit Accept checked) did not count, naming the commit
// that broke the chain; it is empty when q.Untrusted is.
func (q Quorum) UntrustedChainText(commit string) string {
	switch q.Untrusted {
	case "":
		return ""
	case commit:
		return fmt.Sprintf("the plugin's signature on %s does not count: %s", commit, q.UntrustedReason)
	}
	return fmt.Sprintf("the plugin's signature vouches only for its own change and counts only on top of an accepted commit, "+
		"but commit %s below it is not accepted (%s): a trusted person must sign it (a signatures note will do) or a commit above it", q.Untrusted, q.UntrustedReason)
}
