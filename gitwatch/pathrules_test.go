package gitwatch

import (
	"context"
	"fmt"
	"path"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/filemode"
	"github.com/go-git/go-git/v5/plumbing/object"

	"github.com/flant/flant_gitops/gitwatch/gittest"
	"github.com/flant/flant_gitops/gitwatch/pgptest"
)

func TestMatchPath(t *testing.T) {
	tests := []struct {
		pattern, file string
		want          bool
	}{
		{"prod/**", "prod/a.yaml", true},
		{"prod/**", "prod/deep/er/a.yaml", true},
		{"prod/**", "production/a.yaml", false},
		{"prod/**", "staging/prod/a.yaml", false},
		{"prod/*.yaml", "prod/a.yaml", true},
		{"prod/*.yaml", "prod/x/a.yaml", false},
		{"**/*.yaml", "a.yaml", true},
		{"**/*.yaml", "x/y/a.yaml", true},
		{"**/*.yaml", "x/y/a.yml", false},
		{"prod/**/secret?.yaml", "prod/secret1.yaml", true},
		{"prod/**/secret?.yaml", "prod/a/b/secret2.yaml", true},
		{"prod/**/secret?.yaml", "prod/a/b/secret10.yaml", false},
		{"[ab]/x", "a/x", true},
		{"[ab]/x", "c/x", false},
		{"Makefile", "Makefile", true},
		{"Makefile", "sub/Makefile", false},
		{"**", "anything/at/all", true},
	}
	for _, tt := range tests {
		if err := ValidatePattern(tt.pattern); err != nil {
			t.Errorf("ValidatePattern(%q) = %v", tt.pattern, err)
		}
		if got := MatchPath(tt.pattern, tt.file); got != tt.want {
			t.Errorf("MatchPath(%q, %q) = %v, want %v", tt.pattern, tt.file, got, tt.want)
		}
	}
}

func TestValidatePatternRefuses(t *testing.T) {
	tests := []struct{ pattern, says string }{
		{"", "empty"},
		{"/prod/**", "relative to the repository root"},
		{"prod/", `"prod/**"`},
		{"prod//x", "empty segment"},
		{"./prod", `"." segment`},
		{"prod/../x", `".." segment`},
		{"prod/a**", "whole segment"},
		{"prod/[a", "not a valid glob"},
		{"**/**/**/**/**/x", "at most 4"},
		{strings.Repeat("a", 600), "longer than"},
	}
	for _, tt := range tests {
		err := ValidatePattern(tt.pattern)
		if err == nil || !strings.Contains(err.Error(), tt.says) {
			t.Errorf("ValidatePattern(%.30q) = %v, want an error saying %q", tt.pattern, err, tt.says)
		}
	}
	for _, pr := range []PathRule{
		{Name: "zero", Paths: []string{"prod/**"}, Required: 0},
		{Name: "nopaths", Required: 1},
		{Name: "toofew", Paths: []string{"prod/**"}, Required: 3, Signers: []string{"a", "b"}},
	} {
		if err := pr.Validate(); err == nil || !strings.Contains(err.Error(), pr.Name) {
			t.Errorf("Validate(%+v) = %v, want an error naming the rule", pr, err)
		}
	}
}

