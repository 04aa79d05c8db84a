package main

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"strings"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/armor"
	"github.com/ProtonMail/go-crypto/openpgp/packet"

	"github.com/flant/flant_gitops/gitwatch/sshsig"
)

// Kinds of note signatures.
const (
	kindOpenPGP = "openpgp"
	kindSSH     = "ssh"
	kindUnknown = "unknown"
)

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
	ssh *sshsig.Signature
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
	if sshsig.IsSSHSIG(raw) {
		sig, err := sshsig.Parse(raw)
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
		return sshsig.Fingerprint(s.ssh.PublicKey)
	}
	return "?"
}

// dearmorSSH turns `ssh-keygen -Y sign` output into the binary blob.
func dearmorSSH(armored []byte) ([]byte, error) { return sshsig.Unarmor(armored) }

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
