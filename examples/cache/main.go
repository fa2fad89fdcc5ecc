// Cache: a batch job whose tasks share a distributed LRU cache. Many tasks
// need the same expensive values; with cache.GetOrCompute each value is
// computed once across the cluster, whichever task asks first, and every
// other task reads it from the cache.
//
//	go run ./examples/cache -tasks 100 -items 50 -distinct 100
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"sync"

	"github.com/goray/goray/cache"
	"github.com/goray/goray/objectstore"
	"github.com/goray/goray/runtime"
	"github.com/goray/goray/task"
)

const cacheName = "examples.cache.collatz"

// collatzSteps is the expensive function: the number of Collatz steps from
// n to 1, recomputed the slow way a thousand times.
func collatzSteps(n int) int {
	steps := 0
	for range 1000 {
		steps = 0
		for x := n; x != 1; steps++ {
			if x%2 == 0 {
				x /= 2
			} else {
				x = 3*x + 1
			}
		}
	}
	return steps
}

// Result is what a task reports.
type Result struct {
	Sum      int // the sum of the values of its items
	Computed int // how many of them this task computed (the rest were cached)
}

// shared is this process's handle of the cache, opened on first use.
var shared struct {
	once sync.Once
	c    *cache.Cache[int]
	err  error
}

func openCache(ctx context.Context) (*cache.Cache[int], error) {
	shared.once.Do(func() { shared.c, shared.err = cache.Open[int](ctx, cacheName) })
	return shared.c, shared.err
}

// score sums collatzSteps over items, through the shared cache.
func score(ctx context.Context, items []int) (Result, error) {
	c, err := openCache(ctx)
	if err != nil {
		return Result{}, err
	}
	var r Result
	for _, n := range items {
		v, err := c.GetOrCompute(ctx, fmt.Sprint(n), func(context.Context) (int, error) {
			r.Computed++
			return collatzSteps(n), nil
		})
		if err != nil {
			return Result{}, err
		}
		r.Sum += v
	}
	return r, nil
}

var scoreTask = task.Register1("examples.cache.score", score)

func main() {
	tasks := flag.Int("tasks", 100, "number of tasks")
	items := flag.Int("items", 50, "items per task")
	distinct := flag.Int("distinct", 100, "distinct items (values to compute)")
	flag.Parse()
	if err := run(context.Background(), *tasks, *items, *distinct, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "cache:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, tasks, items, distinct int, out io.Writer) error {
	if err := runtime.Init(ctx); err != nil {
		return err
	}
	defer runtime.Shutdown()
	if tasks < 1 || items < 1 || distinct < 1 {
		return fmt.Errorf("need -tasks, -items and -distinct >= 1, got %d, %d, %d", tasks, items, distinct)
	}

	// Room for every distinct value on each shard, so nothing is evicted
	// and each value is computed exactly once.
	c, err := cache.New[int](ctx, cacheName, cache.WithShards(2), cache.WithMaxEntries(distinct))
	if err != nil {
		return err
	}
	defer c.Close()
	defer c.Destroy(context.WithoutCancel(ctx))

	// Task i scores items i, i+7, i+14, ... (mod distinct): tasks overlap.
	batches := make([][]int, tasks)
	want, seen := 0, map[int]bool{}
	for i := range batches {
		for j := range items {
			n := 1 + (i+7*j)%distinct
			batches[i] = append(batches[i], n)
			want += collatzSteps(n)
			seen[n] = true
		}
	}
	refs := make([]objectstore.Ref[Result], tasks)
	for i, b := range batches {
		refs[i] = scoreTask.Remote(ctx, objectstore.Val(b))
	}
	sum, computed := 0, 0
	for _, r := range refs {
		res, err := r.Get(ctx)
		if err != nil {
			return err
		}
		sum += res.Sum
		computed += res.Computed
	}
	st, err := c.Stats(ctx)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "tasks: %d, lookups: %d, distinct values: %d\n", tasks, tasks*items, len(seen))
	fmt.Fprintf(out, "computed: %d (once per distinct value, across all tasks)\n", computed)
	fmt.Fprintf(out, "cache: %d hits, %d misses, %d entries over %d shards\n", st.Total.Hits, st.Total.Misses, st.Total.Entries, len(st.Shards))
	if sum != want {
		return fmt.Errorf("sum of the tasks' results: got %d, want %d", sum, want)
	}
	fmt.Fprintln(out, "ok: the results match a local computation")

	// LRU: a cache of 10 entries keeps the 10 most recently used keys.
	small, err := cache.New[int](ctx, cacheName+".small", cache.WithShards(1), cache.WithMaxEntries(10))
	if err != nil {
		return err
	}
	defer small.Close()
	defer small.Destroy(context.WithoutCancel(ctx))
	for i := range 20 {
		if i >= 10 {
			// A read keeps key 0 recently used: it is never the one evicted.
			if _, _, err := small.Get(ctx, "0"); err != nil {
				return err
			}
		}
		if err := small.Set(ctx, fmt.Sprint(i), i); err != nil {
			return err
		}
	}
	var kept []int
	for i := range 20 {
		if _, ok, err := small.Get(ctx, fmt.Sprint(i)); err != nil {
			return err
		} else if ok {
			kept = append(kept, i)
		}
	}
	sst, err := small.Stats(ctx)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "lru: kept keys %v of 0..19, %d evicted\n", kept, sst.Total.Evictions)
	return nil
}
