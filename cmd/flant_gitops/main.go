// Command flant_gitops is the Vault plugin process: Vault starts it, talks to
// it over gRPC and serves the flant_gitops secrets engine through it.
package main

import (
	"os"
	"runtime/debug"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/vault/api"
	"github.com/hashicorp/vault/sdk/plugin"

	"github.com/flant/flant_gitops/backend"
)

// defaultMemoryLimit is the soft heap limit when Vault's environment sets no
// GOMEMLIMIT: go-git parsing the first full pack of a large repository
// otherwise lets the heap grow to several times the live data before a GC,
// and the plugin shares its host with Vault.
const defaultMemoryLimit = 256 << 20

func main() {
	if _, set := os.LookupEnv("GOMEMLIMIT"); !set {
		debug.SetMemoryLimit(defaultMemoryLimit)
	}
	meta := &api.PluginAPIClientMeta{}
	flags := meta.FlagSet()
	if err := flags.Parse(os.Args[1:]); err != nil {
		fatal("cannot parse plugin flags", err)
	}

	err := plugin.ServeMultiplex(&plugin.ServeOpts{
		BackendFactoryFunc: backend.Factory,
		TLSProviderFunc:    api.VaultPluginTLSProvider(meta.GetTLSConfig()),
	})
	if err != nil {
		fatal("plugin shutting down", err)
	}
}

func fatal(msg string, err error) {
	hclog.New(&hclog.LoggerOptions{Name: "flant_gitops"}).Error(msg, "error", err)
	os.Exit(1)
}
