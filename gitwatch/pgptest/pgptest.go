// Package pgptest makes OpenPGP keys and signatures for tests: fast
// in-process keys with go-crypto, and real GnuPG keys in a throw-away
// GNUPGHOME for tests that must prove interoperability with `gpg`.
package pgptest

import (
	"bytes"
	"encoding/hex"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/armor"
	"github.com/ProtonMail/go-crypto/openpgp/packet"
)

// Key is a go-crypto key pair made for one test.
type Key struct {
	Entity *openpgp.Entity
	// Name is the user ID's name part, for messages.
	Name string
}

// KeyOption changes how NewKey makes a key.
type KeyOption func(*keyConfig)

type keyConfig struct {
	rsaBits      int
	created      time.Time
	lifetime     time.Duration
	signSubkey   bool
	extraUserIDs []string
}

// RSA makes an RSA key of bits instead of Ed25519 (for tests of weak keys).
func RSA(bits int) KeyOption { return func(c *keyConfig) { c.rsaBits = bits } }

// CreatedAt sets the key creation time (default: one hour ago, so that
// signatures made "now" are after the key's birth).
func CreatedAt(at time.Time) KeyOption { return func(c *keyConfig) { c.created = at } }

// Lifetime makes the primary key expire this long after its creation.
func Lifetime(d time.Duration) KeyOption { return func(c *keyConfig) { c.lifetime = d } }

// SigningSubkey adds a signing-capable subkey; signatures are then made by
// the subkey, as with most real-world keys.
func SigningSubkey() KeyOption { return func(c *keyConfig) { c.signSubkey = true } }

// ExtraUserID adds another self-certified user ID ("Name <email>").
func ExtraUserID(name, email string) KeyOption {
	return func(c *keyConfig) { c.extraUserIDs = append(c.extraUserIDs, name+"\x00"+email) }
}

// NewKey makes an Ed25519 key (see RSA) with user ID "name <name@example.com>".
func NewKey(t testing.TB, name string, opts ...KeyOption) *Key {
	t.Helper()
	c := keyConfig{created: time.Now().Add(-time.Hour)}
	for _, o := range opts {
		o(&c)
	}
	cfg := &packet.Config{
		Algorithm:       packet.PubKeyAlgoEdDSA,
		Time:            func() time.Time { return c.created },
		KeyLifetimeSecs: uint32(c.lifetime / time.Second),
	}
	if c.rsaBits > 0 {
		cfg.Algorithm, cfg.RSABits = packet.PubKeyAlgoRSA, c.rsaBits
	}
	e, err := openpgp.NewEntity(name, "", strings.ToLower(name)+"@example.com", cfg)
	if err != nil {
		t.Fatalf("pgptest: generate key %q: %v", name, err)
	}
	for _, uid := range c.extraUserIDs {
		n, email, _ := strings.Cut(uid, "\x00")
		if err := e.AddUserId(n, "", email, cfg); err != nil {
			t.Fatalf("pgptest: add user ID to %q: %v", name, err)
		}
	}
	if c.signSubkey {
		if err := e.AddSigningSubkey(cfg); err != nil {
			t.Fatalf("pgptest: add signing subkey to %q: %v", name, err)
		}
	}
	return &Key{Entity: e, Name: name}
}

// Revoke adds a key revocation signature to the primary key. Sign what the
// test needs first: a revoked key can no longer make signatures.
func (k *Key) Revoke(t testing.TB) {
	t.Helper()
	if err := k.Entity.RevokeKey(packet.KeyRetired, "retired by test", nil); err != nil {
		t.Fatalf("pgptest: revoke %q: %v", k.Name, err)
	}
}

// Fingerprint is the primary key fingerprint in upper-case hex.
func (k *Key) Fingerprint() string {
	return strings.ToUpper(hex.EncodeToString(k.Entity.PrimaryKey.Fingerprint))
}

// PublicArmored is the armored public key, as `gpg --armor --export` gives it.
func (k *Key) PublicArmored(t testing.TB) string {
	t.Helper()
	var buf bytes.Buffer
	w, err := armor.Encode(&buf, openpgp.PublicKeyType, nil)
	if err != nil {
		t.Fatalf("pgptest: armor: %v", err)
	}
	if err := k.Entity.Serialize(w); err != nil {
		t.Fatalf("pgptest: serialize public key %q: %v", k.Name, err)
	}
	if err := w.Close(); err != nil {
		t.Fatalf("pgptest: armor: %v", err)
	}
	return buf.String()
}

// PrivateArmored is the armored private key (for tests that check it is refused).
func (k *Key) PrivateArmored(t testing.TB) string {
	t.Helper()
	var buf bytes.Buffer
	w, err := armor.Encode(&buf, openpgp.PrivateKeyType, nil)
	if err != nil {
		t.Fatalf("pgptest: armor: %v", err)
	}
	if err := k.Entity.SerializePrivateWithoutSigning(w, nil); err != nil {
		t.Fatalf("pgptest: serialize private key %q: %v", k.Name, err)
	}
	if err := w.Close(); err != nil {
		t.Fatalf("pgptest: armor: %v", err)
	}
	return buf.String()
}

// SignDetached makes a binary detached signature over data, dated at (zero
// means now). Dating a signature lets tests make not-yet-valid ones.
func (k *Key) SignDetached(t testing.TB, data []byte, at time.Time) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := openpgp.DetachSign(&buf, k.Entity, bytes.NewReader(data), sigConfig(at)); err != nil {
		t.Fatalf("pgptest: sign with %q: %v", k.Name, err)
	}
	return buf.Bytes()
}

