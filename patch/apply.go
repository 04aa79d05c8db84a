package patch

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"path"
	"sort"
	"strings"
)

// Change is one file the commands wrote or deleted.
type Change struct {
	Path    string
	Content []byte
	Deleted bool
}

// fileState is a file touched by the commands: what the tree had and what it has now.
type fileState struct {
	origExists bool
	origKnown  bool // orig was read (a deleted file is not read)
	orig       []byte
	exists     bool
	content    []byte
	parsed     *yamlFile   // parse of content, reused by the next command on the file
	editor     *fileEditor // setField edits not yet written into content
}

type applier struct {
	tree   Tree
	lim    Limits
	cmds   []Command
	files  map[string]*fileState
	budget *parseBudget
	work   *selectBudget
}

// Apply runs the commands in order against tree, all or nothing: it returns the changed files
// sorted by path, each command seeing the edits of the ones before it, or an error and no changes.
// A file whose bytes end up as they were yields no Change. Failures caused by the request or the
// files are *Error values; tree read failures and cancellation are returned wrapped.
func Apply(ctx context.Context, tree Tree, cmds []Command, lim Limits) ([]Change, error) {
	lim = lim.withDefaults()
	cmds = append([]Command(nil), cmds...) // validation cleans paths in place
	if err := validateCommands(cmds, lim); err != nil {
		return nil, err
	}
	a := &applier{tree: tree, lim: lim, cmds: cmds, files: map[string]*fileState{}, budget: newParseBudget(lim), work: newSelectBudget(lim.MaxSelectNodes)}
	for i, c := range cmds {
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("applying commands: %w", err)
		}
		if err := a.apply(i, c); err != nil {
			return nil, err
		}
	}
	paths := make([]string, 0, len(a.files))
	for p := range a.files {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	for _, p := range paths {
		if err := a.write(a.files[p]); err != nil {
			return nil, err
		}
	}
	return a.changes(), nil
}

// write puts the pending setField edits of a file into its content (one parse and verification
// for all of them).
func (a *applier) write(fs *fileState) error {
	if fs.editor == nil {
		return nil
	}
	ed := fs.editor
	fs.editor = nil
	if err := ed.flush(); err != nil {
		return a.cmdError(err)
	}
	fs.content, fs.parsed = ed.f.src, ed.f
	return nil
}

func (a *applier) cmdError(err *cmdError) error {
	c := a.cmds[err.cmd]
	field := ""
	if c.SetField != nil {
		field = c.SetField.Field
	}
	return &Error{Kind: err.kind, Index: err.cmd, Path: c.Path, Field: field, Msg: err.msg}
}

func (a *applier) apply(i int, c Command) error {
	field := ""
	if c.SetField != nil {
		field = c.SetField.Field
	}
	fail := func(err *fieldError) error {
		return &Error{Kind: err.kind, Index: i, Path: c.Path, Field: field, Msg: err.msg}
	}
	// A Tree may refuse an entry itself (a git submodule); that is the request's fault, so
	// it is answered as this command's *Error. Anything else is an I/O failure.
	treeFail := func(err error) error {
		var e *Error
		if errors.As(err, &e) {
			return &Error{Kind: e.Kind, Index: i, Path: c.Path, Field: field, Msg: e.Msg}
		}
		return fmt.Errorf("commands[%d] %s: %w", i, c.Path, err)
	}
	entry, ferr, err := a.checkPath(c.Path)
	if err != nil {
		return treeFail(err)
	}
	if ferr != nil {
		return fail(ferr)
	}
	switch {
	case c.SetField != nil:
		if entry.Kind != EntryFile {
			return fail(entryError(entry, "no such file"))
		}
		fs, err := a.state(c.Path, true)
		if err != nil {
			return treeFail(err)
		}
		if fs.editor == nil {
			if fs.parsed == nil {
				f, ferr := a.budget.parse(fs.content, a.lim)
				if ferr != nil {
					return fail(ferr)
				}
				fs.parsed = f
			}
			fs.editor = newFileEditor(fs.parsed, a.lim, a.budget, a.work)
		}
		p, perr := compilePath(c.SetField.Field)
		if perr != nil {
			return fail(errorf(KindInvalid, "%s", perr.Error()))
		}
		v, verr := parseJSONValue(c.SetField.Value)
		if verr != nil {
			return fail(errorf(KindInvalid, "value is not valid JSON: %s", JSONErrorText(verr)))
		}
		if err := fs.editor.set(i, p, v, c.SetField.Create, c.SetField.AllowAliased); err != nil {
			return a.cmdError(err)
		}
	case c.CreateFile != nil:
		switch entry.Kind {
		case EntryDir:
			return fail(errorf(KindConflict, "a directory exists at this path"))
		case EntryFile:
			if !c.CreateFile.Overwrite {
				return fail(errorf(KindConflict, "file already exists; set overwrite: true to replace it"))
			}
		}
		content := []byte(*c.CreateFile.Content)
		var parsed *yamlFile
		if ext := strings.ToLower(path.Ext(c.Path)); ext == ".yaml" || ext == ".yml" {
			f, ferr := a.budget.parse(content, a.lim)
			if ferr != nil {
				return fail(errorf(ferr.kind, "content: %s", ferr.msg))
			}
			parsed = f
		}
		fs, err := a.state(c.Path, entry.Kind == EntryFile)
		if err != nil {
			return treeFail(err)
		}
		if err := a.write(fs); err != nil {
			return err
		}
		fs.exists, fs.content, fs.parsed = true, content, parsed
	case c.DeleteFile != nil:
		if entry.Kind != EntryFile {
			return fail(entryError(entry, "cannot delete: no such file"))
		}
		fs, err := a.state(c.Path, false)
		if err != nil {
			return treeFail(err)
		}
		if err := a.write(fs); err != nil {
			return err
		}
		fs.exists, fs.content, fs.parsed = false, nil, nil
	}
	return nil
}

