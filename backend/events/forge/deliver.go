package forge

import (
	"context"
	"errors"
	"math/rand/v2"
	"net/http"
	"sort"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/flant/flant_gitops/backend/events"
)

// Settings is the configuration a delivery needs, read from storage for
// every event and every attempt, so a changed or deleted configuration
// applies at once.
type Settings struct {
	Provider          Provider
	APIURL            string
	Token             string
	Repository        string // as configured, or derived from RepoURL
	RepoURL           string // the watched repository (for the derivation)
	ContextTemplate   string
	TargetURLTemplate string
}

// target is where the statuses go, the repository derived when not given.
func (s *Settings) target() (Target, error) {
	repo := s.Repository
	if repo == "" {
		var err error
		if repo, err = RepositoryFromURL(s.Provider, s.RepoURL); err != nil {
			return Target{}, err
		}
	}
	return Target{Provider: s.Provider, APIURL: s.APIURL, Repository: repo, Token: s.Token}, nil
}

// Delivery results, as status shows them.
const (
	ResultDelivered  = "delivered"
	ResultAlreadySet = "already_set" // GitLab: the status already had that state
	ResultRetrying   = "retrying"
	ResultGaveUp     = "gave_up"
	ResultRefused    = "refused" // the forge refused it for good (401, 404, 422...)
	ResultDropped    = "dropped" // statuses were switched off with it queued
)

// Outcome is what became of one delivery attempt.
type Outcome struct {
	At       time.Time `json:"at"`
	Commit   string    `json:"commit"`
	State    State     `json:"state"`
	Context  string    `json:"context"`
	Result   string    `json:"result"`
	HTTPCode int       `json:"http_code,omitempty"`
	Error    string    `json:"error,omitempty"`
	Attempts int       `json:"attempts"`
	// NextAttemptAt is set while Result is retrying.
	NextAttemptAt time.Time `json:"next_attempt_at,omitzero"`
}

// Snapshot is the deliverer's state for status.
type Snapshot struct {
	Running   bool
	Queued    int
	Delivered uint64
	Failed    uint64 // gave up or refused
	Skipped   uint64 // repeats of a status already sent or queued
	Last      *Outcome
}

// Waiting is a status waiting to be sent, as an Outbox keeps it.
type Waiting struct {
	Status   Status    `json:"status"`
	QueuedAt time.Time `json:"queued_at"`
}

// Outbox keeps the waiting statuses across restarts and leader changes:
// Save is given the whole queue after each change (never after Stop), Load
// hands it to the next Start.
type Outbox interface {
	Load(ctx context.Context) ([]Waiting, error)
	Save(ctx context.Context, queue []Waiting) error
}

// Options tune a Deliverer; zero values take the defaults.
type Options struct {
	// Settings reads the configuration; (nil, nil) means statuses are off.
	Settings func(ctx context.Context) (*Settings, error)
	// Mount returns the mount's id ({{mount}} in templates).
	Mount func(ctx context.Context) (string, error)
	// NewClient makes the client of a provider (default: NewClient with
	// HTTPClient).
	NewClient  func(Provider) (Client, error)
	HTTPClient *http.Client
	// Logger is read at each use: Vault sets the backend's logger after
	// the deliverer is made.
	Logger func() hclog.Logger
	Now    func() time.Time

	// MinBackoff (default 5 s) doubles per failed attempt up to MaxBackoff
	// (5 min), with jitter; a status is given up GiveUpAfter (1 h) after it
	// was queued.
	MinBackoff, MaxBackoff, GiveUpAfter time.Duration
	// MaxQueued bounds the commits waiting (default 256); past it the
	// oldest is dropped.
	MaxQueued int
	// Outbox keeps the queue across restarts; nil keeps it in memory only.
	Outbox Outbox
	// FailedAttempt, when set, hears every attempt the forge did not take
	// (retried or not), for the metrics. It must not block.
	FailedAttempt func()
}

// Deliverer turns events into commit statuses and sends them from its own
// loop. Handle (the bus handler) only maps and queues; Start runs the loop.
// The queue keeps the newest status per commit and context, and with an
// Outbox survives a restart or a change of the active node.
type Deliverer struct {
	opt Options

	mu      sync.Mutex
	running bool
	queue   map[string]*item // by commit + context
	// inflight is the item being sent, kept in the outbox until its fate
	// is known.
	inflight *item
	saveMu   sync.Mutex
	// seen remembers the last status queued per commit and context, so a
	// refusal published on every poll is sent once.
	seen      map[string]Status
	seenOrder []string
	snap      Snapshot
	wake      chan struct{}
	cancel    context.CancelFunc
	done      chan struct{}
}

