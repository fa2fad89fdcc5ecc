package objectstore

import (
	"fmt"
	"slices"
	"testing"
)

func TestChunk(t *testing.T) {
	tests := []struct {
		items, n int
		want     []int
	}{
		{0, 3, []int{0, 0, 0}},
		{2, 5, []int{1, 1, 0, 0, 0}},
		{10, 3, []int{4, 3, 3}},
		{9, 3, []int{3, 3, 3}},
		{7, 1, []int{7}},
		{1000, 7, []int{143, 143, 143, 143, 143, 143, 142}},
	}
	for _, tc := range tests {
		t.Run(fmt.Sprintf("%d_into_%d", tc.items, tc.n), func(t *testing.T) {
			items := make([]int, tc.items)
			for i := range items {
				items[i] = i
			}
			chunks, err := Chunk(items, tc.n)
			if err != nil {
				t.Fatal(err)
			}
			var sizes []int
			var joined []int
			for _, c := range chunks {
				sizes = append(sizes, len(c))
				joined = append(joined, c...)
			}
			if !slices.Equal(sizes, tc.want) {
				t.Fatalf("sizes: got %v, want %v", sizes, tc.want)
			}
			if !slices.Equal(joined, items) && !(len(joined) == 0 && len(items) == 0) {
				t.Fatalf("chunks joined: got %v, want %v", joined, items)
			}
			if len(chunks) > 1 && cap(chunks[0]) != len(chunks[0]) {
				t.Fatalf("chunk 0 capacity: got %d, want %d (appending must not clobber chunk 1)", cap(chunks[0]), len(chunks[0]))
			}
		})
	}
	if _, err := Chunk([]int{1}, 0); err == nil {
		t.Fatal("Chunk(n=0): got nil error, want one")
	}
}
