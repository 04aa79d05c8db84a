package backend

import (
	"context"
	"fmt"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"

	"github.com/flant/flant_gitops/container"
	"github.com/flant/flant_gitops/gitwatch"
)

// setupWatch ties the watch worker to the backend's lifecycle: started by
// Initialize, woken by the periodic function, stopped (and waited for) by
// Clean before the AppRole session it may use is torn down.
func (b *backend) setupWatch() {
	b.engine = newEngineConn(b.Backend.Logger)
	b.watch = newWatcher(b.Backend.Logger, watchDeps{
		// Each poll (and the recovery of an unfinished run) reads
		// configure/docker_engine first: a changed engine is switched to,
		// and one that cannot be used stops the poll before a run is
		// recorded, as an error in status rather than a failed deploy.
		settings: func(ctx context.Context, s logical.Storage) (*watchSettings, error) {
			_, engineErr := b.engine.ensure(ctx, s)
			ws, err := loadWatchSettings(ctx, s)
			if err != nil {
				return nil, err
			}
			if engineErr != nil {
				return nil, engineErr
			}
			return ws, nil
		},
		openMirror: func(ctx context.Context, dir string, ws *watchSettings) (mirror, error) {
			return gitwatch.OpenMirror(ctx, dir, ws.RepoURL, ws.Branch, ws.Auth)
		},
		// The worker keeps the runner it gets; this one sends every call to
		// the engine configured at the time (docker_engine.go).
		newRunner: func(context.Context) (container.Runner, error) {
			return engineRunner{b.engine}, nil
		},
		vaultRequests: b.prepareVaultRequests,
		mount:         &b.mount,
	})
	b.Backend.PeriodicFunc = b.periodic
	b.onInit = append(b.onInit, b.initWatch)
	b.onClean = append(b.onClean, b.watch.stop)
}

// pathWatch is the status, runs, poll and last_successful_commit family.
func pathWatch(b *backend) []*framework.Path {
	return framework.PathAppend(
		pathStatus(b),
		pathRuns(b),
		pathPoll(b),
		pathLastSuccessfulCommit(b),
	)
}

// initWatch starts the worker where this node may write: it recovers runs a
// previous instance left and polls once.
func (b *backend) initWatch(_ context.Context, req *logical.InitializationRequest) error {
	if b.WriteSafeReplicationState() {
		b.watch.start(req.Storage)
	}
	return nil
}

// periodic returns at once: it only decides whether a poll is due (and
// rotates the AppRole secret_id on the rare tick where that is due, so it
// never expires between runs).
func (b *backend) periodic(ctx context.Context, req *logical.Request) error {
	if b.WriteSafeReplicationState() {
		b.watch.tick(req.Storage)
		b.approle.periodicSecretIDRotation(ctx, req.Storage)
	}
	return nil
}

// loadWatchSettings gathers configure, the git credential and the trusted
// keys into what one poll needs.
func loadWatchSettings(ctx context.Context, s logical.Storage) (*watchSettings, error) {
	cfg, err := getConfig(ctx, s)
	if err != nil {
		return nil, err
	}
	if cfg == nil {
		return nil, errNotConfigured
	}
	cred, err := getGitCredential(ctx, s)
	if err != nil {
		return nil, err
	}
	keys, err := listTrustedKeys(ctx, s)
	if err != nil {
		return nil, err
	}
	if cfg.RunTimeout <= 0 {
		return nil, fmt.Errorf("run_timeout is %s: write a positive run_timeout to flant_gitops/configure", cfg.RunTimeout)
	}
	ws := &watchSettings{
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
		ws.Auth = gitwatch.Auth{
			Username:      cred.Username,
			Password:      cred.Password,
			SSHPrivateKey: []byte(cred.SSHPrivateKey),
			SSHKnownHosts: []byte(cred.KnownHosts),
		}
	}
	for _, k := range keys {
		ws.Keys = append(ws.Keys, gitwatch.TrustedKey{Name: k.Name, Armored: k.PublicKey})
	}
	if ws.PluginKeys, err = pluginKeyFingerprints(ctx, s, keys); err != nil {
		return nil, err
	}
	return ws, nil
}
