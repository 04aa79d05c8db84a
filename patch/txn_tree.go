package patch

import (
	"errors"
	"fmt"
	"io/fs"
	"path"
	"sort"
	"strings"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/filemode"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/go-git/go-git/v5/plumbing/storer"
)

// changeNode is one directory level of the pending changes: a rewrite of a
// commit's tree touches only the trees on the way to a changed path, so a
// patch to one file of a 20,000-file repository writes a handful of objects.
type changeNode struct {
	children map[string]*changeNode
	change   *Change // set on leaves
}

func buildChangeTree(changes []Change) (*changeNode, error) {
	root := &changeNode{children: map[string]*changeNode{}}
	for i := range changes {
		c := &changes[i]
		parts := strings.Split(c.Path, "/")
		n := root
		for j, name := range parts {
			if name == "" || name == "." || name == ".." {
				return nil, fmt.Errorf("change %d: %q is not a clean relative path", i, c.Path)
			}
			child := n.children[name]
			last := j == len(parts)-1
			switch {
			case child == nil && last:
				child = &changeNode{change: c}
			case child == nil:
				child = &changeNode{children: map[string]*changeNode{}}
			case last || child.change != nil:
				return nil, fmt.Errorf("change %d: %q is changed twice or is both a file and a directory", i, c.Path)
			}
			n.children[name] = child
			n = child
		}
	}
	return root, nil
}

// treeWriter writes new tree and blob objects into out while reading the
// unchanged ones from base.
type treeWriter struct {
	base storer.EncodedObjectStorer
	out  storer.EncodedObjectStorer
	// written lists every object stored in out, in the order written: exactly
	// what the pushed pack must hold on top of what the remote already has.
	written []plumbing.Hash
}

func (w *treeWriter) store(o plumbing.EncodedObject) (plumbing.Hash, error) {
	h, err := w.out.SetEncodedObject(o)
	if err != nil {
		return plumbing.ZeroHash, fmt.Errorf("storing a new git object: %w", err)
	}
	w.written = append(w.written, h)
	return h, nil
}

func (w *treeWriter) writeBlob(content []byte) (plumbing.Hash, error) {
	o := w.out.NewEncodedObject()
	o.SetType(plumbing.BlobObject)
	o.SetSize(int64(len(content)))
	wr, err := o.Writer()
	if err != nil {
		return plumbing.ZeroHash, fmt.Errorf("writing a new blob: %w", err)
	}
	if _, err := wr.Write(content); err != nil {
		return plumbing.ZeroHash, fmt.Errorf("writing a new blob: %w", err)
	}
	if err := wr.Close(); err != nil {
		return plumbing.ZeroHash, fmt.Errorf("writing a new blob: %w", err)
	}
	return w.store(o)
}

// rewrite returns the hash of the tree at dir after applying n's changes to
// the tree base (zero: the directory does not exist yet). empty reports a tree
// left without entries, which git does not keep, so the caller drops it.
func (w *treeWriter) rewrite(base plumbing.Hash, dir string, n *changeNode) (h plumbing.Hash, empty bool, err error) {
	var entries []object.TreeEntry
	if !base.IsZero() {
		t, err := object.GetTree(w.base, base)
		if err != nil {
			return plumbing.ZeroHash, false, fmt.Errorf("reading tree %q (%s): %w", dir, base, err)
		}
		entries = append(entries, t.Entries...)
	}
	index := make(map[string]int, len(entries))
	for i, e := range entries {
		index[e.Name] = i
	}
	removed := map[string]bool{}
	set := func(e object.TreeEntry) {
		if i, ok := index[e.Name]; ok {
			entries[i] = e
			return
		}
		index[e.Name] = len(entries)
		entries = append(entries, e)
	}

	names := make([]string, 0, len(n.children))
	for name := range n.children {
		names = append(names, name)
	}
	sort.Strings(names) // deterministic object order in the pack
	for _, name := range names {
		child := n.children[name]
		p := path.Join(dir, name)
		i, exists := index[name]
		var old object.TreeEntry
		if exists {
			old = entries[i]
		}
		if child.change != nil {
			c := child.change
			if exists && old.Mode == filemode.Dir {
				return plumbing.ZeroHash, false, fmt.Errorf("%q is a directory, not a file", p)
			}
			if c.Deleted {
				if exists {
					removed[name] = true
				}
				continue
			}
			mode := filemode.Regular
			if exists && (old.Mode == filemode.Executable) {
				mode = old.Mode // keep the executable bit of an edited script
			}
			bh, err := w.writeBlob(c.Content)
			if err != nil {
				return plumbing.ZeroHash, false, err
			}
			set(object.TreeEntry{Name: name, Mode: mode, Hash: bh})
			continue
		}
		var sub plumbing.Hash
		if exists {
			if old.Mode != filemode.Dir {
				return plumbing.ZeroHash, false, fmt.Errorf("%q is a file, not a directory", p)
			}
			sub = old.Hash
		}
		th, subEmpty, err := w.rewrite(sub, p, child)
		if err != nil {
			return plumbing.ZeroHash, false, err
		}
		if subEmpty {
			if exists {
				removed[name] = true
			}
			continue
		}
		set(object.TreeEntry{Name: name, Mode: filemode.Dir, Hash: th})
	}

	kept := entries[:0]
	for _, e := range entries {
		if !removed[e.Name] {
			kept = append(kept, e)
		}
	}
	if len(kept) == 0 {
		return plumbing.ZeroHash, true, nil
	}
	sort.Sort(object.TreeEntrySorter(kept))
	t := &object.Tree{Entries: kept}
	o := w.out.NewEncodedObject()
	if err := t.Encode(o); err != nil {
		return plumbing.ZeroHash, false, fmt.Errorf("encoding tree %q: %w", dir, err)
	}
	if !base.IsZero() && o.Hash() == base {
		return base, false, nil // unchanged: the remote has it already
	}
	h, err = w.store(o)
	return h, false, err
}

