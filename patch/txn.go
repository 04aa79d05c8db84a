package patch

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/format/packfile"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/go-git/go-git/v5/plumbing/protocol/packp"
	"github.com/go-git/go-git/v5/plumbing/protocol/packp/capability"
	"github.com/go-git/go-git/v5/plumbing/storer"
	"github.com/go-git/go-git/v5/plumbing/transport"
	"github.com/go-git/go-git/v5/plumbing/transport/client"
	githttp "github.com/go-git/go-git/v5/plumbing/transport/http"

	"github.com/flant/flant_gitops/gitwatch"
)

// DefaultMaxAttempts bounds how often a transaction re-applies its commands on
// a branch that moved under it before it answers a ConflictError.
const DefaultMaxAttempts = 5

// Remote is the branch a Repo patches.
type Remote struct {
	URL    string
	Branch string
	Auth   gitwatch.Auth
}

// Repo is one patch target: a persistent on-disk mirror of the remote branch
// (fetched incrementally, never cloned per request) and the means to push to
// it. Patch is safe for concurrent use: requests for the branch queue while a
// push is in flight and then go out together (group commit, txn_group.go).
type Repo struct {
	remote Remote
	// target trailers close every commit's message: inside what the
	// signature covers, they name the repository and branch it is for.
	target []Trailer
	mirror *gitwatch.Mirror
	ep     *transport.Endpoint
	auth   transport.AuthMethod

	// Pool, when set, bounds how many groups of all repositories sharing it
	// work at once. Set it before the first Patch.
	Pool *Pool
	// Group bounds group commit; zero fields take DefaultGroupLimits. Set it
	// before the first Patch.
	Group GroupLimits

	// Budget, when set, bounds the bytes the requests of all repositories
	// sharing it hold. Set it before the first Patch.
	Budget *Budget

	// OnPush, when set, hears of each push of a group that the server
	// accepted. It runs on the branch's worker: it must return at once.
	// Set it before the first Patch.
	OnPush func(GroupPush)

	mu    sync.Mutex
	queue []*pending
	// heldBytes and heldBy count the bytes of the requests waiting or in
	// flight, in all and by caller; heldMu guards them (taken after mu when
	// both are).
	heldMu    sync.Mutex
	heldBytes int64
	heldBy    map[string]int64
	running   bool          // a worker goroutine owns the mirror
	idle      chan struct{} // closed when that worker exits
	closed    bool
	lastGroup time.Duration // how long the last group took, for the retry hint
}

// OpenRepo opens (or creates) the mirror of remote in dir. A mirror that
// holds nothing yet fetches only the branch tip: a patch reads the tip's tree,
// not its history.
func OpenRepo(ctx context.Context, dir string, remote Remote) (*Repo, error) {
	if remote.Branch == "" {
		return nil, errors.New("opening the patch target: the branch is empty")
	}
	ep, err := transport.NewEndpoint(remote.URL)
	if err != nil {
		return nil, fmt.Errorf("opening the patch target: parsing the repository URL: %w", err)
	}
	auth, err := remote.Auth.TransportAuth(remote.URL)
	if err != nil {
		return nil, fmt.Errorf("opening the patch target: %w", err)
	}
	target, err := gitwatch.Target{URL: remote.URL, Branch: remote.Branch}.Canonical()
	if err != nil {
		return nil, fmt.Errorf("opening the patch target: naming it in its commits: %w", err)
	}
	m, err := gitwatch.OpenMirror(ctx, dir, remote.URL, remote.Branch, remote.Auth)
	if err != nil {
		return nil, fmt.Errorf("opening the local mirror of the patch target in %s: %w", dir, err)
	}
	m.Shallow = true
	return &Repo{remote: remote, mirror: m, ep: ep, auth: auth, heldBy: map[string]int64{}, target: []Trailer{
		{Key: gitwatch.TrailerRepository, Value: target.URL},
		{Key: gitwatch.TrailerBranch, Value: target.Branch},
	}}, nil
}

// Mirror is the local mirror, for checks of the tip (it may be shallow:
// Mirror.Deepen brings history). Callers must not move its refs.
func (r *Repo) Mirror() *gitwatch.Mirror { return r.mirror }

// Person is a commit author or committer.
type Person struct {
	Name  string
	Email string
}

