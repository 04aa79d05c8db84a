package patch

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"testing"

	yaml "go.yaml.in/yaml/v3"
)

// Conformance against public suites written by others (data vendored under testdata/, see the
// ORIGIN.md files):
//   - the JSONPath Compliance Test Suite of RFC 9535: every selector is compiled in strict RFC
//     mode and, when valid, run on the suite's document; a selection must equal the suite's
//     (as a set of normalized paths) or be refused with a clean error;
//   - the YAML Test Suite: every scalar of every valid file is set to new values and to the value
//     it already reads; the result, parsed independently, must differ from the input only at the
//     target, or the edit must be refused with a clean error, and a no-op must leave the bytes.
//
// Counts are printed with -v; silent changes and wrong selections must be 0.

type ctsCase struct {
	Name         string          `json:"name"`
	Selector     string          `json:"selector"`
	Document     json.RawMessage `json:"document"`
	ResultPaths  []string        `json:"result_paths"`
	ResultsPaths [][]string      `json:"results_paths"`
	Invalid      bool            `json:"invalid_selector"`
}

func TestJSONPathCTS(t *testing.T) {
	raw, err := os.ReadFile("testdata/jsonpath-cts/cts.json")
	if err != nil {
		t.Fatal(err)
	}
	var suite struct{ Tests []ctsCase }
	if err := json.Unmarshal(raw, &suite); err != nil {
		t.Fatal(err)
	}
	var (
		invalidRefused, invalidAccepted, dialectAccepted int
		selected, noMatch, refused, notYAML              int
		wrong                                            []string
		refusedBy                                        = map[string]int{}
	)
	for _, tc := range suite.Tests {
		p, err := compileField(tc.Selector, true)
		if tc.Invalid {
			if err == nil {
				invalidAccepted++
				wrong = append(wrong, fmt.Sprintf("%s: RFC-invalid selector %q accepted", tc.Name, tc.Selector))
			} else {
				invalidRefused++
				if _, derr := compilePath(tc.Selector); derr == nil {
					dialectAccepted++ // by the documented extensions E1/E2, outside strict mode
				}
			}
			continue
		}
		if err != nil {
			refused++
			refusedBy[refusalConstruct(err.Error())]++
			if refusalConstruct(err.Error()) == "other" {
				wrong = append(wrong, fmt.Sprintf("%s: valid selector %q refused: %v", tc.Name, tc.Selector, err))
			}
			continue
		}
		f, ferr := parseYAML(tc.Document, DefaultLimits())
		if ferr != nil {
			notYAML++
			continue
		}
		want := tc.ResultPaths
		alternatives := tc.ResultsPaths
		if want != nil {
			alternatives = [][]string{want}
		}
		tg, ferr := resolveField(f, p, false)
		if ferr != nil {
			if len(alternatives) > 0 && len(alternatives[0]) > 0 {
				if ferr.kind == KindNotFound {
					wrong = append(wrong, fmt.Sprintf("%s: %q found nothing, RFC 9535 selects %v", tc.Name, tc.Selector, alternatives[0]))
				} else {
					refused++ // a path of keys naming more than one node, or not a node at all
					refusedBy["dialect: a path of keys names exactly one node"]++
				}
				continue
			}
			noMatch++
			continue
		}
		got := make([]string, 0, len(tg.locs))
		for _, l := range tg.locs {
			got = append(got, normalizedPath(l))
		}
		sort.Strings(got)
		ok := false
		for _, alt := range alternatives {
			alt = append([]string(nil), alt...)
			sort.Strings(alt)
			ok = ok || strings.Join(alt, "\n") == strings.Join(got, "\n")
		}
		if !ok {
			wrong = append(wrong, fmt.Sprintf("%s: %q selected %v, RFC 9535 selects %v", tc.Name, tc.Selector, got, alternatives))
			continue
		}
		selected++
	}
	t.Logf("JSONPath CTS, %d cases: %d valid selectors selected as RFC 9535 does, %d matched nothing as in the RFC (404), "+
		"%d refused with a 4xx naming the construct %v, %d documents not read as YAML; %d invalid selectors refused "+
		"(%d of them accepted by the dialect's extensions outside strict mode); %d wrong",
		len(suite.Tests), selected, noMatch, refused, refusedBy, notYAML, invalidRefused, dialectAccepted, len(wrong))
	for _, w := range wrong {
		t.Error(w)
	}
}

// refusalConstruct names what a refusal of an RFC-valid selector is about.
func refusalConstruct(msg string) string {
	for _, c := range []string{"descendant", "slices", "unions", "function", "must name at least one key"} {
		if strings.Contains(msg, c) {
			return c
		}
	}
	return "other"
}

