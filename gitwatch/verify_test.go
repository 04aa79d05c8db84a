package gitwatch

import (
	"bytes"
	"context"
	"encoding/base64"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"

	"github.com/flant/flant_gitops/gitwatch/gittest"
	"github.com/flant/flant_gitops/gitwatch/pgptest"
)

// trustKeys are the people of the trust suite, made once.
type trustKeys struct {
	alice, bob, carolSub, mallory *pgptest.Key
	expired, revoked, notYet      *pgptest.Key
	gpg                           *pgptest.GPG
	gpgFP                         string
}

func newTrustKeys(t *testing.T) *trustKeys {
	now := time.Now()
	k := &trustKeys{
		alice:    pgptest.NewKey(t, "Alice"),
		bob:      pgptest.NewKey(t, "Bob"),
		carolSub: pgptest.NewKey(t, "Carol", pgptest.SigningSubkey()),
		mallory:  pgptest.NewKey(t, "Mallory"),
		expired:  pgptest.NewKey(t, "Eve", pgptest.CreatedAt(now.Add(-72*time.Hour)), pgptest.Lifetime(24*time.Hour)),
		revoked:  pgptest.NewKey(t, "Rob"),
		notYet:   pgptest.NewKey(t, "Fut", pgptest.CreatedAt(now.Add(24*time.Hour))),
		gpg:      pgptest.NewGPG(t),
	}
	k.gpgFP = k.gpg.GenKey(t, "Gina")
	return k
}

func trusted(t *testing.T, named map[string]*pgptest.Key) []TrustedKey {
	var out []TrustedKey
	for name, k := range named {
		out = append(out, TrustedKey{Name: name, Armored: k.PublicArmored(t)})
	}
	slices.SortFunc(out, func(a, b TrustedKey) int { return strings.Compare(a.Name, b.Name) })
	return out
}

func noteLine(sig []byte) string { return base64.StdEncoding.EncodeToString(sig) }

