package bench

import (
	"context"
	"fmt"
	"os"

	"github.com/goray/goray/cache"
	icache "github.com/goray/goray/internal/cache"
)

// The cache workloads: one process (the driver) against a distributed cache
// of one shard per node of the cluster (two raylet processes by default),
// on a space of cacheKeys keys holding small values. The sync figures are
// one operation at a time, compared with a synchronous gRPC round trip to
// another process; the async ones send sz.batch operations and then wait
// for all of them (pipelined over the shards' streams), compared with
// pipelined gRPC echoes.
const (
	cacheKeys     = 1000
	goalCacheSync = "≥ 0.8 × " + grpcPingPongSeq
)

// cacheSetup starts a job and creates a cache with every key set, and
// hands op its keys.
func cacheSetup(f func(c *cache.Cache[int], keys []string) op) func(context.Context, *runner) (op, func(), error) {
	return func(ctx context.Context, r *runner) (op, func(), error) {
		end, err := r.job(ctx)
		if err != nil {
			return nil, nil, err
		}
		// GORAY_BENCH_CACHE_RAW=1 turns the cache's raw synchronous path
		// on (it is off by default), for comparison.
		icache.SetRawPath(os.Getenv("GORAY_BENCH_CACHE_RAW") == "1")
		c, err := cache.New[int](ctx, "bench-cache")
		if err != nil {
			end()
			return nil, nil, err
		}
		keys := make([]string, cacheKeys)
		for i := range keys {
			keys[i] = fmt.Sprintf("key-%d", i)
			if err := c.Set(ctx, keys[i], i); err != nil {
				c.Close()
				end()
				return nil, nil, err
			}
		}
		return f(c, keys), func() {
			c.Close()
			end() // the job's end takes its shards with it
		}, nil
	}
}

func cacheSpecs(sz sizes) []*spec {
	note := func(what string) string {
		return fmt.Sprintf("%s, small values over %d keys, one shard per node", what, cacheKeys)
	}
	return []*spec{
		{name: "cache_get_sync", unit: UnitOps, per: 1, baseline: grpcPingPongSeq, goal: goalCacheSync,
			note: note("one Get at a time (hits)"),
			setup: cacheSetup(func(c *cache.Cache[int], keys []string) op {
				i := 0
				return func(ctx context.Context, _ *stopwatch) error {
					i++
					_, ok, err := c.Get(ctx, keys[i%len(keys)])
					if err == nil && !ok {
						err = fmt.Errorf("cache_get_sync: key %q missed", keys[i%len(keys)])
					}
					return err
				}
			})},
		{name: "cache_set_sync", unit: UnitOps, per: 1, baseline: grpcPingPongSeq, goal: goalCacheSync,
			note: note("one Set at a time"),
			setup: cacheSetup(func(c *cache.Cache[int], keys []string) op {
				i := 0
				return func(ctx context.Context, _ *stopwatch) error {
					i++
					return c.Set(ctx, keys[i%len(keys)], i)
				}
			})},
		{name: "cache_get_async", unit: UnitOps, per: float64(sz.batch), baseline: grpcPipelined,
			note: note(fmt.Sprintf("%d GetAsync, then wait for all", sz.batch)),
			setup: cacheSetup(func(c *cache.Cache[int], keys []string) op {
				calls := make([]*cache.GetCall[int], sz.batch)
				return func(ctx context.Context, _ *stopwatch) error {
					for i := range calls {
						calls[i] = c.GetAsync(ctx, keys[i%len(keys)])
					}
					for _, call := range calls {
						if _, _, err := call.Wait(ctx); err != nil {
							return err
						}
					}
					return nil
				}
			})},
		{name: "cache_set_async", unit: UnitOps, per: float64(sz.batch), baseline: grpcPipelined,
			note: note(fmt.Sprintf("%d SetAsync, then wait for all", sz.batch)),
			setup: cacheSetup(func(c *cache.Cache[int], keys []string) op {
				calls := make([]*cache.SetCall, sz.batch)
				n := 0
				return func(ctx context.Context, _ *stopwatch) error {
					for i := range calls {
						n++
						calls[i] = c.SetAsync(ctx, keys[i%len(keys)], n)
					}
					for _, call := range calls {
						if err := call.Wait(ctx); err != nil {
							return err
						}
					}
					return nil
				}
			})},
	}
}
