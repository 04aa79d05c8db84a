package gitwatch

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"io"

	"github.com/go-git/go-git/v5/plumbing/filemode"
	"github.com/go-git/go-git/v5/plumbing/object"
)

// Where trdl and `git signatures` keep detached signatures: a notes ref
// whose notes commit is also tagged, so that a plain tag fetch brings it.
// A push to either may make a refused HEAD runnable.
const (
	NotesRef     = "refs/notes/signatures"
	SignatureTag = "refs/tags/latest-signature"
)

// maxNoteSize bounds the bytes read from one notes blob. A note holds a
// few base64 lines of a few hundred bytes each (an RSA-4096 signature is
// about 800, an Ed25519 one about 160): 32 KiB is some 40 of the largest.
// Whoever may push notes may write more; only this much is read, so what a
// commit's notes cost does not grow with them.
const maxNoteSize = 32 << 10

// parseNoteSignatures splits a signatures note into binary OpenPGP
// signatures. The format (as `git signatures add` writes it and trdl reads
// it) is one base64-encoded binary detached signature per line, made over
// the 40-hex commit id without a newline; `git notes append` separates
// entries with blank lines. Lines that are not base64 are counted in
// malformed and skipped: one bad line must not hide the good ones.
func parseNoteSignatures(note []byte) (sigs [][]byte, malformed int) {
	// One buffer for all: a note is read whole, so its decoded signatures
	// are no bigger than it.
	buf := make([]byte, base64.RawStdEncoding.DecodedLen(len(note)))
	for line := range bytes.SplitSeq(note, []byte("\n")) {
		line = bytes.TrimSpace(line)
		if len(line) == 0 {
			continue
		}
		n, err := base64.StdEncoding.Decode(buf, line)
		if err != nil {
			// Some encoders drop the padding.
			n, err = base64.RawStdEncoding.Decode(buf, line)
		}
		if err != nil || n == 0 {
			malformed++
			continue
		}
		sigs = append(sigs, buf[:n:n])
		buf = buf[n:]
	}
	return sigs, malformed
}

// findNote returns the note attached to commit in a notes tree, following
// any fanout (ab/cdef..., ab/cd/ef..., as git notes rewrites the tree when
// it grows), read up to maxNoteSize; size is the note's whole size (more
// than len(note) when it was cut). A missing note gives nil and no error.
func findNote(tree *object.Tree, commit string) (note []byte, size int64, err error) {
	rest := commit
	for {
		var next *object.TreeEntry
		for i := range tree.Entries {
			e := &tree.Entries[i]
			if e.Name == rest && e.Mode.IsFile() {
				return readNote(tree, e)
			}
			if len(rest) > 2 && e.Name == rest[:2] && e.Mode == filemode.Dir {
				next = e
			}
		}
		if next == nil {
			return nil, 0, nil
		}
		sub, err := tree.Tree(next.Name)
		if err != nil {
			return nil, 0, fmt.Errorf("read notes fanout directory %s: %w", next.Name, err)
		}
		tree, rest = sub, rest[2:]
	}
}

// readNote reads a notes blob up to maxNoteSize, cut after its last whole
// line when it is longer.
func readNote(tree *object.Tree, e *object.TreeEntry) ([]byte, int64, error) {
	f, err := tree.TreeEntryFile(e)
	if err != nil {
		return nil, 0, fmt.Errorf("read note %s: %w", e.Name, err)
	}
	r, err := f.Reader()
	if err != nil {
		return nil, 0, fmt.Errorf("read note %s: %w", e.Name, err)
	}
	defer r.Close()
	data := make([]byte, min(max(f.Size, 0), maxNoteSize))
	if _, err := io.ReadFull(r, data); err != nil {
		return nil, 0, fmt.Errorf("read note %s: %w", e.Name, err)
	}
	if f.Size > maxNoteSize {
		data = data[:bytes.LastIndexByte(data, '\n')+1]
	}
	return data, f.Size, nil
}
