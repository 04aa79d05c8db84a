package patch

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math"
	"math/rand/v2"
	"runtime/debug"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/go-git/go-git/v5/plumbing/storer"
	"github.com/go-git/go-git/v5/storage/memory"
)

// Group commit. One worker goroutine per Repo owns the mirror while requests
// are waiting. It takes a group of what is queued (within GroupLimits, round
// robin between callers), fetches the tip, applies the requests in arrival
// order, each as its own signed commit on top of the previous one, and
// pushes the chain in one compare-and-swap push. Requests that arrive
// meanwhile queue for the next group, so a burst of N requests costs about
// two pushes, not N. A chain the server refuses is pushed again in halves
// until each refused commit is alone, so a group is never worse for a
// member than its own push.

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
	// MaxQueuedBytes bounds the bytes (requestSize) the requests of the
	// branch hold, waiting or in its group in flight. A request that does
	// not fit is refused with a QueueFullError, unless the branch holds
	// nothing: a request bigger than the budget goes alone.
	MaxQueuedBytes int64
}

// DefaultGroupLimits: a group of 64 one-line bumps pushes a pack of a few
// MiB; 256 waiting requests are four groups, a few seconds. The byte budget
// of a branch comes from the memory limit (QueueBudgets).
func DefaultGroupLimits() GroupLimits {
	_, branch := QueueBudgets()
	return GroupLimits{MaxQueued: 256, MaxGroup: 64, MaxGroupBytes: 32 << 20, MaxQueuedBytes: branch}
}

func (l GroupLimits) withDefaults() GroupLimits {
	d := DefaultGroupLimits()
	defaultIfNotPositive(&l.MaxQueued, d.MaxQueued)
	defaultIfNotPositive(&l.MaxGroup, d.MaxGroup)
	defaultIfNotPositive(&l.MaxGroupBytes, d.MaxGroupBytes)
	defaultIfNotPositive(&l.MaxQueuedBytes, d.MaxQueuedBytes)
	return l
}

// DefaultMemoryLimit is what QueueBudgets sizes from when the process has no
// memory limit; the plugin's main sets the same soft limit unless GOMEMLIMIT
// is in its environment.
const DefaultMemoryLimit = 256 << 20

// QueueBudgets sizes the byte budgets of the patch queues from the process's
// memory limit (GOMEMLIMIT or debug.SetMemoryLimit; DefaultMemoryLimit when
// none is set). A queued request byte costs the plugin about three on the
// heap (Vault's decoded request, the parsed commands, its blobs in the
// group), so the plugin queues an eighth of the limit, under 40% of it on
// the heap, and one branch half of that.
func QueueBudgets() (plugin, branch int64) {
	lim := debug.SetMemoryLimit(-1)
	if lim <= 0 || lim == math.MaxInt64 {
		lim = DefaultMemoryLimit
	}
	plugin = max(lim/8, 1<<20)
	return plugin, plugin / 2
}

// QueueFullKind says which bound refused a request.
type QueueFullKind int

const (
	// QueueCount: the branch has GroupLimits.MaxQueued requests waiting.
	QueueCount QueueFullKind = iota
	// QueueBytes: the branch's requests hold GroupLimits.MaxQueuedBytes.
	QueueBytes
	// PluginBytes: the requests of every branch hold the Budget shared by
	// the plugin, or this caller holds half of it.
	PluginBytes
	// FairShare: the caller holds more than its fair share of the branch's
	// queue while other callers wait.
	FairShare
)

// QueueFullError means the request did not fit a bound of the queues.
// Nothing of it was done; RetryAfter estimates when there will be room.
type QueueFullError struct {
	Kind   QueueFullKind
	Branch string
	// Queued is the number of requests waiting for the branch.
	Queued int
	// Held and Budget are the bytes held and the bound, for the byte kinds
	// and FairShare (there, the caller's own and its share).
	Held, Budget int64
	// Size is the request's own size (requestSize).
	Size int64
	// Dropped: the request was waiting and was taken out of the queue to
	// make room for a caller holding less than its share.
	Dropped    bool
	RetryAfter time.Duration
}

