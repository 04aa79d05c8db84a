package events

import (
	"context"
	"sync"
	"testing"
	"time"
)

func TestSlowSubscriberBlocksNobody(t *testing.T) {
	bus := NewBus()
	defer bus.Close(context.Background())

	release := make(chan struct{})
	inHandler := make(chan struct{}, 1)
	bus.Subscribe("stuck", 4, func(ctx context.Context, e Event) {
		select {
		case inHandler <- struct{}{}:
		default:
		}
		select {
		case <-release:
		case <-ctx.Done():
		}
	})
	var mu sync.Mutex
	var got []Event
	all := make(chan struct{})
	bus.Subscribe("fast", 256, func(ctx context.Context, e Event) {
		mu.Lock()
		defer mu.Unlock()
		got = append(got, e)
		if len(got) == 100 {
			close(all)
		}
	})

	bus.Publish(Event{Kind: RunStarted, Run: "r"})
	<-inHandler
	for i := 1; i < 100; i++ {
		bus.Publish(Event{Kind: RunStarted, Run: "r"})
	}
	<-all // the fast subscriber saw every event although the other never returns

	dropped := bus.Dropped()
	// The stuck one holds one event in its handler and 4 in its queue.
	if dropped["stuck"] != 95 || dropped["fast"] != 0 {
		t.Fatalf("dropped = %v, want stuck 95, fast 0", dropped)
	}
	mu.Lock()
	defer mu.Unlock()
	seen := make(map[string]bool)
	for _, e := range got {
		if e.ID == "" || e.Time.IsZero() {
			t.Fatalf("event without id or time: %+v", e)
		}
		if seen[e.ID] {
			t.Fatalf("id %s given twice", e.ID)
		}
		seen[e.ID] = true
	}
	close(release)
}

func TestCloseCancelsHandlers(t *testing.T) {
	bus := NewBus()
	started := make(chan struct{})
	bus.Subscribe("waits", 1, func(ctx context.Context, e Event) {
		close(started)
		<-ctx.Done()
	})
	bus.Publish(Event{Kind: PollFinished})
	<-started
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	bus.Close(ctx)
	if ctx.Err() != nil {
		t.Fatal("Close waited for its whole context: the handler's context was not cancelled")
	}
	bus.Publish(Event{Kind: PollFinished}) // after Close: dropped silently, no panic
}

// TestKindsKeepAFloodOut: a subscriber of some kinds never loses one of
// them to a flood of events it does not take.
func TestKindsKeepAFloodOut(t *testing.T) {
	bus := NewBus()
	defer bus.Close(context.Background())
	release := make(chan struct{})
	got := make(chan Event, 8)
	bus.Subscribe("runs", 2, func(ctx context.Context, e Event) {
		select {
		case <-release:
		case <-ctx.Done():
		}
		got <- e
	}, RunStarted, RunFinished)

	bus.Publish(Event{Kind: RunStarted, Run: "r"})
	for range 1000 {
		bus.Publish(Event{Kind: PatchFinished})
	}
	bus.Publish(Event{Kind: RunFinished, Run: "r"})
	close(release)
	for _, want := range []Kind{RunStarted, RunFinished} {
		select {
		case e := <-got:
			if e.Kind != want {
				t.Fatalf("got %s, want %s", e.Kind, want)
			}
		case <-time.After(time.Minute):
			t.Fatalf("%s never reached the subscriber", want)
		}
	}
	if d := bus.Dropped()["runs"]; d != 0 {
		t.Fatalf("%d events dropped, want none: the patches were never its to take", d)
	}
}
