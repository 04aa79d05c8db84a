// Package receiver reads the push notifications (webhook deliveries) that
// forges send to a flant_gitops receiver: which provider sent what event for
// which refs. A delivery is only ever a reason to poll: the poll fetches the
// branch and verifies signatures as always, so nothing in a payload is
// trusted beyond "something may have changed".
//
// Vault hands an external plugin the request's parsed JSON (or form fields)
// and the headers the mount passes through, never the raw body, so an HMAC
// over the body (GitHub's X-Hub-Signature-256, Gitea's X-Gitea-Signature,
// Bitbucket's X-Hub-Signature) cannot be checked here. A receiver is
// authenticated instead by an unguessable id in its URL and, where the forge
// can send one, a token header compared in constant time.
package receiver

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/flant/flant_gitops/gitwatch"
)

// Provider names a forge's delivery format.
type Provider string

// The providers a receiver can be made for.
const (
	GitHub          Provider = "github"
	GitLab          Provider = "gitlab"
	Gitea           Provider = "gitea" // also Forgejo and Gogs
	Bitbucket       Provider = "bitbucket"
	BitbucketServer Provider = "bitbucket_server" // Bitbucket Data Center
	Generic         Provider = "generic"
)

// Providers lists every provider, in the order help texts name them.
func Providers() []Provider {
	return []Provider{GitHub, GitLab, Gitea, Bitbucket, BitbucketServer, Generic}
}

// ParseProvider checks a provider name.
func ParseProvider(s string) (Provider, error) {
	p := Provider(strings.ToLower(strings.TrimSpace(s)))
	if slices.Contains(Providers(), p) {
		return p, nil
	}
	names := make([]string, 0, len(Providers()))
	for _, q := range Providers() {
		names = append(names, string(q))
	}
	return "", fmt.Errorf("provider %q is not supported: use one of %s", s, strings.Join(names, ", "))
}

// TokenHeader is the header that carries the receiver's token, or "" when
// the forge sends none this plugin can check (its body signature needs the
// raw body, which Vault does not hand to plugins).
func (p Provider) TokenHeader() string {
	switch p {
	case GitLab:
		return "X-Gitlab-Token"
	case Generic:
		return "X-Flant-Gitops-Token"
	}
	return ""
}

// eventHeaders are the headers naming the event, by provider; the first one
// present counts.
func (p Provider) eventHeaders() []string {
	switch p {
	case GitHub:
		return []string{"X-GitHub-Event"}
	case GitLab:
		return []string{"X-Gitlab-Event"}
	case Gitea:
		return []string{"X-Gitea-Event", "X-Forgejo-Event", "X-Gogs-Event"}
	case Bitbucket, BitbucketServer:
		return []string{"X-Event-Key"}
	}
	return nil
}

func (p Provider) deliveryHeaders() []string {
	switch p {
	case GitHub:
		return []string{"X-GitHub-Delivery"}
	case GitLab:
		return []string{"X-Gitlab-Event-UUID"}
	case Gitea:
		return []string{"X-Gitea-Delivery", "X-Forgejo-Delivery", "X-Gogs-Delivery"}
	case Bitbucket:
		return []string{"X-Request-UUID"}
	case BitbucketServer:
		return []string{"X-Request-Id"}
	}
	return nil
}

// DefaultEvents are the events a receiver acts on unless told otherwise:
// the forge's name for a push.
func (p Provider) DefaultEvents() []string {
	switch p {
	case GitLab:
		return []string{"Push Hook"}
	case Bitbucket:
		return []string{"repo:push"}
	case BitbucketServer:
		return []string{"repo:refs_changed"}
	}
	return []string{"push"}
}