func (e *QueueFullError) Error() string {
	switch e.Kind {
	case QueueBytes:
		return fmt.Sprintf("the patches of branch %q already hold %s, and this request's %s would pass the branch's budget of %s; nothing was done, retry in %s", e.Branch, mib(e.Held), mib(e.Size), mib(e.Budget), e.RetryAfter)
	case PluginBytes:
		return fmt.Sprintf("the plugin's patch queues of every branch hold %s of its budget of %s (sized from its memory limit; a caller holds at most half), no room for this request's %s; nothing was done, retry in %s", mib(e.Held), mib(e.Budget), mib(e.Size), e.RetryAfter)
	case FairShare:
		what := "this request was refused"
		if e.Dropped {
			what = "this request was taken out of the queue to make room for theirs"
		}
		return fmt.Sprintf("the caller of this request holds more than its fair share of branch %q's queue (%d patches waiting in all; its share is %d patches and %s) while other callers wait: %s, nothing of it was done, retry in %s", e.Branch, e.Queued, e.Held, mib(e.Budget), what, e.RetryAfter)
	}
	return fmt.Sprintf("branch %q already has %d patches waiting, the most it queues; nothing was done, retry in %s", e.Branch, e.Queued, e.RetryAfter)
}

func mib(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }

// Budget bounds the bytes (requestSize) that the patch requests of every
// Repo sharing it hold at once, waiting or in flight: the plugin's, sized
// from its memory limit. One caller holds at most half of it, so that
// another caller always finds room.
type Budget struct {
	limit int64

	mu     sync.Mutex
	used   int64
	byWhom map[string]int64
}

// NewBudget makes a budget of limit bytes.
func NewBudget(limit int64) *Budget {
	return &Budget{limit: limit, byWhom: map[string]int64{}}
}

// Limit is the budget's size in bytes.
func (b *Budget) Limit() int64 { return b.limit }

// Used is how many bytes requests hold now.
func (b *Budget) Used() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.used
}

