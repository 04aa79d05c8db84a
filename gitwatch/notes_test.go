package gitwatch

import (
	"bytes"
	"encoding/base64"
	"strings"
	"testing"
	"time"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/filemode"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/go-git/go-git/v5/storage/memory"

	"github.com/flant/flant_gitops/gitwatch/gittest"
	"github.com/flant/flant_gitops/gitwatch/pgptest"
)

func TestParseNoteSignatures(t *testing.T) {
	tests := []struct {
		name          string
		note          string
		wantSigs      []string
		wantMalformed int
	}{
		{name: "empty", note: ""},
		{name: "one line", note: "AQID\n", wantSigs: []string{"\x01\x02\x03"}},
		{name: "git notes append separates with blank lines", note: "AQID\n\nBAUG\n", wantSigs: []string{"\x01\x02\x03", "\x04\x05\x06"}},
		{name: "CRLF and spaces", note: "  AQID \r\n", wantSigs: []string{"\x01\x02\x03"}},
		{name: "unpadded base64", note: "AQ\n", wantSigs: []string{"\x01"}},
		{name: "garbage line skipped", note: "not base64!\nAQID\n", wantSigs: []string{"\x01\x02\x03"}, wantMalformed: 1},
		{name: "armor header line is malformed", note: "-----BEGIN PGP SIGNATURE-----\n", wantMalformed: 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			sigs, malformed := parseNoteSignatures([]byte(tc.note))
			var got []string
			for _, s := range sigs {
				got = append(got, string(s))
			}
			if strings.Join(got, "|") != strings.Join(tc.wantSigs, "|") || malformed != tc.wantMalformed {
				t.Errorf("parseNoteSignatures = %q, %d; want %q, %d", got, malformed, tc.wantSigs, tc.wantMalformed)
			}
		})
	}
}