// treeOf writes files (path -> content) as a tree into g's repository.
func (g *chainGraph) treeOf(files map[string]string) plumbing.Hash {
	g.t.Helper()
	type dir struct {
		files map[string]string
		dirs  map[string]*dir
	}
	root := &dir{files: map[string]string{}, dirs: map[string]*dir{}}
	for p, content := range files {
		d := root
		parts := strings.Split(p, "/")
		for _, seg := range parts[:len(parts)-1] {
			if d.dirs[seg] == nil {
				d.dirs[seg] = &dir{files: map[string]string{}, dirs: map[string]*dir{}}
			}
			d = d.dirs[seg]
		}
		d.files[parts[len(parts)-1]] = content
	}
	var write func(d *dir) plumbing.Hash
	write = func(d *dir) plumbing.Hash {
		tr := &object.Tree{}
		for name, content := range d.files {
			obj := g.git.Storer.NewEncodedObject()
			obj.SetType(plumbing.BlobObject)
			w, _ := obj.Writer()
			_, _ = w.Write([]byte(content))
			_ = w.Close()
			h, err := g.git.Storer.SetEncodedObject(obj)
			if err != nil {
				g.t.Fatal(err)
			}
			tr.Entries = append(tr.Entries, object.TreeEntry{Name: name, Mode: filemode.Regular, Hash: h})
		}
		for name, sub := range d.dirs {
			tr.Entries = append(tr.Entries, object.TreeEntry{Name: name, Mode: filemode.Dir, Hash: write(sub)})
		}
		// git's order: a folder sorts as if its name ended in '/'.
		key := func(e object.TreeEntry) string {
			if e.Mode == filemode.Dir {
				return e.Name + "/"
			}
			return e.Name
		}
		sort.Slice(tr.Entries, func(i, j int) bool { return key(tr.Entries[i]) < key(tr.Entries[j]) })
		obj := g.git.Storer.NewEncodedObject()
		if err := tr.Encode(obj); err != nil {
			g.t.Fatal(err)
		}
		h, err := g.git.Storer.SetEncodedObject(obj)
		if err != nil {
			g.t.Fatal(err)
		}
		return h
	}
	return write(root)
}

// files commits the files (the whole tree) on parents, signed by signer.
func (g *chainGraph) files(files map[string]string, signer *pgptest.Key, parents ...string) string {
	g.t.Helper()
	g.tree = g.treeOf(files)
	return g.commit(signer, parents...)
}