func TestVerifyTrustSuite(t *testing.T) {
	keys := newTrustKeys(t)
	srv := gittest.NewServer(t)
	repo := srv.NewRepo(t, "trust")
	ctx := context.Background()
	now := time.Now()
	// The revoked key signs before its revocation is published.
	revokedSig := func(commit string) string {
		return noteLine(keys.revoked.SignDetached(t, []byte(commit), time.Time{}))
	}

	n := 0
	commit := func(opts ...gittest.CommitOption) string {
		n++
		return repo.Commit(t, map[string]string{"file.txt": "change " + strings.Repeat("x", n)}, opts...)
	}
	allTrusted := map[string]*pgptest.Key{"alice": keys.alice, "bob": keys.bob, "carol": keys.carolSub}

	type signer struct {
		key     string // fingerprint
		names   []string
		sources []string
	}
	tests := []struct {
		name     string
		setup    func(t *testing.T) string
		trusted  func(t *testing.T) []TrustedKey
		required int
		want     []signer
		ignored  string // substring expected in Quorum.Ignored
	}{
		{
			name:     "unsigned HEAD",
			setup:    func(t *testing.T) string { return commit() },
			required: 1,
		},
		{
			name:     "quorum met by commit signature alone",
			setup:    func(t *testing.T) string { return commit(gittest.SignKey(keys.alice)) },
			required: 1,
			want:     []signer{{keys.alice.Fingerprint(), []string{"alice"}, []string{SourceCommit}}},
		},
		{
			name: "quorum met by notes alone",
			setup: func(t *testing.T) string {
				c := commit()
				repo.NoteSignature(t, c, keys.alice)
				repo.NoteSignature(t, c, keys.bob)
				return c
			},
			required: 2,
			want: []signer{
				{keys.alice.Fingerprint(), []string{"alice"}, []string{SourceNotes}},
				{keys.bob.Fingerprint(), []string{"bob"}, []string{SourceNotes}},
			},
		},
		{
			name: "quorum met by commit and notes together",
			setup: func(t *testing.T) string {
				c := commit(gittest.SignKey(keys.alice))
				repo.NoteSignature(t, c, keys.bob)
				return c
			},
			required: 2,
			want: []signer{
				{keys.alice.Fingerprint(), []string{"alice"}, []string{SourceCommit}},
				{keys.bob.Fingerprint(), []string{"bob"}, []string{SourceNotes}},
			},
		},
		{
			name: "same key signing commit and note counts once",
			setup: func(t *testing.T) string {
				c := commit(gittest.SignKey(keys.alice))
				repo.NoteSignature(t, c, keys.alice)
				repo.NoteSignature(t, c, keys.alice)
				return c
			},
			required: 2,
			// Checked once per commit: the commit's own signature first.
			want:    []signer{{keys.alice.Fingerprint(), []string{"alice"}, []string{SourceCommit}}},
			ignored: "2 more signature(s) naming trusted key " + keys.alice.Fingerprint() + " (alice) in notes were not checked",
		},
		{
			name: "same key stored under two names counts once",
			setup: func(t *testing.T) string {
				c := commit(gittest.SignKey(keys.alice))
				repo.NoteSignature(t, c, keys.alice)
				return c
			},
			trusted: func(t *testing.T) []TrustedKey {
				return trusted(t, map[string]*pgptest.Key{"alice-laptop": keys.alice, "alice-yubikey": keys.alice, "bob": keys.bob})
			},
			required: 2,
			want:     []signer{{keys.alice.Fingerprint(), []string{"alice-laptop", "alice-yubikey"}, []string{SourceCommit}}},
		},
		{
			name:     "subkey commit signature is attributed to its primary key",
			setup:    func(t *testing.T) string { return commit(gittest.SignKey(keys.carolSub)) },
			required: 1,
			want:     []signer{{keys.carolSub.Fingerprint(), []string{"carol"}, []string{SourceCommit}}},
		},
		{
			name: "subkey note signature is attributed to its primary key",
			setup: func(t *testing.T) string {
				c := commit()
				repo.NoteSignature(t, c, keys.carolSub)
				return c
			},
			required: 1,
			want:     []signer{{keys.carolSub.Fingerprint(), []string{"carol"}, []string{SourceNotes}}},
		},
		{
			name: "expired key counts zero",
			setup: func(t *testing.T) string {
				c := commit()
				// Signed while the key was valid; it has expired since.
				repo.AddNoteLines(t, c, noteLine(keys.expired.SignDetached(t, []byte(c), now.Add(-60*time.Hour))))
				return c
			},
			trusted:  func(t *testing.T) []TrustedKey { return trusted(t, map[string]*pgptest.Key{"eve": keys.expired}) },
			required: 1,
			ignored:  "expired",
		},
		{
			name: "revoked key counts zero",
			setup: func(t *testing.T) string {
				c := commit()
				repo.AddNoteLines(t, c, revokedSig(c))
				return c
			},
			trusted: func(t *testing.T) []TrustedKey {
				keys.revoked.Revoke(t)
				return trusted(t, map[string]*pgptest.Key{"rob": keys.revoked})
			},
			required: 1,
			ignored:  "revoked",
		},
		{
			name: "not yet valid key counts zero",
			setup: func(t *testing.T) string {
				c := commit()
				repo.AddNoteLines(t, c, noteLine(keys.notYet.SignDetached(t, []byte(c), now.Add(25*time.Hour))))
				return c
			},
			trusted:  func(t *testing.T) []TrustedKey { return trusted(t, map[string]*pgptest.Key{"fut": keys.notYet}) },
			required: 1,
			ignored:  "not yet valid",
		},
		{
			name: "signature dated in the future counts zero",
			setup: func(t *testing.T) string {
				return commit(gittest.SignKey(keys.alice), gittest.SignedAt(now.Add(time.Hour)))
			},
			required: 1,
			ignored:  "future",
		},
		{
			name: "untrusted signer counts zero",
			setup: func(t *testing.T) string {
				c := commit(gittest.SignKey(keys.mallory))
				repo.NoteSignature(t, c, keys.mallory)
				return c
			},
			required: 1,
			ignored:  "not a trusted key",
		},
		{
			name: "malformed notes lines are ignored, not fatal",
			setup: func(t *testing.T) string {
				c := commit()
				good := noteLine(keys.alice.SignDetached(t, []byte(c), time.Time{}))
				repo.AddNoteLines(t, c, "!!! not base64 !!!", "AAAA", good[:len(good)/2], good, "-----BEGIN PGP SIGNATURE-----")
				return c
			},
			required: 1,
			want:     []signer{{keys.alice.Fingerprint(), []string{"alice"}, []string{SourceNotes}}},
			ignored:  "malformed",
		},
		{
			name: "tampered note signature counts zero",
			setup: func(t *testing.T) string {
				c := commit()
				sig := keys.alice.SignDetached(t, []byte(c), time.Time{})
				sig[len(sig)-5] ^= 0xff
				repo.AddNoteLines(t, c, noteLine(sig))
				return c
			},
			required: 1,
			ignored:  "does not verify",
		},
		{
			name: "notes signing another commit count zero",
			setup: func(t *testing.T) string {
				other := commit()
				c := commit()
				// Alice's valid signature over other, filed under c.
				repo.NoteSignature(t, other, keys.alice)
				repo.AddNoteLines(t, c, noteLine(keys.bob.SignDetached(t, []byte(other), time.Time{})))
				return c
			},
			required: 1,
			ignored:  "does not verify",
		},
		{
			name:     "required 0 without signatures",
			setup:    func(t *testing.T) string { return commit() },
			required: 0,
		},
		{
			name:     "required 0 with signatures still reports signers",
			setup:    func(t *testing.T) string { return commit(gittest.SignKey(keys.bob)) },
			required: 0,
			want:     []signer{{keys.bob.Fingerprint(), []string{"bob"}, []string{SourceCommit}}},
		},
		{
			name: "required larger than the trusted keys",
			setup: func(t *testing.T) string {
				c := commit(gittest.SignKey(keys.alice))
				repo.NoteSignature(t, c, keys.bob)
				return c
			},
			required: 4,
			want: []signer{
				{keys.alice.Fingerprint(), []string{"alice"}, []string{SourceCommit}},
				{keys.bob.Fingerprint(), []string{"bob"}, []string{SourceNotes}},
			},
			ignored: "only 3 distinct trusted signers",
		},
		{
			name:  "real gpg: git commit -S",
			setup: func(t *testing.T) string { return commit(gittest.SignGPG(keys.gpg, keys.gpgFP)) },
			trusted: func(t *testing.T) []TrustedKey {
				return []TrustedKey{{Name: "gina", Armored: keys.gpg.ExportPublic(t, keys.gpgFP)}}
			},
			required: 1,
			want:     []signer{{keys.gpgFP, []string{"gina"}, []string{SourceCommit}}},
		},
		{
			name: "real gpg: a git-signatures note",
			setup: func(t *testing.T) string {
				c := commit()
				repo.NoteSignatureGPG(t, c, keys.gpg, keys.gpgFP)
				return c
			},
			trusted: func(t *testing.T) []TrustedKey {
				return []TrustedKey{{Name: "gina", Armored: keys.gpg.ExportPublic(t, keys.gpgFP)}}
			},
			required: 1,
			want:     []signer{{keys.gpgFP, []string{"gina"}, []string{SourceNotes}}},
		},
		{
			name:     "commit signed by go-git",
			setup:    func(t *testing.T) string { return commit(gittest.SignGoGit(keys.bob)) },
			required: 1,
			want:     []signer{{keys.bob.Fingerprint(), []string{"bob"}, []string{SourceCommit}}},
		},
	}

	mirror, err := OpenMirror(ctx, filepath.Join(t.TempDir(), "mirror"), repo.URL(), "main",
		Auth{Username: srv.Username(), Password: srv.Password()})
	if err != nil {
		t.Fatalf("OpenMirror: %v", err)
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := tc.setup(t)
			if _, err := mirror.Fetch(ctx); err != nil {
				t.Fatalf("Fetch: %v", err)
			}
			keysFor := trusted(t, allTrusted)
			if tc.trusted != nil {
				keysFor = tc.trusted(t)
			}
			q, err := mirror.verify(ctx, c, keysFor, tc.required)
			if err != nil {
				t.Fatalf("Verify: %v", err)
			}
			t.Logf("quorum: verified %d/%d signers %+v ignored %q", q.Verified, q.Required, q.Signers, q.Ignored)
			var got []signer
			for _, s := range q.Signers {
				got = append(got, signer{s.Fingerprint, s.Names, s.Sources})
				if len(s.UserIDs) == 0 {
					t.Errorf("signer %s has no user IDs", s.Fingerprint)
				}
			}
			slices.SortFunc(tc.want, func(a, b signer) int { return strings.Compare(a.names[0], b.names[0]) }) // signers come by name
			if !slices.EqualFunc(got, tc.want, func(a, b signer) bool {
				return a.key == b.key && slices.Equal(a.names, b.names) && slices.Equal(a.sources, b.sources)
			}) {
				t.Errorf("signers = %+v, want %+v", got, tc.want)
			}
			wantOK := len(tc.want) >= tc.required
			wantMissing := max(0, tc.required-len(tc.want))
			if q.Verified != len(tc.want) || q.OK != wantOK || q.Missing != wantMissing || q.Required != tc.required {
				t.Errorf("quorum = verified %d ok %v missing %d required %d, want %d %v %d %d",
					q.Verified, q.OK, q.Missing, q.Required, len(tc.want), wantOK, wantMissing, tc.required)
			}
			if tc.ignored != "" && !strings.Contains(strings.Join(q.Ignored, "\n"), tc.ignored) {
				t.Errorf("Ignored = %q, want a line containing %q", q.Ignored, tc.ignored)
			}
			if q.Commit != c {
				t.Errorf("Commit = %s, want %s", q.Commit, c)
			}
		})
	}
}

