package gitwatch

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/flant/flant_gitops/gitwatch/gittest"
	"github.com/flant/flant_gitops/gitwatch/pgptest"
	"github.com/flant/flant_gitops/gitwatch/sshsig"
	"github.com/flant/flant_gitops/gitwatch/sshsig/sshsigtest"
)

// git runs git in dir with env and returns its output and whether it
// exited 0; it fails the test only when git could not run.
func gitIn(t *testing.T, dir string, env []string, stdin []byte, args ...string) (string, bool) {
	t.Helper()
	cmd := exec.Command("git", args...)
	cmd.Dir = dir
	// TZ: allowed_signers times without Z are UTC here, local for ssh-keygen.
	cmd.Env = append(os.Environ(), "TZ=UTC", "GIT_CONFIG_NOSYSTEM=1", "HOME="+dir, "GIT_AUTHOR_NAME=A", "GIT_AUTHOR_EMAIL=a@example.com",
		"GIT_COMMITTER_NAME=A", "GIT_COMMITTER_EMAIL=a@example.com")
	cmd.Env = append(cmd.Env, env...)
	cmd.Stdin = bytes.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	if _, isExit := err.(*exec.ExitError); err != nil && !isExit {
		t.Fatalf("git %s: %v", strings.Join(args, " "), err)
	}
	return strings.TrimSpace(string(out)), err == nil
}

func mustGit(t *testing.T, dir string, env []string, stdin []byte, args ...string) string {
	t.Helper()
	out, ok := gitIn(t, dir, env, stdin, args...)
	if !ok {
		t.Fatalf("git %s: %s", strings.Join(args, " "), out)
	}
	return out
}

// commitBlobs builds what signatureBlobs builds from a commit's gpgsig
// header, from the raw object git stored.
func commitBlobs(t *testing.T, raw []byte) []signedBlob {
	t.Helper()
	payload, armored, ok := splitCommitSignature(raw)
	if !ok {
		t.Fatal("the commit has no gpgsig header")
	}
	sig, err := dearmorCommitSignature(armored)
	if err != nil {
		t.Fatal(err)
	}
	return []signedBlob{{source: SourceCommit, payload: payload, sig: sig, signTime: committerTime(raw)}}
}

