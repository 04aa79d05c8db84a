package backend

import (
	"crypto/rsa"
	"fmt"
	"slices"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"
)

// signerSSHKey is one SSH public key of a signer, with the allowed_signers
// options that bound where and when it signs, as git's
// gpg.ssh.allowedSignersFile takes them.
type signerSSHKey struct {
	// PublicKey is the line as given, options included, comment dropped.
	PublicKey   string `json:"public_key"`
	Type        string `json:"type"`
	Fingerprint string `json:"fingerprint"`
	Comment     string `json:"comment,omitempty"`
	// ValidAfter/ValidBefore are the allowed_signers options as written
	// (YYYYMMDD[HHMM[SS]][Z]); empty when absent.
	ValidAfter  string `json:"valid_after,omitempty"`
	ValidBefore string `json:"valid_before,omitempty"`
	// Namespaces is the namespaces option; empty: any.
	Namespaces string `json:"namespaces,omitempty"`
}

// sshKeyTypes are the key types a signer may hold: those git and
// ssh-keygen -Y sign with, DSA left out.
var sshKeyTypes = []string{
	ssh.KeyAlgoED25519, ssh.KeyAlgoSKED25519,
	ssh.KeyAlgoECDSA256, ssh.KeyAlgoECDSA384, ssh.KeyAlgoECDSA521, ssh.KeyAlgoSKECDSA256,
	ssh.KeyAlgoRSA,
}

// parseSignerSSHKey validates one SSH public key line: authorized_keys
// form ([options] type base64 [comment]) with only the allowed_signers
// options that matter for a commit signature.
func parseSignerSSHKey(line string) (signerSSHKey, error) {
	text := strings.TrimSpace(line)
	if text == "" {
		return signerSSHKey{}, fmt.Errorf("the line is empty: give the public key as `cat ~/.ssh/id_ed25519.pub` prints it")
	}
	if strings.Contains(text, "PRIVATE KEY") {
		return signerSSHKey{}, fmt.Errorf("this is an SSH PRIVATE key; give the public key only (the .pub file), and treat the private key as leaked if it was sent anywhere")
	}
	if strings.ContainsAny(text, "\n\r") {
		return signerSSHKey{}, fmt.Errorf("give one key per line, each as its own ssh_public_keys item")
	}
	pk, comment, options, rest, err := ssh.ParseAuthorizedKey([]byte(text))
	if err != nil {
		return signerSSHKey{}, fmt.Errorf("not an SSH public key line (%v): give it as `[options] type base64 [comment]`, e.g. `ssh-ed25519 AAAA... alice@laptop`, without the principals field of an allowed_signers file", err)
	}
	if len(strings.TrimSpace(string(rest))) > 0 {
		return signerSSHKey{}, fmt.Errorf("more than one key on the line: give each key as its own ssh_public_keys item")
	}
	k := signerSSHKey{Type: pk.Type(), Fingerprint: ssh.FingerprintSHA256(pk), Comment: comment}
	if _, ok := pk.(*ssh.Certificate); ok || !slices.Contains(sshKeyTypes, pk.Type()) {
		return signerSSHKey{}, fmt.Errorf("key type %s cannot be a signer's key: use ssh-ed25519, ecdsa-sha2-nistp256/384/521, their sk- (security key) forms, or RSA of 2048 bits or more", pk.Type())
	}
	if ck, ok := pk.(ssh.CryptoPublicKey); ok {
		if r, ok := ck.CryptoPublicKey().(*rsa.PublicKey); ok && r.N.BitLen() < 2048 {
			return signerSSHKey{}, fmt.Errorf("the RSA key has %d bits, weaker than the 2048 bits required: make a new key (`ssh-keygen -t ed25519`) and trust that one", r.N.BitLen())
		}
	}
	for _, o := range options {
		name, value, hasValue := strings.Cut(o, "=")
		value = strings.Trim(value, `"`)
		switch strings.ToLower(name) {
		case "valid-after", "valid-before":
			if !hasValue || parseSSHTime(value) == nil {
				return signerSSHKey{}, fmt.Errorf("option %s=%q is not a time: write YYYYMMDD[HHMM[SS]][Z] as in allowed_signers", name, value)
			}
			if strings.ToLower(name) == "valid-after" {
				k.ValidAfter = value
			} else {
				k.ValidBefore = value
			}
		case "namespaces":
			if !hasValue || value == "" {
				return signerSSHKey{}, fmt.Errorf(`option namespaces needs a value, e.g. namespaces="git"`)
			}
			if !slices.Contains(strings.Split(value, ","), "git") {
				return signerSSHKey{}, fmt.Errorf("option namespaces=%q leaves out \"git\": this key could never sign a commit or a note", value)
			}
			k.Namespaces = value
		case "cert-authority":
			return signerSSHKey{}, fmt.Errorf("cert-authority keys (SSH certificates) are not supported: give the signer's own public key")
		default:
			if strings.Contains(name, "@") {
				return signerSSHKey{}, fmt.Errorf("%q looks like the principals field of an allowed_signers line: give the key without the principals field", name)
			}
			return signerSSHKey{}, fmt.Errorf("option %q is not one a signer's key takes: only valid-after, valid-before and namespaces are", name)
		}
	}
	if k.ValidAfter != "" && k.ValidBefore != "" && !parseSSHTime(k.ValidAfter).Before(*parseSSHTime(k.ValidBefore)) {
		return signerSSHKey{}, fmt.Errorf("valid-after %s is not before valid-before %s: the key could never sign", k.ValidAfter, k.ValidBefore)
	}
	var opts []string
	for name, v := range map[string]string{"valid-after": k.ValidAfter, "valid-before": k.ValidBefore, "namespaces": k.Namespaces} {
		if v != "" {
			opts = append(opts, fmt.Sprintf("%s=%q", name, v))
		}
	}
	slices.Sort(opts)
	k.PublicKey = strings.TrimSpace(strings.Join(opts, ",") + " " + strings.TrimSpace(string(ssh.MarshalAuthorizedKey(pk))))
	return k, nil
}

// parseSSHTime reads an allowed_signers time (ssh-keygen(1) "TIME
// FORMAT": YYYYMMDD[HHMM[SS]], local time unless it ends in Z; this plugin
// reads it as UTC either way, and says so); nil when it is not one.
func parseSSHTime(v string) *time.Time {
	v = strings.TrimSuffix(v, "Z")
	for _, layout := range []string{"20060102", "200601021504", "20060102150405"} {
		if len(v) == len(layout) {
			if t, err := time.Parse(layout, v); err == nil {
				return &t
			}
		}
	}
	return nil
}

// problemAt says why the key does not count at time now, "" when it may.
func (k signerSSHKey) problemAt(now time.Time) string {
	if t := parseSSHTime(k.ValidBefore); t != nil && !now.Before(*t) {
		return "valid-before " + k.ValidBefore + " has passed"
	}
	return ""
}