type item struct {
	key      string
	status   Status
	queuedAt time.Time
	next     time.Time
	attempts int
	seq      uint64
}

const seenMax = 1024

// NewDeliverer makes a deliverer; nothing is sent before Start.
func NewDeliverer(opt Options) *Deliverer {
	if opt.Now == nil {
		opt.Now = time.Now
	}
	if logger := opt.Logger; logger == nil {
		opt.Logger = hclog.NewNullLogger
	} else {
		opt.Logger = func() hclog.Logger {
			if l := logger(); l != nil {
				return l
			}
			return hclog.NewNullLogger()
		}
	}
	if opt.MinBackoff <= 0 {
		opt.MinBackoff = 5 * time.Second
	}
	if opt.MaxBackoff <= 0 {
		opt.MaxBackoff = 5 * time.Minute
	}
	if opt.GiveUpAfter <= 0 {
		opt.GiveUpAfter = time.Hour
	}
	if opt.MaxQueued <= 0 {
		opt.MaxQueued = 256
	}
	if opt.NewClient == nil {
		hc := opt.HTTPClient
		opt.NewClient = func(p Provider) (Client, error) { return NewClient(p, hc) }
	}
	return &Deliverer{opt: opt, queue: map[string]*item{}, seen: map[string]Status{}, wake: make(chan struct{}, 1)}
}

// Start runs the delivery loop until Stop; a second Start does nothing.
func (d *Deliverer) Start() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.running {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	d.running, d.cancel, d.done = true, cancel, make(chan struct{})
	go d.loop(ctx, d.done)
}

// Stop ends the loop (an attempt in flight is cancelled) and waits for it
// until ctx ends. Queued statuses stay in the outbox for the next Start.
func (d *Deliverer) Stop(ctx context.Context) {
	d.mu.Lock()
	if !d.running {
		d.mu.Unlock()
		return
	}
	d.running = false
	cancel, done := d.cancel, d.done
	d.queue, d.inflight = map[string]*item{}, nil
	d.mu.Unlock()
	cancel()
	select {
	case <-done:
	case <-ctx.Done():
	}
}

// Forget clears the memory of statuses already sent (a new configuration:
// the next refusal is told on the new forge too).
func (d *Deliverer) Forget() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.seen, d.seenOrder = map[string]Status{}, nil
}

// Snapshot returns counters and the last outcome.
func (d *Deliverer) Snapshot() Snapshot {
	d.mu.Lock()
	defer d.mu.Unlock()
	s := d.snap
	s.Running = d.running
	s.Queued = len(d.queue)
	if s.Last != nil {
		last := *s.Last
		s.Last = &last
	}
	return s
}

// Handle is the events handler: it maps e to a status and queues it,
// unless the same status was already queued for that commit. It never
// waits on the forge.
func (d *Deliverer) Handle(ctx context.Context, e events.Event) {
	d.mu.Lock()
	running := d.running
	d.mu.Unlock()
	if !running {
		return // not the active node, or stopping
	}
	if _, _, ok := Describe(GitHub, e); !ok {
		return // polls, patches, webhooks: no storage read for them
	}
	set, err := d.opt.Settings(ctx)
	if err != nil {
		d.opt.Logger().Warn("commit status: cannot read configure/commit_status", "error", err)
		return
	}
	if set == nil {
		return
	}
	state, desc, ok := Describe(set.Provider, e, set.Token)
	if !ok {
		return
	}
	mount := e.Mount
	if mount == "" && d.opt.Mount != nil {
		if mount, err = d.opt.Mount(ctx); err != nil {
			d.opt.Logger().Warn("commit status: cannot read the mount id", "error", err)
			return
		}
	}
	repo := set.Repository
	if repo == "" {
		repo, _ = RepositoryFromURL(set.Provider, set.RepoURL)
	}
	v := Vars{Mount: mount, Branch: e.Branch, Repository: repo, Run: e.Run, Commit: e.Commit}
	st := Status{
		Commit:      e.Commit,
		State:       state,
		Context:     Cut(Context(set.ContextTemplate, v), LimitsOf(set.Provider).Context),
		Description: desc,
		TargetURL:   TargetURL(set.TargetURLTemplate, v),
		Ref:         e.Branch,
	}
	if d.enqueue(st) {
		d.save()
	}
}

