package patch

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
)

func TestDecodeCommandsErrors(t *testing.T) {
	many := "[" + strings.Repeat(`{"path":"a.yaml","deleteFile":{}},`, 3) + `{"path":"a.yaml","deleteFile":{}}]`
	big := fmt.Sprintf(`[{"path":"a.yaml","createFile":{"content":%q}}]`, strings.Repeat("x", 101))
	tests := []struct {
		name string
		json string
		kind ErrorKind
		msg  string
	}{
		{"object not array", `{}`, KindInvalid, "commands: must be a JSON array of commands, got an object"},
		{"number not array", `5`, KindInvalid, "commands: must be a JSON array of commands, got a number"},
		{"path a number", `[{"path":7,"deleteFile":{}}]`, KindInvalid, "commands[0]: not a valid command: path must be a string, got a number"},
		{"setField a string", `[{"path":"a.yaml"},{"path":"a.yaml","setField":"x"}]`, KindInvalid, "commands[1]: not a valid command: setField must be an object, got a string"},
		{"setField.create a string", `[{"path":"a.yaml","setField":{"field":"a","value":1,"create":"yes"}}]`, KindInvalid, "commands[0]: not a valid command: setField.create must be true or false, got a string"},
		{"broken JSON", `[{"path":`, KindInvalid, "commands: not a valid JSON array of commands: unexpected EOF"},
		{"trailing data", `[] []`, KindInvalid, "commands: unexpected data after the JSON array of commands"},
		{"null", `null`, KindInvalid, "commands: commands must be a JSON array, not null"},
		{"empty", `[]`, KindInvalid, "commands: no commands given"},
		{"too many", many, KindLimit, "commands: 4 commands given, at most 3 are allowed in one request"},
		{"unknown command field", `[{"path":"a.yaml","setFeld":{}}]`, KindInvalid, `commands[0]: not a valid command: unknown field "setFeld"`},
		{"unknown setField field", `[{"path":"a.yaml","setField":{"field":"a","value":1,"crate":true}}]`, KindInvalid, `commands[0]: not a valid command: unknown field "crate"`},
		{"no operation", `[{"path":"a.yaml"}]`, KindInvalid, "commands[0] a.yaml: exactly one of setField, createFile, deleteFile must be given, found 0"},
		{"two operations", `[{"path":"a.yaml","deleteFile":{},"createFile":{"content":""}}]`, KindInvalid, "commands[0] a.yaml: exactly one of setField, createFile, deleteFile must be given, found 2"},
		{"empty path", `[{"path":"","deleteFile":{}}]`, KindInvalid, "commands[0]: invalid path: path is empty"},
		{"NUL in path", `[{"path":"a\u0000.yaml","deleteFile":{}}]`, KindInvalid, "commands[0] a\x00.yaml: invalid path: path contains a NUL byte"},
		{"absolute path", `[{"path":"/etc/passwd","deleteFile":{}}]`, KindInvalid, "commands[0] /etc/passwd: invalid path: path must be relative to the repository root, not absolute"},
		{"root", `[{"path":"a/..","deleteFile":{}}]`, KindInvalid, "commands[0] a/..: invalid path: path names the repository root, not a file"},
		{"leaves tree", `[{"path":"a/../../b.yaml","deleteFile":{}}]`, KindInvalid, "commands[0] a/../../b.yaml: invalid path: path leaves the repository"},
		{"in .git", `[{"path":"x/.GIT/config","deleteFile":{}}]`, KindInvalid, "commands[0] x/.GIT/config: invalid path: path is inside a .git directory"},
		{"second command bad", `[{"path":"a.yaml","deleteFile":{}},{"path":".git/HEAD","deleteFile":{}}]`, KindInvalid, "commands[1] .git/HEAD: invalid path: path is inside a .git directory"},
		{"empty field", `[{"path":"a.yaml","setField":{"field":" ","value":1}}]`, KindInvalid, `commands[0] a.yaml field " ": field is empty`},
		{"root only field", `[{"path":"a.yaml","setField":{"field":"$","value":1}}]`, KindInvalid, `commands[0] a.yaml field "$": field must name at least one key; replacing a whole document is not supported`},
		{"bad field", `[{"path":"a.yaml","setField":{"field":"a..b","value":1}}]`, KindInvalid, `commands[0] a.yaml field "a..b": invalid field at offset 2: descendant segments (..) are not supported; write the full path`},
		{"create with filter", `[{"path":"a.yaml","setField":{"field":"a[?(@.b == 1)].c","value":1,"create":true}}]`, KindInvalid, `commands[0] a.yaml field "a[?(@.b == 1)].c": create works only with a path of keys and indexes, not with wildcards or filters`},
		{"missing value", `[{"path":"a.yaml","setField":{"field":"a"}}]`, KindInvalid, `commands[0] a.yaml field "a": setField needs a value (use null to set null)`},
		{"duplicate object key", `[{"path":"a.yaml","setField":{"field":"a","value":{"k":1,"k":2}}}]`, KindInvalid, `commands[0] a.yaml field "a": value is not valid JSON: object key "k" appears twice`},
		{"number out of range", `[{"path":"a.yaml","setField":{"field":"a","value":[1e400]}}]`, KindInvalid, `commands[0] a.yaml field "a": value is not valid JSON: number 1e400 is out of range`},
		{"missing content", `[{"path":"a.yaml","createFile":{}}]`, KindInvalid, `commands[0] a.yaml: createFile needs content (use "" for an empty file)`},
		{"content too big", big, KindLimit, "commands[0] a.yaml: content is 101 bytes, files may have at most 100"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cmds, err := DecodeCommands([]byte(tt.json), Limits{MaxCommands: 3, MaxFileBytes: 100})
			if cmds != nil {
				t.Errorf("commands returned with an error: %+v", cmds)
			}
			assertError(t, err, tt.kind, tt.msg)
		})
	}
}

