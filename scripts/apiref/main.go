// Command apiref writes backend/API.md, the API reference generated from
// the backend's own path definitions. Run it with `go generate ./backend`.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"

	"github.com/flant/flant_gitops/backend"
)

func main() {
	out := flag.String("o", "backend/API.md", "file to write")
	flag.Parse()
	md, err := backend.APIReference(context.Background())
	if err != nil {
		fmt.Fprintf(os.Stderr, "apiref: %v\n", err)
		os.Exit(1)
	}
	if err := os.WriteFile(*out, md, 0o644); err != nil {
		fmt.Fprintf(os.Stderr, "apiref: %v\n", err)
		os.Exit(1)
	}
}
