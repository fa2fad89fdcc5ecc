// Package testwait is goray's one way for a test to wait for a condition:
// Eventually polls it until it holds or a timeout passes, and Until does the
// same under a context for code that has no *testing.T (a TestMain, a
// cluster runner). It imports nothing of goray's, so every test package can
// use it, the node manager's own tests included.
//
// A sleep is never a synchronisation: a test that waits for something to
// happen waits for it here (or on a channel that says it happened).
package testwait

import (
	"context"
	"fmt"
	"testing"
	"time"
)

// Interval is how often a condition is polled.
const Interval = 20 * time.Millisecond

// Eventually polls cond every Interval until it returns true, and fails t
// (t.Fatalf, so call it from the test's goroutine) when timeout passes
// first; it may be called from a t.Cleanup. what says what was awaited, in
// words that complete "got no ... within ...": "the stopped node dead".
// The timeout only turns a hang into a failure; it is no assertion on speed.
func Eventually(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if err := Until(ctx, what, cond); err != nil {
		t.Fatalf("got no %s within %s, want it", what, timeout)
	}
}

// Until polls cond every Interval until it returns true and returns nil, or
// returns an error naming what when ctx ends first.
func Until(ctx context.Context, what string, cond func() bool) error {
	tick := time.NewTicker(Interval)
	defer tick.Stop()
	for !cond() {
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s: %w", what, ctx.Err())
		case <-tick.C:
		}
	}
	return nil
}
