package gitwatch

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/filemode"
	"github.com/go-git/go-git/v5/plumbing/object"

	"github.com/flant/flant_gitops/gitwatch/gittest"
	"github.com/flant/flant_gitops/gitwatch/pgptest"
)

// forgedPackets makes n distinct signature packets that name victim as their
// issuer and do not verify, the way someone without victim's private key
// makes them: sign with a key of one's own, then write victim's fingerprint
// and key ID over one's own (same lengths, so the packet stays well formed).
func forgedPackets(t testing.TB, victim *pgptest.Key, n int) [][]byte {
	t.Helper()
	forger := pgptest.NewKey(t, "Forger")
	own, theirs := forger.Entity.PrimaryKey.Fingerprint, victim.Entity.PrimaryKey.Fingerprint
	out := make([][]byte, 0, n)
	for i := range n {
		sig := forger.SignDetached(t, fmt.Appendf(nil, "forged %d", i), time.Time{})
		sig = bytes.ReplaceAll(sig, own, theirs)
		sig = bytes.ReplaceAll(sig, own[len(own)-8:], theirs[len(theirs)-8:])
		if bytes.Contains(sig, own[len(own)-8:]) || !bytes.Contains(sig, theirs) {
			t.Fatalf("forged packet %d does not name the victim only", i)
		}
		out = append(out, sig)
	}
	return out
}

// noteLines is one note line (base64) per packet.
func noteLines(packets [][]byte) string {
	var b strings.Builder
	for _, p := range packets {
		b.WriteString(base64.StdEncoding.EncodeToString(p))
		b.WriteByte('\n')
	}
	return b.String()
}

// setNotes points refs/notes/signatures of the served repository at one
// notes commit holding note[commit] for every commit given, written straight
// into the bare repository (git notes would take minutes for hundreds).
func (g *chainGraph) setNotes(notes map[string]string) {
	g.t.Helper()
	tree := &object.Tree{}
	for commit, text := range notes {
		obj := g.git.Storer.NewEncodedObject()
		obj.SetType(plumbing.BlobObject)
		w, err := obj.Writer()
		if err != nil {
			g.t.Fatal(err)
		}
		if _, err := w.Write([]byte(text)); err != nil {
			g.t.Fatal(err)
		}
		_ = w.Close()
		h, err := g.git.Storer.SetEncodedObject(obj)
		if err != nil {
			g.t.Fatal(err)
		}
		tree.Entries = append(tree.Entries, object.TreeEntry{Name: commit, Mode: filemode.Regular, Hash: h})
	}
	sort.Slice(tree.Entries, func(i, j int) bool { return tree.Entries[i].Name < tree.Entries[j].Name })
	tobj := g.git.Storer.NewEncodedObject()
	if err := tree.Encode(tobj); err != nil {
		g.t.Fatal(err)
	}
	th, err := g.git.Storer.SetEncodedObject(tobj)
	if err != nil {
		g.t.Fatal(err)
	}
	when := time.Now()
	c := &object.Commit{
		Author:    object.Signature{Name: "Notes", Email: "notes@example.com", When: when},
		Committer: object.Signature{Name: "Notes", Email: "notes@example.com", When: when},
		Message:   "Notes added by 'git notes append'\n",
		TreeHash:  th,
	}
	cobj := g.git.Storer.NewEncodedObject()
	if err := c.Encode(cobj); err != nil {
		g.t.Fatal(err)
	}
	ch, err := g.git.Storer.SetEncodedObject(cobj)
	if err != nil {
		g.t.Fatal(err)
	}
	if err := g.git.Storer.SetReference(plumbing.NewHashReference(notesRef, ch)); err != nil {
		g.t.Fatal(err)
	}
}

// bogusChain is the attack of issue 19 item 3: a run of plugin commits on a
// commit a person signed, and, on every commit of it, a note of 256 packets
// that name the plugin's key and do not verify, attached by someone who may
// push refs/notes/signatures only.
type bogusChain struct {
	head, base string
	rule       Rule
	plugin     *pgptest.Key
	mirror     *Mirror
}

