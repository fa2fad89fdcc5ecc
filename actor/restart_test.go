package actor_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/goray/goray/actor"
	"github.com/goray/goray/objectstore"
	"github.com/goray/goray/runtime"
)

// Phoenix is an actor whose process can be made to die.
type Phoenix struct{ n int }

func (p *Phoenix) Add(_ context.Context, d int) (int, error) { p.n += d; return p.n, nil }

// Die kills the actor's worker process.
func (p *Phoenix) Die(context.Context) (int, error) { os.Exit(5); return 0, nil }

// DieOnce kills the process the first time it sees no marker file, then
// answers "survived".
func (p *Phoenix) DieOnce(_ context.Context, marker string) (string, error) {
	if _, err := os.Stat(marker); err != nil {
		if err := os.WriteFile(marker, nil, 0o600); err != nil {
			return "", err
		}
		os.Exit(6)
	}
	return "survived", nil
}

var (
	phoenixType    = actor.Register("actortest.phoenix", func() *Phoenix { return &Phoenix{} })
	phoenixAdd     = actor.Method1(phoenixType, "add", (*Phoenix).Add)
	phoenixDie     = actor.Method0(phoenixType, "die", (*Phoenix).Die)
	phoenixDieOnce = actor.Method1(phoenixType, "die_once", (*Phoenix).DieOnce)
)

func TestActorRestarts(t *testing.T) {
	ctx := testCtx(t, 90*time.Second)
	h, err := actor.Spawn(ctx, phoenixType, actor.WithMaxRestarts(1))
	if err != nil {
		t.Fatal(err)
	}
	if got, err := phoenixAdd.Remote(ctx, h, objectstore.Val(2)).Get(ctx); err != nil || got != 2 {
		t.Fatalf("add before the crash: got %d, %v; want 2", got, err)
	}
	// At-most-once: the call in flight when the process died fails.
	if _, err := phoenixDie.Remote(ctx, h).Get(ctx); !errors.Is(err, runtime.ErrWorkerCrashed) {
		t.Fatalf("call that kills the process: got %v, want ErrWorkerCrashed", err)
	}
	// The next call waits for the restart and reaches a fresh incarnation.
	if got, err := phoenixAdd.Remote(ctx, h, objectstore.Val(1)).Get(ctx); err != nil || got != 1 {
		t.Fatalf("add after the restart: got %d, %v; want 1 (state starts over)", got, err)
	}
	// Out of restarts: the actor is dead for good.
	if _, err := phoenixDie.Remote(ctx, h).Get(ctx); !errors.Is(err, runtime.ErrWorkerCrashed) {
		t.Fatalf("second crash: got %v, want ErrWorkerCrashed", err)
	}
	if _, err := phoenixAdd.Remote(ctx, h, objectstore.Val(1)).Get(ctx); !errors.Is(err, runtime.ErrActorDied) {
		t.Fatalf("call after the last restart was used: got %v, want ErrActorDied", err)
	}
}

func TestActorTaskRetries(t *testing.T) {
	ctx := testCtx(t, 90*time.Second)
	h, err := actor.Spawn(ctx, phoenixType, actor.WithMaxRestarts(-1), actor.WithMaxTaskRetries(1))
	if err != nil {
		t.Fatal(err)
	}
	marker := filepath.Join(t.TempDir(), "died")
	// At-least-once: the call that killed the process runs again on the
	// next incarnation.
	got, err := phoenixDieOnce.Remote(ctx, h, objectstore.Val(marker)).Get(ctx)
	if err != nil || got != "survived" {
		t.Fatalf("retried call: got %q, %v; want survived", got, err)
	}
	if n, err := phoenixAdd.Remote(ctx, h, objectstore.Val(3)).Get(ctx); err != nil || n != 3 {
		t.Fatalf("add on the new incarnation: got %d, %v; want 3", n, err)
	}
}

func TestActorWithoutRestartsDies(t *testing.T) {
	ctx := testCtx(t, 60*time.Second)
	h, err := actor.Spawn(ctx, phoenixType)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := phoenixDie.Remote(ctx, h).Get(ctx); !errors.Is(err, runtime.ErrWorkerCrashed) {
		t.Fatalf("crash: got %v, want ErrWorkerCrashed", err)
	}
	if _, err := phoenixAdd.Remote(ctx, h, objectstore.Val(1)).Get(ctx); !errors.Is(err, runtime.ErrActorDied) {
		t.Fatalf("call after the crash: got %v, want ErrActorDied", err)
	}
}
