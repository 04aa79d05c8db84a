package forge

import (
	"fmt"
	"net/url"
	"regexp"
	"strings"
	"time"
	"unicode"

	"github.com/flant/flant_gitops/backend/events"
)

// DefaultContextTemplate names a mount's statuses "flant_gitops/<first 8
// characters of the mount id>". The mount id is stored with the mount, so
// the context stays the same across restarts, upgrades and leader changes,
// and two mounts watching one repository never overwrite each other's
// status. It must never change between versions: GitLab keeps a status of
// a context forever, so a changed default would leave an orphan on every
// commit.
const DefaultContextTemplate = "flant_gitops/{{mount}}"

// ShortMount is what {{mount}} stands for: the mount id's first 8
// characters.
func ShortMount(mountID string) string {
	if len(mountID) > 8 {
		return mountID[:8]
	}
	return mountID
}

// Vars are the values a template may use.
type Vars struct {
	Mount      string // the stored mount id (full); {{mount}} is its ShortMount
	Branch     string
	Repository string
	Run        string
	Commit     string
}

var placeholder = regexp.MustCompile(`\{\{\s*([a-z_]+)\s*\}\}`)

var contextVars = map[string]bool{"mount": true, "mount_id": true, "branch": true, "repository": true}
var targetVars = map[string]bool{"mount": true, "mount_id": true, "branch": true, "repository": true, "run": true, "commit": true}

func (v Vars) value(name string) string {
	switch name {
	case "mount":
		return ShortMount(v.Mount)
	case "mount_id":
		return v.Mount
	case "branch":
		return v.Branch
	case "repository":
		return v.Repository
	case "run":
		return v.Run
	case "commit":
		return v.Commit
	}
	return ""
}

func render(tmpl string, v Vars, escape bool) string {
	return placeholder.ReplaceAllStringFunc(tmpl, func(m string) string {
		val := v.value(placeholder.FindStringSubmatch(m)[1])
		if escape {
			return url.PathEscape(val)
		}
		return val
	})
}

func unknownPlaceholders(tmpl string, allowed map[string]bool) []string {
	var bad []string
	for _, m := range placeholder.FindAllStringSubmatch(tmpl, -1) {
		if !allowed[m[1]] {
			bad = append(bad, m[0])
		}
	}
	if strings.Count(tmpl, "{{") != len(placeholder.FindAllString(tmpl, -1)) {
		bad = append(bad, "an unclosed or malformed {{...}}")
	}
	return bad
}

var sampleVars = Vars{Mount: "0123456789abcdef0123456789abcdef", Branch: "main", Repository: "group/project",
	Run: "run-20260101T000000Z-0001", Commit: strings.Repeat("a", 40)}

// CheckContextTemplate validates a context template for p: only {{mount}},
// {{mount_id}}, {{branch}} and {{repository}}, not empty, within p's limit.
func CheckContextTemplate(p Provider, tmpl string) error {
	if bad := unknownPlaceholders(tmpl, contextVars); len(bad) > 0 {
		return fmt.Errorf("context_template %q: unknown %s; use {{mount}}, {{mount_id}}, {{branch}} or {{repository}}", tmpl, strings.Join(bad, ", "))
	}
	out := render(tmpl, sampleVars, false)
	if strings.TrimSpace(out) == "" {
		return fmt.Errorf("context_template is empty: leave it unset for the default %q", DefaultContextTemplate)
	}
	if strings.IndexFunc(out, unicode.IsControl) >= 0 {
		return fmt.Errorf("context_template must be one line without control characters")
	}
	if n := len([]rune(out)); n > LimitsOf(p).Context-64 {
		return fmt.Errorf("context_template gives contexts of about %d characters; %s allows %d and branch names vary: keep it under %d", n, p, LimitsOf(p).Context, LimitsOf(p).Context-64)
	}
	return nil
}