// Take reserves n bytes for caller; false when they do not fit. The first
// request of an idle plugin goes whatever its size (Vault's request size
// limit bounds it). Give them back with Give.
func (b *Budget) Take(caller string, n int64) bool {
	if b == nil {
		return true
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.used > 0 && (b.used+n > b.limit || b.byWhom[caller]+n > b.limit/2) {
		return false
	}
	b.used += n
	b.byWhom[caller] += n
	return true
}

// Give gives back what Take reserved.
func (b *Budget) Give(caller string, n int64) {
	if b == nil {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.used -= n
	if b.byWhom[caller] -= n; b.byWhom[caller] <= 0 {
		delete(b.byWhom, caller)
	}
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
	ctx    context.Context
	req    TxnRequest
	size   int64
	caller string
	taken  bool // in a group: its caller waits for done
	done   chan struct{}
	res    TxnResult
	err    error
	// release gives back the bytes it holds; nil once given.
	release func()
}

// free gives back the bytes p holds, once.
func (p *pending) free() {
	if p.release != nil {
		p.release()
		p.release = nil
	}
}

// Fixed costs counted by requestSize: the request's bookkeeping and each
// command's, as held by Vault's decoded request and the parsed commands.
const (
	requestOverhead = 1 << 10
	commandOverhead = 128
)

// requestSize approximates what a request costs while it waits and in its
// group: the bytes it brings in, and a fixed cost per request and command,
// so that no request is free.
func requestSize(req TxnRequest) int64 {
	n := requestOverhead + len(req.Message) + len(req.Author.Name) + len(req.Author.Email) + len(req.Caller)
	for _, t := range req.Trailers {
		n += len(t.Key) + len(t.Value)
	}
	for _, c := range req.Commands {
		n += commandOverhead + len(c.Path)
		if c.SetField != nil {
			n += len(c.SetField.Field) + len(c.SetField.Value)
		}
		if c.CreateFile != nil && c.CreateFile.Content != nil {
			n += len(*c.CreateFile.Content)
		}
	}
	return int64(n)
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
	p := &pending{ctx: ctx, req: req, size: requestSize(req), caller: req.Caller, done: make(chan struct{})}

	r.mu.Lock()
	lim := r.Group.withDefaults()
	if r.closed {
		r.mu.Unlock()
		return TxnResult{Branch: r.remote.Branch}, &ClosedError{Branch: r.remote.Branch}
	}
	drop, dropErr, err := r.admit(p, lim)
	if err == nil && !r.Budget.Take(p.caller, p.size) {
		err = &QueueFullError{Kind: PluginBytes, Branch: r.remote.Branch, Queued: len(r.queue), Held: r.Budget.Used(), Budget: r.Budget.Limit(), Size: p.size, RetryAfter: r.retryAfter(lim)}
	}
	if err != nil {
		r.mu.Unlock()
		return TxnResult{Branch: r.remote.Branch}, err
	}
	r.hold(p)
	for _, d := range drop {
		r.unqueue(d)
		d.taken = true
		finish(d, TxnResult{Branch: r.remote.Branch}, dropErr)
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
		r.unqueue(p)
		p.free()
		r.mu.Unlock()
		return TxnResult{Branch: r.remote.Branch}, fmt.Errorf("waiting for the other patches of branch %q: %w; nothing was pushed", r.remote.Branch, ctx.Err())
	}
	r.mu.Unlock()
	// In a group: the worker drops it before the push, or the push decides.
	<-p.done
	return p.res, p.err
}

// unqueue takes p out of the waiting queue (r.mu held).
func (r *Repo) unqueue(p *pending) {
	for i, q := range r.queue {
		if q == p {
			r.queue = append(r.queue[:i], r.queue[i+1:]...)
			return
		}
	}
}

// hold counts p's bytes against the branch until p is finished or leaves
// (r.mu held). The plugin's Budget was taken by the caller of hold.
func (r *Repo) hold(p *pending) {
	r.heldMu.Lock()
	r.heldBytes += p.size
	r.heldBy[p.caller] += p.size
	r.heldMu.Unlock()
	p.release = func() {
		r.heldMu.Lock()
		r.heldBytes -= p.size
		if r.heldBy[p.caller] -= p.size; r.heldBy[p.caller] <= 0 {
			delete(r.heldBy, p.caller)
		}
		r.heldMu.Unlock()
		r.Budget.Give(p.caller, p.size)
	}
}

// callersWaiting counts the distinct callers of the waiting requests, plus
// caller (r.mu held).
func (r *Repo) callersWaiting(caller string) int {
	seen := map[string]bool{caller: true}
	for _, q := range r.queue {
		seen[q.caller] = true
	}
	return len(seen)
}

// callersHolding counts the distinct callers holding bytes of the branch,
// plus caller (r.mu held).
func (r *Repo) callersHolding(caller string) int {
	r.heldMu.Lock()
	defer r.heldMu.Unlock()
	n := len(r.heldBy)
	if r.heldBy[caller] == 0 {
		n++
	}
	return n
}

// admit decides whether p may queue (r.mu held; nothing changes when it
// refuses). Within the branch's bounds everyone queues. At a bound, the
// room is shared fairly: a caller holding less than its share (the bound
// divided among the callers waiting, or holding bytes) takes the place of
// the newest waiting requests of the caller holding the most, if that one
// holds more than its share; admit returns them, to be answered with a
// FairShare QueueFullError, the one admit returns with them. Otherwise p
// is refused.
func (r *Repo) admit(p *pending, lim GroupLimits) ([]*pending, *QueueFullError, error) {
	refusal := func(kind QueueFullKind, held, budget int64) *QueueFullError {
		return &QueueFullError{Kind: kind, Branch: r.remote.Branch, Queued: len(r.queue), Held: held, Budget: budget, Size: p.size, RetryAfter: r.retryAfter(lim)}
	}
	refuse := func(kind QueueFullKind, held, budget int64) ([]*pending, *QueueFullError, error) {
		return nil, nil, refusal(kind, held, budget)
	}
	waiting := map[string][]*pending{} // by caller, in arrival order
	for _, q := range r.queue {
		waiting[q.caller] = append(waiting[q.caller], q)
	}
	r.heldMu.Lock()
	total := r.heldBytes
	held := maps.Clone(r.heldBy)
	r.heldMu.Unlock()
	countShare := max(lim.MaxQueued/r.callersWaiting(p.caller), 1)
	byteShare := lim.MaxQueuedBytes / int64(r.callersHolding(p.caller))

	// drop takes the newest waiting request of the caller (not p's) that
	// holds the most by measure, if it holds more than share.
	var dropped []*pending
	drop := func(measure func(c string) int64, share int64) bool {
		victim, most := "", int64(0)
		for c := range waiting {
			if c != p.caller && len(waiting[c]) > 0 && (measure(c) > most || measure(c) == most && c < victim) {
				victim, most = c, measure(c)
			}
		}
		if victim == "" || most <= share {
			return false
		}
		q := waiting[victim][len(waiting[victim])-1]
		waiting[victim] = waiting[victim][:len(waiting[victim])-1]
		held[victim] -= q.size
		total -= q.size
		dropped = append(dropped, q)
		return true
	}
	count := func(c string) int64 { return int64(len(waiting[c])) }
	bytes := func(c string) int64 { return held[c] }

	othersWait := len(waiting) > 1 || len(waiting) == 1 && len(waiting[p.caller]) == 0
	if len(r.queue) >= lim.MaxQueued {
		switch {
		case othersWait && len(waiting[p.caller])+1 > countShare:
			return refuse(FairShare, int64(countShare), byteShare)
		case !drop(count, int64(countShare)):
			return refuse(QueueCount, total, lim.MaxQueuedBytes)
		}
	}
	if total > 0 && total+p.size > lim.MaxQueuedBytes {
		if held[p.caller]+p.size > byteShare {
			if held[p.caller] > 0 && othersWait {
				return refuse(FairShare, int64(countShare), byteShare)
			}
			return refuse(QueueBytes, total, lim.MaxQueuedBytes)
		}
		for total+p.size > lim.MaxQueuedBytes {
			if !drop(bytes, byteShare) {
				return refuse(QueueBytes, total, lim.MaxQueuedBytes)
			}
		}
	}
	if len(dropped) == 0 {
		return nil, nil, nil
	}
	e := refusal(FairShare, int64(countShare), byteShare)
	e.Dropped, e.Size = true, 0
	return dropped, e, nil
}

// retryAfter estimates how long the queue takes to drain, in whole seconds.
func (r *Repo) retryAfter(lim GroupLimits) time.Duration {
	groups := len(r.queue)/lim.MaxGroup + 1
	d := time.Duration(groups) * max(r.lastGroup, time.Second)
	return d.Round(time.Second)
}

// GroupPush describes one accepted push of a group (Repo.OnPush).
type GroupPush struct {
	Branch string
	// Commit is the new tip; Commits how many requests' commits the push
	// carried (no-op members carry none).
	Commits  int
	Commit   string
	Duration time.Duration // the push alone, not the fetch and apply before it
}

// Queued is how many requests wait for the branch (not counting the group
// in flight) and how many bytes the branch's requests hold, waiting or in
// flight.
func (r *Repo) Queued() (requests int, bytes int64) {
	r.mu.Lock()
	requests = len(r.queue)
	r.mu.Unlock()
	r.heldMu.Lock()
	defer r.heldMu.Unlock()
	return requests, r.heldBytes
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

// take moves the next group out of the queue, within the group bounds, at
// least one request. Members are chosen round robin between callers (each
// caller's in arrival order), so one caller's backlog does not hold the
// others back for several groups; the chosen go out in arrival order. A
// caller whose next request does not fit the group's bytes waits for the
// next group. Requests whose caller is gone are dropped.
func (r *Repo) take() []*pending {
	r.mu.Lock()
	defer r.mu.Unlock()
	lim := r.Group.withDefaults()
	live := r.queue[:0:0]
	for _, p := range r.queue {
		if p.ctx.Err() != nil {
			p.taken = true
			finish(p, TxnResult{Branch: r.remote.Branch}, fmt.Errorf("waiting for the other patches of branch %q: %w; nothing was pushed", r.remote.Branch, p.ctx.Err()))
			continue
		}
		live = append(live, p)
	}
	var callers []string // by their oldest waiting request
	next := map[string][]int{}
	for i, p := range live {
		if _, ok := next[p.caller]; !ok {
			callers = append(callers, p.caller)
		}
		next[p.caller] = append(next[p.caller], i)
	}
	chosen := make([]bool, len(live))
	n, bytes := 0, int64(0)
	for more := true; more && n < lim.MaxGroup; {
		more = false
		for _, c := range callers {
			if len(next[c]) == 0 || n >= lim.MaxGroup {
				continue
			}
			p := live[next[c][0]]
			if n > 0 && bytes+p.size > int64(lim.MaxGroupBytes) {
				next[c] = nil
				continue
			}
			chosen[next[c][0]] = true
			next[c] = next[c][1:]
			n++
			bytes += p.size
			more = true
		}
	}
	var batch, rest []*pending
	for i, p := range live {
		if chosen[i] {
			p.taken = true
			batch = append(batch, p)
		} else {
			rest = append(rest, p)
		}
	}
	r.queue = rest
	return batch
}

// finish answers p and gives back the bytes it held.
func finish(p *pending, res TxnResult, err error) {
	p.free()
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

// runGroup pushes the group; every member is finished when it returns.
func (r *Repo) runGroup(batch []*pending) {
	ctx, cancel := groupContext(batch)
	defer cancel()
	r.settle(ctx, batch)
}

// settle pushes live as one chain. When the server refuses the chain (not
// a lost race), a chain of one commit answers that member with the
// server's reason and the others are pushed again without it; a longer one
// is split in two halves of its commits, each settled in turn, the second
// rebuilt on what the first left. One refused member among n costs about
// 2*log2(n) more pushes; all n refused, 2n-1. Each member still waits only
// within its own request's time: a member whose caller is gone is dropped
// before the next push.
func (r *Repo) settle(ctx context.Context, live []*pending) {
	live, attempts, err := r.pushChain(ctx, live)
	if len(live) == 0 {
		return
	}
	var refused *RefusedError
	if !errors.As(err, &refused) {
		r.finishAll(live, attempts, err)
		return
	}
	// The members with a commit in the refused chain; the others (no-ops
	// on it) may answer otherwise once rebuilt without them.
	var committed []int
	for i, p := range live {
		if !p.res.NoOp {
			committed = append(committed, i)
		}
	}
	if len(committed) == 1 {
		p := live[committed[0]]
		finish(p, TxnResult{Branch: r.remote.Branch, Parent: p.res.Parent, Attempts: attempts}, refused)
		if rest := slices.Delete(slices.Clone(live), committed[0], committed[0]+1); len(rest) > 0 {
			r.settle(ctx, rest)
		}
		return
	}
	mid := committed[len(committed)/2]
	r.settle(ctx, slices.Clone(live[:mid]))
	r.settle(ctx, slices.Clone(live[mid:]))
}

// pushChain builds and pushes live as one chain, re-fetching and
// re-applying on a lost race a bounded number of times with jittered
// backoff. It returns the members not finished, the attempts made and why.
func (r *Repo) pushChain(ctx context.Context, live []*pending) ([]*pending, int, error) {
	attempts := 0
	for _, p := range live {
		attempts = max(attempts, p.req.MaxAttempts)
	}
	if attempts <= 0 {
		attempts = DefaultMaxAttempts
	}
	for i := 1; ; {
		var err error
		live, err = r.attemptGroup(ctx, live, i)
		switch {
		case len(live) == 0:
			return nil, i, nil
		case errors.Is(err, errDropped):
			continue // a caller left before the push: rebuild without it
		case !errors.Is(err, errMoved):
			return live, i, err
		case i >= attempts:
			return live, i, &ConflictError{Branch: r.remote.Branch, Attempts: i}
		}
		// Full jitter over a doubling window keeps two writers that
		// collided from colliding again in lockstep.
		backoff := time.Duration(rand.Int64N(int64(25*time.Millisecond) << i))
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return live, i, fmt.Errorf("patching branch %q: %w", r.remote.Branch, ctx.Err())
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
	start := time.Now()
	if err := r.push(pctx, tip, head, overlay, written); err != nil {
		return waiting, err
	}
	if r.OnPush != nil {
		r.OnPush(GroupPush{Branch: r.remote.Branch, Commit: head.String(), Commits: len(committed), Duration: time.Since(start)})
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