func newBogusChain(t testing.TB, srv *gittest.Server, name string, length int, withNotes bool) *bogusChain {
	t.Helper()
	alice, plugin := pgptest.NewKey(t, "Alice"), pgptest.NewKey(t, "flant_gitops")
	repo := srv.NewRepo(t, name)
	g := newChainGraph(t, repo)
	base := g.commit(alice)
	head := g.line(base, length, plugin)
	if withNotes {
		forged := forgedPackets(t, plugin, maxSignaturesPerCommit)
		notes := make(map[string]string, len(g.ids))
		for i, c := range g.ids {
			// A note of its own for every commit (the packets rotated),
			// so that no blob is read once for all.
			notes[c] = noteLines(append(forged[i%len(forged):], forged[:i%len(forged)]...))
		}
		g.setNotes(notes)
	}
	m, err := OpenMirror(context.Background(), t.TempDir(), repo.URL(), "main", serverAuth(srv))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Fetch(context.Background()); err != nil {
		t.Fatal(err)
	}
	rule := Rule{Required: 1, PluginKeys: []string{plugin.Fingerprint()}, Target: g.target, Trusted: []TrustedKey{
		{Name: "alice", Armored: alice.PublicArmored(t)}, {Name: "ci", Armored: plugin.PublicArmored(t)},
	}}
	return &bogusChain{head: head, base: base, rule: rule, plugin: plugin, mirror: m}
}

// The forged notes change nothing in the answer, and the operator reads
// one line about them, not one per packet.
func TestAcceptBogusPluginNotes(t *testing.T) {
	srv := gittest.NewServer(t)
	tests := []struct {
		name   string
		length int
	}{
		{"one plugin commit", 1},
		{"a run of plugin commits", 8},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newBogusChain(t, srv, fmt.Sprintf("bogus%d", i), tt.length, true)
			q, err := c.mirror.Accept(context.Background(), c.head, c.rule)
			if err != nil {
				t.Fatal(err)
			}
			if !q.OK || !q.PluginCounted || q.Verified != 1 {
				t.Errorf("Accept = ok %v plugin %v verified %d, want the chain accepted; ignored %q", q.OK, q.PluginCounted, q.Verified, q.Ignored)
			}
			var about []string
			for _, line := range q.Ignored {
				if strings.Contains(line, c.plugin.Fingerprint()) {
					about = append(about, line)
				}
			}
			if len(about) != 1 || !strings.Contains(about[0], "were not checked") {
				first := ""
				if len(about) > 0 {
					first = about[0]
				}
				t.Errorf("%d ignored lines name the plugin key, want one saying the forged packets were not checked; the first: %q",
					len(about), first)
			}
		})
	}
}

// BenchmarkAcceptChainNoNotes is the baseline of BenchmarkAcceptBogusNotes:
// the longest plugin chain Accept follows, without notes.
func BenchmarkAcceptChainNoNotes(b *testing.B) {
	benchmarkAcceptChain(b, false)
}

// BenchmarkAcceptBogusNotes is the same chain with 256 forged packets
// naming the plugin's key in a note on every commit. Run both in one
// `go test -bench 'AcceptChainNoNotes|AcceptBogusNotes'` and compare.
func BenchmarkAcceptBogusNotes(b *testing.B) {
	benchmarkAcceptChain(b, true)
}

func benchmarkAcceptChain(b *testing.B, withNotes bool) {
	c := newBogusChain(b, gittest.NewServer(b), "bench", DefaultMaxPluginChain, withNotes)
	for b.Loop() {
		q, err := c.mirror.Accept(context.Background(), c.head, c.rule)
		if err != nil || !q.OK || !q.PluginCounted {
			b.Fatalf("Accept = %+v, %v", q, err)
		}
	}
}

// BenchmarkAcceptBogusNotesRatio alternates both chains in every iteration
// and reports bogus/none under the same load (the machine is shared).
func BenchmarkAcceptBogusNotesRatio(b *testing.B) {
	srv := gittest.NewServer(b)
	plain := newBogusChain(b, srv, "plain", DefaultMaxPluginChain, false)
	bogus := newBogusChain(b, srv, "bogus", DefaultMaxPluginChain, true)
	accept := func(c *bogusChain) time.Duration {
		t0 := time.Now()
		q, err := c.mirror.Accept(context.Background(), c.head, c.rule)
		if err != nil || !q.OK || !q.PluginCounted {
			b.Fatalf("Accept = %+v, %v", q, err)
		}
		return time.Since(t0)
	}
	var none, forged time.Duration
	n := 0
	for b.Loop() {
		if n%2 == 0 {
			none += accept(plain)
			forged += accept(bogus)
		} else {
			forged += accept(bogus)
			none += accept(plain)
		}
		n++
	}
	b.ReportMetric(float64(none.Microseconds())/float64(n)/1000, "none-ms/op")
	b.ReportMetric(float64(forged.Microseconds())/float64(n)/1000, "bogus-ms/op")
	b.ReportMetric(float64(forged)/float64(none), "bogus/none")
}
