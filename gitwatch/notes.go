package gitwatch

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"io"

	"github.com/go-git/go-git/v5/plumbing/filemode"
	"github.com/go-git/go-git/v5/plumbing/object"
)

// Where trdl and `git signatures` keep detached signatures: a notes ref
// whose notes commit is also tagged, so that a plain tag fetch brings it.
const (
	notesRef     = "refs/notes/signatures"
	signatureTag = "refs/tags/latest-signature"
)

// maxNoteSize bounds how much of a notes blob is read; a note holds a few
// base64 lines of a few hundred bytes each.
const maxNoteSize = 1 << 20

// errNoteTooLarge is reported as an ignored note, not as a failure: whoever
// can push notes must not be able to stop verification.
var errNoteTooLarge = errors.New("signatures note is larger than 1 MiB and was not read")

// parseNoteSignatures splits a signatures note into binary OpenPGP
// signatures. The format (as `git signatures add` writes it and trdl reads
// it) is one base64-encoded binary detached signature per line, made over
// the 40-hex commit id without a newline; `git notes append` separates
// entries with blank lines. Lines that are not base64 are counted in
// malformed and skipped: one bad line must not hide the good ones.
func parseNoteSignatures(note []byte) (sigs [][]byte, malformed int) {
	for _, line := range bytes.Split(note, []byte("\n")) {
		line = bytes.TrimSpace(line)
		if len(line) == 0 {
			continue
		}
		sig, err := base64.StdEncoding.DecodeString(string(line))
		if err != nil {
			// Some encoders drop the padding.
			sig, err = base64.RawStdEncoding.DecodeString(string(line))
		}
		if err != nil || len(sig) == 0 {
			malformed++
			continue
		}
		sigs = append(sigs, sig)
	}
	return sigs, malformed
}

// findNote returns the note attached to commit in a notes tree, following
// any fanout (ab/cdef..., ab/cd/ef..., as git notes rewrites the tree when
// it grows). A missing note gives nil and no error.
func findNote(tree *object.Tree, commit string) ([]byte, error) {
	rest := commit
	for {
		var next *object.TreeEntry
		for i := range tree.Entries {
			e := &tree.Entries[i]
			if e.Name == rest && e.Mode.IsFile() {
				return readBlob(tree, e)
			}
			if len(rest) > 2 && e.Name == rest[:2] && e.Mode == filemode.Dir {
				next = e
			}
		}
		if next == nil {
			return nil, nil
		}
		sub, err := tree.Tree(next.Name)
		if err != nil {
			return nil, fmt.Errorf("read notes fanout directory %s: %w", next.Name, err)
		}
		tree, rest = sub, rest[2:]
	}
}

func readBlob(tree *object.Tree, e *object.TreeEntry) ([]byte, error) {
	f, err := tree.TreeEntryFile(e)
	if err != nil {
		return nil, fmt.Errorf("read note %s: %w", e.Name, err)
	}
	r, err := f.Reader()
	if err != nil {
		return nil, fmt.Errorf("read note %s: %w", e.Name, err)
	}
	defer r.Close()
	data, err := io.ReadAll(io.LimitReader(r, maxNoteSize+1))
	if err != nil {
		return nil, fmt.Errorf("read note %s: %w", e.Name, err)
	}
	if len(data) > maxNoteSize {
		return nil, errNoteTooLarge
	}
	return data, nil
}
