package backend

import (
	"context"
	"fmt"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"

	"github.com/flant/flant_gitops/backend/watch"
	"github.com/flant/flant_gitops/container"
	"github.com/flant/flant_gitops/gitwatch"
)

// setupWatch ties the watch worker to the backend's lifecycle: started by
// Initialize, woken by the periodic function, stopped (and waited for) by
// Clean before the AppRole session it may use is torn down.
func (b *backend) setupWatch() {
	b.engine = newEngineConn(b.Backend.Logger)
	b.watch = watch.New(b.Backend.Logger, b.watchDeps())
	b.Backend.PeriodicFunc = b.periodic
	b.onInit = append(b.onInit, b.initWatch)
	b.onClean = append(b.onClean, b.stopWatch)
}

// stopWatch is the worker's part of Clean. Vault calls Clean on unmount,
// seal, step-down, shutdown and plugin reload; only an unmount taints the
// mount first (Vault sets the mount entry's Tainted flag before it cleans the
// backend up). Then a run in progress is stopped and its container removed;
// otherwise the mount lives on elsewhere (the next active node, the reloaded
// plugin), so the container is left running and that owner re-attaches.
func (b *backend) stopWatch(ctx context.Context) {
	if sys := b.System(); sys != nil && sys.Tainted() {
		b.watch.Stop(ctx)
		return
	}
	b.watch.HandOver(ctx)
}

// watchDeps tie the worker to the mount: its configuration, its id and
// mirror cache, git, the Docker engine and the vault requests.
func (b *backend) watchDeps() watch.Deps {
	return watch.Deps{
		Events: b.events,
		// Each poll (and the recovery of an unfinished run) reads
		// configure/docker_engine first: a changed engine is switched to,
		// and one that cannot be used stops the poll before a run is
		// recorded, as an error in status rather than a failed deploy.
		Settings: func(ctx context.Context, s watch.Storage) (*watch.Settings, error) {
			_, engineErr := b.engine.ensure(ctx, vaultStorage(s))
			ws, err := loadWatchSettings(ctx, vaultStorage(s))
			if err != nil {
				return nil, err
			}
			if engineErr != nil {
				return nil, engineErr
			}
			return ws, nil
		},
		MountID: func(ctx context.Context, s watch.Storage) (string, error) {
			return b.mount.get(ctx, vaultStorage(s))
		},
		MirrorFolder: func(log hclog.Logger, mountID string, ws *watch.Settings) (string, error) {
			return mirrorFolder(log, cacheBase(), mountID, mirrorKindWatch, watchMirrorTarget(ws), nil)
		},
		MirrorFingerprint: func(ws *watch.Settings) string { return watchMirrorTarget(ws).fingerprint() },
		OpenMirror: func(ctx context.Context, dir string, ws *watch.Settings) (watch.Mirror, error) {
			return gitwatch.OpenMirror(ctx, dir, ws.RepoURL, ws.Branch, ws.Auth)
		},
		// The worker keeps the runner it gets; this one sends every call to
		// the engine configured at the time (docker_engine.go).
		NewRunner: func(context.Context) (container.Runner, error) {
			return engineRunner{b.engine}, nil
		},
		VaultRequests: func(ctx context.Context, s watch.Storage) (map[string]string, map[string][]byte, error) {
			return b.prepareVaultRequests(ctx, vaultStorage(s))
		},
	}
}

// pathWatch is the status, runs, poll and last_successful_commit family.
func pathWatch(b *backend) []*framework.Path {
	return framework.PathAppend(
		pathStatus(b),
		pathRuns(b),
		pathPoll(b),
		pathLastSuccessfulCommit(b),
		pathSignatures(b),
	)
}

// initWatch starts the worker where this node may write: it recovers runs a
// previous instance left and polls once.
func (b *backend) initWatch(_ context.Context, req *logical.InitializationRequest) error {
	if b.WriteSafeReplicationState() {
		b.watch.Start(watchStorage{req.Storage})
	}
	return nil
}