// CheckTargetURLTemplate validates a target URL template: an absolute
// http(s) URL using only known placeholders.
func CheckTargetURLTemplate(tmpl string) error {
	if bad := unknownPlaceholders(tmpl, targetVars); len(bad) > 0 {
		return fmt.Errorf("target_url_template %q: unknown %s; use {{run}}, {{commit}}, {{mount}}, {{mount_id}}, {{branch}} or {{repository}}", tmpl, strings.Join(bad, ", "))
	}
	u, err := url.Parse(render(tmpl, sampleVars, true))
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return fmt.Errorf("target_url_template %q must give an absolute https:// URL, e.g. https://dashboard.example.com/runs/{{run}}", tmpl)
	}
	if u.User != nil {
		return fmt.Errorf("target_url_template must not carry credentials: every pusher who sees the status sees the link")
	}
	return nil
}

// Context renders the status context.
func Context(tmpl string, v Vars) string {
	if tmpl == "" {
		tmpl = DefaultContextTemplate
	}
	return render(tmpl, v, false)
}

// TargetURL renders the link of a status; "" when there is no template, or
// it needs the run and the status has none (a refusal).
func TargetURL(tmpl string, v Vars) string {
	if tmpl == "" {
		return ""
	}
	for _, m := range placeholder.FindAllStringSubmatch(tmpl, -1) {
		if v.value(m[1]) == "" {
			return ""
		}
	}
	return render(tmpl, v, true)
}

// Describe maps an event to the status it sets; false for events that set
// none. The description uses only the event's state, run id, attempt,
// duration, signers, missing signatures and reason sentence; the free
// texts among them are scrubbed of anything token-like (and of each string
// in secrets), and the whole is cut to p's limit.
func Describe(p Provider, e events.Event, secrets ...string) (State, string, bool) {
	if e.Commit == "" {
		return "", "", false
	}
	var state State
	var desc string
	switch e.Kind {
	case events.RunStarted:
		state, desc = Pending, "running "+e.Run+attempt(e.Attempt)
	case events.RunFinished:
		switch e.Outcome {
		case events.RunSucceeded:
			state, desc = Success, fmt.Sprintf("succeeded: run %s in %s", e.Run, e.Duration.Round(time.Second))
		case events.RunFailed:
			state, desc = Failure, "failed: run "+e.Run
			if e.Reason != "" {
				desc += ": " + Scrub(e.Reason, secrets...)
			}
		case events.RunCanceled:
			state, desc = Canceled, "canceled: run "+e.Run+" was canceled by an operator"
		case events.RunInterrupted:
			// The commit runs again at once: it stays pending.
			state, desc = Pending, "interrupted: run "+e.Run+"; running again"
		default:
			return "", "", false
		}
	case events.CommitRefused:
		state = Failure
		// What is missing first: it is what the pusher must act on, and
		// it survives the cut to GitHub's 140 characters.
		var parts []string
		if len(e.Missing) > 0 {
			parts = append(parts, "missing "+Scrub(strings.Join(e.Missing, "; "), secrets...))
			if len(e.Signers) > 0 {
				labels := make([]string, len(e.Signers))
				for i, l := range e.Signers {
					labels[i] = shortFingerprint.ReplaceAllString(l, "$1")
				}
				parts = append(parts, "signed by "+Scrub(strings.Join(labels, ", "), secrets...))
			} else {
				parts = append(parts, "no trusted signature")
			}
		} else if e.Reason != "" {
			parts = append(parts, Scrub(e.Reason, secrets...))
		}
		desc = "refused: " + strings.Join(parts, "; ")
	default:
		return "", "", false
	}
	// The free texts are scrubbed where they are added; the rest are the
	// plugin's own words and ids.
	return state, Cut(desc, LimitsOf(p).Description), true
}

func attempt(n int) string {
	if n > 1 {
		return fmt.Sprintf(" (attempt %d)", n)
	}
	return ""
}

