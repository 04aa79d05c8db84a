package gitwatch

import (
	"bytes"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/flant/flant_gitops/gitwatch/sshsig"
	"golang.org/x/crypto/ssh"
)

// Signer kinds, in Signer.Kind.
const (
	KindPGP = "pgp"
	KindSSH = "ssh"
)

// sshNamespace is the namespace git signs commits in, and the only one
// that counts, for commits and notes alike.
const sshNamespace = "git"

// SSHKeyInfo describes a validated trusted SSH key, for display and for
// storage next to its text.
type SSHKeyInfo struct {
	// Fingerprint is "SHA256:..." as `ssh-keygen -l` prints it.
	Fingerprint string
	// Type is the key type, for example "ssh-ed25519".
	Type string
	// Comment is what follows the key on its line.
	Comment string
	// Principals come from an allowed_signers line; Namespaces,
	// ValidAfter and ValidBefore from its options; nil when absent.
	Principals  []string
	Namespaces  []string
	ValidAfter  *time.Time
	ValidBefore *time.Time
}

// ParseSSHKey validates a trusted SSH key (TrustedKey.SSH): a public key
// line as in a .pub file ("ssh-ed25519 AAAA... comment"), optionally
// preceded by allowed_signers options ("namespaces=\"git\",valid-before=
// \"20270101Z\" ssh-ed25519 AAAA...") or by a whole allowed_signers
// line's principals and options. The namespaces and valid-after/
// valid-before options then apply (checked against the commit's committer
// time, as git does; times in UTC).
// Key types: ssh-ed25519, ecdsa-sha2-nistp256/384/521, ssh-rsa of at least
// 2048 bits, sk-ssh-ed25519@openssh.com, sk-ecdsa-sha2-nistp256@openssh.com.
func ParseSSHKey(text string) (SSHKeyInfo, error) {
	a, err := parseTrustedSSH(text)
	if err != nil {
		return SSHKeyInfo{}, err
	}
	info := SSHKeyInfo{
		Fingerprint: sshsig.Fingerprint(a.Key),
		Type:        a.Key.Type(),
		Comment:     a.Comment,
		Principals:  a.Principals,
		Namespaces:  a.Namespaces,
	}
	if !a.ValidAfter.IsZero() {
		t := a.ValidAfter
		info.ValidAfter = &t
	}
	if !a.ValidBefore.IsZero() {
		t := a.ValidBefore
		info.ValidBefore = &t
	}
	return info, nil
}

// parseTrustedSSH reads a trusted SSH key in one of three forms: a bare
// key line ("ssh-ed25519 AAAA... comment"), a key line with allowed_signers
// options before it ("namespaces=\"git\",valid-before=\"20270101\"
// ssh-ed25519 AAAA..."), or a whole allowed_signers line with its
// principals first ("alice@example.com [options] ssh-ed25519 AAAA...").
// It refuses what could never count here.
func parseTrustedSSH(text string) (sshsig.AllowedSigner, error) {
	text = strings.TrimSpace(text)
	if strings.HasPrefix(text, "-----BEGIN PGP") {
		return sshsig.AllowedSigner{}, errors.New("this is a PGP key, not an SSH key: configure it as a PGP public key")
	}
	if strings.ContainsAny(text, "\r\n") && !strings.Contains(text, "PRIVATE KEY") {
		return sshsig.AllowedSigner{}, errors.New("SSH key must be one line: give one key per entry")
	}
	fields := strings.Fields(text)
	var a sshsig.AllowedSigner
	var err error
	switch {
	case len(fields) == 0 || strings.Contains(text, "PRIVATE KEY") || looksLikeSSHKeyType(fields[0]):
		var k ssh.PublicKey
		if k, err = sshsig.ParsePublicKey(text); err != nil {
			return sshsig.AllowedSigner{}, err
		}
		return sshsig.AllowedSigner{Key: k, Comment: strings.Join(fields[2:], " ")}, nil
	case looksLikeOptions(fields[0]):
		if a, err = sshsig.ParseKeyWithOptions(text); err != nil {
			return sshsig.AllowedSigner{}, fmt.Errorf(`SSH key read as options before a key (namespaces="git" ssh-ed25519 AAAA...): %w`, err)
		}
	default:
		if a, err = sshsig.ParseAllowedSigner(text); err != nil {
			return sshsig.AllowedSigner{}, fmt.Errorf(`SSH key read as an allowed_signers line (alice@example.com [options] ssh-ed25519 AAAA...; a bare key line starts with its type): %w`, err)
		}
	}
	if a.CertAuthority {
		return sshsig.AllowedSigner{}, errors.New("cert-authority lines are not supported: certificates do not count here, trust each signer's own key")
	}
	if (sshsig.AllowedSigner{Namespaces: a.Namespaces}).CheckOptions(sshNamespace, time.Now()) != nil {
		return sshsig.AllowedSigner{}, fmt.Errorf("the namespaces option %q does not allow namespace %q: this key's commit and note signatures would never count", strings.Join(a.Namespaces, ","), sshNamespace)
	}
	return a, nil
}

