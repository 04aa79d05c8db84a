package backend

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
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
}

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
	return &patchState{b: b, slots: map[string]*repoSlot{}, pool: patch.NewPool(patchPoolSize()), group: g}
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

	opened := repoFingerprint(repo)
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
	r.Pool, r.Group = ps.pool, ps.group
	slot.repo, slot.opened = r, opened
	return r, nil
}

func (ps *patchState) slot(repo *repositoryEntry) *repoSlot {
	ps.slotsMu.Lock()
	defer ps.slotsMu.Unlock()
	key := repo.URL + "\x00" + repo.Branch
	sl := ps.slots[key]
	if sl == nil {
		sl = &repoSlot{lock: make(chan struct{}, 1)}
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

// repoFingerprint changes whenever the remote or its credentials change.
func repoFingerprint(r *repositoryEntry) string {
	h := sha256.New()
	for _, s := range []string{r.URL, r.Branch, r.Username, r.Password, r.SSHPrivateKey, r.KnownHosts} {
		h.Write([]byte(s))
		h.Write([]byte{0})
	}
	return hex.EncodeToString(h.Sum(nil))
}

// mirrorDir is where the branch's mirror lives: under the cache folder
// (FLANT_GITOPS_CACHE_DIR or the OS temp dir), in a folder per mount (an ID
// kept in storage, so it survives plugin restarts and two mounts never
// share), one folder per URL and branch.
func (ps *patchState) mirrorDir(ctx context.Context, s logical.Storage, repo *repositoryEntry) (string, error) {
	mountID, err := ps.b.mount.get(ctx, s)
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256([]byte(repo.URL + "\x00" + repo.Branch))
	parent, err := privateCacheDir(ps.b.Logger(), cacheBase(), "patch-"+mountID)
	if err != nil {
		return "", err
	}
	return filepath.Join(parent, hex.EncodeToString(sum[:8])), nil
}