// TestFindNoteFanout builds notes trees the way git lays them out as they
// grow (no fanout, 2/38, 2/2/36) and finds the note in each.
func TestFindNoteFanout(t *testing.T) {
	const commit = "0123456789abcdef0123456789abcdef01234567"
	st := memory.NewStorage()
	blob := func(content string) plumbing.Hash {
		o := st.NewEncodedObject()
		o.SetType(plumbing.BlobObject)
		w, _ := o.Writer()
		_, _ = w.Write([]byte(content))
		_ = w.Close()
		h, err := st.SetEncodedObject(o)
		if err != nil {
			t.Fatal(err)
		}
		return h
	}
	tree := func(entries ...object.TreeEntry) plumbing.Hash {
		o := st.NewEncodedObject()
		if err := (&object.Tree{Entries: entries}).Encode(o); err != nil {
			t.Fatal(err)
		}
		h, err := st.SetEncodedObject(o)
		if err != nil {
			t.Fatal(err)
		}
		return h
	}
	note := blob("AQID\n")
	other := blob("BAUG\n")
	file := func(name string, h plumbing.Hash) object.TreeEntry {
		return object.TreeEntry{Name: name, Mode: filemode.Regular, Hash: h}
	}
	dir := func(name string, h plumbing.Hash) object.TreeEntry {
		return object.TreeEntry{Name: name, Mode: filemode.Dir, Hash: h}
	}

	tests := []struct {
		name string
		root plumbing.Hash
		want string
	}{
		{name: "flat", root: tree(file(commit, note), file(strings.Repeat("f", 40), other)), want: "AQID\n"},
		{name: "fanout 2/38", root: tree(dir("01", tree(file(commit[2:], note))), dir("ff", tree(file(strings.Repeat("f", 38), other)))), want: "AQID\n"},
		{name: "fanout 2/2/36", root: tree(dir("01", tree(dir("23", tree(file(commit[4:], note)))))), want: "AQID\n"},
		{name: "other commit only", root: tree(file(strings.Repeat("f", 40), other))},
		{name: "prefix directory without the note", root: tree(dir("01", tree(file(strings.Repeat("9", 38), other))))},
		{name: "directory named like the note is not a note", root: tree(dir(commit, tree(file("x", note))))},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			root, err := object.GetTree(st, tc.root)
			if err != nil {
				t.Fatal(err)
			}
			got, _, err := findNote(root, commit)
			if err != nil {
				t.Fatalf("findNote: %v", err)
			}
			if string(got) != tc.want {
				t.Errorf("findNote = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestSplitCommitSignature(t *testing.T) {
	unsigned := "tree 4b825dc642cb6eb9a060e54bf8d69288fbe4904b\nauthor A <a@example.com> 1700000000 +0000\ncommitter A <a@example.com> 1700000000 +0000\n\nmessage\n\nbody with gpgsig in it\n gpgsig indented body line\n"
	armored := "-----BEGIN PGP SIGNATURE-----\n\nabc\n-----END PGP SIGNATURE-----\n"
	signed := gittest.InsertSignature(unsigned, armored)

	payload, sig, ok := splitCommitSignature([]byte(signed))
	if !ok || string(payload) != unsigned || sig != armored {
		t.Errorf("splitCommitSignature(signed) = %q, %q, %v; want the unsigned commit and the armor", payload, sig, ok)
	}
	if _, _, ok := splitCommitSignature([]byte(unsigned)); ok {
		t.Error("splitCommitSignature(unsigned) found a signature in the message body")
	}
}

// FuzzParseNoteSignatures feeds arbitrary notes through parsing, packet
// splitting and verification: nothing may panic, and nothing but Alice's
// real signature may count.
func FuzzParseNoteSignatures(f *testing.F) {
	alice := pgptest.NewKey(f, "Alice")
	const commit = "0123456789abcdef0123456789abcdef01234567"
	good := alice.SignDetached(f, []byte(commit), time.Time{})
	trusted := []TrustedKey{{Name: "alice", Armored: alice.PublicArmored(f)}}

	f.Add([]byte(base64.StdEncoding.EncodeToString(good) + "\n"))
	f.Add([]byte("\n\n" + base64.StdEncoding.EncodeToString(good) + "\r\n\nAAAA\n"))
	f.Add([]byte("-----BEGIN PGP SIGNATURE-----\n\n-----END PGP SIGNATURE-----\n"))
	f.Add([]byte(base64.StdEncoding.EncodeToString(append(append([]byte{}, good...), good...))))
	f.Add([]byte(base64.StdEncoding.EncodeToString(good[:len(good)/2])))
	f.Add([]byte("iQEzBAABCAAdFiEE"))
	f.Add([]byte{0xff, 0xfe, 0x00, '\n'})

	f.Fuzz(func(t *testing.T, note []byte) {
		sigs, malformed := parseNoteSignatures(note)
		if malformed < 0 || len(sigs) > bytes.Count(note, []byte("\n"))+1 {
			t.Fatalf("parseNoteSignatures: %d sigs, %d malformed from %d lines", len(sigs), malformed, bytes.Count(note, []byte("\n"))+1)
		}
		var blobs []signedBlob
		for _, s := range sigs {
			blobs = append(blobs, signedBlob{source: SourceNotes, payload: []byte(commit), sig: s})
		}
		q, err := countQuorum(commit, trusted, 1, blobs, time.Now())
		if err != nil {
			t.Fatalf("countQuorum: %v", err)
		}
		if q.Verified > 1 {
			t.Fatalf("one trusted key counted %d times", q.Verified)
		}
		if q.Verified == 1 && !bytes.Contains(note, []byte(base64.StdEncoding.EncodeToString(good)[:20])) {
			t.Fatalf("a note without Alice's signature verified: %q", note)
		}
	})
}

// FuzzSplitCommitSignature checks that commit parsing never panics and that
// the payload never keeps a gpgsig header.
func FuzzSplitCommitSignature(f *testing.F) {
	unsigned := "tree 4b825dc642cb6eb9a060e54bf8d69288fbe4904b\nauthor A <a@example.com> 1700000000 +0000\ncommitter A <a@example.com> 1700000000 +0000\n\nmsg\n"
	f.Add([]byte(unsigned))
	f.Add([]byte(gittest.InsertSignature(unsigned, "-----BEGIN PGP SIGNATURE-----\n\nabc\n-----END PGP SIGNATURE-----\n")))
	f.Add([]byte("gpgsig x\n y\ngpgsig z\n\nbody"))
	f.Add([]byte(""))
	f.Fuzz(func(t *testing.T, raw []byte) {
		payload, _, ok := splitCommitSignature(raw)
		if !ok {
			return
		}
		for _, line := range bytes.Split(payload, []byte("\n")) {
			if len(line) == 0 {
				break // end of the headers
			}
			if bytes.HasPrefix(line, []byte("gpgsig ")) {
				t.Fatalf("payload keeps a gpgsig header: %q", payload)
			}
		}
	})
}