// TestCrossCheckGitVerifyCommit signs commits with the real `git commit
// -S` in gpg.format=ssh and asks both `git verify-commit` (with
// gpg.ssh.allowedSignersFile and gpg.ssh.revocationFile) and this package
// whether each counts; any disagreement fails, except where we are
// deliberately stricter (stricter says why; git must accept, we refuse).
func TestCrossCheckGitVerifyCommit(t *testing.T) {
	sshsigtest.Require(t)
	keys := map[string]*sshsigtest.Key{}
	key := func(typ string, bits int) *sshsigtest.Key {
		id := fmt.Sprint(typ, bits)
		if keys[id] == nil {
			keys[id] = sshsigtest.NewKey(t, typ, bits)
		}
		return keys[id]
	}
	commitDate := "2026-06-01T12:00:00Z"
	tests := []struct {
		name     string
		typ      string
		bits     int
		options  string // allowed_signers options on the trusted line
		otherKey bool   // the trusted line holds another key
		// bareOptions: trusted as "options key" (no principals), git gets
		// the same options on an allowed_signers line.
		bareOptions string
		revoke      string // "key": revoked by key line; "fingerprint": by fingerprint (git gets the key)
		tamper      bool   // the commit message changes, the signature stays
		stricter    string
		want        bool
	}{
		{name: "ed25519", typ: "ed25519", want: true},
		{name: "ecdsa p256", typ: "ecdsa", bits: 256, want: true},
		{name: "ecdsa p384", typ: "ecdsa", bits: 384, want: true},
		{name: "ecdsa p521", typ: "ecdsa", bits: 521, want: true},
		{name: "rsa 2048", typ: "rsa", bits: 2048, want: true},
		{name: "rsa 3072", typ: "rsa", bits: 3072, want: true},
		{name: "rsa 1024", typ: "rsa", bits: 1024, stricter: "RSA under 2048 bits"},
		{name: "wrong key", typ: "ed25519", otherKey: true},
		{name: "tampered commit", typ: "ed25519", tamper: true},
		{name: "revoked key", typ: "ed25519", revoke: "key"},
		{name: "revoked by fingerprint", typ: "ed25519", revoke: "fingerprint"},
		{name: "valid-before before the commit", typ: "ed25519", options: `valid-before="20260501Z"`},
		{name: "valid-before after the commit", typ: "ed25519", options: `valid-before="20260701Z"`, want: true},
		{name: "valid-after after the commit", typ: "ed25519", options: `valid-after="20260602Z"`},
		{name: "valid-after before the commit", typ: "ed25519", options: `valid-after="20260501Z"`, want: true},
		{name: "namespaces exclude git", typ: "ed25519", options: `namespaces="file"`},
		{name: "namespaces include git", typ: "ed25519", options: `namespaces="file,git"`, want: true},
		{name: "options before a bare key", typ: "ed25519", bareOptions: `valid-before="20260501"`},
		{name: "options before a bare key, in time", typ: "ed25519", bareOptions: `namespaces="git",valid-after="20260501"`, want: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			k := key(tc.typ, tc.bits)
			env := []string{"GIT_COMMITTER_DATE=" + commitDate, "GIT_AUTHOR_DATE=" + commitDate}
			mustGit(t, dir, nil, nil, "init", "--quiet", "-b", "main")
			mustGit(t, dir, env, nil, "-c", "gpg.format=ssh", "-c", "user.signingkey="+k.Path,
				"commit", "--quiet", "--allow-empty", "-S", "-m", "change")
			id := mustGit(t, dir, nil, nil, "rev-parse", "HEAD")
			raw := []byte(mustGit(t, dir, nil, nil, "cat-file", "commit", id) + "\n")
			if tc.tamper {
				raw = bytes.Replace(raw, []byte("\nchange\n"), []byte("\nchangE\n"), 1)
				id = mustGit(t, dir, nil, raw, "hash-object", "-t", "commit", "-w", "--stdin")
			}

			lineKey := k.Public
			if tc.otherKey {
				lineKey = sshsigtest.NewKey(t, tc.typ, tc.bits).Public
			}
			line := "alice@example.com " + lineKey
			if tc.options != "" {
				line = "alice@example.com " + tc.options + " " + lineKey
			}
			allowedFile := filepath.Join(dir, "allowed_signers")
			if err := os.WriteFile(allowedFile, []byte(line+"\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			args := []string{"-c", "gpg.ssh.allowedSignersFile=" + allowedFile}
			trusted := []TrustedKey{{Name: "alice", SSH: line}}
			if tc.bareOptions != "" {
				line = "alice@example.com " + tc.bareOptions + " " + lineKey
				if err := os.WriteFile(allowedFile, []byte(line+"\n"), 0o600); err != nil {
					t.Fatal(err)
				}
				trusted = []TrustedKey{{Name: "alice", SSH: tc.bareOptions + " " + lineKey}}
			}
			if tc.revoke != "" {
				revokedFile := filepath.Join(dir, "revoked")
				if err := os.WriteFile(revokedFile, []byte(k.Public+"\n"), 0o600); err != nil {
					t.Fatal(err)
				}
				args = append(args, "-c", "gpg.ssh.revocationFile="+revokedFile)
				revoked := k.Public
				if tc.revoke == "fingerprint" {
					pub, err := sshsig.ParsePublicKey(k.Public)
					if err != nil {
						t.Fatal(err)
					}
					revoked = sshsig.Fingerprint(pub)
				}
				trusted = append(trusted, TrustedKey{Name: "revoked", SSH: revoked, Revoked: true})
			}
			out, gitOK := gitIn(t, dir, nil, nil, append(args, "verify-commit", id)...)

			q, err := countQuorum(id, trusted, 1, commitBlobs(t, raw), time.Now())
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("git verify-commit: ok=%v %s\nours: ok=%v ignored=%q", gitOK, out, q.OK, q.Ignored)
			if tc.stricter != "" {
				if !gitOK || q.OK {
					t.Fatalf("known difference (%s) did not hold: git ok=%v (%s), ours ok=%v %q", tc.stricter, gitOK, out, q.OK, q.Ignored)
				}
				return
			}
			if gitOK != q.OK {
				t.Fatalf("DISAGREEMENT: git verify-commit ok=%v (%s), ours ok=%v %q", gitOK, out, q.OK, q.Ignored)
			}
			if q.OK != tc.want {
				t.Fatalf("both say ok=%v, the case expects %v", q.OK, tc.want)
			}
			if q.OK {
				s := q.Signers[0]
				if s.Kind != KindSSH || !strings.HasPrefix(s.Fingerprint, "SHA256:") || s.Sources[0] != SourceCommit ||
					(tc.bareOptions == "" && !strings.Contains(strings.Join(s.UserIDs, ","), "alice@example.com")) {
					t.Errorf("Signer = %+v, want an ssh signer by SHA256 fingerprint with its principal", s)
				}
			}
		})
	}
}

// sshNoteSig is an SSH note signature as the watcher reads it.
func sshNoteSig(t *testing.T, k *sshsigtest.Key, namespace, commit string) []byte {
	t.Helper()
	blob, err := sshsig.Unarmor(k.Sign(t, namespace, []byte(commit)))
	if err != nil {
		t.Fatal(err)
	}
	return blob
}

func TestSSHNoteSignatures(t *testing.T) {
	alice, bob, mallory := sshsigtest.NewKey(t, "ed25519", 0), sshsigtest.NewKey(t, "ecdsa", 256), sshsigtest.NewKey(t, "ed25519", 0)
	carol := pgptest.NewKey(t, "Carol")
	commit := strings.Repeat("ab", 20)
	note := func(sig []byte) signedBlob {
		// Through the notes parser, as a note line.
		sigs, malformed := parseNoteSignatures([]byte(base64.StdEncoding.EncodeToString(sig) + "\n"))
		if malformed != 0 || len(sigs) != 1 {
			t.Fatalf("note line did not parse: %d malformed", malformed)
		}
		return signedBlob{source: SourceNotes, payload: []byte(commit), sig: sigs[0], signTime: time.Now()}
	}
	trusted := []TrustedKey{
		{Name: "alice", SSH: alice.Public},
		{Name: "bob", SSH: "bob@example.com " + bob.Public},
		{Name: "carol", Armored: carol.PublicArmored(t)},
	}
	tests := []struct {
		name     string
		blobs    []signedBlob
		trusted  []TrustedKey
		verified int
		checks   int
		ignored  string
	}{
		{name: "two SSH notes and a PGP note", verified: 3, checks: 3, blobs: []signedBlob{
			note(sshNoteSig(t, alice, "git", commit)), note(sshNoteSig(t, bob, "git", commit)),
			{source: SourceNotes, payload: []byte(commit), sig: carol.SignDetached(t, []byte(commit), time.Time{})},
		}},
		{name: "wrong namespace", verified: 0, checks: 1, ignored: `namespace "file"`,
			blobs: []signedBlob{note(sshNoteSig(t, alice, "file", commit))}},
		{name: "another commit's signature", verified: 0, checks: 1, ignored: "does not verify",
			blobs: []signedBlob{note(sshNoteSig(t, alice, "git", strings.Repeat("cd", 20)))}},
		{name: "untrusted key costs nothing", verified: 0, checks: 0, ignored: "not a trusted key",
			blobs: []signedBlob{note(sshNoteSig(t, mallory, "git", commit))}},
		{name: "one person's key counts once and is checked once", verified: 1, checks: 1, ignored: "were not checked",
			blobs: []signedBlob{note(sshNoteSig(t, alice, "git", commit)), note(sshNoteSig(t, alice, "git", commit)), note(sshNoteSig(t, alice, "git", commit))}},
		{name: "same key under two names counts once", verified: 1, checks: 1,
			trusted: []TrustedKey{{Name: "alice", SSH: alice.Public}, {Name: "alice-laptop", SSH: "alice@example.com " + alice.Public}},
			blobs:   []signedBlob{note(sshNoteSig(t, alice, "git", commit))}},
		{name: "revoked key counts zero, without cryptography", verified: 0, checks: 0, ignored: "revoked",
			trusted: []TrustedKey{{Name: "alice", SSH: alice.Public}, {Name: "gone", SSH: alice.Public, Revoked: true}},
			blobs:   []signedBlob{note(sshNoteSig(t, alice, "git", commit))}},
		{name: "revoked PGP key counts zero", verified: 1, checks: 1, ignored: "(carol) does not count: the key is revoked",
			trusted: []TrustedKey{{Name: "alice", SSH: alice.Public}, {Name: "carol", Armored: carol.PublicArmored(t)}, {Name: "carol-gone", Armored: carol.PublicArmored(t), Revoked: true}},
			blobs: []signedBlob{note(sshNoteSig(t, alice, "git", commit)),
				{source: SourceNotes, payload: []byte(commit), sig: carol.SignDetached(t, []byte(commit), time.Time{})}}},
		{name: "revoked and untrusted", verified: 0, checks: 0, ignored: "by revoked SSH key SHA256:",
			trusted: []TrustedKey{{Name: "gone", SSH: alice.Public, Revoked: true}},
			blobs:   []signedBlob{note(sshNoteSig(t, alice, "git", commit))}},
		{name: "damaged SSH signature", verified: 0, checks: 0, ignored: "notes SSH signature does not count: SSH signature is truncated",
			blobs: []signedBlob{note(sshNoteSig(t, alice, "git", commit)[:40])}},
		{name: "damaged SSH signatures summed up", verified: 0, checks: 0, ignored: "3 notes SSH signatures do not count: they cannot be read",
			blobs: []signedBlob{note(sshNoteSig(t, alice, "git", commit)[:40]), note(sshNoteSig(t, alice, "git", commit)[:30]), note([]byte("SSHSIG"))}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			keys := tc.trusted
			if keys == nil {
				keys = trusted
			}
			q, err := countQuorum(commit, keys, 1, tc.blobs, time.Now())
			if err != nil {
				t.Fatal(err)
			}
			if q.Verified != tc.verified || q.checks != tc.checks {
				t.Fatalf("Verified = %d, checks = %d, want %d, %d; ignored %q", q.Verified, q.checks, tc.verified, tc.checks, q.Ignored)
			}
			if tc.ignored != "" && !strings.Contains(strings.Join(q.Ignored, "\n"), tc.ignored) {
				t.Fatalf("Ignored = %q, want a line containing %q", q.Ignored, tc.ignored)
			}
		})
	}
}

