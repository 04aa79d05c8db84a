package sshsig_test

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"encoding/binary"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/flant/flant_gitops/gitwatch/sshsig"
	"github.com/flant/flant_gitops/gitwatch/sshsig/sshsigtest"
)

// ours answers what `ssh-keygen -Y verify -f allowed -I principal -n
// namespace` answers, with this package: some line whose principals match
// and whose key and options accept the signature.
func ours(allowed, principal, namespace string, armored, message []byte, signTime time.Time) error {
	signers, err := sshsig.ParseAllowedSigners([]byte(allowed))
	if err != nil {
		return err
	}
	blob, err := sshsig.Unarmor(armored)
	if err != nil {
		return err
	}
	sig, err := sshsig.Parse(blob)
	if err != nil {
		return err
	}
	last := error(errNoLine)
	for _, a := range signers {
		if !a.MatchesPrincipal(principal) {
			continue
		}
		if last = a.Check(sig, message, namespace, signTime); last == nil {
			return nil
		}
	}
	return last
}

type noLine struct{}

func (noLine) Error() string { return "no allowed signer line matches the principal" }

var errNoLine = noLine{}

// TestCrossCheckSSHKeygen runs every case through this package and through
// the real `ssh-keygen -Y verify`, and fails on any disagreement, except
// where this package is deliberately stricter (stricter says why; then
// ssh-keygen must accept and we must refuse, so the difference stays
// known).
func TestCrossCheckSSHKeygen(t *testing.T) {
	sshsigtest.Require(t)
	keys := map[string]*sshsigtest.Key{}
	key := func(typ string, bits int) *sshsigtest.Key {
		id := typ + "/" + strconv.Itoa(bits)
		if keys[id] == nil {
			keys[id] = sshsigtest.NewKey(t, typ, bits)
		}
		return keys[id]
	}
	at := time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)
	msg := []byte("tree 4b825dc642cb6eb9a060e54bf8d69288fbee4904\nauthor A <a@example.com> 1780315200 +0000\n\nchange\n")

	type tcase struct {
		name       string
		typ        string
		bits       int
		signOpts   []string // ssh-keygen -Y sign options
		signNS     string   // default git
		options    string   // allowed_signers options
		principals string   // of the line, default alice@example.com
		ask        string   // -I, default alice@example.com
		tamper     bool     // the message changes after signing
		otherKey   bool     // the line holds another key
		signTime   time.Time
		sigAlg     string // made here with this signature algorithm (ssh-keygen 9.2 makes rsa-sha2-512 only)
		hashalg    string // made here with this hash algorithm name
		stricter   string
		want       bool
	}
	cases := []tcase{
		{name: "ed25519", typ: "ed25519", want: true},
		{name: "ed25519 sha256", typ: "ed25519", signOpts: []string{"-Ohashalg=sha256"}, want: true},
		{name: "ecdsa p256", typ: "ecdsa", bits: 256, want: true},
		{name: "ecdsa p384", typ: "ecdsa", bits: 384, want: true},
		{name: "ecdsa p521", typ: "ecdsa", bits: 521, want: true},
		{name: "rsa 2048 rsa-sha2-512", typ: "rsa", bits: 2048, want: true},
		{name: "rsa 2048 rsa-sha2-256", typ: "rsa", bits: 2048, sigAlg: ssh.KeyAlgoRSASHA256, want: true},
		{name: "rsa 2048 rsa-sha2-256 hashalg sha256", typ: "rsa", bits: 2048, sigAlg: ssh.KeyAlgoRSASHA256, hashalg: "sha256", want: true},
		{name: "rsa 2048 hashalg sha256", typ: "rsa", bits: 2048, signOpts: []string{"-Ohashalg=sha256"}, want: true},
		{name: "rsa 3072 rsa-sha2-512", typ: "rsa", bits: 3072, want: true},
		{name: "rsa 3072 rsa-sha2-256", typ: "rsa", bits: 3072, sigAlg: ssh.KeyAlgoRSASHA256, want: true},
		{name: "rsa 1024", typ: "rsa", bits: 1024, stricter: "RSA under 2048 bits"},
		{name: "rsa ssh-rsa SHA-1 signature", typ: "rsa", bits: 2048, sigAlg: ssh.KeyAlgoRSA},
		{name: "rsa 1024 rsa-sha2-256", typ: "rsa", bits: 1024, sigAlg: ssh.KeyAlgoRSASHA256, stricter: "RSA under 2048 bits"},
		{name: "unknown hash algorithm", typ: "ed25519", hashalg: "sha384"},
		{name: "wrong namespace", typ: "ed25519", signNS: "file"},
		{name: "tampered message", typ: "ed25519", tamper: true},
		{name: "tampered message rsa", typ: "rsa", bits: 2048, tamper: true},
		{name: "tampered message ecdsa", typ: "ecdsa", bits: 256, tamper: true},
		{name: "wrong key", typ: "ed25519", otherKey: true},
		{name: "valid-before passed", typ: "ed25519", options: `valid-before="20260601115959Z"`},
		{name: "valid-before same second", typ: "ed25519", options: `valid-before="20260601120000Z"`, want: true},
		{name: "valid-before ahead", typ: "ed25519", options: `valid-before="20270101"`, want: true},
		{name: "valid-after ahead", typ: "ed25519", options: `valid-after="20260601120001Z"`},
		{name: "valid-after same second", typ: "ed25519", options: `valid-after="202606011200Z"`, want: true},
		{name: "valid-after without Z", typ: "ed25519", options: `valid-after="20260101",valid-before="20261231"`, want: true},
		{name: "valid-before without Z, same second", typ: "ed25519", options: `valid-before="20260601120000"`, want: true},
		{name: "valid-before without Z, a second before", typ: "ed25519", options: `valid-before="20260601115959"`},
		{name: "valid window passed", typ: "ed25519", options: `valid-after="20250101",valid-before="20260101"`},
		{name: "namespaces exclude git", typ: "ed25519", options: `namespaces="file"`},
		{name: "namespaces include git", typ: "ed25519", options: `namespaces="file,git"`, want: true},
		{name: "namespaces pattern", typ: "ed25519", options: `namespaces="g?t"`, want: true},
		{name: "namespaces negated", typ: "ed25519", options: `namespaces="!git,*"`},
		{name: "option names any case", typ: "ed25519", options: `NameSpaces="git",VALID-BEFORE="20200101"`},
		{name: "principal not matching", typ: "ed25519", ask: "bob@example.com"},
		{name: "principal pattern", typ: "ed25519", principals: "*@example.com", want: true},
		{name: "principal list", typ: "ed25519", principals: "bob@example.com,alice@example.com", want: true},
		{name: "principal negated", typ: "ed25519", principals: "*@example.com,!alice@*"},
		{name: "cert-authority line, plain key", typ: "ed25519", options: "cert-authority"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			k := key(tc.typ, tc.bits)
			if tc.typ == "ecdsa" && !strings.HasPrefix(k.Public, "ecdsa-sha2-nistp"+strconv.Itoa(tc.bits)+" ") {
				t.Fatalf("ssh-keygen made %.30s, not a P-%d key", k.Public, tc.bits)
			}
			ns := tc.signNS
			if ns == "" {
				ns = "git"
			}
			var armored []byte
			switch {
			case tc.sigAlg != "" || tc.hashalg != "":
				hashalg := tc.hashalg
				if hashalg == "" {
					hashalg = "sha512"
				}
				armored = craft(t, k, ns, hashalg, tc.sigAlg, msg)
			default:
				armored = k.Sign(t, ns, msg, tc.signOpts...)
			}
			lineKey := k.Public
			if tc.otherKey {
				lineKey = sshsigtest.NewKey(t, tc.typ, tc.bits).Public
			}
			principals := tc.principals
			if principals == "" {
				principals = "alice@example.com"
			}
			ask := tc.ask
			if ask == "" {
				ask = "alice@example.com"
			}
			line := principals + " " + tc.options + " " + lineKey
			if tc.options == "" {
				line = principals + " " + lineKey
			}
			allowed := "# test\n" + line + "\n"
			signed := msg
			if tc.tamper {
				signed = append([]byte("x"), msg...)
			}
			signTime := at
			if !tc.signTime.IsZero() {
				signTime = tc.signTime
			}
			tool := sshsigtest.Verify(t, allowed, ask, "git", armored, signed, signTime, "")
			err := ours(allowed, ask, "git", armored, signed, signTime)
			t.Logf("ssh-keygen: ok=%v %s\nours: %v", tool.OK, tool.Output, err)
			if tc.stricter != "" {
				if !tool.OK || err == nil {
					t.Fatalf("known difference (%s) did not hold: ssh-keygen ok=%v (%s), ours err=%v", tc.stricter, tool.OK, tool.Output, err)
				}
				return
			}
			if tool.OK != (err == nil) {
				t.Fatalf("DISAGREEMENT: ssh-keygen ok=%v (%s), ours err=%v", tool.OK, tool.Output, err)
			}
			if tool.OK != tc.want {
				t.Fatalf("both say ok=%v, the case expects %v", tool.OK, tc.want)
			}
		})
	}
}

