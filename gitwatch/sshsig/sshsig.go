// Package sshsig reads and verifies SSH signatures (OpenSSH's SSHSIG
// format, PROTOCOL.sshsig, as `ssh-keygen -Y sign` writes them and git
// makes them with gpg.format=ssh) and the allowed_signers file git hands to
// `ssh-keygen -Y verify` (ssh-keygen(1), ALLOWED SIGNERS).
//
// The rules follow ssh-keygen 9.x, with deliberate differences, each one
// stricter, for keys and signatures that should not vouch for anything:
// RSA keys under 2048 bits, DSA keys, certificates, WebAuthn-style
// security key signatures and security key signatures made without user
// presence (touch) are refused.
package sshsig

import (
	"bytes"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"

	"golang.org/x/crypto/ssh"
)

const (
	magic        = "SSHSIG"
	sigVersion   = 1
	armorBegin   = "-----BEGIN SSH SIGNATURE-----"
	armorEnd     = "-----END SSH SIGNATURE-----"
	maxSignature = 64 << 10 // far above any real signature (RSA-16384 is about 2 KiB)
)

// Signature is a parsed SSHSIG blob. Parsing costs no cryptography: the
// embedded public key only says who claims to have signed.
type Signature struct {
	// PublicKey is the key the signature claims; Verify compares it with
	// a trusted key before any cryptography.
	PublicKey ssh.PublicKey
	// Namespace the signer chose ("git" for commits and notes).
	Namespace string
	// HashAlgorithm is "sha256" or "sha512": what the message is hashed
	// with before signing.
	HashAlgorithm string
	// Sig is the SSH signature over the signed data (its Format is the
	// signature algorithm, e.g. "rsa-sha2-512").
	Sig *ssh.Signature
}

// IsSSHSIG reports whether data looks like an SSH signature, armored or
// binary, by its magic alone (no parsing): how a note line or a gpgsig
// header is told apart from OpenPGP.
func IsSSHSIG(data []byte) bool {
	if bytes.HasPrefix(data, []byte(magic)) {
		return true
	}
	return bytes.HasPrefix(bytes.TrimLeft(data, " \t\r\n"), []byte(armorBegin))
}

// Unarmor decodes an armored SSH signature ("-----BEGIN SSH SIGNATURE-----"
// ... "-----END SSH SIGNATURE-----") into the binary blob.
func Unarmor(armored []byte) ([]byte, error) {
	text := bytes.TrimSpace(armored)
	if !bytes.HasPrefix(text, []byte(armorBegin)) {
		return nil, fmt.Errorf("not an armored SSH signature: it must start with %q", armorBegin)
	}
	text = text[len(armorBegin):]
	end := bytes.LastIndex(text, []byte("\n"+armorEnd))
	if end < 0 || len(bytes.TrimSpace(text[end+1+len(armorEnd):])) != 0 {
		return nil, fmt.Errorf("armored SSH signature must end with %q", armorEnd)
	}
	b64 := make([]byte, 0, end)
	for _, c := range text[:end] {
		if c != ' ' && c != '\t' && c != '\r' && c != '\n' {
			b64 = append(b64, c)
		}
	}
	blob, err := base64.StdEncoding.DecodeString(string(b64))
	if err != nil {
		return nil, fmt.Errorf("armored SSH signature has bad base64: %w", err)
	}
	return blob, nil
}

// Parse reads a binary SSHSIG blob. Certificates are refused: trusting a
// certificate authority is not supported, a signer's own key is.
func Parse(blob []byte) (*Signature, error) {
	if len(blob) > maxSignature {
		return nil, fmt.Errorf("SSH signature is %d bytes, more than the %d accepted", len(blob), maxSignature)
	}
	if !bytes.HasPrefix(blob, []byte(magic)) {
		return nil, errors.New(`not an SSH signature: the "SSHSIG" magic is missing`)
	}
	r := reader(blob[len(magic):])
	version, ok := r.uint32()
	if !ok {
		return nil, errors.New("SSH signature is truncated after its magic")
	}
	// ssh-keygen accepts any version up to its own.
	if version > sigVersion {
		return nil, fmt.Errorf("SSH signature version %d is newer than the supported version %d", version, sigVersion)
	}
	keyBlob, ok1 := r.string()
	ns, ok2 := r.string()
	_, ok3 := r.string() // reserved: not part of what is verified
	hashAlg, ok4 := r.string()
	sigBlob, ok5 := r.string()
	if !ok1 || !ok2 || !ok3 || !ok4 || !ok5 {
		return nil, errors.New("SSH signature is truncated or malformed")
	}
	if len(r) != 0 {
		return nil, errors.New("SSH signature has trailing data")
	}
	pub, err := ssh.ParsePublicKey(keyBlob)
	if err != nil {
		return nil, fmt.Errorf("SSH signature's public key cannot be read: %w", err)
	}
	if _, isCert := pub.(*ssh.Certificate); isCert {
		return nil, fmt.Errorf("SSH signature was made with a %s certificate: certificates are not supported, trust the signer's own key", pub.Type())
	}
	sig := new(ssh.Signature)
	if err := ssh.Unmarshal(sigBlob, sig); err != nil {
		return nil, fmt.Errorf("SSH signature's signature field is malformed: %w", err)
	}
	return &Signature{PublicKey: pub, Namespace: string(ns), HashAlgorithm: string(hashAlg), Sig: sig}, nil
}

