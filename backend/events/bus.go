package events

import (
	"context"
	"sort"
	"sync"
	"time"
)

// DefaultQueue is each subscriber's queue length: a burst of a few hundred
// events (a storm of patch requests) fits, a subscriber stuck for good
// costs at most this many events of memory.
const DefaultQueue = 1024

// Bus fans events out to subscribers, each on its own bounded queue.
type Bus struct {
	ctx    context.Context
	cancel context.CancelFunc

	mu     sync.RWMutex
	subs   []*sub
	closed bool
	wg     sync.WaitGroup
}

type sub struct {
	name    string
	queue   chan Event
	handler Handler
	// kinds it takes; nil: all. Others never take a place in its queue,
	// so a flood of events it ignores cannot push out one it needs.
	kinds map[Kind]bool

	mu      sync.Mutex
	dropped uint64
}

// NewBus makes a bus; Close stops its subscribers.
func NewBus() *Bus {
	ctx, cancel := context.WithCancel(context.Background())
	return &Bus{ctx: ctx, cancel: cancel}
}

// Subscribe adds a subscriber with a queue of queueLen events
// (DefaultQueue when zero or less), taking the events of kinds (every kind
// when none is named). Names identify it in Dropped.
func (b *Bus) Subscribe(name string, queueLen int, h Handler, kinds ...Kind) {
	if queueLen <= 0 {
		queueLen = DefaultQueue
	}
	s := &sub{name: name, queue: make(chan Event, queueLen), handler: h}
	if len(kinds) > 0 {
		s.kinds = make(map[Kind]bool, len(kinds))
		for _, k := range kinds {
			s.kinds[k] = true
		}
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return
	}
	b.subs = append(b.subs, s)
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		for {
			select {
			case <-b.ctx.Done():
				return
			case e := <-s.queue:
				s.handler(b.ctx, e)
			}
		}
	}()
}

// Publish hands e to every subscriber without waiting: a subscriber whose
// queue is full loses e, and the loss is counted. An event without an id or
// time gets them here.
func (b *Bus) Publish(e Event) {
	if e.Time.IsZero() {
		e.Time = time.Now()
	}
	if e.ID == "" {
		e.ID = NewID(e.Time)
	}
	b.mu.RLock()
	defer b.mu.RUnlock()
	if b.closed {
		return
	}
	for _, s := range b.subs {
		if s.kinds != nil && !s.kinds[e.Kind] {
			continue
		}
		select {
		case s.queue <- e:
		default:
			s.mu.Lock()
			s.dropped++
			s.mu.Unlock()
		}
	}
}

// Dropped is how many events each subscriber lost to a full queue, by name.
func (b *Bus) Dropped() map[string]uint64 {
	b.mu.RLock()
	defer b.mu.RUnlock()
	out := make(map[string]uint64, len(b.subs))
	for _, s := range b.subs {
		s.mu.Lock()
		out[s.name] = s.dropped
		s.mu.Unlock()
	}
	return out
}

// Queued is how many events wait in each subscriber's queue, by name.
func (b *Bus) Queued() map[string]int {
	b.mu.RLock()
	defer b.mu.RUnlock()
	out := make(map[string]int, len(b.subs))
	for _, s := range b.subs {
		out[s.name] = len(s.queue)
	}
	return out
}

// Names lists the subscribers, sorted.
func (b *Bus) Names() []string {
	b.mu.RLock()
	defer b.mu.RUnlock()
	var out []string
	for _, s := range b.subs {
		out = append(out, s.name)
	}
	sort.Strings(out)
	return out
}

// Close stops every subscriber: handlers see their context cancelled, and
// Close waits for them until ctx ends. Events still queued are dropped;
// subscribers that promise delivery keep their own durable outbox.
func (b *Bus) Close(ctx context.Context) {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return
	}
	b.closed = true
	b.mu.Unlock()
	b.cancel()
	done := make(chan struct{})
	go func() { b.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
	}
}
