// Package notify sends signed notifications of what the plugin does (runs
// started and finished, commits refused, patches answered) to the
// endpoints an operator configured, in the Standard Webhooks form
// (https://www.standardwebhooks.com/): a JSON body {type, timestamp, data}
// with the headers webhook-id, webhook-timestamp and webhook-signature, so
// a receiver verifies it with the standard libraries.
//
// Delivery is at least once. Each notification is written to an outbox in
// the mount's storage before it is sent (one write per event and endpoint),
// retried with exponential backoff and jitter on network errors, 5xx and
// 429 (Retry-After honoured), and deleted once an endpoint answered 2xx, so
// neither a restart of the plugin nor a change of the active node loses
// it; receivers deduplicate retries by webhook-id, the same on every
// attempt. Only the node that may write (the active one) sends.
//
// Each endpoint is served by its own goroutine, one notification at a time
// and in order: an endpoint that is down delays only its own queue, never
// a run, another endpoint, or the event bus.
package notify

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/flant/flant_gitops/backend/events"
)

// Storage is the part of the mount's storage the outbox needs.
type Storage interface {
	Get(ctx context.Context, key string) ([]byte, error)
	Put(ctx context.Context, key string, value []byte) error
	Delete(ctx context.Context, key string) error
	List(ctx context.Context, prefix string) ([]string, error)
}

// Storage keys of the package, under the prefixes the backend lists in its
// table of keys. None holds a secret: bodies are allow-listed event fields.
const (
	// OutboxPrefix keeps one entry per pending notification:
	// notification_outbox/<endpoint>/<event id>.
	OutboxPrefix = "notification_outbox/"
	// StatusPrefix keeps each endpoint's delivery counters and last attempt.
	StatusPrefix = "notification_status/"
	// RefusedKey keeps the refusal verdicts already told, so a restart does
	// not tell the same one again.
	RefusedKey = "notification_state/refused"
)

// StorageKeys are the keys and prefixes the package writes.
func StorageKeys() []string { return []string{OutboxPrefix, StatusPrefix, RefusedKey} }

// Endpoint is one configured receiver of notifications.
type Endpoint struct {
	Name  string
	URL   string
	Types []string
	// Secret signs every notification; Previous, until PreviousUntil, too
	// (a rotation's overlap). Both in the "whsec_..." form.
	Secret        string
	Previous      string
	PreviousUntil time.Time
}

// wants says whether the endpoint asked for notifications of type typ.
func (e *Endpoint) wants(typ string) bool { return slices.Contains(e.Types, typ) }

// keys are the signing keys valid at now: the current secret first.
func (e *Endpoint) keys(now time.Time) ([][]byte, error) {
	k, err := ParseSecret(e.Secret)
	if err != nil {
		return nil, fmt.Errorf("the secret of notification endpoint %s: %w", e.Name, err)
	}
	out := [][]byte{k}
	if e.Previous != "" && now.Before(e.PreviousUntil) {
		if p, err := ParseSecret(e.Previous); err == nil {
			out = append(out, p)
		}
	}
	return out, nil
}

// Options tune delivery; zero fields take the defaults.
type Options struct {
	// FirstRetry is the wait after the first failed attempt; each further
	// failure doubles it up to MaxRetryWait, with jitter (a wait is drawn
	// between half and all of it).
	FirstRetry   time.Duration // default 5s
	MaxRetryWait time.Duration // default 1h
	// MaxAge is how long a notification is retried before it is dropped
	// (and counted): 24 h, as Svix's schedule.
	MaxAge time.Duration
	// MaxPending bounds each endpoint's outbox; when full, the oldest
	// pending notification is dropped (and counted) for the new one.
	MaxPending int // default 1000
	// Timeout bounds one attempt, connection to answer.
	Timeout time.Duration // default 15s
	// Client sends the requests; it must not follow redirects (the
	// default does not): a notification goes only to the configured URL.
	Client *http.Client
	// UserAgent is sent with every request.
	UserAgent string
	// StatusEvery throttles the storage write of an endpoint's status: a
	// burst of deliveries costs one write.
	StatusEvery time.Duration // default 10s
	Now         func() time.Time
	// Logger is asked for the logger at each use: Vault sets the
	// backend's logger after the notifier is made.
	Logger func() hclog.Logger
	// FailedAttempt, when set, hears every attempt the endpoint did not
	// take (retried or not), for the metrics. It must not block.
	FailedAttempt func()
}

func (o Options) withDefaults() Options {
	if o.FirstRetry <= 0 {
		o.FirstRetry = 5 * time.Second
	}
	if o.MaxRetryWait <= 0 {
		o.MaxRetryWait = time.Hour
	}
	if o.MaxAge <= 0 {
		o.MaxAge = 24 * time.Hour
	}
	if o.MaxPending <= 0 {
		o.MaxPending = 1000
	}
	if o.Timeout <= 0 {
		o.Timeout = 15 * time.Second
	}
	if o.Client == nil {
		o.Client = &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	}
	if o.UserAgent == "" {
		o.UserAgent = "flant_gitops"
	}
	if o.StatusEvery <= 0 {
		o.StatusEvery = 10 * time.Second
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = func() hclog.Logger { return nil }
	}
	return o
}