// periodic returns at once: it only decides whether a poll is due (and
// rotates the AppRole secret_id on the rare tick where that is due, so it
// never expires between runs).
func (b *backend) periodic(ctx context.Context, req *logical.Request) error {
	if b.WriteSafeReplicationState() {
		b.watch.Tick(watchStorage{req.Storage})
		b.approle.PeriodicRotation(ctx, approleStorage(req.Storage))
		b.patch.sweepIdempotency(ctx, req.Storage)
	}
	return nil
}

// watchMirrorTarget is the remote the watch's mirror follows, in the one
// mirror-cache layout the patch half shares.
func watchMirrorTarget(ws *watch.Settings) mirrorTarget {
	return mirrorTarget{URL: ws.RepoURL, Branch: ws.Branch, Auth: ws.Auth}
}

// watchStorage shows a mount's logical.Storage to the worker as
// watch.Storage; vaultStorage undoes it for the backend code the worker
// calls back.
type watchStorage struct{ s logical.Storage }

func (w watchStorage) Get(ctx context.Context, key string) ([]byte, error) {
	e, err := w.s.Get(ctx, key)
	if err != nil || e == nil {
		return nil, err
	}
	if e.Value == nil {
		return []byte{}, nil // present but empty is not absent
	}
	return e.Value, nil
}

func (w watchStorage) Put(ctx context.Context, key string, value []byte) error {
	return w.s.Put(ctx, &logical.StorageEntry{Key: key, Value: value})
}

func (w watchStorage) Delete(ctx context.Context, key string) error { return w.s.Delete(ctx, key) }

func (w watchStorage) List(ctx context.Context, prefix string) ([]string, error) {
	return w.s.List(ctx, prefix)
}

// vaultStorage returns the logical.Storage behind the worker's storage: the
// worker only hands the deps the storage Start or Tick gave it, which the
// backend always wraps in watchStorage.
func vaultStorage(s watch.Storage) logical.Storage { return s.(watchStorage).s }

// loadWatchSettings gathers configure, the git credential and the trusted
// keys into what one poll needs.
func loadWatchSettings(ctx context.Context, s logical.Storage) (*watch.Settings, error) {
	cfg, err := getConfig(ctx, s)
	if err != nil {
		return nil, err
	}
	if cfg == nil {
		return nil, watch.ErrNotConfigured
	}
	cred, err := getGitCredential(ctx, s)
	if err != nil {
		return nil, err
	}
	trusted, keys, err := trustedForRule(ctx, s)
	if err != nil {
		return nil, err
	}
	if cfg.RunTimeout <= 0 {
		return nil, fmt.Errorf("run_timeout is %s: write a positive run_timeout to flant_gitops/configure", cfg.RunTimeout)
	}
	ws := &watch.Settings{
		RepoURL:               cfg.GitRepoURL,
		Branch:                cfg.GitBranchName,
		PollPeriod:            cfg.GitPollPeriod,
		Required:              cfg.RequiredSignatures,
		InitialLastSuccessful: cfg.InitialLastSuccessfulCommit,
		Image:                 cfg.DockerImage,
		Commands:              cfg.Commands,
		RunTimeout:            cfg.RunTimeout,
		MemoryBytes:           cfg.MemoryLimitBytes,
		NanoCPUs:              cfg.NanoCPUs,
		NetworkMode:           cfg.NetworkMode,
	}
	if cred != nil {
		if cred.GitRepoURL != "" && cred.GitRepoURL != cfg.GitRepoURL {
			return nil, fmt.Errorf("configure/git_credential was written for %s, not for git_repo_url %s, and is never sent elsewhere: write the credential again for the new URL, or delete it to fetch anonymously", cred.GitRepoURL, cfg.GitRepoURL)
		}
		ws.Auth = cred.auth()
	}
	ws.Keys = trusted
	if ws.PluginKeys, err = pluginKeyFingerprints(ctx, s, keys); err != nil {
		return nil, err
	}
	if ws.PathRules, err = pathRules(ctx, s); err != nil {
		return nil, err
	}
	return ws, nil
}
