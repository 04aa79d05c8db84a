package patch

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"testing"
)

// editCase is one setField on one file: want is the file after the edit (equal to in for a
// no-op), or wantErr the start of the 4xx message (with wantKind).
type editCase struct {
	name     string
	in       string
	field    string
	value    string
	allow    bool
	want     string
	wantKind ErrorKind
	wantErr  []string
}

// runEditCases decodes each case as a request (so flags go through DecodeCommands as they do
// from Vault) and applies it to f.yaml.
func runEditCases(t *testing.T, cases []editCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			sf := map[string]any{"field": tc.field, "value": json.RawMessage(tc.value)}
			if tc.allow {
				sf["allowAliased"] = true
			}
			req, err := json.Marshal([]any{map[string]any{"path": "f.yaml", "setField": sf}})
			if err != nil {
				t.Fatal(err)
			}
			out, err := applyRequest(req, tc.in)
			if tc.wantErr != nil {
				var e *Error
				if !errors.As(err, &e) {
					t.Fatalf("want a refusal containing %q, got err %v and output\n%s", tc.wantErr, err, out)
				}
				if e.Kind != tc.wantKind {
					t.Errorf("kind %v, want %v: %s", e.Kind, tc.wantKind, e.Msg)
				}
				for _, w := range tc.wantErr {
					if !strings.Contains(e.Msg, w) {
						t.Errorf("message %q lacks %q", e.Msg, w)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if out != tc.want {
				t.Errorf("got\n%q\nwant\n%q", out, tc.want)
			}
		})
	}
}

func applyRequest(req []byte, in string) (string, error) {
	cmds, err := DecodeCommands(req, Limits{})
	if err != nil {
		return "", err
	}
	changes, err := Apply(context.Background(), MapTree{Files: map[string][]byte{"f.yaml": []byte(in)}}, cmds, Limits{})
	if err != nil {
		return "", err
	}
	if len(changes) == 0 {
		return in, nil
	}
	return string(changes[0].Content), nil
}

// Item 1 of issue 12: an edit of an anchored node (or of a node inside one) changes every alias
// of it, so it is refused with the aliases' lines unless allowAliased says it is meant.
func TestAnchoredTargets(t *testing.T) {
	const img = "base: &img registry/app:1.0\nsidecar: *img\n"
	runEditCases(t, []editCase{
		{name: "anchored scalar", in: img, field: "base", value: `"registry/app:2.0"`,
			wantKind: KindConflict, wantErr: []string{"anchor &img", "*img at line 2", `"allowAliased": true`}},
		{name: "anchored scalar with allowAliased", in: img, field: "base", value: `"registry/app:2.0"`, allow: true,
			want: "base: &img registry/app:2.0\nsidecar: *img\n"},
		{name: "inside an anchored mapping", in: "defaults: &d\n  image: a:1\n  pull: Always\napp: *d\nother: *d\n", field: "defaults.image", value: `"a:2"`,
			wantKind: KindConflict, wantErr: []string{"enclosing the field at line 1", "&d", "lines 4, 5"}},
		{name: "inside an anchored mapping with allowAliased", in: "defaults: &d\n  image: a:1\napp: *d\n", field: "defaults.image", value: `"a:2"`, allow: true,
			want: "defaults: &d\n  image: a:2\napp: *d\n"},
		{name: "merged with <<", in: "base: &b\n  tag: 1\napp:\n  <<: *b\n  name: x\n", field: "base.tag", value: `2`,
			wantKind: KindConflict, wantErr: []string{"&b", "line 4"}},
		{name: "alias used as a mapping key", in: "k: &k name\nm:\n  *k : v\n", field: "k", value: `"other"`,
			wantKind: KindConflict, wantErr: []string{"&k", "line 3"}},
		{name: "replaced value defines an anchor read outside", in: "a:\n  b: &x 1\nc: *x\n", field: "a", value: `{"b":2}`, allow: true,
			wantKind: KindConflict, wantErr: []string{"defines the anchor &x (line 2)", "line 3"}},
		{name: "anchor without aliases", in: "a: &x 1\nb: 2\n", field: "a", value: `3`, want: "a: &x 3\nb: 2\n"},
		{name: "sibling of an anchored node", in: "a: &x 1\nb: *x\nc: 1\n", field: "c", value: `2`, want: "a: &x 1\nb: *x\nc: 2\n"},
		{name: "alias itself replaced", in: img, field: "sidecar", value: `"x:1"`, want: "base: &img registry/app:1.0\nsidecar: x:1\n"},
		{name: "wildcard over an anchored item", in: "l:\n  - &i {n: 1}\n  - {n: 2}\nr: *i\n", field: "l[*].n", value: `3`,
			wantKind: KindConflict, wantErr: []string{"&i", "line 4"}},
	})
}