func TestAcceptPathRules(t *testing.T) {
	alice, bob, carol := pgptest.NewKey(t, "Alice"), pgptest.NewKey(t, "Bob"), pgptest.NewKey(t, "Carol")
	aliceToken := pgptest.NewKey(t, "Alice")
	plugin := pgptest.NewKey(t, "flant_gitops")
	trusted := []TrustedKey{
		{Name: "alice-laptop", Armored: alice.PublicArmored(t), Signer: "alice"},
		{Name: "alice-token", Armored: aliceToken.PublicArmored(t), Signer: "alice"},
		{Name: "bob", Armored: bob.PublicArmored(t)},
		{Name: "carol", Armored: carol.PublicArmored(t), Signer: "carol"},
		{Name: "ci", Armored: plugin.PublicArmored(t)},
	}
	prod := PathRule{Name: "prod", Paths: []string{"prod/**"}, Required: 2}
	base := map[string]string{"prod/a.yaml": "a: 1", "staging/a.yaml": "a: 1", "README": "hi"}
	with := func(changes map[string]string) map[string]string {
		out := make(map[string]string, len(base))
		for k, v := range base {
			out[k] = v
		}
		for k, v := range changes {
			if v == "" {
				delete(out, k)
			} else {
				out[k] = v
			}
		}
		return out
	}
	srv := gittest.NewServer(t)

	type want struct {
		ok        bool
		rules     []string // names of the applying rules
		met       []bool
		signed    []string // of the first rule
		couldSign []string // of the first rule
		missing   int      // of the first rule
		capped    bool
		says      string // in the verdict
	}
	tests := []struct {
		name     string
		rules    []PathRule
		required int
		maxFiles int
		noSince  bool // the first run: no last successful commit
		// build returns HEAD; the graph's first commit is the last
		// successful one.
		build func(g *chainGraph, last string) string
		want  want
	}{
		{"a change outside every rule needs only the quorum", []PathRule{prod}, 1, 0, false,
			func(g *chainGraph, last string) string {
				return g.files(with(map[string]string{"staging/a.yaml": "a: 2"}), alice, last)
			}, want{ok: true}},
		{"a change under prod/** needs 2 signers", []PathRule{prod}, 1, 0, false,
			func(g *chainGraph, last string) string {
				return g.files(with(map[string]string{"prod/a.yaml": "a: 2"}), alice, last)
			}, want{rules: []string{"prod"}, met: []bool{false}, signed: []string{"alice"}, couldSign: []string{"bob", "carol"}, missing: 1,
				says: `rule "prod" (prod/**) applies to prod/a.yaml and needs 2 signer(s): not met, signed by alice, 1 more needed; could still sign: bob, carol`}},
		{"two signers meet the prod rule", []PathRule{prod}, 1, 0, false,
			func(g *chainGraph, last string) string {
				head := g.files(with(map[string]string{"prod/a.yaml": "a: 2"}), alice, last)
				g.repo.NoteSignature(t, head, bob)
				return head
			}, want{ok: true, rules: []string{"prod"}, met: []bool{true}, signed: []string{"alice", "bob"}, couldSign: []string{"carol"}}},
		{"one person's two keys count once for the rule too", []PathRule{prod}, 1, 0, false,
			func(g *chainGraph, last string) string {
				head := g.files(with(map[string]string{"prod/a.yaml": "a: 2"}), alice, last)
				g.repo.NoteSignature(t, head, aliceToken)
				return head
			}, want{rules: []string{"prod"}, met: []bool{false}, signed: []string{"alice"}, couldSign: []string{"bob", "carol"}, missing: 1}},
		{"removing a file under prod/** is a change under prod/**", []PathRule{prod}, 1, 0, false,
			func(g *chainGraph, last string) string {
				return g.files(with(map[string]string{"prod/a.yaml": ""}), alice, last)
			}, want{rules: []string{"prod"}, met: []bool{false}, signed: []string{"alice"}, couldSign: []string{"bob", "carol"}, missing: 1}},
		{"a rule restricted to a set counts only its members", []PathRule{{Name: "prod-owners", Paths: []string{"prod/**"}, Required: 1, Signers: []string{"bob", "carol"}}}, 1, 0, false,
			func(g *chainGraph, last string) string {
				return g.files(with(map[string]string{"prod/b.yaml": "b: 1"}), alice, last)
			}, want{rules: []string{"prod-owners"}, met: []bool{false}, couldSign: []string{"bob", "carol"}, missing: 1,
				says: "needs 1 signer(s) from bob, carol: not met, signed by none of them"}},
		{"every applying rule must hold (strictest wins)", []PathRule{prod, {Name: "yaml", Paths: []string{"**/*.yaml"}, Required: 1}}, 1, 0, false,
			func(g *chainGraph, last string) string {
				return g.files(with(map[string]string{"prod/a.yaml": "a: 2"}), bob, last)
			}, want{rules: []string{"prod", "yaml"}, met: []bool{false, true}, signed: []string{"bob"}, couldSign: []string{"alice", "carol"}, missing: 1}},
		{"the quorum still holds when the rules do", []PathRule{{Name: "one", Paths: []string{"prod/**"}, Required: 1}}, 2, 0, false,
			func(g *chainGraph, last string) string {
				return g.files(with(map[string]string{"prod/a.yaml": "a: 2"}), bob, last)
			}, want{rules: []string{"one"}, met: []bool{true}, signed: []string{"bob"}, couldSign: []string{"alice", "carol"}, says: "1 more needed"}},
		{"a plugin commit under prod/** needs the rule's signers beyond the plugin", []PathRule{prod}, 1, 0, false,
			func(g *chainGraph, last string) string {
				return g.files(with(map[string]string{"prod/a.yaml": "a: ci"}), plugin, last)
			}, want{rules: []string{"prod"}, met: []bool{false}, couldSign: []string{"alice", "bob", "carol"}, missing: 2}},
		{"a plugin commit under prod/** with two persons' notes is accepted", []PathRule{prod}, 1, 0, false,
			func(g *chainGraph, last string) string {
				head := g.files(with(map[string]string{"prod/a.yaml": "a: ci"}), plugin, last)
				g.repo.NoteSignature(t, head, alice)
				g.repo.NoteSignature(t, head, carol)
				return head
			}, want{ok: true, rules: []string{"prod"}, met: []bool{true}, signed: []string{"alice", "carol"}, couldSign: []string{"bob"}}},
		{"a plugin commit outside every rule needs only the quorum", []PathRule{prod}, 1, 0, false,
			func(g *chainGraph, last string) string {
				return g.files(with(map[string]string{"staging/a.yaml": "a: ci"}), plugin, last)
			}, want{ok: true}},
		{"the first run: every file of HEAD counts as changed", []PathRule{prod}, 1, 0, true,
			func(g *chainGraph, last string) string {
				return g.files(with(map[string]string{"staging/a.yaml": "a: 2"}), alice, last)
			}, want{rules: []string{"prod"}, met: []bool{false}, signed: []string{"alice"}, couldSign: []string{"bob", "carol"}, missing: 1}},
		{"past the file cap every rule applies", []PathRule{prod}, 1, 2, false,
			func(g *chainGraph, last string) string {
				return g.files(with(map[string]string{"staging/a.yaml": "a: 2", "staging/b.yaml": "b", "staging/c.yaml": "c"}), alice, last)
			}, want{rules: []string{"prod"}, met: []bool{false}, signed: []string{"alice"}, couldSign: []string{"bob", "carol"}, missing: 1, capped: true,
				says: "applies to every file (more than 2 files changed"}},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			repo := srv.NewRepo(t, fmt.Sprintf("paths%d", i))
			g := newChainGraph(t, repo)
			last := g.files(base, nil)
			head := tt.build(g, last)
			m := openMirror(t, srv, repo, t.TempDir())
			mustFetch(t, m)
			rule := Rule{Trusted: trusted, Required: tt.required, PluginKeys: []string{plugin.Fingerprint()}, Accepted: []string{last},
				Target: g.target, PathRules: tt.rules, Since: last, MaxChangedFiles: tt.maxFiles}
			if tt.noSince {
				rule.Accepted, rule.Since = nil, ""
			}
			q, err := m.Accept(context.Background(), head, rule)
			if err != nil {
				t.Fatal(err)
			}
			verdict := q.Verdict()
			t.Log(verdict)
			var names []string
			var met []bool
			for _, r := range q.Rules {
				names, met = append(names, r.Name), append(met, r.OK)
			}
			if q.OK != tt.want.ok || !slices.Equal(names, tt.want.rules) || !slices.Equal(met, tt.want.met) || q.Changes.Capped != tt.want.capped {
				t.Errorf("ok=%v rules=%v met=%v capped=%v, want %v %v %v %v", q.OK, names, met, q.Changes.Capped, tt.want.ok, tt.want.rules, tt.want.met, tt.want.capped)
			}
			if len(q.Rules) > 0 {
				r := q.Rules[0]
				if !slices.Equal(r.Signed, tt.want.signed) || !slices.Equal(r.CouldSign, tt.want.couldSign) || r.Missing != tt.want.missing {
					t.Errorf("rule %s: signed=%v could=%v missing=%d, want %v %v %d", r.Name, r.Signed, r.CouldSign, r.Missing, tt.want.signed, tt.want.couldSign, tt.want.missing)
				}
				if !r.BeyondCap && len(r.Matched) == 0 {
					t.Errorf("rule %s applies but names no file", r.Name)
				}
			}
			if tt.want.says != "" && !strings.Contains(verdict, tt.want.says) {
				t.Errorf("verdict %q does not say %q", verdict, tt.want.says)
			}
		})
	}
}