// looksLikeOptions tells an options field from principals: every option
// is "cert-authority" or name="value".
func looksLikeOptions(w string) bool {
	l := strings.ToLower(w)
	return strings.HasPrefix(l, "cert-authority") || strings.HasPrefix(l, "namespaces=") ||
		strings.HasPrefix(l, "valid-after=") || strings.HasPrefix(l, "valid-before=")
}

func looksLikeSSHKeyType(w string) bool {
	return strings.HasPrefix(w, "ssh-") || strings.HasPrefix(w, "ecdsa-") || strings.HasPrefix(w, "sk-")
}

// sshFingerprint matches a SHA256 fingerprint as ssh-keygen prints it.
var sshFingerprint = regexp.MustCompile(`^SHA256:[A-Za-z0-9+/]{43}$`)

// addSSH adds one trusted SSH key to the set, grouped by fingerprint like
// PGP keys by primary fingerprint. A revoked entry may be a bare
// fingerprint: it only marks that key revoked.
func (s *trustedSet) addSSH(k TrustedKey) error {
	text := strings.TrimSpace(k.SSH)
	if k.Revoked && sshFingerprint.MatchString(text) {
		s.revoke(text)
		return nil
	}
	a, err := parseTrustedSSH(text)
	if err != nil {
		return err
	}
	fp := sshsig.Fingerprint(a.Key)
	if k.Revoked {
		s.revoke(fp)
		return nil
	}
	ts := s.signers[fp]
	if ts == nil {
		ts = &trustedSigner{fingerprint: fp, ssh: &sshTrust{key: a.Key}}
		s.signers[fp] = ts
	}
	ts.names = append(ts.names, k.Name)
	ts.ssh.copies = append(ts.ssh.copies, a)
	ts.holdBy(k)
	return nil
}

// revoke marks a key revoked by fingerprint (PGP primary or SSH SHA256).
func (s *trustedSet) revoke(fp string) {
	if s.revoked == nil {
		s.revoked = make(map[string]bool)
	}
	s.revoked[fp] = true
}

// sshSigner finds, without cryptography (a parse and a hash of the
// embedded public key), the trusted signer an SSH signature names, nil
// when it is nobody trusted, with the fingerprint of the key it names; an
// error when the signature cannot be read.
func (s *trustedSet) sshSigner(blob []byte) (*trustedSigner, *sshsig.Signature, string, error) {
	sig, err := sshsig.Parse(blob)
	if err != nil {
		return nil, nil, "", err
	}
	fp := sshsig.Fingerprint(sig.PublicKey)
	ts := s.signers[fp]
	if ts == nil || ts.ssh == nil {
		return nil, sig, fp, nil
	}
	return ts, sig, fp, nil
}

