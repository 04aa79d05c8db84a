package gitwatch

import (
	"context"
	"errors"
	"fmt"
	"path"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/filemode"
	"github.com/go-git/go-git/v5/plumbing/object"
)

// PathRule asks more signers for some paths: a commit whose change touches
// a file matching Paths needs Required signers (of Signers when set) among
// the trusted persons who signed it. The plugin's signature never counts
// for a path rule: it vouches for the change it made, not for who may
// change these paths.
type PathRule struct {
	// Name is the operator's name for the rule.
	Name string
	// Paths are globs (see MatchPath), any of which makes the rule apply.
	Paths []string
	// Required is how many signers the rule needs (at least 1).
	Required int
	// Signers restricts who counts for the rule, by signer name; empty:
	// any trusted signer.
	Signers []string
}

// DefaultMaxChangedFiles bounds the changed files a check considers
// (Rule.MaxChangedFiles when zero). Past it every path rule applies: a
// change too big to list is treated as touching every guarded path.
const DefaultMaxChangedFiles = 10000

// maxMatchedSample bounds the changed files a RuleOutcome names.
const maxMatchedSample = 10

// RuleOutcome is how one applying path rule fared on a commit.
type RuleOutcome struct {
	Name     string
	Paths    []string
	Required int
	// Signers is the rule's set of signers; empty means any trusted one.
	Signers []string
	// Matched are some of the changed files the rule applies to (at most
	// maxMatchedSample), MatchedCount how many there are in all.
	Matched      []string
	MatchedCount int
	// BeyondCap: the change has more files than the check considers, so
	// the rule applies whatever files it touches.
	BeyondCap bool
	// Signed names the signers who signed and count for the rule.
	Signed []string
	// Missing is how many more are needed (0 when OK).
	Missing int
	// CouldSign names the trusted signers who count for the rule and have
	// not signed.
	CouldSign []string
	OK        bool
}

// Changes says which files a check looked at to decide the path rules.
type Changes struct {
	// Since is the commit the change is measured from (the last successful
	// commit); empty when every file of the commit counted as changed.
	Since string
	// Files is how many changed files were considered.
	Files int
	// Capped: there were more than the check considers (every rule
	// applies).
	Capped bool
	// Problem says why the change could not be listed (every rule
	// applies), "" when it was.
	Problem string
}

// Accept counts the signatures on commit under rule: the quorum (with plugin
// keys counted only on top of an accepted parent, see Rule) and, when the
// rule has path rules, each path rule the change touches. The change is the
// tree difference between rule.Since and commit (every file of commit when
// Since is empty). OK holds when the quorum and every applying rule hold;
// Rules tells each applying rule's outcome.
func (m *Mirror) Accept(ctx context.Context, commit string, rule Rule) (Quorum, error) {
	h, err := parseCommitID(commit)
	if err != nil {
		return Quorum{}, err
	}
	if rule.Required < 0 {
		return Quorum{}, fmt.Errorf("required number of signatures must not be negative, got %d", rule.Required)
	}
	for _, pr := range rule.PathRules {
		if err := pr.Validate(); err != nil {
			return Quorum{}, err
		}
	}
	now := time.Now()
	plugin := make(map[string]bool, len(rule.PluginKeys))
	for _, fp := range rule.PluginKeys {
		plugin[strings.ToUpper(fp)] = true
	}
	signers, problems := loadTrusted(rule.Trusted)
	signers.isolate(plugin)
	q, err := m.acceptQuorum(ctx, h, rule, signers, problems, plugin, now)
	if err != nil || q.Anchored || len(rule.PathRules) == 0 {
		return q, err
	}
	limit := rule.MaxChangedFiles
	if limit <= 0 {
		limit = DefaultMaxChangedFiles
	}
	files, ch, err := m.changedFiles(ctx, rule.Since, h, limit)
	if err != nil {
		return Quorum{}, err
	}
	q.Changes = ch
	var persons []Signer
	for _, s := range q.Signers {
		if !plugin[s.Fingerprint] {
			persons = append(persons, s)
		}
	}
	q.Rules = judgeRules(rule.PathRules, files, ch.Capped || ch.Problem != "", persons, signers.signerNames(plugin))
	for _, r := range q.Rules {
		if !r.OK {
			q.OK = false
		}
	}
	return q, nil
}

