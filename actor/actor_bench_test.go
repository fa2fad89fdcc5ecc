package actor_test

import (
	"context"
	"testing"

	"github.com/goray/goray/actor"
	"github.com/goray/goray/objectstore"
)

// benchServer is Ray's microbenchmark actor: it answers 2 bytes.
type benchServer struct{}

func (*benchServer) Small(context.Context) ([]byte, error) { return []byte("ok"), nil }

var (
	benchServerType  = actor.Register("actorbench.server", func() *benchServer { return &benchServer{} })
	benchServerSmall = actor.Method0(benchServerType, "small", (*benchServer).Small)
)

func spawnBenchServer(b *testing.B) actor.Handle[benchServer] {
	b.Helper()
	h, err := actor.Spawn(b.Context(), benchServerType)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = actor.Kill(context.Background(), h) })
	return h
}

// BenchmarkCallSync calls an actor and gets the result (1_1_actor_calls_sync).
func BenchmarkCallSync(b *testing.B) {
	ctx := b.Context()
	h := spawnBenchServer(b)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := benchServerSmall.Remote(ctx, h).Get(ctx); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkCallAsync makes 1,000 calls, then gets them all
// (1_1_actor_calls_async); one op is one call.
func BenchmarkCallAsync(b *testing.B) {
	ctx := b.Context()
	h := spawnBenchServer(b)
	const batch = 1000
	refs := make([]objectstore.Ref[[]byte], 0, batch)
	flush := func() {
		for _, r := range refs {
			if _, err := r.Get(ctx); err != nil {
				b.Fatal(err)
			}
		}
		refs = refs[:0]
	}
	b.ReportAllocs()
	for b.Loop() {
		refs = append(refs, benchServerSmall.Remote(ctx, h))
		if len(refs) == batch {
			flush()
		}
	}
	flush()
}
