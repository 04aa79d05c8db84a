package sshsig

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
)

func readTestdata(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestVectors verifies OpenSSH's own signatures (testdata/README.md). The
// sk- types are tested only here: no security key is at hand to make new
// signatures, and x/crypto/ssh's sk- verification (application hash,
// flags and counter appended to the signed data) is what these prove.
func TestVectors(t *testing.T) {
	msg := readTestdata(t, "signed-data")
	ns := string(readTestdata(t, "namespace"))
	tests := []struct {
		name    string
		wantErr string
	}{
		{name: "ed25519"},
		{name: "ecdsa"},
		{name: "ed25519_sk"},
		{name: "ecdsa_sk"},
		{name: "rsa"}, // 3072 bits, rsa-sha2-512
		// ssh-keygen accepts it; git never makes one.
		{name: "ecdsa_sk_webauthn", wantErr: "WebAuthn"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			pubText := string(readTestdata(t, tc.name+".pub"))
			armored := readTestdata(t, tc.name+".sig")
			if !IsSSHSIG(armored) {
				t.Fatal("IsSSHSIG(armored) = false")
			}
			blob, err := Unarmor(armored)
			if err != nil {
				t.Fatal(err)
			}
			if !IsSSHSIG(blob) {
				t.Fatal("IsSSHSIG(blob) = false")
			}
			sig, err := Parse(blob)
			if err != nil {
				t.Fatal(err)
			}
			pub, perr := ParsePublicKey(pubText)
			if perr != nil {
				if tc.wantErr == "" || !strings.Contains(perr.Error(), tc.wantErr) {
					t.Fatalf("ParsePublicKey: %v, want error containing %q", perr, tc.wantErr)
				}
				// The key is refused; the signature must be too.
				if err := Verify(sig, msg, ns, sig.PublicKey); err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("Verify with the refused key = %v, want an error containing %q", err, tc.wantErr)
				}
				return
			}
			err = Verify(sig, msg, ns, pub)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("Verify = %v, want error containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Verify: %v", err)
			}
			if err := Verify(sig, append(bytes.Clone(msg), '!'), ns, pub); err == nil {
				t.Error("a changed message verified")
			}
			if err := Verify(sig, msg, "git", pub); err == nil || !strings.Contains(err.Error(), "namespace") {
				t.Errorf("another namespace: %v, want a namespace error", err)
			}
			if strings.HasPrefix(pub.Type(), "sk-") {
				// The flags byte (user presence) is signed: clearing it must fail.
				tampered := *sig.Sig
				tampered.Rest = bytes.Clone(sig.Sig.Rest)
				tampered.Rest[0] = 0
				s2 := *sig
				s2.Sig = &tampered
				if err := Verify(&s2, msg, ns, pub); err == nil {
					t.Error("a security key signature with its flags cleared verified")
				}
			}
		})
	}
}

func TestParseRefusesDamage(t *testing.T) {
	blob, err := Unarmor(readTestdata(t, "ed25519.sig"))
	if err != nil {
		t.Fatal(err)
	}
	for n := 0; n < len(blob); n++ {
		if _, err := Parse(blob[:n]); err == nil {
			t.Fatalf("Parse accepted the blob cut at %d of %d bytes", n, len(blob))
		}
	}
	if _, err := Parse(append(bytes.Clone(blob), 0)); err == nil || !strings.Contains(err.Error(), "trailing") {
		t.Fatalf("trailing byte: %v", err)
	}
	v2 := bytes.Clone(blob)
	v2[9] = 2 // version 2
	if _, err := Parse(v2); err == nil || !strings.Contains(err.Error(), "version") {
		t.Fatalf("version 2: %v", err)
	}
	for _, bad := range []string{
		"",
		"-----BEGIN SSH SIGNATURE-----\nAAAA\n",
		"-----BEGIN SSH SIGNATURE-----\n!!!!\n-----END SSH SIGNATURE-----\n",
		"-----BEGIN PGP SIGNATURE-----\n\n-----END PGP SIGNATURE-----\n",
	} {
		if _, err := Unarmor([]byte(bad)); err == nil {
			t.Errorf("Unarmor(%q) accepted", bad)
		}
	}
	if IsSSHSIG([]byte("-----BEGIN PGP SIGNATURE-----")) || IsSSHSIG([]byte{0x88, 0x75}) {
		t.Error("IsSSHSIG took OpenPGP for SSH")
	}
}

