package sshsig

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"
)

// AllowedSigner is one line of git's gpg.ssh.allowedSignersFile, in the
// format of ssh-keygen(1), ALLOWED SIGNERS:
//
//	principals [options] keytype base64-key [comment]
//
// Options honored: namespaces="pattern,...", valid-after="time",
// valid-before="time" (YYYYMMDD[HHMM[SS]], optionally ending in Z or UTC)
// and cert-authority, which is parsed but refused by Check: certificates
// are not supported. Times are always read as UTC: ssh-keygen reads a time
// without Z in the local time zone, which would make the verdict depend on
// the machine's settings (two Vault nodes could disagree); write the Z.
type AllowedSigner struct {
	// Principals are the identity patterns of the line ("*" and "?"
	// wildcards, "!" negation), as ssh-keygen matches `-I`.
	Principals []string
	// Namespaces are the namespace patterns the key may sign for; nil
	// means any.
	Namespaces []string
	// ValidAfter and ValidBefore bound the signing time (for git, the
	// committer time); zero means unbounded.
	ValidAfter, ValidBefore time.Time
	// CertAuthority marks a line that trusts a certificate authority.
	CertAuthority bool
	Key           ssh.PublicKey
	// Comment is what follows the key on the line.
	Comment string
	// Line is the line number in the file, from 1; 0 for a single line.
	Line int
}

// ParseAllowedSigners parses an allowed_signers file: one signer a line,
// blank lines and lines starting with # skipped. Errors name the line.
func ParseAllowedSigners(data []byte) ([]AllowedSigner, error) {
	var out []AllowedSigner
	for i, line := range bytes.Split(data, []byte("\n")) {
		text := strings.TrimLeft(string(line), " \t\r")
		if text == "" || text[0] == '#' {
			continue
		}
		a, err := ParseAllowedSigner(text)
		if err != nil {
			return nil, fmt.Errorf("allowed signers line %d: %w", i+1, err)
		}
		a.Line = i + 1
		out = append(out, a)
	}
	return out, nil
}

// ParseAllowedSigner parses one allowed_signers line.
func ParseAllowedSigner(line string) (AllowedSigner, error) {
	line = strings.Trim(line, " \t\r\n")
	if line == "" || line[0] == '#' {
		return AllowedSigner{}, errors.New("the line is empty or a comment")
	}
	principals, rest, err := firstToken(line)
	if err != nil {
		return AllowedSigner{}, err
	}
	if principals == "" {
		return AllowedSigner{}, errors.New("no principals: the line is \"principals [options] keytype base64-key\"")
	}
	return parseOptionsAndKey(AllowedSigner{Principals: strings.Split(principals, ",")}, rest)
}

// ParseKeyWithOptions parses an authorized_keys-style line with the
// options of an allowed_signers line and no principals: "[options]
// keytype base64-key [comment]". Principals of the result are nil.
func ParseKeyWithOptions(line string) (AllowedSigner, error) {
	line = strings.Trim(line, " \t\r\n")
	if strings.ContainsAny(line, "\r\n") {
		return AllowedSigner{}, errors.New("SSH public key must be one line: give one key per entry")
	}
	return parseOptionsAndKey(AllowedSigner{}, line)
}

// parseOptionsAndKey reads "[options] keytype base64-key [comment]" into a.
func parseOptionsAndKey(a AllowedSigner, rest string) (AllowedSigner, error) {
	var err error
	word, _ := cutSpace(rest)
	if !looksLikeKeyType(word) {
		opts, after, err := splitOptions(rest)
		if err != nil {
			return AllowedSigner{}, err
		}
		if err := a.parseOptions(opts); err != nil {
			return AllowedSigner{}, fmt.Errorf("bad options: %w", err)
		}
		rest = after
	}
	if rest == "" {
		return AllowedSigner{}, errors.New("missing key after the principals and options")
	}
	a.Key, a.Comment, err = parseKeyLine(rest)
	if err != nil {
		return AllowedSigner{}, err
	}
	return a, nil
}