// The diff reads only what differs, and a folder replaced by a file (or
// the other way round) reports both sides.
func TestChangedFiles(t *testing.T) {
	srv := gittest.NewServer(t)
	repo := srv.NewRepo(t, "diff")
	g := newChainGraph(t, repo)
	big := map[string]string{"x": "folder"}
	for i := range 50 {
		big[path.Join("same", fmt.Sprint(i))] = "v"
	}
	big["a/b/c"] = "1"
	a := g.files(big, nil)
	big2 := map[string]string{"x/inside": "now a folder", "a": "now a file"}
	for i := range 50 {
		big2[path.Join("same", fmt.Sprint(i))] = "v"
	}
	b := g.files(big2, nil, a)
	m := openMirror(t, srv, repo, t.TempDir())
	mustFetch(t, m)
	files, ch, err := m.changedFiles(context.Background(), a, plumbing.NewHash(b), 100)
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(files)
	want := []string{"a", "a/b/c", "x", "x/inside"}
	if !slices.Equal(files, want) || ch.Capped || ch.Files != 4 {
		t.Errorf("changed = %v (%+v), want %v", files, ch, want)
	}
	// An unreadable since makes every rule apply.
	_, ch, err = m.changedFiles(context.Background(), strings.Repeat("1", 40), plumbing.NewHash(b), 100)
	if err != nil || ch.Problem == "" {
		t.Errorf("unknown since: %+v, %v; want a problem and no error", ch, err)
	}
}
