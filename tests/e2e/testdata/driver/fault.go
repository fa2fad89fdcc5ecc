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

func (*Tally) Node(context.Context) (string, error) { return os.Getenv("GORAY_NODE_ID"), nil }

const faultBlobSize = 1 << 20

var (
	tallyType = actor.Register("e2e.tally", func() *Tally { return &Tally{} })
	tallyAdd  = actor.Method1(tallyType, "add", (*Tally).Add)
	tallyNode = actor.Method0(tallyType, "node", (*Tally).Node)
	// makeBlob returns a stored (> 100 KiB) deterministic result and where it
	// was made.
	makeBlob = task.Register1("e2e.make_blob", func(_ context.Context, seed uint64) (Produced, error) {
		return Produced{Node: os.Getenv("GORAY_NODE_ID"), Data: gen(seed, faultBlobSize)}, nil
	})
	// slowWhere sleeps, then says where it ran.
	slowWhere = task.Register1("e2e.slow_where", func(ctx context.Context, d time.Duration) (string, error) {
		select {
		case <-time.After(d):
		case <-ctx.Done():
			return "", ctx.Err()
		}
		return os.Getenv("GORAY_NODE_ID"), nil
	})
)

// fault puts work on node E2E_VICTIM (soft affinity), says READY, waits for
// the test to kill that node, then checks that everything recovered: the
// running task was retried elsewhere, the lost stored result was rebuilt
// from lineage, and the actor was restarted elsewhere with fresh state.
func fault(ctx context.Context) error {
	victim, err := need("E2E_VICTIM")
	if err != nil {
		return err
	}
	onVictim := runtime.NodeAffinity(victim, true)
	h, err := actor.Spawn(ctx, tallyType, actor.WithStrategy(onVictim), actor.WithMaxRestarts(2))
	if err != nil {
		return fmt.Errorf("spawn: %w", err)
	}
	if n, err := tallyNode.Remote(ctx, h).Get(ctx); err != nil || n != victim {
		return fmt.Errorf("actor runs on %q (%v), want the victim %s", n, err, victim)
	}
	if n, err := tallyAdd.Remote(ctx, h, objectstore.Val(5)).Get(ctx); err != nil || n != 5 {
		return fmt.Errorf("add: got %d, %v", n, err)
	}
	blob := makeBlob.Remote(ctx, objectstore.Val(uint64(42)), task.WithStrategy(onVictim))
	// Wait until it is made (on the victim), without reading it here.
	if _, _, err := objectstore.Wait(ctx, []objectstore.Ref[Produced]{blob}, 1); err != nil {
		return err
	}
	slow := slowWhere.Remote(ctx, objectstore.Val(4*time.Second), task.WithStrategy(onVictim))
	time.Sleep(500 * time.Millisecond) // let it start on the victim
	fmt.Println("READY")
	if _, err := bufio.NewReader(os.Stdin).ReadString('\n'); err != nil {
		return fmt.Errorf("waiting for the kill: %w", err)
	}

	got, err := blob.Get(ctx)
	if err != nil {
		return fmt.Errorf("get the lost blob: %w", err)
	}
	if got.Node == victim || sum(got.Data) != sum(gen(42, faultBlobSize)) {
		return fmt.Errorf("rebuilt blob: made on %s (victim %s), checksum ok=%v", got.Node, victim, sum(got.Data) == sum(gen(42, faultBlobSize)))
	}
	n, err := tallyAdd.Remote(ctx, h, objectstore.Val(1)).Get(ctx)
	if err != nil || n != 1 {
		return fmt.Errorf("add after the restart: got %d, %v; want 1 (fresh state)", n, err)
	}
	if where, err := tallyNode.Remote(ctx, h).Get(ctx); err != nil || where == victim {
		return fmt.Errorf("restarted actor runs on %q (%v), want another node than %s", where, err, victim)
	}
	ran, err := slow.Get(ctx)
	if err != nil || ran == victim {
		return fmt.Errorf("retried task ran on %q (%v), want another node", ran, err)
	}
	c, _ := core.Current()
	st := c.Stats()
	fmt.Printf("FAULT OK task_retries=%d reconstructed=%d\n", st.TaskRetries.Load(), st.Reconstructed.Load())
	return nil
}

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
