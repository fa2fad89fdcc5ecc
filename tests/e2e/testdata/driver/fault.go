package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/goray/goray/actor"
	"github.com/goray/goray/internal/core"
	"github.com/goray/goray/objectstore"
	"github.com/goray/goray/runtime"
	"github.com/goray/goray/task"
)

// Tally is a restartable actor.
type Tally struct{ n int }

func (t *Tally) Add(_ context.Context, d int) (int, error) { t.n += d; return t.n, nil }

var (
	tallyType = actor.Register("e2e.tally", func() *Tally { return &Tally{} })
	tallyAdd  = actor.Method1(tallyType, "add", (*Tally).Add)
)

var (
	tallyPid = actor.Method0(tallyType, "pid", func(*Tally, context.Context) (int, error) { return os.Getpid(), nil })
	// pidThenSleep writes its worker's pid to a file, sleeps, and answers.
	pidThenSleep = task.Register1("e2e.pid_then_sleep", func(ctx context.Context, pidFile string) (string, error) {
		if err := os.WriteFile(pidFile, []byte(fmt.Sprint(os.Getpid())), 0o600); err != nil {
			return "", err
		}
		select {
		case <-time.After(3 * time.Second):
		case <-ctx.Done():
			return "", ctx.Err()
		}
		return "done", nil
	})
)

// workerKill puts an actor with a restart and a slow task on worker
// processes, prints their pids, waits until the test has SIGKILLed both,
// and checks that the actor restarted (fresh state) and the task was
// retried to completion.
func workerKill(ctx context.Context) error {
	pidFile, err := need("E2E_PIDFILE")
	if err != nil {
		return err
	}
	h, err := actor.Spawn(ctx, tallyType, actor.WithMaxRestarts(1))
	if err != nil {
		return err
	}
	if n, err := tallyAdd.Remote(ctx, h, objectstore.Val(5)).Get(ctx); err != nil || n != 5 {
		return fmt.Errorf("add: got %d, %v", n, err)
	}
	pid, err := tallyPid.Remote(ctx, h).Get(ctx)
	if err != nil {
		return err
	}
	slow := pidThenSleep.Remote(ctx, objectstore.Val(pidFile))
	fmt.Printf("READY actor_pid=%d\n", pid)
	if _, err := bufio.NewReader(os.Stdin).ReadString('\n'); err != nil {
		return fmt.Errorf("waiting for the kills: %w", err)
	}
	// A call sent before this process saw the connection drop was in flight
	// when the actor died: at-most-once, it fails with ErrWorkerCrashed and
	// never reaches the next incarnation. Once the death is seen, calls wait
	// for the restart.
	n, err := tallyAdd.Remote(ctx, h, objectstore.Val(1)).Get(ctx)
	for attempt := 0; errors.Is(err, runtime.ErrWorkerCrashed) && attempt < 3; attempt++ {
		n, err = tallyAdd.Remote(ctx, h, objectstore.Val(1)).Get(ctx)
	}
	if err != nil || n != 1 {
		return fmt.Errorf("add after the actor's process was killed: got %d, %v; want 1 (restarted, fresh state)", n, err)
	}
	if got, err := slow.Get(ctx); err != nil || got != "done" {
		return fmt.Errorf("task whose worker was killed: got %q, %v; want done (retried)", got, err)
	}
	c, _ := core.Current()
	fmt.Printf("WORKERKILL OK task_retries=%d\n", c.Stats().TaskRetries.Load())
	return nil
}