func entryError(e Entry, missing string) *fieldError {
	if e.Kind == EntryDir {
		return errorf(KindInvalid, "this is a directory, not a file")
	}
	return errorf(KindNotFound, "%s", missing)
}

// state returns the record of a touched file, creating it; read says whether to read the tree's
// version (needed when a command edits or may reproduce it).
func (a *applier) state(p string, read bool) (*fileState, error) {
	if fs, ok := a.files[p]; ok {
		return fs, nil
	}
	e, err := a.tree.Lookup(p)
	if err != nil {
		return nil, fmt.Errorf("looking up in the repository tree: %w", err)
	}
	fs := &fileState{origExists: e.Kind == EntryFile}
	if fs.origExists && read {
		b, err := a.tree.ReadFile(p)
		if err != nil {
			return nil, fmt.Errorf("reading from the repository tree: %w", err)
		}
		fs.orig, fs.origKnown = b, true
		fs.content, fs.exists = b, true
	}
	a.files[p] = fs
	return fs, nil
}

// lookup sees the tree through the edits made so far.
func (a *applier) lookup(p string) (Entry, error) {
	if fs, ok := a.files[p]; ok {
		if fs.exists {
			return Entry{Kind: EntryFile}, nil
		}
		return Entry{Kind: EntryMissing}, nil
	}
	prefix := p + "/"
	for name, fs := range a.files {
		if fs.exists && strings.HasPrefix(name, prefix) {
			return Entry{Kind: EntryDir}, nil
		}
	}
	return a.tree.Lookup(p)
}

// checkPath walks the components of a clean path: no component may be a symlink (one that stays
// inside the tree is refused too, so a command always names the file it changes) and every parent
// must be a directory or missing. It returns what is at the path itself.
func (a *applier) checkPath(p string) (Entry, *fieldError, error) {
	parts := strings.Split(p, "/")
	for i := range parts {
		sub := strings.Join(parts[:i+1], "/")
		e, err := a.lookup(sub)
		if err != nil {
			return Entry{}, nil, fmt.Errorf("looking up %s in the repository tree: %w", sub, err)
		}
		switch {
		case e.Kind == EntrySymlink:
			resolved := path.Join(path.Dir(sub), e.Target)
			if path.IsAbs(e.Target) || resolved == ".." || strings.HasPrefix(resolved, "../") {
				return Entry{}, errorf(KindInvalid, "invalid path: %s is a symlink to %s, which leaves the repository", sub, e.Target), nil
			}
			return Entry{}, errorf(KindInvalid, "invalid path: %s is a symlink to %s; symlinks are not followed, name the target path instead", sub, e.Target), nil
		case i == len(parts)-1:
			return e, nil, nil
		case e.Kind == EntryFile:
			return Entry{}, errorf(KindConflict, "invalid path: %s is a file, not a directory", sub), nil
		case e.Kind == EntryMissing:
			// Nothing below a missing directory exists; what is left is created as needed.
			return Entry{Kind: EntryMissing}, nil, nil
		}
	}
	return Entry{Kind: EntryMissing}, nil, nil
}

func (a *applier) changes() []Change {
	paths := make([]string, 0, len(a.files))
	for p := range a.files {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	var out []Change
	for _, p := range paths {
		fs := a.files[p]
		switch {
		case !fs.exists && fs.origExists:
			out = append(out, Change{Path: p, Deleted: true})
		case fs.exists && (!fs.origExists || !fs.origKnown || !bytes.Equal(fs.orig, fs.content)):
			out = append(out, Change{Path: p, Content: fs.content})
		}
	}
	return out
}