// PassthroughHeaders are the headers the mount must pass through to the
// plugin (vault secrets tune -passthrough-request-headers=...) for every
// provider to work.
func PassthroughHeaders() []string {
	var out []string
	for _, p := range Providers() {
		out = append(out, p.eventHeaders()...)
		out = append(out, p.deliveryHeaders()...)
		if h := p.TokenHeader(); h != "" {
			out = append(out, h)
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// Change is one ref update a payload names.
type Change struct {
	Ref    string // refs/heads/main, refs/tags/v1
	Commit string // what the ref points at now; "" when deleted or not said
}

// Delivery is what a delivery says, read from its headers and payload.
type Delivery struct {
	Event   string // the forge's event name, "" when no header named it
	ID      string // the forge's delivery id, for the operator
	Ping    bool   // the forge's own test of the hook
	Changes []Change
	// AnyRef: the payload names no ref (a generic receiver called without
	// one), so it may concern any branch.
	AnyRef bool
}

// ErrPayload marks a payload that is not what the provider sends.
var ErrPayload = errors.New("malformed payload")

// Header returns the first value of a header, matched case-insensitively:
// Vault hands plugins the headers under the names the mount was tuned with.
func Header(headers map[string][]string, name string) string {
	for k, v := range headers {
		if strings.EqualFold(k, name) && len(v) > 0 {
			return v[0]
		}
	}
	return ""
}

func firstHeader(headers map[string][]string, names []string) string {
	for _, n := range names {
		if v := Header(headers, n); v != "" {
			return v
		}
	}
	return ""
}

// Identify reads the event and delivery id from a delivery's headers, for
// the operator, before anything of the payload is read.
func Identify(p Provider, headers map[string][]string) (event, id string) {
	if p == Generic {
		return "push", ""
	}
	return firstHeader(headers, p.eventHeaders()), firstHeader(headers, p.deliveryHeaders())
}

// Parse reads a delivery. data is the request's parsed body as Vault hands
// it to the plugin: the JSON object, or for a form-encoded GitHub delivery
// the form field "payload" holding the JSON.
func Parse(p Provider, headers map[string][]string, data map[string]any) (Delivery, error) {
	var d Delivery
	d.Event, d.ID = Identify(p, headers)
	if raw, ok := data["payload"].(string); ok && p == GitHub {
		var inner map[string]any
		if err := json.Unmarshal([]byte(raw), &inner); err != nil {
			return d, fmt.Errorf("%w: the form field payload is not a JSON object: %v", ErrPayload, err)
		}
		data = inner
	}
	switch p {
	case GitHub:
		d.Ping = d.Event == "ping"
		if d.Event == "push" {
			c, err := refChange(data, "ref", "after")
			if err != nil {
				return d, err
			}
			if deleted, _ := data["deleted"].(bool); deleted {
				c.Commit = ""
			}
			d.Changes = []Change{c}
		}
	case GitLab:
		if d.Event == "Push Hook" || d.Event == "Tag Push Hook" {
			c, err := refChange(data, "ref", "after")
			if err != nil {
				return d, err
			}
			d.Changes = []Change{c}
		}
	case Gitea:
		if d.Event == "push" {
			c, err := refChange(data, "ref", "after")
			if err != nil {
				return d, err
			}
			d.Changes = []Change{c}
		}
	case Bitbucket:
		if d.Event == "repo:push" {
			changes, err := bitbucketCloudChanges(data)
			if err != nil {
				return d, err
			}
			d.Changes = changes
		}
	case BitbucketServer:
		d.Ping = d.Event == "diagnostics:ping"
		if d.Event == "repo:refs_changed" {
			changes, err := bitbucketServerChanges(data)
			if err != nil {
				return d, err
			}
			d.Changes = changes
		}
	case Generic:
		ref, _ := data["ref"].(string)
		after, _ := data["after"].(string)
		if ref == "" {
			d.AnyRef = true
		} else {
			d.Changes = []Change{{Ref: ref, Commit: commitOrEmpty(after)}}
		}
	}
	return d, nil
}

// NullCommit is how GitHub, GitLab and Gitea name "no commit" (a deleted ref).
const NullCommit = "0000000000000000000000000000000000000000"

func commitOrEmpty(s string) string {
	if s == NullCommit || !isHex(s) || (len(s) != 40 && len(s) != 64) {
		return ""
	}
	return strings.ToLower(s)
}

func isHex(s string) bool {
	_, err := hex.DecodeString(s)
	return err == nil && s != ""
}

func refChange(data map[string]any, refKey, afterKey string) (Change, error) {
	ref, ok := data[refKey].(string)
	if !ok || ref == "" {
		return Change{}, fmt.Errorf("%w: no %q string in the push payload", ErrPayload, refKey)
	}
	after, _ := data[afterKey].(string)
	return Change{Ref: ref, Commit: commitOrEmpty(after)}, nil
}

// bitbucketCloudChanges reads push.changes[].new of a repo:push payload.
func bitbucketCloudChanges(data map[string]any) ([]Change, error) {
	push, _ := data["push"].(map[string]any)
	list, ok := push["changes"].([]any)
	if !ok {
		return nil, fmt.Errorf("%w: no push.changes list in the repo:push payload", ErrPayload)
	}
	var out []Change
	for _, item := range list {
		ch, _ := item.(map[string]any)
		state, _ := ch["new"].(map[string]any)
		if state == nil {
			state, _ = ch["old"].(map[string]any) // a deleted branch or tag
			if state == nil {
				continue
			}
			state = map[string]any{"type": state["type"], "name": state["name"]}
		}
		name, _ := state["name"].(string)
		kind, _ := state["type"].(string)
		if name == "" {
			continue
		}
		c := Change{Ref: "refs/heads/" + name}
		switch kind {
		case "tag", "annotated_tag":
			c.Ref = "refs/tags/" + name
		case "branch", "named_branch":
		default:
			continue
		}
		if target, ok := state["target"].(map[string]any); ok {
			h, _ := target["hash"].(string)
			c.Commit = commitOrEmpty(h)
		}
		out = append(out, c)
	}
	return out, nil
}

// bitbucketServerChanges reads changes[] of a repo:refs_changed payload.
func bitbucketServerChanges(data map[string]any) ([]Change, error) {
	list, ok := data["changes"].([]any)
	if !ok {
		return nil, fmt.Errorf("%w: no changes list in the repo:refs_changed payload", ErrPayload)
	}
	var out []Change
	for _, item := range list {
		ch, _ := item.(map[string]any)
		ref, _ := ch["refId"].(string)
		if r, ok := ch["ref"].(map[string]any); ok && ref == "" {
			ref, _ = r["id"].(string)
		}
		if ref == "" {
			continue
		}
		to, _ := ch["toHash"].(string)
		if typ, _ := ch["type"].(string); typ == "DELETE" {
			to = ""
		}
		out = append(out, Change{Ref: ref, Commit: commitOrEmpty(to)})
	}
	return out, nil
}

// ForBranch says whether the delivery concerns the watched branch (a push to
// it, or to the signature refs, which may change what its HEAD carries)
// and, if so, which commit it names for it ("" when none). why explains a
// no.
func (d Delivery) ForBranch(branch string) (commit string, ok bool, why string) {
	if d.AnyRef {
		return "", true, ""
	}
	want := "refs/heads/" + branch
	var refs []string
	signatures := false
	for _, c := range d.Changes {
		if c.Ref == want {
			return c.Commit, true, ""
		}
		// A signer's note (flant_gitops-sign, trdl) may make a refused
		// HEAD runnable; the commit it names is a notes commit, not HEAD.
		signatures = signatures || c.Ref == gitwatch.NotesRef || c.Ref == gitwatch.SignatureTag
		refs = append(refs, c.Ref)
	}
	if signatures {
		return "", true, ""
	}
	if len(refs) == 0 {
		return "", false, "the payload names no ref"
	}
	return "", false, fmt.Sprintf("the push is to %s, not to the watched branch %s", strings.Join(refs, ", "), want)
}

// NewSecret makes a receiver id or token: 32 random bytes, hex.
func NewSecret() (string, error) {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("reading random bytes: %w", err)
	}
	return hex.EncodeToString(b[:]), nil
}

// Digest is what is stored of a receiver id or token: its SHA-256, hex.
// Both are 256 random bits, so the digest alone reveals nothing usable.
func Digest(secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(sum[:])
}

// SameSecret compares a presented secret with a stored digest in time
// independent of where they differ.
func SameSecret(presented, digest string) bool {
	a := sha256.Sum256([]byte(presented))
	b, err := hex.DecodeString(digest)
	if err != nil || len(b) != len(a) {
		b = make([]byte, len(a)) // compare anyway: the same work either way
		subtle.ConstantTimeCompare(a[:], b)
		return false
	}
	return subtle.ConstantTimeCompare(a[:], b) == 1
}

// WellFormedID says whether s can be a receiver id at all (64 hex digits).
func WellFormedID(s string) bool {
	return len(s) == 64 && isHex(s)
}

// SizeOver reports whether the parsed payload is larger than limit bytes of
// text, counting strings, keys and numbers; it stops as soon as it knows.
func SizeOver(v any, limit int) bool {
	n := 0
	var walk func(any) bool
	walk = func(v any) bool {
		switch x := v.(type) {
		case string:
			n += len(x) + 2
		case map[string]any:
			for k, e := range x {
				n += len(k) + 4
				if walk(e) {
					return true
				}
			}
		case []any:
			for _, e := range x {
				n++
				if walk(e) {
					return true
				}
			}
		default:
			n += 8
		}
		return n > limit
	}
	return walk(v)
}
