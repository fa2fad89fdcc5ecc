package task_test

import (
	"context"
	"testing"

	"github.com/goray/goray/objectstore"
	"github.com/goray/goray/task"
)

// benchSmall is Ray's small_value task: it returns 2 bytes.
var benchSmall = task.Register0("taskbench.small", func(context.Context) ([]byte, error) { return []byte("ok"), nil })

// BenchmarkSubmitGet submits one small task and gets its result
// (single_client_tasks_sync).
func BenchmarkSubmitGet(b *testing.B) {
	ctx := b.Context()
	if _, err := benchSmall.Remote(ctx).Get(ctx); err != nil { // lease a worker first
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := benchSmall.Remote(ctx).Get(ctx); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkSubmitAsync submits 100 small tasks, then gets them all
// (single_client_tasks_async); one op is one task.
func BenchmarkSubmitAsync(b *testing.B) {
	ctx := b.Context()
	const batch = 100
	refs := make([]objectstore.Ref[[]byte], batch)
	b.ReportAllocs()
	n := 0
	for b.Loop() {
		refs[n] = benchSmall.Remote(ctx)
		n++
		if n == batch {
			for _, r := range refs {
				if _, err := r.Get(ctx); err != nil {
					b.Fatal(err)
				}
			}
			n = 0
		}
	}
	for _, r := range refs[:n] {
		if _, err := r.Get(ctx); err != nil {
			b.Fatal(err)
		}
	}
}
