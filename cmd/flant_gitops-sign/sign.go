package main

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/flant/flant_gitops/gitwatch"
)

// Where the watcher and trdl look for note signatures: the notes ref, and
// the tag on its notes commit through which a plain tag fetch brings them.
const (
	notesRef = gitwatch.NotesRef
	tagRef   = gitwatch.SignatureTag
)

// signatureRefs is where the remote's signature refs stood when fetched.
type signatureRefs struct {
	notes, tag string // as advertised ("" when missing): the push's lease
	tagCommit  string // the tag peeled to its notes commit
}

// session holds the temporary refs of one run, under a name of its own so
// that two runs in one clone do not meet.
type session struct {
	g      *gitCmd
	prefix string // refs/flant-sign/<pid>-<random>
	work   string // the notes ref being built (git notes wants refs/notes/)
}

func newSession(g *gitCmd) *session {
	id := strconv.Itoa(os.Getpid()) + "-" + strconv.FormatUint(rand.Uint64()>>32, 36)
	return &session{g: g, prefix: "refs/flant-sign/" + id, work: "refs/notes/flant-sign-" + id}
}

// close drops the temporary refs, even after the context ended.
func (s *session) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, ref := range []string{s.work, s.prefix + "/notes", s.prefix + "/tag"} {
		_, _ = s.g.run(ctx, nil, "update-ref", "-d", ref)
	}
}

// fetchSignatureRefs brings the remote's notes ref and tag into the
// session's refs.
func (s *session) fetchSignatureRefs(ctx context.Context, remote string) (signatureRefs, error) {
	var refs signatureRefs
	out, err := s.g.run(ctx, nil, "ls-remote", "--", remote, notesRef, tagRef)
	if err != nil {
		return refs, fmt.Errorf("list the signature refs of %s: %w", remote, err)
	}
	specs := []string{}
	for line := range strings.SplitSeq(out, "\n") {
		id, name, ok := strings.Cut(line, "\t")
		switch {
		case !ok:
		case name == notesRef:
			refs.notes = id
			specs = append(specs, "+"+notesRef+":"+s.prefix+"/notes")
		case name == tagRef:
			refs.tag = id
			specs = append(specs, "+"+tagRef+":"+s.prefix+"/tag")
		}
	}
	for _, ref := range []string{s.prefix + "/notes", s.prefix + "/tag"} {
		if _, err := s.g.run(ctx, nil, "update-ref", "-d", ref); err != nil {
			return refs, err
		}
	}
	if len(specs) == 0 {
		return refs, nil
	}
	args := append([]string{"fetch", "--quiet", "--no-tags", "--", remote}, specs...)
	if _, err := s.g.run(ctx, nil, args...); err != nil {
		return refs, fmt.Errorf("fetch the signature refs of %s: %w", remote, err)
	}
	// The lease is what was fetched: a ref that moved between the listing
	// and the fetch is then pushed over only if it stays put.
	if refs.notes != "" {
		if refs.notes, err = s.g.revParse(ctx, s.prefix+"/notes"); err != nil {
			return refs, err
		}
	}
	if refs.tag != "" {
		if refs.tag, err = s.g.revParse(ctx, s.prefix+"/tag"); err != nil {
			return refs, err
		}
		if refs.tagCommit, err = s.g.revParse(ctx, s.prefix+"/tag^{commit}"); err != nil || refs.tagCommit == "" {
			return refs, fmt.Errorf("%s on %s does not point at a notes commit: %v", tagRef, remote, err)
		}
	}
	return refs, nil
}

// mergeNotes points the work ref at the union of the remote's notes ref
// and tag: usually one contains the other; when they diverged (a tool that
// pushed only one of them), the notes are merged as `git notes merge -s
// cat_sort_uniq` does, so no signature of either is lost.
func (s *session) mergeNotes(ctx context.Context, refs signatureRefs) (string, error) {
	base := refs.notes
	if base != "" {
		var err error
		if base, err = s.g.revParse(ctx, base+"^{commit}"); err != nil {
			return "", err
		}
	}
	switch {
	case refs.tagCommit == "" || refs.tagCommit == base:
	case base == "":
		base = refs.tagCommit
	default:
		tagInNotes, err := s.g.isAncestor(ctx, refs.tagCommit, base)
		if err != nil {
			return "", err
		}
		notesInTag, err := s.g.isAncestor(ctx, base, refs.tagCommit)
		if err != nil {
			return "", err
		}
		if notesInTag {
			base = refs.tagCommit
		} else if !tagInNotes {
			if _, err := s.g.run(ctx, nil, "update-ref", s.work, base); err != nil {
				return "", err
			}
			if _, err := s.g.run(ctx, nil, "notes", "--ref", s.work, "merge", "--quiet", "-s", "cat_sort_uniq", s.prefix+"/tag"); err != nil {
				return "", fmt.Errorf("merge the notes of %s into %s: %w", tagRef, notesRef, err)
			}
			return s.g.revParse(ctx, s.work)
		}
	}
	if base == "" {
		_, err := s.g.run(ctx, nil, "update-ref", "-d", s.work)
		return "", err
	}
	_, err := s.g.run(ctx, nil, "update-ref", s.work, base)
	return base, err
}

