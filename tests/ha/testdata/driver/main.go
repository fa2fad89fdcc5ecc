// Command driver is the goray program the head-failover tests (tests/ha)
// run against a cluster of several heads. Its mode comes from HA_MODE:
//
//	work (default)  HA_ROUNDS rounds, each: spawn a counter actor (with
//	                restarts) and add to it 3 times, and run 30 tasks;
//	                every result is checked. Prints "ROUND <i>" after
//	                each round and "HA OK tasks=<n> calls=<n> spawns=<n>"
//	                at the end; exits 1 on the first wrong or failed result.
//	spawnloop       spawns a counter, calls it once and kills it, in a
//	                loop, printing "PLACED <unix nanos>" after each call,
//	                until stdin closes.
//
// Raylets start this same binary as its workers.
package main

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"strconv"
	"time"

	"github.com/goray/goray/actor"
	"github.com/goray/goray/objectstore"
	"github.com/goray/goray/runtime"
	"github.com/goray/goray/task"
)

// Counter counts the calls it ran: a call that ran twice shows as a
// skipped number.
type Counter struct{ n int }

// Add adds d and returns the new count.
func (c *Counter) Add(_ context.Context, d int) (int, error) { c.n += d; return c.n, nil }

// Crash ends the actor's worker process: the actor restarts (a new
// incarnation, its count back at 0).
func (c *Counter) Crash(context.Context) (int, error) {
	os.Exit(3)
	return 0, nil
}

var (
	counterType  = actor.Register("ha.counter", func() *Counter { return &Counter{} })
	counterAdd   = actor.Method1(counterType, "add", (*Counter).Add)
	counterCrash = actor.Method0(counterType, "crash", (*Counter).Crash)
	squareTask   = task.Register1("ha.square", func(_ context.Context, x int) (int, error) { return x * x, nil })
)

func main() {
	runtime.ServeIfWorker()
	ctx := context.Background()
	if err := runtime.Init(ctx); err != nil {
		fail(fmt.Errorf("init: %w", err))
	}
	var err error
	switch mode := os.Getenv("HA_MODE"); mode {
	case "", "work":
		err = work(ctx)
	case "spawnloop":
		err = spawnLoop(ctx)
	default:
		err = fmt.Errorf("unknown HA_MODE %q", mode)
	}
	runtime.Shutdown()
	if err != nil {
		fail(err)
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "driver:", err)
	os.Exit(1)
}

func work(ctx context.Context) error {
	rounds := 100
	if s := os.Getenv("HA_ROUNDS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil {
			return fmt.Errorf("HA_ROUNDS: %w", err)
		}
		rounds = n
	}
	const tasksPerRound, callsPerRound = 30, 3
	restarts := 0
	for i := range rounds {
		h, err := actor.Spawn(ctx, counterType, actor.WithMaxRestarts(3), actor.WithResources(map[string]float64{"CPU": 0.01, "w": 0.01}))
		if err != nil {
			return fmt.Errorf("round %d: spawn: %w", i, err)
		}
		refs := make([]objectstore.Ref[int], tasksPerRound)
		for j := range refs {
			refs[j] = squareTask.Remote(ctx, objectstore.Val(i*tasksPerRound+j))
		}
		calls := func(what string) error {
			for k := 1; k <= callsPerRound; k++ {
				n, err := counterAdd.Remote(ctx, h, objectstore.Val(1)).Get(ctx)
				if err != nil {
					return fmt.Errorf("round %d: call %d%s: %w", i, k, what, err)
				}
				if n != k {
					return fmt.Errorf("round %d: call %d%s returned count %d, want %d (a call ran twice or was lost)", i, k, what, n, k)
				}
			}
			return nil
		}
		if err := calls(""); err != nil {
			return err
		}
		if i%10 == 9 {
			// The actor's worker dies: the call fails (it is not retried:
			// at most once), and the restarted actor counts from 0.
			if _, err := counterCrash.Remote(ctx, h).Get(ctx); err == nil {
				return fmt.Errorf("round %d: crash: got a result, want the worker's death", i)
			}
			if err := calls(" after the restart"); err != nil {
				return err
			}
			restarts++
		}
		for j, r := range refs {
			x := i*tasksPerRound + j
			got, err := r.Get(ctx)
			if err != nil {
				return fmt.Errorf("round %d: task %d: %w", i, j, err)
			}
			if got != x*x {
				return fmt.Errorf("round %d: task %d: got %d, want %d", i, j, got, x*x)
			}
		}
		if err := actor.Kill(ctx, h); err != nil {
			return fmt.Errorf("round %d: kill: %w", i, err)
		}
		fmt.Printf("ROUND %d\n", i)
	}
	fmt.Printf("HA OK tasks=%d calls=%d spawns=%d restarts=%d\n", rounds*tasksPerRound, rounds*callsPerRound+restarts*callsPerRound, rounds, restarts)
	return nil
}

func spawnLoop(ctx context.Context) error {
	stop := make(chan struct{})
	go func() {
		in := bufio.NewScanner(os.Stdin)
		for in.Scan() {
		}
		close(stop)
	}()
	for {
		select {
		case <-stop:
			return nil
		default:
		}
		h, err := actor.Spawn(ctx, counterType, actor.WithResources(map[string]float64{"CPU": 0.01, "w": 0.01}))
		if err != nil {
			return fmt.Errorf("spawn: %w", err)
		}
		if _, err := counterAdd.Remote(ctx, h, objectstore.Val(1)).Get(ctx); err != nil {
			return fmt.Errorf("call: %w", err)
		}
		fmt.Printf("PLACED %d\n", time.Now().UnixNano())
		if err := actor.Kill(ctx, h); err != nil {
			return fmt.Errorf("kill: %w", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