// sameContent reports whether the change leaves the file as it is in root.
func sameContent(root *object.Tree, c Change) (bool, error) {
	e, err := root.FindEntry(c.Path)
	if errors.Is(err, object.ErrEntryNotFound) || errors.Is(err, object.ErrDirectoryNotFound) {
		return c.Deleted, nil // deleting an absent file changes nothing; writing one does
	}
	if err != nil {
		return false, fmt.Errorf("looking up %q: %w", c.Path, err)
	}
	if c.Deleted || e.Mode == filemode.Dir {
		return false, nil
	}
	return e.Hash == plumbing.ComputeHash(plumbing.BlobObject, c.Content), nil
}

// gitTree is the engine's read side over one commit's tree. It reads only what
// the commands touch: the trees on the way to a path and the edited blobs.
type gitTree struct {
	store  storer.EncodedObjectStorer
	root   *object.Tree
	limits Limits
}

// Lookup implements Tree.
func (t *gitTree) Lookup(p string) (Entry, error) {
	e, err := t.root.FindEntry(p)
	if errors.Is(err, object.ErrEntryNotFound) || errors.Is(err, object.ErrDirectoryNotFound) {
		return Entry{Kind: EntryMissing}, nil
	}
	if err != nil {
		return Entry{}, fmt.Errorf("looking up %q: %w", p, err)
	}
	switch e.Mode {
	case filemode.Dir:
		return Entry{Kind: EntryDir}, nil
	case filemode.Symlink:
		target, err := t.readBlob(p, e.Hash)
		if err != nil {
			return Entry{}, err
		}
		return Entry{Kind: EntrySymlink, Target: string(target)}, nil
	case filemode.Submodule:
		return Entry{}, &Error{Kind: KindInvalid, Index: -1, Path: p, Msg: "is a git submodule, which the patch path does not edit"}
	default:
		return Entry{Kind: EntryFile}, nil
	}
}

// ReadFile implements Tree.
func (t *gitTree) ReadFile(p string) ([]byte, error) {
	e, err := t.root.FindEntry(p)
	if errors.Is(err, object.ErrEntryNotFound) || errors.Is(err, object.ErrDirectoryNotFound) {
		return nil, &fs.PathError{Op: "read", Path: p, Err: fs.ErrNotExist}
	}
	if err != nil {
		return nil, fmt.Errorf("looking up %q: %w", p, err)
	}
	if e.Mode == filemode.Dir || e.Mode == filemode.Submodule {
		return nil, &fs.PathError{Op: "read", Path: p, Err: fs.ErrInvalid}
	}
	return t.readBlob(p, e.Hash)
}

func (t *gitTree) readBlob(p string, h plumbing.Hash) ([]byte, error) {
	o, err := t.store.EncodedObject(plumbing.BlobObject, h)
	if err != nil {
		return nil, fmt.Errorf("reading %q (blob %s): %w", p, h, err)
	}
	max := t.limits.withDefaults().MaxFileBytes
	if o.Size() > int64(max) {
		return nil, &Error{Kind: KindLimit, Index: -1, Path: p, Msg: fmt.Sprintf("the file is %d bytes, over the %d-byte limit", o.Size(), max)}
	}
	b, err := objectBytes(o)
	if err != nil {
		return nil, fmt.Errorf("reading %q (blob %s): %w", p, h, err)
	}
	return b, nil
}