// TestRSASignatureAlgorithms checks the RSA signature algorithms the
// cross-check covers: ssh-keygen makes rsa-sha2-512 (9.2 whatever the
// hashalg; newer versions make rsa-sha2-256 with -Ohashalg=sha256, hence
// the crafted rsa-sha2-256 cases), craft the others.
func TestRSASignatureAlgorithms(t *testing.T) {
	k := sshsigtest.NewKey(t, "rsa", 2048)
	for name, tc := range map[string]struct {
		armored []byte
		want    string
	}{
		"ssh-keygen":   {k.Sign(t, "git", []byte("m")), ssh.KeyAlgoRSASHA512},
		"rsa-sha2-256": {craft(t, k, "git", "sha256", ssh.KeyAlgoRSASHA256, []byte("m")), ssh.KeyAlgoRSASHA256},
		"ssh-rsa":      {craft(t, k, "git", "sha512", ssh.KeyAlgoRSA, []byte("m")), ssh.KeyAlgoRSA},
	} {
		blob, err := sshsig.Unarmor(tc.armored)
		if err != nil {
			t.Fatal(err)
		}
		sig, err := sshsig.Parse(blob)
		if err != nil {
			t.Fatal(err)
		}
		if sig.Sig.Format != tc.want {
			t.Errorf("%s: signature algorithm %s, want %s", name, sig.Sig.Format, tc.want)
		}
	}
}

