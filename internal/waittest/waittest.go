// Package waittest holds the wait helper the unit tests of backend and
// backend/watch share: they watch a worker that runs in its own goroutine.
package waittest

import (
	"testing"
	"time"
)

// Until polls cond every 5 ms until it holds, failing the test after 10 s,
// a bound no healthy in-process worker comes near.
func Until(t testing.TB, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 10s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}
