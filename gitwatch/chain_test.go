package gitwatch

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/object"

	"github.com/flant/flant_gitops/gitwatch/gittest"
	"github.com/flant/flant_gitops/gitwatch/pgptest"
)

// chainGraph writes commits with any parents and signer straight into a
// served bare repository, so a test can build merges and long chains.
type chainGraph struct {
	t    testing.TB
	repo *gittest.Repo
	git  *git.Repository
	tree plumbing.Hash
	n    int
	ids  []string // in the order made, for messages
	// target is what commit names in its trailers, as the patch path
	// writes them.
	target Target
}

func newChainGraph(t testing.TB, repo *gittest.Repo) *chainGraph {
	g, err := git.PlainOpen(repo.Dir)
	if err != nil {
		t.Fatal(err)
	}
	obj := g.Storer.NewEncodedObject()
	if err := (&object.Tree{}).Encode(obj); err != nil {
		t.Fatal(err)
	}
	tree, err := g.Storer.SetEncodedObject(obj)
	if err != nil {
		t.Fatal(err)
	}
	return &chainGraph{t: t, repo: repo, git: g, tree: tree, target: Target{URL: repo.URL(), Branch: "main"}}
}

// commit makes a commit on parents signed in its gpgsig header by signer
// (nil: unsigned), its message closed by the graph's target trailers, and
// points main at it.
func (g *chainGraph) commit(signer *pgptest.Key, parents ...string) string {
	g.t.Helper()
	return g.commitMsg(signer, targetMessage(fmt.Sprintf("commit %d", g.n+1), g.target), parents...)
}

// targetMessage is a message as the patch path writes it for target t.
func targetMessage(title string, t Target) string {
	return fmt.Sprintf("%s\n\nRequested-By: entity_1 (0f0e)\nVault-Request-Id: req-1\n%s: %s\n%s: %s\n",
		title, TrailerRepository, t.URL, TrailerBranch, t.Branch)
}

// oldMessage is a message as the patch path wrote it before it named
// the target.
func oldMessage(title string) string {
	return title + "\n\nRequested-By: entity_1 (0f0e)\nVault-Request-Id: req-1\n"
}

// commitMsg is commit with the given message.
func (g *chainGraph) commitMsg(signer *pgptest.Key, message string, parents ...string) string {
	g.t.Helper()
	g.n++
	when := time.Now().Add(-time.Minute)
	c := &object.Commit{
		Author:    object.Signature{Name: "Dev", Email: "dev@example.com", When: when},
		Committer: object.Signature{Name: "Dev", Email: "dev@example.com", When: when},
		Message:   message,
		TreeHash:  g.tree,
	}
	for _, p := range parents {
		c.ParentHashes = append(c.ParentHashes, plumbing.NewHash(p))
	}
	if signer != nil {
		unsigned := g.git.Storer.NewEncodedObject()
		if err := c.EncodeWithoutSignature(unsigned); err != nil {
			g.t.Fatal(err)
		}
		r, _ := unsigned.Reader()
		var buf bytes.Buffer
		_, _ = buf.ReadFrom(r)
		c.PGPSignature = signer.ArmorSignDetached(g.t, buf.Bytes(), time.Time{})
	}
	obj := g.git.Storer.NewEncodedObject()
	if err := c.Encode(obj); err != nil {
		g.t.Fatal(err)
	}
	h, err := g.git.Storer.SetEncodedObject(obj)
	if err != nil {
		g.t.Fatal(err)
	}
	if err := g.git.Storer.SetReference(plumbing.NewHashReference("refs/heads/main", h)); err != nil {
		g.t.Fatal(err)
	}
	g.ids = append(g.ids, h.String())
	return h.String()
}

// line makes n commits in a row on parent, each signed by signer.
func (g *chainGraph) line(parent string, n int, signer *pgptest.Key) string {
	for range n {
		parent = g.commit(signer, parent)
	}
	return parent
}