func TestVerifyRejectsNegativeRequired(t *testing.T) {
	if _, err := countQuorum(strings.Repeat("a", 40), nil, -1, nil, time.Now()); err == nil {
		t.Fatal("countQuorum(required -1) succeeded, want an error")
	}
}

func TestTextModeSignatures(t *testing.T) {
	alice := pgptest.NewKey(t, "Alice")
	keys := []TrustedKey{{Name: "alice", Armored: alice.PublicArmored(t)}}
	commitID := strings.Repeat("ab", 20)
	rawCommit := []byte("tree " + strings.Repeat("0", 40) + "\nauthor A <a@example.com> 1 +0000\ncommitter A <a@example.com> 1 +0000\n\nmsg\n")
	textSig := func(data []byte) []byte {
		var buf bytes.Buffer
		if err := openpgp.DetachSignText(&buf, alice.Entity, bytes.NewReader(data), nil); err != nil {
			t.Fatal(err)
		}
		return buf.Bytes()
	}
	tests := []struct {
		name     string
		blob     signedBlob
		verified int
		ignored  string
	}{
		{name: "text-mode commit signature refused", blob: signedBlob{source: SourceCommit, payload: rawCommit, sig: textSig(rawCommit)}, ignored: "text-mode"},
		{name: "text-mode note signature accepted", blob: signedBlob{source: SourceNotes, payload: []byte(commitID), sig: textSig([]byte(commitID))}, verified: 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			q, err := countQuorum(commitID, keys, 1, []signedBlob{tc.blob}, time.Now())
			if err != nil {
				t.Fatal(err)
			}
			if q.Verified != tc.verified || !strings.Contains(strings.Join(q.Ignored, "\n"), tc.ignored) {
				t.Errorf("quorum = verified %d ignored %q; want %d and %q", q.Verified, q.Ignored, tc.verified, tc.ignored)
			}
		})
	}
}
