package patch

import (
	"context"
	"errors"
	"reflect"
	"testing"
)

func TestApply(t *testing.T) {
	base := map[string][]byte{
		"apps/web/release.yaml": []byte("spec:\n  values:\n    image:\n      tag: 1.0.0\n"),
		"apps/old.yaml":         []byte("a: 1\n"),
		"README.md":             []byte("# readme\n"),
	}
	tests := []struct {
		name    string
		cmds    string
		want    []Change
		wantErr string
	}{
		{
			name: "set a field",
			cmds: `[{"path":"apps/web/release.yaml","setField":{"field":"spec.values.image.tag","value":"1.2.5"}}]`,
			want: []Change{{Path: "apps/web/release.yaml", Content: []byte("spec:\n  values:\n    image:\n      tag: 1.2.5\n")}},
		},
		{
			name: "same value is no change",
			cmds: `[{"path":"apps/web/release.yaml","setField":{"field":"spec.values.image.tag","value":"1.0.0"}}]`,
		},
		{
			name: "edit and edit back is no change",
			cmds: `[{"path":"apps/web/release.yaml","setField":{"field":"spec.values.image.tag","value":"2.0.0"}},
			        {"path":"apps/web/release.yaml","setField":{"field":"spec.values.image.tag","value":"1.0.0"}}]`,
		},
		{
			name: "later command sees earlier edit",
			cmds: `[{"path":"apps/web/release.yaml","setField":{"field":"spec.values.image.digest","value":"sha256:ab","create":true}},
			        {"path":"apps/web/release.yaml","setField":{"field":"spec.values.image.digest","value":"sha256:cd"}}]`,
			want: []Change{{Path: "apps/web/release.yaml", Content: []byte("spec:\n  values:\n    image:\n      tag: 1.0.0\n      digest: sha256:cd\n")}},
		},
		{
			name: "create then edit a new file",
			cmds: `[{"path":"apps/api/release.yaml","createFile":{"content":"---\nversion: 1.2.3\n"}},
			        {"path":"apps/api/release.yaml","setField":{"field":"version","value":"1.2.4"}}]`,
			want: []Change{{Path: "apps/api/release.yaml", Content: []byte("---\nversion: 1.2.4\n")}},
		},
		{
			name: "overwrite",
			cmds: `[{"path":"apps/old.yaml","createFile":{"content":"b: 2\n","overwrite":true}}]`,
			want: []Change{{Path: "apps/old.yaml", Content: []byte("b: 2\n")}},
		},
		{
			name: "overwrite with the same content is no change",
			cmds: `[{"path":"apps/old.yaml","createFile":{"content":"a: 1\n","overwrite":true}}]`,
		},
		{
			name: "delete",
			cmds: `[{"path":"apps/old.yaml","deleteFile":{}}]`,
			want: []Change{{Path: "apps/old.yaml", Deleted: true}},
		},
		{
			name: "delete then create",
			cmds: `[{"path":"apps/old.yaml","deleteFile":{}},{"path":"apps/old.yaml","createFile":{"content":"c: 3\n"}}]`,
			want: []Change{{Path: "apps/old.yaml", Content: []byte("c: 3\n")}},
		},
		{
			name: "create then delete is no change",
			cmds: `[{"path":"new.yaml","createFile":{"content":""}},{"path":"new.yaml","deleteFile":{}}]`,
		},
		{
			name: "non-YAML file content is not parsed",
			cmds: `[{"path":"NOTES.txt","createFile":{"content":"a: [\n"}}]`,
			want: []Change{{Path: "NOTES.txt", Content: []byte("a: [\n")}},
		},
		{
			name: "changes sorted by path",
			cmds: `[{"path":"z.yaml","createFile":{"content":"z: 1\n"}},
			        {"path":"apps/old.yaml","deleteFile":{}},
			        {"path":"./b/../a.yaml","createFile":{"content":"a: 1\n"}}]`,
			want: []Change{
				{Path: "a.yaml", Content: []byte("a: 1\n")},
				{Path: "apps/old.yaml", Deleted: true},
				{Path: "z.yaml", Content: []byte("z: 1\n")},
			},
		},
		{
			name:    "created file makes its directory",
			cmds:    `[{"path":"d/x.yaml","createFile":{"content":"x: 1\n"}},{"path":"d","createFile":{"content":"","overwrite":true}}]`,
			wantErr: "commands[1] d: a directory exists at this path",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cmds, err := DecodeCommands([]byte(tt.cmds), Limits{})
			if err != nil {
				t.Fatal(err)
			}
			got, err := Apply(context.Background(), MapTree{Files: base}, cmds, Limits{})
			if tt.wantErr != "" {
				assertError(t, err, KindConflict, tt.wantErr)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("changes\n got: %s\nwant: %s", formatChanges(got), formatChanges(tt.want))
			}
		})
	}
}

func formatChanges(cs []Change) string {
	s := ""
	for _, c := range cs {
		if c.Deleted {
			s += "\n  delete " + c.Path
		} else {
			s += "\n  write " + c.Path + ": " + string(c.Content)
		}
	}
	return s
}

