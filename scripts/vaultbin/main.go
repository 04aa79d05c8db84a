// Command vault is a thin wrapper that builds the Vault server and CLI from a
// pinned Vault module, so tests and `make enable` have a real Vault binary on
// a machine that cannot download release binaries.
package main

import (
	"os"

	"github.com/hashicorp/vault/command"
)

func main() {
	os.Exit(command.Run(os.Args[1:]))
}
