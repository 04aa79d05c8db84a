package policy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
)

// gitlab is the identity a GitLab CI job gets from a Vault JWT role with
// claim_mappings {project_path: project_path}.
func gitlab(projectPath string) *Identity {
	return &Identity{
		EntityID:   "0b6c1f2e-entity",
		EntityName: "entity_gitlab",
		Aliases: []Alias{{
			MountType:     "jwt",
			MountAccessor: "auth_jwt_0a1b2c3d",
			Name:          projectPath,
			Metadata:      map[string]string{"project_path": projectPath, "ref": "main"},
		}},
	}
}

func setField(paths ...string) []CommandInput {
	cmds := make([]CommandInput, 0, len(paths))
	for _, p := range paths {
		cmds = append(cmds, CommandInput{Path: p, Op: "setField", Field: "spec.values.image.tag"})
	}
	return cmds
}

func request(id *Identity, paths ...string) Input {
	return Input{
		Repository:                "infra",
		TrustedAuthMountAccessors: []string{"auth_jwt_0a1b2c3d"},
		Identity:                  id,
		Commit:                    CommitInput{Message: "Bump image to 1.2.5", Author: Person{Name: "CI", Email: "ci@example.com"}},
		Commands:                  setField(paths...),
	}
}

func TestDecideBuiltin(t *testing.T) {
	ctx := context.Background()
	engine, err := Default(ctx)
	if err != nil {
		t.Fatal(err)
	}
	own := gitlab("my-group/my-project")
	noProjectPath := gitlab("x")
	noProjectPath.Aliases[0].Metadata = map[string]string{"sub": "project_path:my-group/my-project"}

	cases := []struct {
		name string
		in   Input
		// each wanted violation is matched by substrings, all of which must
		// appear in one violation; nil means allowed
		want [][]string
	}{
		{name: "own project yml", in: request(own, "my-group/my-project/release.yml")},
		{name: "own project yaml, nested, several commands", in: request(own,
			"my-group/my-project/deployment.yaml", "my-group/my-project/envs/prod/values.yml")},
		{name: "create and delete in own project", in: Input{Identity: own, TrustedAuthMountAccessors: []string{"auth_jwt_0a1b2c3d"}, Commands: []CommandInput{
			{Path: "my-group/my-project/new.yml", Op: "createFile"},
			{Path: "my-group/my-project/old.yaml", Op: "deleteFile"},
		}}},
		{name: "other project", in: request(own, "other-group/x.yml"),
			want: [][]string{{`"other-group/x.yml"`, "outside the caller's project directory my-group/my-project/"}}},
		{name: "prefix boundary trick", in: request(own, "my-group/my-project2/x.yml"),
			want: [][]string{{`"my-group/my-project2/x.yml"`, "outside"}}},
		{name: "unclean dotdot path is refused even if the caller forgot to clean it",
			in:   request(own, "my-group/my-project/../other-group/x.yml"),
			want: [][]string{{`"my-group/my-project/../other-group/x.yml"`, "not a clean relative path"}}},
		{name: "cleaned form of the dotdot path is judged as the other project",
			in:   request(own, "other-group/x.yml"),
			want: [][]string{{`"other-group/x.yml"`, "outside"}}},
		{name: "absolute path", in: request(own, "/my-group/my-project/x.yml"),
			want: [][]string{{`"/my-group/my-project/x.yml"`, "not a clean relative path"}, {`"/my-group/my-project/x.yml"`, "outside"}}},
		{name: "json file", in: request(own, "my-group/my-project/x.json"),
			want: [][]string{{`"my-group/my-project/x.json"`, "only .yml and .yaml"}}},
		{name: "one bad command denies the whole request", in: request(own, "my-group/my-project/ok.yml", "other-group/x.yml"),
			want: [][]string{{`"other-group/x.yml"`, "outside"}}},
		{name: "nil identity (root token)", in: request(nil, "my-group/my-project/release.yml"),
			want: [][]string{{`"my-group/my-project/release.yml"`, "no Vault identity", "claim_mappings"}}},
		{name: "nil identity without commands", in: request(nil),
			want: [][]string{{"no Vault identity"}}},
		{name: "no project_path in alias metadata", in: request(noProjectPath, "my-group/my-project/release.yml"),
			want: [][]string{{`"my-group/my-project/release.yml"`, "no project_path", "claim_mappings"}}},
		{name: "project_path on a non-jwt alias", in: request(&Identity{Aliases: []Alias{{
			MountType: "userpass", Metadata: map[string]string{"project_path": "my-group/my-project"}}}},
			"my-group/my-project/release.yml"),
			want: [][]string{{"no project_path"}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			d, err := engine.Decide(ctx, tc.in)
			if err != nil {
				t.Fatalf("Decide: %v", err)
			}
			checkDecision(t, d, tc.want)
		})
	}
}

