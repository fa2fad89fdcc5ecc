package objectstore_test

import (
	"fmt"
	"testing"

	"github.com/goray/goray/objectstore"
)

// BenchmarkPut puts a small value (single_client_put_calls) and a large one
// (through the node's store).
func BenchmarkPut(b *testing.B) {
	ctx := b.Context()
	b.Run("small", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := objectstore.Put(ctx, 0); err != nil {
				b.Fatal(err)
			}
		}
	})
	for _, size := range []int{1 << 20, 16 << 20} {
		data := make([]byte, size)
		b.Run(fmt.Sprintf("%dMiB", size>>20), func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(size))
			for b.Loop() {
				if _, err := objectstore.Put(ctx, data); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkGet gets a small value already put (single_client_get_calls) and
// a large one from the node's store.
func BenchmarkGet(b *testing.B) {
	ctx := b.Context()
	b.Run("small", func(b *testing.B) {
		ref, err := objectstore.Put(ctx, 0)
		if err != nil {
			b.Fatal(err)
		}
		b.ReportAllocs()
		for b.Loop() {
			if _, err := ref.Get(ctx); err != nil {
				b.Fatal(err)
			}
		}
	})
	for _, size := range []int{1 << 20, 16 << 20} {
		ref, err := objectstore.Put(ctx, make([]byte, size))
		if err != nil {
			b.Fatal(err)
		}
		b.Run(fmt.Sprintf("%dMiB", size>>20), func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(size))
			for b.Loop() {
				if _, err := ref.Get(ctx); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
