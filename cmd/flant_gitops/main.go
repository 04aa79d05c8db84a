// Command flant_gitops is the Vault plugin process: Vault starts it, talks to
// it over gRPC and serves the flant_gitops secrets engine through it.
package main

import (
	"context"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/vault/api"
	"github.com/hashicorp/vault/sdk/plugin"

	"github.com/flant/flant_gitops/backend"
	"github.com/flant/flant_gitops/container"
	"github.com/flant/flant_gitops/container/initproc"
)

// defaultMemoryLimit is the soft heap limit when Vault's environment sets no
// GOMEMLIMIT: go-git parsing the first full pack of a large repository
// otherwise lets the heap grow to several times the live data before a GC,
// and the plugin shares its host with Vault.
const defaultMemoryLimit = 256 << 20

// parentCheckInterval is how often the plugin looks whether its Vault is
// still its parent; go-plugin does not end a server whose client died.
const parentCheckInterval = time.Second

func main() {
	// Started as the init of a run's container (from the init volume), the
	// binary is that init and nothing else: no plugin flags, no Vault.
	if initproc.Invoked(os.Args) {
		os.Exit(initproc.Main(os.Args[1:], os.Stderr))
	}
	container.UseSelfAsInit()
	if _, set := os.LookupEnv("GOMEMLIMIT"); !set {
		debug.SetMemoryLimit(defaultMemoryLimit)
	}
	meta := &api.PluginAPIClientMeta{}
	flags := meta.FlagSet()
	if err := flags.Parse(os.Args[1:]); err != nil {
		fatal("cannot parse plugin flags", err)
	}

	go watchParent(context.Background(), parentCheckInterval, os.Getppid, exitOrphaned)

	err := plugin.ServeMultiplex(&plugin.ServeOpts{
		BackendFactoryFunc: backend.PluginFactory,
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

// watchParent calls onOrphan once when the parent process changes from the
// one the plugin started under: Vault starts the plugin as its direct child,
// so a new parent (init or a subreaper) means that Vault is gone. It returns
// when ctx ends or after onOrphan.
func watchParent(ctx context.Context, interval time.Duration, getppid func() int, onOrphan func()) {
	parent := getppid()
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			if getppid() != parent {
				onOrphan()
				return
			}
		}
	}
}

// exitOrphaned ends a plugin whose Vault died without stopping it. It exits
// at once, without the backend's Cleanup, so a running container is neither
// killed nor removed: the next active node re-attaches to it by label, and
// an orphan following it would only race that node to remove it.
func exitOrphaned() {
	// The stderr pipe's reader was Vault; without this the log line below
	// would end the process by SIGPIPE instead of the exit code.
	signal.Ignore(syscall.SIGPIPE)
	hclog.New(&hclog.LoggerOptions{Name: "flant_gitops"}).Error(
		"the Vault process that started this plugin is gone; exiting and leaving any running container to the next active node",
		"pid", os.Getpid())
	os.Exit(3)
}
