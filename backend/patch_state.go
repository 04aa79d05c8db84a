package backend

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"sync"

	"github.com/hashicorp/vault/sdk/logical"

	"github.com/flant/flant_gitops/patch"
	"github.com/flant/flant_gitops/policy"
)

// patchState is the patch half's share of a mount: the prepared policy, the
// signing key, and one slot per repository and branch holding its mirror and
// its lock. It lives as long as the backend; nothing is global.
type patchState struct {
	b *backend

	// configMu serialises read-modify-write of repository entries.
	configMu sync.Mutex

	keyMu          sync.Mutex
	key            *patch.SigningKey
	keyFingerprint string

	policyMu      sync.Mutex
	policy        *policy.Engine
	policyVersion string

	slotsMu sync.Mutex
	slots   map[string]*repoSlot // by url + branch

	// pool bounds the groups of all branches working at once, so that one
	// busy branch takes turns with the others.
	pool  *patch.Pool
	group patch.GroupLimits
	// budget bounds the bytes the patch requests of every branch hold: the
	// process's (pluginBudget), as memory is. pathPatchWrite takes it from
	// a request's arrival to its answer, the whole time its copies live, so
	// the Repos do not take it again.
	budget *patch.Budget

	// idem holds the idempotency keys in flight and the record counts
	// (patch_idempotency.go).
	idem idempotency

	// tips remembers require_trusted_tip verdicts (patch_trusted_tip.go).
	tips tipMemo
}

// pluginBudget is the one byte budget of the patch queues of every mount
// this plugin process serves (Vault multiplexes mounts into one process),
// sized from its memory limit: the one thing shared between mounts, as the
// memory it guards is.
var pluginBudget = sync.OnceValue(func() *patch.Budget {
	plugin, _ := patch.QueueBudgets()
	return patch.NewBudget(plugin)
})

// repoSlot holds the Repo of one branch. The Repo groups and serialises the
// transactions itself; the lock only guards opening and replacing it. It is
// a one-element channel so that a request waiting for it gives up when its
// context ends.
type repoSlot struct {
	lock chan struct{}
	repo *patch.Repo
	// opened identifies the configuration repo was opened with; a change of
	// credentials reopens it (the mirror folder is kept).
	opened string
	// folder is the branch's cache folder; a slot's folder is never stale.
	folder string
}

// patchQueueEnv overrides how many patches may wait for one branch.
const patchQueueEnv = "FLANT_GITOPS_PATCH_QUEUE"

// patchPoolSize is how many groups work at once: the work is CPU (YAML,
// signing) and network (fetch, push) in turns, so a few more than the cores.
func patchPoolSize() int { return max(2, runtime.NumCPU()) }

func newPatchState(b *backend) *patchState {
	g := patch.DefaultGroupLimits()
	if n, err := strconv.Atoi(os.Getenv(patchQueueEnv)); err == nil && n > 0 {
		g.MaxQueued = n
	}
	return &patchState{b: b, slots: map[string]*repoSlot{}, pool: patch.NewPool(patchPoolSize()), group: g, budget: pluginBudget()}
}

// transact runs one transaction on the branch's Repo, which groups it with
// the other requests for the branch.
func (ps *patchState) transact(ctx context.Context, s logical.Storage, repo *repositoryEntry, txn patch.TxnRequest) (patch.TxnResult, error) {
	r, err := ps.openRepo(ctx, s, repo)
	if err != nil {
		return patch.TxnResult{}, err
	}
	res, err := r.Patch(ctx, txn)
	var closed *patch.ClosedError
	if errors.As(err, &closed) {
		// Reconfigured between opening and queueing: once more, on the new one.
		if r, err = ps.openRepo(ctx, s, repo); err != nil {
			return patch.TxnResult{}, err
		}
		res, err = r.Patch(ctx, txn)
	}
	return res, err
}