// firstToken splits the principals off as ssh-keygen's strdelimw does:
// up to white space, with a quoted part kept whole (quotes dropped).
func firstToken(line string) (tok, rest string, err error) {
	i := strings.IndexAny(line, " \t\r\n\"")
	if i < 0 {
		return "", "", errors.New("missing key after the principals")
	}
	if line[i] == '"' {
		j := strings.IndexByte(line[i+1:], '"')
		if j < 0 {
			return "", "", errors.New("principals have an unterminated quote")
		}
		tok = line[:i] + line[i+1:i+1+j]
		rest = line[i+2+j:]
	} else {
		tok, rest = line[:i], line[i+1:]
	}
	return tok, strings.TrimLeft(rest, " \t\r\n"), nil
}

// looksLikeKeyType tells a key type from options the way ssh-keygen does
// (by trying to read a key): every type name it knows has one of these
// shapes, and no option does.
func looksLikeKeyType(w string) bool {
	return strings.HasPrefix(w, "ssh-") || strings.HasPrefix(w, "ecdsa-") || strings.HasPrefix(w, "sk-") ||
		strings.HasPrefix(w, "rsa-") || strings.HasPrefix(w, "webauthn-") || strings.Contains(w, "@openssh.com")
}

// splitOptions splits the options field off, up to white space outside
// quotes (sshkey_advance_past_options).
func splitOptions(s string) (opts, rest string, err error) {
	quoted := false
	i := 0
	for ; i < len(s) && (quoted || (s[i] != ' ' && s[i] != '\t')); i++ {
		switch {
		case s[i] == '\\' && i+1 < len(s) && s[i+1] == '"':
			i++
		case s[i] == '"':
			quoted = !quoted
		}
	}
	if quoted {
		return "", "", errors.New("options have an unterminated quote")
	}
	return s[:i], strings.TrimLeft(s[i:], " \t"), nil
}

// parseOptions reads the options field (sshsigopt_parse): option names are
// case-insensitive, each may appear once, anything else is an error.
func (a *AllowedSigner) parseOptions(opts string) error {
	seen := map[string]bool{}
	for opts != "" {
		var name string
		lower := strings.ToLower(opts)
		switch {
		case strings.HasPrefix(lower, "cert-authority"):
			name, opts = "cert-authority", opts[len("cert-authority"):]
			a.CertAuthority = true
		case strings.HasPrefix(lower, "namespaces="), strings.HasPrefix(lower, "valid-after="), strings.HasPrefix(lower, "valid-before="):
			eq := strings.IndexByte(opts, '=')
			name = lower[:eq]
			if seen[name] {
				return fmt.Errorf("multiple %q clauses", name)
			}
			val, after, err := dequote(opts[eq+1:])
			if err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
			opts = after
			switch name {
			case "namespaces":
				a.Namespaces = strings.Split(val, ",")
			case "valid-after", "valid-before":
				t, err := parseAbsoluteTime(val)
				if err != nil || t.Unix() == 0 {
					return fmt.Errorf("invalid %q time %q: want YYYYMMDD[HHMM[SS]][Z]", name, val)
				}
				if name == "valid-after" {
					a.ValidAfter = t
				} else {
					a.ValidBefore = t
				}
			}
		default:
			return fmt.Errorf("unknown option at %q (known: namespaces, valid-after, valid-before, cert-authority)", abbreviate(opts))
		}
		seen[name] = true
		if opts == "" {
			break
		}
		if opts[0] != ',' {
			return fmt.Errorf("unknown option at %q", abbreviate(opts))
		}
		opts = opts[1:]
		if opts == "" {
			return errors.New("unexpected end of options after a comma")
		}
	}
	if !a.ValidAfter.IsZero() && !a.ValidBefore.IsZero() && !a.ValidBefore.After(a.ValidAfter) {
		return errors.New(`"valid-before" time is before "valid-after"`)
	}
	return nil
}

// dequote reads a double-quoted value (opt_dequote), \" standing for ".
func dequote(s string) (val, rest string, err error) {
	if s == "" || s[0] != '"' {
		return "", "", errors.New("missing start quote")
	}
	var b strings.Builder
	for i := 1; i < len(s); i++ {
		switch {
		case s[i] == '\\' && i+1 < len(s) && s[i+1] == '"':
			b.WriteByte('"')
			i++
		case s[i] == '"':
			return b.String(), s[i+1:], nil
		default:
			b.WriteByte(s[i])
		}
	}
	return "", "", errors.New("missing end quote")
}

