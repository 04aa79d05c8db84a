package patch

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

// values5000 generates a Helm values file of about 5,000 lines: 250 services with comments,
// blank lines, nested maps and lists.
func values5000() []byte {
	var b strings.Builder
	b.WriteString("# Generated values for the benchmark.\n\nglobal:\n  registry: registry.example.com\n\n")
	for i := 0; strings.Count(b.String(), "\n") < 5000; i++ {
		fmt.Fprintf(&b, `# Service %[1]d.
service%[1]d:
  enabled: true
  replicaCount: %[2]d
  image:
    repository: registry.example.com/team/service%[1]d
    tag: "1.%[1]d.0" # bumped by CI
    pullPolicy: IfNotPresent
  env:
    - name: SERVICE_ID
      value: "%[1]d"
    - name: LOG_LEVEL
      value: info
  resources:
    limits: {cpu: 500m, memory: 256Mi}
  ingress:
    hosts: [service%[1]d.example.com]

`, i, i%5+1)
	}
	return []byte(b.String())
}

func BenchmarkSetField5000Lines(b *testing.B) {
	input := values5000()
	lines := strings.Count(string(input), "\n")
	if lines < 5000 {
		b.Fatalf("generated %d lines, want at least 5000", lines)
	}
	last := strings.Count(string(input), "# Service ") - 1
	cmds, err := DecodeCommands([]byte(fmt.Sprintf(`[{"path":"values.yaml","setField":{"field":"service%d.image.tag","value":"2.0.0"}}]`, last)), Limits{})
	if err != nil {
		b.Fatal(err)
	}
	tree := MapTree{Files: map[string][]byte{"values.yaml": input}}
	b.SetBytes(int64(len(input)))
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		changes, err := Apply(context.Background(), tree, cmds, Limits{})
		if err != nil || len(changes) != 1 {
			b.Fatalf("err %v, %d changes", err, len(changes))
		}
	}
}

// valuesOfSize is values5000 grown to just under size bytes.
func valuesOfSize(size int) ([]byte, int) {
	var b strings.Builder
	b.WriteString("global:\n  registry: registry.example.com\n")
	n := 0
	for ; ; n++ {
		entry := fmt.Sprintf("service%[1]d:\n  enabled: true\n  image:\n    repository: registry.example.com/team/service%[1]d\n    tag: \"1.%[1]d.0\" # bumped by CI\n  env:\n    - name: SERVICE_ID\n      value: \"%[1]d\"\n    - name: LOG_LEVEL\n      value: info\n  resources:\n    limits: {cpu: 500m, memory: 256Mi}\n\n", n)
		if b.Len()+len(entry) > size {
			break
		}
		b.WriteString(entry)
	}
	return []byte(b.String()), n
}

// maximalRequest is the largest request the default limits allow on one file: 256 setFields
// (half paths of keys, half filters) spread over a file just under 4 MiB.
func maximalRequest(b *testing.B) ([]byte, []Command) {
	lim := DefaultLimits()
	input, services := valuesOfSize(lim.MaxFileBytes)
	var cmds []string
	for i := 0; i < lim.MaxCommands; i++ {
		s := i * (services / lim.MaxCommands)
		field := fmt.Sprintf("service%d.image.tag", s)
		if i%2 == 1 {
			field = fmt.Sprintf("service%d.env[?(@.name == 'LOG_LEVEL')].value", s)
		}
		cmds = append(cmds, fmt.Sprintf(`{"path":"values.yaml","setField":{"field":%q,"value":"v%d"}}`, field, i))
	}
	decoded, err := DecodeCommands([]byte("["+strings.Join(cmds, ",")+"]"), Limits{})
	if err != nil {
		b.Fatal(err)
	}
	return input, decoded
}

// BenchmarkParseOnce is the unit of cost: one parse of the maximal request's file.
func BenchmarkParseOnce(b *testing.B) {
	input, _ := maximalRequest(b)
	b.SetBytes(int64(len(input)))
	for b.Loop() {
		if _, err := parseYAML(input, DefaultLimits()); err != nil {
			b.Fatal(err.msg)
		}
	}
}

// BenchmarkMaximalRequest applies the largest requests the limits allow and reports their cost
// as a multiple of one parse of the file measured in the same run (x-parse), the bound of issue
// 12 item 8: "independent" edits 256 distinct fields (accepted), "dependent" sets one field 256
// times, so each command reads the one before (refused with 413 once MaxParseBytes is spent),
// "selecting" runs a filter over the whole file in every command (413 once MaxSelectNodes is spent).
func BenchmarkMaximalRequest(b *testing.B) {
	input, independent := maximalRequest(b)
	dependent := make([]Command, len(independent))
	for i := range dependent {
		dependent[i] = Command{Path: "values.yaml", SetField: &SetField{Field: "service0.image.tag", Value: []byte(fmt.Sprintf(`"v%d"`, i))}}
	}
	selecting := make([]Command, len(independent))
	for i := range selecting {
		selecting[i] = Command{Path: "values.yaml", SetField: &SetField{Field: "*.env[?@.name == 'LOG_LEVEL' && @.value != $.global.registry].value", Value: []byte(`"info"`)}}
	}
	const parses = 3
	start := time.Now()
	for range parses {
		if _, err := parseYAML(input, DefaultLimits()); err != nil {
			b.Fatal(err.msg)
		}
	}
	parse := time.Since(start) / parses
	tree := MapTree{Files: map[string][]byte{"values.yaml": input}}
	for _, bc := range []struct {
		name string
		cmds []Command
	}{{"independent", independent}, {"dependent", dependent}, {"selecting", selecting}} {
		b.Run(bc.name, func(b *testing.B) {
			b.SetBytes(int64(len(input)))
			n := 0
			for b.Loop() {
				changes, err := Apply(context.Background(), tree, bc.cmds, Limits{})
				var e *Error
				switch {
				case bc.name != "independent" && errors.As(err, &e) && e.Kind == KindLimit:
				case err != nil || len(changes) != 1:
					b.Fatalf("err %v, %d changes", err, len(changes))
				}
				n++
			}
			b.ReportMetric(float64(b.Elapsed())/float64(n)/float64(parse), "x-parse")
			b.Logf("file %d bytes, %d commands: one parse %v, one request %v", len(input), len(bc.cmds), parse, b.Elapsed()/time.Duration(n))
		})
	}
}
