package policy

import (
	"context"
	"path"
	"strings"
	"testing"
)

// FuzzBuiltinNeverAllowsOutsideProject checks the built-in policy's promise
// on arbitrary project paths and file paths: whatever it allows is a clean,
// relative .yml/.yaml path strictly under "<project_path>/".
func FuzzBuiltinNeverAllowsOutsideProject(f *testing.F) {
	for _, seed := range [][2]string{
		{"my-group/my-project", "my-group/my-project/release.yml"},
		{"my-group/my-project", "my-group/my-project2/x.yml"},
		{"my-group/my-project/", "my-group/my-project/a/../b.yaml"},
		{"..", "../x.yml"},
		{"", "/x.yml"},
		{"a", "a//b.yml"},
	} {
		f.Add(seed[0], seed[1])
	}
	ctx := context.Background()
	engine, err := Default(ctx)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, projectPath, file string) {
		d, err := engine.Decide(ctx, request(gitlab(projectPath), file))
		if err != nil {
			t.Fatalf("Decide: %v", err)
		}
		if !d.Allowed {
			if len(d.Violations) == 0 {
				t.Fatal("denied without a violation")
			}
			return
		}
		dir := strings.TrimRight(projectPath, "/")
		switch {
		case dir == "" || path.Clean(dir) != dir || path.IsAbs(dir) || strings.HasPrefix(dir, "../") || dir == "..":
			t.Fatalf("allowed %q for unusable project_path %q", file, projectPath)
		case path.Clean(file) != file || path.IsAbs(file):
			t.Fatalf("allowed unclean path %q", file)
		case !strings.HasPrefix(file, dir+"/"):
			t.Fatalf("allowed %q outside %q", file, dir+"/")
		case !strings.HasSuffix(file, ".yml") && !strings.HasSuffix(file, ".yaml"):
			t.Fatalf("allowed non-YAML %q", file)
		}
	})
}
