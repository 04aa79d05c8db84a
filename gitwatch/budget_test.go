package gitwatch

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"reflect"
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
	if err := g.git.Storer.SetReference(plumbing.NewHashReference(NotesRef, ch)); err != nil {
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
		forged := pgptest.Forged(t, plugin.Entity.PrimaryKey.Fingerprint, maxSignaturesPerCommit)
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

// withoutIssuerFingerprint drops the issuer fingerprint subpacket of a v4
// signature packet, so that only its key ID names the issuer (as older
// signers write them).
func withoutIssuerFingerprint(t testing.TB, pkt []byte) []byte {
	t.Helper()
	_, _, body, _, ok := nextPacket(pkt)
	if !ok || body[0] != 4 {
		t.Fatalf("not a v4 signature packet: %x", pkt)
	}
	hashedLen := int(body[4])<<8 | int(body[5])
	hashed, tail := body[6:6+hashedLen], body[6+hashedLen:]
	var kept []byte
	for len(hashed) > 0 {
		n := int(hashed[0]) // one-octet lengths: go-crypto's subpackets are short
		if hashed[1]&0x7f != 33 {
			kept = append(kept, hashed[:1+n]...)
		}
		hashed = hashed[1+n:]
	}
	nb := append([]byte{}, body[:4]...)
	nb = append(nb, byte(len(kept)>>8), byte(len(kept)))
	nb = append(nb, kept...)
	nb = append(nb, tail...)
	if len(nb) >= 192 {
		t.Fatalf("rebuilt packet too long for a one-octet length: %d", len(nb))
	}
	out := append([]byte{0xc2, byte(len(nb))}, nb...)
	var p sigPacket
	p.readIssuer(nb)
	if !p.readable || p.fingerprint != nil || !p.hasKeyID {
		t.Fatalf("rebuilt packet does not name its issuer by key ID only: %+v", p)
	}
	return out
}

// TestSignatureBudget counts the cryptography countLoaded does on one
// commit whatever the packets, and what the operator reads about them.
func TestSignatureBudget(t *testing.T) {
	const commit = "0123456789abcdef0123456789abcdef01234567"
	alice, carol := pgptest.NewKey(t, "Alice"), pgptest.NewKey(t, "Carol", pgptest.SigningSubkey())
	plugin, mallory := pgptest.NewKey(t, "flant_gitops"), pgptest.NewKey(t, "Mallory")
	keys := trusted(t, map[string]*pgptest.Key{"alice": alice, "carol": carol, "ci": plugin})
	set, problems := loadTrusted(keys)

	forged := func(issuer []byte, n int) [][]byte { return pgptest.Forged(t, issuer, n) }
	pluginFP := plugin.Entity.PrimaryKey.Fingerprint
	carolSubFP := carol.Entity.Subkeys[0].PublicKey.Fingerprint
	notes := func(pkts ...[]byte) []signedBlob {
		var out []signedBlob
		for _, p := range pkts {
			out = append(out, signedBlob{source: SourceNotes, payload: []byte(commit), sig: p})
		}
		return out
	}
	// The commit's own signature: any payload will do for the count.
	commitPayload := []byte("tree 4b825dc642cb6eb9a060e54bf8d69288fbe4904b\n\ncommit\n")
	commitSig := signedBlob{source: SourceCommit, payload: commitPayload, sig: plugin.SignDetached(t, commitPayload, time.Time{})}
	good := func(k *pgptest.Key) []byte { return k.SignDetached(t, []byte(commit), time.Time{}) }
	forged256 := forged(pluginFP, 256)
	var byKeyID [][]byte
	for _, p := range forged(pluginFP, 256) {
		byKeyID = append(byKeyID, withoutIssuerFingerprint(t, p))
	}
	var strangers [][]byte
	for range 300 {
		strangers = append(strangers, mallory.SignDetached(t, []byte(commit), time.Time{}))
	}

	tests := []struct {
		name     string
		blobs    []signedBlob
		signers  []string // fingerprints that count
		checks   int
		ignored  []string // each a substring of one line
		maxLines int
	}{
		{
			name:     "256 forged packets naming the plugin key cost one check",
			blobs:    notes(forged256...),
			checks:   1,
			ignored:  []string{"notes signature by trusted key " + plugin.Fingerprint() + " (ci) does not count: the signature does not verify", "255 more signature(s) naming trusted key " + plugin.Fingerprint() + " (ci) in notes were not checked", "it did not count"},
			maxLines: 2,
		},
		{
			name:     "forged packets naming the key by key ID only",
			blobs:    notes(byKeyID...),
			checks:   1,
			ignored:  []string{"(ci) does not count", "255 more signature(s)"},
			maxLines: 2,
		},
		{
			name:     "the commit's own signature first: forged notes cost nothing",
			blobs:    append([]signedBlob{commitSig}, notes(forged256[:200]...)...),
			signers:  []string{plugin.Fingerprint()},
			checks:   1,
			ignored:  []string{"200 more signature(s) naming trusted key " + plugin.Fingerprint() + " (ci) in notes were not checked", "its commit signature counted"},
			maxLines: 1,
		},
		{
			name:     "a real note signature ahead of forged ones counts",
			blobs:    notes(append([][]byte{good(alice)}, forged(alice.Entity.PrimaryKey.Fingerprint, 100)...)...),
			signers:  []string{alice.Fingerprint()},
			checks:   1,
			ignored:  []string{"100 more signature(s) naming trusted key " + alice.Fingerprint() + " (alice)"},
			maxLines: 1,
		},
		{
			// Whoever may push notes may also delete them: a forged packet
			// ahead of a real one hides no more than deleting it would.
			name:     "a forged packet ahead of a real note signature uses the key's check",
			blobs:    notes(append(forged(alice.Entity.PrimaryKey.Fingerprint, 1), good(alice))...),
			checks:   1,
			ignored:  []string{"(alice) does not count: the signature does not verify", "1 more signature(s) naming trusted key " + alice.Fingerprint()},
			maxLines: 2,
		},
		{
			name:     "packets naming a subkey find its person",
			blobs:    notes(append([][]byte{good(carol)}, forged(carolSubFP, 10)...)...),
			signers:  []string{carol.Fingerprint()},
			checks:   1,
			ignored:  []string{"10 more signature(s) naming trusted key " + carol.Fingerprint() + " (carol)"},
			maxLines: 1,
		},
		{
			name:     "a packet naming a key that cannot sign (an encryption subkey) says so",
			blobs:    notes(forged(alice.Entity.Subkeys[0].PublicKey.Fingerprint, 1)...),
			checks:   1,
			ignored:  []string{"(alice) does not count: it names this key as its issuer, but the key has no signing key with that ID"},
			maxLines: 1,
		},
		{
			name:     "one check per trusted key named",
			blobs:    notes(append(append(forged(pluginFP, 3), good(alice), good(carol)), forged(alice.Entity.PrimaryKey.Fingerprint, 3)...)...),
			signers:  []string{alice.Fingerprint(), carol.Fingerprint()},
			checks:   3,
			maxLines: 3,
		},
		{
			name:     "packets by strangers cost no check and one line",
			blobs:    notes(strangers...),
			checks:   0,
			ignored:  []string{"256 notes signatures do not count: not a trusted key (by key " + mallory.Fingerprint(), "more than 256 signatures on the commit"},
			maxLines: 2,
		},
		{
			name:     "packets past the cap are not looked at",
			blobs:    notes(append(strangers[:256], good(alice))...),
			checks:   0,
			ignored:  []string{"more than 256 signatures on the commit"},
			maxLines: 2,
		},
		{
			name:     "a stream of many packets in one blob",
			blobs:    []signedBlob{{source: SourceNotes, payload: []byte(commit), sig: bytes.Join(append(forged256[:50], good(alice)), nil)}},
			signers:  []string{alice.Fingerprint()},
			checks:   2,
			ignored:  []string{"49 more signature(s) naming trusted key " + plugin.Fingerprint()},
			maxLines: 2,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			q := countLoaded(commit, set, problems, 1, tt.blobs, time.Now())
			var got []string
			for _, s := range q.Signers {
				got = append(got, s.Fingerprint)
			}
			// Signers come by name, so compare the keys as a set.
			want := append([]string(nil), tt.signers...)
			sort.Strings(want)
			sort.Strings(got)
			if strings.Join(got, ",") != strings.Join(want, ",") {
				t.Errorf("signers = %v, want %v; ignored %q", got, want, q.Ignored)
			}
			if q.checks != tt.checks {
				t.Errorf("%d signature verifications, want %d", q.checks, tt.checks)
			}
			all := strings.Join(q.Ignored, "\n")
			for _, w := range tt.ignored {
				if !strings.Contains(all, w) {
					t.Errorf("ignored lines do not say %q: %q", w, q.Ignored)
				}
			}
			if len(q.Ignored) > tt.maxLines {
				t.Errorf("%d ignored lines, want at most %d: %q", len(q.Ignored), tt.maxLines, q.Ignored)
			}
		})
	}
}

