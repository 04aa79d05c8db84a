package patch

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync/atomic"
	"time"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/go-git/go-git/v5/plumbing/storer"
	"github.com/go-git/go-git/v5/storage/memory"
)

// Group commit. One worker goroutine per Repo owns the mirror while requests
// are waiting. It takes everything queued (within GroupLimits), fetches the
// tip, applies the requests in arrival order, each as its own signed commit
// on top of the previous one, and pushes the chain in one compare-and-swap
// push. Requests that arrive meanwhile queue for the next group, so a burst
// of N requests costs about two pushes, not N.

// DefaultPushTimeout bounds one push of a group.
const DefaultPushTimeout = 5 * time.Minute

// GroupLimits bounds group commit on one branch.
type GroupLimits struct {
	// MaxQueued bounds the requests waiting for the branch, not counting the
	// group in flight; one more is refused with a QueueFullError.
	MaxQueued int
	// MaxGroup bounds the requests that go out in one push.
	MaxGroup int
	// MaxGroupBytes bounds the summed size of the requests of one push (the
	// contents, values and messages they carry). A bigger request goes alone.
	MaxGroupBytes int
}

// DefaultGroupLimits: a group of 64 one-line bumps pushes a pack of a few
// MiB; 256 waiting requests are four groups, a few seconds.
func DefaultGroupLimits() GroupLimits {
	return GroupLimits{MaxQueued: 256, MaxGroup: 64, MaxGroupBytes: 32 << 20}
}

func (l GroupLimits) withDefaults() GroupLimits {
	d := DefaultGroupLimits()
	defaultIfNotPositive(&l.MaxQueued, d.MaxQueued)
	defaultIfNotPositive(&l.MaxGroup, d.MaxGroup)
	defaultIfNotPositive(&l.MaxGroupBytes, d.MaxGroupBytes)
	return l
}

// QueueFullError means the branch already has GroupLimits.MaxQueued
// requests waiting. Nothing was done; RetryAfter estimates when the queue
// will have drained.
type QueueFullError struct {
	Branch     string
	Queued     int
	RetryAfter time.Duration
}

func (e *QueueFullError) Error() string {
	return fmt.Sprintf("branch %q already has %d patches waiting, the most it queues; nothing was done, retry in %s", e.Branch, e.Queued, e.RetryAfter)
}

// ClosedError means the repository was reconfigured or removed while the
// request waited; nothing of it was pushed.
type ClosedError struct{ Branch string }

func (e *ClosedError) Error() string {
	return fmt.Sprintf("the patch target of branch %q was reconfigured or removed; nothing was pushed, retry", e.Branch)
}

// Pool bounds how many groups, of every repository sharing it, do their work
// (fetch, apply, sign, push) at once. A group holds a slot for one push and
// then queues again behind the others (Go wakes blocked channel senders in
// arrival order), so a busy branch takes turns with the rest instead of
// starving them.
type Pool struct {
	slots   chan struct{}
	waiting atomic.Int32 // groups waiting for a slot
}

// Waiting is how many groups wait for a slot now.
func (p *Pool) Waiting() int { return int(p.waiting.Load()) }

// NewPool makes a pool of n slots (at least one).
func NewPool(n int) *Pool {
	return &Pool{slots: make(chan struct{}, max(n, 1))}
}

func (p *Pool) acquire() {
	if p != nil {
		p.waiting.Add(1)
		p.slots <- struct{}{}
		p.waiting.Add(-1)
	}
}

func (p *Pool) release() {
	if p != nil {
		<-p.slots
	}
}

// pending is one request in the queue or in a group.
type pending struct {
	ctx   context.Context
	req   TxnRequest
	size  int
	taken bool // in a group: its caller waits for done
	done  chan struct{}
	res   TxnResult
	err   error
}

// requestSize approximates what a request costs a group: the bytes it
// brings in.
func requestSize(req TxnRequest) int {
	n := len(req.Message)
	for _, c := range req.Commands {
		n += len(c.Path)
		if c.SetField != nil {
			n += len(c.SetField.Field) + len(c.SetField.Value)
		}
		if c.CreateFile != nil && c.CreateFile.Content != nil {
			n += len(*c.CreateFile.Content)
		}
	}
	return n
}