// sshDamage sums up unreadable SSH signatures per source: one line each,
// whatever their number, naming the first reason.
type sshDamage []struct {
	source string
	n      int
	first  error
}

func (d *sshDamage) add(source string, err error) {
	for i := range *d {
		if (*d)[i].source == source {
			(*d)[i].n++
			return
		}
	}
	*d = append(*d, struct {
		source string
		n      int
		first  error
	}{source, 1, err})
}

func (d sshDamage) lines() []string {
	var out []string
	for _, e := range d {
		if e.n == 1 {
			out = append(out, fmt.Sprintf("%s SSH signature does not count: %v", e.source, e.first))
			continue
		}
		out = append(out, fmt.Sprintf("%d %s SSH signatures do not count: they cannot be read (the first: %v)", e.n, e.source, e.first))
	}
	return out
}

// verifySSH checks an SSH signature naming this trusted key. The options
// of every stored copy are looked at first (no cryptography); the
// signature itself is verified once, whatever the number of copies.
func (ts *trustedSigner) verifySSH(sig *sshsig.Signature, payload []byte, signTime time.Time) (bool, string) {
	var optErr error
	allowed := false
	for _, a := range ts.ssh.copies {
		if err := a.CheckOptions(sshNamespace, signTime); err != nil {
			optErr = err
			continue
		}
		allowed = true
		break
	}
	if !allowed {
		return false, optErr.Error()
	}
	if err := sshsig.Verify(sig, payload, sshNamespace, ts.ssh.key); err != nil {
		return false, err.Error()
	}
	return true, ""
}

// sshIdentities are what the trusted copies of an SSH key say about its
// holder: allowed_signers principals and key comments.
func (ts *trustedSigner) sshIdentities() []string {
	var out []string
	if ts.ssh == nil {
		return nil
	}
	for _, a := range ts.ssh.copies {
		for _, p := range a.Principals {
			if !slices.Contains(out, p) {
				out = append(out, p)
			}
		}
		if a.Comment != "" && !slices.Contains(out, a.Comment) {
			out = append(out, a.Comment)
		}
	}
	return out
}

// kind is KindSSH or KindPGP.
func (ts *trustedSigner) kind() string {
	if ts.ssh != nil {
		return KindSSH
	}
	return KindPGP
}

// dearmorCommitSignature decodes a commit's gpgsig header: an SSH
// signature (gpg.format=ssh) or an OpenPGP one.
func dearmorCommitSignature(armored string) ([]byte, error) {
	if sshsig.IsSSHSIG([]byte(armored)) {
		blob, err := sshsig.Unarmor([]byte(armored))
		if err != nil {
			return nil, fmt.Errorf("damaged SSH signature: %w", err)
		}
		return blob, nil
	}
	return dearmorSignature(armored)
}

// committerTime reads the committer time of a raw commit object: what git
// checks allowed_signers validity options against. It is zero when the
// header cannot be read; then the time of the check is used, as git does
// when it has no time to give ssh-keygen.
func committerTime(raw []byte) time.Time {
	for line := range bytes.SplitSeq(raw, []byte("\n")) {
		if len(line) == 0 {
			break // end of the header
		}
		rest, ok := bytes.CutPrefix(line, []byte("committer "))
		if !ok {
			continue
		}
		// "Name <email> 1700000000 +0000"
		gt := bytes.LastIndexByte(rest, '>')
		if gt < 0 {
			return time.Time{}
		}
		fields := strings.Fields(string(rest[gt+1:]))
		if len(fields) == 0 {
			return time.Time{}
		}
		sec, err := strconv.ParseInt(fields[0], 10, 64)
		if err != nil {
			return time.Time{}
		}
		return time.Unix(sec, 0)
	}
	return time.Time{}
}

// sshTrust is a trusted SSH key and its stored copies (a bare key line
// or an allowed_signers line each), in trustedSigner.ssh.
type sshTrust struct {
	key    ssh.PublicKey
	copies []sshsig.AllowedSigner
}
