package main

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"strings"

	"github.com/goray/goray/actor"
	"github.com/goray/goray/objectstore"
)

// Counter is a stateful actor: its count survives as long as its worker.
type Counter struct{ n int }

// Add adds d and returns the new count.
func (c *Counter) Add(_ context.Context, d int) (int, error) { c.n += d; return c.n, nil }

// Job returns the job the actor's worker runs for.
func (*Counter) Job(context.Context) (string, error) { return os.Getenv("GORAY_JOB_ID"), nil }

var (
	counterType = actor.Register("e2e.counter", func() *Counter { return &Counter{} })
	counterAdd  = actor.Method1(counterType, "add", (*Counter).Add)
	counterJob  = actor.Method0(counterType, "job", (*Counter).Job)
)

// headRestart (E2E_MODE=headrestart) drives TestHeadRestart through stdin:
//
//	start: a counter actor on node_b and one on node_c, each added to 3
//	       times; prints "READY job=<job id hex>"
//	"down" (the head is down): each counter is added to 3 more times;
//	       prints "DOWN-OK b=<count> c=<count>"
//	"up"   (the head is back): a new actor and tasks run, and each old
//	       counter is added to once more; prints "UP-OK b=<count> c=<count> new=<count> task=<node>"
//	EOF or "done": returns.
func headRestart(ctx context.Context) error {
	spawn := func(res string) (actor.Handle[Counter], error) {
		return actor.Spawn(ctx, counterType, actor.WithResources(map[string]float64{res: 0.1}))
	}
	b, err := spawn("node_b")
	if err != nil {
		return fmt.Errorf("spawn counter on node_b: %w", err)
	}
	c, err := spawn("node_c")
	if err != nil {
		return fmt.Errorf("spawn counter on node_c: %w", err)
	}
	add := func(h actor.Handle[Counter], times int) (int, error) {
		n := 0
		for range times {
			var err error
			if n, err = counterAdd.Remote(ctx, h, objectstore.Val(1)).Get(ctx); err != nil {
				return 0, err
			}
		}
		return n, nil
	}
	for _, h := range []actor.Handle[Counter]{b, c} {
		if _, err := add(h, 3); err != nil {
			return fmt.Errorf("add before the head restart: %w", err)
		}
	}
	job, err := counterJob.Remote(ctx, b).Get(ctx)
	if err != nil {
		return fmt.Errorf("job: %w", err)
	}
	fmt.Printf("READY job=%s\n", job)

	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		switch cmd := strings.TrimSpace(in.Text()); cmd {
		case "down":
			nb, err := add(b, 3)
			if err != nil {
				return fmt.Errorf("call node_b's counter while the head is down: %w", err)
			}
			nc, err := add(c, 3)
			if err != nil {
				return fmt.Errorf("call node_c's counter while the head is down: %w", err)
			}
			fmt.Printf("DOWN-OK b=%d c=%d\n", nb, nc)
		case "up":
			fresh, err := spawn("node_c")
			if err != nil {
				return fmt.Errorf("spawn after the head restart: %w", err)
			}
			nn, err := add(fresh, 2)
			if err != nil {
				return fmt.Errorf("new counter after the head restart: %w", err)
			}
			where, err := whereTask.Remote(ctx).Get(ctx)
			if err != nil {
				return fmt.Errorf("task after the head restart: %w", err)
			}
			nb, err := add(b, 1)
			if err != nil {
				return fmt.Errorf("node_b's counter after the head restart: %w", err)
			}
			nc, err := add(c, 1)
			if err != nil {
				return fmt.Errorf("node_c's counter after the head restart: %w", err)
			}
			fmt.Printf("UP-OK b=%d c=%d new=%d task=%s\n", nb, nc, nn, where)
		case "done":
			return nil
		default:
			return fmt.Errorf("unknown command %q", cmd)
		}
	}
	return nil
}