// parseAbsoluteTime reads YYYYMMDD, YYYYMMDDHHMM or YYYYMMDDHHMMSS,
// optionally followed by "Z" or "UTC", always in UTC (see AllowedSigner).
func parseAbsoluteTime(s string) (time.Time, error) {
	upper := strings.ToUpper(s)
	switch {
	case len(s) > 1 && strings.HasSuffix(upper, "Z"):
		s = s[:len(s)-1]
	case len(s) > 3 && strings.HasSuffix(upper, "UTC"):
		s = s[:len(s)-3]
	}
	var layout string
	switch len(s) {
	case 8:
		layout = "20060102"
	case 12:
		layout = "200601021504"
	case 14:
		layout = "20060102150405"
	default:
		return time.Time{}, errors.New("bad length")
	}
	return time.Parse(layout, s)
}

// MatchesPrincipal reports whether principal matches the line's principal
// patterns, as `ssh-keygen -Y verify -I principal` decides.
func (a AllowedSigner) MatchesPrincipal(principal string) bool {
	return matchPatternList(principal, a.Principals)
}

// Check verifies sig over message for namespace with this line's key and
// options, signTime being the time the options are checked against (for
// git, the committer time, as git passes -Overify-time). The options are
// checked first: they cost no cryptography.
func (a AllowedSigner) Check(sig *Signature, message []byte, namespace string, signTime time.Time) error {
	if a.CertAuthority {
		return errors.New("the line trusts a certificate authority (cert-authority): certificates are not supported, list the signer's own key")
	}
	if a.Key == nil || sig == nil || sig.PublicKey == nil {
		return errors.New("no key or no signature")
	}
	if !bytes.Equal(a.Key.Marshal(), sig.PublicKey.Marshal()) {
		return fmt.Errorf("the signature is by key %s, not by this line's key %s", Fingerprint(sig.PublicKey), Fingerprint(a.Key))
	}
	if err := a.CheckOptions(namespace, signTime); err != nil {
		return err
	}
	return Verify(sig, message, namespace, a.Key)
}

// CheckOptions checks the namespaces and validity options for a signature
// in namespace made at signTime (to the second, as ssh-keygen compares).
func (a AllowedSigner) CheckOptions(namespace string, signTime time.Time) error {
	if a.Namespaces != nil && !matchPatternList(namespace, a.Namespaces) {
		return fmt.Errorf("the key is not allowed to sign in namespace %q (namespaces=%q)", namespace, strings.Join(a.Namespaces, ","))
	}
	t := signTime.Unix()
	if !a.ValidAfter.IsZero() && t < a.ValidAfter.Unix() {
		return fmt.Errorf("the key is not yet valid: signed at %s, valid after %s", signTime.UTC().Format(time.RFC3339), a.ValidAfter.UTC().Format(time.RFC3339))
	}
	if !a.ValidBefore.IsZero() && t > a.ValidBefore.Unix() {
		return fmt.Errorf("the key has expired: signed at %s, valid before %s", signTime.UTC().Format(time.RFC3339), a.ValidBefore.UTC().Format(time.RFC3339))
	}
	return nil
}

// matchPatternList is OpenSSH's match_pattern_list: true when s matches
// some pattern and no negated ("!") one.
func matchPatternList(s string, patterns []string) bool {
	positive := false
	for _, p := range patterns {
		negated := strings.HasPrefix(p, "!")
		if negated {
			p = p[1:]
		}
		if matchPattern(s, p) {
			if negated {
				return false
			}
			positive = true
		}
	}
	return positive
}

// matchPattern matches s against p with "*" (any run) and "?" (any one
// byte), nothing else special.
func matchPattern(s, p string) bool {
	star, mark := -1, 0
	i, j := 0, 0
	for i < len(s) {
		switch {
		case j < len(p) && (p[j] == '?' || p[j] == s[i]):
			i++
			j++
		case j < len(p) && p[j] == '*':
			star, mark = j, i
			j++
		case star >= 0:
			mark++
			i, j = mark, star+1
		default:
			return false
		}
	}
	for j < len(p) && p[j] == '*' {
		j++
	}
	return j == len(p)
}