func TestAnchoredCreate(t *testing.T) {
	for _, tc := range []struct {
		name, req, want string
		wantErr         string
	}{
		{"refused", `[{"path":"f.yaml","setField":{"field":"d.y","value":2,"create":true}}]`, "", "*d at line 3"},
		{"allowAliased", `[{"path":"f.yaml","setField":{"field":"d.z","value":2,"create":true,"allowAliased":true}}]`, "d: &d\n  x: 1\n  z: 2\ne: *d\n", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := applyRequest([]byte(tc.req), "d: &d\n  x: 1\ne: *d\n")
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("want refusal %q, got %v\n%s", tc.wantErr, err, out)
				}
				return
			}
			if err != nil || out != tc.want {
				t.Fatalf("got %q, %v; want %q", out, err, tc.want)
			}
		})
	}
}

// Item 2: a no-op is judged on the data the target reads, so setting an alias (or a number
// written another way) to what it already reads leaves the file byte for byte.
func TestNoOpOnData(t *testing.T) {
	const img = "base: &img registry/app:1.0\nsidecar: *img\n"
	runEditCases(t, []editCase{
		{name: "alias to the value it reads", in: img, field: "sidecar", value: `"registry/app:1.0"`, want: img},
		{name: "alias of a mapping", in: "d: &d {a: 1}\ne: *d\n", field: "e", value: `{"a":1}`, want: "d: &d {a: 1}\ne: *d\n"},
		{name: "mapping holding an alias", in: "a: &a 1\nm:\n  k: *a\n", field: "m", value: `{"k":1}`, want: "a: &a 1\nm:\n  k: *a\n"},
		{name: "hex integer", in: "n: 0x10\n", field: "n", value: `16`, want: "n: 0x10\n"},
		{name: "float with a trailing zero", in: "f: 1.50\n", field: "f", value: `1.5`, want: "f: 1.50\n"},
		{name: "capitalized boolean", in: "b: True\n", field: "b", value: `true`, want: "b: True\n"},
		{name: "anchored target set to what it holds", in: img, field: "base", value: `"registry/app:1.0"`, want: img},
		{name: "integer is not a float", in: "f: 1.0\n", field: "f", value: `1`, want: "f: 1\n"},
	})
}

// Item 7: multi-line and special values keep the scalar's place (and its line comment) by
// double quotes when a literal block cannot go there.
func TestValuesKeepTheirPlace(t *testing.T) {
	runEditCases(t, []editCase{
		{name: "double-quoted with comment", in: "tag: \"1.2.9\"   # bumped by CI\nnext: 1\n", field: "tag", value: `"1.2.6\ninjected: true"`,
			want: "tag: \"1.2.6\\ninjected: true\"   # bumped by CI\nnext: 1\n"},
		{name: "plain with comment", in: "tag: 1.2.9 # bumped\n", field: "tag", value: `"1.2.6\ninjected: true"`,
			want: "tag: \"1.2.6\\ninjected: true\" # bumped\n"},
		{name: "single-quoted with comment", in: "s: 'a' # c\n", field: "s", value: `"x\ny"`, want: "s: \"x\\ny\" # c\n"},
		{name: "sequence item with comment", in: "l:\n  - a # c\n  - b\n", field: "l[0]", value: `"x\ny"`, want: "l:\n  - \"x\\ny\" # c\n  - b\n"},
		{name: "CRLF inside the value", in: "s: a # c\n", field: "s", value: `"x\r\ny"`, want: "s: \"x\\r\\ny\" # c\n"},
		{name: "trailing spaces on a line", in: "s: a # c\n", field: "s", value: `"x \ny"`, want: "s: \"x \\ny\" # c\n"},
		{name: "special characters", in: "s: a # c\n", field: "s", value: `"#x: y"`, want: "s: \"#x: y\" # c\n"},
		{name: "double-quoted without comment stays double-quoted", in: "s: \"a\"\n", field: "s", value: `"x\ny"`, want: "s: \"x\\ny\"\n"},
		{name: "plain without comment becomes a literal block", in: "s: x\nt: 1\n", field: "s", value: `"a\nb\n"`, want: "s: |\n  a\n  b\nt: 1\n"},
	})
}

