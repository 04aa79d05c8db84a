package patch

import (
	"bytes"
	"context"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	yaml "go.yaml.in/yaml/v3"
)

var update = flag.Bool("update", false, "rewrite testdata/golden/*/output.yaml from the engine (review the diff before committing)")

// TestGolden applies each fixture's commands.json to its input.yaml (at path input.yaml) and
// compares the result with output.yaml byte for byte. It also proves the format-keeping promise
// independently of the expected file: every input line that the output drops or changes must lie
// inside a node that one of the commands targets.
func TestGolden(t *testing.T) {
	dirs, err := filepath.Glob("testdata/golden/*")
	if err != nil {
		t.Fatal(err)
	}
	if len(dirs) < 6 {
		t.Fatalf("expected at least 6 golden fixtures, found %d", len(dirs))
	}
	for _, dir := range dirs {
		t.Run(filepath.Base(dir), func(t *testing.T) {
			input := readFile(t, filepath.Join(dir, "input.yaml"))
			cmds, err := DecodeCommands(readFile(t, filepath.Join(dir, "commands.json")), Limits{})
			if err != nil {
				t.Fatal(err)
			}
			tree := MapTree{Files: map[string][]byte{"input.yaml": input}}
			changes, err := Apply(context.Background(), tree, cmds, Limits{})
			if err != nil {
				t.Fatal(err)
			}
			if len(changes) != 1 || changes[0].Path != "input.yaml" || changes[0].Deleted {
				t.Fatalf("want one change of input.yaml, got %+v", changes)
			}
			got := changes[0].Content

			// Same input, same output.
			again, err := Apply(context.Background(), tree, cmds, Limits{})
			if err != nil || len(again) != 1 || !bytes.Equal(again[0].Content, got) {
				t.Fatalf("second run differs (err %v)", err)
			}

			golden := filepath.Join(dir, "output.yaml")
			if *update {
				if err := os.WriteFile(golden, got, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			if want := readFile(t, golden); !bytes.Equal(got, want) {
				t.Errorf("output differs from %s\n--- got ---\n%s\n--- want ---\n%s", golden, got, want)
			}

			allowed := targetLines(t, input, cmds)
			removed := removedLines(splitLines(input), splitLines(got))
			if len(removed) == 0 {
				t.Errorf("the diff removes no input line although the output differs")
			}
			for _, ln := range removed {
				if !allowed[ln] {
					t.Errorf("input line %d %q changed but no command targets it", ln, splitLines(input)[ln-1])
				}
			}
		})
	}
}

func readFile(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func splitLines(b []byte) []string {
	return strings.SplitAfter(string(b), "\n")
}

// removedLines returns the 1-based numbers of the lines of a that an LCS line diff against b
// removes (changed lines count as removed).
func removedLines(a, b []string) []int {
	n, m := len(a), len(b)
	lcs := make([][]int, n+1)
	for i := range lcs {
		lcs[i] = make([]int, m+1)
	}
	for i := n - 1; i >= 0; i-- {
		for j := m - 1; j >= 0; j-- {
			if a[i] == b[j] {
				lcs[i][j] = lcs[i+1][j+1] + 1
			} else {
				lcs[i][j] = max(lcs[i+1][j], lcs[i][j+1])
			}
		}
	}
	var out []int
	i, j := 0, 0
	for i < n {
		switch {
		case j < m && a[i] == b[j]:
			i++
			j++
		case j < m && lcs[i][j+1] >= lcs[i+1][j]:
			j++
		default:
			out = append(out, i+1)
			i++
		}
	}
	return out
}

// targetLines marks the input lines of every node a command targets: from its key's line through
// the following lines indented deeper than that key (its block contents, or "- " items at the
// key's column for a compact sequence), trailing blank lines excluded. A create that adds keys to an existing mapping targets no existing line.
func targetLines(t *testing.T, input []byte, cmds []Command) map[int]bool {
	t.Helper()
	f, ferr := parseYAML(input, DefaultLimits())
	if ferr != nil {
		t.Fatal(ferr.msg)
	}
	lines := splitLines(input)
	allowed := map[int]bool{}
	mark := func(l loc) {
		n := l.node()
		start, base := n.Line, n.Column-1
		if k := l.key(); k != nil {
			start, base = k.Line, k.Column-1
		} else if p := l.parent(); p.Kind == yaml.SequenceNode {
			base = p.Column - 1
		}
		last := start
		for ln := start + 1; ln <= len(lines); ln++ {
			text := strings.TrimRight(lines[ln-1], "\r\n")
			trimmed := strings.TrimLeft(text, " ")
			if trimmed == "" {
				continue
			}
			ind := len(text) - len(trimmed)
			compactItem := ind == base && n.Kind == yaml.SequenceNode && n.Style&yaml.FlowStyle == 0 && strings.HasPrefix(trimmed, "-")
			if ind <= base && !compactItem {
				break
			}
			last = ln
		}
		for ln := start; ln <= last; ln++ {
			allowed[ln] = true
		}
	}
	for _, c := range cmds {
		p, err := compilePath(c.SetField.Field)
		if err != nil {
			t.Fatal(err)
		}
		tg, ferr := resolveField(f, p, c.SetField.Create)
		if ferr != nil {
			t.Fatalf("%s: %s", c.SetField.Field, ferr.msg)
		}
		for _, l := range tg.locs {
			mark(l)
		}
		if tg.create != nil && tg.create.at.node().Kind != yaml.MappingNode || tg.create != nil && len(tg.create.at.node().Content) == 0 {
			mark(tg.create.at)
		}
	}
	return allowed
}
