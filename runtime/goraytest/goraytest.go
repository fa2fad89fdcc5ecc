package goraytest

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/goray/goray/actor"
	"github.com/goray/goray/internal/testwait"
	"github.com/goray/goray/runtime"
)

// Main is a TestMain for tests that use goray. In a worker process started
// by the embedded raylet it serves and never returns. Otherwise it starts an
// embedded cluster (runtime.Init with opts, and no address unless opts give
// one), runs the tests, shuts the cluster down and exits with the tests'
// status.
func Main(m *testing.M, opts ...runtime.Option) { os.Exit(Run(m, opts...)) }

// Run is Main without the exit: it returns the tests' status, for a TestMain
// that checks more after the cluster stopped (a goroutine leak check, say).
// In a worker process it serves and never returns.
func Run(m *testing.M, opts ...runtime.Option) int {
	runtime.ServeIfWorker()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	err := runtime.Init(ctx, opts...)
	cancel()
	if err != nil {
		fmt.Fprintf(os.Stderr, "goraytest: start the embedded cluster: %v\n", err)
		return 1
	}
	code := m.Run()
	runtime.Shutdown()
	return code
}

// Context is the test's context bounded by d, so that a hang fails the
// test (and not the whole test binary) with a deadline error.
func Context(t testing.TB, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), d)
	t.Cleanup(cancel)
	return ctx
}

// Spawn spawns an actor of type typ with opts, failing t when it cannot,
// and kills it when the test ends.
func Spawn[T any](t testing.TB, typ actor.Type[T], opts ...actor.Option) actor.Handle[T] {
	t.Helper()
	h, err := actor.Spawn(t.Context(), typ, opts...)
	if err != nil {
		t.Fatalf("spawn actor %s: %v", typ.Name(), err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = actor.Kill(ctx, h)
	})
	return h
}

// Eventually polls cond until it returns true, and fails t when timeout
// passes first; what names what the test waits for ("the actor restarted").
// Use it instead of a sleep whenever a test waits for something to happen.
func Eventually(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	testwait.Eventually(t, timeout, what, cond)
}