func checkDecision(t *testing.T, d Decision, want [][]string) {
	t.Helper()
	if d.Allowed != (len(want) == 0) {
		t.Fatalf("Allowed = %v, want %v; violations: %q", d.Allowed, len(want) == 0, d.Violations)
	}
	if len(d.Violations) != len(want) {
		t.Fatalf("got %d violations %q, want %d matching %q", len(d.Violations), d.Violations, len(want), want)
	}
	for _, parts := range want {
		found := false
		for _, v := range d.Violations {
			if containsAll(v, parts) {
				found = true
				break
			}
		}
		if !found {
			t.Errorf("no violation contains all of %q; violations: %q", parts, d.Violations)
		}
	}
}

func containsAll(s string, parts []string) bool {
	for _, p := range parts {
		if !strings.Contains(s, p) {
			return false
		}
	}
	return true
}

func TestDecideCustomFailsClosed(t *testing.T) {
	ctx := context.Background()
	allowedByBuiltin := request(gitlab("my-group/my-project"), "my-group/my-project/release.yml")
	cases := []struct {
		name   string
		source string
		want   [][]string
	}{
		{name: "empty violations allow",
			source: "package flant_gitops.patch\nviolations := set()\n"},
		{name: "empty array allows",
			source: "package flant_gitops.patch\nviolations := []\n"},
		{name: "wrong package name",
			source: "package flant_gitops.patches\nviolations := set()\n",
			want:   [][]string{{"policy defines no data.flant_gitops.patch.violations", "data.flant_gitops.patches", "package flant_gitops.patch"}}},
		{name: "right package, misspelled rule",
			source: "package flant_gitops.patch\nviolation contains \"x\" if false\n",
			want:   [][]string{{"policy defines no data.flant_gitops.patch.violations"}}},
		{name: "rule undefined for this input",
			source: "package flant_gitops.patch\nviolations := set() if input.repository == \"other\"\n",
			want:   [][]string{{"policy defines no data.flant_gitops.patch.violations"}}},
		{name: "runtime error: conflicting values",
			source: "package flant_gitops.patch\nviolations := {\"a\"} if true\nviolations := set() if input.repository == \"infra\"\n",
			want:   [][]string{{"policy evaluation failed", "eval_conflict_error"}}},
		{name: "runtime error in a built-in is not an undefined violation",
			source: "package flant_gitops.patch\nviolations contains \"too big\" if to_number(input.commit.message) > 3\n",
			want:   [][]string{{"policy evaluation failed", "to_number"}}},
		{name: "non-string violation",
			source: "package flant_gitops.patch\nviolations contains 42 if true\n",
			want:   [][]string{{"must be a set of strings", "element number 42"}}},
		{name: "violations is a boolean",
			source: "package flant_gitops.patch\nviolations := false\n",
			want:   [][]string{{"must be a set of strings", "got boolean false"}}},
		{name: "violations is an object",
			source: "package flant_gitops.patch\nviolations[input.repository] := \"x\"\n",
			want:   [][]string{{"must be a set of strings", "got object"}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			engine, err := Compile(ctx, tc.source)
			if err != nil {
				t.Fatalf("Compile: %v", err)
			}
			d, err := engine.Decide(ctx, allowedByBuiltin)
			if err != nil {
				t.Fatalf("Decide: %v", err)
			}
			checkDecision(t, d, tc.want)
		})
	}
}

func TestDecideSortsViolations(t *testing.T) {
	ctx := context.Background()
	engine, err := Compile(ctx, "package flant_gitops.patch\nviolations := [\"b\", \"a\"]\n")
	if err != nil {
		t.Fatal(err)
	}
	d, err := engine.Decide(ctx, request(nil))
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(d.Violations, ","); got != "a,b" || d.Allowed {
		t.Fatalf("got Allowed=%v violations %q, want denied with [a b]", d.Allowed, d.Violations)
	}
}

