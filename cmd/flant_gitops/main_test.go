package main

import (
	"context"
	"sync/atomic"
	"testing"
	"time"
)

// fakeParents answers getppid from a script of parent PIDs, repeating the
// last one once the script is used up.
type fakeParents struct {
	pids  []int
	calls atomic.Int32
}

func (f *fakeParents) getppid() int {
	i := int(f.calls.Add(1)) - 1
	if i >= len(f.pids) {
		i = len(f.pids) - 1
	}
	return f.pids[i]
}

func TestWatchParent(t *testing.T) {
	tests := []struct {
		name       string
		pids       []int // first is the parent at start
		wantOrphan bool
	}{
		{name: "parent stays", pids: []int{4242}, wantOrphan: false},
		{name: "reparented to init", pids: []int{4242, 4242, 4242, 1}, wantOrphan: true},
		{name: "reparented to a subreaper", pids: []int{4242, 77}, wantOrphan: true},
		{name: "started under init and stays there", pids: []int{1}, wantOrphan: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := &fakeParents{pids: tt.pids}
			var orphaned atomic.Int32
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan struct{})
			go func() {
				defer close(done)
				watchParent(ctx, time.Millisecond, f.getppid, func() { orphaned.Add(1) })
			}()
			if tt.wantOrphan {
				// watchParent returns by itself after onOrphan.
				select {
				case <-done:
				case <-time.After(30 * time.Second):
					t.Fatal("watchParent did not notice the new parent")
				}
			} else {
				// Enough checks for any change to have been seen.
				for int(f.calls.Load()) < len(tt.pids)+20 {
					time.Sleep(time.Millisecond)
				}
				cancel()
				<-done
			}
			cancel()
			if got := orphaned.Load(); got != map[bool]int32{true: 1, false: 0}[tt.wantOrphan] {
				t.Errorf("onOrphan called %d times, want orphan=%v", got, tt.wantOrphan)
			}
		})
	}
}
