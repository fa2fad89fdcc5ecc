package goraytest_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/goray/goray/actor"
	"github.com/goray/goray/objectstore"
	"github.com/goray/goray/runtime"
	"github.com/goray/goray/runtime/goraytest"

	"github.com/goray/goray/internal/testenv"
)

// Counter is the actor under test.
type Counter struct{ n int }

// Add adds d and returns the total.
func (c *Counter) Add(_ context.Context, d int) (int, error) {
	if d < 0 {
		return 0, errors.New("counter: cannot add a negative number")
	}
	c.n += d
	return c.n, nil
}

// Registered at package level, so that the worker processes (this test
// binary started by the embedded raylet) have them too.
var (
	counterType = actor.Register("goraytest_example.counter", func() *Counter { return &Counter{} })
	counterAdd  = actor.Method1(counterType, "add", (*Counter).Add)
)

// In a package of your own:
//
//	func TestMain(m *testing.M) { goraytest.Main(m) }
//
// goray's own tests add a goroutine leak check after the cluster stopped
// (internal/testenv.Main, built on goraytest.Run).
func TestMain(m *testing.M) { testenv.Main(m) }

func TestCounterAdds(t *testing.T) {
	ctx := goraytest.Context(t, 30*time.Second)
	h := goraytest.Spawn(t, counterType)
	for i, want := range []int{2, 5, 9} {
		got, err := counterAdd.Remote(ctx, h, objectstore.Val(i+2)).Get(ctx)
		if err != nil || got != want {
			t.Fatalf("add %d: got %d, %v; want %d, nil", i+2, got, err, want)
		}
	}
}

func TestCounterRefusesNegatives(t *testing.T) {
	ctx := goraytest.Context(t, 30*time.Second)
	h := goraytest.Spawn(t, counterType)
	_, err := counterAdd.Remote(ctx, h, objectstore.Val(-1)).Get(ctx)
	if !errors.Is(err, runtime.ErrTaskFailed) {
		t.Fatalf("add -1: got %v, want ErrTaskFailed", err)
	}
}

// An actor tested against the embedded cluster goraytest.Main started.
func Example() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	h, err := actor.Spawn(ctx, counterType)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer actor.Kill(ctx, h)
	counterAdd.Remote(ctx, h, objectstore.Val(3))
	total, err := counterAdd.Remote(ctx, h, objectstore.Val(4)).Get(ctx)
	fmt.Println(total, err)
	// Output: 7 <nil>
}