// A note is read up to maxNoteSize: signatures past it do not count, and
// the operator is told.
func TestNoteSizeCap(t *testing.T) {
	alice, mallory := pgptest.NewKey(t, "Alice"), pgptest.NewKey(t, "Mallory")
	keys := trusted(t, map[string]*pgptest.Key{"alice": alice})
	srv := gittest.NewServer(t)
	filler := func(commit string) string {
		var b strings.Builder
		for b.Len() <= maxNoteSize {
			b.WriteString(base64.StdEncoding.EncodeToString(mallory.SignDetached(t, []byte(commit), time.Time{})) + "\n")
		}
		return b.String()
	}
	goodLine := func(commit string) string {
		return base64.StdEncoding.EncodeToString(alice.SignDetached(t, []byte(commit), time.Time{})) + "\n"
	}
	tests := []struct {
		name   string
		note   func(commit string) string
		counts bool
		cut    bool
	}{
		{"a small note is read whole", goodLine, true, false},
		{"a signature within the first 32 KiB counts", func(c string) string { return goodLine(c) + filler(c) }, true, true},
		{"a signature past 32 KiB is not read", func(c string) string { return filler(c) + goodLine(c) }, false, true},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			repo := srv.NewRepo(t, fmt.Sprintf("cap%d", i))
			g := newChainGraph(t, repo)
			c := g.commit(nil)
			g.setNotes(map[string]string{c: tt.note(c)})
			m := openMirror(t, srv, repo, t.TempDir())
			mustFetch(t, m)
			q, err := m.verify(context.Background(), c, keys, 1)
			if err != nil {
				t.Fatal(err)
			}
			if q.OK != tt.counts {
				t.Errorf("ok = %v, want %v; ignored %q", q.OK, tt.counts, q.Ignored)
			}
			said := strings.Contains(strings.Join(q.Ignored, "\n"), "only its first 32 KiB were read")
			if said != tt.cut {
				t.Errorf("ignored lines say the note was cut: %v, want %v: %q", said, tt.cut, q.Ignored)
			}
		})
	}
}

