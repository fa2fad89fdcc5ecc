package task_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/goray/goray/objectstore"
	"github.com/goray/goray/runtime"
	"github.com/goray/goray/task"
)

// running counts the overlap tasks running in this (worker) process.
var running atomic.Int32

// overlap reports whether another task ran in this worker process while it
// did: a lease is one CPU, so the tasks sent ahead on one lease must run one
// at a time.
var overlap = task.Register1("tasktest.overlap", func(_ context.Context, x int) (int, error) {
	n := running.Add(1)
	defer running.Add(-1)
	time.Sleep(20 * time.Microsecond) // the work itself: long enough for an overlap to show
	if n > 1 || running.Load() > 1 {
		return -1, nil
	}
	return x, nil
})

// TestPipelinedTasksRunOneAtATime submits many short tasks (several go ahead
// to each leased worker) and checks every result and that no two ran at once
// in one worker.
func TestPipelinedTasksRunOneAtATime(t *testing.T) {
	ctx := testCtx(t, 60*time.Second)
	for round := range 3 {
		const n = 2000
		refs := make([]objectstore.Ref[int], n)
		for i := range refs {
			refs[i] = overlap.Remote(ctx, objectstore.Val(i))
		}
		for i, r := range refs {
			got, err := r.Get(ctx)
			if err != nil || got != i {
				t.Fatalf("round %d: overlap(%d): got %d, %v, want %d, nil (-1: it overlapped another task in its worker)", round, i, got, err, i)
			}
		}
	}
}

// TestPipelinedTasksSurviveCrash kills a worker while short tasks are in
// flight on it: each of them runs again elsewhere; only the killer fails.
func TestPipelinedTasksSurviveCrash(t *testing.T) {
	ctx := testCtx(t, 60*time.Second)
	for round := range 3 {
		// Warm up: the shape's tasks are short, so tasks go ahead.
		warm := make([]objectstore.Ref[int], 500)
		for i := range warm {
			warm[i] = square.Remote(ctx, objectstore.Val(i))
		}
		refs := make([]objectstore.Ref[int], 600)
		var killer objectstore.Ref[int]
		for i := range refs {
			if i == 300 {
				killer = exit.Remote(ctx, objectstore.Val(3), task.WithMaxRetries(0))
			}
			refs[i] = square.Remote(ctx, objectstore.Val(i))
		}
		for i, r := range append(warm, refs...) {
			want := i * i
			if i >= len(warm) {
				want = (i - len(warm)) * (i - len(warm))
			}
			if got, err := r.Get(ctx); err != nil || got != want {
				t.Fatalf("round %d: square #%d: got %d, %v, want %d, nil", round, i, got, err, want)
			}
		}
		if _, err := killer.Get(ctx); !errors.Is(err, runtime.ErrWorkerCrashed) {
			t.Fatalf("round %d: exit(3): got %v, want ErrWorkerCrashed", round, err)
		}
	}
}
