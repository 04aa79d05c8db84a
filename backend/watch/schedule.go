package watch

import (
	"hash/fnv"
	"time"
)

// maxRetryDelay caps the backoff of a failing commit; a longer poll period
// wins over it, since a retry is never faster than the poll period.
const maxRetryDelay = time.Hour

// pollDue says whether the periodic tick should wake the worker.
func pollDue(now, lastPollAt time.Time, period, offset time.Duration) bool {
	if lastPollAt.IsZero() || period <= 0 {
		return true
	}
	return !now.Before(nextPollAt(lastPollAt, period, offset))
}

// pollOffset is a mount's stable place within its poll period. Vault calls
// the periodic functions of all mounts in the same instant, so without it
// every mount of a Vault would fetch from the forge at once.
func pollOffset(mountID string, period time.Duration) time.Duration {
	if period <= 0 || mountID == "" {
		return 0
	}
	h := fnv.New64a()
	h.Write([]byte(mountID))
	return time.Duration(h.Sum64() % uint64(period))
}

// nextPollAt is the first of the mount's poll slots (offset plus a whole
// number of periods since the Unix epoch) after the last poll. A mount that
// never polled is due at once: the zero time.
func nextPollAt(lastPollAt time.Time, period, offset time.Duration) time.Time {
	if lastPollAt.IsZero() || period <= 0 {
		return time.Time{}
	}
	since := lastPollAt.UnixNano() - int64(offset)
	slots := since / int64(period)
	if since < 0 && since%int64(period) != 0 {
		slots-- // floor, not truncation, before the first slot
	}
	return time.Unix(0, int64(offset)+(slots+1)*int64(period)).In(lastPollAt.Location())
}

// retryDelay is how long a commit whose run failed `failures` times in a row
// waits before its next run: the poll period, doubled per failure, capped.
func retryDelay(failures int, period time.Duration) time.Duration {
	if period <= 0 {
		period = time.Second
	}
	limit := max(maxRetryDelay, period)
	d := period
	for i := 1; i < failures; i++ {
		if d >= limit/2 {
			return limit
		}
		d *= 2
	}
	return min(d, limit)
}

// runDecision is what a poll does with HEAD once it is known.
type runDecision int

const (
	decideUpToDate runDecision = iota // HEAD is the last successful commit
	decideRun                         // run the commands for HEAD
	decideBackoff                     // HEAD failed recently; wait for NextAttemptAt
	decideHeld                        // an operator canceled HEAD's run; wait for a new commit or poll retry=true
)

// decide applies the retry rules to a fetched HEAD whose signed content is
// headContent (gitwatch ContentID). Ancestry and quorum are checked after
// this by the caller, since they cost git work.
func decide(now time.Time, head, headContent, lastSuccessful string, st *State, forceRetry bool) runDecision {
	if head == lastSuccessful {
		return decideUpToDate
	}
	if forceRetry || !st.sameChange(head, headContent) {
		return decideRun
	}
	if st.Held {
		return decideHeld
	}
	if now.Before(st.NextAttemptAt) {
		return decideBackoff
	}
	return decideRun
}