// Trailer is one "Key: value" line closing the commit message.
type Trailer struct {
	Key   string
	Value string
}

// TxnRequest is one patch: commands applied together in one commit.
type TxnRequest struct {
	Commands []Command
	Limits   Limits
	Message  string
	Author   Person
	// Committer is the plugin itself.
	Committer Person
	// Trailers record who asked (Vault entity and request id) so that
	// `git log` is an audit trail. The Repo adds its target trailers after
	// them; Message must not hold lines that read as any of them
	// (CheckMessage).
	Trailers []Trailer
	// Signer signs the commit; nil leaves it unsigned.
	Signer *SigningKey
	// DryRun computes the change against the branch tip and its diff, and
	// pushes nothing.
	DryRun bool
	// CheckBase, when set, is asked before anything is built on a tip: tip
	// is the remote branch head just fetched, on which this request's commit
	// (or the chain of its group) will be built. An error refuses this
	// request alone with a BaseError naming the tip; nothing of it is
	// pushed. It runs again on every re-fetched tip after a lost race, in the
	// repository's worker: it must not call Patch.
	CheckBase func(ctx context.Context, tip string, m *gitwatch.Mirror) error
	// Caller identifies who asks (the Vault entity, else the token's
	// accessor): the queues are shared fairly between callers.
	Caller string

	MaxAttempts int
	// Now stamps the commit; nil means time.Now.
	Now func() time.Time
}

// TxnResult is what a transaction did.
type TxnResult struct {
	// Commit is the pushed commit; on a no-op, the tip that already holds the
	// requested content; empty on a dry run that would change something.
	Commit string
	// Parent is the tip the change was computed on.
	Parent       string
	Branch       string
	ChangedPaths []string
	NoOp         bool
	// Diff is the unified diff of a dry run.
	Diff     string
	Attempts int
}

// BaseError means the request's CheckBase refused the tip it would have
// been built on.
type BaseError struct {
	Branch string
	Tip    string
	Err    error
}

func (e *BaseError) Error() string {
	return fmt.Sprintf("refusing to build on the tip %s of branch %q: %v; nothing was pushed", e.Tip, e.Branch, e.Err)
}

func (e *BaseError) Unwrap() error { return e.Err }

// ConflictError means the branch moved under every attempt: other writers
// kept winning the race. The caller may retry later.
type ConflictError struct {
	Branch   string
	Attempts int
}

func (e *ConflictError) Error() string {
	return fmt.Sprintf("branch %q moved under the patch %d times in a row (concurrent pushes); nothing was pushed, retry later", e.Branch, e.Attempts)
}

// RemoteError means the git server could not be reached, refused the
// plugin's credentials, or rejected the push for a reason other than a race.
type RemoteError struct {
	Op  string
	URL string
	Err error
}

func (e *RemoteError) Error() string {
	return fmt.Sprintf("%s %s: %v", e.Op, e.URL, e.Err)
}

func (e *RemoteError) Unwrap() error { return e.Err }

// errMoved is one lost race: the branch tip was not the parent we built on.
var errMoved = errors.New("the branch moved")

// RefusedError means the git server took the push and refused it for a rule
// of its own (a pre-receive hook, a size limit, a commit-message or author
// rule) while the branch had not moved. A group refused so is retried in
// parts; a request gets this error only when its own commit, pushed alone,
// was refused. Reason holds the server's words.
type RefusedError struct {
	Branch string
	URL    string
	Reason string
}

func (e *RefusedError) Error() string {
	return fmt.Sprintf("the git server %s refused this request's commit to branch %q: %s; nothing of it was pushed, change what the server's rule refuses (the other requests of its group were not held back)", e.URL, e.Branch, e.Reason)
}

// maxRemoteMessage bounds what is kept of the server's messages for a
// refused push: enough for a hook's explanation, not a flood.
const maxRemoteMessage = 4 << 10

// remoteMessages keeps the first maxRemoteMessage bytes the server sends on
// the progress sideband, where a hook's stderr arrives ("remote: ...").
type remoteMessages struct{ buf []byte }

func (m *remoteMessages) Write(p []byte) (int, error) {
	if room := maxRemoteMessage - len(m.buf); room > 0 {
		m.buf = append(m.buf, p[:min(room, len(p))]...)
	}
	return len(p), nil
}

