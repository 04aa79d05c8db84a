package patch

import (
	"errors"
	"fmt"
	"strings"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/filemode"
	fdiff "github.com/go-git/go-git/v5/plumbing/format/diff"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/go-git/go-git/v5/utils/diff"
	"github.com/sergi/go-diff/diffmatchpatch"
)

// unifiedDiff renders the changes against root the way `git diff` does, for
// a dry run's answer.
func unifiedDiff(root *object.Tree, changes []Change) (string, error) {
	p := &diffPatch{}
	for _, c := range changes {
		fp := &filePatch{}
		var old string
		e, err := root.FindEntry(c.Path)
		switch {
		case errors.Is(err, object.ErrEntryNotFound) || errors.Is(err, object.ErrDirectoryNotFound):
		case err != nil:
			return "", fmt.Errorf("diffing %q: %w", c.Path, err)
		default:
			f, err := root.TreeEntryFile(e)
			if err != nil {
				return "", fmt.Errorf("diffing %q: %w", c.Path, err)
			}
			if old, err = f.Contents(); err != nil {
				return "", fmt.Errorf("diffing %q: %w", c.Path, err)
			}
			fp.from = &diffFile{hash: e.Hash, mode: e.Mode, path: c.Path}
		}
		var new string
		if !c.Deleted {
			new = string(c.Content)
			mode := filemode.Regular
			if fp.from != nil && fp.from.mode == filemode.Executable {
				mode = filemode.Executable
			}
			fp.to = &diffFile{hash: plumbing.ComputeHash(plumbing.BlobObject, c.Content), mode: mode, path: c.Path}
		}
		for _, d := range diff.Do(old, new) {
			fp.chunks = append(fp.chunks, diffChunk{content: d.Text, op: chunkOp(d.Type)})
		}
		p.files = append(p.files, fp)
	}
	var b strings.Builder
	if err := fdiff.NewUnifiedEncoder(&b, fdiff.DefaultContextLines).Encode(p); err != nil {
		return "", fmt.Errorf("rendering the diff: %w", err)
	}
	return b.String(), nil
}

func chunkOp(t diffmatchpatch.Operation) fdiff.Operation {
	switch t {
	case diffmatchpatch.DiffInsert:
		return fdiff.Add
	case diffmatchpatch.DiffDelete:
		return fdiff.Delete
	default:
		return fdiff.Equal
	}
}

type diffPatch struct{ files []*filePatch }

func (p *diffPatch) FilePatches() []fdiff.FilePatch {
	out := make([]fdiff.FilePatch, len(p.files))
	for i, f := range p.files {
		out[i] = f
	}
	return out
}

func (p *diffPatch) Message() string { return "" }

type filePatch struct {
	from, to *diffFile
	chunks   []fdiff.Chunk
}

func (f *filePatch) IsBinary() bool { return false }

// Files returns untyped nils for a missing side: the encoder tests from == nil.
func (f *filePatch) Files() (from, to fdiff.File) {
	if f.from != nil {
		from = f.from
	}
	if f.to != nil {
		to = f.to
	}
	return from, to
}

func (f *filePatch) Chunks() []fdiff.Chunk { return f.chunks }

type diffFile struct {
	hash plumbing.Hash
	mode filemode.FileMode
	path string
}

func (f *diffFile) Hash() plumbing.Hash     { return f.hash }
func (f *diffFile) Mode() filemode.FileMode { return f.mode }
func (f *diffFile) Path() string            { return f.path }

type diffChunk struct {
	content string
	op      fdiff.Operation
}

func (c diffChunk) Content() string       { return c.content }
func (c diffChunk) Type() fdiff.Operation { return c.op }