func TestAcceptPluginChain(t *testing.T) {
	alice, bob := pgptest.NewKey(t, "Alice"), pgptest.NewKey(t, "Bob")
	plugin, pluginOld := pgptest.NewKey(t, "flant_gitops"), pgptest.NewKey(t, "flant_gitops")
	// The operator stored the plugin keys under names that say nothing.
	keys := trusted(t, map[string]*pgptest.Key{"alice": alice, "bob": bob, "x": plugin, "y": pluginOld})
	pluginKeys := []string{plugin.Fingerprint(), pluginOld.Fingerprint()}
	srv := gittest.NewServer(t)

	type want struct {
		ok, pluginCounted, anchored bool
		verified                    int
		untrusted                   string // commit id; "" when none
		reason                      string
	}
	staging := func(g *chainGraph) Target { return Target{URL: g.target.URL, Branch: "staging"} }
	tests := []struct {
		name     string
		required int
		maxChain int
		// build returns HEAD, the commits the rule accepts and what to expect.
		build func(g *chainGraph) (string, []string, want)
		// target is the rule's target; nil: the graph's.
		target func(g *chainGraph) *Target
	}{
		{"laundering: a plugin commit on an unsigned push does not count", 1, 0, func(g *chainGraph) (string, []string, want) {
			base := g.commit(alice)
			evil := g.commit(nil, base)
			head := g.commit(plugin, evil)
			return head, nil, want{untrusted: evil, reason: "0 of 1 required trusted persons"}
		}, nil},
		{"a plugin commit on a person-signed commit counts", 1, 0, func(g *chainGraph) (string, []string, want) {
			head := g.commit(plugin, g.commit(alice))
			return head, nil, want{ok: true, pluginCounted: true, verified: 1}
		}, nil},
		{"a run of plugin commits, across a key rotation, on a signed commit", 1, 0, func(g *chainGraph) (string, []string, want) {
			mid := g.line(g.commit(bob), 3, pluginOld)
			head := g.line(mid, 2, plugin)
			return head, nil, want{ok: true, pluginCounted: true, verified: 1}
		}, nil},
		{"an unsigned commit deep in the run is named", 1, 0, func(g *chainGraph) (string, []string, want) {
			evil := g.commit(nil, g.commit(alice))
			head := g.line(evil, 4, plugin)
			return head, nil, want{untrusted: evil}
		}, nil},
		{"the last successful commit anchors the run", 1, 0, func(g *chainGraph) (string, []string, want) {
			last := g.commit(nil)
			head := g.line(last, 2, plugin)
			return head, []string{last}, want{ok: true, pluginCounted: true, verified: 1}
		}, nil},
		{"HEAD itself accepted as the last successful commit", 1, 0, func(g *chainGraph) (string, []string, want) {
			head := g.commit(nil)
			return head, []string{head}, want{ok: true, anchored: true}
		}, nil},
		{"within the bound", 1, 3, func(g *chainGraph) (string, []string, want) {
			head := g.line(g.commit(alice), 4, plugin) // HEAD plus 3 below it
			return head, nil, want{ok: true, pluginCounted: true, verified: 1}
		}, nil},
		{"past the bound the plugin does not count and the stop is named", 1, 3, func(g *chainGraph) (string, []string, want) {
			base := g.commit(alice)
			p1 := g.commit(plugin, base)
			head := g.line(p1, 4, plugin) // 3 followed below HEAD, then p1
			return head, nil, want{untrusted: p1, reason: "stopped after 3 plugin-signed commits"}
		}, nil},
		{"a plugin-signed merge never counts, even on signed parents", 1, 0, func(g *chainGraph) (string, []string, want) {
			a := g.commit(alice)
			b := g.commit(bob, a)
			c := g.commit(alice, a)
			head := g.commit(plugin, b, c)
			return head, nil, want{untrusted: head, reason: "2 parents"}
		}, nil},
		{"an unsigned merge under a plugin commit is not accepted", 1, 0, func(g *chainGraph) (string, []string, want) {
			a := g.commit(alice)
			merge := g.commit(nil, g.commit(bob, a), g.commit(alice, a))
			head := g.commit(plugin, merge)
			return head, nil, want{untrusted: merge, reason: "0 of 1"}
		}, nil},
		{"a person-signed merge anchors a plugin commit", 1, 0, func(g *chainGraph) (string, []string, want) {
			a := g.commit(alice)
			merge := g.commit(bob, g.commit(nil, a), g.commit(nil, a))
			head := g.commit(plugin, merge)
			return head, nil, want{ok: true, pluginCounted: true, verified: 1}
		}, nil},
		{"a plugin root commit never counts", 1, 0, func(g *chainGraph) (string, []string, want) {
			head := g.commit(plugin)
			return head, nil, want{untrusted: head, reason: "0 parents"}
		}, nil},
		{"quorum 2: plugin plus a person on HEAD, on a commit two persons signed", 2, 0, func(g *chainGraph) (string, []string, want) {
			base := g.commit(alice)
			g.repo.NoteSignature(t, base, bob)
			head := g.commit(plugin, base)
			g.repo.NoteSignature(t, head, alice)
			return head, nil, want{ok: true, pluginCounted: true, verified: 2}
		}, nil},
		{"quorum 2: a parent with one person is not enough for the plugin", 2, 0, func(g *chainGraph) (string, []string, want) {
			base := g.commit(alice)
			head := g.commit(plugin, base)
			g.repo.NoteSignature(t, head, bob)
			return head, nil, want{verified: 1, untrusted: base, reason: "1 of 2"}
		}, nil},
		{"two plugin keys on one commit count once", 2, 0, func(g *chainGraph) (string, []string, want) {
			base := g.commit(alice)
			g.repo.NoteSignature(t, base, bob)
			head := g.commit(plugin, base)
			g.repo.NoteSignature(t, head, pluginOld)
			return head, nil, want{verified: 1, pluginCounted: true}
		}, nil},
		{"notes signatures arriving later accept the chain", 1, 0, func(g *chainGraph) (string, []string, want) {
			pushed := g.commit(nil, g.commit(alice))
			head := g.commit(plugin, pushed) // CI patched the unsigned push
			g.repo.NoteSignature(t, pushed, bob)
			return head, nil, want{ok: true, pluginCounted: true, verified: 1}
		}, nil},

		// The plugin's signature vouches for "this change, made for this target".
		{"replay: a plugin commit made for staging, pushed to main, does not count", 1, 0, func(g *chainGraph) (string, []string, want) {
			head := g.commitMsg(plugin, targetMessage("CI patch", staging(g)), g.commit(alice))
			return head, nil, want{untrusted: head, reason: `made for branch "staging" of`}
		}, nil},
		{"replay: a plugin commit made for another repository does not count", 1, 0, func(g *chainGraph) (string, []string, want) {
			other := Target{URL: strings.TrimSuffix(g.target.URL, ".git") + "-other.git", Branch: "main"}
			head := g.commitMsg(plugin, targetMessage("CI patch", other), g.commit(alice))
			return head, nil, want{untrusted: head, reason: "-other"}
		}, nil},
		{"replay deep in the run: one commit made for staging breaks it", 1, 0, func(g *chainGraph) (string, []string, want) {
			replayed := g.commitMsg(plugin, targetMessage("CI patch", staging(g)), g.commit(alice))
			head := g.line(replayed, 2, plugin)
			return head, nil, want{untrusted: replayed, reason: `made for branch "staging"`}
		}, nil},
		{"the same target spelled another way counts", 1, 0, func(g *chainGraph) (string, []string, want) {
			head := g.commit(plugin, g.commit(alice))
			return head, nil, want{ok: true, pluginCounted: true, verified: 1}
		}, func(g *chainGraph) *Target {
			u := strings.Replace(strings.TrimSuffix(g.target.URL, ".git"), "http://", "HTTP://", 1) + "/"
			return &Target{URL: u, Branch: "refs/heads/main"}
		}},
		{"a rule without a target counts no plugin signature", 1, 0, func(g *chainGraph) (string, []string, want) {
			head := g.commit(plugin, g.commit(alice))
			return head, nil, want{untrusted: head, reason: "names no target"}
		}, func(*chainGraph) *Target { return &Target{} }},
		{"target lines in the caller's part of the message are not the target", 1, 0, func(g *chainGraph) (string, []string, want) {
			forged := fmt.Sprintf("CI patch\n\n%s: %s\n%s: main", TrailerRepository, g.target.URL, TrailerBranch)
			head := g.commitMsg(plugin, targetMessage(forged, staging(g)), g.commit(alice))
			return head, nil, want{untrusted: head, reason: `made for branch "staging"`}
		}, nil},
		{"duplicate target trailers do not count", 1, 0, func(g *chainGraph) (string, []string, want) {
			msg := targetMessage("CI patch", g.target) + TrailerBranch + ": main\n"
			head := g.commitMsg(plugin, msg, g.commit(alice))
			return head, nil, want{untrusted: head, reason: "one of each is required"}
		}, nil},

		// Plugin commits made before the plugin named its target.
		{"an old plugin commit as HEAD does not count", 1, 0, func(g *chainGraph) (string, []string, want) {
			head := g.commitMsg(plugin, oldMessage("old CI patch"), g.commit(alice))
			return head, nil, want{untrusted: head, reason: "made before the plugin signed its target"}
		}, nil},
		{"an old plugin commit with target lines in the caller's part does not count", 1, 0, func(g *chainGraph) (string, []string, want) {
			forged := fmt.Sprintf("CI patch\n\n%s: %s\n%s: main", TrailerRepository, g.target.URL, TrailerBranch)
			head := g.commitMsg(plugin, oldMessage(forged), g.commit(alice))
			return head, nil, want{untrusted: head, reason: "names no target"}
		}, nil},
		{"an old plugin commit in the walk does not count", 1, 0, func(g *chainGraph) (string, []string, want) {
			old := g.commitMsg(plugin, oldMessage("old CI patch"), g.commit(alice))
			head := g.commit(plugin, old)
			return head, nil, want{untrusted: old, reason: "names no target"}
		}, nil},
		{"an old plugin commit that is the last successful commit anchors new ones", 1, 0, func(g *chainGraph) (string, []string, want) {
			old := g.commitMsg(plugin, oldMessage("old CI patch"), g.commit(nil))
			head := g.line(old, 2, plugin)
			return head, []string{old}, want{ok: true, pluginCounted: true, verified: 1}
		}, nil},
		{"old plugin commits below the last successful commit are not walked", 1, 0, func(g *chainGraph) (string, []string, want) {
			old := g.commitMsg(plugin, oldMessage("old CI patch 2"), g.commitMsg(plugin, oldMessage("old CI patch 1"), g.commit(nil)))
			last := g.commit(nil, old)
			head := g.commit(plugin, last)
			return head, []string{last}, want{ok: true, pluginCounted: true, verified: 1}
		}, nil},
		{"an old plugin commit that is itself the last successful commit is accepted", 1, 0, func(g *chainGraph) (string, []string, want) {
			head := g.commitMsg(plugin, oldMessage("old CI patch"), g.commit(nil))
			return head, []string{head}, want{ok: true, anchored: true}
		}, nil},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			repo := srv.NewRepo(t, fmt.Sprintf("chain%d", i))
			g := newChainGraph(t, repo)
			head, accepted, w := tt.build(g)
			m := openMirror(t, srv, repo, t.TempDir())
			mustFetch(t, m)
			target := g.target
			if tt.target != nil {
				target = *tt.target(g)
			}
			q, err := m.Accept(context.Background(), head, Rule{Trusted: keys, Required: tt.required, PluginKeys: pluginKeys, Accepted: accepted, MaxPluginChain: tt.maxChain, Target: target})
			if err != nil {
				t.Fatal(err)
			}
			if q.OK != w.ok || q.PluginCounted != w.pluginCounted || q.Anchored != w.anchored || q.Verified != w.verified {
				t.Errorf("ok=%v plugin=%v anchored=%v verified=%d, want %v %v %v %d; ignored %q",
					q.OK, q.PluginCounted, q.Anchored, q.Verified, w.ok, w.pluginCounted, w.anchored, w.verified, q.Ignored)
			}
			if q.Untrusted != w.untrusted {
				t.Errorf("untrusted = %q (%s), want %q; commits made: %v", q.Untrusted, q.UntrustedReason, w.untrusted, g.ids)
			}
			if !strings.Contains(q.UntrustedReason, w.reason) {
				t.Errorf("reason %q does not say %q", q.UntrustedReason, w.reason)
			}
			if w.untrusted != "" && !strings.Contains(strings.Join(q.Ignored, "\n"), w.untrusted) {
				t.Errorf("ignored lines do not name %s: %q", w.untrusted, q.Ignored)
			}
			for _, s := range q.Signers {
				if s.Fingerprint == plugin.Fingerprint() && !q.PluginCounted {
					t.Errorf("the plugin is listed as a signer although it did not count: %+v", q.Signers)
				}
			}
		})
	}
}