// text is the messages as one line: control characters (colour codes,
// carriage returns of progress meters) dropped, lines joined by "; ".
func (m *remoteMessages) text() string {
	var lines []string
	for _, l := range strings.FieldsFunc(string(m.buf), func(r rune) bool { return r == '\n' || r == '\r' }) {
		l = strings.Map(func(r rune) rune {
			if r < 0x20 || r == 0x7f || r == utf8.RuneError {
				return -1
			}
			return r
		}, l)
		l = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(l), "remote:"))
		if l != "" {
			lines = append(lines, l)
		}
	}
	return strings.Join(lines, "; ")
}

// refusal says why the server refused a push: its messages, then the status
// of the update or the unpack.
func refusal(report *packp.ReportStatus, msgs *remoteMessages, err error) string {
	var parts []string
	if t := msgs.text(); t != "" {
		parts = append(parts, t)
	}
	switch {
	case report != nil && report.UnpackStatus != "ok":
		parts = append(parts, "unpack: "+report.UnpackStatus)
	case report != nil:
		for _, c := range report.CommandStatuses {
			if c.Status != "ok" {
				parts = append(parts, c.ReferenceName.Short()+": "+c.Status)
			}
		}
	default:
		parts = append(parts, err.Error())
	}
	return strings.Join(parts, "; ")
}

// commit writes the commit object, signed when the request has a signer.
// Its message ends with the request's trailers and the Repo's target.
func (r *Repo) commit(req TxnRequest, when time.Time, parent, tree plumbing.Hash, w *treeWriter) (plumbing.Hash, error) {
	trailers := append(append([]Trailer(nil), req.Trailers...), r.target...)
	keys := make([]string, 0, len(req.Trailers))
	for _, t := range req.Trailers {
		keys = append(keys, t.Key)
	}
	if err := CheckMessage(req.Message, keys...); err != nil {
		return plumbing.ZeroHash, &Error{Kind: KindInvalid, Index: -1, Field: "commit.message", Msg: err.Error()}
	}
	when = when.UTC().Truncate(time.Second)
	c := &object.Commit{
		Author:       object.Signature{Name: req.Author.Name, Email: req.Author.Email, When: when},
		Committer:    object.Signature{Name: req.Committer.Name, Email: req.Committer.Email, When: when},
		Message:      commitMessage(req.Message, trailers),
		TreeHash:     tree,
		ParentHashes: []plumbing.Hash{parent},
	}
	if req.Signer != nil {
		unsigned := w.out.NewEncodedObject()
		if err := c.EncodeWithoutSignature(unsigned); err != nil {
			return plumbing.ZeroHash, fmt.Errorf("encoding the commit: %w", err)
		}
		payload, err := objectBytes(unsigned)
		if err != nil {
			return plumbing.ZeroHash, fmt.Errorf("encoding the commit: %w", err)
		}
		sig, err := req.Signer.Sign(payload, when)
		if err != nil {
			return plumbing.ZeroHash, err
		}
		c.PGPSignature = sig
	}
	o := w.out.NewEncodedObject()
	if err := c.Encode(o); err != nil {
		return plumbing.ZeroHash, fmt.Errorf("encoding the commit: %w", err)
	}
	return w.store(o)
}

