package container

import (
	"archive/tar"
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
)

type entry struct {
	name, link string
	typ        byte
	mode       int64
	body       string
}

func writeEntries(t testing.TB, entries []entry) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		hdr := &tar.Header{Name: e.name, Linkname: e.link, Typeflag: e.typ, Mode: e.mode, Size: int64(len(e.body)), Uid: 1000, Gid: 1000, Uname: "dev", Gname: "dev"}
		if e.typ != tar.TypeReg {
			hdr.Size = 0
		}
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatal(err)
		}
		if e.typ == tar.TypeReg {
			if _, err := io.WriteString(tw, e.body); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func readEntries(t testing.TB, data []byte) []entry {
	t.Helper()
	var out []entry
	tr := tar.NewReader(bytes.NewReader(data))
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		if hdr.Uid != 0 || hdr.Gid != 0 || hdr.Uname != "" || hdr.Gname != "" {
			t.Errorf("%s: owner %d:%d %q:%q, want root", hdr.Name, hdr.Uid, hdr.Gid, hdr.Uname, hdr.Gname)
		}
		body, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, entry{name: hdr.Name, link: hdr.Linkname, typ: hdr.Typeflag, mode: hdr.Mode, body: string(body)})
	}
}

func TestRebaseTar(t *testing.T) {
	root := entry{name: "git/", typ: tar.TypeDir, mode: 0o755}
	tests := []struct {
		name    string
		in      []entry
		want    []entry
		wantErr string
	}{
		{name: "empty archive still yields the directory", want: []entry{root}},
		{
			name: "files, dirs and links move under git/",
			in: []entry{
				{name: "./", typ: tar.TypeDir, mode: 0o755},
				{name: "dir/", typ: tar.TypeDir, mode: 0o750},
				{name: "dir/run.sh", typ: tar.TypeReg, mode: 0o755, body: "#!/bin/sh\n"},
				{name: "/abs.txt", typ: tar.TypeReg, mode: 0o644, body: "abs"},
				{name: "link", typ: tar.TypeSymlink, link: "../../etc/passwd", mode: 0o777},
				{name: "hard", typ: tar.TypeLink, link: "dir/run.sh"},
			},
			want: []entry{
				root,
				{name: "git/dir", typ: tar.TypeDir, mode: 0o750},
				{name: "git/dir/run.sh", typ: tar.TypeReg, mode: 0o755, body: "#!/bin/sh\n"},
				{name: "git/abs.txt", typ: tar.TypeReg, mode: 0o644, body: "abs"},
				{name: "git/link", typ: tar.TypeSymlink, link: "../../etc/passwd", mode: 0o777},
				{name: "git/hard", typ: tar.TypeLink, link: "git/dir/run.sh"},
			},
		},
		{
			name: "setuid and setgid bits are dropped",
			in:   []entry{{name: "suid", typ: tar.TypeReg, mode: 0o6755, body: "x"}},
			want: []entry{root, {name: "git/suid", typ: tar.TypeReg, mode: 0o755, body: "x"}},
		},
		{name: "dot-dot entry", in: []entry{{name: "a/../../etc/passwd", typ: tar.TypeReg, mode: 0o644}}, wantErr: "leaves the working directory"},
		{name: "dot-dot hard link", in: []entry{{name: "h", typ: tar.TypeLink, link: "../etc/shadow"}}, wantErr: "leaves the working directory"},
		{name: "device node", in: []entry{{name: "dev", typ: tar.TypeChar, mode: 0o644}}, wantErr: "unsupported type"},
		{name: "fifo", in: []entry{{name: "fifo", typ: tar.TypeFifo, mode: 0o644}}, wantErr: "unsupported type"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out bytes.Buffer
			err := rebaseTar(&out, bytes.NewReader(writeEntries(t, tt.in)), "git")
			if tt.wantErr != "" {
				if !errors.Is(err, ErrInvalidSpec) || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("got %v, want ErrInvalidSpec mentioning %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got := readEntries(t, out.Bytes())
			if len(got) != len(tt.want) {
				t.Fatalf("got %d entries %+v, want %+v", len(got), got, tt.want)
			}
			for i := range got {
				if got[i] != tt.want[i] {
					t.Errorf("entry %d: got %+v, want %+v", i, got[i], tt.want[i])
				}
			}
		})
	}
}

func TestExtraFilesTar(t *testing.T) {
	var out bytes.Buffer
	err := extraFilesTar(&out, map[string][]byte{"/etc/ssl/ca.pem": []byte("CA"), "/b": nil})
	if err != nil {
		t.Fatal(err)
	}
	got := readEntries(t, out.Bytes())
	want := []entry{
		{name: "b", typ: tar.TypeReg, mode: 0o644},
		{name: "etc/ssl/ca.pem", typ: tar.TypeReg, mode: 0o644, body: "CA"},
	}
	if len(got) != len(want) || got[0] != want[0] || got[1] != want[1] {
		t.Fatalf("got %+v, want %+v", got, want)
	}
}

// FuzzRebaseTar: whatever the archive, the output never names a path outside
// git/ and rebaseTar never panics.
func FuzzRebaseTar(f *testing.F) {
	f.Add(writeEntries(f, []entry{{name: "a", typ: tar.TypeReg, mode: 0o644, body: "x"}}))
	f.Add(writeEntries(f, []entry{{name: "l", typ: tar.TypeLink, link: "a/../b"}}))
	f.Add([]byte("not a tar"))
	f.Fuzz(func(t *testing.T, data []byte) {
		var out bytes.Buffer
		if err := rebaseTar(&out, bytes.NewReader(data), "git"); err != nil {
			return
		}
		tr := tar.NewReader(&out)
		for {
			hdr, err := tr.Next()
			if errors.Is(err, io.EOF) {
				return
			}
			if err != nil {
				t.Fatalf("rebaseTar wrote an unreadable archive: %v", err)
			}
			names := []string{hdr.Name}
			if hdr.Typeflag == tar.TypeLink {
				names = append(names, hdr.Linkname)
			}
			for _, n := range names {
				if !strings.HasPrefix(n, "git/") || hasDotDot(n) {
					t.Fatalf("entry %q (link %q) escapes git/", hdr.Name, hdr.Linkname)
				}
			}
		}
	})
}