// Notifier turns events into notifications and delivers them.
type Notifier struct {
	opts Options
	// endpoints loads the configured endpoints (the backend reads its
	// seal-wrapped entries); cached until Invalidate.
	load func(ctx context.Context, s Storage) ([]Endpoint, error)

	mu    sync.Mutex
	store Storage // set while this node sends (Start..Stop)
	// stopped is the storage of the last Stop: events the bus still hands
	// over while the plugin shuts down (a run's end) are written to the
	// outbox for the next sender, not dropped.
	stopped   Storage
	ctx       context.Context
	cancel    context.CancelFunc
	wg        sync.WaitGroup
	endpoints map[string]*Endpoint // nil: load again
	workers   map[string]*worker
	refused   []string // refusal verdicts told, newest last
}

// maxRefusalsKept bounds the remembered refusal verdicts.
const maxRefusalsKept = 32

// New makes a Notifier; it sends nothing until Start.
func New(load func(ctx context.Context, s Storage) ([]Endpoint, error), opts Options) *Notifier {
	return &Notifier{opts: opts.withDefaults(), load: load}
}

// Start makes this node the sender: the outboxes a previous instance (or
// another node) left are loaded and delivered. Events handled before the
// first Start are not notified (they are published where the sender is);
// those handled after Stop are written to the outbox for the next sender.
func (n *Notifier) Start(ctx context.Context, s Storage) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.store != nil {
		return nil
	}
	n.ctx, n.cancel = context.WithCancel(context.Background())
	n.workers, n.stopped = map[string]*worker{}, nil
	n.endpoints = nil
	eps, err := n.endpointsLocked(ctx, s)
	if err != nil {
		n.cancel()
		return err
	}
	if raw, err := s.Get(ctx, RefusedKey); err == nil && raw != nil {
		n.refused = strings.Split(string(raw), "\n")
	}
	names, err := s.List(ctx, OutboxPrefix)
	if err != nil {
		n.cancel()
		return fmt.Errorf("listing the notification outbox: %w", err)
	}
	for _, dir := range names {
		name := strings.TrimSuffix(dir, "/")
		if _, ok := eps[name]; !ok {
			// The endpoint was deleted while this node did not send.
			if err := deleteOutbox(ctx, s, name); err != nil {
				n.log().Warn("could not delete the outbox of a deleted notification endpoint", "endpoint", name, "error", err)
			}
		}
	}
	for name := range eps {
		w, err := n.newWorker(ctx, s, name)
		if err != nil {
			n.cancel()
			return err
		}
		n.workers[name] = w
	}
	n.store = s
	for _, w := range n.workers {
		n.run(w)
	}
	return nil
}

// Stop ends sending on this node and waits for the attempts in flight
// (bounded by Timeout) or ctx. What is pending stays in storage for the
// next sender.
func (n *Notifier) Stop(ctx context.Context) {
	n.mu.Lock()
	if n.store == nil {
		n.mu.Unlock()
		return
	}
	n.stopped, n.store = n.store, nil
	n.cancel()
	workers := n.workers
	n.workers = nil
	n.mu.Unlock()
	done := make(chan struct{})
	go func() { n.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
	}
	for _, w := range workers {
		w.flushStatus(context.WithoutCancel(ctx))
	}
}

// Invalidate drops the cached endpoints: a write of one calls it. Workers
// are started for new endpoints at the next event, or at once by Sync.
func (n *Notifier) Invalidate() {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.endpoints = nil
}

// Forget drops an endpoint that was deleted: its worker stops and its
// outbox and status go.
func (n *Notifier) Forget(ctx context.Context, s Storage, name string) error {
	n.mu.Lock()
	w := n.workers[name]
	delete(n.workers, name)
	n.endpoints = nil
	n.mu.Unlock()
	if w != nil {
		w.stop()
	}
	if err := deleteOutbox(ctx, s, name); err != nil {
		return err
	}
	return s.Delete(ctx, StatusPrefix+name)
}

func (n *Notifier) endpointsLocked(ctx context.Context, s Storage) (map[string]*Endpoint, error) {
	if n.endpoints != nil {
		return n.endpoints, nil
	}
	list, err := n.load(ctx, s)
	if err != nil {
		return nil, fmt.Errorf("reading the notification endpoints: %w", err)
	}
	m := make(map[string]*Endpoint, len(list))
	for i := range list {
		m[list[i].Name] = &list[i]
	}
	n.endpoints = m
	return m, nil
}

// endpoint is the current configuration of name, nil once deleted.
func (n *Notifier) endpoint(ctx context.Context, s Storage, name string) (*Endpoint, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	eps, err := n.endpointsLocked(ctx, s)
	if err != nil {
		return nil, err
	}
	return eps[name], nil
}

