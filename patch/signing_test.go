package patch

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/armor"
)

func TestSigningKeyRoundTripAndVerify(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	k, err := GenerateSigningKey("flant_gitops", "flant_gitops@localhost", now)
	if err != nil {
		t.Fatal(err)
	}
	priv, err := k.ArmoredPrivate()
	if err != nil {
		t.Fatal(err)
	}
	k2, err := ParseSigningKey(priv)
	if err != nil {
		t.Fatalf("parsing the stored key back: %v", err)
	}
	if k2.Fingerprint() != k.Fingerprint() || len(k.Fingerprint()) != 40 {
		t.Fatalf("fingerprint changed across storage: %s vs %s", k.Fingerprint(), k2.Fingerprint())
	}
	if name, email := k2.UserID(); name != "flant_gitops" || email != "flant_gitops@localhost" {
		t.Fatalf("user ID = %q <%q>", name, email)
	}
	pub, err := k.ArmoredPublic()
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(pub, []byte("PRIVATE")) {
		t.Fatal("the public export contains private key material")
	}

	msg := []byte("tree 4b825dc642cb6eb9a060e54bf8d69288fbee4904\nauthor a <a@b> 1 +0000\n\nmsg\n")
	sig, err := k2.Sign(msg, now)
	if err != nil {
		t.Fatal(err)
	}
	ring, err := openpgp.ReadArmoredKeyRing(bytes.NewReader(pub))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := openpgp.CheckArmoredDetachedSignature(ring, bytes.NewReader(msg), strings.NewReader(sig), nil); err != nil {
		t.Fatalf("go-crypto rejects the signature: %v", err)
	}
	tampered := append(bytes.Clone(msg), 'x')
	if _, err := openpgp.CheckArmoredDetachedSignature(ring, bytes.NewReader(tampered), strings.NewReader(sig), nil); err == nil {
		t.Fatal("a signature over other bytes verified")
	}

	// Real gpg is what `git verify-commit` runs.
	gpg, err := exec.LookPath("gpg")
	if err != nil {
		t.Fatal("gpg is required for this test: apt-get install -y gnupg")
	}
	home := t.TempDir()
	dir := t.TempDir()
	write := func(name string, data []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	run := func(args ...string) (string, error) {
		cmd := exec.Command(gpg, append([]string{"--homedir", home, "--batch", "--no-tty", "--status-fd", "1"}, args...)...)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	if out, err := run("--import", write("pub.asc", pub)); err != nil {
		t.Fatalf("gpg --import: %v\n%s", err, out)
	}
	out, err := run("--verify", write("sig.asc", []byte(sig)), write("msg", msg))
	if err != nil || !strings.Contains(out, "GOODSIG") || !strings.Contains(out, k.Fingerprint()) {
		t.Fatalf("gpg --verify did not report a good signature by %s: %v\n%s", k.Fingerprint(), err, out)
	}
	if out, err := run("--verify", write("sig.asc", []byte(sig)), write("msg", tampered)); err == nil || strings.Contains(out, "GOODSIG") {
		t.Fatalf("gpg accepted a signature over other bytes:\n%s", out)
	}
}

func TestParseSigningKeyRefuses(t *testing.T) {
	k, err := GenerateSigningKey("x", "x@example.com", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	pub, err := k.ArmoredPublic()
	if err != nil {
		t.Fatal(err)
	}
	other, err := GenerateSigningKey("y", "y@example.com", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	var two bytes.Buffer
	w, err := armor.Encode(&two, openpgp.PrivateKeyType, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range []*openpgp.Entity{k.entity, other.entity} {
		if err := e.SerializePrivateWithoutSigning(w, nil); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, in, want string
	}{
		{"public key only", string(pub), "no private part"},
		{"garbage", "not a key", "reading the stored commit signing key"},
		{"two keys", two.String(), "exactly one key"},
		{"empty", "", "reading the stored commit signing key"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseSigningKey([]byte(tc.in))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want one containing %q", err, tc.want)
			}
		})
	}
	if _, err := GenerateSigningKey(" ", "x@example.com", time.Now()); err == nil {
		t.Fatal("a key without a name was made")
	}
}