// craft makes an SSHSIG signature in Go, for what ssh-keygen will not make:
// a hash algorithm it does not know, or an RSA signature with SHA-1
// (sigAlg ssh-rsa), or one whose algorithm ssh-keygen 9.2 does not pick
// (rsa-sha2-256). The signed data follows PROTOCOL.sshsig; a hashalg other
// than sha256 is hashed with SHA-512, which no verifier accepts anyway.
func craft(t *testing.T, k *sshsigtest.Key, namespace, hashalg, sigAlg string, message []byte) []byte {
	t.Helper()
	pem, err := os.ReadFile(k.Path)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := ssh.ParsePrivateKey(pem)
	if err != nil {
		t.Fatal(err)
	}
	h512, h256 := sha512.Sum512(message), sha256.Sum256(message)
	h := h512[:]
	if hashalg == "sha256" {
		h = h256[:]
	}
	str := func(b []byte, s []byte) []byte {
		b = binary.BigEndian.AppendUint32(b, uint32(len(s)))
		return append(b, s...)
	}
	var data []byte
	data = append(data, "SSHSIG"...)
	data = str(data, []byte(namespace))
	data = str(data, nil)
	data = str(data, []byte(hashalg))
	data = str(data, h)
	var sig *ssh.Signature
	if sigAlg != "" {
		sig, err = signer.(ssh.AlgorithmSigner).SignWithAlgorithm(rand.Reader, data, sigAlg)
	} else {
		sig, err = signer.Sign(rand.Reader, data)
	}
	if err != nil {
		t.Fatal(err)
	}
	var blob []byte
	blob = append(blob, "SSHSIG"...)
	blob = binary.BigEndian.AppendUint32(blob, 1)
	blob = str(blob, signer.PublicKey().Marshal())
	blob = str(blob, []byte(namespace))
	blob = str(blob, nil)
	blob = str(blob, []byte(hashalg))
	blob = str(blob, ssh.Marshal(sig))
	b64 := base64.StdEncoding.EncodeToString(blob)
	var out strings.Builder
	out.WriteString("-----BEGIN SSH SIGNATURE-----\n")
	for len(b64) > 70 {
		out.WriteString(b64[:70] + "\n")
		b64 = b64[70:]
	}
	out.WriteString(b64 + "\n-----END SSH SIGNATURE-----\n")
	return []byte(out.String())
}
