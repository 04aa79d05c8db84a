// Package gitwatch keeps a local mirror of one remote Git branch, answers
// ancestry questions about it and counts the trusted PGP and SSH signatures
// on a commit (the commit's own signature and trdl-style git-notes
// signatures; SSH ones are read by package sshsig).
//
// It has no Vault dependency: callers pass plain values and a context.
package gitwatch

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/armor"
	"github.com/ProtonMail/go-crypto/openpgp/packet"

	"github.com/flant/flant_gitops/gitwatch/sshsig"
)

// KeyInfo describes a validated public key, for display and for storage
// next to the armored text.
type KeyInfo struct {
	// Fingerprint of the primary key, upper-case hex (40 characters for v4
	// keys, 64 for v6 keys).
	Fingerprint string
	// UserIDs are the self-certified user IDs, sorted.
	UserIDs []string
	// Created is the primary key's creation time.
	Created time.Time
	// Expires is when the primary key expires according to its primary
	// self-signature; nil when it never expires.
	Expires *time.Time
	// Revoked reports a key revocation signature on the primary key.
	Revoked bool
}

const (
	publicKeyBlock  = "PGP PUBLIC KEY BLOCK"
	privateKeyBlock = "PGP PRIVATE KEY BLOCK"

	// OpenPGP packet tags (RFC 9580 section 5).
	tagSecretKey    = 5
	tagPublicKey    = 6
	tagSecretSubkey = 7
)

// ParseKey validates an armored OpenPGP public key and describes it.
//
// The text must hold exactly one armored public key block with exactly one
// primary key. Private key material is refused, whatever armor header it
// arrives under, so that a secret can never end up stored as a "trusted key".
func ParseKey(armored string) (KeyInfo, error) {
	entity, err := parseEntity(armored)
	if err != nil {
		return KeyInfo{}, err
	}
	return describe(entity, time.Now()), nil
}

// parseEntity does the validation of ParseKey and returns the entity for
// signature verification.
func parseEntity(armored string) (*openpgp.Entity, error) {
	text := strings.TrimSpace(armored)
	if text == "" {
		return nil, errors.New("PGP public key is empty: paste the output of `gpg --armor --export KEYID`")
	}
	if first, _, _ := strings.Cut(text, " "); looksLikeSSHKeyType(first) || sshsig.IsSSHSIG([]byte(text)) {
		return nil, errors.New("this is an SSH key, not a PGP key: trust it as an SSH key (ssh_public_keys of configure/signer/NAME)")
	}
	if strings.Contains(text, privateKeyBlock) {
		return nil, errors.New("this is a PGP PRIVATE key; give the public key only (`gpg --armor --export KEYID`), and treat the private key as leaked if it was sent anywhere")
	}
	if n := strings.Count(text, "-----BEGIN PGP "); n != 1 {
		return nil, fmt.Errorf("PGP public key must be exactly one armored block, found %d: give one key per name", n)
	}
	if !strings.HasPrefix(text, "-----BEGIN "+publicKeyBlock+"-----") {
		return nil, fmt.Errorf("PGP public key must start with %q (armored, as `gpg --armor --export KEYID` prints it)", "-----BEGIN "+publicKeyBlock+"-----")
	}
	if !strings.HasSuffix(text, "-----END "+publicKeyBlock+"-----") {
		return nil, fmt.Errorf("PGP public key must end with %q, with nothing after it", "-----END "+publicKeyBlock+"-----")
	}
	block, err := armor.Decode(strings.NewReader(text))
	if err != nil {
		return nil, fmt.Errorf("PGP public key armor is damaged: %w", err)
	}
	if block.Type != publicKeyBlock {
		return nil, fmt.Errorf("PGP armor block is %q, want %q", block.Type, publicKeyBlock)
	}
	body, err := io.ReadAll(block.Body)
	if err != nil {
		return nil, fmt.Errorf("PGP public key armor is damaged (bad base64 or checksum): %w", err)
	}
	if err := checkPacketKinds(body); err != nil {
		return nil, err
	}
	entities, err := openpgp.ReadKeyRing(bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("PGP public key cannot be read: %w", err)
	}
	if len(entities) != 1 {
		// checkPacketKinds saw one primary key, so the reader skipped it as
		// unreadable (for example a self-signature that does not verify).
		return nil, fmt.Errorf("PGP public key was not accepted: its self-signatures or structure are invalid")
	}
	entity := entities[0]
	if entity.PrivateKey != nil {
		return nil, errors.New("this is a PGP PRIVATE key; give the public key only")
	}
	for _, sub := range entity.Subkeys {
		if sub.PrivateKey != nil {
			return nil, errors.New("this key carries private subkey material; give the public key only")
		}
	}
	if err := checkKeyStrength(entity); err != nil {
		return nil, err
	}
	return entity, nil
}