// Verify checks sig over message for namespace with pub, as `ssh-keygen -Y
// verify` does once it found the key: same key, same namespace, an accepted
// hash and signature algorithm, and the signature itself. Options of an
// allowed_signers line are AllowedSigner.Check's business.
func Verify(sig *Signature, message []byte, namespace string, pub ssh.PublicKey) error {
	if sig == nil || sig.Sig == nil || sig.PublicKey == nil {
		return errors.New("no signature")
	}
	if pub == nil {
		return errors.New("no public key to verify with")
	}
	if !bytes.Equal(sig.PublicKey.Marshal(), pub.Marshal()) {
		return fmt.Errorf("the signature is by key %s, not by %s", Fingerprint(sig.PublicKey), Fingerprint(pub))
	}
	if err := checkKey(pub); err != nil {
		return err
	}
	if sig.Namespace != namespace {
		return fmt.Errorf("the signature is for namespace %q, not %q (sign with `ssh-keygen -Y sign -n %s`)", sig.Namespace, namespace, namespace)
	}
	var digest []byte
	switch sig.HashAlgorithm {
	case "sha256":
		h := sha256.Sum256(message)
		digest = h[:]
	case "sha512":
		h := sha512.Sum512(message)
		digest = h[:]
	default:
		return fmt.Errorf("the signature uses hash algorithm %q; only sha256 and sha512 are accepted", sig.HashAlgorithm)
	}
	if err := checkSigFormat(pub, sig.Sig.Format); err != nil {
		return err
	}
	if err := pub.Verify(signedData(namespace, sig.HashAlgorithm, digest), sig.Sig); err != nil {
		return fmt.Errorf("the signature does not verify: %w", err)
	}
	return nil
}

// checkSigFormat accepts the signature algorithms ssh-keygen accepts for
// a key, minus WebAuthn: RSA only with SHA-2 (never SHA-1), others their own.
func checkSigFormat(pub ssh.PublicKey, format string) error {
	switch t := pub.Type(); {
	case t == ssh.KeyAlgoRSA:
		if format != ssh.KeyAlgoRSASHA256 && format != ssh.KeyAlgoRSASHA512 {
			return fmt.Errorf("RSA signature algorithm %q is not accepted: only rsa-sha2-256 and rsa-sha2-512 (never SHA-1)", format)
		}
	case format == "webauthn-"+t:
		return errors.New("WebAuthn security key signatures are not supported (git and ssh-keygen make plain sk- signatures)")
	case format != t:
		return fmt.Errorf("signature algorithm %q does not match key type %s", format, t)
	}
	return nil
}

// signedData is what the key really signs (PROTOCOL.sshsig): the magic,
// the namespace, an empty reserved string, the hash algorithm and the
// message's hash.
func signedData(namespace, hashAlg string, digest []byte) []byte {
	var b []byte
	b = append(b, magic...)
	b = appendString(b, []byte(namespace))
	b = appendString(b, nil)
	b = appendString(b, []byte(hashAlg))
	return appendString(b, digest)
}

func appendString(b, s []byte) []byte {
	b = binary.BigEndian.AppendUint32(b, uint32(len(s)))
	return append(b, s...)
}

// reader reads SSH wire encoding (RFC 4251 section 5).
type reader []byte

func (r *reader) uint32() (uint32, bool) {
	if len(*r) < 4 {
		return 0, false
	}
	v := binary.BigEndian.Uint32(*r)
	*r = (*r)[4:]
	return v, true
}

func (r *reader) string() ([]byte, bool) {
	n, ok := r.uint32()
	if !ok || uint64(n) > uint64(len(*r)) {
		return nil, false
	}
	s := (*r)[:n]
	*r = (*r)[n:]
	return s, true
}