// Item 3: RFC 9535 blanks (space, tab, LF, CR) may stand around filter operators and between
// segments, and are never part of a name.
func TestFieldWhitespace(t *testing.T) {
	const env = "env:\n  - name: A\n    value: \"1\"\n  - name: B\n    value: \"2\"\n"
	const onlyB = "env:\n  - name: A\n    value: \"1\"\n  - name: B\n    value: \"x\"\n"
	runEditCases(t, []editCase{
		{name: "LF before operator", in: env, field: "env[?(@.name\n!= 'A')].value", value: `"x"`, want: onlyB},
		{name: "CRLF before operator", in: env, field: "env[?(@.name\r\n!= 'A')].value", value: `"x"`, want: onlyB},
		{name: "tab before operator", in: env, field: "env[?(@.name\t!= 'A')].value", value: `"x"`, want: onlyB},
		{name: "LF around a filter without parentheses", in: env, field: "env[?\n@.name == 'B'\n].value", value: `"x"`, want: onlyB},
		{name: "LF after &&", in: env, field: "env[?(@.name == 'B' &&\n@.value == '2')].value", value: `"x"`, want: onlyB},
		{name: "blank between segments", in: env, field: "$.env[1] .value", value: `"x"`, want: onlyB},
		{name: "blanks inside brackets", in: env, field: "env[ 1 ][\t'value'\n]", value: `"x"`, want: onlyB},
		{name: "blank after a dot", in: env, field: "env[1].\nvalue", value: `"x"`, wantKind: KindInvalid, wantErr: []string{"white space may not follow '.'"}},
		{name: "blank inside a dot name", in: env, field: "env[1].val ue", value: `"x"`, wantKind: KindInvalid, wantErr: []string{"unexpected ' '"}},
		{name: "trailing blank", in: env, field: "env[1].value\n", value: `"x"`, wantKind: KindInvalid, wantErr: []string{"may not start or end with white space"}},
	})
}

// Item 4: a wildcard in a filter query is a wildcard (RFC 9535), never a key named "*".
func TestFilterQueryWildcards(t *testing.T) {
	const in = "l:\n  - {a: 1}\n  - {}\n  - s\n  - {\"*\": 2}\n"
	runEditCases(t, []editCase{
		{name: "no children", in: in, field: "l[?(!@.*)]", value: `null`, want: "l:\n  - {a: 1}\n  - null\n  - null\n  - {\"*\": 2}\n"},
		{name: "some child", in: in, field: "l[?@[*]]", value: `null`, want: "l:\n  - null\n  - {}\n  - s\n  - null\n"},
		{name: "key named *", in: in, field: "l[?@['*']]", value: `null`, want: "l:\n  - {a: 1}\n  - {}\n  - s\n  - null\n"},
		{name: "compared wildcard refused", in: in, field: "l[?@.* == 1]", value: `null`, wantKind: KindInvalid, wantErr: []string{"comparisons need a singular query"}},
		{name: "nested filter in a filter", in: "l:\n  - {e: [{n: 1}]}\n  - {e: [{n: 2}]}\n", field: "l[?@.e[?@.n == 2]].e", value: `[]`, want: "l:\n  - {e: [{n: 1}]}\n  - {e: []}\n"},
	})
}

// Item 5: quoted names follow RFC 9535 escapes, including surrogate pairs; others are refused.
func TestQuotedNameEscapes(t *testing.T) {
	const in = "m:\n  \"\\t\": tab\n  t: tee\n  a: ay\n  u0061: no\n  \"it's\": q\n  'say \"hi\"': d\n  \"\\U0001F600\": smile\n  /: slash\n"
	set := func(old, nw string) string { return strings.Replace(in, old, nw, 1) }
	runEditCases(t, []editCase{
		{name: `\t`, in: in, field: `m['\t']`, value: `"X"`, want: set(": tab", ": X")},
		{name: `\u0061`, in: in, field: `m['\u0061']`, value: `"X"`, want: set(": ay", ": X")},
		{name: `double-quoted \u0061`, in: in, field: `m["\u0061"]`, value: `"X"`, want: set(": ay", ": X")},
		{name: `\'`, in: in, field: `m['it\'s']`, value: `"X"`, want: set(": q", ": X")},
		{name: `\"`, in: in, field: `m["say \"hi\""]`, value: `"X"`, want: set(": d", ": X")},
		{name: "surrogate pair", in: in, field: `m['\uD83D\uDE00']`, value: `"X"`, want: set(": smile", ": X")},
		{name: `\/`, in: in, field: `m['\/']`, value: `"X"`, want: set(": slash", ": X")},
		{name: "unknown escape", in: in, field: `m['\x']`, value: `"X"`, wantKind: KindInvalid, wantErr: []string{`\x is not an escape`}},
		{name: "lone high surrogate", in: in, field: `m['\uD83D']`, value: `"X"`, wantKind: KindInvalid, wantErr: []string{"high surrogate"}},
		{name: `\" in single quotes`, in: in, field: `m['\"']`, value: `"X"`, wantKind: KindInvalid, wantErr: []string{"not an escape in a single-quoted name"}},
		{name: `\' in double quotes`, in: in, field: `m["\'"]`, value: `"X"`, wantKind: KindInvalid, wantErr: []string{"not an escape in a double-quoted name"}},
	})
}

