package gitwatch

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/config"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/go-git/go-git/v5/plumbing/transport"
)

// originRemote is the name of the mirrored remote in the cache repository.
const originRemote = "origin"

// DefaultFetchTimeout bounds a Fetch whose context has no earlier deadline.
const DefaultFetchTimeout = 5 * time.Minute

// Mirror is an on-disk, incrementally fetched copy of one remote branch plus
// the signature refs (the latest-signature tag and refs/notes/signatures).
// Other branches and tags are never fetched.
//
// The mirror is a bare repository in a cache directory: deleting or
// damaging it costs one full fetch, nothing else. Methods are safe for
// concurrent use; Repository gives raw access for callers that build
// commits and must not move the mirror's refs.
type Mirror struct {
	// FetchTimeout bounds one Fetch when the context allows longer
	// (DefaultFetchTimeout when zero).
	FetchTimeout time.Duration
	// Shallow makes a Fetch into a mirror that holds no commit of the branch
	// yet fetch only the tip (depth 1), for callers that read the tip's tree
	// and not its history (the patch path). Later fetches stay incremental;
	// Deepen brings history on demand.
	Shallow bool

	mu     sync.Mutex
	dir    string
	url    string
	branch string
	auth   transport.AuthMethod
	repo   *git.Repository
	// notesTrees holds the decoded notes trees of the signature refs until
	// the next Fetch.
	notesTrees map[plumbing.ReferenceName]*object.Tree
}

// FetchResult describes one Fetch.
type FetchResult struct {
	// Head is the remote branch head now mirrored (40-hex).
	Head string
	// Previous is the mirrored head before this Fetch ("" on the first).
	Previous string
	// Changed reports that Head differs from Previous.
	Changed bool
	// SignaturesChanged reports that the latest-signature tag or the
	// signatures notes ref moved (new note signatures may count now).
	SignaturesChanged bool
	// Signatures identifies where the signature refs point now: it changes
	// whenever a note signature may have been added or removed, so a
	// verdict remembered with it holds while it is the same.
	Signatures string
}

// OpenMirror opens the mirror cached in dir, or builds it empty when dir is
// missing, belongs to another URL, or is damaged. No network access happens
// until Fetch.
func OpenMirror(ctx context.Context, dir, url, branch string, auth Auth) (*Mirror, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if dir == "" {
		return nil, errors.New("mirror cache directory must not be empty")
	}
	if url == "" {
		return nil, errors.New("git repository URL must not be empty")
	}
	if err := plumbing.NewBranchReferenceName(branch).Validate(); err != nil || branch == "" {
		return nil, fmt.Errorf("git branch name %q is not valid", branch)
	}
	ta, err := auth.TransportAuth(url)
	if err != nil {
		return nil, err
	}
	m := &Mirror{dir: dir, url: url, branch: branch, auth: ta}
	repo, err := m.openExisting()
	if err != nil {
		repo, err = m.rebuild()
		if err != nil {
			return nil, err
		}
	}
	m.repo = repo
	return m, nil
}

// branchRef is the local ref holding the mirrored branch head.
func (m *Mirror) branchRef() plumbing.ReferenceName {
	return plumbing.NewRemoteReferenceName(originRemote, m.branch)
}

// Repository is the cache repository. Callers may add objects (for example
// to build a commit to push) but must not move the mirror's refs.
func (m *Mirror) Repository() *git.Repository {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.repo
}

// Head is the mirrored branch head, or "" before the first Fetch.
func (m *Mirror) Head() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	h, _ := m.localRef(m.branchRef())
	if h.IsZero() {
		return ""
	}
	return h.String()
}

// openExisting opens dir when it is a healthy mirror of the same URL.
func (m *Mirror) openExisting() (*git.Repository, error) {
	repo, err := git.PlainOpen(m.dir)
	if err != nil {
		return nil, err
	}
	cfg, err := repo.Config()
	if err != nil {
		return nil, err
	}
	rc, ok := cfg.Remotes[originRemote]
	if !ok || len(rc.URLs) != 1 || rc.URLs[0] != m.url {
		return nil, errors.New("mirror cache belongs to another remote")
	}
	ref, err := repo.Reference(m.branchRef(), false)
	switch {
	case errors.Is(err, plumbing.ErrReferenceNotFound):
		return repo, nil
	case err != nil:
		return nil, err
	}
	if _, err := repo.CommitObject(ref.Hash()); err != nil {
		return nil, fmt.Errorf("mirrored head %s is unreadable: %w", ref.Hash(), err)
	}
	return repo, nil
}

