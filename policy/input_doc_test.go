package policy

import (
	"context"
	"encoding/json"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// documentedInput is the input document of the package comment, parsed: the
// comment is the reference for policy authors, so it must list exactly the
// fields the policy gets.
func documentedInput(t *testing.T) map[string]any {
	t.Helper()
	src := readFile(t, "policy.go")
	start := strings.Index(src, "//\t{\n")
	end := strings.Index(src, "//\t}\n")
	if start < 0 || end < start {
		t.Fatal("policy.go: the input document block (//\t{ … //\t}) is missing")
	}
	comment := regexp.MustCompile(`\s+//\s.*$`)
	var b strings.Builder
	for line := range strings.SplitSeq(src[start:end+len("//\t}")], "\n") {
		line = strings.TrimPrefix(line, "//\t")
		b.WriteString(comment.ReplaceAllString(line, "") + "\n")
	}
	var doc map[string]any
	if err := json.Unmarshal([]byte(b.String()), &doc); err != nil {
		t.Fatalf("the documented input is not JSON once comments are stripped: %v\n%s", err, b.String())
	}
	return doc
}

// fieldPaths lists the field paths of a document ("identity.aliases[].name");
// metadata is a free map of claims, so its keys are not fields.
func fieldPaths(prefix string, v any, out *[]string) {
	switch v := v.(type) {
	case map[string]any:
		for k, child := range v {
			p := k
			if prefix != "" {
				p = prefix + "." + k
			}
			*out = append(*out, p)
			if k != "metadata" {
				fieldPaths(p, child, out)
			}
		}
	case []any:
		for _, child := range v {
			fieldPaths(prefix+"[]", child, out)
		}
	}
	slices.Sort(*out)
	*out = slices.Compact(*out)
}

func TestDocumentedInputIsTheInput(t *testing.T) {
	engine, err := Compile(context.Background(), "package flant_gitops.patch\nviolations contains json.marshal(input)\n")
	if err != nil {
		t.Fatal(err)
	}
	full := Input{
		Repository:                "infra",
		TrustedAuthMountAccessors: []string{"auth_jwt_0a1b2c3d"},
		Identity: &Identity{
			EntityID: "e", EntityName: "n", Groups: []string{"g"},
			Aliases: []Alias{{MountType: "jwt", MountAccessor: "auth_jwt_0a1b2c3d", Name: "a", Metadata: map[string]string{"project_path": "p"}}},
		},
		Commit:   CommitInput{Message: "m", Author: Person{Name: "a", Email: "a@example.com"}},
		Commands: []CommandInput{{Path: "p.yml", Op: "setField", Field: "f"}},
	}
	d, err := engine.Decide(context.Background(), full)
	if err != nil || len(d.Violations) != 1 {
		t.Fatalf("Decide = %v, %v", d, err)
	}
	var seen any
	if err := json.Unmarshal([]byte(d.Violations[0]), &seen); err != nil {
		t.Fatal(err)
	}
	var got, documented []string
	fieldPaths("", seen, &got)
	fieldPaths("", documentedInput(t), &documented)
	if !slices.Equal(got, documented) {
		t.Fatalf("the policy input has fields\n  %q\nbut policy.go documents\n  %q", got, documented)
	}
}

// schemaPaths lists the field paths input_schema.json allows.
func schemaPaths(prefix string, node map[string]any, out *[]string) {
	if items, ok := node["items"].(map[string]any); ok {
		schemaPaths(prefix+"[]", items, out)
	}
	props, _ := node["properties"].(map[string]any)
	for k, child := range props {
		p := k
		if prefix != "" {
			p = prefix + "." + k
		}
		*out = append(*out, p)
		if k != "metadata" {
			schemaPaths(p, child.(map[string]any), out)
		}
	}
	slices.Sort(*out)
}

func TestInputSchemaIsTheDocumentedInput(t *testing.T) {
	var schema map[string]any
	if err := json.Unmarshal(inputSchemaJSON, &schema); err != nil {
		t.Fatal(err)
	}
	var inSchema, documented []string
	schemaPaths("", schema, &inSchema)
	fieldPaths("", documentedInput(t), &documented)
	if !slices.Equal(inSchema, documented) {
		t.Fatalf("input_schema.json allows\n  %q\nbut policy.go documents\n  %q", inSchema, documented)
	}
}

// A policy that reads a field the input never has would silently never
// match; it is refused when compiled, naming the field.
func TestCompileRefusesFieldsTheInputNeverHas(t *testing.T) {
	cases := []struct {
		name, body, want string
	}{
		{"token policies (Vault gives plugins none)", `violations contains "x" if "admin" in input.identity.policies`, "input.identity.policies"},
		{"typo in an alias field", `violations contains "x" if { some a in input.identity.aliases; a.mount_path == "jwt/" }`, "a.mount_path"},
		{"unknown top-level field", `violations contains "x" if input.repo == "infra"`, "input.repo"},
		{"unknown command field", `violations contains "x" if { some c in input.commands; c.value == 1 }`, "c.value"},
		{"every documented field", `violations contains sprintf("%v", [[input.repository, input.trusted_auth_mount_accessors[0], input.identity.entity_id, input.identity.entity_name,
			input.identity.groups, input.identity.aliases[0].mount_type, input.identity.aliases[0].mount_accessor, input.identity.aliases[0].name,
			input.identity.aliases[0].metadata.project_path, input.commit.message, input.commit.author.name, input.commit.author.email,
			input.commands[0].path, input.commands[0].op, input.commands[0].field]])`, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Compile(context.Background(), "package flant_gitops.patch\n"+tc.body+"\n")
			if tc.want == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), "undefined ref: "+tc.want) {
				t.Fatalf("Compile = %v, want a type error naming %s", err, tc.want)
			}
		})
	}
}
