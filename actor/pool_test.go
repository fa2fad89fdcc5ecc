package actor_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/goray/goray/actor"
	"github.com/goray/goray/internal/testwait"
	"github.com/goray/goray/objectstore"
	"github.com/goray/goray/runtime"
)

// PoolWorker is the pool tests' actor.
type PoolWorker struct{ id int64 }

// Double doubles x; a negative x fails.
func (w *PoolWorker) Double(_ context.Context, x int) (int, error) {
	if x < 0 {
		return 0, fmt.Errorf("negative input %d", x)
	}
	return 2 * x, nil
}

// Sum adds xs up.
func (w *PoolWorker) Sum(_ context.Context, xs []int) (int, error) {
	s := 0
	for _, x := range xs {
		s += x
	}
	return s, nil
}

// Nap sleeps ms milliseconds and returns the actor's identity.
func (w *PoolWorker) Nap(_ context.Context, ms int) (int64, error) {
	time.Sleep(time.Duration(ms) * time.Millisecond) // the work itself
	return w.id, nil
}

var (
	poolWorkerType   = actor.Register("actortest.pool_worker", func() *PoolWorker { return &PoolWorker{id: rand.Int64()} })
	poolWorkerDouble = actor.Method1(poolWorkerType, "double", (*PoolWorker).Double)
	poolWorkerSum    = actor.Method1(poolWorkerType, "sum", (*PoolWorker).Sum)
	poolWorkerNap    = actor.Method1(poolWorkerType, "nap", (*PoolWorker).Nap)
)

func newPool(t *testing.T, n int) *actor.Pool[PoolWorker] {
	t.Helper()
	ctx := t.Context()
	hs := make([]actor.Handle[PoolWorker], n)
	for i := range hs {
		h, err := actor.Spawn(ctx, poolWorkerType)
		if err != nil {
			t.Fatalf("spawn: %v", err)
		}
		hs[i] = h
		t.Cleanup(func() { _ = actor.Kill(context.Background(), h) })
	}
	return actor.NewPool(hs...)
}

func vals[A any](xs ...A) []objectstore.Arg[A] {
	out := make([]objectstore.Arg[A], len(xs))
	for i, x := range xs {
		out[i] = objectstore.Val(x)
	}
	return out
}

func TestPoolMapInOrderWithPerItemErrors(t *testing.T) {
	ctx := t.Context()
	pool := newPool(t, 3)
	in := []int{1, 2, 3, -4, 5, 6, 7, 8, 9, 10}
	var got []actor.Result[int]
	for r := range actor.Map(ctx, pool, poolWorkerDouble.Remote, vals(in...)) {
		got = append(got, r)
	}
	if len(got) != len(in) {
		t.Fatalf("got %d results, want %d", len(got), len(in))
	}
	for i, r := range got {
		if r.Index != i {
			t.Errorf("result %d has index %d: want input order", i, r.Index)
		}
		if in[i] < 0 {
			if !errors.Is(r.Err, runtime.ErrTaskFailed) {
				t.Errorf("item %d (%d): got err %v, want ErrTaskFailed", i, in[i], r.Err)
			}
			continue
		}
		if r.Err != nil || r.Value != 2*in[i] {
			t.Errorf("item %d: got %d, %v; want %d", i, r.Value, r.Err, 2*in[i])
		}
	}
	if f := pool.InFlight(); slices.Max(f) != 0 {
		t.Errorf("in flight after Map: %v, want all 0", f)
	}
}

func TestPoolMapUnorderedYieldsAsCallsFinish(t *testing.T) {
	ctx := t.Context()
	pool := newPool(t, 3)
	naps := []int{600, 20, 250}
	var order []int
	for r := range actor.MapUnordered(ctx, pool, poolWorkerNap.Remote, vals(naps...)) {
		if r.Err != nil {
			t.Fatalf("item %d: %v", r.Index, r.Err)
		}
		order = append(order, r.Index)
	}
	if !slices.Equal(order, []int{1, 2, 0}) {
		t.Errorf("got order %v, want [1 2 0] (shortest nap first)", order)
	}
}