// normalizedPath writes a location as an RFC 9535 normalized path.
func normalizedPath(l loc) string {
	var b strings.Builder
	b.WriteString("$")
	chain := append(append([]*yaml.Node(nil), l.chain[1:]...), l.node())
	for i := 1; i < len(chain); i++ {
		parent, child := chain[i-1], chain[i]
		for j, c := range parent.Content {
			if c != child || parent.Kind == yaml.MappingNode && j%2 == 0 {
				continue
			}
			if parent.Kind == yaml.SequenceNode {
				b.WriteString("[" + strconv.Itoa(j) + "]")
			} else {
				b.WriteString("[" + normName(parent.Content[j-1].Value) + "]")
			}
			break
		}
	}
	return b.String()
}

func normName(k string) string {
	var b strings.Builder
	b.WriteByte('\'')
	for _, r := range k {
		switch {
		case r == '\'' || r == '\\':
			b.WriteRune('\\')
			b.WriteRune(r)
		case r == '\b':
			b.WriteString(`\b`)
		case r == '\f':
			b.WriteString(`\f`)
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\r':
			b.WriteString(`\r`)
		case r == '\t':
			b.WriteString(`\t`)
		case r < 0x20:
			fmt.Fprintf(&b, `\u%04x`, r)
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('\'')
	return b.String()
}

type yamlSuiteCase struct {
	ID    string `json:"id"`
	Name  string `json:"name"`
	YAML  string `json:"yaml"`
	Error bool   `json:"error"`
}

// leaf is a scalar (or alias) of a file, reachable by a path of keys and indexes.
type leaf struct {
	field string
	node  *yaml.Node
}

func TestYAMLSuiteConformance(t *testing.T) {
	raw, err := os.ReadFile("testdata/yaml-test-suite/cases.json")
	if err != nil {
		t.Fatal(err)
	}
	var suite struct{ Cases []yamlSuiteCase }
	if err := json.Unmarshal(raw, &suite); err != nil {
		t.Fatal(err)
	}
	newValues := []string{`"edited"`, `"a: b # c\n- [x]"`, `"two\nlines\n"`, `42`}
	var (
		files, filesRefused, invalidRefused, invalidAccepted int
		edits, editsApplied, editsRefused, noops, noopsKept  int
		silent                                               []string
	)
	for _, tc := range suite.Cases {
		f, ferr := parseYAML([]byte(tc.YAML), DefaultLimits())
		if tc.Error {
			if ferr != nil {
				invalidRefused++
			} else {
				invalidAccepted++ // yaml.v3 reads it; counted, not edited
			}
			continue
		}
		files++
		if ferr != nil {
			filesRefused++
			continue
		}
		for _, lf := range leaves(f, 12) {
			// A no-op: the value the leaf already reads.
			if cur, ok := jsonOf(lf.node); ok {
				noops++
				out, err := applyOne(tc.YAML, lf.field, cur)
				switch {
				case err == nil && out == tc.YAML:
					noopsKept++
				case err == nil:
					silent = append(silent, fmt.Sprintf("%s %s: setting %s to %s, what it reads, changed the file:\n%s", tc.ID, tc.Name, lf.field, cur, out))
				case !cleanRefusal(err):
					silent = append(silent, fmt.Sprintf("%s: no-op %s: %v", tc.ID, lf.field, err))
				}
			}
			for _, v := range newValues {
				edits++
				out, err := applyOne(tc.YAML, lf.field, v)
				if err != nil {
					if !cleanRefusal(err) {
						silent = append(silent, fmt.Sprintf("%s: %s = %s: not a clean refusal: %v", tc.ID, lf.field, v, err))
					}
					editsRefused++
					continue
				}
				if msg := onlyTargetChanged(tc.YAML, out, lf, v); msg != "" {
					silent = append(silent, fmt.Sprintf("%s %s: %s = %s: %s\n--- in\n%s\n--- out\n%s", tc.ID, tc.Name, lf.field, v, msg, tc.YAML, out))
					continue
				}
				editsApplied++
			}
		}
	}
	t.Logf("YAML Test Suite, %d cases: %d valid files (%d refused as a whole), %d invalid files refused, %d invalid files that yaml.v3 reads; "+
		"%d edits of scalars: %d applied and verified, %d refused with a 4xx; %d no-ops: %d left the file byte for byte; %d silent changes",
		len(suite.Cases), files, filesRefused, invalidRefused, invalidAccepted, edits, editsApplied, editsRefused, noops, noopsKept, len(silent))
	for _, s := range silent {
		t.Error(s)
	}
}

func cleanRefusal(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.Kind >= KindInvalid && e.Kind <= KindLimit && e.Msg != ""
}

func applyOne(in, field, value string) (string, error) {
	cmds := []Command{{Path: "f.yaml", SetField: &SetField{Field: field, Value: json.RawMessage(value)}}}
	changes, err := Apply(context.Background(), MapTree{Files: map[string][]byte{"f.yaml": []byte(in)}}, cmds, Limits{})
	if err != nil {
		return "", err
	}
	if len(changes) == 0 {
		return in, nil
	}
	return string(changes[0].Content), nil
}

// leaves lists up to max scalars and aliases of the file reachable by a path of keys and indexes
// (not through an alias), as $-rooted fields in bracket notation.
func leaves(f *yamlFile, max int) []leaf {
	var out []leaf
	var walk func(n *yaml.Node, field string)
	walk = func(n *yaml.Node, field string) {
		if len(out) >= max {
			return
		}
		switch n.Kind {
		case yaml.ScalarNode, yaml.AliasNode:
			if field != "$" {
				out = append(out, leaf{field: field, node: n})
			}
		case yaml.SequenceNode:
			for i, c := range n.Content {
				walk(c, field+"["+strconv.Itoa(i)+"]")
			}
		case yaml.MappingNode:
			for i := 0; i+1 < len(n.Content); i += 2 {
				if k := n.Content[i]; k.Kind == yaml.ScalarNode && k.Tag != "!!merge" {
					walk(n.Content[i+1], field+"["+normName(k.Value)+"]")
				}
			}
		}
	}
	for _, d := range f.docs {
		if len(d.Content) > 0 {
			walk(d.Content[0], "$")
		}
	}
	return out
}

// jsonOf is the JSON of the data a scalar (or alias of one) reads, when JSON can say it.
func jsonOf(n *yaml.Node) (string, bool) {
	n = resolveAlias(n)
	if n == nil || n.Kind != yaml.ScalarNode {
		return "", false
	}
	switch n.ShortTag() {
	case "!!str", "!!int", "!!float", "!!bool", "!!null":
	default:
		return "", false // a custom tag is part of what the node reads; JSON cannot say it
	}
	var v any
	if n.Decode(&v) != nil {
		return "", false
	}
	switch v.(type) {
	case nil, bool, string, int, int64, uint64, float64:
		b, err := json.Marshal(v)
		return string(b), err == nil && !strings.Contains(string(b), "e+") && !strings.Contains(string(b), "e-")
	}
	return "", false
}

// onlyTargetChanged parses in and out with yaml.v3 on its own and compares them as data: the node
// at the leaf's path must read v, every other node (aliases followed) must read what it read.
func onlyTargetChanged(in, out string, lf leaf, v string) string {
	oldDocs, err := decodeAll(in)
	if err != nil {
		return "input: " + err.Error()
	}
	newDocs, err := decodeAll(out)
	if err != nil {
		return "output is not YAML: " + err.Error()
	}
	if len(oldDocs) != len(newDocs) {
		return "the number of documents changed"
	}
	target := findByField(oldDocs, lf)
	var want any
	if err := json.Unmarshal([]byte(v), &want); err != nil {
		return err.Error()
	}
	var cmp func(o, n *yaml.Node, viaAlias bool, path string) string
	cmp = func(o, n *yaml.Node, viaAlias bool, path string) string {
		if o.Kind == yaml.AliasNode || n.Kind == yaml.AliasNode {
			if o.Kind == yaml.AliasNode && o == target && !viaAlias {
				return readsValue(n, want, path)
			}
			return cmp(resolveAlias(o), resolveAlias(n), true, path+"*")
		}
		if o == target && !viaAlias {
			return readsValue(n, want, path)
		}
		if o.Kind != n.Kind || o.Kind == yaml.ScalarNode && (o.Value != n.Value || o.ShortTag() != n.ShortTag()) || len(o.Content) != len(n.Content) {
			return fmt.Sprintf("node at %s changed (line %d)", path, o.Line)
		}
		for i := range o.Content {
			if msg := cmp(o.Content[i], n.Content[i], viaAlias, fmt.Sprintf("%s/%d", path, i)); msg != "" {
				return msg
			}
		}
		return ""
	}
	for i := range oldDocs {
		if msg := cmp(oldDocs[i], newDocs[i], false, fmt.Sprintf("doc%d", i)); msg != "" {
			return msg
		}
	}
	return ""
}

func readsValue(n *yaml.Node, want any, path string) string {
	var got any
	if r := resolveAlias(n); r == nil || r.Decode(&got) != nil {
		return "target at " + path + " does not decode"
	}
	gb, _ := json.Marshal(got)
	wb, _ := json.Marshal(want)
	if string(gb) != string(wb) {
		return fmt.Sprintf("target at %s reads %s, want %s", path, gb, wb)
	}
	return ""
}

func decodeAll(s string) ([]*yaml.Node, error) {
	dec := yaml.NewDecoder(strings.NewReader(s))
	var docs []*yaml.Node
	for {
		n := new(yaml.Node)
		err := dec.Decode(n)
		if err != nil {
			if err.Error() == "EOF" {
				return docs, nil
			}
			return nil, err
		}
		docs = append(docs, n)
	}
}

// findByField finds the leaf again in a fresh parse of the same text, by its position among the
// leaves, so the comparison does not rely on the engine's own resolution.
func findByField(docs []*yaml.Node, lf leaf) *yaml.Node {
	var found *yaml.Node
	var walk func(n *yaml.Node)
	walk = func(n *yaml.Node) {
		if found != nil {
			return
		}
		if n.Line == lf.node.Line && n.Column == lf.node.Column && n.Kind == lf.node.Kind {
			found = n
			return
		}
		for _, c := range n.Content {
			walk(c)
		}
	}
	for _, d := range docs {
		walk(d)
	}
	return found
}