// Handle is the bus subscriber: it writes the event's notification to the
// outbox of each endpoint that asked for its type. A refusal verdict
// already told is not told again.
func (n *Notifier) Handle(ctx context.Context, e events.Event) {
	if err := n.handle(ctx, e); err != nil {
		n.log().Error("a notification was not queued", "event", e.ID, "type", string(e.Kind), "error", err)
	}
}

func (n *Notifier) handle(ctx context.Context, e events.Event) error {
	typ, body, err := Body(e)
	if typ == "" || err != nil {
		return err
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	s := n.store
	if s == nil {
		if n.stopped == nil {
			return nil // never the sender: events are published where it sends
		}
		s = n.stopped
	}
	eps, err := n.endpointsLocked(ctx, s)
	if err != nil {
		return err
	}
	var targets []string
	for name, ep := range eps {
		if ep.wants(typ) {
			targets = append(targets, name)
		}
	}
	if len(targets) == 0 {
		return nil
	}
	if e.Kind == events.CommitRefused {
		key := refusalKey(e)
		if slices.Contains(n.refused, key) {
			return nil
		}
		n.refused = append(n.refused, key)
		if len(n.refused) > maxRefusalsKept {
			n.refused = n.refused[len(n.refused)-maxRefusalsKept:]
		}
		if err := s.Put(ctx, RefusedKey, []byte(strings.Join(n.refused, "\n"))); err != nil {
			return fmt.Errorf("recording the refusal told: %w", err)
		}
	}
	sort.Strings(targets)
	var errs []error
	for _, name := range targets {
		msg := &message{ID: e.ID, Type: typ, Body: body, FirstAt: n.opts.Now().UTC()}
		if n.store == nil {
			// Stopped: the next sender's Start finds it.
			// The bus may be closing (its context cancelled): the write
			// is what keeps the event.
			raw, err := json.Marshal(msg)
			if err == nil {
				err = s.Put(context.WithoutCancel(ctx), OutboxPrefix+name+"/"+msg.ID, raw)
			}
			if err != nil {
				errs = append(errs, fmt.Errorf("endpoint %s: writing the notification to the outbox: %w", name, err))
			}
			continue
		}
		w := n.workers[name]
		if w == nil {
			if w, err = n.newWorker(ctx, s, name); err != nil {
				errs = append(errs, err)
				continue
			}
			n.workers[name] = w
			n.run(w)
		}
		if err := w.enqueue(ctx, msg); err != nil {
			errs = append(errs, fmt.Errorf("endpoint %s: %w", name, err))
		}
	}
	return errors.Join(errs...)
}

// Sync starts workers for endpoints created since Start, so a test
// delivery (and the status of a new endpoint) needs no event first.
func (n *Notifier) Sync(ctx context.Context) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.store == nil {
		return nil
	}
	eps, err := n.endpointsLocked(ctx, n.store)
	if err != nil {
		return err
	}
	for name := range eps {
		if n.workers[name] == nil {
			w, err := n.newWorker(ctx, n.store, name)
			if err != nil {
				return err
			}
			n.workers[name] = w
			n.run(w)
		}
	}
	return nil
}

func (n *Notifier) log() hclog.Logger {
	if l := n.opts.Logger(); l != nil {
		return l.Named("notify")
	}
	return hclog.NewNullLogger()
}

func (n *Notifier) run(w *worker) {
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		w.loop()
	}()
}

// Status is one endpoint's delivery record, as status shows it.
type Status struct {
	LastAttemptAt   time.Time `json:"last_attempt_at"`
	LastEventID     string    `json:"last_event_id,omitempty"`
	LastType        string    `json:"last_type,omitempty"`
	LastHTTPCode    int       `json:"last_http_code,omitempty"`
	LastError       string    `json:"last_error,omitempty"`
	LastAttempts    int       `json:"last_attempts,omitempty"`
	LastDeliveredAt time.Time `json:"last_delivered_at"`
	Delivered       uint64    `json:"delivered"`
	Failed          uint64    `json:"failed"`
	Dropped         uint64    `json:"dropped"`
	Pending         int       `json:"pending"`
}

// Status is the delivery record of each named endpoint: this node's own
// when it sends, else what the sender last stored.
func (n *Notifier) Status(ctx context.Context, s Storage, names []string) (map[string]Status, error) {
	out := make(map[string]Status, len(names))
	n.mu.Lock()
	workers := make(map[string]*worker, len(n.workers))
	for k, w := range n.workers {
		workers[k] = w
	}
	n.mu.Unlock()
	for _, name := range names {
		if w := workers[name]; w != nil {
			out[name] = w.status()
			continue
		}
		st, err := loadStatus(ctx, s, name)
		if err != nil {
			return nil, err
		}
		if keys, err := s.List(ctx, OutboxPrefix+name+"/"); err == nil {
			st.Pending = len(keys)
		}
		out[name] = st
	}
	return out, nil
}
