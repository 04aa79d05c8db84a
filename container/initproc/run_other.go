//go:build !linux

package initproc

import (
	"fmt"
	"io"
)

// run is Linux only: containers run Linux processes, and the runner uses the
// init only on a Linux engine of the plugin's architecture.
func run(cfg Config, stderr io.Writer) int {
	fmt.Fprintf(stderr, "[flant_gitops: %s runs only on Linux]\n", Name)
	return exitUsage
}
