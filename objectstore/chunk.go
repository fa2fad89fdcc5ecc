package objectstore

import (
	"context"
	"fmt"
)

// Chunk splits items into n chunks in order, whose sizes differ by at most
// one: the first len(items)%n chunks hold one more. With fewer items than n
// some chunks are empty; empty input gives n empty chunks. n < 1 is an error.
// Chunks share items' backing array.
func Chunk[T any](items []T, n int) ([][]T, error) {
	if n < 1 {
		return nil, fmt.Errorf("objectstore.Chunk: need at least 1 chunk, got %d", n)
	}
	out := make([][]T, n)
	size, extra := len(items)/n, len(items)%n
	start := 0
	for i := range out {
		end := start + size
		if i < extra {
			end++
		}
		out[i] = items[start:end:end]
		start = end
	}
	return out, nil
}

// PutChunks splits items into n near-equal chunks (see Chunk) and puts each
// as one object, so a fan-out over n actors or tasks ships each chunk once.
func PutChunks[T any](ctx context.Context, items []T, n int) ([]Ref[[]T], error) {
	chunks, err := Chunk(items, n)
	if err != nil {
		return nil, err
	}
	refs := make([]Ref[[]T], len(chunks))
	for i, ch := range chunks {
		if refs[i], err = Put(ctx, ch); err != nil {
			return nil, fmt.Errorf("put chunk %d of %d: %w", i+1, n, err)
		}
	}
	return refs, nil
}