// rebuild wipes dir and makes an empty bare repository with the remote.
func (m *Mirror) rebuild() (*git.Repository, error) {
	if err := os.RemoveAll(m.dir); err != nil {
		return nil, fmt.Errorf("clear mirror cache %s: %w", m.dir, err)
	}
	repo, err := git.PlainInit(m.dir, true)
	if err != nil {
		return nil, fmt.Errorf("create mirror cache %s: %w", m.dir, err)
	}
	_, err = repo.CreateRemote(&config.RemoteConfig{
		Name:  originRemote,
		URLs:  []string{m.url},
		Fetch: []config.RefSpec{m.branchSpec()},
	})
	if err != nil {
		return nil, fmt.Errorf("configure mirror remote: %w", err)
	}
	return repo, nil
}

func (m *Mirror) branchSpec() config.RefSpec {
	return config.RefSpec("+" + plumbing.NewBranchReferenceName(m.branch).String() + ":" + m.branchRef().String())
}

// mirrored lists remote ref -> local ref for everything the mirror keeps.
func (m *Mirror) mirrored() [][2]plumbing.ReferenceName {
	return [][2]plumbing.ReferenceName{
		{plumbing.NewBranchReferenceName(m.branch), m.branchRef()},
		{SignatureTag, SignatureTag},
		{NotesRef, NotesRef},
	}
}