// enqueue queues st unless it repeats the last status of its commit; it
// reports whether the queue changed.
func (d *Deliverer) enqueue(st Status) bool {
	key := st.Commit + "\x00" + st.Context
	now := d.opt.Now()
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.running {
		return false
	}
	if prev, ok := d.seen[key]; ok && prev == st {
		d.snap.Skipped++
		return false
	}
	if _, ok := d.seen[key]; !ok {
		d.seenOrder = append(d.seenOrder, key)
		if len(d.seenOrder) > seenMax {
			delete(d.seen, d.seenOrder[0])
			d.seenOrder = d.seenOrder[1:]
		}
	}
	d.seen[key] = st
	// A queued older state of the same commit is replaced below: only the
	// newest is worth telling.
	if len(d.queue) >= d.opt.MaxQueued {
		if _, ok := d.queue[key]; !ok {
			oldest := d.oldestLocked()
			d.recordLocked(oldest, ResultDropped, errors.New("the queue was full"))
			d.snap.Failed++
			delete(d.queue, oldest.key)
		}
	}
	d.queue[key] = &item{key: key, status: st, queuedAt: now, next: now}
	select {
	case d.wake <- struct{}{}:
	default:
	}
	return true
}

// save hands the queue (with the status in flight) to the outbox. Saves
// are serialised and each takes its snapshot under the lock, so a later
// state is never overwritten by an earlier one.
func (d *Deliverer) save() {
	if d.opt.Outbox == nil {
		return
	}
	d.saveMu.Lock()
	defer d.saveMu.Unlock()
	d.mu.Lock()
	if !d.running {
		d.mu.Unlock()
		return // stopping: the outbox keeps what the next instance needs
	}
	var out []Waiting
	for _, it := range d.queue {
		out = append(out, Waiting{Status: it.status, QueuedAt: it.queuedAt})
	}
	if it := d.inflight; it != nil {
		if _, newer := d.queue[it.key]; !newer {
			out = append(out, Waiting{Status: it.status, QueuedAt: it.queuedAt})
		}
	}
	d.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].QueuedAt.Before(out[j].QueuedAt) })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := d.opt.Outbox.Save(ctx, out); err != nil {
		d.opt.Logger().Warn("commit status: cannot keep the waiting statuses in storage; a restart now would lose them", "error", err)
	}
}

// load queues what the outbox kept from the previous instance; a status
// queued since (newer) wins.
func (d *Deliverer) load(ctx context.Context) {
	if d.opt.Outbox == nil {
		return
	}
	kept, err := d.opt.Outbox.Load(ctx)
	if err != nil {
		d.opt.Logger().Warn("commit status: cannot read the statuses left waiting", "error", err)
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, p := range kept {
		key := p.Status.Commit + "\x00" + p.Status.Context
		if _, newer := d.queue[key]; newer || p.Status.Commit == "" {
			continue
		}
		if _, ok := d.seen[key]; !ok {
			d.seenOrder = append(d.seenOrder, key)
		}
		d.seen[key] = p.Status
		d.queue[key] = &item{key: key, status: p.Status, queuedAt: p.QueuedAt, next: d.opt.Now()}
	}
}

func (d *Deliverer) oldestLocked() *item {
	var o *item
	for _, it := range d.queue {
		if o == nil || it.queuedAt.Before(o.queuedAt) {
			o = it
		}
	}
	return o
}

// due picks the queued item to send next (the earliest due, oldest first)
// and removes it from the queue; otherwise how long to wait.
func (d *Deliverer) due() (*item, time.Duration) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(d.queue) == 0 {
		return nil, -1
	}
	items := make([]*item, 0, len(d.queue))
	for _, it := range d.queue {
		items = append(items, it)
	}
	sort.Slice(items, func(i, j int) bool {
		if !items[i].next.Equal(items[j].next) {
			return items[i].next.Before(items[j].next)
		}
		return items[i].queuedAt.Before(items[j].queuedAt)
	})
	first := items[0]
	if wait := first.next.Sub(d.opt.Now()); wait > 0 {
		return nil, wait
	}
	delete(d.queue, first.key)
	d.inflight = first
	return first, 0
}

