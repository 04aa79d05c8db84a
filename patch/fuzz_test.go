package patch

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func FuzzDecodeCommands(f *testing.F) {
	f.Add([]byte(`[{"path":"a/b.yaml","setField":{"field":"spec.values.image.tag","value":"1.2.5"}}]`))
	f.Add([]byte(`[{"path":"./x/../y.yml","createFile":{"content":"a: 1\n","overwrite":true}},{"path":"z.yaml","deleteFile":{}}]`))
	f.Add([]byte(`[{"path":"d.yaml","setField":{"field":"a[?(@.name == 'X' && !(@.v > 2))].value","value":{"k":[1,null,true]},"create":false}}]`))
	f.Add([]byte(`[{"path":".git/config","deleteFile":{}}]`))
	f.Add([]byte(`[{"path":"a","setField":{"field":"$['a.b'][0].*","value":1e400}}]`))
	f.Fuzz(func(t *testing.T, data []byte) {
		cmds, err := DecodeCommands(data, Limits{})
		if err != nil {
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("error is not *Error: %v", err)
			}
			return
		}
		for i, c := range cmds {
			if clean, err := CleanPath(c.Path); err != nil || clean != c.Path {
				t.Fatalf("command %d: path %q accepted but not clean (%v)", i, c.Path, err)
			}
			ops := 0
			for _, set := range []bool{c.SetField != nil, c.CreateFile != nil, c.DeleteFile != nil} {
				if set {
					ops++
				}
			}
			if ops != 1 {
				t.Fatalf("command %d has %d operations", i, ops)
			}
		}
	})
}

const fuzzDoc = `spec:
  containers:
    - name: app
      image: a:1
      env:
        - {name: BUILD_ID, value: "1"}
        - name: N
          value: 2
  tags: [a, "b", 3]
  map: {x: 1, y: [1, 2]}
`

func FuzzJSONPath(f *testing.F) {
	for _, s := range []string{
		"spec.containers[0].image",
		"spec.containers[?(@.name == 'app')].env[?(@.name == 'BUILD_ID')].value",
		"$.spec['map'].y[-1]",
		"spec.*[*]",
		"spec.containers[?(@.env[1].value >= 2 || !(@.name != \"x\"))].name",
		"spec.tags[?(@ == 'a')]",
		"a[?((@.b))]",
		"$.spec.containers[?@.name\n== 'app'].env[?@.*]",
		"spec['\\u0061\\uD83D\\uDE00\\t'][?@.x == $.spec.tags[0] || !@[*]]",
		"spec .tags [ -1 ]",
	} {
		f.Add(s)
	}
	file, ferr := parseYAML([]byte(fuzzDoc), DefaultLimits())
	if ferr != nil {
		f.Fatal(ferr.msg)
	}
	f.Fuzz(func(t *testing.T, field string) {
		p, err := compilePath(field)
		if err != nil {
			return
		}
		if len(p.steps) == 0 {
			t.Fatalf("%q compiled to no steps", field)
		}
		tg, ferr := resolveField(file, p, p.singular())
		if ferr != nil {
			return
		}
		if p.singular() && tg.create == nil && len(tg.locs) != 1 {
			t.Fatalf("singular path %q matched %d nodes", field, len(tg.locs))
		}
	})
}