// push sends exactly the new objects and moves the branch from parent to
// commit. The old value in the update command makes the server refuse the
// update if the branch moved since the fetch: a compare-and-swap, so a
// concurrent writer is never overwritten.
func (r *Repo) push(ctx context.Context, parent, commit plumbing.Hash, objs storer.EncodedObjectStorer, hashes []plumbing.Hash) error {
	tr, err := client.NewClient(r.ep)
	if err != nil {
		return &RemoteError{Op: "pushing to", URL: r.remote.URL, Err: err}
	}
	sess, err := tr.NewReceivePackSession(r.ep, r.auth)
	if err != nil {
		return &RemoteError{Op: "pushing to", URL: r.remote.URL, Err: err}
	}
	defer sess.Close()
	adv, err := sess.AdvertisedReferencesContext(ctx)
	if err != nil {
		return &RemoteError{Op: "pushing to", URL: r.remote.URL, Err: err}
	}
	ref := plumbing.NewBranchReferenceName(r.remote.Branch)
	if cur, ok := adv.References[ref.String()]; !ok || cur != parent {
		return errMoved
	}

	var pack bytes.Buffer
	if _, err := packfile.NewEncoder(&pack, objs, false).Encode(hashes, 0); err != nil {
		return fmt.Errorf("packing the new commit: %w", err)
	}
	upd := packp.NewReferenceUpdateRequestFromCapabilities(adv.Capabilities)
	if adv.Capabilities.Supports(capability.Atomic) {
		upd.Capabilities.Set(capability.Atomic)
	}
	// The sideband carries a refusing hook's explanation.
	msgs := &remoteMessages{}
	if adv.Capabilities.Supports(capability.Sideband64k) {
		upd.Capabilities.Set(capability.Sideband64k)
		upd.Progress = msgs
	}
	upd.Commands = []*packp.Command{{Name: ref, Old: parent, New: commit}}
	upd.Packfile = io.NopCloser(&pack)
	report, err := sess.ReceivePack(ctx, upd)
	if err == nil {
		return nil
	}
	if report != nil || tooLarge(err) {
		// The server answered and refused. If the branch moved it was a
		// lost race; otherwise a rule of the server refused the content.
		moved, lerr := r.branchMoved(ctx, parent)
		if lerr == nil && moved {
			return errMoved
		}
		if lerr == nil {
			return &RefusedError{Branch: r.remote.Branch, URL: r.remote.URL, Reason: refusal(report, msgs, err)}
		}
	}
	return &RemoteError{Op: "pushing to", URL: r.remote.URL, Err: err}
}

// tooLarge: a proxy in front of the server refused the pack's size (HTTP
// 413); a smaller push may pass.
func tooLarge(err error) bool {
	var ue *plumbing.UnexpectedError
	if errors.As(err, &ue) {
		err = ue.Err // it has no Unwrap
	}
	var he *githttp.Err
	return errors.As(err, &he) && he.StatusCode() == http.StatusRequestEntityTooLarge
}

func (r *Repo) branchMoved(ctx context.Context, parent plumbing.Hash) (bool, error) {
	tr, err := client.NewClient(r.ep)
	if err != nil {
		return false, err
	}
	sess, err := tr.NewUploadPackSession(r.ep, r.auth)
	if err != nil {
		return false, err
	}
	defer sess.Close()
	adv, err := sess.AdvertisedReferencesContext(ctx)
	if err != nil {
		return false, err
	}
	cur, ok := adv.References[plumbing.NewBranchReferenceName(r.remote.Branch).String()]
	return !ok || cur != parent, nil
}

// commitMessage appends the trailers as the message's last paragraph, the
// one git reads trailers from (and gitwatch.TargetOf the target).
func commitMessage(msg string, trailers []Trailer) string {
	msg = strings.TrimRight(msg, "\n \t") + "\n"
	if len(trailers) == 0 {
		return msg
	}
	var b strings.Builder
	b.WriteString(msg)
	b.WriteString("\n")
	for _, t := range trailers {
		b.WriteString(oneLine(t.Key))
		b.WriteString(": ")
		b.WriteString(oneLine(t.Value))
		b.WriteString("\n")
	}
	return b.String()
}

// oneLine keeps a caller-controlled value (an entity name) from forging extra
// trailer lines.
func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

// checkPerson refuses what would corrupt the commit header: an author line is
// "name <email> time zone", so newlines and angle brackets cannot appear.
func checkPerson(role string, p Person) error {
	if strings.TrimSpace(p.Name) == "" {
		return &Error{Kind: KindInvalid, Index: -1, Field: role + ".name", Msg: "the " + role + " name is empty"}
	}
	if strings.TrimSpace(p.Email) == "" {
		return &Error{Kind: KindInvalid, Index: -1, Field: role + ".email", Msg: "the " + role + " email is empty"}
	}
	for field, v := range map[string]string{"name": p.Name, "email": p.Email} {
		if strings.ContainsAny(v, "<>\n\r\x00") {
			return &Error{Kind: KindInvalid, Index: -1, Field: role + "." + field, Msg: "the " + role + " " + field + " must not contain '<', '>', NUL or line breaks"}
		}
	}
	return nil
}

func objectBytes(o plumbing.EncodedObject) ([]byte, error) {
	rd, err := o.Reader()
	if err != nil {
		return nil, err
	}
	defer rd.Close()
	return io.ReadAll(rd)
}
