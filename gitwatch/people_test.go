package gitwatch

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"

	"github.com/flant/flant_gitops/gitwatch/gittest"
	"github.com/flant/flant_gitops/gitwatch/pgptest"
	"github.com/flant/flant_gitops/gitwatch/sshsig"
	"github.com/flant/flant_gitops/gitwatch/sshsig/sshsigtest"
)

// aliceSSHKey parses a test key's public line.
func aliceSSHKey(t *testing.T, k *sshsigtest.Key) ssh.PublicKey {
	t.Helper()
	pk, err := sshsig.ParsePublicKey(k.Public)
	if err != nil {
		t.Fatal(err)
	}
	return pk
}

// A quorum counts signers (people), not keys.
func TestAcceptCountsPeople(t *testing.T) {
	aliceLaptop, aliceToken := pgptest.NewKey(t, "Alice"), pgptest.NewKey(t, "Alice")
	bob, carol := pgptest.NewKey(t, "Bob"), pgptest.NewKey(t, "Carol")
	aliceSSH := sshsigtest.NewKey(t, "ed25519", 0)
	key := func(name string, k *pgptest.Key, signer string) TrustedKey {
		return TrustedKey{Name: name, Armored: k.PublicArmored(t), Signer: signer}
	}
	alice := []TrustedKey{key("alice-laptop", aliceLaptop, "alice"), key("alice-token", aliceToken, "alice")}
	srv := gittest.NewServer(t)

	type want struct {
		ok       bool
		verified int
		names    []string // signer names, sorted
		keys     int      // keys listed under the first signer
		ignored  string
	}
	tests := []struct {
		name     string
		trusted  []TrustedKey
		required int
		// build makes HEAD and signs it.
		build func(g *chainGraph) string
		want  want
	}{
		{"one person, two keys, two signatures: counts once", append(slices.Clone(alice), key("bob", bob, "")), 2,
			func(g *chainGraph) string {
				head := g.commit(aliceLaptop)
				g.repo.NoteSignature(t, head, aliceToken)
				return head
			}, want{verified: 1, names: []string{"alice"}, keys: 2}},
		{"two persons count twice", append(slices.Clone(alice), key("bob-key", bob, "bob")), 2,
			func(g *chainGraph) string {
				head := g.commit(aliceToken)
				g.repo.NoteSignature(t, head, bob)
				return head
			}, want{ok: true, verified: 2, names: []string{"alice", "bob"}, keys: 1}},
		{"a key trusted alone and by a person counts once, as the person",
			append(slices.Clone(alice), key("old-alice", aliceLaptop, ""), key("bob", bob, "")), 2,
			func(g *chainGraph) string {
				head := g.commit(aliceLaptop)
				g.repo.NoteSignature(t, head, aliceToken)
				return head
			}, want{verified: 1, names: []string{"alice"}, keys: 2}},
		{"a key trusted alone under a signer's name belongs to that signer",
			append(slices.Clone(alice), key("alice", carol, ""), key("bob", bob, "")), 2,
			func(g *chainGraph) string {
				head := g.commit(carol)
				g.repo.NoteSignature(t, head, aliceToken)
				return head
			}, want{verified: 1, names: []string{"alice"}, keys: 2}},
		{"keys trusted alone are signers of their own", []TrustedKey{key("bob", bob, ""), key("carol", carol, "")}, 2,
			func(g *chainGraph) string {
				head := g.commit(bob)
				g.repo.NoteSignature(t, head, carol)
				return head
			}, want{ok: true, verified: 2, names: []string{"bob", "carol"}, keys: 1}},
		{"a revoked key of a person counts zero",
			append(slices.Clone(alice), TrustedKey{Name: "revoked", Armored: aliceLaptop.PublicArmored(t), Revoked: true}, key("bob", bob, "")), 1,
			func(g *chainGraph) string { return g.commit(aliceLaptop) },
			want{verified: 0, ignored: "the key is revoked"}},
		{"a person's PGP and SSH keys count once together",
			append(slices.Clone(alice), TrustedKey{Name: "alice-ssh", SSH: aliceSSH.Public, Signer: "alice"}, key("bob", bob, "")), 2,
			func(g *chainGraph) string {
				head := g.commit(aliceLaptop)
				g.repo.NoteSignatureSSH(t, head, aliceSSH)
				return head
			}, want{verified: 1, names: []string{"alice"}, keys: 2}},
		{"an SSH key of a person and another person's PGP key count twice",
			[]TrustedKey{{Name: "alice-ssh", SSH: aliceSSH.Public, Signer: "alice"}, key("bob", bob, "")}, 2,
			func(g *chainGraph) string {
				head := g.commit(bob)
				g.repo.NoteSignatureSSH(t, head, aliceSSH)
				return head
			}, want{ok: true, verified: 2, names: []string{"alice", "bob"}, keys: 1}},
		{"a person's revoked SSH key counts zero",
			[]TrustedKey{{Name: "alice-ssh", SSH: aliceSSH.Public, Signer: "alice"}, {Name: "revoked", SSH: sshsig.Fingerprint(aliceSSHKey(t, aliceSSH)), Revoked: true}}, 1,
			func(g *chainGraph) string {
				head := g.commit(nil)
				g.repo.NoteSignatureSSH(t, head, aliceSSH)
				return head
			}, want{verified: 0, ignored: "revoked"}},
		{"a key held by two signers counts for one of them, once",
			[]TrustedKey{key("b1", bob, "bob"), key("b2", bob, "robert")}, 2,
			func(g *chainGraph) string { return g.commit(bob) },
			want{verified: 1, names: []string{"bob"}, keys: 1, ignored: "held by signers bob and robert"}},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			repo := srv.NewRepo(t, fmt.Sprintf("people%d", i))
			g := newChainGraph(t, repo)
			head := tt.build(g)
			m := openMirror(t, srv, repo, t.TempDir())
			mustFetch(t, m)
			q, err := m.Accept(context.Background(), head, Rule{Trusted: tt.trusted, Required: tt.required, Target: g.target})
			if err != nil {
				t.Fatal(err)
			}
			var names []string
			for _, s := range q.Signers {
				names = append(names, s.Name)
			}
			if q.OK != tt.want.ok || q.Verified != tt.want.verified || !slices.Equal(names, tt.want.names) {
				t.Errorf("ok=%v verified=%d signers=%v, want %v %d %v; ignored %q", q.OK, q.Verified, names, tt.want.ok, tt.want.verified, tt.want.names, q.Ignored)
			}
			if len(q.Signers) > 0 {
				s := q.Signers[0]
				if len(s.Keys) != tt.want.keys || s.Fingerprint != s.Keys[0].Fingerprint {
					t.Errorf("first signer's keys = %+v (fingerprint %s), want %d", s.Keys, s.Fingerprint, tt.want.keys)
				}
				if !strings.Contains(s.Label(), s.Name+" ("+s.Kind+" key "+s.Fingerprint) {
					t.Errorf("label %q does not name the signer and the key that verified", s.Label())
				}
			}
			if tt.want.ignored != "" && !strings.Contains(strings.Join(q.Ignored, "\n"), tt.want.ignored) {
				t.Errorf("ignored %q, want a line with %q", q.Ignored, tt.want.ignored)
			}
		})
	}
}