// note is the work ref's note on commit ("" when none).
func (s *session) note(ctx context.Context, commit string) (string, error) {
	if id, err := s.g.revParse(ctx, s.work); err != nil || id == "" {
		return "", err
	}
	out, err := s.g.raw(ctx, nil, "notes", "--ref", s.work, "show", commit)
	var ge *gitError
	if errors.As(err, &ge) && strings.Contains(ge.stderr, "no note found") {
		return "", nil
	}
	return out, err
}

// sign is the sign command.
func sign(ctx context.Context, g *gitCmd, inv *invocation, stdout, stderr io.Writer) error {
	id, err := g.resolveCommit(ctx, inv.commit)
	if err != nil {
		return err
	}
	if _, err := g.run(ctx, nil, "remote", "get-url", "--", inv.remote); err != nil {
		return usagef("no remote %q in this repository (give --remote NAME): %v", inv.remote, err)
	}
	s, err := newSigner(ctx, g, inv)
	if err != nil {
		return err
	}
	if c, ok := s.(interface{ close() }); ok {
		defer c.close()
	}
	msg := []byte(id) // what a note signature signs: the id, no newline

	if own, payload, err := commitSignature(ctx, g, id); err != nil {
		return err
	} else if payload != nil && s.made(own, payload) {
		printf(stdout, "%s is already signed by %s (in the commit itself); nothing to add\n", id, s)
		return nil
	}
	if err := onRemote(ctx, g, inv.remote, id); err != nil {
		return err
	}

	sess := newSession(g)
	defer sess.close()
	var raw []byte
	for attempt := 1; ; attempt++ {
		refs, err := sess.fetchSignatureRefs(ctx, inv.remote)
		if err != nil {
			return err
		}
		if _, err := sess.mergeNotes(ctx, refs); err != nil {
			return err
		}
		note, err := sess.note(ctx, id)
		if err != nil {
			return err
		}
		existing := parseSignatureLines(note)
		if signedIn(s, existing, msg) {
			printf(stdout, "%s is already signed by %s in %s on %s; nothing to add\n", id, s, notesRef, inv.remote)
			return nil
		}
		if raw == nil {
			if raw, err = s.sign(ctx, msg); err != nil {
				return err
			}
			// An SSH key known only from its signature is recognized now.
			if signedIn(s, existing, msg) {
				printf(stdout, "%s is already signed by %s in %s on %s; nothing to add\n", id, s, notesRef, inv.remote)
				return nil
			}
		}
		line := base64.StdEncoding.EncodeToString(raw)
		if _, err := g.run(ctx, nil, "notes", "--ref", sess.work, "append", "-m", line, id); err != nil {
			return fmt.Errorf("add the signature note: %w", err)
		}
		next, err := g.revParse(ctx, sess.work)
		if err != nil {
			return err
		}
		rejected, err := pushSignatureRefs(ctx, g, inv.remote, refs, next)
		if err != nil {
			return err
		}
		if rejected == "" {
			updateLocalNotes(ctx, g, next, stderr)
			printf(stdout, "signed %s with %s; pushed %s and %s to %s\n", id, s, notesRef, tagRef, inv.remote)
			return nil
		}
		if attempt >= inv.retries {
			return fmt.Errorf("gave up after %d pushes: other signers kept pushing %s at the same moment (last refusal: %s); run it again", attempt, notesRef, rejected)
		}
		printf(stderr, "the signature refs moved on %s while signing (%s); merging and pushing again\n", inv.remote, rejected)
		if err := sleepJitter(ctx, attempt); err != nil {
			return err
		}
	}
}

// signedIn reports whether one of sigs is s's signature over msg.
func signedIn(s signer, sigs []noteSig, msg []byte) bool {
	for _, sig := range sigs {
		if s.made(sig, msg) {
			return true
		}
	}
	return false
}

// onRemote refuses a commit that no branch of the remote has: its note
// would vouch for something the watcher never sees, and a push of the
// branch later could carry another commit.
func onRemote(ctx context.Context, g *gitCmd, remote, id string) error {
	if _, err := g.run(ctx, nil, "fetch", "--quiet", "--", remote); err != nil {
		return fmt.Errorf("fetch %s to check that the commit is there: %w", remote, err)
	}
	out, err := g.run(ctx, nil, "for-each-ref", "--contains", id, "--format=%(refname)", "refs/remotes/"+remote+"/")
	if err != nil {
		return err
	}
	if strings.TrimSpace(out) == "" {
		return fmt.Errorf("commit %s is on no branch of %s: push it first (a signature is for a commit the watcher can fetch)", id, remote)
	}
	return nil
}

