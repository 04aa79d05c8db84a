// Command releasezip writes the zip archive of one release binary so that the
// same binary always gives the same bytes: one entry, mode 0755, the given
// modification time in UTC, no owner, no extra fields but the timestamp.
// archive/zip and compress/flate make the output a function of the input and
// the Go version, which a release already fixes for the binaries; the zip
// tool of the builder's distribution would add its own version to that.
//
//	go run ./scripts/releasezip -mtime 1700000000 -name flant_gitops out.zip in
package main

import (
	"archive/zip"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"time"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintf(os.Stderr, "releasezip: %v\n", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("releasezip", flag.ContinueOnError)
	mtime := fs.Int64("mtime", -1, "modification time of the entry, in Unix seconds (SOURCE_DATE_EPOCH)")
	name := fs.String("name", "", "name of the entry in the archive")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 2 || *name == "" || *mtime < 0 {
		return errors.New("usage: releasezip -mtime SECONDS -name ENTRY OUT.zip IN")
	}
	return write(fs.Arg(0), fs.Arg(1), *name, time.Unix(*mtime, 0).UTC())
}

func write(out, in, name string, mtime time.Time) (err error) {
	src, err := os.Open(in)
	if err != nil {
		return fmt.Errorf("open the binary: %w", err)
	}
	defer src.Close()
	f, err := os.Create(out)
	if err != nil {
		return fmt.Errorf("create the archive: %w", err)
	}
	defer func() {
		if cerr := f.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("close %s: %w", out, cerr)
		}
	}()
	zw := zip.NewWriter(f)
	h := &zip.FileHeader{Name: name, Method: zip.Deflate, Modified: mtime}
	h.SetMode(0o755)
	w, err := zw.CreateHeader(h)
	if err != nil {
		return fmt.Errorf("add %s: %w", name, err)
	}
	if _, err := io.Copy(w, src); err != nil {
		return fmt.Errorf("compress %s: %w", in, err)
	}
	if err := zw.Close(); err != nil {
		return fmt.Errorf("finish %s: %w", out, err)
	}
	return nil
}
