package notify

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// message is one pending notification of one endpoint, as the outbox
// stores it: the body is fixed when the event happens, so every attempt
// sends the same bytes under the same id.
type message struct {
	ID       string    `json:"id"`
	Type     string    `json:"type"`
	Body     []byte    `json:"body"`
	FirstAt  time.Time `json:"first_at"`
	Attempts int       `json:"attempts"`
	NextAt   time.Time `json:"next_at"`
}

// worker delivers one endpoint's outbox, oldest first.
type worker struct {
	n     *Notifier
	name  string
	store Storage
	ctx   context.Context
	quit  context.CancelFunc
	wake  chan struct{}

	mu      sync.Mutex
	pending []string // event ids, oldest first
	head    *message // the pending[0] being delivered, once read
	st      Status
	wroteAt time.Time // of st
	dirty   bool
}

// newWorker loads the endpoint's outbox and status. Called with n.mu held.
func (n *Notifier) newWorker(ctx context.Context, s Storage, name string) (*worker, error) {
	ids, err := s.List(ctx, OutboxPrefix+name+"/")
	if err != nil {
		return nil, fmt.Errorf("listing the outbox of notification endpoint %s: %w", name, err)
	}
	// Event ids begin with their time: sorted is oldest first.
	sort.Strings(ids)
	st, err := loadStatus(ctx, s, name)
	if err != nil {
		return nil, err
	}
	wctx, quit := context.WithCancel(n.ctx)
	w := &worker{n: n, name: name, store: s, ctx: wctx, quit: quit, wake: make(chan struct{}, 1), pending: ids, st: st, wroteAt: n.opts.Now()}
	return w, nil
}

func (w *worker) stop() { w.quit() }

func (w *worker) key(id string) string { return OutboxPrefix + w.name + "/" + id }

// enqueue writes msg to the outbox, dropping the oldest pending one when
// the outbox is full.
func (w *worker) enqueue(ctx context.Context, msg *message) error {
	raw, err := json.Marshal(msg)
	if err != nil {
		return err
	}
	if err := w.store.Put(ctx, w.key(msg.ID), raw); err != nil {
		return fmt.Errorf("writing the notification to the outbox: %w", err)
	}
	w.mu.Lock()
	var drop []string
	w.pending = append(w.pending, msg.ID)
	for len(w.pending) > w.n.opts.MaxPending {
		drop = append(drop, w.pending[0])
		w.pending = w.pending[1:]
		w.head = nil
		w.st.Dropped++
		w.dirty = true
	}
	w.mu.Unlock()
	for _, id := range drop {
		w.n.log().Warn("notification outbox full: dropped the oldest", "endpoint", w.name, "event", id)
		if err := w.store.Delete(ctx, w.key(id)); err != nil {
			return fmt.Errorf("dropping the oldest notification of a full outbox: %w", err)
		}
	}
	select {
	case w.wake <- struct{}{}:
	default:
	}
	return nil
}

func (w *worker) status() Status {
	w.mu.Lock()
	defer w.mu.Unlock()
	st := w.st
	st.Pending = len(w.pending)
	return st
}

// loop delivers until the worker stops.
func (w *worker) loop() {
	for w.ctx.Err() == nil {
		msg, err := w.next()
		if err != nil {
			if w.ctx.Err() != nil {
				return
			}
			w.n.log().Error("reading the notification outbox", "endpoint", w.name, "error", err)
			if !w.sleep(w.n.opts.FirstRetry) {
				return
			}
			continue
		}
		if msg == nil {
			select {
			case <-w.ctx.Done():
				return
			case <-w.wake:
			}
			continue
		}
		if wait := msg.NextAt.Sub(w.n.opts.Now()); wait > 0 {
			if !w.sleep(wait) {
				return
			}
			continue
		}
		w.attempt(msg)
	}
}