// openRepo returns the branch's Repo, opening it on first use and reopening
// it (after its queued work is done) when the configuration changed.
func (ps *patchState) openRepo(ctx context.Context, s logical.Storage, repo *repositoryEntry) (*patch.Repo, error) {
	slot := ps.slot(repo)
	select {
	case slot.lock <- struct{}{}:
	case <-ctx.Done():
		return nil, fmt.Errorf("waiting for the patch target of branch %q: %w", repo.Branch, ctx.Err())
	}
	defer func() { <-slot.lock }()

	opened := repo.mirrorTarget().fingerprint()
	if slot.repo != nil && slot.opened == opened {
		return slot.repo, nil
	}
	if slot.repo != nil {
		if err := slot.repo.Close(ctx); err != nil {
			return nil, err
		}
		slot.repo, slot.opened = nil, ""
	}
	dir, err := ps.mirrorDir(ctx, s, repo)
	if err != nil {
		return nil, err
	}
	r, err := patch.OpenRepo(ctx, dir, patch.Remote{URL: repo.URL, Branch: repo.Branch, Auth: repo.auth()})
	if err != nil {
		return nil, err
	}
	r.Pool, r.Group, r.OnPush = ps.pool, ps.group, ps.onPush(repo)
	slot.repo, slot.opened = r, opened
	return r, nil
}

func (ps *patchState) slot(repo *repositoryEntry) *repoSlot {
	ps.slotsMu.Lock()
	defer ps.slotsMu.Unlock()
	key := repo.URL + "\x00" + repo.Branch
	sl := ps.slots[key]
	if sl == nil {
		sl = &repoSlot{lock: make(chan struct{}, 1), folder: repo.mirrorTarget().folder()}
		ps.slots[key] = sl
	}
	return sl
}

// dropMirror forgets a deleted repository's mirror and removes its folder,
// waiting for a transaction in flight to finish first.
func (ps *patchState) dropMirror(ctx context.Context, s logical.Storage, repo *repositoryEntry) error {
	slot := ps.slot(repo)
	select {
	case slot.lock <- struct{}{}:
	case <-ctx.Done():
		return fmt.Errorf("waiting for the patches of branch %q to finish: %w", repo.Branch, ctx.Err())
	}
	defer func() { <-slot.lock }()
	if slot.repo != nil {
		if err := slot.repo.Close(ctx); err != nil {
			return err
		}
	}
	slot.repo, slot.opened = nil, ""
	dir, err := ps.mirrorDir(ctx, s, repo)
	if err != nil {
		return err
	}
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("removing the mirror of %s: %w", repo.URL, err)
	}
	return nil
}

func (r *repositoryEntry) mirrorTarget() mirrorTarget {
	return mirrorTarget{URL: r.URL, Branch: r.Branch, Auth: r.auth()}
}

// mirrorDir is where the branch's mirror lives (see mirrorFolder). A folder
// is stale when neither a configured repository nor a branch patched since
// the plugin started claims it. The sweep holds slotsMu, so a branch being
// opened (its slot is made first) never loses its folder.
func (ps *patchState) mirrorDir(ctx context.Context, s logical.Storage, repo *repositoryEntry) (string, error) {
	mountID, err := ps.b.mount.get(ctx, s)
	if err != nil {
		return "", err
	}
	keep, err := configuredMirrorFolders(ctx, s)
	if err != nil {
		return "", err
	}
	ps.slotsMu.Lock()
	defer ps.slotsMu.Unlock()
	for _, sl := range ps.slots {
		keep[sl.folder] = true
	}
	return mirrorFolder(ps.b.Logger(), cacheBase(), mountID, mirrorKindPatch, repo.mirrorTarget(), func(f string) bool { return keep[f] })
}

// configuredMirrorFolders are the cache folders of the configured repositories.
func configuredMirrorFolders(ctx context.Context, s logical.Storage) (map[string]bool, error) {
	names, err := s.List(ctx, storagePrefixRepository)
	if err != nil {
		return nil, fmt.Errorf("listing the repositories: %w", err)
	}
	keep := map[string]bool{}
	for _, n := range names {
		e, err := getRepository(ctx, s, n)
		if err != nil {
			return nil, err
		}
		if e != nil {
			keep[e.mirrorTarget().folder()] = true
		}
	}
	return keep, nil
}
