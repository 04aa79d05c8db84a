package backend

import (
	"context"
	"sync"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/vault/sdk/logical"

	"github.com/flant/flant_gitops/backend/events"
	"github.com/flant/flant_gitops/backend/events/forge"
	"github.com/flant/flant_gitops/backend/events/metrics"
)

// statusStorage is the mount's storage as Initialize handed it, for the
// deliverer's reads of configure/commit_status; nil until then.
type statusStorage struct {
	mu sync.Mutex
	s  logical.Storage
}

func (ss *statusStorage) get() logical.Storage {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	return ss.s
}

func (ss *statusStorage) set(s logical.Storage) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	ss.s = s
}

// setupCommitStatus subscribes the commit statuses to the events and ties
// their delivery loop to the mount: it runs where the worker runs (the
// active node, where the events come from) and stops on Clean.
func (b *backend) setupCommitStatus() {
	store := &statusStorage{}
	b.statuses = forge.NewDeliverer(forge.Options{
		FailedAttempt: func() { b.metrics.DeliveryFailed(metrics.DeliveryCommitStatus) },
		Settings: func(ctx context.Context) (*forge.Settings, error) {
			s := store.get()
			if s == nil {
				return nil, nil
			}
			return loadCommitStatusSettings(ctx, s)
		},
		Mount: func(ctx context.Context) (string, error) {
			s := store.get()
			if s == nil {
				return "", nil
			}
			return b.mount.get(ctx, s)
		},
		Outbox: statusOutbox{store},
		Logger: func() hclog.Logger {
			if l := b.Backend.Logger(); l != nil {
				return l.Named("commit_status")
			}
			return nil
		},
	})
	b.events.Subscribe("commit_status", 0, b.statuses.Handle, events.RunStarted, events.RunFinished, events.CommitRefused)
	b.onInit = append(b.onInit, func(_ context.Context, req *logical.InitializationRequest) error {
		if b.WriteSafeReplicationState() {
			store.set(req.Storage)
			b.statuses.Start()
		}
		return nil
	})
	b.onClean = append(b.onClean, b.statuses.Stop)
}

// loadCommitStatusSettings reads configure/commit_status with the watched
// repository; nil when statuses are not configured or switched off.
func loadCommitStatusSettings(ctx context.Context, s logical.Storage) (*forge.Settings, error) {
	e, err := getCommitStatus(ctx, s)
	if err != nil || e == nil || !e.Enabled {
		return nil, err
	}
	set := &forge.Settings{
		Provider:          forge.Provider(e.Provider),
		APIURL:            e.APIURL,
		Token:             e.Token,
		Repository:        e.Repository,
		ContextTemplate:   e.ContextTemplate,
		TargetURLTemplate: e.TargetURLTemplate,
	}
	cfg, err := getConfig(ctx, s)
	if err != nil {
		return nil, err
	}
	if cfg != nil {
		set.RepoURL = cfg.GitRepoURL
	}
	return set, nil
}

// commitStatusStatus is the commit_status section of status.
func (b *backend) commitStatusStatus(ctx context.Context, s logical.Storage) (map[string]any, error) {
	e, err := getCommitStatus(ctx, s)
	if err != nil {
		return nil, err
	}
	snap := b.statuses.Snapshot()
	out := map[string]any{
		"configured":      e != nil,
		"enabled":         e != nil && e.Enabled,
		"delivering":      snap.Running,
		"queued":          snap.Queued,
		"delivered":       snap.Delivered,
		"failed":          snap.Failed,
		"repeats_skipped": snap.Skipped,
		"dropped_events":  b.events.Dropped()["commit_status"],
		"last":            nil,
	}
	if e != nil {
		out["provider"] = e.Provider
	}
	if l := snap.Last; l != nil {
		last := map[string]any{
			"at":       formatTime(l.At),
			"commit":   l.Commit,
			"state":    string(l.State),
			"context":  l.Context,
			"result":   l.Result,
			"attempts": l.Attempts,
		}
		if l.HTTPCode != 0 {
			last["http_code"] = l.HTTPCode
		}
		if l.Error != "" {
			last["error"] = l.Error
		}
		if !l.NextAttemptAt.IsZero() {
			last["next_attempt_at"] = formatTime(l.NextAttemptAt)
		}
		out["last"] = last
	}
	return out, nil
}

// statusOutbox keeps the waiting statuses in the mount's storage, so a
// restart or a new active node sends them.
type statusOutbox struct{ store *statusStorage }

func (o statusOutbox) Load(ctx context.Context) ([]forge.Waiting, error) {
	s := o.store.get()
	if s == nil {
		return nil, nil
	}
	kept, err := getEntry[[]forge.Waiting](ctx, s, storageKeyCommitStatusOutbox)
	if err != nil || kept == nil {
		return nil, err
	}
	return *kept, nil
}

func (o statusOutbox) Save(ctx context.Context, queue []forge.Waiting) error {
	s := o.store.get()
	if s == nil {
		return nil
	}
	if len(queue) == 0 {
		return deleteEntry(ctx, s, storageKeyCommitStatusOutbox)
	}
	return putEntry(ctx, s, storageKeyCommitStatusOutbox, queue)
}
