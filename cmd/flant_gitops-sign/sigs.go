package main

import (
	"bytes"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/armor"
	"github.com/ProtonMail/go-crypto/openpgp/packet"
	"golang.org/x/crypto/ssh"
)

// Kinds of note signatures.
const (
	kindOpenPGP = "openpgp"
	kindSSH     = "ssh"
	kindUnknown = "unknown"
)

// sshsigMagic starts an SSH signature blob (OpenSSH PROTOCOL.sshsig); an
// OpenPGP packet cannot start with it, which is how a note line's kind is
// told.
const sshsigMagic = "SSHSIG"

// sshNamespace is the namespace git signs with, and so the one a note
// signature must carry.
const sshNamespace = "git"

// noteSig is one signature of a note (one base64 line) or of a commit.
type noteSig struct {
	raw  []byte
	kind string
	// OpenPGP: the issuer named in the packet (fingerprint when it has one).
	pgp *packet.Signature
	// SSH: the parsed blob.
	ssh *sshsig
	// err says why the line is not a signature (kind is kindUnknown).
	err error
}

// parseSignatureLines reads a signatures note: one base64 signature per
// line, blank lines between appended entries.
func parseSignatureLines(note string) []noteSig {
	var out []noteSig
	for line := range strings.SplitSeq(note, "\n") {
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		raw, err := base64.StdEncoding.DecodeString(line)
		if err != nil {
			raw, err = base64.RawStdEncoding.DecodeString(line)
		}
		if err != nil {
			out = append(out, noteSig{kind: kindUnknown, err: fmt.Errorf("not base64: %w", err)})
			continue
		}
		out = append(out, parseSignature(raw))
	}
	return out
}

// parseSignature tells an SSH signature blob from an OpenPGP one.
func parseSignature(raw []byte) noteSig {
	s := noteSig{raw: raw, kind: kindUnknown}
	if bytes.HasPrefix(raw, []byte(sshsigMagic)) {
		sig, err := parseSSHSig(raw)
		if err != nil {
			s.err = err
			return s
		}
		s.kind, s.ssh = kindSSH, sig
		return s
	}
	p, err := packet.Read(bytes.NewReader(raw))
	if err != nil {
		s.err = fmt.Errorf("not an OpenPGP signature: %w", err)
		return s
	}
	sig, ok := p.(*packet.Signature)
	if !ok {
		s.err = fmt.Errorf("an OpenPGP %T packet, not a signature", p)
		return s
	}
	s.kind, s.pgp = kindOpenPGP, sig
	return s
}

// issuer names the key that made s, for people: an OpenPGP fingerprint
// (or key ID) or an SSH key fingerprint.
func (s noteSig) issuer() string {
	switch s.kind {
	case kindOpenPGP:
		if len(s.pgp.IssuerFingerprint) > 0 {
			return strings.ToUpper(hex.EncodeToString(s.pgp.IssuerFingerprint))
		}
		if s.pgp.IssuerKeyId != nil {
			return fmt.Sprintf("key ID %016X", *s.pgp.IssuerKeyId)
		}
		return "an unnamed OpenPGP key"
	case kindSSH:
		return ssh.FingerprintSHA256(s.ssh.pub)
	}
	return "?"
}

// sshsig is an SSH signature blob as `ssh-keygen -Y sign` makes it (the
// body of its armor).
type sshsig struct {
	pub       ssh.PublicKey
	namespace string
	hashAlg   string
	sig       *ssh.Signature
}

// sshsigWire is the blob after its magic (PROTOCOL.sshsig).
type sshsigWire struct {
	Version   uint32
	PublicKey []byte
	Namespace string
	Reserved  string
	HashAlg   string
	Signature []byte
}

// sshsigSigned is what the blob's signature is made over, after the magic.
type sshsigSigned struct {
	Namespace string
	Reserved  string
	HashAlg   string
	Hash      []byte
}

func parseSSHSig(raw []byte) (*sshsig, error) {
	var w sshsigWire
	if err := ssh.Unmarshal(raw[len(sshsigMagic):], &w); err != nil {
		return nil, fmt.Errorf("a malformed SSH signature: %w", err)
	}
	if w.Version != 1 {
		return nil, fmt.Errorf("an SSH signature of version %d (only 1 exists)", w.Version)
	}
	pub, err := ssh.ParsePublicKey(w.PublicKey)
	if err != nil {
		return nil, fmt.Errorf("an SSH signature with an unreadable public key: %w", err)
	}
	sig := new(ssh.Signature)
	if err := ssh.Unmarshal(w.Signature, sig); err != nil {
		return nil, fmt.Errorf("an SSH signature with a malformed signature: %w", err)
	}
	return &sshsig{pub: pub, namespace: w.Namespace, hashAlg: w.HashAlg, sig: sig}, nil
}

// verify checks s over msg in the git namespace.
func (s *sshsig) verify(msg []byte) error {
	if s.namespace != sshNamespace {
		return fmt.Errorf("made for namespace %q, not %q", s.namespace, sshNamespace)
	}
	var h []byte
	switch s.hashAlg {
	case "sha256":
		sum := sha256.Sum256(msg)
		h = sum[:]
	case "sha512":
		sum := sha512.Sum512(msg)
		h = sum[:]
	default:
		return fmt.Errorf("hash %q is not sha256 or sha512", s.hashAlg)
	}
	if s.sig.Format == ssh.KeyAlgoRSA {
		return errors.New("an RSA signature with SHA-1 (ssh-rsa), which ssh-keygen no longer accepts")
	}
	signed := append([]byte(sshsigMagic), ssh.Marshal(sshsigSigned{Namespace: s.namespace, HashAlg: s.hashAlg, Hash: h})...)
	return s.pub.Verify(signed, s.sig)
}

// dearmorSSH turns `ssh-keygen -Y sign` output into the binary blob.
func dearmorSSH(armored []byte) ([]byte, error) {
	const begin, end = "-----BEGIN SSH SIGNATURE-----", "-----END SSH SIGNATURE-----"
	text := strings.TrimSpace(string(armored))
	if !strings.HasPrefix(text, begin) || !strings.HasSuffix(text, end) {
		return nil, fmt.Errorf("ssh-keygen printed no SSH SIGNATURE block")
	}
	body := strings.Join(strings.Fields(text[len(begin):len(text)-len(end)]), "")
	raw, err := base64.StdEncoding.DecodeString(body)
	if err != nil {
		return nil, fmt.Errorf("the SSH signature's armor is not base64: %w", err)
	}
	return raw, nil
}

// dearmorPGP turns an armored OpenPGP signature (a commit's gpgsig) into
// its packets.
func dearmorPGP(armored string) ([]byte, error) {
	b, err := armor.Decode(strings.NewReader(armored))
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	if _, err := buf.ReadFrom(b.Body); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// pgpSignedBy reports whether raw is a valid signature over msg by a key of
// keyring, and which entity made it.
func pgpSignedBy(keyring openpgp.EntityList, raw, msg []byte) (*openpgp.Entity, error) {
	return openpgp.CheckDetachedSignature(keyring, bytes.NewReader(msg), bytes.NewReader(raw), nil)
}

// pgpFingerprint is an entity's primary fingerprint, upper-case hex.
func pgpFingerprint(e *openpgp.Entity) string {
	return strings.ToUpper(hex.EncodeToString(e.PrimaryKey.Fingerprint))
}
