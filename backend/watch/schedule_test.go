package watch

import (
	"fmt"
	"testing"
	"time"
)

func TestPollDue(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	tests := []struct {
		name   string
		now    time.Time
		last   time.Time
		period time.Duration
		want   bool
	}{
		{"never polled", t0, time.Time{}, 5 * time.Minute, true},
		{"within the period", t0.Add(4 * time.Minute), t0, 5 * time.Minute, false},
		{"exactly one period", t0.Add(5 * time.Minute), t0, 5 * time.Minute, true},
		{"the next slot, not a period after an off-slot poll", t0.Add(6 * time.Minute), t0.Add(2 * time.Minute), 5 * time.Minute, true},
		{"past the period", t0.Add(time.Hour), t0, 5 * time.Minute, true},
		{"period unknown yet", t0.Add(time.Second), t0, 0, true},
		{"clock went back", t0.Add(-time.Minute), t0, 5 * time.Minute, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := pollDue(tt.now, tt.last, tt.period, 0); got != tt.want {
				t.Errorf("pollDue = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestPollSlotsSpreadMounts(t *testing.T) {
	const period = 5 * time.Minute
	// 200 mounts of one Vault: Vault ticks them together, the slots do not
	// bunch them up.
	perMinute := make([]int, 5)
	for i := range 200 {
		off := pollOffset(fmt.Sprintf("mount-%03d", i), period)
		if off < 0 || off >= period {
			t.Fatalf("offset %s outside [0, %s)", off, period)
		}
		perMinute[off/time.Minute]++
	}
	for m, n := range perMinute {
		if n < 20 || n > 60 {
			t.Errorf("minute %d of the period holds %d of 200 mounts' polls, want about 40: %v", m, n, perMinute)
		}
	}
	if a, b := pollOffset("mount-a", period), pollOffset("mount-a", period); a != b {
		t.Errorf("the offset of one mount moved: %s then %s", a, b)
	}

	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	tests := []struct {
		name   string
		last   time.Time
		offset time.Duration
		want   time.Time
	}{
		{"never polled: now", time.Time{}, time.Minute, time.Time{}},
		{"on a slot: the next one", t0.Add(time.Minute), time.Minute, t0.Add(6 * time.Minute)},
		{"between slots: the next one", t0.Add(3 * time.Minute), time.Minute, t0.Add(6 * time.Minute)},
		{"just before a slot", t0.Add(time.Minute - time.Nanosecond), time.Minute, t0.Add(time.Minute)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := nextPollAt(tt.last, period, tt.offset); !got.Equal(tt.want) {
				t.Errorf("nextPollAt(%s) = %s, want %s", tt.last, got, tt.want)
			}
		})
	}
}

func TestRetryDelay(t *testing.T) {
	tests := []struct {
		name     string
		failures int
		period   time.Duration
		want     time.Duration
	}{
		{"first failure waits one period", 1, 5 * time.Minute, 5 * time.Minute},
		{"second doubles", 2, 5 * time.Minute, 10 * time.Minute},
		{"fourth", 4, 5 * time.Minute, 40 * time.Minute},
		{"capped at an hour", 5, 5 * time.Minute, time.Hour},
		{"many failures stay capped", 1000, 5 * time.Minute, time.Hour},
		{"never faster than a long period", 1, 3 * time.Hour, 3 * time.Hour},
		{"long period is the cap", 3, 3 * time.Hour, 3 * time.Hour},
		{"short period", 3, time.Second, 4 * time.Second},
		{"zero failures behaves as one", 0, time.Minute, time.Minute},
		{"unset period falls back to a second", 1, 0, time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := retryDelay(tt.failures, tt.period)
			if got != tt.want {
				t.Errorf("retryDelay(%d, %s) = %s, want %s", tt.failures, tt.period, got, tt.want)
			}
			if tt.period > 0 && got < tt.period {
				t.Errorf("retryDelay(%d, %s) = %s is faster than the poll period", tt.failures, tt.period, got)
			}
		})
	}
}

func TestDecide(t *testing.T) {
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		name  string
		head  string
		last  string
		st    State
		force bool
		want  runDecision
	}{
		{"head is the last successful", "a", "a", State{}, false, decideUpToDate},
		{"up to date wins over force", "a", "a", State{}, true, decideUpToDate},
		{"new commit", "b", "a", State{}, false, decideRun},
		{"first commit ever", "b", "", State{}, false, decideRun},
		{"failed commit in backoff", "b", "a", State{FailedCommit: "b", Failures: 1, NextAttemptAt: now.Add(time.Minute)}, false, decideBackoff},
		{"failed commit after backoff", "b", "a", State{FailedCommit: "b", Failures: 1, NextAttemptAt: now}, false, decideRun},
		{"failed commit forced", "b", "a", State{FailedCommit: "b", Failures: 3, NextAttemptAt: now.Add(time.Hour)}, true, decideRun},
		{"another commit failed", "c", "a", State{FailedCommit: "b", Failures: 1, NextAttemptAt: now.Add(time.Hour)}, false, decideRun},
		{"canceled commit held", "b", "a", State{FailedCommit: "b", Held: true}, false, decideHeld},
		{"canceled commit forced", "b", "a", State{FailedCommit: "b", Held: true}, true, decideRun},
		{"new commit after a canceled one", "c", "a", State{FailedCommit: "b", Held: true}, false, decideRun},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := tt.st
			if got := decide(now, tt.head, "", tt.last, &st, tt.force); got != tt.want {
				t.Errorf("decide = %v, want %v", got, tt.want)
			}
		})
	}
}

// Hold and backoff follow what the signatures cover: the same change under a
// re-wrapped signature (another commit id) is held or backed off too.
func TestDecideFollowsSignedContent(t *testing.T) {
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	held := State{FailedCommit: "b", FailedContent: "cb", Held: true}
	backoff := State{FailedCommit: "b", FailedContent: "cb", Failures: 2, NextAttemptAt: now.Add(time.Minute)}
	tests := []struct {
		name          string
		head, content string
		st            State
		force         bool
		want          runDecision
	}{
		{"re-wrapped canceled commit stays held", "b2", "cb", held, false, decideHeld},
		{"re-wrapped failing commit stays in backoff", "b2", "cb", backoff, false, decideBackoff},
		{"re-wrapped canceled commit runs when forced", "b2", "cb", held, true, decideRun},
		{"another change under a new id runs", "c", "cc", held, false, decideRun},
		{"state without content (before this change) keys by id", "b2", "cb", State{FailedCommit: "b", Held: true}, false, decideRun},
		{"no failing commit: an empty stored content matches nothing", "b2", "", State{}, false, decideRun},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := tt.st
			if got := decide(now, tt.head, tt.content, "a", &st, tt.force); got != tt.want {
				t.Errorf("decide = %v, want %v", got, tt.want)
			}
		})
	}
}