// minKeyBits is the smallest RSA, DSA or ElGamal key that is accepted.
const minKeyBits = 2048

// checkKeyStrength refuses a primary key, or a subkey that may sign, of a
// finite-field algorithm (RSA, DSA, ElGamal) under minKeyBits: such keys can
// be factored or forged by a well-funded attacker. Encryption-only subkeys
// never sign a commit, so they do not matter here.
func checkKeyStrength(e *openpgp.Entity) error {
	check := func(what string, pk *packet.PublicKey) error {
		switch pk.PubKeyAlgo {
		case packet.PubKeyAlgoRSA, packet.PubKeyAlgoRSASignOnly, packet.PubKeyAlgoRSAEncryptOnly, packet.PubKeyAlgoDSA, packet.PubKeyAlgoElGamal:
		default:
			return nil
		}
		bits, err := pk.BitLength()
		if err != nil {
			return fmt.Errorf("the %s cannot be measured: %w", what, err)
		}
		if int(bits) < minKeyBits {
			return fmt.Errorf("the %s is %s with %d bits, weaker than the %d bits required: make a new key "+
				"(`gpg --quick-gen-key 'Name <email>' ed25519 sign`, or rsa3072) and trust that one", what, algoName(pk.PubKeyAlgo), bits, minKeyBits)
		}
		return nil
	}
	if err := check("primary key", e.PrimaryKey); err != nil {
		return err
	}
	for _, sub := range e.Subkeys {
		// Flags missing: treat the subkey as one that may sign.
		if sub.Sig != nil && sub.Sig.FlagsValid && !sub.Sig.FlagSign {
			continue
		}
		if err := check("signing subkey "+sub.PublicKey.KeyIdString(), sub.PublicKey); err != nil {
			return err
		}
	}
	return nil
}

func algoName(a packet.PublicKeyAlgorithm) string {
	switch a {
	case packet.PubKeyAlgoDSA:
		return "DSA"
	case packet.PubKeyAlgoElGamal:
		return "ElGamal"
	}
	return "RSA"
}

// checkPacketKinds walks the raw packets: exactly one primary public key and
// no secret key packets. The keyring reader silently skips malformed
// entities, so counting here is what makes "exactly one key" true.
func checkPacketKinds(body []byte) error {
	reader := packet.NewOpaqueReader(bytes.NewReader(body))
	primaries := 0
	for {
		p, err := reader.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("PGP public key packets are malformed: %w", err)
		}
		switch p.Tag {
		case tagSecretKey, tagSecretSubkey:
			return errors.New("PGP key block contains private key material; give the public key only")
		case tagPublicKey:
			primaries++
		}
	}
	if primaries != 1 {
		return fmt.Errorf("PGP public key block must contain exactly one primary key, found %d", primaries)
	}
	return nil
}

// describe reads the display facts of an entity at time now.
func describe(e *openpgp.Entity, now time.Time) KeyInfo {
	info := KeyInfo{
		Fingerprint: fingerprint(e),
		Created:     e.PrimaryKey.CreationTime,
		Revoked:     e.Revoked(now),
	}
	for name := range e.Identities {
		info.UserIDs = append(info.UserIDs, name)
	}
	sort.Strings(info.UserIDs)
	if sig, _ := e.PrimarySelfSignature(); sig != nil && sig.KeyLifetimeSecs != nil && *sig.KeyLifetimeSecs != 0 {
		exp := e.PrimaryKey.CreationTime.Add(time.Duration(*sig.KeyLifetimeSecs) * time.Second)
		info.Expires = &exp
	}
	return info
}

func fingerprint(e *openpgp.Entity) string {
	return strings.ToUpper(hex.EncodeToString(e.PrimaryKey.Fingerprint))
}
