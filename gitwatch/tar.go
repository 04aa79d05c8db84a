package gitwatch

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/go-git/go-git/v5/plumbing/filemode"
	"github.com/go-git/go-git/v5/plumbing/object"
)

// maxSymlinkTarget bounds a symlink blob read into a tar header.
const maxSymlinkTarget = 4096

// WriteTar streams the files of commit as a tar archive: directories,
// regular and executable files with their modes, symlinks as symlinks, and
// submodules as empty directories (their content is not in this
// repository). Times are the committer time, owners root, so equal commits
// give equal archives. On error (including a cancelled ctx) the stream is
// incomplete and must be discarded.
func (m *Mirror) WriteTar(ctx context.Context, commit string, w io.Writer) error {
	h, err := parseCommitID(commit)
	if err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	c, err := m.repo.CommitObject(h)
	if err != nil {
		return fmt.Errorf("commit %s is not in the mirror (fetch first): %w", commit, err)
	}
	tree, err := c.Tree()
	if err != nil {
		return fmt.Errorf("read tree of %s: %w", commit, err)
	}
	mtime := c.Committer.When
	tw := tar.NewWriter(w)
	walker := object.NewTreeWalker(tree, true, nil)
	defer walker.Close()
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		name, entry, err := walker.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("walk tree of %s: %w", commit, err)
		}
		if err := checkTreePath(name); err != nil {
			return fmt.Errorf("commit %s: %w", commit, err)
		}
		hdr := &tar.Header{Name: name, ModTime: mtime, Format: tar.FormatPAX}
		switch entry.Mode {
		case filemode.Dir, filemode.Submodule:
			hdr.Typeflag, hdr.Name, hdr.Mode = tar.TypeDir, name+"/", 0o755
			if err := tw.WriteHeader(hdr); err != nil {
				return fmt.Errorf("write tar: %w", err)
			}
		case filemode.Symlink:
			target, err := blobContent(tree, &entry, name, maxSymlinkTarget)
			if err != nil {
				return err
			}
			hdr.Typeflag, hdr.Linkname, hdr.Mode = tar.TypeSymlink, string(target), 0o777
			if err := tw.WriteHeader(hdr); err != nil {
				return fmt.Errorf("write tar: %w", err)
			}
		case filemode.Regular, filemode.Deprecated, filemode.Executable:
			hdr.Typeflag, hdr.Mode = tar.TypeReg, 0o644
			if entry.Mode == filemode.Executable {
				hdr.Mode = 0o755
			}
			if err := writeTarFile(tw, tree, &entry, name, hdr); err != nil {
				return err
			}
		default:
			return fmt.Errorf("commit %s: %s has unsupported file mode %s", commit, name, entry.Mode)
		}
	}
	if err := tw.Close(); err != nil {
		return fmt.Errorf("write tar: %w", err)
	}
	return nil
}

// checkTreePath refuses names a hand-crafted tree could carry to escape the
// extraction directory or confuse git (git itself rejects them on checkout).
func checkTreePath(name string) error {
	for _, part := range strings.Split(name, "/") {
		switch {
		case part == "", part == ".", part == "..":
			return fmt.Errorf("tree path %q is not a clean relative path", name)
		case strings.EqualFold(part, ".git"):
			return fmt.Errorf("tree path %q contains a .git component", name)
		case strings.ContainsRune(part, 0):
			return fmt.Errorf("tree path %q contains a NUL byte", name)
		}
	}
	return nil
}

func writeTarFile(tw *tar.Writer, tree *object.Tree, entry *object.TreeEntry, name string, hdr *tar.Header) error {
	f, err := tree.TreeEntryFile(entry)
	if err != nil {
		return fmt.Errorf("read %s: %w", name, err)
	}
	hdr.Size = f.Size
	r, err := f.Reader()
	if err != nil {
		return fmt.Errorf("read %s: %w", name, err)
	}
	defer r.Close()
	if err := tw.WriteHeader(hdr); err != nil {
		return fmt.Errorf("write tar: %w", err)
	}
	if _, err := io.Copy(tw, r); err != nil {
		return fmt.Errorf("write %s to tar: %w", name, err)
	}
	return nil
}

func blobContent(tree *object.Tree, entry *object.TreeEntry, name string, limit int64) ([]byte, error) {
	f, err := tree.TreeEntryFile(entry)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", name, err)
	}
	if f.Size > limit {
		return nil, fmt.Errorf("symlink %s target is longer than %d bytes", name, limit)
	}
	r, err := f.Reader()
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", name, err)
	}
	defer r.Close()
	data, err := io.ReadAll(r)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", name, err)
	}
	return data, nil
}