func TestParsePublicKey(t *testing.T) {
	ed := strings.TrimSpace(string(readTestdata(t, "ed25519.pub")))
	fields := strings.Fields(ed)
	tests := []struct {
		name, line, wantErr string
	}{
		{name: "ed25519", line: ed},
		{name: "no comment", line: fields[0] + " " + fields[1]},
		{name: "tabs", line: fields[0] + "\t" + fields[1] + "\tcomment"},
		{name: "ecdsa", line: string(readTestdata(t, "ecdsa.pub"))},
		{name: "sk-ed25519", line: string(readTestdata(t, "ed25519_sk.pub"))},
		{name: "sk-ecdsa", line: string(readTestdata(t, "ecdsa_sk.pub"))},
		{name: "rsa 3072", line: string(readTestdata(t, "rsa.pub"))},
		{name: "rsa 1024", line: rsaLine(t, 1024), wantErr: "1024 bits"},
		{name: "rsa 2048", line: rsaLine(t, 2048)},
		{name: "empty", line: " ", wantErr: "empty"},
		{name: "private", line: "-----BEGIN OPENSSH PRIVATE KEY-----", wantErr: "PRIVATE"},
		{name: "type only", line: "ssh-ed25519", wantErr: "no key data"},
		{name: "bad base64", line: "ssh-ed25519 !!!", wantErr: "base64"},
		{name: "type mismatch", line: "ssh-rsa " + fields[1], wantErr: "says type"},
		{name: "two lines", line: ed + "\n" + ed, wantErr: "one line"},
		{name: "dsa", line: "ssh-dss AAAAB3NzaC1kc3MAAACBAP1/U4EddRIpUt9KnC7s5Of2EbdSPO9EAMMeP4C2USZpRV1AIlH7WT2NWPq/xfW6MPbLm1Vs14E7gB00b/JmYLdrmVClpJ+f6AR7ECLCT7up1/63xhv4O1fnxqimFQ8E+4P208UewwI1VBNaFpEy9nXzrith1yrv8iIDGZ3RSAHHAAAAFQCXYFCPFSMLzLKSuYKi64QL8Fgc9QAAAIEA9+GghdabPd7LvKtcNrhXuXmUr7v6OuqC+VdMCz0HgmdRWVeOutRZT+ZxBxCBgLRJFnEj6EwoFhO3zwkyjMim4TwWeotUfI0o4KOuHiuzpnWRbqN/C/ohNWLx+2J6ASQ7zKTxvqhRkImog9/hWuWfBpKLZl6Ae1UlZAFMO/7PSSoAAACBAPNoMJl1Vx0jdaoDwFi9jbHcvJq9NM5LdnQvl+rvOr5VzgJ7R3IbNDPUAWwDBVIoFaVjI5VGCEYYm+UVDKGV1oUmglTTEyfQbiuZsddB52wfdnY5M8PwWP9q/SVUJFTmd8ll11W10uHTROkJHjo65Mf9n/g3uTbEHdDbHcZZl2K8", wantErr: "DSA"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			k, err := ParsePublicKey(tc.line)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("ParsePublicKey = %v, want error containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if fp := Fingerprint(k); !strings.HasPrefix(fp, "SHA256:") || len(fp) != len("SHA256:")+43 {
				t.Fatalf("Fingerprint = %q", fp)
			}
		})
	}
	// What `ssh-keygen -lf testdata/ed25519.pub` prints.
	k, _ := ParsePublicKey(ed)
	if got, want := Fingerprint(k), "SHA256:ZxTZQ/K7JZpz0mHqWqdmYCUcq3MAtnu9TYA66TCBkxM"; got != want {
		t.Errorf("Fingerprint = %s, want %s", got, want)
	}
}

