package container

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"path"
	"sort"
	"strings"
	"time"
)

// rebaseTar copies the tar stream read from src to dst with every entry moved
// under dir (no leading slash), owned by root, so the archive can be unpacked
// at "/" whether or not dir exists in the image. Entries that would escape
// dir, and entry types other than files, directories and links, are refused.
func rebaseTar(dst io.Writer, src io.Reader, dir string) error {
	tw := tar.NewWriter(dst)
	// The directory itself first, so an empty commit still yields dir.
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: dir + "/", Mode: 0o755, ModTime: time.Unix(0, 0)}); err != nil {
		return err
	}
	tr := tar.NewReader(src)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("reading the commit's file archive: %w", err)
		}
		name, err := rebaseName(dir, hdr.Name)
		if err != nil {
			return err
		}
		if name == "" {
			continue // the root itself, already written
		}
		out := &tar.Header{
			Name:     name,
			Mode:     hdr.Mode & 0o7777 &^ 0o6000, // no setuid/setgid from a commit
			ModTime:  hdr.ModTime,
			Typeflag: hdr.Typeflag,
			Size:     hdr.Size,
			Format:   tar.FormatPAX,
		}
		switch hdr.Typeflag {
		case tar.TypeReg, tar.TypeDir:
		case tar.TypeSymlink:
			// Symlinks resolve inside the container's own filesystem.
			out.Linkname = hdr.Linkname
		case tar.TypeLink:
			// Hard links name another archive entry, which moved too.
			if out.Linkname, err = rebaseName(dir, hdr.Linkname); err != nil {
				return err
			}
		default:
			return fmt.Errorf("%w: commit archive entry %q has unsupported type %q", ErrInvalidSpec, hdr.Name, string(hdr.Typeflag))
		}
		if err := tw.WriteHeader(out); err != nil {
			return fmt.Errorf("writing %q to the container archive: %w", hdr.Name, err)
		}
		if hdr.Typeflag == tar.TypeReg {
			if _, err := io.Copy(tw, tr); err != nil {
				return fmt.Errorf("copying %q into the container archive: %w", hdr.Name, err)
			}
		}
	}
	return tw.Close()
}

// rebaseName maps an archive entry name to dir/name, or "" for the root.
func rebaseName(dir, name string) (string, error) {
	clean := path.Clean("/" + name)
	if strings.Contains(name, "\x00") || hasDotDot(name) {
		return "", fmt.Errorf("%w: commit archive entry %q leaves the working directory", ErrInvalidSpec, name)
	}
	if clean == "/" {
		return "", nil
	}
	return dir + clean, nil
}

func hasDotDot(name string) bool {
	for _, part := range strings.Split(name, "/") {
		if part == ".." {
			return true
		}
	}
	return false
}

// extraFilesTar writes files (absolute container paths) as a tar for "/".
// Missing parent directories are created by the engine.
func extraFilesTar(w io.Writer, files map[string][]byte) error {
	paths := make([]string, 0, len(files))
	for p := range files {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	tw := tar.NewWriter(w)
	for _, p := range paths {
		name, err := extraFileName(p)
		if err != nil {
			return err
		}
		data := files[p]
		hdr := &tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644, Size: int64(len(data)), ModTime: time.Unix(0, 0)}
		if err := tw.WriteHeader(hdr); err != nil {
			return fmt.Errorf("archiving extra file %s: %w", p, err)
		}
		if _, err := tw.Write(data); err != nil {
			return fmt.Errorf("archiving extra file %s: %w", p, err)
		}
	}
	return tw.Close()
}
