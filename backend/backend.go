// Package backend is the Vault face of flant_gitops: the framework.Backend,
// one path_*.go file per path family with its help text, and the typed
// storage entries. The watch worker lives in backend/watch behind the
// adapter in worker_backend.go, the AppRole client in backend/approle behind
// the interface and adapter in approle_backend.go; the patch half
// (patch_state.go) and the mirror cache (mirror_cache.go) have files of
// their own here.
package backend

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"

	"github.com/flant/flant_gitops/backend/events"
	"github.com/flant/flant_gitops/backend/events/forge"
	"github.com/flant/flant_gitops/backend/events/metrics"
	"github.com/flant/flant_gitops/backend/events/notify"
	"github.com/flant/flant_gitops/backend/watch"
)

// backend holds all state of one mount. Vault creates one per mount (and a
// new one after a plugin reload), so nothing lives in package variables.
type backend struct {
	*framework.Backend

	// configMu serialises read-modify-write of configuration entries:
	// partial updates of configure / configure_vault_access and the env var
	// collision check of vault requests.
	configMu sync.Mutex

	// onInit and onClean let components that own goroutines or connections
	// (the watch worker, the AppRole client) start after Vault finished
	// mounting and stop on unmount, reload or seal. Register them in
	// newBackend; they run in registration order (clean in reverse).
	onInit  []func(context.Context, *logical.InitializationRequest) error
	onClean []func(context.Context)

	// mount is the mount's stored id, shared by the watch and patch halves.
	mount mountIdentity

	// approle is the session with the target Vault of the vault requests
	// (backend/approle, approle_backend.go); its token is revoked on Clean.
	approle approleClient

	// watch is the background worker of the watch half (backend/watch,
	// tied to the mount in worker_backend.go).
	watch *watch.Worker

	// engine is the client of the Docker engine of configure/docker_engine
	// (docker_engine.go), shared by the worker, status and that path.
	engine *engineConn

	// patch is the patch half's state: its locks, mirrors, prepared policy
	// and signing key (patch_state.go).
	patch *patchState

	// hooks keeps the webhook receivers' last deliveries (path_receiver.go).
	hooks hookState

	// events carries what the watch and patch halves do to the commit
	// statuses, notifications and metrics (events_backend.go).
	events *events.Bus

	// notify sends signed notifications of the bus's events
	// (path_notification.go, backend/events/notify).
	notify *notify.Notifier
	// statuses sets commit statuses on the forge, a subscriber of events
	// with its own delivery loop (commit_status.go).
	statuses *forge.Deliverer
	// metrics counts the events for the metrics path (metrics_backend.go,
	// path_metrics.go); its registry is this mount's own.
	metrics *metrics.Metrics

	// format is the storage format found at Initialize, and the refusal
	// of every request when a newer version wrote it (storage_format.go).
	format formatGate
}

// Factory is the logical.Factory Vault calls for each mount.
func Factory(ctx context.Context, conf *logical.BackendConfig) (logical.Backend, error) {
	b := newBackend()
	if err := b.Setup(ctx, conf); err != nil {
		return nil, fmt.Errorf("set up flant_gitops backend: %w", err)
	}
	return b, nil
}

func newBackend() *backend {
	b := &backend{events: events.NewBus()}
	b.patch = newPatchState(b)
	b.setupMetrics()
	b.Backend = &framework.Backend{
		Help:           strings.TrimSpace(backendHelp),
		BackendType:    logical.TypeLogical,
		RunningVersion: Version,
		PathsSpecial: &logical.Paths{
			SealWrapStorage: sealWrapStorage(), // storage_keys.go
			Unauthenticated: hooksUnauthenticated(),
		},
		Paths:          b.paths(),
		InitializeFunc: b.initialize,
		Clean:          b.clean,
		Invalidate:     b.invalidate,
	}
	// Registered first, so it runs last: the watch's final events are
	// published before the subscribers stop.
	b.onClean = append(b.onClean, b.closeEvents)
	// Before the watch, so it stops after it: the watch's last events are
	// queued while this node still sends.
	b.setupNotify()
	// Next, so it stops after the worker: a run's last status may still go.
	b.setupCommitStatus()
	b.approle = b.newApproleClient(nil)
	// The closure, not the method value: tests install a client with
	// their own clock after newBackend.
	b.onClean = append(b.onClean, func(ctx context.Context) { b.approle.Reset(ctx) })
	b.setupWatch()
	return b
}

// paths lists every path family of the plugin. A new family is one
// constructor in its own path_<family>.go, appended here.
func (b *backend) paths() []*framework.Path {
	return framework.PathAppend(
		pathConfigure(b),
		pathGitCredential(b),
		pathTrustedPGPPublicKey(b),
		pathSigner(b),
		pathSignatureRule(b),
		pathConfigureVaultAccess(b),
		pathDockerEngine(b),
		pathCommitStatus(b),
		pathVaultRequest(b),
		pathWatch(b),
		pathReceiver(b),
		pathNotification(b),
		pathMetrics(b),
		pathsPatch(b.patch),
	)
}

func (b *backend) initialize(ctx context.Context, req *logical.InitializationRequest) error {
	if err := b.initStorageFormat(ctx, req.Storage); err != nil {
		return err
	}
	if _, refusal := b.format.get(); refusal != nil {
		return nil
	}
	for _, f := range b.onInit {
		if err := f(ctx, req); err != nil {
			return err
		}
	}
	return nil
}

// invalidate is Vault's word that a replicated storage key changed under
// this node (performance standbys and secondaries): caches of it go.
func (b *backend) invalidate(_ context.Context, key string) {
	if invalidatesHooks(key) {
		b.hooks.invalidate()
	}
	if strings.HasPrefix(key, storagePrefixNotification) {
		b.notify.Invalidate()
	}
}

func (b *backend) clean(ctx context.Context) {
	for i := len(b.onClean) - 1; i >= 0; i-- {
		b.onClean[i](ctx)
	}
}

// errorResponse is the 400 answer for a request the operator must fix. The
// message names the field and says what to do.
func errorResponse(format string, args ...any) (*logical.Response, error) {
	return logical.ErrorResponse(format, args...), nil
}

// fieldError wraps a validation failure so that handlers can tell it apart
// from storage failures and answer 400 instead of 500.
type fieldError struct{ msg string }

func (e *fieldError) Error() string { return e.msg }

func invalidf(format string, args ...any) error {
	return &fieldError{msg: fmt.Sprintf(format, args...)}
}

// respondErr turns a validation error into a 400 response and passes any
// other error on to Vault (a 500 with the wrapped cause).
func respondErr(err error) (*logical.Response, error) {
	var fe *fieldError
	if errors.As(err, &fe) {
		return logical.ErrorResponse(fe.msg), nil
	}
	return nil, err
}

const backendHelp = `
The flant_gitops secrets engine makes a Git repository the trusted source of
operations. It polls one branch; when a new commit carries the required number
of signatures from trusted PGP keys it runs the configured commands in a
Docker container with the commit's files at /git, optionally passing
response-wrapped tokens for preconfigured Vault requests.

Start with "vault path-help flant_gitops/configure".
`