// pushSignatureRefs pushes next as both the notes ref and the tag, each
// leased on what was fetched, in one atomic push where the server allows.
// A refusal because another signer pushed first is returned as rejected
// (to retry), anything else as an error.
func pushSignatureRefs(ctx context.Context, g *gitCmd, remote string, refs signatureRefs, next string) (rejected string, err error) {
	args := []string{"push", "--porcelain", "--no-verify", "--atomic",
		"--force-with-lease=" + notesRef + ":" + refs.notes,
		"--force-with-lease=" + tagRef + ":" + refs.tag,
		"--", remote, next + ":" + notesRef, next + ":" + tagRef}
	out, err := g.run(ctx, nil, args...)
	var ge *gitError
	if errors.As(err, &ge) && strings.Contains(ge.stderr, "does not support --atomic") {
		// The notes ref goes first: a tag that lags only hides new notes
		// from tag-only fetchers until the next signer, never loses any.
		args = append(args[:3], args[4:]...)
		out, err = g.run(ctx, nil, args...)
	}
	if err == nil {
		return "", nil
	}
	if !errors.As(err, &ge) {
		return "", err
	}
	var reasons []string
	race := false
	for line := range strings.SplitSeq(out, "\n") {
		fields := strings.SplitN(line, "\t", 3)
		if len(fields) != 3 || fields[0] != "!" {
			continue
		}
		reasons = append(reasons, fields[1]+" "+fields[2])
		for _, r := range raceReasons {
			if strings.Contains(fields[2], r) {
				race = true
			}
		}
	}
	if race {
		return strings.Join(reasons, "; "), nil
	}
	if len(reasons) > 0 {
		// What the server's rule said comes on the sideband, "remote: ...".
		var said []string
		for line := range strings.SplitSeq(ge.stderr, "\n") {
			if m, ok := strings.CutPrefix(line, "remote: "); ok && strings.TrimSpace(m) != "" {
				said = append(said, strings.TrimSpace(m))
			}
		}
		msg := strings.Join(reasons, "; ")
		if len(said) > 0 {
			msg += "; the server said: " + strings.Join(said, " ")
		}
		return "", fmt.Errorf("push the signature refs to %s: refused: %s", remote, redact(msg))
	}
	return "", fmt.Errorf("push the signature refs to %s: %w", remote, err)
}

// raceReasons are the refusals of a push that another push overtook: a
// lease that no longer holds (checked by git, or by the server under its
// ref lock: an atomic transaction then fails as a whole), and the atomic
// push's other ref. A hook's refusal says "hook declined" and is final.
var raceReasons = []string{"stale info", "fetch first", "non-fast-forward", "atomic push failed",
	"atomic transaction failed", "cannot lock ref", "failed to update ref", "incorrect old value", "failed to lock"}

// updateLocalNotes moves the local notes ref to what was pushed when that
// loses nothing local, so `git log --notes=signatures` shows it.
func updateLocalNotes(ctx context.Context, g *gitCmd, next string, stderr io.Writer) {
	local, err := g.revParse(ctx, notesRef)
	if err != nil {
		return
	}
	if local != "" {
		if ok, err := g.isAncestor(ctx, local, next); err != nil || !ok {
			printf(stderr, "note: your local %s has notes the remote lacks; left as it is (git fetch %s:%s to replace it)\n", notesRef, notesRef, notesRef)
			return
		}
	}
	_, _ = g.run(ctx, nil, "update-ref", notesRef, next)
}

// sleepJitter waits a random time that grows with the attempt, so signers
// who collided do not collide again.
func sleepJitter(ctx context.Context, attempt int) error {
	ceil := min(50*time.Millisecond<<min(attempt, 6), 2*time.Second)
	t := time.NewTimer(time.Duration(rand.Int64N(int64(ceil))))
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// commitSignature is the commit's own signature (its gpgsig header) and
// the payload it signs (the commit without that header); a nil payload when
// the commit is not signed.
func commitSignature(ctx context.Context, g *gitCmd, id string) (noteSig, []byte, error) {
	raw, err := g.raw(ctx, nil, "cat-file", "commit", id)
	if err != nil {
		return noteSig{}, nil, err
	}
	header, body, _ := strings.Cut(raw, "\n\n")
	var sig, payload strings.Builder
	in := false
	for line := range strings.SplitSeq(header, "\n") {
		switch {
		case strings.HasPrefix(line, "gpgsig "):
			in = true
			sig.WriteString(strings.TrimPrefix(line, "gpgsig ") + "\n")
		case in && strings.HasPrefix(line, " "):
			sig.WriteString(line[1:] + "\n")
		default:
			in = false
			payload.WriteString(line + "\n")
		}
	}
	armored := sig.String()
	if armored == "" {
		return noteSig{}, nil, nil
	}
	payload.WriteString("\n" + body)
	var b []byte
	if strings.Contains(armored, "BEGIN SSH SIGNATURE") {
		b, err = dearmorSSH([]byte(armored))
	} else {
		b, err = dearmorPGP(armored)
	}
	if err != nil {
		return noteSig{kind: kindUnknown, err: err}, []byte(payload.String()), nil
	}
	return parseSignature(b), []byte(payload.String()), nil
}