// Fetch brings the mirror up to date with the remote branch and signature
// refs. An unchanged remote costs one ref advertisement: refs are compared
// before any pack is requested. A damaged cache is rebuilt once.
func (m *Mirror) Fetch(ctx context.Context) (FetchResult, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	timeout := m.FetchTimeout
	if timeout <= 0 {
		timeout = DefaultFetchTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	m.notesTrees = nil
	res, err := m.fetch(ctx)
	var corrupt *corruptError
	if errors.As(err, &corrupt) && ctx.Err() == nil {
		repo, rerr := m.rebuild()
		if rerr != nil {
			return FetchResult{}, fmt.Errorf("%w; rebuilding the cache failed: %w", err, rerr)
		}
		m.repo, m.notesTrees = repo, nil
		res, err = m.fetch(ctx)
		res.Previous, res.Changed = corrupt.previous, res.Head != corrupt.previous
	}
	if err != nil && ctx.Err() != nil {
		return FetchResult{}, fmt.Errorf("fetch %s branch %s: %w (%w)", redactURL(m.url), m.branch, ctx.Err(), err)
	}
	return res, err
}

// corruptError marks a local cache problem that a rebuild fixes.
type corruptError struct {
	previous string
	err      error
}

func (e *corruptError) Error() string { return "mirror cache is damaged: " + e.err.Error() }
func (e *corruptError) Unwrap() error { return e.err }

func (m *Mirror) fetch(ctx context.Context) (FetchResult, error) {
	remote, err := m.repo.Remote(originRemote)
	if err != nil {
		return FetchResult{}, &corruptError{err: err}
	}
	advertised, err := remote.ListContext(ctx, &git.ListOptions{Auth: m.auth})
	if err != nil {
		if errors.Is(err, transport.ErrEmptyRemoteRepository) {
			return FetchResult{}, fmt.Errorf("git repository %s is empty: branch %s does not exist yet", redactURL(m.url), m.branch)
		}
		return FetchResult{}, fmt.Errorf("list refs of %s: %w", redactURL(m.url), err)
	}
	remoteRefs := make(map[plumbing.ReferenceName]plumbing.Hash, len(advertised))
	for _, r := range advertised {
		if r.Type() == plumbing.HashReference {
			remoteRefs[r.Name()] = r.Hash()
		}
	}
	branchRemote := plumbing.NewBranchReferenceName(m.branch)
	if _, ok := remoteRefs[branchRemote]; !ok {
		return FetchResult{}, fmt.Errorf("branch %s not found in %s", m.branch, redactURL(m.url))
	}

	previous, _ := m.localRef(m.branchRef())
	var specs []config.RefSpec
	var stale []plumbing.ReferenceName
	sigChanged := false
	for _, pair := range m.mirrored() {
		remoteName, localName := pair[0], pair[1]
		want, onRemote := remoteRefs[remoteName]
		have, _ := m.localRef(localName)
		switch {
		case !onRemote && !have.IsZero():
			stale = append(stale, localName)
		case !onRemote:
			continue
		case want != have || !m.hasObject(want):
			specs = append(specs, config.RefSpec("+"+remoteName.String()+":"+localName.String()))
		default:
			continue
		}
		if remoteName != branchRemote {
			sigChanged = true
		}
	}

	if len(specs) > 0 {
		opts := &git.FetchOptions{
			RemoteName: originRemote,
			RefSpecs:   specs,
			Auth:       m.auth,
			Tags:       git.NoTags,
			Force:      true,
		}
		if m.Shallow && (previous.IsZero() || !m.hasObject(previous)) {
			opts.Depth = 1
		}
		err := remote.FetchContext(ctx, opts)
		if err != nil && !errors.Is(err, git.NoErrAlreadyUpToDate) {
			if ctx.Err() == nil && isLocalStorageError(err) {
				return FetchResult{}, &corruptError{previous: hashString(previous), err: err}
			}
			return FetchResult{}, fmt.Errorf("fetch branch %s from %s: %w", m.branch, redactURL(m.url), err)
		}
	}
	for _, name := range stale {
		if err := m.repo.Storer.RemoveReference(name); err != nil {
			return FetchResult{}, fmt.Errorf("drop %s (gone from the remote): %w", name, err)
		}
	}

	head, err := m.localRef(m.branchRef())
	if err != nil || head.IsZero() {
		return FetchResult{}, &corruptError{previous: hashString(previous), err: fmt.Errorf("branch ref missing after fetch: %v", err)}
	}
	if _, err := m.repo.CommitObject(head); err != nil {
		return FetchResult{}, &corruptError{previous: hashString(previous), err: fmt.Errorf("head commit %s unreadable after fetch: %w", head, err)}
	}
	return FetchResult{
		Head:              head.String(),
		Previous:          hashString(previous),
		Changed:           head != previous,
		SignaturesChanged: sigChanged,
		Signatures:        m.signaturesState(),
	}, nil
}

// SignaturesState is FetchResult.Signatures for the refs as mirrored now.
func (m *Mirror) SignaturesState() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.signaturesState()
}

func (m *Mirror) signaturesState() string {
	tag, _ := m.localRef(SignatureTag)
	notes, _ := m.localRef(NotesRef)
	return "tag " + hashString(tag) + " notes " + hashString(notes)
}

// deepenRef holds the commit a Deepen asks for while it is fetched.
const deepenRef = plumbing.ReferenceName("refs/flant_gitops/deepen")