// sleep waits d or until the worker stops; false when it stopped.
func (w *worker) sleep(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-w.ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// next is the oldest pending message, nil when none.
func (w *worker) next() (*message, error) {
	for {
		w.mu.Lock()
		if w.head != nil {
			m := w.head
			w.mu.Unlock()
			return m, nil
		}
		if len(w.pending) == 0 {
			w.mu.Unlock()
			return nil, nil
		}
		id := w.pending[0]
		w.mu.Unlock()
		raw, err := w.store.Get(w.ctx, w.key(id))
		if err != nil {
			return nil, err
		}
		w.mu.Lock()
		if len(w.pending) == 0 || w.pending[0] != id {
			w.mu.Unlock()
			continue // dropped meanwhile
		}
		if raw == nil {
			w.pending = w.pending[1:]
			w.mu.Unlock()
			continue
		}
		var m message
		if err := json.Unmarshal(raw, &m); err != nil {
			// Not ours to read: drop it rather than stall the queue.
			w.pending = w.pending[1:]
			w.st.Dropped++
			w.mu.Unlock()
			_ = w.store.Delete(w.ctx, w.key(id))
			continue
		}
		w.head = &m
		w.mu.Unlock()
		return &m, nil
	}
}

// result of one attempt.
type result struct {
	code       int
	err        error
	retry      bool
	retryAfter time.Duration
}

// attempt sends msg once and records what came of it.
func (w *worker) attempt(msg *message) {
	ep, err := w.n.endpoint(w.ctx, w.store, w.name)
	if err != nil {
		w.n.log().Error("reading a notification endpoint", "endpoint", w.name, "error", err)
		w.sleep(w.n.opts.FirstRetry)
		return
	}
	if ep == nil {
		w.quit() // deleted: Forget cleans up
		return
	}
	now := w.n.opts.Now()
	res := w.send(ep, msg, now)
	if w.ctx.Err() != nil {
		return // stopped mid-attempt: the next sender tries again
	}
	msg.Attempts++
	w.mu.Lock()
	w.st.LastAttemptAt, w.st.LastEventID, w.st.LastType = now.UTC(), msg.ID, msg.Type
	w.st.LastHTTPCode, w.st.LastError, w.st.LastAttempts = res.code, "", msg.Attempts
	if res.err != nil {
		w.st.LastError = res.err.Error()
	}
	w.dirty = true
	w.mu.Unlock()

	if res.err != nil && w.n.opts.FailedAttempt != nil {
		w.n.opts.FailedAttempt()
	}
	done := false
	switch {
	case res.err == nil:
		w.mu.Lock()
		w.st.Delivered++
		w.st.LastDeliveredAt = now.UTC()
		w.mu.Unlock()
		done = true
	case !res.retry:
		w.n.log().Warn("notification refused by the endpoint; not retried", "endpoint", w.name, "event", msg.ID, "error", res.err)
		w.mu.Lock()
		w.st.Failed++
		w.mu.Unlock()
		done = true
	default:
		wait := backoff(w.n.opts.FirstRetry, w.n.opts.MaxRetryWait, msg.Attempts)
		if res.retryAfter > 0 {
			wait = min(res.retryAfter, w.n.opts.MaxRetryWait)
		}
		next := now.Add(wait)
		if next.Sub(msg.FirstAt) > w.n.opts.MaxAge {
			w.n.log().Warn("notification dropped: not delivered within the retry window", "endpoint", w.name, "event", msg.ID, "attempts", msg.Attempts, "error", res.err)
			w.mu.Lock()
			w.st.Dropped++
			w.mu.Unlock()
			done = true
			break
		}
		msg.NextAt = next.UTC()
		w.mu.Lock()
		still := len(w.pending) > 0 && w.pending[0] == msg.ID
		w.mu.Unlock()
		if !still {
			break // dropped from a full outbox meanwhile
		}
		raw, _ := json.Marshal(msg)
		if err := w.store.Put(w.ctx, w.key(msg.ID), raw); err != nil {
			// Kept in memory; a restart retries it sooner, which is allowed.
			w.n.log().Warn("could not record a notification's next attempt", "endpoint", w.name, "error", err)
		}
	}
	if done {
		if err := w.store.Delete(w.ctx, w.key(msg.ID)); err != nil {
			w.n.log().Warn("could not remove a finished notification from the outbox; it may be sent again", "endpoint", w.name, "error", err)
		}
		w.mu.Lock()
		if len(w.pending) > 0 && w.pending[0] == msg.ID {
			w.pending = w.pending[1:]
		}
		w.head = nil
		w.mu.Unlock()
	}
	w.maybeWriteStatus(now)
}

// backoff is the wait after the attempt-th failure: FirstRetry doubled each
// time up to max, drawn between half and all of it so endpoints that failed
// together do not retry together.
func backoff(first, max time.Duration, attempt int) time.Duration {
	d := first
	for i := 1; i < attempt && d < max; i++ {
		d *= 2
	}
	d = min(d, max)
	half := d / 2
	return half + rand.N(half+1)
}

// send makes one attempt.
func (w *worker) send(ep *Endpoint, msg *message, now time.Time) result {
	keys, err := ep.keys(now)
	if err != nil {
		return result{err: err, retry: true}
	}
	ctx, cancel := context.WithTimeout(w.ctx, w.n.opts.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, ep.URL, bytes.NewReader(msg.Body))
	if err != nil {
		return result{err: fmt.Errorf("the endpoint URL: %w", err)}
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", w.n.opts.UserAgent)
	req.Header.Set(HeaderID, msg.ID)
	req.Header.Set(HeaderTimestamp, strconv.FormatInt(now.Unix(), 10))
	req.Header.Set(HeaderSignature, SignatureHeader(keys, msg.ID, now, msg.Body))
	resp, err := w.n.opts.Client.Do(req)
	if err != nil {
		// The error names the URL, which holds no credential (refused
		// at configuration).
		return result{err: fmt.Errorf("no answer: %w", unwrapURLError(err)), retry: true}
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	code := resp.StatusCode
	switch {
	case code >= 200 && code < 300:
		return result{code: code}
	case code == http.StatusTooManyRequests || code >= 500:
		return result{code: code, err: fmt.Errorf("the endpoint answered %s", resp.Status), retry: true, retryAfter: parseRetryAfter(resp.Header.Get("Retry-After"), now)}
	case code == http.StatusRequestTimeout:
		return result{code: code, err: fmt.Errorf("the endpoint answered %s", resp.Status), retry: true}
	case code >= 300 && code < 400:
		return result{code: code, err: fmt.Errorf("the endpoint answered %s: redirects are not followed, configure the URL it redirects to", resp.Status)}
	case code == http.StatusGone:
		return result{code: code, err: fmt.Errorf("the endpoint answered %s: it says it no longer takes notifications; delete or fix configure/notification/%s", resp.Status, w.name)}
	}
	return result{code: code, err: fmt.Errorf("the endpoint answered %s; a 4xx is not retried", resp.Status)}
}

// unwrapURLError keeps the cause of a client error: the *url.Error wrapper
// repeats the method and URL.
func unwrapURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// parseRetryAfter reads Retry-After: seconds or an HTTP date; 0 when
// absent or unreadable.
func parseRetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if s, err := strconv.Atoi(v); err == nil {
		if s < 0 {
			return 0
		}
		return time.Duration(s) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return t.Sub(now)
	}
	return 0
}

func (w *worker) maybeWriteStatus(now time.Time) {
	w.mu.Lock()
	due := w.dirty && now.Sub(w.wroteAt) >= w.n.opts.StatusEvery
	w.mu.Unlock()
	if due {
		w.flushStatus(w.ctx)
	}
}

// flushStatus stores the status; best effort: it only feeds status reads
// after a restart.
func (w *worker) flushStatus(ctx context.Context) {
	w.mu.Lock()
	if !w.dirty {
		w.mu.Unlock()
		return
	}
	st := w.st
	st.Pending = len(w.pending)
	w.dirty, w.wroteAt = false, w.n.opts.Now()
	w.mu.Unlock()
	raw, _ := json.Marshal(st)
	if err := w.store.Put(ctx, StatusPrefix+w.name, raw); err != nil {
		w.n.log().Warn("could not store a notification endpoint's status", "endpoint", w.name, "error", err)
	}
}

func loadStatus(ctx context.Context, s Storage, name string) (Status, error) {
	var st Status
	raw, err := s.Get(ctx, StatusPrefix+name)
	if err != nil {
		return st, fmt.Errorf("reading the status of notification endpoint %s: %w", name, err)
	}
	if raw != nil {
		if err := json.Unmarshal(raw, &st); err != nil {
			return Status{}, fmt.Errorf("reading the status of notification endpoint %s: %w", name, err)
		}
	}
	return st, nil
}

func deleteOutbox(ctx context.Context, s Storage, name string) error {
	ids, err := s.List(ctx, OutboxPrefix+name+"/")
	if err != nil {
		return fmt.Errorf("listing the outbox of notification endpoint %s: %w", name, err)
	}
	for _, id := range ids {
		if err := s.Delete(ctx, OutboxPrefix+name+"/"+id); err != nil {
			return fmt.Errorf("deleting the outbox of notification endpoint %s: %w", name, err)
		}
	}
	return nil
}