// A flood of SSH note lines costs cryptography only for trusted keys, each
// at most once: the budget of the PGP path.
func TestSSHSignatureBudget(t *testing.T) {
	alice, mallory := sshsigtest.NewKey(t, "ed25519", 0), sshsigtest.NewKey(t, "ed25519", 0)
	commit := strings.Repeat("ef", 20)
	good, _ := sshsig.Unarmor(alice.Sign(t, "git", []byte(commit)))
	bad, _ := sshsig.Unarmor(mallory.Sign(t, "git", []byte(commit)))
	var blobs []signedBlob
	for range maxSignaturesPerCommit {
		blobs = append(blobs, signedBlob{source: SourceNotes, payload: []byte(commit), sig: bad, signTime: time.Now()},
			signedBlob{source: SourceNotes, payload: []byte("tampered"), sig: good, signTime: time.Now()})
	}
	q, err := countQuorum(commit, []TrustedKey{{Name: "alice", SSH: alice.Public}}, 1, blobs, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if q.checks != 1 || q.Verified != 0 {
		t.Fatalf("checks = %d, Verified = %d, want 1, 0", q.checks, q.Verified)
	}
	if !strings.Contains(strings.Join(q.Ignored, "\n"), fmt.Sprintf("more than %d signatures", maxSignaturesPerCommit)) {
		t.Errorf("Ignored = %q, want the cap reported", q.Ignored)
	}
}

func TestParseSSHKey(t *testing.T) {
	k := sshsigtest.NewKey(t, "ed25519", 0)
	pub, err := sshsig.ParsePublicKey(k.Public)
	if err != nil {
		t.Fatal(err)
	}
	fp := sshsig.Fingerprint(pub)
	tests := []struct {
		name, text, wantErr string
		check               func(SSHKeyInfo) bool
	}{
		{name: "bare key", text: k.Public, check: func(i SSHKeyInfo) bool {
			return i.Fingerprint == fp && i.Type == "ssh-ed25519" && i.Comment == "ed25519-0@test" && i.Principals == nil
		}},
		{name: "options before a key", text: `namespaces="git",valid-after="20260101" ` + k.Public, check: func(i SSHKeyInfo) bool {
			return i.Fingerprint == fp && i.Principals == nil && i.ValidAfter != nil && i.ValidAfter.Equal(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)) && i.Comment == "ed25519-0@test"
		}},
		{name: "bad options before a key", text: `valid-after="2026" ` + k.Public, wantErr: "options before a key"},
		{name: "allowed signers line", text: `alice@example.com,alice namespaces="git",valid-before="20300101Z" ` + k.Public, check: func(i SSHKeyInfo) bool {
			return i.Fingerprint == fp && len(i.Principals) == 2 && i.ValidBefore != nil && i.ValidBefore.Year() == 2030 && i.ValidAfter == nil
		}},
		{name: "namespaces without git", text: `alice namespaces="file" ` + k.Public, wantErr: "never count"},
		{name: "cert-authority", text: `*@example.com cert-authority ` + k.Public, wantErr: "cert-authority"},
		{name: "PGP key", text: "-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nabc\n-----END PGP PUBLIC KEY BLOCK-----", wantErr: "PGP key, not an SSH key"},
		{name: "private key", text: "-----BEGIN OPENSSH PRIVATE KEY-----\nabc\n-----END OPENSSH PRIVATE KEY-----", wantErr: "PRIVATE"},
		{name: "two keys", text: k.Public + "\n" + k.Public, wantErr: "one line"},
		{name: "garbage", text: "hello world", wantErr: "allowed_signers line"},
		{name: "weak key in a line", text: "alice " + sshsigtest.NewKey(t, "rsa", 1024).Public, wantErr: "1024 bits"},
		{name: "empty", text: "", wantErr: "empty"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			info, err := ParseSSHKey(tc.text)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("ParseSSHKey = %+v, %v; want an error containing %q", info, err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !tc.check(info) {
				t.Fatalf("ParseSSHKey = %+v", info)
			}
		})
	}
}

