package cache_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/goray/goray/actor"
	"github.com/goray/goray/cache"
	icache "github.com/goray/goray/internal/cache"
	"github.com/goray/goray/objectstore"
)

// echo is an actor answering its argument: the bare actor call a cache
// operation is built on, for comparison.
type echo struct{}

func (*echo) Echo(_ context.Context, s string) (string, error) { return s, nil }

var (
	echoType = actor.Register("cachebench.echo", func() *echo { return &echo{} })
	echoEcho = actor.Method1(echoType, "echo", (*echo).Echo)
)

func benchCache(b *testing.B) (*cache.Cache[int], []string) {
	b.Helper()
	ctx := b.Context()
	c, err := cache.New[int](ctx, fmt.Sprintf("bench-%d", time.Now().UnixNano()), cache.WithShards(1))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = c.Destroy(context.Background()); c.Close() })
	keys := make([]string, 1000)
	for i := range keys {
		keys[i] = fmt.Sprint("key-", i)
		if err := c.Set(ctx, keys[i], i); err != nil {
			b.Fatal(err)
		}
	}
	return c, keys
}

// BenchmarkActorEcho is the bare actor call with a small string argument.
func BenchmarkActorEcho(b *testing.B) {
	ctx := b.Context()
	h, err := actor.Spawn(ctx, echoType)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = actor.Kill(context.Background(), h) })
	b.ReportAllocs()
	for b.Loop() {
		if _, err := echoEcho.Remote(ctx, h, objectstore.Val("key-1")).Get(ctx); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkGet is one cache Get at a time (hits).
func BenchmarkGet(b *testing.B) {
	ctx := b.Context()
	c, keys := benchCache(b)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		i++
		if _, ok, err := c.Get(ctx, keys[i%len(keys)]); err != nil || !ok {
			b.Fatal(ok, err)
		}
	}
}

// BenchmarkSet is one cache Set at a time.
func BenchmarkSet(b *testing.B) {
	ctx := b.Context()
	c, keys := benchCache(b)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		i++
		if err := c.Set(ctx, keys[i%len(keys)], i); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkActorEchoAsync is 1000 bare actor calls in flight, then their
// results (per call).
func BenchmarkActorEchoAsync(b *testing.B) {
	ctx := b.Context()
	h, err := actor.Spawn(ctx, echoType)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = actor.Kill(context.Background(), h) })
	b.ReportAllocs()
	refs := make([]objectstore.Ref[string], 1000)
	for b.Loop() {
		for i := range refs {
			refs[i] = echoEcho.Remote(ctx, h, objectstore.Val("key-1"))
		}
		for _, r := range refs {
			if _, err := r.Get(ctx); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(refs)), "ns/call")
}

// BenchmarkGetAsync is 1000 GetAsync in flight, then their answers.
func BenchmarkGetAsync(b *testing.B) {
	ctx := b.Context()
	c, keys := benchCache(b)
	b.ReportAllocs()
	calls := make([]*cache.GetCall[int], 1000)
	for b.Loop() {
		for i := range calls {
			calls[i] = c.GetAsync(ctx, keys[i])
		}
		for _, call := range calls {
			if _, ok, err := call.Wait(ctx); err != nil || !ok {
				b.Fatal(ok, err)
			}
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(calls)), "ns/call")
}

// BenchmarkGetRaw is BenchmarkGet with the raw synchronous path on (it is
// off by default).
func BenchmarkGetRaw(b *testing.B) {
	icache.SetRawPath(true)
	b.Cleanup(func() { icache.SetRawPath(false) })
	BenchmarkGet(b)
}