func TestPoolSpreadsOverLeastBusyActors(t *testing.T) {
	ctx := t.Context()
	pool := newPool(t, 3)
	// Three long calls at once must go to three distinct actors: each call
	// goes to the actor with the fewest in flight.
	ids := map[int64]int{}
	for r := range actor.Map(ctx, pool, poolWorkerNap.Remote, vals(200, 200, 200)) {
		if r.Err != nil {
			t.Fatal(r.Err)
		}
		ids[r.Value]++
	}
	if len(ids) != 3 {
		t.Errorf("3 concurrent calls went to %d actors (%v), want 3", len(ids), ids)
	}
	// A slow actor gets fewer calls: one 400 ms call ties up an actor while
	// the others serve the short ones.
	pool2 := newPool(t, 2)
	counts := map[int64]int{}
	for r := range actor.Map(ctx, pool2, poolWorkerNap.Remote, vals(400, 10, 10, 10, 10, 10, 10, 10)) {
		if r.Err != nil {
			t.Fatal(r.Err)
		}
		counts[r.Value]++
	}
	if len(counts) != 2 || slices.Max(mapValues(counts)) < 6 {
		t.Errorf("calls per actor %v: want the idle actor to take the short calls while the other is busy", counts)
	}
}

func mapValues(m map[int64]int) []int {
	out := make([]int, 0, len(m))
	for _, v := range m {
		out = append(out, v)
	}
	return out
}

func TestPoolMaxInFlight(t *testing.T) {
	ctx := t.Context()
	pool := newPool(t, 2).SetMaxInFlight(3)
	q := actor.NewQueue(pool, poolWorkerNap.Remote)
	for range 6 {
		q.Submit(ctx, objectstore.Val(300))
	}
	testwait.Eventually(t, 5*time.Second, "in flight [3 3]", func() bool { return slices.Equal(pool.InFlight(), []int{3, 3}) })
	for q.HasNext() {
		if r, err := q.GetNext(ctx); err != nil || r.Err != nil {
			t.Fatal(err, r.Err)
		}
	}
}

func TestPoolQueueSubmitGetNext(t *testing.T) {
	ctx := t.Context()
	pool := newPool(t, 2)
	q := actor.NewQueue(pool, poolWorkerDouble.Remote)
	if q.HasNext() {
		t.Fatal("HasNext on an empty queue")
	}
	if _, err := q.GetNext(ctx); !errors.Is(err, runtime.ErrInvalidArgument) {
		t.Fatalf("GetNext on an empty queue: %v, want ErrInvalidArgument", err)
	}
	for i, x := range []int{1, 2, -3, 4, 5} {
		if idx := q.Submit(ctx, objectstore.Val(x)); idx != i {
			t.Fatalf("Submit returned index %d, want %d", idx, i)
		}
	}
	for i, want := range []int{2, 4} {
		r, err := q.GetNext(ctx)
		if err != nil || r.Err != nil || r.Index != i || r.Value != want {
			t.Fatalf("GetNext: %+v, %v; want index %d value %d", r, err, i, want)
		}
	}
	r, err := q.GetNext(ctx)
	if err != nil || r.Index != 2 || !errors.Is(r.Err, runtime.ErrTaskFailed) {
		t.Fatalf("GetNext of the failing item: %+v, %v", r, err)
	}
	// The rest, unordered, then the queue is empty.
	seen := map[int]int{}
	for q.HasNext() {
		r, err := q.GetNextUnordered(ctx)
		if err != nil || r.Err != nil {
			t.Fatal(err, r.Err)
		}
		seen[r.Index] = r.Value
	}
	if len(seen) != 2 || seen[3] != 8 || seen[4] != 10 {
		t.Errorf("unordered results %v, want map[3:8 4:10]", seen)
	}
	// Mixed: items returned unordered are skipped by GetNext.
	for _, x := range []int{100, 1, 1} {
		q.Submit(ctx, objectstore.Val(x))
	}
	u, err := q.GetNextUnordered(ctx)
	if err != nil || u.Err != nil {
		t.Fatal(err, u.Err)
	}
	var rest []int
	for q.HasNext() {
		r, err := q.GetNext(ctx)
		if err != nil || r.Err != nil {
			t.Fatal(err, r.Err)
		}
		rest = append(rest, r.Index)
	}
	if len(rest) != 2 || slices.Contains(rest, u.Index) || !slices.IsSorted(rest) {
		t.Errorf("GetNext after GetNextUnordered returned %v (unordered took %d)", rest, u.Index)
	}
	// A GetNext whose ctx ends leaves the item next.
	q.Submit(ctx, objectstore.Val(7))
	short, cancel := context.WithTimeout(ctx, time.Nanosecond)
	defer cancel()
	<-short.Done()
	if _, err := q.GetNext(short); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("GetNext with an ended ctx: %v", err)
	}
	if r, err := q.GetNext(ctx); err != nil || r.Value != 14 {
		t.Errorf("GetNext after a timed-out one: %+v, %v", r, err)
	}
}