// Through the mirror: a commit signed by `git commit -S` in ssh format and
// an SSH note by a second person meet a quorum of two.
func TestMirrorCountsSSHSignatures(t *testing.T) {
	alice, bob := sshsigtest.NewKey(t, "ed25519", 0), sshsigtest.NewKey(t, "rsa", 3072)
	srv := gittest.NewServer(t)
	repo := srv.NewRepo(t, "ssh")
	head := repo.Commit(t, map[string]string{"a.txt": "one"}, gittest.SignSSH(alice.Path))
	rule := Rule{Required: 2, Trusted: []TrustedKey{{Name: "alice", SSH: alice.Public}, {Name: "bob", SSH: "bob@example.com " + bob.Public}}}
	m := openMirror(t, srv, repo, t.TempDir())
	mustFetch(t, m)
	ctx := context.Background()
	q, err := m.Accept(ctx, head, rule)
	if err != nil {
		t.Fatal(err)
	}
	if q.OK || q.Verified != 1 || q.Signers[0].Sources[0] != SourceCommit {
		t.Fatalf("before the note: %+v, want alice's commit signature only", q)
	}
	repo.NoteSignatureSSH(t, head, bob)
	mustFetch(t, m)
	q, err = m.Accept(ctx, head, rule)
	if err != nil {
		t.Fatal(err)
	}
	if !q.OK || q.Verified != 2 {
		t.Fatalf("after the note: %+v, want alice and bob", q)
	}
	for _, s := range q.Signers {
		if s.Kind != KindSSH || !strings.HasPrefix(s.Fingerprint, "SHA256:") {
			t.Errorf("Signer %+v, want an ssh signer", s)
		}
	}
}