// Patch applies the request's commands in one commit on top of the branch
// and pushes it, grouped with the other requests waiting for the branch.
// Nothing of a request is pushed unless every one of its commands applied.
// A request whose caller is gone (ctx done) before its group's push starts
// is dropped; once the push is on the wire Patch waits for its outcome, so
// the answer is always the truth.
func (r *Repo) Patch(ctx context.Context, req TxnRequest) (TxnResult, error) {
	if err := checkPerson("author", req.Author); err != nil {
		return TxnResult{}, err
	}
	if err := checkPerson("committer", req.Committer); err != nil {
		return TxnResult{}, err
	}
	if err := ctx.Err(); err != nil {
		return TxnResult{Branch: r.remote.Branch}, fmt.Errorf("patching branch %q: %w", r.remote.Branch, err)
	}
	p := &pending{ctx: ctx, req: req, size: requestSize(req), done: make(chan struct{})}

	r.mu.Lock()
	lim := r.Group.withDefaults()
	switch {
	case r.closed:
		r.mu.Unlock()
		return TxnResult{Branch: r.remote.Branch}, &ClosedError{Branch: r.remote.Branch}
	case len(r.queue) >= lim.MaxQueued:
		e := &QueueFullError{Branch: r.remote.Branch, Queued: len(r.queue), RetryAfter: r.retryAfter(lim)}
		r.mu.Unlock()
		return TxnResult{Branch: r.remote.Branch}, e
	}
	r.queue = append(r.queue, p)
	if !r.running {
		r.running, r.idle = true, make(chan struct{})
		go r.work()
	}
	r.mu.Unlock()

	select {
	case <-p.done:
		return p.res, p.err
	case <-ctx.Done():
	}
	r.mu.Lock()
	if !p.taken {
		for i, q := range r.queue {
			if q == p {
				r.queue = append(r.queue[:i], r.queue[i+1:]...)
				break
			}
		}
		r.mu.Unlock()
		return TxnResult{Branch: r.remote.Branch}, fmt.Errorf("waiting for the other patches of branch %q: %w; nothing was pushed", r.remote.Branch, ctx.Err())
	}
	r.mu.Unlock()
	// In a group: the worker drops it before the push, or the push decides.
	<-p.done
	return p.res, p.err
}

// retryAfter estimates how long the queue takes to drain, in whole seconds.
func (r *Repo) retryAfter(lim GroupLimits) time.Duration {
	groups := len(r.queue)/lim.MaxGroup + 1
	d := time.Duration(groups) * max(r.lastGroup, time.Second)
	return d.Round(time.Second)
}

// Close refuses new requests and waits until the worker has finished the
// ones it holds, so that the mirror may be reopened or removed.
func (r *Repo) Close(ctx context.Context) error {
	r.mu.Lock()
	r.closed = true
	var idle chan struct{}
	if r.running {
		idle = r.idle
	}
	r.mu.Unlock()
	if idle == nil {
		return nil
	}
	select {
	case <-idle:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("waiting for the patches of branch %q to finish: %w", r.remote.Branch, ctx.Err())
	}
}

// work runs groups until the queue is empty.
func (r *Repo) work() {
	for {
		r.Pool.acquire()
		batch := r.take()
		if len(batch) == 0 {
			r.Pool.release()
			r.mu.Lock()
			if len(r.queue) == 0 {
				r.running = false
				close(r.idle)
				r.mu.Unlock()
				return
			}
			r.mu.Unlock()
			continue
		}
		start := time.Now()
		r.runGroup(batch)
		r.Pool.release()
		r.mu.Lock()
		r.lastGroup = time.Since(start)
		r.mu.Unlock()
	}
}

// take moves the next group out of the queue: arrival order, within the
// group bounds, at least one request. Requests whose caller is gone are
// dropped.
func (r *Repo) take() []*pending {
	r.mu.Lock()
	defer r.mu.Unlock()
	lim := r.Group.withDefaults()
	var batch []*pending
	bytes := 0
	i := 0
	for ; i < len(r.queue) && len(batch) < lim.MaxGroup; i++ {
		p := r.queue[i]
		if p.ctx.Err() != nil {
			p.taken = true
			finish(p, TxnResult{Branch: r.remote.Branch}, fmt.Errorf("waiting for the other patches of branch %q: %w; nothing was pushed", r.remote.Branch, p.ctx.Err()))
			continue
		}
		if len(batch) > 0 && bytes+p.size > lim.MaxGroupBytes {
			break
		}
		p.taken = true
		batch = append(batch, p)
		bytes += p.size
	}
	r.queue = append(r.queue[:0:0], r.queue[i:]...)
	return batch
}

func finish(p *pending, res TxnResult, err error) {
	p.res, p.err = res, err
	close(p.done)
}

