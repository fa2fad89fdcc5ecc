package objectstore_test

import (
	"bytes"
	"testing"
	"time"

	"github.com/goray/goray/objectstore"
)

// TestWriteToAGotSlice: a large []byte read on the node that stores it is a
// view of shared memory, not a copy; writing to it must neither crash the
// process nor change the object for anyone else.
func TestWriteToAGotSlice(t *testing.T) {
	ctx := testCtx(t, 30*time.Second)
	want := bytes.Repeat([]byte{7}, 4<<20)
	ref, err := objectstore.Put(ctx, want)
	if err != nil {
		t.Fatal(err)
	}
	got, err := ref.Get(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for i := range got {
		got[i] = 9
	}
	again, err := ref.Get(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(again, want) {
		t.Fatalf("the object after a reader wrote into its slice: got byte %d at 0, want it unchanged (7)", again[0])
	}
	if got[0] != 9 {
		t.Fatalf("the reader's own slice: got %d at 0, want its write (9)", got[0])
	}
}

// TestView: View reads a large []byte without a copy and a small one as it
// is; both hold the value put.
func TestView(t *testing.T) {
	ctx := testCtx(t, 30*time.Second)
	for _, size := range []int{10, 4 << 20} {
		want := bytes.Repeat([]byte{3}, size)
		ref, err := objectstore.Put(ctx, want)
		if err != nil {
			t.Fatal(err)
		}
		got, err := objectstore.View(ctx, ref)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("View of %d bytes: got %d bytes, want the %d put", size, len(got), size)
		}
	}
	if _, err := objectstore.View(ctx, objectstore.Ref[[]byte]{}); err == nil {
		t.Fatal("View of a zero Ref: got nil error, want one")
	}
}