// Item 6: the RFC's own filter form [?expr] is accepted beside [?(expr)], and $ is optional.
func TestFilterForms(t *testing.T) {
	const env = "env:\n  - name: A\n    value: \"1\"\n  - name: B\n    value: \"2\"\n"
	const onlyB = "env:\n  - name: A\n    value: \"1\"\n  - name: B\n    value: \"x\"\n"
	runEditCases(t, []editCase{
		{name: "without parentheses", in: env, field: "env[?@.name == 'B'].value", value: `"x"`, want: onlyB},
		{name: "rooted without parentheses", in: env, field: "$.env[?@.name == 'B'].value", value: `"x"`, want: onlyB},
		{name: "rooted bracket with parentheses", in: env, field: "$['env'][?(@.name == 'B')].value", value: `"x"`, want: onlyB},
		{name: "parenthesized part and bare part", in: env, field: "env[?(@.name == 'X') || @.name == 'B'].value", value: `"x"`, want: onlyB},
		{name: "root query in a filter", in: "want: B\n" + env, field: "env[?@.name == $.want].value", value: `"x"`, want: "want: B\n" + onlyB},
		{name: "nothing equals nothing", in: env, field: "env[?@.a == @.b].value", value: `"x"`, want: "env:\n  - name: A\n    value: \"x\"\n  - name: B\n    value: \"x\"\n"},
		{name: "root alone", in: env, field: "$", value: `1`, wantKind: KindInvalid, wantErr: []string{"must name at least one key"}},
		{name: "function", in: env, field: "env[?length(@.name) == 1]", value: `1`, wantKind: KindInvalid, wantErr: []string{"function expressions (length()) are not supported"}},
		{name: "descendant", in: env, field: "$..value", value: `1`, wantKind: KindInvalid, wantErr: []string{"descendant segments (..) are not supported"}},
		{name: "slice", in: env, field: "env[0:1]", value: `1`, wantKind: KindInvalid, wantErr: []string{"array slices"}},
		{name: "union", in: env, field: "env[0,1]", value: `1`, wantKind: KindInvalid, wantErr: []string{"unions"}},
	})
}

// The setFields of one file are written and verified together, yet each command sees the ones
// before it, and a refusal names the command that caused it.
func TestBatchedEditsSeeEarlierEdits(t *testing.T) {
	const env = "env:\n  - name: A\n    value: \"1\"\n  - name: B\n    value: \"2\"\n"
	cases := []struct {
		name, cmds, want string
		wantIndex        int
		wantErr          string
	}{
		{"filter sees a renamed item",
			`[{"path":"f.yaml","setField":{"field":"env[0].name","value":"B"}},
			  {"path":"f.yaml","setField":{"field":"env[?@.name == 'B'].value","value":"x"}}]`,
			"env:\n  - name: B\n    value: \"x\"\n  - name: B\n    value: \"x\"\n", 0, ""},
		{"wildcard sees a created key",
			`[{"path":"f.yaml","setField":{"field":"env[0].extra","value":"e","create":true}},
			  {"path":"f.yaml","setField":{"field":"env[*].extra","value":"f"}}]`,
			"env:\n  - name: A\n    value: \"1\"\n    extra: f\n  - name: B\n    value: \"2\"\n", 0, ""},
		{"set inside a value set before",
			`[{"path":"f.yaml","setField":{"field":"env[1]","value":{"name":"C","value":"3"}}},
			  {"path":"f.yaml","setField":{"field":"env[1].value","value":"4"}}]`,
			"env:\n  - name: A\n    value: \"1\"\n  - name: C\n    value: \"4\"\n", 0, ""},
		{"many independent edits",
			`[{"path":"f.yaml","setField":{"field":"env[0].value","value":"a"}},
			  {"path":"f.yaml","setField":{"field":"env[1].value","value":"b"}},
			  {"path":"f.yaml","setField":{"field":"env[0].name","value":"M"}}]`,
			"env:\n  - name: M\n    value: \"a\"\n  - name: B\n    value: \"b\"\n", 0, ""},
		{"refusal names its command",
			`[{"path":"f.yaml","setField":{"field":"env[0].value","value":"a"}},
			  {"path":"f.yaml","setField":{"field":"env[1].missing","value":"b"}}]`,
			"", 1, "not found"},
		{"size limit names its command",
			`[{"path":"f.yaml","setField":{"field":"env[0].value","value":"a"}},
			  {"path":"f.yaml","setField":{"field":"env[1].value","value":"` + strings.Repeat("x", 200) + `"}}]`,
			"", 1, "the edited file would be"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cmds, err := DecodeCommands([]byte(tc.cmds), Limits{})
			if err != nil {
				t.Fatal(err)
			}
			lim := Limits{}
			if strings.Contains(tc.name, "size") {
				lim.MaxFileBytes = 200
			}
			changes, err := Apply(context.Background(), MapTree{Files: map[string][]byte{"f.yaml": []byte(env)}}, cmds, lim)
			if tc.wantErr != "" {
				var e *Error
				if !errors.As(err, &e) || e.Index != tc.wantIndex || !strings.Contains(e.Msg, tc.wantErr) {
					t.Fatalf("want commands[%d] refused with %q, got %v", tc.wantIndex, tc.wantErr, err)
				}
				return
			}
			if err != nil || len(changes) != 1 || string(changes[0].Content) != tc.want {
				t.Fatalf("got %v, %+v; want\n%s", err, changes, tc.want)
			}
		})
	}
}