// A person holding the plugin's key still does not make the plugin's
// signature a person's: it counts only as the plugin.
func TestPluginKeyNeverCountsAsAPerson(t *testing.T) {
	alice, plugin := pgptest.NewKey(t, "Alice"), pgptest.NewKey(t, "flant_gitops")
	trusted := []TrustedKey{
		{Name: "alice", Armored: alice.PublicArmored(t), Signer: "alice"},
		{Name: "ci", Armored: plugin.PublicArmored(t), Signer: "alice"},
	}
	srv := gittest.NewServer(t)
	repo := srv.NewRepo(t, "pluginperson")
	g := newChainGraph(t, repo)
	evil := g.commit(nil)
	head := g.commit(plugin, evil)
	m := openMirror(t, srv, repo, t.TempDir())
	mustFetch(t, m)
	q, err := m.Accept(context.Background(), head, Rule{Trusted: trusted, Required: 1, PluginKeys: []string{plugin.Fingerprint()}, Target: g.target})
	if err != nil {
		t.Fatal(err)
	}
	if q.OK || q.Verified != 0 || q.Untrusted != evil {
		t.Errorf("ok=%v verified=%d untrusted=%s, want a refusal naming %s; signers %+v", q.OK, q.Verified, q.Untrusted, evil, q.Signers)
	}
}
