// Command flant_gitops is the Vault plugin process: Vault starts it, talks to
// it over gRPC and serves the flant_gitops secrets engine through it.
package main

import (
	"os"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/vault/api"
	"github.com/hashicorp/vault/sdk/plugin"

	"github.com/flant/flant_gitops/backend"
)

func main() {
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