// Item 8: the YAML a request makes the engine parse is bounded by its size. Independent edits of
// one file cost two parses of it whatever their number; edits that each read the one before cost
// a parse each until Limits.MaxParseBytes answers 413.
func TestParseBudget(t *testing.T) {
	input, services := valuesOfSize(256 << 10)
	many := func(n int, field func(i int) string) []Command {
		var cmds []Command
		for i := 0; i < n; i++ {
			cmds = append(cmds, Command{Path: "v.yaml", SetField: &SetField{Field: field(i), Value: json.RawMessage(`"v` + strconv.Itoa(i) + `"`)}})
		}
		return cmds
	}
	independent := many(256, func(i int) string {
		if i%2 == 1 {
			return fmt.Sprintf("service%d.env[?@.name == 'LOG_LEVEL'].value", i*(services/256))
		}
		return fmt.Sprintf("service%d.image.tag", i*(services/256))
	})
	dependent := many(40, func(int) string { return "service0.image.tag" })
	cases := []struct {
		name    string
		cmds    []Command
		parses  int
		wantErr string
	}{
		{"256 independent edits in two parses", independent, 2, ""},
		{"dependent edits beyond the budget", dependent, 10, "parse more than " + strconv.Itoa(10*len(input)) + " bytes of YAML"},
		{"dependent edits within the budget", dependent[:9], 10, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			lim := Limits{MaxParseBytes: tc.parses * len(input)}
			changes, err := Apply(context.Background(), MapTree{Files: map[string][]byte{"v.yaml": input}}, tc.cmds, lim)
			if tc.wantErr != "" {
				var e *Error
				if !errors.As(err, &e) || e.Kind != KindLimit || !strings.Contains(e.Msg, tc.wantErr) {
					t.Fatalf("want 413 %q, got %v", tc.wantErr, err)
				}
				return
			}
			if err != nil || len(changes) != 1 {
				t.Fatalf("err %v, %d changes", err, len(changes))
			}
		})
	}
}

// The selection work of one request is bounded too: wildcards and filters over a large file, in
// every command, answer 413 once Limits.MaxSelectNodes nodes were visited.
func TestSelectBudget(t *testing.T) {
	input, _ := valuesOfSize(64 << 10)
	var cmds []Command
	for i := 0; i < 50; i++ {
		cmds = append(cmds, Command{Path: "v.yaml", SetField: &SetField{Field: "*.env[?@.name == 'LOG_LEVEL' && $.global.registry == 'registry.example.com'].value", Value: json.RawMessage(`"info"`)}})
	}
	_, err := Apply(context.Background(), MapTree{Files: map[string][]byte{"v.yaml": input}}, cmds, Limits{MaxSelectNodes: 100_000})
	var e *Error
	if !errors.As(err, &e) || e.Kind != KindLimit || !strings.Contains(e.Msg, "visit more than 100000 nodes") {
		t.Fatalf("want 413 naming the selection limit, got %v", err)
	}
	if changes, err := Apply(context.Background(), MapTree{Files: map[string][]byte{"v.yaml": input}}, cmds[:1], Limits{MaxSelectNodes: 100_000}); err != nil || len(changes) != 0 {
		t.Fatalf("one such command is within the limit (and a no-op), got %v, %d changes", err, len(changes))
	}
}
