package policy

import (
	"context"
	"testing"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/tester"
)

// TestRegoUnitTests runs the *_test.rego files as `opa test` would, so a
// policy change that breaks them fails go test too.
func TestRegoUnitTests(t *testing.T) {
	cases := []struct {
		name  string
		paths []string
		// the policy under test, also compiled with Compile so the
		// restrictions of the Vault layer (unsafe built-ins) apply to it
		policy string
	}{
		{name: "builtin", paths: []string{"builtin.rego", "builtin_test.rego"}, policy: "builtin.rego"},
		{name: "allow_team_dirs", paths: []string{"examples"}, policy: "examples/allow_team_dirs.rego"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			results, err := tester.Run(ctx, tc.paths...)
			if err != nil {
				t.Fatalf("load and run rego tests in %v: %v", tc.paths, err)
			}
			if len(results) == 0 {
				t.Fatalf("no rego tests found in %v", tc.paths)
			}
			for _, r := range results {
				if !r.Pass() {
					t.Errorf("%s.%s (%s): %s\n%s", r.Package, r.Name, r.Location, failure(r), r.Output)
				}
			}
			t.Logf("%d rego tests ran", len(results))
			source := readFile(t, tc.policy)
			if _, err := Compile(ctx, source); err != nil {
				t.Fatalf("Compile(%s): %v", tc.policy, err)
			}
			// What `opa check --strict` reports: unused arguments, shadowed
			// imports and the like are kept out of shipped policies.
			module, err := ast.ParseModuleWithOpts(tc.policy, source, ast.ParserOptions{RegoVersion: ast.RegoV1})
			if err != nil {
				t.Fatal(err)
			}
			strict := ast.NewCompiler().WithStrict(true)
			if strict.Compile(map[string]*ast.Module{tc.policy: module}); strict.Failed() {
				t.Fatalf("strict check of %s: %v", tc.policy, strict.Errors)
			}
		})
	}
}

func failure(r *tester.Result) string {
	switch {
	case r.Error != nil:
		return "error: " + r.Error.Error()
	case r.Skip:
		return "skipped (todo_test_ prefix): rename it or delete it"
	case r.Fail:
		return "failed"
	}
	return "did not pass"
}