// tokenLike matches words that look like credentials: known token
// prefixes (Vault, GitHub, GitLab, Slack-style), JWTs, "Bearer x",
// key=value pairs named like secrets, and long mixed letter-digit words that
// are not a plain hex id (commit SHAs and key fingerprints stay readable).
var (
	knownToken = regexp.MustCompile(`(?i)\b(?:hv[sbr]\.[A-Za-z0-9_\-]{8,}|[sb]\.[A-Za-z0-9]{20,}|gh[pousr]_[A-Za-z0-9]{8,}|github_pat_[A-Za-z0-9_]{8,}|gl[a-z]{1,6}-[A-Za-z0-9_\-]{8,}|xox[abprs]-[A-Za-z0-9\-]{8,}|eyJ[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]+\.?[A-Za-z0-9_\-]*)`)
	bearer     = regexp.MustCompile(`(?i)\b(bearer|token|basic)\s+([A-Za-z0-9_\-\.=+/]{8,})`)
	secretKV   = regexp.MustCompile(`(?i)\b([a-z_]*(?:token|secret|password|passwd|key))\s*[=:]\s*(\S+)`)
	userinfo   = regexp.MustCompile(`(?i)\b([a-z][a-z0-9+.\-]*://)[^/\s@]+@`)
	longWord   = regexp.MustCompile(`[A-Za-z0-9_\-+=.]{32,}`)
	hexOnly    = regexp.MustCompile(`^[0-9a-fA-F]+$`)
)

const redacted = "[redacted]"

// shortFingerprint keeps a signer's long key id (the last 16 hex digits of
// a fingerprint): enough to tell keys apart, short enough for a status.
var shortFingerprint = regexp.MustCompile(`\b[0-9A-Fa-f]{24}([0-9A-Fa-f]{16})\b`)

// generated tells a value that looks machine-made (a digit, or upper and
// lower case mixed) from a word of a sentence.
func generated(v string) bool {
	return strings.ContainsAny(v, "0123456789") ||
		strings.ContainsFunc(v, unicode.IsUpper) && strings.ContainsFunc(v, unicode.IsLower)
}

// Scrub removes what looks like a credential from s, and every non-empty
// string in secrets.
func Scrub(s string, secrets ...string) string {
	for _, sec := range secrets {
		if len(sec) >= 4 {
			s = strings.ReplaceAll(s, sec, redacted)
		}
	}
	s = userinfo.ReplaceAllString(s, "${1}")
	s = knownToken.ReplaceAllString(s, redacted)
	// "token expired" or "trusted_pgp_public_key: the key ..." are
	// sentences; only a value that looks generated is taken for a secret.
	s = bearer.ReplaceAllStringFunc(s, func(m string) string {
		sub := bearer.FindStringSubmatch(m)
		if !generated(sub[2]) {
			return m
		}
		return sub[1] + " " + redacted
	})
	s = secretKV.ReplaceAllStringFunc(s, func(m string) string {
		sub := secretKV.FindStringSubmatch(m)
		name := strings.ToLower(sub[1])
		always := strings.Contains(name, "pass") || strings.Contains(name, "secret")
		if !always && !generated(sub[2]) && !strings.Contains(sub[0], "=") {
			return m // "…_key: the key is revoked"
		}
		return sub[1] + "=" + redacted
	})
	s = longWord.ReplaceAllStringFunc(s, func(w string) string {
		core := strings.Trim(w, ".-_=+")
		if hexOnly.MatchString(core) || !strings.ContainsAny(core, "0123456789") || !strings.ContainsFunc(core, unicode.IsLetter) {
			return w
		}
		return redacted
	})
	// One line: a status is not a place for a log excerpt.
	return strings.Join(strings.FieldsFunc(s, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }), " ")
}

// Cut shortens s to at most n characters, ending in "…" when cut.
func Cut(s string, n int) string {
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return string(r[:n-1]) + "…"
}
