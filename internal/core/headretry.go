package core

import (
	"context"
	"time"

	"github.com/goray/goray/internal/rpc"
)

// headUnavailableWait bounds how long a call that is safe to repeat waits
// for an unavailable head: a head restart or a failover to a standby head
// (docs/fault-tolerance.md) takes seconds.
const headUnavailableWait = 60 * time.Second

// retryHead runs call until it succeeds, fails with something other than
// an unreachable head (rpc.HeadUnreachable: the head is down, restarting,
// or its leadership is passing to another head), ctx ends, or headUnavailableWait passes. Only
// calls that are safe to run twice go through it: a create whose first
// attempt reached the head finds its actor on the second (CreateActor is
// idempotent per actor ID), and reads.
func retryHead(ctx context.Context, call func(ctx context.Context) error) error {
	deadline := time.Now().Add(headUnavailableWait)
	wait := 50 * time.Millisecond
	for {
		err := call(ctx)
		if err == nil || !rpc.HeadUnreachable(err) || ctx.Err() != nil || time.Now().After(deadline) {
			return err
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return err
		case <-t.C:
		}
		wait = min(2*wait, 200*time.Millisecond) // a failover takes seconds: notice its end soon
	}
}