// groupContext ends when every caller of the group is gone: then fetching
// and applying for it is pointless.
func groupContext(batch []*pending) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(context.Background())
	var left atomic.Int32
	left.Store(int32(len(batch)))
	stops := make([]func() bool, 0, len(batch))
	for _, p := range batch {
		stops = append(stops, context.AfterFunc(p.ctx, func() {
			if left.Add(-1) == 0 {
				cancel()
			}
		}))
	}
	return ctx, func() {
		for _, stop := range stops {
			stop()
		}
		cancel()
	}
}

// runGroup builds and pushes the group, re-fetching and re-applying on a
// lost race a bounded number of times with jittered backoff. Every member
// is finished when it returns.
func (r *Repo) runGroup(batch []*pending) {
	ctx, cancel := groupContext(batch)
	defer cancel()
	attempts := 0
	for _, p := range batch {
		attempts = max(attempts, p.req.MaxAttempts)
	}
	if attempts <= 0 {
		attempts = DefaultMaxAttempts
	}
	live := batch
	for i := 1; ; {
		var err error
		live, err = r.attemptGroup(ctx, live, i)
		switch {
		case len(live) == 0:
			return
		case errors.Is(err, errDropped):
			continue // a caller left before the push: rebuild without it
		case !errors.Is(err, errMoved):
			r.finishAll(live, i, err)
			return
		case i >= attempts:
			r.finishAll(live, i, &ConflictError{Branch: r.remote.Branch, Attempts: i})
			return
		}
		// Full jitter over a doubling window keeps two writers that
		// collided from colliding again in lockstep.
		backoff := time.Duration(rand.Int64N(int64(25*time.Millisecond) << i))
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			r.finishAll(live, i, fmt.Errorf("patching branch %q: %w", r.remote.Branch, ctx.Err()))
			return
		case <-t.C:
		}
		i++
	}
}

func (r *Repo) finishAll(live []*pending, attempts int, err error) {
	for _, p := range live {
		finish(p, TxnResult{Branch: r.remote.Branch, Attempts: attempts}, err)
	}
}

// errDropped: a member's caller left after its commit was built and before
// the push; the chain is rebuilt without it.
var errDropped = errors.New("a caller left before the push")

// attemptGroup is one fetch-apply-push of the group. Members that end here
// (their own edit error, a refused base, a dry run, or the push's outcome)
// are finished; it returns those still waiting and why.
func (r *Repo) attemptGroup(ctx context.Context, live []*pending, attempt int) ([]*pending, error) {
	fr, err := r.mirror.Fetch(ctx)
	if err != nil {
		return live, &RemoteError{Op: "fetching branch " + r.remote.Branch + " of", URL: r.remote.URL, Err: err}
	}
	tip := plumbing.NewHash(fr.Head)
	base := r.mirror.Repository().Storer
	overlay := memory.NewStorage()
	store := &layeredStorer{EncodedObjectStorer: base, over: overlay}
	tipCommit, err := object.GetCommit(base, tip)
	if err != nil {
		return live, fmt.Errorf("reading the tip %s of branch %q: %w", tip, r.remote.Branch, err)
	}

	head, headTree := tip, tipCommit.TreeHash
	// The first commit of this group made without a signature (its
	// request's repository entry does not sign): a member whose CheckBase
	// accepted the tip must not be built on it.
	var unsigned plumbing.Hash
	var written []plumbing.Hash
	var waiting, committed []*pending
	for _, p := range live {
		res := TxnResult{Branch: r.remote.Branch, Parent: head.String(), Attempts: attempt}
		if err := p.ctx.Err(); err != nil {
			finish(p, res, fmt.Errorf("patching branch %q: %w; nothing was pushed", r.remote.Branch, err))
			continue
		}
		if p.req.CheckBase != nil {
			if err := p.req.CheckBase(ctx, tip.String(), r.mirror); err != nil {
				finish(p, res, &BaseError{Branch: r.remote.Branch, Tip: tip.String(), Err: err})
				continue
			}
			if !p.req.DryRun && !unsigned.IsZero() {
				finish(p, res, &BaseError{Branch: r.remote.Branch, Tip: tip.String(), Err: fmt.Errorf(
					"this request would be built on %s, made in the same push for other requests, and commit %s below it is unsigned "+
						"(made for a repository entry with sign_commits=false); a trusted tip is checked on the commit a request is built on: "+
						"once a trusted person signs %s (a signatures note will do), retry", head, unsigned, unsigned)})
				continue
			}
		}
		if p.req.DryRun {
			// A dry run answers for the branch as it is, not for the
			// group's commits that are not pushed yet.
			res.Parent = tip.String()
			res, err := r.build(ctx, p, res, store, tip, tipCommit.TreeHash, nil)
			finish(p, res, err)
			continue
		}
		w := &treeWriter{base: store, out: overlay}
		res, err := r.build(ctx, p, res, store, head, headTree, w)
		if err != nil {
			finish(p, res, err) // fails alone; the chain goes on without it
			continue
		}
		p.res = res
		waiting = append(waiting, p)
		if !res.NoOp {
			c, err := object.GetCommit(store, plumbing.NewHash(res.Commit))
			if err != nil {
				finish(p, res, fmt.Errorf("reading the new commit: %w", err))
				waiting = waiting[:len(waiting)-1]
				continue
			}
			head, headTree = c.Hash, c.TreeHash
			if p.req.Signer == nil && unsigned.IsZero() {
				unsigned = c.Hash
			}
			written = append(written, w.written...)
			committed = append(committed, p)
		}
	}
	if len(committed) == 0 {
		for _, p := range waiting {
			finish(p, p.res, nil)
		}
		return nil, nil
	}

	// The last moment a caller that left can be dropped.
	r.mu.Lock()
	for _, p := range committed {
		if p.ctx.Err() != nil {
			r.mu.Unlock()
			return waiting, errDropped
		}
	}
	r.mu.Unlock()

	pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), DefaultPushTimeout)
	defer cancel()
	if err := r.push(pctx, tip, head, overlay, written); err != nil {
		return waiting, err
	}
	for _, p := range waiting {
		finish(p, p.res, nil)
	}
	return nil, nil
}

