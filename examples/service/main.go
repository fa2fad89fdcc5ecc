// Service: Go functions and a named counter actor offered to clients in
// other languages. Deploy it to a cluster under a namespace and call it from
// Python (clients/python) or Node.js (clients/node):
//
//	go build -o /tmp/service ./examples/service
//	goray deploy /tmp/service --namespace service
//
// `goray deploy` runs this program once as the deployment's driver: the
// "counter" actor it creates belongs to the deployment, so it keeps serving
// after the program exits. Run on its own (`go run ./examples/service`) it
// starts an embedded cluster and calls itself once.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/goray/goray/actor"
	"github.com/goray/goray/objectstore"
	"github.com/goray/goray/runtime"
	"github.com/goray/goray/task"
)

// Counter is the named actor clients call.
type Counter struct{ n int64 }

// Add adds d and returns the new total.
func (c *Counter) Add(_ context.Context, d int64) (int64, error) { c.n += d; return c.n, nil }

// Get returns the total.
func (c *Counter) Get(context.Context) (int64, error) { return c.n, nil }

// Reset sets the total to 0 and returns the old one.
func (c *Counter) Reset(context.Context) (int64, error) { old := c.n; c.n = 0; return old, nil }

// Person shows a struct argument: msgpack maps and JSON objects decode into
// it by the field names in the tags.
type Person struct {
	Name string `msgpack:"name" json:"name"`
	Age  int    `msgpack:"age" json:"age"`
}

// Names are the wire contract with other languages: stable, explicit strings.
var (
	counterType = actor.Register("counter", func() *Counter { return &Counter{} })
	counterAdd  = actor.Method1(counterType, "add", (*Counter).Add)
	counterGet  = actor.Method0(counterType, "get", (*Counter).Get)
	_           = actor.Method0(counterType, "reset", (*Counter).Reset)
	square      = task.Register1("square", func(_ context.Context, x int64) (int64, error) { return x * x, nil })
	_           = task.Register2("add", func(_ context.Context, a, b int64) (int64, error) { return a + b, nil })
	_           = task.Register1("sum", func(_ context.Context, xs []float64) (float64, error) { return sumOf(xs), nil })
	_           = task.Register1("greet", greet)
	_           = task.Register1("upper", func(_ context.Context, s string) (string, error) { return strings.ToUpper(s), nil })
	_           = task.Register1("size", func(_ context.Context, b []byte) (int64, error) { return int64(len(b)), nil })
	_           = task.Register1("reverse_bytes", reverseBytes)
	_           = task.Register1("fail", func(_ context.Context, msg string) (string, error) { return "", errors.New(msg) })
	counterName = "counter"
)

func sumOf(xs []float64) float64 {
	t := 0.0
	for _, x := range xs {
		t += x
	}
	return t
}

func greet(_ context.Context, p Person) (string, error) {
	return fmt.Sprintf("hello %s, %d", p.Name, p.Age), nil
}

func reverseBytes(_ context.Context, b []byte) ([]byte, error) {
	out := make([]byte, len(b))
	for i, c := range b {
		out[len(b)-1-i] = c
	}
	return out, nil
}

func main() {
	if err := run(context.Background()); err != nil {
		fmt.Fprintln(os.Stderr, "service:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context) error {
	// Init first: in a worker process it serves and never returns.
	if err := runtime.Init(ctx); err != nil {
		return err
	}
	defer runtime.Shutdown()

	// The named actor clients call. Under `goray deploy` it belongs to the
	// deployment and outlives this process.
	c, err := actor.Spawn(ctx, counterType, actor.WithName(counterName))
	if err != nil {
		return fmt.Errorf("start the counter: %w", err)
	}
	n, err := counterGet.Remote(ctx, c).Get(ctx)
	if err != nil {
		return err
	}
	sq, err := square.Remote(ctx, objectstore.Val[int64](7)).Get(ctx)
	if err != nil {
		return err
	}
	fmt.Printf("counter %q ready at %d\n", counterName, n)
	fmt.Printf("square(7): %d\n", sq)
	_ = counterAdd // called by clients
	return nil
}
