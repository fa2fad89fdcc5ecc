// Quickstart: a counter actor, a task, put/get, and a ref passed as an
// argument. Run it with `go run ./examples/quickstart`: with no GORAY_ADDRESS
// it starts an embedded cluster, so nothing needs to be running.
package main

import (
	"context"
	"fmt"
	"os"

	"github.com/goray/goray/actor"
	"github.com/goray/goray/objectstore"
	"github.com/goray/goray/runtime"
	"github.com/goray/goray/task"
)

// Counter is an actor: its state lives in a worker process.
type Counter struct{ n int }

// Add adds d and returns the new total.
func (c *Counter) Add(_ context.Context, d int) (int, error) {
	c.n += d
	return c.n, nil
}

// Value returns the total.
func (c *Counter) Value(context.Context) (int, error) { return c.n, nil }

// Register everything at package level, under stable names: worker processes
// run this same binary and find actor types and functions by these names.
var (
	counterType  = actor.Register("quickstart.counter", func() *Counter { return &Counter{} })
	counterAdd   = actor.Method1(counterType, "add", (*Counter).Add)
	counterValue = actor.Method0(counterType, "value", (*Counter).Value)

	square = task.Register1("quickstart.square", func(_ context.Context, x int) (int, error) {
		return x * x, nil
	})
	sum = task.Register1("quickstart.sum", func(_ context.Context, xs []int) (int, error) {
		total := 0
		for _, x := range xs {
			total += x
		}
		return total, nil
	})
)

func main() {
	if err := run(context.Background()); err != nil {
		fmt.Fprintln(os.Stderr, "quickstart:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context) error {
	// Init first: in a worker process it serves and never returns.
	if err := runtime.Init(ctx); err != nil {
		return err
	}
	defer runtime.Shutdown()

	// An actor: calls from this driver run in the order they are made.
	counter, err := actor.Spawn(ctx, counterType)
	if err != nil {
		return err
	}
	for i := 1; i <= 4; i++ {
		counterAdd.Remote(ctx, counter, objectstore.Val(i))
	}
	total, err := counterValue.Remote(ctx, counter).Get(ctx)
	if err != nil {
		return err
	}
	fmt.Println("counter after adding 1..4:", total)

	// A task: a stateless function run on a leased worker.
	sq, err := square.Remote(ctx, objectstore.Val(7)).Get(ctx)
	if err != nil {
		return err
	}
	fmt.Println("square(7):", sq)

	// Put a value, get it back.
	ref, err := objectstore.Put(ctx, []int{1, 2, 3, 4, 5})
	if err != nil {
		return err
	}
	xs, err := ref.Get(ctx)
	if err != nil {
		return err
	}
	fmt.Println("put/get:", xs)

	// A ref as an argument: the task receives the value, not the ref.
	s, err := sum.Remote(ctx, ref).Get(ctx)
	if err != nil {
		return err
	}
	fmt.Println("sum(ref):", s)

	// The result of one call as the argument of the next, without a Get in
	// between: square(square(3)).
	nested, err := square.Remote(ctx, square.Remote(ctx, objectstore.Val(3))).Get(ctx)
	if err != nil {
		return err
	}
	fmt.Println("square(square(3)):", nested)
	return nil
}
