package runtime_test

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/goray/goray/actor"
	"github.com/goray/goray/internal/testenv"
	"github.com/goray/goray/objectstore"
	"github.com/goray/goray/runtime"
	"github.com/goray/goray/task"
)

func TestMain(m *testing.M) { testenv.Main(m) }

type Echo struct{}

func (*Echo) Echo(_ context.Context, s string) (string, error) { return s, nil }

var (
	echoType = actor.Register("runtimetest.echo", func() *Echo { return &Echo{} })
	echoEcho = actor.Method1(echoType, "echo", (*Echo).Echo)
	double   = task.Register1("runtimetest.double", func(_ context.Context, x int) (int, error) { return 2 * x, nil })
)

// One scheduling option value configures an actor and a task alike.
func ExampleWithDemand() {
	ctx := context.Background()
	oneCPU := runtime.WithDemand(map[string]float64{"CPU": 1})

	h, err := actor.Spawn(ctx, echoType, oneCPU)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer actor.Kill(ctx, h)
	s, err := echoEcho.Remote(ctx, h, objectstore.Val("hello")).Get(ctx)
	fmt.Println(s, err)

	n, err := double.Remote(ctx, objectstore.Val(21), oneCPU).Get(ctx)
	fmt.Println(n, err)
	// Output:
	// hello <nil>
	// 42 <nil>
}

// WithFailFast with a demand no node can ever fit: the actor and the task
// both fail at once with ErrInfeasible instead of waiting for such a node.
func ExampleWithFailFast() {
	ctx := context.Background()
	never := []runtime.SchedulingOption{
		runtime.WithDemand(map[string]float64{"runtimetest.unobtainium": 1}),
		runtime.WithFailFast(),
	}

	_, err := actor.Spawn(ctx, echoType, never[0], never[1])
	fmt.Println("actor infeasible:", errors.Is(err, runtime.ErrInfeasible))

	_, err = double.Remote(ctx, objectstore.Val(1), never[0], never[1]).Get(ctx)
	fmt.Println("task infeasible:", errors.Is(err, runtime.ErrInfeasible))
	// Output:
	// actor infeasible: true
	// task infeasible: true
}
