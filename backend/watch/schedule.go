package watch

import "time"

// maxRetryDelay caps the backoff of a failing commit; a longer poll period
// wins over it, since a retry is never faster than the poll period.
const maxRetryDelay = time.Hour

// pollDue says whether the periodic tick should wake the worker.
func pollDue(now, lastPollAt time.Time, period time.Duration) bool {
	if lastPollAt.IsZero() || period <= 0 {
		return true
	}
	return !now.Before(lastPollAt.Add(period))
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