func assertError(t *testing.T, err error, kind ErrorKind, msg string) {
	t.Helper()
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("want *Error %q, got %v", msg, err)
	}
	if e.Kind != kind {
		t.Errorf("kind = %v, want %v", e.Kind, kind)
	}
	if e.Error() != msg {
		t.Errorf("message\n got: %s\nwant: %s", e.Error(), msg)
	}
}

func TestCompilePathErrors(t *testing.T) {
	tests := []struct{ field, msg string }{
		{"a.", "invalid field at offset 2: a name must follow '.'"},
		{"a.b c", "invalid field at offset 3: unexpected ' ', expected '.' or '['"},
		{"a.b ", "invalid field at offset 0: a field may not start or end with white space"},
		{"a. b", "invalid field at offset 2: white space may not follow '.'"},
		{"a.~b", "invalid field at offset 2: '~' cannot start a name; write ['...'] for keys with other characters"},
		{"a..b", "invalid field at offset 2: descendant segments (..) are not supported; write the full path"},
		{"a[01]", "invalid field at offset 4: bad index \"01\": no leading zeros or -0"},
		{"a[-0]", "invalid field at offset 4: bad index \"-0\": no leading zeros or -0"},
		{"a[9007199254740992]", "invalid field at offset 18: index 9007199254740992 is out of range"},
		{"a[:2]", "invalid field at offset 2: array slices ([start:end:step]) are not supported"},
		{"a['\\x']", "invalid field at offset 4: \\x is not an escape in a single-quoted name; use \\b \\f \\n \\r \\t \\/ \\\\ \\' or \\uXXXX"},
		{"a['\\\"']", "invalid field at offset 4: \\\" is not an escape in a single-quoted name; use \\b \\f \\n \\r \\t \\/ \\\\ \\' or \\uXXXX"},
		{"a['\\uD800']", "invalid field at offset 9: \\uD800 is a high surrogate; a \\uDC00-\\uDFFF escape must follow"},
		{"a['\\uDC00']", "invalid field at offset 9: \\uDC00 is a low surrogate without a high one before it"},
		{"a['\\u00G1']", "invalid field at offset 5: \\u needs four hex digits, got \"00G1\""},
		{"a['\t']", "invalid field at offset 3: control character '\\t' in a quoted name; write it as an escape"},
		{"a[?length(@.b) == 1]", "invalid field at offset 3: function expressions (length()) are not supported"},
		{"a[?@.* == 1]", "invalid field at offset 6: comparisons need a singular query (names and indexes only); wildcards and filters can only be tested for existence"},
		{"a[?!@.b == 1]", "invalid field at offset 7: ! applies to a test or a parenthesized expression; write !(a == b) or a != b"},
		{"a[?@.b == 01]", "invalid field at offset 12: bad number \"01\""},
		{"a[?@..b]", "invalid field at offset 5: descendant segments (..) are not supported; write the full path"},
		{"a]", "invalid field at offset 1: unexpected ']', expected '.' or '['"},
		{"a[", "invalid field at offset 2: unterminated '['"},
		{"a[1", "invalid field at offset 3: unterminated '['"},
		{"a[0:2]", "invalid field at offset 3: array slices ([start:end:step]) are not supported"},
		{"a[0,1]", "invalid field at offset 3: unions (several selectors in one [...]) are not supported; use one command per field"},
		{"a['b", "invalid field at offset 4: unterminated quoted string"},
		{"a[x]", "invalid field at offset 2: unexpected 'x' after '['; expected a quoted name, an index, * or a ?filter"},
		{"a[?(@.b == 1]", "invalid field at offset 12: expected ')'"},
		{"a[?(@.b = 1)]", "invalid field at offset 8: unsupported operator; use == != < <= > >="},
		{"a[?(@.b =~ /x/)]", "invalid field at offset 8: unsupported operator; use == != < <= > >="},
		{"a[?('x')]", "invalid field at offset 7: a literal alone is not a condition; compare it with an @ or $ query"},
		{"a[?(@.b == 1-)]", "invalid field at offset 13: bad number \"1-\""},
		{"a[?(@.b == x)]", "invalid field at offset 11: expected @ or $ query, a quoted string, a number, true, false or null"},
		{"a[?(@[*] == 1)]", "invalid field at offset 8: comparisons need a singular query (names and indexes only); wildcards and filters can only be tested for existence"},
		{"a[?(" + strings.Repeat("(", 40) + "@.b", "invalid field at offset 19: filter nests deeper than 32 levels"},
		{"$x", "invalid field at offset 1: unexpected 'x', expected '.' or '['"},
		{strings.Repeat("a", maxFieldLen+1), "field is 4097 bytes long, at most 4096 are allowed"},
	}
	for _, tt := range tests {
		t.Run(tt.field, func(t *testing.T) {
			_, err := compilePath(tt.field)
			if err == nil || err.Error() != tt.msg {
				t.Errorf("compilePath(%q) error\n got: %v\nwant: %s", tt.field, err, tt.msg)
			}
		})
	}
}