// judgeRules decides which rules the changed files make apply (all of them
// when the change could not be listed whole) and whether the persons who
// signed meet each.
func judgeRules(rules []PathRule, files []string, all bool, persons []Signer, known []string) []RuleOutcome {
	var out []RuleOutcome
	for _, pr := range rules {
		o := RuleOutcome{Name: pr.Name, Paths: slices.Clone(pr.Paths), Required: pr.Required, Signers: slices.Clone(pr.Signers), BeyondCap: all}
		for _, f := range files {
			if pr.Matches(f) {
				o.MatchedCount++
				if len(o.Matched) < maxMatchedSample {
					o.Matched = append(o.Matched, f)
				}
			}
		}
		if o.MatchedCount == 0 && !all {
			continue
		}
		counts := func(name string) bool { return len(pr.Signers) == 0 || slices.Contains(pr.Signers, name) }
		for _, p := range persons {
			if counts(p.Name) {
				o.Signed = append(o.Signed, p.Name)
			}
		}
		for _, n := range known {
			if counts(n) && !slices.Contains(o.Signed, n) {
				o.CouldSign = append(o.CouldSign, n)
			}
		}
		o.OK = len(o.Signed) >= pr.Required
		if !o.OK {
			o.Missing = pr.Required - len(o.Signed)
		}
		out = append(out, o)
	}
	return out
}

// Matches reports whether a changed file falls under the rule.
func (pr PathRule) Matches(file string) bool {
	for _, p := range pr.Paths {
		if MatchPath(p, file) {
			return true
		}
	}
	return false
}

// Validate says what is wrong with the rule, nil when it can be used.
func (pr PathRule) Validate() error {
	if pr.Required < 1 {
		return fmt.Errorf("path rule %q: required signers must be at least 1, got %d", pr.Name, pr.Required)
	}
	if len(pr.Paths) == 0 {
		return fmt.Errorf("path rule %q has no paths", pr.Name)
	}
	for _, p := range pr.Paths {
		if err := ValidatePattern(p); err != nil {
			return fmt.Errorf("path rule %q: %w", pr.Name, err)
		}
	}
	if len(pr.Signers) > 0 && pr.Required > len(pr.Signers) {
		return fmt.Errorf("path rule %q needs %d signers but names only %d, so it could never be met", pr.Name, pr.Required, len(pr.Signers))
	}
	return nil
}

// Glob limits: a pattern is short and has few "**", so matching one file
// costs little whatever the pattern.
const (
	maxPatternLen       = 512
	maxDoubleStarsInPat = 4
)

// ValidatePattern checks a path glob. Patterns are matched against the
// slash-separated path of a file from the repository root (no leading
// slash): "*", "?" and "[...]" match within one path segment as in
// path.Match, and a "**" segment matches any number of segments, none
// included. So "prod/**" matches every file under prod/, "**/*.yaml"
// every YAML file, "prod/*.yaml" only the YAML files directly in prod/.
func ValidatePattern(p string) error {
	switch {
	case p == "":
		return errors.New("a path pattern is empty")
	case len(p) > maxPatternLen:
		return fmt.Errorf("path pattern %.40q... is longer than %d characters", p, maxPatternLen)
	case strings.HasPrefix(p, "/"):
		return fmt.Errorf("path pattern %q starts with '/': patterns are relative to the repository root, write %q", p, strings.TrimLeft(p, "/"))
	case strings.HasSuffix(p, "/"):
		return fmt.Errorf("path pattern %q ends with '/': to match everything under a folder write %q", p, p+"**")
	case strings.ContainsRune(p, 0):
		return fmt.Errorf("path pattern %q contains a NUL byte", p)
	}
	stars := 0
	for _, seg := range strings.Split(p, "/") {
		switch {
		case seg == "":
			return fmt.Errorf("path pattern %q has an empty segment ('//')", p)
		case seg == "." || seg == "..":
			return fmt.Errorf("path pattern %q has a %q segment: name paths from the repository root without . or ..", p, seg)
		case seg == "**":
			stars++
			continue
		case strings.Contains(seg, "**"):
			return fmt.Errorf("path pattern %q uses ** inside a segment (%q): ** must be a whole segment, as in prod/**/x.yaml; within a segment use *", p, seg)
		}
		if _, err := path.Match(seg, ""); err != nil {
			return fmt.Errorf("path pattern %q: segment %q is not a valid glob: %w", p, seg, err)
		}
	}
	if stars > maxDoubleStarsInPat {
		return fmt.Errorf("path pattern %q has %d '**' segments; at most %d are allowed", p, stars, maxDoubleStarsInPat)
	}
	return nil
}

// MatchPath reports whether file (slash-separated, from the repository
// root) matches pattern (see ValidatePattern). An invalid pattern matches
// nothing.
func MatchPath(pattern, file string) bool {
	return matchSegments(strings.Split(pattern, "/"), strings.Split(file, "/"))
}

func matchSegments(pat, segs []string) bool {
	for len(pat) > 0 {
		if pat[0] == "**" {
			for i := 0; i <= len(segs); i++ {
				if matchSegments(pat[1:], segs[i:]) {
					return true
				}
			}
			return false
		}
		if len(segs) == 0 {
			return false
		}
		if ok, err := path.Match(pat[0], segs[0]); err != nil || !ok {
			return false
		}
		pat, segs = pat[1:], segs[1:]
	}
	return len(segs) == 0
}

