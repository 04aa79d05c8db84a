package backend

// Version is the plugin version reported to Vault as the running version and
// used when registering the plugin in the catalog. Release builds override it:
//
//	go build -ldflags "-X github.com/flant/flant_gitops/backend.Version=v0.2.0" ./cmd/flant_gitops
//
// It is a var only so the linker can set it; nothing assigns it at run time.
var Version = "v0.1.0"
