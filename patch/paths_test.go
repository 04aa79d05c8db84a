package patch

import (
	"strings"
	"testing"

	yaml "go.yaml.in/yaml/v3"
)

func TestCleanPath(t *testing.T) {
	tests := []struct{ in, want, err string }{
		{"a.yaml", "a.yaml", ""},
		{"./apps//web/./release.yaml", "apps/web/release.yaml", ""},
		{"apps/x/../release.yaml", "apps/release.yaml", ""},
		{"dir/", "dir", ""},
		{".github/workflows/ci.yaml", ".github/workflows/ci.yaml", ""},
		{"a/.gitignore", "a/.gitignore", ""},
		{"", "", "path is empty"},
		{"a\x00b", "", "path contains a NUL byte"},
		{"/abs.yaml", "", "path must be relative to the repository root, not absolute"},
		{".", "", "path names the repository root, not a file"},
		{"..", "", "path leaves the repository"},
		{"../x.yaml", "", "path leaves the repository"},
		{".git", "", "path is inside a .git directory"},
		{".git/hooks/pre-commit", "", "path is inside a .git directory"},
		{"sub/.Git/config", "", "path is inside a .git directory"},
		{strings.Repeat("n", 255) + "/x.yaml", strings.Repeat("n", 255) + "/x.yaml", ""},
		{"d/" + strings.Repeat("n", 256), "", "a file or directory name in the path is 256 bytes, at most 255 are allowed (the file systems' limit): shorten \"" + strings.Repeat("n", 40) + "\"…"},
		{strings.Repeat("d/", 2048) + "x", "", "path is 4097 bytes, at most 4096 are allowed: a checkout could not create it"},
	}
	for _, tt := range tests {
		got, err := CleanPath(tt.in)
		switch {
		case tt.err != "" && (err == nil || err.Error() != tt.err):
			t.Errorf("CleanPath(%q) error = %v, want %q", tt.in, err, tt.err)
		case tt.err == "" && (err != nil || got != tt.want):
			t.Errorf("CleanPath(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
		}
	}
}

func TestMapTreeLookup(t *testing.T) {
	tree := MapTree{
		Files:    map[string][]byte{"a/b/c.yaml": nil, "top.yaml": nil},
		Symlinks: map[string]string{"a/link": "../top.yaml"},
	}
	tests := []struct {
		path string
		want Entry
	}{
		{"top.yaml", Entry{Kind: EntryFile}},
		{"a", Entry{Kind: EntryDir}},
		{"a/b", Entry{Kind: EntryDir}},
		{"a/link", Entry{Kind: EntrySymlink, Target: "../top.yaml"}},
		{"a/b/c", Entry{Kind: EntryMissing}},
		{"top", Entry{Kind: EntryMissing}},
	}
	for _, tt := range tests {
		if got, err := tree.Lookup(tt.path); err != nil || got != tt.want {
			t.Errorf("Lookup(%q) = %+v, %v; want %+v", tt.path, got, err, tt.want)
		}
	}
	if _, err := tree.ReadFile("missing.yaml"); err == nil {
		t.Error("ReadFile of a missing file succeeded")
	}
}

func TestFilterEval(t *testing.T) {
	var doc yaml.Node
	src := `{name: app, port: 8080, ratio: 0.5, on: true, none: null, tags: [a, b], nested: {k: v}, hex: 0x10}`
	if err := yaml.Unmarshal([]byte(src), &doc); err != nil {
		t.Fatal(err)
	}
	n := doc.Content[0]
	tests := []struct {
		expr string
		want bool
	}{
		{"@.name == 'app'", true},
		{`@.name == "app"`, true},
		{"@.name != 'app'", false},
		{"@.name < 'b'", true},
		{"@.port == 8080", true},
		{"@.port == '8080'", false},
		{"@.port >= 8080", true},
		{"@.port > 8080", false},
		{"@.port <= 8080.0", true},
		{"@.ratio < 1", true},
		{"@.hex == 16", true},
		{"@.on == true", true},
		{"@.on == 'true'", false},
		{"@.none == null", true},
		{"@.missing == null", false},
		{"@.missing != 'x'", true},
		{"@.tags[1] == 'b'", true},
		{"@.tags.0 == 'a'", true},
		{"@.nested.k == 'v'", true},
		{"@['nested']['k'] == 'v'", true},
		{"@.nested", true},
		{"@.missing", false},
		{"!@.missing", true},
		{"@.name == 'x' || @.port == 8080", true},
		{"@.name == 'app' && @.port == 1", false},
		{"!(@.name == 'app' && @.port == 1)", true},
		{"@.nested == 'v'", false},
		{"@.name > 1", false},
	}
	for _, tt := range tests {
		p, err := compilePath("x[?(" + tt.expr + ")]")
		if err != nil {
			t.Errorf("%s: %v", tt.expr, err)
			continue
		}
		if got := p.steps[1].filter.eval(newEvalCtx(n, newSelectBudget(1000)), n); got != tt.want {
			t.Errorf("%s = %v, want %v", tt.expr, got, tt.want)
		}
	}
}

func TestPlainOK(t *testing.T) {
	tests := []struct {
		s      string
		inFlow bool
		want   bool
	}{
		{"1.2.5", false, true},
		{"registry.example.com/my/image:1.2.5", false, true},
		{"https://example.com/x", false, true},
		{"--port=8080", false, true},
		{"hello world", false, true},
		{"v1.2", false, true},
		{"1.2", false, false},
		{"1_000", false, false},
		{"0777", false, false},
		{"0x1F", false, false},
		{"1e3", false, false},
		{"12:30", false, false},
		{".inf", false, false},
		{"yes", false, false},
		{"Off", false, false},
		{"~", false, false},
		{"null", false, false},
		{"2001-12-14", false, false},
		{"<<", false, false},
		{"", false, false},
		{" lead", false, false},
		{"a: b", false, false},
		{"a #b", false, false},
		{"end:", false, false},
		{"- item", false, false},
		{"*alias", false, false},
		{"&anchor", false, false},
		{"!tag", false, false},
		{"@x", false, false},
		{"%x", false, false},
		{"a,b", false, true},
		{"a,b", true, false},
		{"host:80", true, false},
		{"tab\there", false, false},
	}
	for _, tt := range tests {
		if got := plainOK(tt.s, tt.inFlow); got != tt.want {
			t.Errorf("plainOK(%q, flow=%v) = %v, want %v", tt.s, tt.inFlow, got, tt.want)
		}
	}
}
