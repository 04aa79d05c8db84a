// Command initmain is a small static init for the tests of the container
// runner: the same initproc.Main the plugin binary serves as its init.
package main

import (
	"os"

	"github.com/flant/flant_gitops/container/initproc"
)

func main() { os.Exit(initproc.Main(os.Args[1:], os.Stderr)) }