// A plain Verify still counts every trusted key alike; only Accept applies
// the plugin rule, so a caller that forgets PluginKeys is visible in review.
func TestAcceptWithoutPluginKeysIsVerify(t *testing.T) {
	alice, plugin := pgptest.NewKey(t, "Alice"), pgptest.NewKey(t, "flant_gitops")
	srv := gittest.NewServer(t)
	repo := srv.NewRepo(t, "plain")
	g := newChainGraph(t, repo)
	head := g.commit(plugin, g.commit(nil, g.commit(alice)))
	m := openMirror(t, srv, repo, t.TempDir())
	mustFetch(t, m)
	keys := trusted(t, map[string]*pgptest.Key{"alice": alice, "ci": plugin})
	ctx := context.Background()
	v, err := m.verify(ctx, head, keys, 1)
	if err != nil {
		t.Fatal(err)
	}
	a, err := m.Accept(ctx, head, Rule{Trusted: keys, Required: 1})
	if err != nil {
		t.Fatal(err)
	}
	if !v.OK || !a.OK || a.Verified != v.Verified {
		t.Errorf("without plugin keys Accept = %+v, Verify = %+v, want the same answer", a, v)
	}
	a, err = m.Accept(ctx, head, Rule{Trusted: keys, Required: 1, PluginKeys: []string{strings.ToLower(plugin.Fingerprint())}, Target: g.target})
	if err != nil {
		t.Fatal(err)
	}
	if a.OK {
		t.Errorf("with the plugin key named (lower-case), the laundered commit was accepted: %+v", a)
	}
}

