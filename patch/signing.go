package patch

import (
	"bytes"
	"crypto"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/armor"
	"github.com/ProtonMail/go-crypto/openpgp/packet"
)

// SigningKey is the PGP key the plugin signs its own commits with. The private
// part lives in Vault storage only; the public part is what operators add to the
// watcher's trusted keys.
type SigningKey struct {
	entity *openpgp.Entity
}

// signingConfig picks EdDSA over Curve25519 in a v4 key: small, fast to make and
// to sign with, and understood by the gpg 2.2 that stock git installs still use
// (the newer RFC 9580 Ed25519 algorithm is not).
func signingConfig(now time.Time) *packet.Config {
	return &packet.Config{
		Algorithm:   packet.PubKeyAlgoEdDSA,
		Curve:       packet.Curve25519,
		DefaultHash: crypto.SHA256,
		Time:        func() time.Time { return now },
	}
}

// GenerateSigningKey makes a new signing key whose user ID is "name <email>".
func GenerateSigningKey(name, email string, now time.Time) (*SigningKey, error) {
	if strings.TrimSpace(name) == "" {
		return nil, errors.New("signing key: a user ID name is required")
	}
	e, err := openpgp.NewEntity(name, "", email, signingConfig(now))
	if err != nil {
		return nil, fmt.Errorf("generating the commit signing key: %w", err)
	}
	return &SigningKey{entity: e}, nil
}

// ParseSigningKey reads a key written by ArmoredPrivate.
func ParseSigningKey(armored []byte) (*SigningKey, error) {
	list, err := openpgp.ReadArmoredKeyRing(bytes.NewReader(armored))
	if err != nil {
		return nil, fmt.Errorf("reading the stored commit signing key: %w", err)
	}
	if len(list) != 1 {
		return nil, fmt.Errorf("reading the stored commit signing key: want exactly one key, found %d", len(list))
	}
	e := list[0]
	if e.PrivateKey == nil {
		return nil, errors.New("reading the stored commit signing key: it has no private part")
	}
	if e.PrivateKey.Encrypted {
		return nil, errors.New("reading the stored commit signing key: the private part is passphrase-protected")
	}
	return &SigningKey{entity: e}, nil
}

// ArmoredPrivate serializes the whole key, private part included, for storage.
func (k *SigningKey) ArmoredPrivate() ([]byte, error) {
	var buf bytes.Buffer
	w, err := armor.Encode(&buf, openpgp.PrivateKeyType, nil)
	if err != nil {
		return nil, fmt.Errorf("armoring the commit signing key: %w", err)
	}
	if err := k.entity.SerializePrivateWithoutSigning(w, nil); err != nil {
		return nil, fmt.Errorf("serializing the commit signing key: %w", err)
	}
	if err := w.Close(); err != nil {
		return nil, fmt.Errorf("armoring the commit signing key: %w", err)
	}
	return buf.Bytes(), nil
}

// ArmoredPublic is the public key, ready for `gpg --import` or for the
// watcher's trusted_pgp_public_key path.
func (k *SigningKey) ArmoredPublic() ([]byte, error) {
	var buf bytes.Buffer
	w, err := armor.Encode(&buf, openpgp.PublicKeyType, nil)
	if err != nil {
		return nil, fmt.Errorf("armoring the commit signing public key: %w", err)
	}
	if err := k.entity.Serialize(w); err != nil {
		return nil, fmt.Errorf("serializing the commit signing public key: %w", err)
	}
	if err := w.Close(); err != nil {
		return nil, fmt.Errorf("armoring the commit signing public key: %w", err)
	}
	return buf.Bytes(), nil
}

// Fingerprint is the primary key's fingerprint in upper-case hex, as gpg prints it.
func (k *SigningKey) Fingerprint() string {
	return strings.ToUpper(fmt.Sprintf("%x", k.entity.PrimaryKey.Fingerprint))
}

// UserID returns the name and email of the key's primary identity; the plugin
// commits as this identity so that `git log --show-signature` reads consistently.
func (k *SigningKey) UserID() (name, email string) {
	id := k.entity.PrimaryIdentity()
	if id == nil || id.UserId == nil {
		return "", ""
	}
	return id.UserId.Name, id.UserId.Email
}

// Sign returns an armored detached signature over message, the form git keeps
// in a commit's gpgsig header.
func (k *SigningKey) Sign(message []byte, now time.Time) (string, error) {
	var buf bytes.Buffer
	if err := openpgp.ArmoredDetachSign(&buf, k.entity, bytes.NewReader(message), signingConfig(now)); err != nil {
		return "", fmt.Errorf("signing the commit: %w", err)
	}
	return buf.String(), nil
}