const deploymentYAML = `apiVersion: apps/v1
kind: Deployment
metadata:
  name: app
  labels: &labels
    app: web
spec:
  replicas: 2
  selector:
    matchLabels: *labels
  template:
    spec:
      containers:
        - name: app
          image: app:1
          env:
            - name: A
              value: "1"
            - name: A
              value: "2"
`

func TestApplyErrors(t *testing.T) {
	tree := MapTree{
		Files: map[string][]byte{
			"deploy.yaml":     []byte(deploymentYAML),
			"multi.yaml":      []byte("a: 1\n---\na: 2\n---\nb: 3\n"),
			"dir/values.yaml": []byte("image:\n  tag: v1\n"),
			"tagged.yaml":     []byte("a: !!str 5\nb: |2\n   indented\n"),
			"bad.yaml":        []byte("a: [1\n"),
			"dupkey.yaml":     []byte("a: 1\na: 2\n"),
			"big.yaml":        []byte("a: " + strings.Repeat("x", 500) + "\n"),
			"docs.yaml":       []byte("a: 1\n---\na: 2\n---\na: 3\n---\na: 4\n"),
			"laughs.yaml":     []byte(billionLaughs),
			"empty.yaml":      []byte("# nothing here\n"),
			"merge.yaml":      []byte("base: &b\n  x: 1\nitem:\n  <<: *b\n  y: 2\n"),
			"cr.yaml":         []byte("a: 1\rb: 2\n"),
			"keep.yaml":       []byte("a:\n  s: |+\n    t\n\nb: 1\n"),
		},
		Symlinks: map[string]string{
			"escape":      "../../etc",
			"inside.yaml": "dir/values.yaml",
		},
	}
	lim := Limits{MaxFileBytes: 400, MaxDocuments: 3, MaxAliasExpansion: 1000}
	tests := []struct {
		name string
		cmd  string
		kind ErrorKind
		msg  string
	}{
		{"missing file", `{"path":"nope.yaml","setField":{"field":"a","value":1}}`, KindNotFound, `commands[0] nope.yaml field "a": no such file`},
		{"directory", `{"path":"dir","setField":{"field":"a","value":1}}`, KindInvalid, `commands[0] dir field "a": this is a directory, not a file`},
		{"no such key", `{"path":"deploy.yaml","setField":{"field":"spec.template.spec.volumes","value":[]}}`, KindNotFound, `commands[0] deploy.yaml field "spec.template.spec.volumes": no match: key "volumes" not found in the mapping at $.spec.template.spec (line 13)`},
		{"index out of range", `{"path":"deploy.yaml","setField":{"field":"spec.template.spec.containers[3].image","value":"x"}}`, KindNotFound, `commands[0] deploy.yaml field "spec.template.spec.containers[3].image": no match: index 3 is out of range, the sequence at $.spec.template.spec.containers has 1 items (line 14)`},
		{"filter matches nothing", `{"path":"deploy.yaml","setField":{"field":"spec.template.spec.containers[?(@.name == 'db')].image","value":"x"}}`, KindNotFound, `commands[0] deploy.yaml field "spec.template.spec.containers[?(@.name == 'db')].image": no match: nothing matches [?(@.name == 'db')] at $.spec.template.spec.containers`},
		{"key on scalar", `{"path":"deploy.yaml","setField":{"field":"spec.replicas.count","value":1}}`, KindConflict, `commands[0] deploy.yaml field "spec.replicas.count": type clash: $.spec.replicas is a number, not a mapping or sequence, so count does not apply (line 8)`},
		{"key on sequence", `{"path":"deploy.yaml","setField":{"field":"spec.template.spec.containers.image","value":"x"}}`, KindConflict, `commands[0] deploy.yaml field "spec.template.spec.containers.image": type clash: $.spec.template.spec.containers is a sequence, not a mapping, so key "image" does not apply (use an index or a filter) (line 14)`},
		{"index on mapping", `{"path":"deploy.yaml","setField":{"field":"spec[0]","value":1}}`, KindConflict, `commands[0] deploy.yaml field "spec[0]": type clash: $.spec is a mapping, not a sequence, so index [0] does not apply (line 8)`},
		{"map onto scalar", `{"path":"deploy.yaml","setField":{"field":"spec.replicas","value":{"min":1}}}`, KindConflict, `commands[0] deploy.yaml field "spec.replicas": type clash: the field holds a number and the value is object; set a field inside it or use a value of the same type (null clears any field) (line 8)`},
		{"string onto mapping", `{"path":"deploy.yaml","setField":{"field":"spec.selector","value":"app"}}`, KindConflict, `commands[0] deploy.yaml field "spec.selector": type clash: the field holds a mapping and the value is string; set a field inside it or use a value of the same type (null clears any field) (line 10)`},
		{"through alias", `{"path":"deploy.yaml","setField":{"field":"spec.selector.matchLabels.app","value":"api"}}`, KindInvalid, `commands[0] deploy.yaml field "spec.selector.matchLabels.app": $.spec.selector.matchLabels is the alias *labels; edit the anchored node &labels instead, editing through an alias would change every place that uses it (line 10)`},
		{"multiple documents match", `{"path":"multi.yaml","setField":{"field":"a","value":5}}`, KindConflict, `commands[0] multi.yaml field "a": multiple matches: the field names one node but matches in documents 1, 2 of the file; use a filter to choose`},
		{"no document matches", `{"path":"multi.yaml","setField":{"field":"c","value":5}}`, KindNotFound, `commands[0] multi.yaml field "c": no match in any of the 3 documents; first document: no match: key "c" not found in the mapping at $ (line 1)`},
		{"create in multi-doc", `{"path":"multi.yaml","setField":{"field":"c","value":5,"create":true}}`, KindInvalid, `commands[0] multi.yaml field "c": no document of the file has the field, and create cannot choose one of its 3 documents`},
		{"create past index", `{"path":"deploy.yaml","setField":{"field":"spec.template.spec.containers[1].image","value":"x","create":true}}`, KindNotFound, `commands[0] deploy.yaml field "spec.template.spec.containers[1].image": no match: index 1 is out of range, the sequence at $.spec.template.spec.containers has 1 items (line 14); create adds mapping keys only`},
		{"create under scalar", `{"path":"deploy.yaml","setField":{"field":"kind.x","value":"x","create":true}}`, KindConflict, `commands[0] deploy.yaml field "kind.x": type clash: $.kind is a string, not a mapping or sequence, so x does not apply (line 2)`},
		{"merged key", `{"path":"merge.yaml","setField":{"field":"item.x","value":2}}`, KindNotFound, `commands[0] merge.yaml field "item.x": no match: key "x" not found in the mapping at $.item (keys merged in with << are not edited; add the key with create: true to override) (line 4)`},
		{"empty document", `{"path":"empty.yaml","setField":{"field":"a","value":1,"create":true}}`, KindNotFound, `commands[0] empty.yaml field "a": no match: the file holds no YAML document`},
		{"explicit tag", `{"path":"tagged.yaml","setField":{"field":"a","value":"6"}}`, KindInvalid, `commands[0] tagged.yaml field "a": the node has the explicit tag !!str; tagged nodes are not edited (line 1)`},
		{"indentation indicator", `{"path":"tagged.yaml","setField":{"field":"b","value":"x"}}`, KindInvalid, `commands[0] tagged.yaml field "b": refused: block scalars with an explicit indentation indicator are not supported for editing (line 2)`},
		{"invalid YAML", `{"path":"bad.yaml","setField":{"field":"a","value":1}}`, KindInvalid, `commands[0] bad.yaml field "a": file is not valid YAML: line 1: did not find expected ',' or ']'`},
		{"duplicate key", `{"path":"dupkey.yaml","setField":{"field":"a","value":1}}`, KindConflict, `commands[0] dupkey.yaml field "a": key "a" appears 2 times in the mapping at $ (line 1)`},
		{"lone carriage return", `{"path":"cr.yaml","setField":{"field":"a","value":2}}`, KindInvalid, `commands[0] cr.yaml field "a": file has a carriage return that is not part of a CRLF line break (byte 4); such files are not edited`},
		// Inserting after the last content line of a keep-chomped block scalar would move the blank
		// lines it owns; the verification parse catches it and nothing is written.
		{"edit would change a neighbour", `{"path":"keep.yaml","setField":{"field":"a.c","value":1,"create":true}}`, KindInvalid, `commands[0] keep.yaml field "a.c": refused: the edit cannot be made without changing other parts of the file near line 2; the YAML construct there is not supported for editing`},
		{"file too big", `{"path":"big.yaml","setField":{"field":"a","value":1}}`, KindLimit, `commands[0] big.yaml field "a": file is 504 bytes, at most 400 are allowed`},
		{"edit makes file too big", `{"path":"dir/values.yaml","setField":{"field":"image.tag","value":"` + strings.Repeat("v", 400) + `"}}`, KindLimit, `commands[0] dir/values.yaml field "image.tag": the edited file would be 415 bytes, at most 400 are allowed`},
		{"too many documents", `{"path":"docs.yaml","setField":{"field":"a","value":1}}`, KindLimit, `commands[0] docs.yaml field "a": file has more than 3 YAML documents`},
		{"billion laughs", `{"path":"laughs.yaml","setField":{"field":"a","value":1}}`, KindLimit, `commands[0] laughs.yaml field "a": aliases in the file expand to more than 1000 nodes`},
		{"create existing", `{"path":"deploy.yaml","createFile":{"content":"a: 1\n"}}`, KindConflict, `commands[0] deploy.yaml: file already exists; set overwrite: true to replace it`},
		{"create over directory", `{"path":"dir","createFile":{"content":"a: 1\n","overwrite":true}}`, KindConflict, `commands[0] dir: a directory exists at this path`},
		{"create invalid YAML", `{"path":"new.yml","createFile":{"content":"a: [\n"}}`, KindInvalid, `commands[0] new.yml: content: file is not valid YAML: line 1: did not find expected node content`},
		{"create under file", `{"path":"deploy.yaml/x.yaml","createFile":{"content":""}}`, KindConflict, `commands[0] deploy.yaml/x.yaml: invalid path: deploy.yaml is a file, not a directory`},
		{"delete missing", `{"path":"gone.yaml","deleteFile":{}}`, KindNotFound, `commands[0] gone.yaml: cannot delete: no such file`},
		{"delete directory", `{"path":"dir","deleteFile":{}}`, KindInvalid, `commands[0] dir: this is a directory, not a file`},
		{"symlink leaving tree", `{"path":"escape/passwd","setField":{"field":"a","value":1}}`, KindInvalid, `commands[0] escape/passwd field "a": invalid path: escape is a symlink to ../../etc, which leaves the repository`},
		{"symlink inside tree", `{"path":"inside.yaml","setField":{"field":"image.tag","value":"v2"}}`, KindInvalid, `commands[0] inside.yaml field "image.tag": invalid path: inside.yaml is a symlink to dir/values.yaml; symlinks are not followed, name the target path instead`},
		{"create through symlink", `{"path":"escape/x.yaml","createFile":{"content":""}}`, KindInvalid, `commands[0] escape/x.yaml: invalid path: escape is a symlink to ../../etc, which leaves the repository`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// The failing command comes second: all or nothing means the first edit is dropped too.
			cmds, err := DecodeCommands([]byte(`[{"path":"dir/values.yaml","setField":{"field":"image.tag","value":"v9"}},`+tt.cmd+`]`), lim)
			if err != nil {
				t.Fatal(err)
			}
			changes, err := Apply(context.Background(), tree, cmds, lim)
			if changes != nil {
				t.Errorf("changes returned with an error: %+v", changes)
			}
			assertError(t, err, tt.kind, strings.Replace(tt.msg, "commands[0]", "commands[1]", 1))
		})
	}
}

// billionLaughs is the classic exponential alias bomb: nine levels of ten aliases each.
const billionLaughs = `a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
`

func TestApplyCanceled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	cmds, err := DecodeCommands([]byte(`[{"path":"a.yaml","deleteFile":{}}]`), Limits{})
	if err != nil {
		t.Fatal(err)
	}
	_, err = Apply(ctx, MapTree{Files: map[string][]byte{"a.yaml": nil}}, cmds, Limits{})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("want context.Canceled, got %v", err)
	}
}