func TestParseAllowedSigners(t *testing.T) {
	ed := strings.TrimSpace(string(readTestdata(t, "ed25519.pub")))
	utc := func(s string) time.Time {
		tm, err := time.Parse("20060102150405", s)
		if err != nil {
			t.Fatal(err)
		}
		return tm
	}
	tests := []struct {
		name    string
		line    string
		want    AllowedSigner
		wantErr string
	}{
		{name: "plain", line: "alice@example.com " + ed,
			want: AllowedSigner{Principals: []string{"alice@example.com"}, Comment: "ED25519 test key"}},
		{name: "principal list", line: "alice@example.com,*@ops.example.com " + ed,
			want: AllowedSigner{Principals: []string{"alice@example.com", "*@ops.example.com"}, Comment: "ED25519 test key"}},
		{name: "quoted principals", line: `"alice smith,bob" ` + ed,
			want: AllowedSigner{Principals: []string{"alice smith", "bob"}, Comment: "ED25519 test key"}},
		{name: "options", line: `alice namespaces="git,file",valid-after="20260101",valid-before="20270102030405Z" ` + ed,
			want: AllowedSigner{Principals: []string{"alice"}, Namespaces: []string{"git", "file"},
				ValidAfter:  utc("20260101000000"),
				ValidBefore: utc("20270102030405"), Comment: "ED25519 test key"}},
		{name: "option case", line: `alice NAMESPACES="git",Valid-Before="202701020304UTC" ` + ed,
			want: AllowedSigner{Principals: []string{"alice"}, Namespaces: []string{"git"}, ValidBefore: utc("20270102030400"), Comment: "ED25519 test key"}},
		{name: "cert-authority", line: "*@example.com cert-authority " + ed,
			want: AllowedSigner{Principals: []string{"*@example.com"}, CertAuthority: true, Comment: "ED25519 test key"}},
		{name: "unknown option", line: `alice no-touch-required ` + ed, wantErr: "unknown option"},
		{name: "twice", line: `alice namespaces="git",namespaces="file" ` + ed, wantErr: "multiple"},
		{name: "unquoted", line: `alice namespaces=git ` + ed, wantErr: "missing start quote"},
		{name: "bad time", line: `alice valid-after="2026" ` + ed, wantErr: "invalid"},
		{name: "before after", line: `alice valid-after="20270101",valid-before="20260101" ` + ed, wantErr: "before"},
		{name: "no key", line: `alice namespaces="git"`, wantErr: "missing key"},
		{name: "principals only", line: `alice`, wantErr: "missing key"},
		{name: "trailing comma", line: `alice namespaces="git", ` + ed, wantErr: "end of options"},
		{name: "weak key", line: "alice " + rsaLine(t, 1024), wantErr: "bits"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseAllowedSigners([]byte("# comment\n\n  " + tc.line + "\n"))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !strings.Contains(err.Error(), "line 3") {
					t.Fatalf("ParseAllowedSigners = %v, want error naming line 3 and containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != 1 {
				t.Fatalf("got %d signers", len(got))
			}
			g := got[0]
			if g.Line != 3 || g.Key == nil {
				t.Fatalf("Line = %d, Key = %v", g.Line, g.Key)
			}
			g.Key, g.Line = nil, 0
			if !equalSigner(g, tc.want) {
				t.Fatalf("got %+v\nwant %+v", g, tc.want)
			}
		})
	}
}

// rsaLine makes an RSA public key line of the given size.
func rsaLine(t *testing.T, bits int) string {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, bits)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := ssh.NewPublicKey(&k.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(ssh.MarshalAuthorizedKey(pub)))
}

func equalSigner(a, b AllowedSigner) bool {
	return strings.Join(a.Principals, "|") == strings.Join(b.Principals, "|") &&
		strings.Join(a.Namespaces, "|") == strings.Join(b.Namespaces, "|") &&
		(a.Namespaces == nil) == (b.Namespaces == nil) &&
		a.ValidAfter.Equal(b.ValidAfter) && a.ValidBefore.Equal(b.ValidBefore) &&
		a.CertAuthority == b.CertAuthority && a.Comment == b.Comment
}

func TestMatchPatternList(t *testing.T) {
	tests := []struct {
		s        string
		patterns string
		want     bool
	}{
		{"git", "git", true},
		{"git", "file,git", true},
		{"git", "gi?", true},
		{"git", "g*", true},
		{"git", "*", true},
		{"git", "gitx", false},
		{"git", "!git,*", false},
		{"git", "*,!git", false},
		{"alice@example.com", "*@example.com", true},
		{"alice@example.com", "*@example.com,!alice@*", false},
		{"a", "**a*", true},
		{"", "*", true},
		{"abc", "a*c", true},
		{"abc", "a*b", false},
	}
	for _, tc := range tests {
		if got := matchPatternList(tc.s, strings.Split(tc.patterns, ",")); got != tc.want {
			t.Errorf("matchPatternList(%q, %q) = %v, want %v", tc.s, tc.patterns, got, tc.want)
		}
	}
}