func TestPoolMapChunks(t *testing.T) {
	ctx := t.Context()
	pool := newPool(t, 3)
	items := make([]int, 1000)
	want := 0
	for i := range items {
		items[i] = i
		want += i
	}
	results, err := actor.MapChunks(ctx, pool, poolWorkerSum.Remote, items, 7)
	if err != nil {
		t.Fatal(err)
	}
	total, n := 0, 0
	for r := range results {
		if r.Err != nil || r.Index != n {
			t.Fatalf("chunk %d: %+v", n, r)
		}
		total += r.Value
		n++
	}
	if n != 7 || total != want {
		t.Errorf("%d chunks summing to %d, want 7 summing to %d", n, total, want)
	}
	// n < 1: one chunk per actor.
	results, err = actor.MapChunks(ctx, pool, poolWorkerSum.Remote, items, 0)
	if err != nil {
		t.Fatal(err)
	}
	n = 0
	for range results {
		n++
	}
	if n != 3 {
		t.Errorf("got %d chunks, want one per actor (3)", n)
	}
}

func TestPoolSkipsDeadActors(t *testing.T) {
	ctx := t.Context()
	pool := newPool(t, 2)
	if err := actor.Kill(ctx, pool.Handles()[0]); err != nil {
		t.Fatal(err)
	}
	failed, ok := 0, 0
	for r := range actor.Map(ctx, pool, poolWorkerDouble.Remote, vals(1, 2, 3, 4, 5, 6)) {
		switch {
		case r.Err == nil:
			ok++
		case errors.Is(r.Err, runtime.ErrActorDied):
			failed++
		default:
			t.Errorf("item %d: %v", r.Index, r.Err)
		}
	}
	if failed > 1 || ok+failed != 6 {
		t.Errorf("%d ok, %d failed with ErrActorDied: want at most the one call sent to the dead actor to fail", ok, failed)
	}
	// Every actor dead: the items fail, nothing hangs.
	if err := actor.Kill(ctx, pool.Handles()[1]); err != nil {
		t.Fatal(err)
	}
	for r := range actor.Map(ctx, pool, poolWorkerDouble.Remote, vals(1, 2, 3)) {
		if !errors.Is(r.Err, runtime.ErrActorDied) {
			t.Errorf("item %d with every actor dead: %v, want ErrActorDied", r.Index, r.Err)
		}
	}
	empty := actor.NewPool[PoolWorker]()
	for r := range actor.Map(ctx, empty, poolWorkerDouble.Remote, vals(1)) {
		if !errors.Is(r.Err, runtime.ErrInvalidArgument) {
			t.Errorf("empty pool: %v, want ErrInvalidArgument", r.Err)
		}
	}
}

func TestPoolBreakStopsSubmitting(t *testing.T) {
	ctx := t.Context()
	pool := newPool(t, 2)
	n := 0
	for r := range actor.Map(ctx, pool, poolWorkerNap.Remote, vals(50, 50, 50, 50, 50, 50, 50, 50)) {
		if r.Err != nil {
			t.Fatal(r.Err)
		}
		n++
		break
	}
	testwait.Eventually(t, 5*time.Second, "nothing in flight after break", func() bool { return slices.Max(pool.InFlight()) == 0 })
	// The pool still works.
	for r := range actor.Map(ctx, pool, poolWorkerDouble.Remote, vals(21)) {
		if r.Err != nil || r.Value != 42 {
			t.Errorf("after break: %+v", r)
		}
	}
}

// Example of mapping a method over a pool of actors: each call goes to the
// least busy actor, results come back in input order, and a failing item
// does not stop the others.
func ExampleMap() {
	ctx := context.Background()
	var hs []actor.Handle[PoolWorker]
	for range 3 {
		h, err := actor.Spawn(ctx, poolWorkerType)
		if err != nil {
			fmt.Println(err)
			return
		}
		defer actor.Kill(ctx, h)
		hs = append(hs, h)
	}
	pool := actor.NewPool(hs...)
	inputs := []objectstore.Arg[int]{objectstore.Val(1), objectstore.Val(-2), objectstore.Val(3)}
	for r := range actor.Map(ctx, pool, poolWorkerDouble.Remote, inputs) {
		if r.Err != nil {
			fmt.Println(r.Index, "failed:", errors.Is(r.Err, runtime.ErrTaskFailed))
			continue
		}
		fmt.Println(r.Index, r.Value)
	}

	// Scatter a dataset in near-equal chunks, each put once, one per actor.
	data := []int{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}
	sums, err := actor.MapChunks(ctx, pool, poolWorkerSum.Remote, data, 0)
	if err != nil {
		fmt.Println(err)
		return
	}
	for r := range sums {
		fmt.Println("chunk", r.Index, "sum", r.Value)
	}
	// Output:
	// 0 2
	// 1 failed: true
	// 2 6
	// chunk 0 sum 10
	// chunk 1 sum 18
	// chunk 2 sum 27
}
