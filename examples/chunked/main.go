// Chunked: scatter/gather. Split a dataset into near-equal chunks, put each
// chunk once, fan the chunks out over a pool of actors, gather the results.
//
//	go run ./examples/chunked -n 100000 -actors 4
package main

import (
	"context"
	"flag"
	"fmt"
	"os"

	"github.com/goray/goray/actor"
	"github.com/goray/goray/objectstore"
	"github.com/goray/goray/runtime"
)

// Stats is what each actor computes over its chunks.
type Stats struct {
	Count int
	Sum   int64
	Min   int64
	Max   int64
}

// merge folds o into s.
func (s Stats) merge(o Stats) Stats {
	if o.Count == 0 {
		return s
	}
	if s.Count == 0 {
		return o
	}
	return Stats{Count: s.Count + o.Count, Sum: s.Sum + o.Sum, Min: min(s.Min, o.Min), Max: max(s.Max, o.Max)}
}

// Summarizer is an actor that keeps a running summary of the chunks it saw.
type Summarizer struct{ total Stats }

// Add summarizes one chunk and returns its stats.
func (a *Summarizer) Add(_ context.Context, chunk []int64) (Stats, error) {
	var s Stats
	for i, x := range chunk {
		if i == 0 {
			s.Min, s.Max = x, x
		}
		s.Count++
		s.Sum += x
		s.Min, s.Max = min(s.Min, x), max(s.Max, x)
	}
	a.total = a.total.merge(s)
	return s, nil
}

var (
	summarizer    = actor.Register("chunked.summarizer", func() *Summarizer { return &Summarizer{} })
	summarizerAdd = actor.Method1(summarizer, "add", (*Summarizer).Add)
)

func main() {
	n := flag.Int("n", 100_000, "number of items in the dataset")
	actors := flag.Int("actors", 4, "number of actors in the pool")
	flag.Parse()
	if err := run(context.Background(), *n, *actors); err != nil {
		fmt.Fprintln(os.Stderr, "chunked:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, n, actors int) error {
	if err := runtime.Init(ctx); err != nil {
		return err
	}
	defer runtime.Shutdown()
	if n < 0 || actors < 1 {
		return fmt.Errorf("need -n >= 0 and -actors >= 1, got -n %d -actors %d", n, actors)
	}

	data := make([]int64, n)
	for i := range data {
		data[i] = int64(i + 1)
	}
	// Scatter: one near-equal chunk per actor, each put once as an object.
	chunks, err := objectstore.PutChunks(ctx, data, actors)
	if err != nil {
		return err
	}
	pool := make([]actor.Handle[Summarizer], actors)
	for i := range pool {
		if pool[i], err = actor.Spawn(ctx, summarizer); err != nil {
			return err
		}
	}
	results := make([]objectstore.Ref[Stats], actors)
	for i, ch := range chunks {
		results[i] = summarizerAdd.Remote(ctx, pool[i], ch)
	}

	// Gather.
	var total Stats
	for i, r := range results {
		s, err := r.Get(ctx)
		if err != nil {
			return fmt.Errorf("chunk %d: %w", i, err)
		}
		fmt.Printf("actor %d: %d items, sum %d\n", i, s.Count, s.Sum)
		total = total.merge(s)
	}
	want := int64(n) * int64(n+1) / 2
	fmt.Printf("total: %d items, sum %d, min %d, max %d\n", total.Count, total.Sum, total.Min, total.Max)
	if total.Count != n || total.Sum != want {
		return fmt.Errorf("gathered %d items summing to %d, want %d summing to %d", total.Count, total.Sum, n, want)
	}
	fmt.Println("ok: the gathered result matches the dataset")
	return nil
}