// BenchmarkSSHNotes measures a commit's count with one trusted SSH note
// signature, alone and behind a flood of note lines by an untrusted key
// (each costs a parse and a SHA-256 of the key, no verification).
func BenchmarkSSHNotes(b *testing.B) {
	alice, mallory := sshsigtest.NewKey(b, "ed25519", 0), sshsigtest.NewKey(b, "ed25519", 0)
	commit := strings.Repeat("12", 20)
	good, _ := sshsig.Unarmor(alice.Sign(b, "git", []byte(commit)))
	bad, _ := sshsig.Unarmor(mallory.Sign(b, "git", []byte(commit)))
	trusted := []TrustedKey{{Name: "alice", SSH: alice.Public}}
	set, problems := loadTrusted(trusted)
	for _, flood := range []int{0, maxSignaturesPerCommit - 1} {
		blobs := []signedBlob{}
		for range flood {
			blobs = append(blobs, signedBlob{source: SourceNotes, payload: []byte(commit), sig: bad, signTime: time.Now()})
		}
		blobs = append(blobs, signedBlob{source: SourceNotes, payload: []byte(commit), sig: good, signTime: time.Now()})
		b.Run(fmt.Sprintf("untrusted=%d", flood), func(b *testing.B) {
			for b.Loop() {
				if q := countLoaded(commit, set, problems, 1, blobs, time.Now()); !q.OK {
					b.Fatalf("not OK: %q", q.Ignored)
				}
			}
		})
	}
}