func FuzzApply(f *testing.F) {
	inputs, _ := filepath.Glob("testdata/golden/*/input.yaml")
	for _, in := range inputs {
		b, err := os.ReadFile(in)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b, "spec.values.image.tag", `"1.2.5"`, false)
		f.Add(b, "image.tag", `{"a":[1,"two",{"b":null}]}`, true)
	}
	f.Add([]byte(fuzzDoc), "spec.containers[*].env[?(@.name == 'N')].value", `"x\ny\n"`, false)
	f.Add([]byte("a: 'x'\nb: |\n  t\n# end\n"), "b", `"multi\nline"`, false)
	f.Add([]byte("- a\n- b: [1, {c: d}]\n"), "[1].b[1].c", `["e", "f"]`, false)
	f.Add([]byte("k: v\r\nm:\r\n  n: 1\r\n"), "m.o.p", `"q"`, true)
	f.Add([]byte(billionLaughs), "a", `1`, false)
	f.Fuzz(func(t *testing.T, input []byte, field, value string, create bool) {
		cmd := []Command{{Path: "f.yaml", SetField: &SetField{Field: field, Value: []byte(value), Create: create}}}
		if err := validateCommands(cmd, DefaultLimits()); err != nil {
			return
		}
		tree := MapTree{Files: map[string][]byte{"f.yaml": input}}
		changes, err := Apply(context.Background(), tree, cmd, Limits{})
		if err != nil {
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("error is not *Error: %v", err)
			}
			return
		}
		out := input
		if len(changes) == 1 {
			out = changes[0].Content
		} else if len(changes) != 0 {
			t.Fatalf("%d changes for one file", len(changes))
		}
		// The edited file parses, holds the value, and setting it again changes nothing. A
		// filter may stop matching once its own subject is set, so only paths of keys and
		// indexes must find the field again.
		nf, ferr := parseYAML(out, DefaultLimits())
		if ferr != nil {
			t.Fatalf("output does not parse: %s\n%s", ferr.msg, out)
		}
		p, _ := compilePath(field)
		v, _ := parseJSONValue([]byte(value))
		tg, ferr := resolveField(nf, p, false)
		if ferr != nil && !p.singular() {
			return
		}
		if ferr != nil {
			t.Fatalf("field not found after the edit: %s\n%s", ferr.msg, out)
		}
		for _, l := range tg.locs {
			if !matchJSON(l.node(), v) {
				t.Fatalf("field does not hold the value after the edit:\n%s", out)
			}
		}
		again, err := Apply(context.Background(), MapTree{Files: map[string][]byte{"f.yaml": out}}, cmd, Limits{})
		if err != nil || len(again) != 0 {
			t.Fatalf("setting the same value again: err %v, %d changes\n%s", err, len(again), out)
		}
	})
}

// FuzzApplyBatch checks that the setFields of one file, written and verified together, give what
// applying them one request at a time gives: the same bytes, or a refusal of the same command.
func FuzzApplyBatch(f *testing.F) {
	f.Add([]byte(fuzzDoc), "spec.containers[0].name", `"web"`, "spec.containers[?(@.name == 'web')].image", `"b:2"`, false)
	f.Add([]byte(fuzzDoc), "spec.map.z", `{"k":1}`, "spec.map.*", `3`, true)
	f.Add([]byte("a: &x 1\nb: *x\nc: {d: 1}\n"), "c.d", `2`, "a", `5`, false)
	f.Add([]byte("l:\n  - n: 1 # c\n  - n: 2\n"), "l[0].n", `"x\ny"`, "l[1]", `{"n":[1,2]}`, false)
	f.Add([]byte("m:\n  a: 1\n"), "m", `{"a":1,"b":2}`, "m.b", `3`, false)
	f.Fuzz(func(t *testing.T, input []byte, f1, v1, f2, v2 string, create bool) {
		cmds := []Command{
			{Path: "f.yaml", SetField: &SetField{Field: f1, Value: []byte(v1), Create: create}},
			{Path: "f.yaml", SetField: &SetField{Field: f2, Value: []byte(v2)}},
		}
		if err := validateCommands(cmds, DefaultLimits()); err != nil {
			return
		}
		run := func(in []byte, cs []Command) ([]byte, error) {
			changes, err := Apply(context.Background(), MapTree{Files: map[string][]byte{"f.yaml": in}}, cs, Limits{})
			if err != nil {
				return nil, err
			}
			if len(changes) == 0 {
				return in, nil
			}
			return changes[0].Content, nil
		}
		batch, berr := run(input, cmds)
		one, err1 := run(input, cmds[:1])
		var two []byte
		var err2 error
		if err1 == nil {
			two, err2 = run(one, cmds[1:])
		}
		var be *Error
		switch {
		case err1 != nil || err2 != nil:
			want, idx := err1, 0
			if err1 == nil {
				want, idx = err2, 1
			}
			var we *Error
			if !errors.As(berr, &be) || !errors.As(want, &we) || be.Index != idx || be.Kind != we.Kind {
				t.Fatalf("one at a time: commands[%d] refused (%v); together: %v, output\n%s", idx, want, berr, batch)
			}
		case berr != nil:
			t.Fatalf("one at a time both applied, giving\n%s\ntogether: %v", two, berr)
		case !bytes.Equal(batch, two):
			t.Fatalf("together\n%s\none at a time\n%s", batch, two)
		}
	})
}
