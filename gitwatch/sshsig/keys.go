package sshsig

import (
	"crypto/rsa"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"

	"golang.org/x/crypto/ssh"
)

// MinRSABits is the smallest RSA key accepted (ssh-keygen still accepts
// 1024; such keys can be factored by a well-funded attacker).
const MinRSABits = 2048

// ParsePublicKey parses one authorized_keys-style key line ("ssh-ed25519
// AAAA... comment"), without options, and refuses what must not sign here
// (see checkKey). It returns the comment too.
func ParsePublicKey(line string) (ssh.PublicKey, error) {
	k, _, err := parseKeyLine(line)
	return k, err
}

// parseKeyLine parses "type base64 [comment]".
func parseKeyLine(line string) (ssh.PublicKey, string, error) {
	line = strings.TrimSpace(line)
	if line == "" {
		return nil, "", errors.New("SSH public key is empty: paste the line of your .pub file (for example ~/.ssh/id_ed25519.pub)")
	}
	if strings.Contains(line, "PRIVATE KEY") {
		return nil, "", errors.New("this is an SSH PRIVATE key; give the public key only (the .pub file), and treat the private key as leaked if it was sent anywhere")
	}
	if strings.ContainsAny(line, "\r\n") {
		return nil, "", errors.New("SSH public key must be one line: give one key per entry")
	}
	typ, rest := cutSpace(line)
	b64, comment := cutSpace(rest)
	if b64 == "" {
		return nil, "", fmt.Errorf("SSH public key %q has no key data: the line is \"TYPE BASE64 [COMMENT]\" as in a .pub file", abbreviate(line))
	}
	blob, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		return nil, "", fmt.Errorf("SSH public key data is not valid base64: %w", err)
	}
	k, err := ssh.ParsePublicKey(blob)
	if err != nil {
		return nil, "", fmt.Errorf("SSH public key of type %q cannot be read: %w", typ, err)
	}
	if k.Type() != typ {
		return nil, "", fmt.Errorf("SSH public key line says type %q but the key data is %q", typ, k.Type())
	}
	if err := checkKey(k); err != nil {
		return nil, "", err
	}
	return k, strings.TrimSpace(comment), nil
}

// checkKey refuses key types that cannot vouch here: certificates, DSA,
// unknown types and RSA under MinRSABits.
func checkKey(k ssh.PublicKey) error {
	switch t := k.Type(); t {
	case ssh.KeyAlgoED25519, ssh.KeyAlgoECDSA256, ssh.KeyAlgoECDSA384, ssh.KeyAlgoECDSA521,
		ssh.KeyAlgoSKED25519, ssh.KeyAlgoSKECDSA256:
		return nil
	case ssh.KeyAlgoRSA:
		ck, ok := k.(ssh.CryptoPublicKey)
		if !ok {
			return errors.New("RSA key cannot be measured")
		}
		rk, ok := ck.CryptoPublicKey().(*rsa.PublicKey)
		if !ok {
			return errors.New("RSA key cannot be measured")
		}
		if bits := rk.N.BitLen(); bits < MinRSABits {
			return fmt.Errorf("the SSH key is RSA with %d bits, weaker than the %d bits required: make a new key (`ssh-keygen -t ed25519`) and trust that one", bits, MinRSABits)
		}
		return nil
	case ssh.KeyAlgoDSA:
		return errors.New("DSA (ssh-dss) keys are not accepted: make a new key (`ssh-keygen -t ed25519`) and trust that one")
	default:
		if strings.Contains(t, "-cert-") {
			return fmt.Errorf("%s is a certificate: certificates are not supported, trust the signer's own key", t)
		}
		return fmt.Errorf("SSH key type %q is not accepted for signing: use ed25519, ecdsa, rsa (at least %d bits) or their sk- security key forms", t, MinRSABits)
	}
}

// Fingerprint is the key's SHA256 fingerprint as `ssh-keygen -l` prints it
// ("SHA256:" and unpadded base64).
func Fingerprint(k ssh.PublicKey) string {
	return ssh.FingerprintSHA256(k)
}

// cutSpace splits s at its first run of spaces or tabs.
func cutSpace(s string) (before, after string) {
	i := strings.IndexAny(s, " \t")
	if i < 0 {
		return s, ""
	}
	return s[:i], strings.TrimLeft(s[i:], " \t")
}

func abbreviate(s string) string {
	if len(s) > 40 {
		return s[:40] + "..."
	}
	return s
}
