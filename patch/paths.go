package patch

import (
	"errors"
	"fmt"
	"path"
	"strings"
)

// Git stores any path, but a checkout fails on names and paths longer than the file systems allow
// (NAME_MAX and PATH_MAX on Linux and macOS), so such a commit would break every clone.
const (
	maxNameBytes = 255
	maxPathBytes = 4096
)

// CleanPath checks a repository path once, for every command: it must be relative, not empty, free
// of NUL bytes, stay inside the tree after cleaning and never name anything under a .git directory.
// It returns the cleaned form, which is the only form used afterwards. Symlinks are checked against
// the tree in Apply because they need the tree's contents.
func CleanPath(p string) (string, error) {
	switch {
	case p == "":
		return "", errors.New("path is empty")
	case strings.IndexByte(p, 0) >= 0:
		return "", errors.New("path contains a NUL byte")
	case strings.HasPrefix(p, "/"):
		return "", errors.New("path must be relative to the repository root, not absolute")
	}
	c := path.Clean(p)
	switch {
	case c == ".":
		return "", errors.New("path names the repository root, not a file")
	case c == ".." || strings.HasPrefix(c, "../"):
		return "", errors.New("path leaves the repository")
	}
	if len(c) > maxPathBytes {
		return "", fmt.Errorf("path is %d bytes, at most %d are allowed: a checkout could not create it", len(c), maxPathBytes)
	}
	for _, part := range strings.Split(c, "/") {
		if len(part) > maxNameBytes {
			return "", fmt.Errorf("a file or directory name in the path is %d bytes, at most %d are allowed (the file systems' limit): shorten %.40q…", len(part), maxNameBytes, part)
		}
		// Case-insensitive: a checkout on a case-insensitive file system treats .GIT as .git.
		if strings.EqualFold(part, ".git") {
			return "", errors.New("path is inside a .git directory")
		}
	}
	return c, nil
}