// TestSetField covers value rendering and placement, one edit at a time.
func TestSetField(t *testing.T) {
	tests := []struct {
		name, in, field, value string
		create                 bool
		want                   string
	}{
		{"plain stays plain", "tag: v1 # c\n", "tag", `"v2"`, false, "tag: v2 # c\n"},
		{"plain needs quotes for a number-like string", "tag: v1\n", "tag", `"1.10"`, false, "tag: \"1.10\"\n"},
		{"YAML 1.1 boolean word is quoted", "a: x\n", "a", `"on"`, false, "a: \"on\"\n"},
		{"sexagesimal is quoted", "a: x\n", "a", `"1:30"`, false, "a: \"1:30\"\n"},
		{"double quotes kept", "a: \"x\"\n", "a", `"y"`, false, "a: \"y\"\n"},
		{"single quotes kept", "a: 'x'\n", "a", `"it's"`, false, "a: 'it''s'\n"},
		{"number replaces string", "a: \"1\"\n", "a", `2`, false, "a: 2\n"},
		{"number keeps its text", "a: 1\n", "a", `1.50`, false, "a: 1.50\n"},
		{"boolean", "a: false\n", "a", `true`, false, "a: true\n"},
		{"null clears a map", "a:\n  b: 1\nc: 2\n", "a", `null`, false, "a: null\nc: 2\n"},
		{"empty map replaces a map", "a:\n  b: 1\nc: 2\n", "a", `{}`, false, "a: {}\nc: 2\n"},
		{"map replaces null", "a: ~\nc: 2\n", "a", `{"b":1}`, false, "a:\n  b: 1\nc: 2\n"},
		{"map replaces empty value", "a:\nc: 2\n", "a", `{"b":1}`, false, "a:\n  b: 1\nc: 2\n"},
		{"map after a line comment", "a: {} # none yet\nc: 2\n", "a", `{"b":1}`, false, "a: # none yet\n  b: 1\nc: 2\n"},
		{"map replaces {} followed by commented examples", "annotations: {}\n  # example.com/a: b\nx: 1\n", "annotations", `{"k":"v"}`, false, "annotations:\n  k: v\n  # example.com/a: b\nx: 1\n"},
		{"list replaces list keeping compact style", "l:\n- a\n- b\nx: 1\n", "l", `["c"]`, false, "l:\n- c\nx: 1\n"},
		{"list replaces list keeping indented style", "l:\n    - a\nx: 1\n", "l", `["c","d"]`, false, "l:\n    - c\n    - d\nx: 1\n"},
		{"list items keep their quoting", "l:\n  - \"a\"\n", "l", `["b","c"]`, false, "l:\n  - \"b\"\n  - \"c\"\n"},
		{"list of maps", "l: []\n", "l", `[{"a":1,"b":[2]}]`, false, "l:\n  - a: 1\n    b:\n      - 2\n"},
		{"four-space file", "a:\n    b:\n        c: 1\n", "a.b", `{"d":{"e":1}}`, false, "a:\n    b:\n        d:\n            e: 1\n"},
		{"flow map kept flow", "m: {a: 1, b: 2}\n", "m", `{"a":3}`, false, "m: {a: 3}\n"},
		{"inside flow", "m: {a: 1, b: [x, y]}\n", "m.b[1]", `"z, w"`, false, "m: {a: 1, b: [x, \"z, w\"]}\n"},
		{"multiline string becomes literal", "s: x\nt: 1\n", "s", `"a\nb\n"`, false, "s: |\n  a\n  b\nt: 1\n"},
		{"literal without final newline", "s: |\n  old\n\nt: 1\n", "s", `"a\n\nb"`, false, "s: |-\n  a\n\n  b\n\nt: 1\n"},
		{"folded replaced", "s: >\n  a\n  b\nt: 1\n", "s", `"c"`, false, "s: c\nt: 1\n"},
		{"multi-line plain replaced", "s: a\n  b\n  c\nt: 1\n", "s", `"d"`, false, "s: d\nt: 1\n"},
		{"multi-line double quoted replaced", "s: \"a\n  b\"\nt: 1\n", "s", `"d"`, false, "s: \"d\"\nt: 1\n"},
		{"alias replaced by a value", "a: &x 1\nb: *x\n", "b", `3`, false, "a: &x 1\nb: 3\n"},
		{"sequence item scalar", "- a\n- b\n", "[1]", `"c"`, false, "- a\n- c\n"},
		{"digit dot path indexes a sequence", "l:\n  - a\n  - b\n", "l.1", `"c"`, false, "l:\n  - a\n  - c\n"},
		{"digit key on a mapping", "m:\n  \"80\": a\n", "m.80", `"b"`, false, "m:\n  \"80\": b\n"},
		{"negative index", "l: [a, b, c]\n", "l[-1]", `"z"`, false, "l: [a, b, z]\n"},
		{"bracket key with dots", "a:\n  x.y/z: 1\n", "a['x.y/z']", `2`, false, "a:\n  x.y/z: 2\n"},
		{"wildcard sets all", "l:\n  - n: 1\n  - n: 2\n", "l[*].n", `0`, false, "l:\n  - n: 0\n  - n: 0\n"},
		{"map wildcard", "m:\n  a: 1\n  b: 2\n", "m.*", `3`, false, "m:\n  a: 3\n  b: 3\n"},
		{"filter with number and and", "l:\n  - {n: a, p: 80}\n  - {n: b, p: 81}\n", "l[?(@.p > 80 && @.n != 'x')].n", `"c"`, false, "l:\n  - {n: a, p: 80}\n  - {n: c, p: 81}\n"},
		{"filter on strings list", "args:\n  - --a\n  - --b\n", "args[?(@ == '--b')]", `"--c"`, false, "args:\n  - --a\n  - --c\n"},
		{"filter existence", "l:\n  - a: 1\n  - b: 1\n", "l[?(@.b)].b", `2`, false, "l:\n  - a: 1\n  - b: 2\n"},
		{"create nested keys", "a:\n  b: 1\n\n# foot\nz: 2\n", "a.c.d", `"e"`, true, "a:\n  b: 1\n  c:\n    d: e\n\n# foot\nz: 2\n"},
		{"create at top level without final newline", "a: 1", "b", `2`, true, "a: 1\nb: 2"},
		{"create in flow map", "m: {a: 1}\n", "m.b", `[1]`, true, "m: {a: 1, b: [1]}\n"},
		{"create in empty flow map", "m: {}\n", "m.b", `1`, true, "m:\n  b: 1\n"},
		{"create under null", "m:\nn: 1\n", "m.a.b", `true`, true, "m:\n  a:\n    b: true\nn: 1\n"},
		{"create in sequence item map", "l:\n  - name: a\n    x: 1\n", "l[0].z", `2`, true, "l:\n  - name: a\n    x: 1\n    z: 2\n"},
		{"YAML 1.1 boolean key is quoted", "a: 1\n", "y", `2`, true, "a: 1\n\"y\": 2\n"},
		{"create after block scalar", "a:\n  s: |\n    t\n\nb: 1\n", "a.c", `1`, true, "a:\n  s: |\n    t\n  c: 1\n\nb: 1\n"},
		{"create key needing quotes", "a: 1\n", "['b: c']", `1`, true, "a: 1\n\"b: c\": 1\n"},
		{"existing field with create", "a: 1\n", "a", `2`, true, "a: 2\n"},
		{"CRLF kept", "a:\r\n  b: 1\r\n", "a.c", `{"d":1}`, true, "a:\r\n  b: 1\r\n  c:\r\n    d: 1\r\n"},
		{"leading document marker and comment", "--- # doc\n# head\na: 1 # line\n# foot\n", "a", `2`, false, "--- # doc\n# head\na: 2 # line\n# foot\n"},
		{"byte order mark", "\ufeffa: 1\nb: 2\n", "a", `3`, false, "\ufeffa: 3\nb: 2\n"},
		{"unicode before the value", "é: ü\nx: 1\n", "x", `"ñ"`, false, "é: ü\nx: ñ\n"},
		{"string with control character", "a: x\n", "a", `"\u0007"`, false, "a: \"\\a\"\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cmds := []Command{{Path: "f.yaml", SetField: &SetField{Field: tt.field, Value: []byte(tt.value), Create: tt.create}}}
			got, err := Apply(context.Background(), MapTree{Files: map[string][]byte{"f.yaml": []byte(tt.in)}}, cmds, Limits{})
			if err != nil {
				t.Fatal(err)
			}
			out := tt.in
			if len(got) == 1 {
				out = string(got[0].Content)
			}
			if out != tt.want {
				t.Errorf("\n got: %q\nwant: %q", out, tt.want)
			}
		})
	}
}

// failingTree answers every lookup with err.
type failingTree struct{ err error }

func (t failingTree) Lookup(string) (Entry, error)    { return Entry{}, t.err }
func (t failingTree) ReadFile(string) ([]byte, error) { return nil, t.err }

func TestApplyTreeErrors(t *testing.T) {
	cmds := []Command{{Path: "mod/x.yaml", DeleteFile: &DeleteFile{}}}
	ioErr := errors.New("object store unreadable")
	_, err := Apply(context.Background(), failingTree{ioErr}, cmds, Limits{})
	if !errors.Is(err, ioErr) {
		t.Fatalf("want the tree's error wrapped, got %v", err)
	}
	var e *Error
	if errors.As(err, &e) {
		t.Fatalf("an I/O failure must not look like a request error: %v", e)
	}

	refusal := &Error{Kind: KindInvalid, Index: -1, Path: "mod", Msg: "is a git submodule"}
	_, err = Apply(context.Background(), failingTree{refusal}, cmds, Limits{})
	assertError(t, err, KindInvalid, "commands[0] mod/x.yaml: is a git submodule")
}
