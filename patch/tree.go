package patch

import (
	"fmt"
	"io/fs"
	"strings"
)

// EntryKind is what a tree holds at a path.
type EntryKind int

const (
	EntryMissing EntryKind = iota
	EntryFile
	EntryDir
	EntrySymlink
)

func (k EntryKind) String() string {
	switch k {
	case EntryMissing:
		return "missing"
	case EntryFile:
		return "file"
	case EntryDir:
		return "directory"
	case EntrySymlink:
		return "symlink"
	}
	return fmt.Sprintf("EntryKind(%d)", int(k))
}

// Entry describes one path of a Tree. Target is set for symlinks only.
type Entry struct {
	Kind   EntryKind
	Target string
}

// Tree is the read side the engine needs. It is lazy because repositories hold tens of thousands of
// files and the engine reads only the files it edits. Paths are clean and relative (see CleanPath).
// A missing path is reported by Lookup as EntryMissing, not as an error; errors are I/O failures.
type Tree interface {
	Lookup(path string) (Entry, error)
	ReadFile(path string) ([]byte, error)
}

// MapTree is an in-memory Tree for tests and for callers that already hold the files. Directories
// are implied by the file and symlink paths.
type MapTree struct {
	Files    map[string][]byte
	Symlinks map[string]string // path -> link target, as stored in git
}

// Lookup implements Tree.
func (t MapTree) Lookup(p string) (Entry, error) {
	if _, ok := t.Files[p]; ok {
		return Entry{Kind: EntryFile}, nil
	}
	if target, ok := t.Symlinks[p]; ok {
		return Entry{Kind: EntrySymlink, Target: target}, nil
	}
	prefix := p + "/"
	for name := range t.Files {
		if strings.HasPrefix(name, prefix) {
			return Entry{Kind: EntryDir}, nil
		}
	}
	for name := range t.Symlinks {
		if strings.HasPrefix(name, prefix) {
			return Entry{Kind: EntryDir}, nil
		}
	}
	return Entry{Kind: EntryMissing}, nil
}

// ReadFile implements Tree.
func (t MapTree) ReadFile(p string) ([]byte, error) {
	b, ok := t.Files[p]
	if !ok {
		return nil, &fs.PathError{Op: "read", Path: p, Err: fs.ErrNotExist}
	}
	return b, nil
}