// BenchmarkAcceptLongestPluginChain measures the worst walk Accept does: a
// HEAD with DefaultMaxPluginChain plugin commits below it down to a signed one.
func BenchmarkAcceptLongestPluginChain(b *testing.B) {
	alice, plugin := pgptest.NewKey(b, "Alice"), pgptest.NewKey(b, "flant_gitops")
	srv := gittest.NewServer(b)
	repo := srv.NewRepo(b, "bench")
	g := newChainGraph(b, repo)
	head := g.line(g.commit(alice), DefaultMaxPluginChain+1, plugin)
	m, err := OpenMirror(context.Background(), b.TempDir(), repo.URL(), "main", serverAuth(srv))
	if err != nil {
		b.Fatal(err)
	}
	if _, err := m.Fetch(context.Background()); err != nil {
		b.Fatal(err)
	}
	rule := Rule{Required: 1, PluginKeys: []string{plugin.Fingerprint()}, Target: g.target, Trusted: []TrustedKey{
		{Name: "alice", Armored: alice.PublicArmored(b)}, {Name: "ci", Armored: plugin.PublicArmored(b)},
	}}
	for b.Loop() {
		q, err := m.Accept(context.Background(), head, rule)
		if err != nil || !q.OK {
			b.Fatalf("Accept = %+v, %v", q, err)
		}
	}
}

// BenchmarkTargetCheckOfLongestChain is the part of the walk above that the
// target check adds: reading and comparing the target of
// DefaultMaxPluginChain+1 plugin commits. Compare with
// BenchmarkAcceptLongestPluginChain in the same run.
func BenchmarkTargetCheckOfLongestChain(b *testing.B) {
	target := Target{URL: "http://127.0.0.1:8080/bench.git", Branch: "main"}
	want, err := target.Canonical()
	if err != nil {
		b.Fatal(err)
	}
	e := commitEval{message: targetMessage("Bump image to 1.2.5", target)}
	for b.Loop() {
		for range DefaultMaxPluginChain + 1 {
			if why := targetCheck(e, want, nil); why != "" {
				b.Fatal(why)
			}
		}
	}
}
