package backend

import (
	"time"

	"github.com/flant/flant_gitops/backend/events"
	"github.com/flant/flant_gitops/backend/events/metrics"
	"github.com/flant/flant_gitops/patch"
)

// metricsQueue is the metrics subscriber's queue: counting takes
// microseconds, so it fills only when the process is starved.
const metricsQueue = events.DefaultQueue

// setupMetrics makes the mount's metrics (its own registry) and subscribes
// them to the bus. Values that are state rather than events (dropped
// events, queued patches) are read when Prometheus scrapes. The
// commit-status and notification subscribers count their failed delivery
// attempts with b.metrics.DeliveryFailed(metrics.DeliveryCommitStatus or
// metrics.DeliveryNotification): hand them b.metrics behind a one-method
// interface of their own.
func (b *backend) setupMetrics() {
	b.metrics = metrics.New(metrics.Sources{
		Version:    Version,
		Dropped:    b.events.Dropped,
		Queued:     b.events.Queued,
		PatchQueue: b.patch.queued,
		// The closure: tests install a worker of their own after
		// newBackend.
		RunInProgress: func() bool {
			if b.watch == nil {
				return false
			}
			_, run := b.watch.Snapshot()
			return run != ""
		},
	})
	b.events.Subscribe("metrics", metricsQueue, b.metrics.Handle)
}

// queued sums the patch queues of the mount's branches.
func (ps *patchState) queued() (requests int, bytes int64) {
	ps.slotsMu.Lock()
	repos := make([]*patch.Repo, 0, len(ps.slots))
	for _, sl := range ps.slots {
		// A slot's repo is replaced only under its lock; reading the
		// pointer racily would be a data race, so take the lock briefly
		// and skip a slot busy being reopened.
		select {
		case sl.lock <- struct{}{}:
			if sl.repo != nil {
				repos = append(repos, sl.repo)
			}
			<-sl.lock
		default:
		}
	}
	ps.slotsMu.Unlock()
	for _, r := range repos {
		n, b := r.Queued()
		requests += n
		bytes += b
	}
	return requests, bytes
}

// onPush publishes each accepted group push of a branch.
func (ps *patchState) onPush(repo *repositoryEntry) func(patch.GroupPush) {
	b := ps.b
	return func(p patch.GroupPush) {
		b.events.Publish(events.Event{Kind: events.GroupPushed, Time: time.Now(), Repository: repo.URL, Branch: p.Branch,
			Commit: p.Commit, GroupSize: p.Commits, Duration: p.Duration})
	}
}