func (d *Deliverer) loop(ctx context.Context, done chan struct{}) {
	defer close(done)
	d.load(ctx)
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		it, wait := d.due()
		if it != nil {
			d.attempt(ctx, it)
			if ctx.Err() != nil {
				return
			}
			d.mu.Lock()
			d.inflight = nil
			d.mu.Unlock()
			d.save()
			continue
		}
		if wait < 0 {
			wait = time.Hour
		}
		timer.Reset(wait)
		select {
		case <-ctx.Done():
			return
		case <-d.wake:
		case <-timer.C:
		}
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
	}
}

// attempt sends one status and decides what comes next.
func (d *Deliverer) attempt(ctx context.Context, it *item) {
	set, err := d.opt.Settings(ctx)
	if ctx.Err() != nil {
		return
	}
	if err == nil && set == nil {
		d.finish(it, ResultDropped, errors.New("commit statuses were switched off"))
		return
	}
	var t Target
	if err == nil {
		t, err = set.target()
	}
	var c Client
	if err == nil {
		c, err = d.opt.NewClient(set.Provider)
	}
	if err == nil {
		it.attempts++
		actx, cancel := context.WithTimeout(ctx, time.Minute)
		err = c.SetStatus(actx, t, it.status)
		cancel()
		if ctx.Err() != nil {
			return
		}
	} else {
		it.attempts++
		err = &Error{Temporary: true, Message: err.Error()}
	}
	switch {
	case err == nil:
		d.finish(it, ResultDelivered, nil)
		return
	case errors.Is(err, ErrAlreadySet):
		d.finish(it, ResultAlreadySet, nil)
		return
	}
	var fe *Error
	if !errors.As(err, &fe) {
		fe = &Error{Message: err.Error()}
	}
	if d.opt.FailedAttempt != nil {
		d.opt.FailedAttempt()
	}
	now := d.opt.Now()
	if !fe.Temporary {
		d.finish(it, ResultRefused, fe)
		return
	}
	wait := d.backoff(it.attempts)
	if fe.RetryAfter > 0 {
		// The forge said when; a little jitter keeps several mounts of one
		// token from coming back in the same second.
		wait = fe.RetryAfter + time.Duration(rand.Int64N(int64(time.Second)))
	}
	if now.Add(wait).Sub(it.queuedAt) > d.opt.GiveUpAfter {
		d.finish(it, ResultGaveUp, fe)
		return
	}
	it.next = now.Add(wait)
	d.mu.Lock()
	defer d.mu.Unlock()
	if _, newer := d.queue[it.key]; newer {
		return // a newer state of the commit came meanwhile and goes instead
	}
	d.queue[it.key] = it
	d.recordLocked(it, ResultRetrying, fe)
	d.opt.Logger().Debug("commit status: will retry", "commit", it.status.Commit, "state", it.status.State, "attempts", it.attempts, "error", fe.Error(), "wait", wait)
}

// backoff is MinBackoff·2^(n-1), at most MaxBackoff, of which a random
// half is waited ("equal jitter").
func (d *Deliverer) backoff(n int) time.Duration {
	b := d.opt.MinBackoff
	for i := 1; i < n && b < d.opt.MaxBackoff; i++ {
		b *= 2
	}
	b = min(b, d.opt.MaxBackoff)
	return b/2 + time.Duration(rand.Int64N(int64(b/2)+1))
}

func (d *Deliverer) finish(it *item, result string, err error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	switch result {
	case ResultDelivered, ResultAlreadySet:
		d.snap.Delivered++
	default:
		d.snap.Failed++
		// The forge never took it: an identical later event may try again.
		if prev, ok := d.seen[it.key]; ok && prev == it.status {
			delete(d.seen, it.key)
		}
	}
	d.recordLocked(it, result, err)
	lvl := hclog.Debug
	if result != ResultDelivered && result != ResultAlreadySet {
		lvl = hclog.Warn
	}
	args := []any{"commit", it.status.Commit, "state", it.status.State, "context", it.status.Context, "result", result, "attempts", it.attempts}
	if err != nil {
		args = append(args, "error", err.Error())
	}
	d.opt.Logger().Log(lvl, "commit status", args...)
}

func (d *Deliverer) recordLocked(it *item, result string, err error) {
	o := &Outcome{At: d.opt.Now(), Commit: it.status.Commit, State: it.status.State, Context: it.status.Context, Result: result, Attempts: it.attempts}
	if result == ResultRetrying {
		o.NextAttemptAt = it.next
	}
	var fe *Error
	if errors.As(err, &fe) {
		o.HTTPCode = fe.Code
	}
	if err != nil {
		o.Error = err.Error()
	}
	d.snap.Last = o
}