// build applies p's commands to the tree of commit parent. With w it writes
// the new tree and the signed commit into w.out; without, it answers a dry
// run's diff.
func (r *Repo) build(ctx context.Context, p *pending, res TxnResult, store storer.EncodedObjectStorer, parent, treeHash plumbing.Hash, w *treeWriter) (TxnResult, error) {
	req := p.req
	root, err := object.GetTree(store, treeHash)
	if err != nil {
		return res, fmt.Errorf("reading the tree of %s: %w", parent, err)
	}
	changes, err := Apply(ctx, &gitTree{store: store, root: root, limits: req.Limits}, req.Commands, req.Limits)
	if err != nil {
		return res, err
	}
	var effective []Change
	for _, c := range changes {
		same, err := sameContent(root, c)
		if err != nil {
			return res, err
		}
		if !same {
			effective = append(effective, c)
		}
	}
	if len(effective) == 0 {
		res.NoOp, res.Commit = true, parent.String()
		return res, nil
	}
	if w == nil {
		for _, c := range effective {
			res.ChangedPaths = append(res.ChangedPaths, c.Path)
		}
		res.Diff, err = unifiedDiff(root, effective)
		return res, err
	}
	nodes, err := buildChangeTree(effective)
	if err != nil {
		return res, err
	}
	newRoot, _, err := w.rewrite(root.Hash, "", nodes)
	if err != nil {
		return res, fmt.Errorf("building the new tree: %w", err)
	}
	if newRoot == root.Hash {
		res.NoOp, res.Commit = true, parent.String()
		return res, nil
	}
	for _, c := range effective {
		res.ChangedPaths = append(res.ChangedPaths, c.Path)
	}
	now := req.Now
	if now == nil {
		now = time.Now
	}
	commit, err := r.commit(req, now(), parent, newRoot, w)
	if err != nil {
		return res, err
	}
	res.Commit = commit.String()
	return res, nil
}

// layeredStorer reads the group's new objects first, then the mirror's.
type layeredStorer struct {
	storer.EncodedObjectStorer
	over storer.EncodedObjectStorer
}

func (l *layeredStorer) EncodedObject(t plumbing.ObjectType, h plumbing.Hash) (plumbing.EncodedObject, error) {
	if o, err := l.over.EncodedObject(t, h); err == nil {
		return o, nil
	}
	return l.EncodedObjectStorer.EncodedObject(t, h)
}

func (l *layeredStorer) HasEncodedObject(h plumbing.Hash) error {
	if l.over.HasEncodedObject(h) == nil {
		return nil
	}
	return l.EncodedObjectStorer.HasEncodedObject(h)
}

func (l *layeredStorer) EncodedObjectSize(h plumbing.Hash) (int64, error) {
	if n, err := l.over.EncodedObjectSize(h); err == nil {
		return n, nil
	}
	return l.EncodedObjectStorer.EncodedObjectSize(h)
}