// Deepen makes the n commits below head (a commit in the mirror) available
// in a Shallow mirror, for an operation that walks history. A mirror that
// already holds them costs nothing.
func (m *Mirror) Deepen(ctx context.Context, head string, n int) error {
	h, err := parseCommitID(head)
	if err != nil {
		return err
	}
	if n < 1 {
		return nil
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.hasHistory(h, n) {
		return nil
	}
	remote, err := m.repo.Remote(originRemote)
	if err != nil {
		return fmt.Errorf("deepen %s: %w", head, err)
	}
	defer func() { _ = m.repo.Storer.RemoveReference(deepenRef) }()
	// Servers refuse a commit id in a want by default, so the depth counts
	// from the remote branch head; when that moved past head, ask deeper.
	spec := config.RefSpec("+" + plumbing.NewBranchReferenceName(m.branch).String() + ":" + deepenRef.String())
	for depth, try := n+1, 0; try < 4; depth, try = depth*4, try+1 {
		err = remote.FetchContext(ctx, &git.FetchOptions{
			RemoteName: originRemote,
			RefSpecs:   []config.RefSpec{spec},
			Auth:       m.auth,
			Tags:       git.NoTags,
			Depth:      depth,
			Force:      true,
		})
		if err != nil && !errors.Is(err, git.NoErrAlreadyUpToDate) {
			return fmt.Errorf("fetch %d commits of history below %s from %s: %w", n, head, redactURL(m.url), err)
		}
		if m.hasHistory(h, n) {
			return nil
		}
	}
	return fmt.Errorf("fetch %d commits of history below %s from %s: the branch no longer leads to it closely enough", n, head, redactURL(m.url))
}

// hasHistory reports whether the first-parent chain of n commits below h is
// in the mirror (or ends earlier at a root commit).
func (m *Mirror) hasHistory(h plumbing.Hash, n int) bool {
	for range n {
		c, err := m.repo.CommitObject(h)
		if err != nil {
			return false
		}
		if len(c.ParentHashes) == 0 {
			return true
		}
		h = c.ParentHashes[0]
	}
	return m.hasObject(h)
}

// isLocalStorageError tells cache damage (fixable by a rebuild) from remote
// or network trouble (which a rebuild would only make slower).
func isLocalStorageError(err error) bool {
	var pathErr *os.PathError
	return errors.Is(err, plumbing.ErrObjectNotFound) || errors.As(err, &pathErr)
}

func (m *Mirror) localRef(name plumbing.ReferenceName) (plumbing.Hash, error) {
	ref, err := m.repo.Storer.Reference(name)
	if err != nil {
		return plumbing.ZeroHash, err
	}
	return ref.Hash(), nil
}

func (m *Mirror) hasObject(h plumbing.Hash) bool {
	return m.repo.Storer.HasEncodedObject(h) == nil
}

func hashString(h plumbing.Hash) string {
	if h.IsZero() {
		return ""
	}
	return h.String()
}

// parseCommitID accepts a full 40-hex commit id.
func parseCommitID(s string) (plumbing.Hash, error) {
	if len(s) != 40 {
		return plumbing.ZeroHash, fmt.Errorf("commit id %q must be 40 hex characters", s)
	}
	if _, err := hex.DecodeString(s); err != nil {
		return plumbing.ZeroHash, fmt.Errorf("commit id %q is not hex", s)
	}
	return plumbing.NewHash(s), nil
}

// IsAncestor reports whether ancestor is head or reachable from head by
// parent links. An ancestor unknown to the mirror is not an ancestor: the
// mirror holds head's whole history, so it would have it.
func (m *Mirror) IsAncestor(ctx context.Context, ancestor, head string) (bool, error) {
	a, err := parseCommitID(ancestor)
	if err != nil {
		return false, err
	}
	h, err := parseCommitID(head)
	if err != nil {
		return false, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, err := m.repo.CommitObject(h); err != nil {
		return false, fmt.Errorf("commit %s is not in the mirror (fetch first): %w", head, err)
	}
	if a == h {
		return true, nil
	}
	if !m.hasObject(a) {
		return false, nil
	}
	seen := map[plumbing.Hash]bool{h: true}
	queue := []plumbing.Hash{h}
	for n := 0; len(queue) > 0; n++ {
		if n%1024 == 0 {
			if err := ctx.Err(); err != nil {
				return false, err
			}
		}
		c, err := m.repo.CommitObject(queue[0])
		queue = queue[1:]
		if err != nil {
			return false, fmt.Errorf("walk history of %s: %w", head, err)
		}
		for _, p := range c.ParentHashes {
			if p == a {
				return true, nil
			}
			if !seen[p] {
				seen[p] = true
				queue = append(queue, p)
			}
		}
	}
	return false, nil
}

// verify counts the trusted signatures on commit: its own gpgsig signature
// and the detached signatures in the signatures notes (reached through the
// latest-signature tag and refs/notes/signatures). Each trusted primary key
// counts once. An error means the question could not be answered; a quorum
// that is not met is an answer (OK false), not an error.
func (m *Mirror) verify(ctx context.Context, commit string, trusted []TrustedKey, required int) (Quorum, error) {
	h, err := parseCommitID(commit)
	if err != nil {
		return Quorum{}, err
	}
	if err := ctx.Err(); err != nil {
		return Quorum{}, err
	}
	m.mu.Lock()
	blobs, ignored, err := m.signatureBlobs(h)
	m.mu.Unlock()
	if err != nil {
		return Quorum{}, err
	}
	q, err := countQuorum(h.String(), trusted, required, blobs, time.Now())
	if err != nil {
		return Quorum{}, err
	}
	q.Ignored = append(ignored, q.Ignored...)
	return q, nil
}

// signatureBlobs collects every signature container for commit h.
func (m *Mirror) signatureBlobs(h plumbing.Hash) ([]signedBlob, []string, error) {
	obj, err := m.repo.Storer.EncodedObject(plumbing.CommitObject, h)
	if err != nil {
		return nil, nil, fmt.Errorf("commit %s is not in the mirror (fetch first): %w", h, err)
	}
	r, err := obj.Reader()
	if err != nil {
		return nil, nil, fmt.Errorf("read commit %s: %w", h, err)
	}
	raw, err := io.ReadAll(r)
	r.Close()
	if err != nil {
		return nil, nil, fmt.Errorf("read commit %s: %w", h, err)
	}

	var blobs []signedBlob
	var ignored []string
	signTime := committerTime(raw)
	if signTime.IsZero() {
		signTime = time.Now()
	}
	if payload, armored, ok := splitCommitSignature(raw); ok {
		sig, err := dearmorCommitSignature(armored)
		if err != nil {
			ignored = append(ignored, "commit signature does not count: "+err.Error())
		} else {
			blobs = append(blobs, signedBlob{source: SourceCommit, payload: payload, sig: sig, signTime: signTime})
		}
	}

	id := h.String()
	payload := []byte(id) // what a notes signature signs: the commit id, no newline
	seenNotes := make(map[plumbing.Hash]bool)
	for _, ref := range []plumbing.ReferenceName{SignatureTag, NotesRef} {
		tree, err := m.notesTree(ref)
		if err != nil {
			ignored = append(ignored, fmt.Sprintf("%s is unusable: %v", ref, err))
			continue
		}
		if tree == nil || seenNotes[tree.Hash] {
			continue
		}
		seenNotes[tree.Hash] = true
		note, size, err := findNote(tree, id)
		if err != nil {
			ignored = append(ignored, fmt.Sprintf("%s note for %s: %v", ref, h, err))
			continue
		}
		if size > int64(len(note)) {
			ignored = append(ignored, fmt.Sprintf("%s note for %s is %d bytes and only its first %d KiB were read: signatures past that do not count; "+
				"remove what is not a signature from the note", ref, h, size, maxNoteSize>>10))
		}
		sigs, malformed := parseNoteSignatures(note)
		if malformed > 0 {
			ignored = append(ignored, fmt.Sprintf("%s note for %s: %d malformed line(s) skipped", ref, h, malformed))
		}
		for _, s := range sigs {
			blobs = append(blobs, signedBlob{source: SourceNotes, payload: payload, sig: s, signTime: signTime})
		}
	}
	return blobs, ignored, nil
}

// notesTree is the root tree of the notes commit ref points at, or nil when
// the ref does not exist. It is decoded once per Fetch (only Fetch moves
// the signature refs), so a walk over many commits reads it once.
func (m *Mirror) notesTree(ref plumbing.ReferenceName) (*object.Tree, error) {
	if t, ok := m.notesTrees[ref]; ok {
		return t, nil
	}
	c, err := m.peelToCommit(ref)
	if err != nil || c == nil {
		return nil, err
	}
	t, err := c.Tree()
	if err != nil {
		return nil, fmt.Errorf("its tree is unreadable: %w", err)
	}
	if m.notesTrees == nil {
		m.notesTrees = make(map[plumbing.ReferenceName]*object.Tree)
	}
	m.notesTrees[ref] = t
	return t, nil
}

// peelToCommit resolves ref (possibly an annotated tag) to its commit, or
// nil when the ref does not exist.
func (m *Mirror) peelToCommit(ref plumbing.ReferenceName) (*object.Commit, error) {
	h, err := m.localRef(ref)
	if errors.Is(err, plumbing.ErrReferenceNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	for range 8 {
		obj, err := m.repo.Object(plumbing.AnyObject, h)
		if err != nil {
			return nil, err
		}
		switch o := obj.(type) {
		case *object.Commit:
			return o, nil
		case *object.Tag:
			h = o.Target
		default:
			return nil, fmt.Errorf("points at a %s, not a commit", obj.Type())
		}
	}
	return nil, errors.New("too many nested tags")
}

// splitCommitSignature separates a raw commit object into the payload git
// signs (the object without its gpgsig header) and the armored signature,
// the way git's parse_signed_commit does: every gpgsig header is removed
// from the payload. Only the first armored block is used for verification.
func splitCommitSignature(raw []byte) (payload []byte, armored string, ok bool) {
	headerEnd := bytes.Index(raw, []byte("\n\n"))
	if headerEnd < 0 {
		headerEnd = len(raw)
	}
	var out bytes.Buffer
	var sig bytes.Buffer
	inSig := false
	found := false
	rest := raw
	for len(rest) > 0 {
		nl := bytes.IndexByte(rest, '\n')
		line := rest
		if nl >= 0 {
			line = rest[:nl+1]
		}
		offset := len(raw) - len(rest)
		rest = rest[len(line):]
		if offset > headerEnd {
			out.Write(line)
			continue
		}
		switch {
		case inSig && bytes.HasPrefix(line, []byte(" ")):
			sig.Write(line[1:])
			continue
		case bytes.HasPrefix(line, []byte("gpgsig ")):
			inSig, found = true, true
			sig.Write(line[len("gpgsig "):])
			continue
		}
		inSig = false
		out.Write(line)
	}
	if !found {
		return nil, "", false
	}
	return out.Bytes(), sig.String(), true
}

// ContentID identifies what the signatures of commit cover: the SHA-256 of
// the commit object with its signature headers (gpgsig, gpgsig-sha256)
// removed, the payload git signs. Re-wrapping a signature (another armor
// comment or line length, an extra signature packet) gives a new commit id
// but the same ContentID, so decisions about a commit's change (an
// operator's cancel, a backoff) can follow it.
func (m *Mirror) ContentID(ctx context.Context, commit string) (string, error) {
	h, err := parseCommitID(commit)
	if err != nil {
		return "", err
	}
	if err := ctx.Err(); err != nil {
		return "", err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	obj, err := m.repo.Storer.EncodedObject(plumbing.CommitObject, h)
	if err != nil {
		return "", fmt.Errorf("commit %s is not in the mirror (fetch first): %w", h, err)
	}
	r, err := obj.Reader()
	if err != nil {
		return "", fmt.Errorf("read commit %s: %w", h, err)
	}
	defer r.Close()
	raw, err := io.ReadAll(r)
	if err != nil {
		return "", fmt.Errorf("read commit %s: %w", h, err)
	}
	sum := sha256.Sum256(unsignedPayload(raw))
	return hex.EncodeToString(sum[:]), nil
}

// unsignedPayload is a raw commit without its signature headers and their
// continuation lines; the message is kept byte for byte.
func unsignedPayload(raw []byte) []byte {
	var out bytes.Buffer
	rest := raw
	inSig := false
	for len(rest) > 0 {
		nl := bytes.IndexByte(rest, '\n')
		line := rest
		if nl >= 0 {
			line = rest[:nl+1]
		}
		rest = rest[len(line):]
		if len(line) == 1 && line[0] == '\n' {
			out.WriteString("\n")
			out.Write(rest)
			break
		}
		switch {
		case inSig && bytes.HasPrefix(line, []byte(" ")):
			continue
		case bytes.HasPrefix(line, []byte("gpgsig ")), bytes.HasPrefix(line, []byte("gpgsig-sha256 ")):
			inSig = true
			continue
		}
		inSig = false
		out.Write(line)
	}
	return out.Bytes()
}