func TestCompileErrors(t *testing.T) {
	cases := []struct {
		name   string
		source string
		want   []string
	}{
		{name: "empty", source: "", want: []string{"parse policy", "empty module"}},
		{name: "syntax error with line", source: "package flant_gitops.patch\n\nviolations contains \"x\" if { input.a = = 1 }\nok := true\n",
			want: []string{"parse policy", "policy.rego:3", "rego_parse_error"}},
		{name: "rego v0 syntax", source: "package flant_gitops.patch\nviolations[\"x\"] { true }\n",
			want: []string{"rego_parse_error"}},
		{name: "unsafe variable", source: "package flant_gitops.patch\nviolations contains x if { y := 1 }\n",
			want: []string{"compile policy", "policy.rego:2", "rego_unsafe_var_error", "var x is unsafe"}},
		{name: "undefined function", source: "package flant_gitops.patch\nviolations contains x if x := nope(1)\n",
			want: []string{"rego_type_error", "undefined function nope"}},
		{name: "network built-in refused", source: "package flant_gitops.patch\nviolations contains r.body if r := http.send({\"method\": \"get\", \"url\": \"http://x\"})\n",
			want: []string{"compile policy", "http.send"}},
		{name: "opa.runtime refused", source: "package flant_gitops.patch\nviolations contains x if x := opa.runtime().env.VAULT_TOKEN\n",
			want: []string{"compile policy", "opa.runtime"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			engine, err := Compile(context.Background(), tc.source)
			if err == nil {
				t.Fatalf("Compile succeeded (%v), want an error containing %q", engine, tc.want)
			}
			if !containsAll(err.Error(), tc.want) {
				t.Fatalf("error %q lacks one of %q", err, tc.want)
			}
		})
	}
}

// TestInputDocument pins the input shape documented in the package comment:
// a policy that reports json.marshal(input) sees exactly this JSON.
func TestInputDocument(t *testing.T) {
	ctx := context.Background()
	engine, err := Compile(ctx, "package flant_gitops.patch\nviolations contains json.marshal(input)\n")
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		in   Input
		want string
	}{
		{name: "full", in: Input{
			Repository:                "infra",
			TrustedAuthMountAccessors: []string{"auth_jwt_0a1b2c3d", "auth_oidc_1a2b3c4d"},
			Identity: &Identity{
				EntityID: "e-1", EntityName: "entity_a1",
				Aliases: []Alias{
					{MountType: "jwt", MountAccessor: "auth_jwt_0a1b2c3d", Name: "my-group/my-project",
						Metadata: map[string]string{"project_path": "my-group/my-project", "ref": "main"}},
					{MountType: "approle", MountAccessor: "auth_jwt_0a1b2c3d", Name: "r"},
				},
				Groups: []string{"team-payments"},
			},
			Commit: CommitInput{Message: "Bump", Author: Person{Name: "CI", Email: "ci@example.com"}},
			Commands: []CommandInput{
				{Path: "my-group/my-project/release.yml", Op: "setField", Field: "spec.image.tag"},
				{Path: "my-group/my-project/old.yml", Op: "deleteFile"},
			},
		}, want: `{
			"repository": "infra",
			"trusted_auth_mount_accessors": ["auth_jwt_0a1b2c3d", "auth_oidc_1a2b3c4d"],
			"identity": {
				"entity_id": "e-1", "entity_name": "entity_a1",
				"aliases": [
					{"mount_type": "jwt", "mount_accessor": "auth_jwt_0a1b2c3d", "name": "my-group/my-project",
					 "metadata": {"project_path": "my-group/my-project", "ref": "main"}},
					{"mount_type": "approle", "mount_accessor": "auth_jwt_0a1b2c3d", "name": "r", "metadata": {}}
				],
				"groups": ["team-payments"]
			},
			"commit": {"message": "Bump", "author": {"name": "CI", "email": "ci@example.com"}},
			"commands": [
				{"path": "my-group/my-project/release.yml", "op": "setField", "field": "spec.image.tag"},
				{"path": "my-group/my-project/old.yml", "op": "deleteFile", "field": ""}
			]
		}`},
		{name: "no identity, no commands", in: Input{Repository: "infra"}, want: `{
			"repository": "infra",
			"trusted_auth_mount_accessors": [],
			"commit": {"message": "", "author": {"name": "", "email": ""}},
			"commands": []
		}`},
		{name: "identity with empty lists", in: Input{Identity: &Identity{}}, want: `{
			"repository": "",
			"trusted_auth_mount_accessors": [],
			"identity": {"entity_id": "", "entity_name": "", "aliases": [], "groups": []},
			"commit": {"message": "", "author": {"name": "", "email": ""}},
			"commands": []
		}`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			d, err := engine.Decide(ctx, tc.in)
			if err != nil {
				t.Fatal(err)
			}
			if len(d.Violations) != 1 {
				t.Fatalf("want the input document as the one violation, got %q", d.Violations)
			}
			var got, want any
			if err := json.Unmarshal([]byte(d.Violations[0]), &got); err != nil {
				t.Fatalf("policy saw non-JSON input %q: %v", d.Violations[0], err)
			}
			if err := json.Unmarshal([]byte(tc.want), &want); err != nil {
				t.Fatalf("bad expectation: %v", err)
			}
			gotJSON, _ := json.Marshal(got)
			wantJSON, _ := json.Marshal(want)
			if string(gotJSON) != string(wantJSON) {
				t.Fatalf("input document\n got %s\nwant %s", gotJSON, wantJSON)
			}
		})
	}
}