// changedFiles lists the files that differ between since and head (added,
// changed, removed or changed in kind), or every file of head when since
// is "". It stops past limit files, and past a bound on the tree entries it
// reads, and then says so (Capped): the caller applies every rule. A since
// that cannot be read is reported in Problem, not as an error: every rule
// applies then too.
func (m *Mirror) changedFiles(ctx context.Context, since string, head plumbing.Hash, limit int) ([]string, Changes, error) {
	ch := Changes{Since: since}
	m.mu.Lock()
	defer m.mu.Unlock()
	hc, err := m.repo.CommitObject(head)
	if err != nil {
		return nil, ch, fmt.Errorf("read commit %s: %w", head, err)
	}
	ht, err := hc.Tree()
	if err != nil {
		return nil, ch, fmt.Errorf("read the tree of %s: %w", head, err)
	}
	var bt *object.Tree
	if since != "" {
		sh, err := parseCommitID(since)
		var sc *object.Commit
		if err == nil {
			sc, err = m.repo.CommitObject(sh)
		}
		if err == nil {
			bt, err = sc.Tree()
		}
		if err != nil {
			ch.Problem = fmt.Sprintf("the files changed since %s cannot be listed (%v), so every path rule applies", since, err)
			return nil, ch, nil
		}
	}
	d := &differ{ctx: ctx, limit: limit, budget: 16 * limit}
	err = d.trees(bt, ht, "")
	switch {
	case errors.Is(err, errCapped):
		ch.Capped = true
	case err != nil:
		return nil, ch, err
	}
	ch.Files = len(d.files)
	return d.files, ch, nil
}

var errCapped = errors.New("too many changed files")

// differ walks two trees side by side, entering only subtrees whose hashes
// differ, so its work follows the size of the change, not of the tree.
type differ struct {
	ctx    context.Context
	limit  int
	budget int // tree entries it may still read
	files  []string
}

func (d *differ) add(name string) error {
	if len(d.files) >= d.limit {
		return errCapped
	}
	d.files = append(d.files, name)
	return nil
}

// trees compares a (nil: empty) and b (nil: empty) under prefix.
func (d *differ) trees(a, b *object.Tree, prefix string) error {
	if err := d.ctx.Err(); err != nil {
		return err
	}
	var ae, be []object.TreeEntry
	if a != nil {
		ae = a.Entries
	}
	if b != nil {
		be = b.Entries
	}
	d.budget -= len(ae) + len(be)
	if d.budget < 0 {
		return errCapped
	}
	old := make(map[string]*object.TreeEntry, len(ae))
	for i := range ae {
		old[ae[i].Name] = &ae[i]
	}
	names := make([]string, 0, len(ae)+len(be))
	for i := range be {
		e := &be[i]
		names = append(names, e.Name)
		o := old[e.Name]
		delete(old, e.Name)
		if o != nil && o.Hash == e.Hash && o.Mode == e.Mode {
			continue
		}
		if err := d.entry(a, o, b, e, prefix); err != nil {
			return err
		}
	}
	// What only a has, in a stable order.
	var gone []string
	for n := range old {
		gone = append(gone, n)
	}
	sort.Strings(gone)
	for _, n := range gone {
		if err := d.entry(a, old[n], b, nil, prefix); err != nil {
			return err
		}
	}
	return nil
}

// entry compares one name present in a (o) and/or b (e).
func (d *differ) entry(a *object.Tree, o *object.TreeEntry, b *object.Tree, e *object.TreeEntry, prefix string) error {
	var name string
	if e != nil {
		name = prefix + e.Name
	} else {
		name = prefix + o.Name
	}
	var oSub, eSub *object.Tree
	var err error
	oDir := o != nil && o.Mode == filemode.Dir
	eDir := e != nil && e.Mode == filemode.Dir
	if oDir {
		if oSub, err = a.Tree(o.Name); err != nil {
			return fmt.Errorf("read tree %s: %w", name, err)
		}
	}
	if eDir {
		if eSub, err = b.Tree(e.Name); err != nil {
			return fmt.Errorf("read tree %s: %w", name, err)
		}
	}
	// A file (or submodule) on either side is a changed path itself.
	if (o != nil && !oDir) || (e != nil && !eDir) {
		if err := d.add(name); err != nil {
			return err
		}
	}
	if oDir || eDir {
		return d.trees(oSub, eSub, name+"/")
	}
	return nil
}

// IsMissingCommit reports whether err says a commit (or an object it
// needs) is not in the mirror: a fetch may bring it.
func IsMissingCommit(err error) bool {
	return errors.Is(err, plumbing.ErrObjectNotFound)
}
