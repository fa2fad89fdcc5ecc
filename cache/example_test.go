package cache_test

import (
	"context"
	"fmt"

	"github.com/goray/goray/cache"
)

func Example() {
	ctx := context.Background()
	// After runtime.Init: a cache of two shards, each holding up to 100 entries.
	c, err := cache.New[string](ctx, "example", cache.WithShards(2), cache.WithMaxEntries(100))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close()
	defer c.Destroy(ctx)

	if err := c.Set(ctx, "greeting", "hello"); err != nil {
		fmt.Println(err)
		return
	}
	v, ok, _ := c.Get(ctx, "greeting")
	fmt.Println(v, ok)

	computed := 0
	answer := func(context.Context) (string, error) { computed++; return "42", nil }
	a, _ := c.GetOrCompute(ctx, "answer", answer) // a miss: computes
	b, _ := c.GetOrCompute(ctx, "answer", answer) // a hit
	fmt.Println(a, b, computed)

	st, _ := c.Stats(ctx)
	fmt.Println(st.Total.Hits, st.Total.Misses, st.Total.Entries)
	// Output:
	// hello true
	// 42 42 1
	// 2 1 2
}
