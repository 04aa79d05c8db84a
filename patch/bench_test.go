package patch

import (
	"context"
	"fmt"
	"strings"
	"testing"
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