// A remembered verdict is keyed by Rule.Digest: every field of the rule,
// those added later included, must change it.
func TestRuleDigestCoversEveryField(t *testing.T) {
	base := Rule{}.Digest()
	if base == "" {
		t.Fatal("the zero rule has no digest")
	}
	rt := reflect.TypeOf(Rule{})
	for i := range rt.NumField() {
		f := rt.Field(i)
		t.Run(f.Name, func(t *testing.T) {
			var r Rule
			v := reflect.ValueOf(&r).Elem().Field(i)
			if !setNonZero(v) {
				t.Fatalf("field %s of kind %s: teach setNonZero to fill it", f.Name, v.Kind())
			}
			if d := r.Digest(); d == "" || d == base {
				t.Errorf("setting %s leaves the digest %q", f.Name, d)
			}
		})
	}
}

// setNonZero gives v a value other than its zero one.
func setNonZero(v reflect.Value) bool {
	switch v.Kind() {
	case reflect.String:
		v.SetString("x")
	case reflect.Int, reflect.Int64:
		v.SetInt(1)
	case reflect.Bool:
		v.SetBool(true)
	case reflect.Slice:
		e := reflect.New(v.Type().Elem()).Elem()
		setNonZero(e)
		v.Set(reflect.Append(v, e))
	case reflect.Struct:
		for i := range v.NumField() {
			if v.Field(i).CanSet() && setNonZero(v.Field(i)) {
				return true
			}
		}
		return false
	default:
		return false
	}
	return true
}