func TestDecideContextEnded(t *testing.T) {
	engine, err := Default(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	d, err := engine.Decide(ctx, request(gitlab("my-group/my-project"), "my-group/my-project/release.yml"))
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Decide with a cancelled context = %+v, %v; want context.Canceled", d, err)
	}
	if d.Allowed {
		t.Fatal("a cancelled evaluation must not allow")
	}
}

// TestDecideConcurrent shares one Engine across goroutines; run with -race.
func TestDecideConcurrent(t *testing.T) {
	ctx := context.Background()
	engine, err := Default(ctx)
	if err != nil {
		t.Fatal(err)
	}
	const workers, rounds = 8, 50
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			project := fmt.Sprintf("group/project-%d", w)
			for i := range rounds {
				own := fmt.Sprintf("%s/file-%d.yml", project, i)
				foreign := fmt.Sprintf("group/project-%d/file-%d.yml", w+1, i)
				d, err := engine.Decide(ctx, request(gitlab(project), own))
				if err != nil || !d.Allowed {
					errs <- fmt.Errorf("worker %d: %s: %+v, %v; want allowed", w, own, d, err)
					return
				}
				d, err = engine.Decide(ctx, request(gitlab(project), foreign))
				if err != nil || d.Allowed || len(d.Violations) != 1 || !strings.Contains(d.Violations[0], foreign) {
					errs <- fmt.Errorf("worker %d: %s: %+v, %v; want one violation naming it", w, foreign, d, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestBuiltinSourceIsWhatDefaultRuns(t *testing.T) {
	ctx := context.Background()
	if BuiltinSource() != readFile(t, "builtin.rego") {
		t.Fatal("BuiltinSource differs from builtin.rego")
	}
	// The built-in source pasted into configure/policy behaves the same.
	custom, err := Compile(ctx, BuiltinSource())
	if err != nil {
		t.Fatal(err)
	}
	d, err := custom.Decide(ctx, request(gitlab("my-group/my-project"), "my-group/my-project/a.yml", "b.json"))
	if err != nil {
		t.Fatal(err)
	}
	checkDecision(t, d, [][]string{{`"b.json"`, "only .yml"}, {`"b.json"`, "outside"}})
}

func BenchmarkDecide(b *testing.B) {
	ctx := context.Background()
	cases := []struct {
		name   string
		source string
		in     Input
	}{
		{name: "builtin/allowed/1cmd", in: request(gitlab("my-group/my-project"), "my-group/my-project/release.yml")},
		{name: "builtin/allowed/20cmds", in: request(gitlab("my-group/my-project"), manyPaths("my-group/my-project", 20)...)},
		{name: "builtin/denied/20cmds", in: request(gitlab("my-group/my-project"), manyPaths("other/project", 20)...)},
		{name: "allow_team_dirs/allowed/1cmd", source: readFile(b, "examples/allow_team_dirs.rego"), in: Input{
			Repository: "infra",
			Identity:   &Identity{EntityName: "alice", Groups: []string{"team-payments", "developers"}},
			Commands:   setField("teams/payments/api.yml"),
		}},
	}
	for _, tc := range cases {
		b.Run(tc.name, func(b *testing.B) {
			engine, err := Default(ctx)
			if tc.source != "" {
				engine, err = Compile(ctx, tc.source)
			}
			if err != nil {
				b.Fatal(err)
			}
			d, err := engine.Decide(ctx, tc.in)
			if err != nil {
				b.Fatal(err)
			}
			wantAllowed := strings.Contains(tc.name, "/allowed/")
			if d.Allowed != wantAllowed {
				b.Fatalf("Allowed = %v, want %v: %q", d.Allowed, wantAllowed, d.Violations)
			}
			b.ReportAllocs()
			for b.Loop() {
				if _, err := engine.Decide(ctx, tc.in); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func manyPaths(dir string, n int) []string {
	paths := make([]string, n)
	for i := range paths {
		paths[i] = fmt.Sprintf("%s/app-%d/values.yaml", dir, i)
	}
	return paths
}