// ArmorSignDetached is SignDetached armored, the form git stores in a
// commit's gpgsig header.
func (k *Key) ArmorSignDetached(t testing.TB, data []byte, at time.Time) string {
	t.Helper()
	var buf bytes.Buffer
	if err := openpgp.ArmoredDetachSign(&buf, k.Entity, bytes.NewReader(data), sigConfig(at)); err != nil {
		t.Fatalf("pgptest: sign with %q: %v", k.Name, err)
	}
	return buf.String()
}

// Forged makes n distinct signature packets that name issuer (by the
// fingerprint of its primary key, or of a subkey) and do not verify, the
// way someone without its private key makes them: sign with a throw-away
// key, then write issuer's fingerprint and key ID over the throw-away
// key's (same lengths, so the packets stay well formed).
func Forged(t testing.TB, issuer []byte, n int) [][]byte {
	t.Helper()
	forger := NewKey(t, "Forger")
	own := forger.Entity.PrimaryKey.Fingerprint
	if len(issuer) != len(own) {
		t.Fatalf("pgptest: forge: a fingerprint of %d bytes, want %d", len(issuer), len(own))
	}
	out := make([][]byte, 0, n)
	for i := range n {
		sig := forger.SignDetached(t, []byte("forged "+strconv.Itoa(i)), time.Time{})
		sig = bytes.ReplaceAll(sig, own, issuer)
		sig = bytes.ReplaceAll(sig, own[len(own)-8:], issuer[len(issuer)-8:])
		if bytes.Contains(sig, own[len(own)-8:]) || !bytes.Contains(sig, issuer) {
			t.Fatalf("pgptest: forged packet %d does not name the issuer only", i)
		}
		out = append(out, sig)
	}
	return out
}

func sigConfig(at time.Time) *packet.Config {
	if at.IsZero() {
		return &packet.Config{}
	}
	return &packet.Config{Time: func() time.Time { return at }}
}

// GPG is a throw-away GnuPG home directory.
type GPG struct {
	// Home is the GNUPGHOME to pass to gpg and to `git commit -S`.
	Home string
}

// NewGPG makes an empty GNUPGHOME under the test's temp dir. A missing gpg
// binary fails the test with what to install.
func NewGPG(t testing.TB) *GPG {
	t.Helper()
	if _, err := exec.LookPath("gpg"); err != nil {
		t.Fatalf("pgptest: gpg is not on PATH; install GnuPG (apt-get install -y gnupg): %v", err)
	}
	// gpg-agent's socket path must stay short (108 bytes), so do not nest
	// deep inside t.TempDir.
	home, err := os.MkdirTemp("", "gnupg")
	if err != nil {
		t.Fatalf("pgptest: make GNUPGHOME: %v", err)
	}
	if err := os.Chmod(home, 0o700); err != nil {
		t.Fatalf("pgptest: chmod GNUPGHOME: %v", err)
	}
	g := &GPG{Home: home}
	t.Cleanup(func() {
		// Stop the agent this home started, then drop the directory.
		cmd := exec.Command("gpgconf", "--kill", "gpg-agent")
		cmd.Env = g.Env()
		_ = cmd.Run()
		_ = os.RemoveAll(home)
	})
	return g
}

// Env is the process environment with GNUPGHOME pointing at this home.
func (g *GPG) Env() []string {
	return append(os.Environ(), "GNUPGHOME="+g.Home)
}

// Run runs gpg in batch mode with stdin and returns stdout.
func (g *GPG) Run(t testing.TB, stdin []byte, args ...string) []byte {
	t.Helper()
	cmd := exec.Command("gpg", append([]string{"--batch", "--no-tty", "--pinentry-mode", "loopback", "--passphrase", ""}, args...)...)
	cmd.Env = g.Env()
	cmd.Stdin = bytes.NewReader(stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("pgptest: gpg %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return stdout.Bytes()
}

// GenKey makes an Ed25519 signing key with `gpg --quick-gen-key` and returns
// its primary key fingerprint.
func (g *GPG) GenKey(t testing.TB, name string) string {
	t.Helper()
	uid := name + " <" + strings.ToLower(name) + "@example.com>"
	g.Run(t, nil, "--quick-gen-key", uid, "ed25519", "sign", "1y")
	out := g.Run(t, nil, "--with-colons", "--list-keys", uid)
	for _, line := range strings.Split(string(out), "\n") {
		fields := strings.Split(line, ":")
		if len(fields) > 9 && fields[0] == "fpr" {
			return fields[9]
		}
	}
	t.Fatalf("pgptest: no fingerprint for new gpg key %q in:\n%s", uid, out)
	return ""
}

// ExportPublic is `gpg --armor --export FINGERPRINT`.
func (g *GPG) ExportPublic(t testing.TB, fingerprint string) string {
	t.Helper()
	return string(g.Run(t, nil, "--armor", "--export", fingerprint))
}

// SignDetached is `gpg --detach-sign` (binary) of data with the given key,
// as `git signatures add` makes note signatures.
func (g *GPG) SignDetached(t testing.TB, fingerprint string, data []byte) []byte {
	t.Helper()
	return g.Run(t, data, "--local-user", fingerprint, "--detach-sign")
}
