package files_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/goray/goray/files"
	"github.com/goray/goray/internal/testenv"
	"github.com/goray/goray/runtime"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// TestPutOpenStatListRemove runs the SDK on the embedded one-node cluster.
func TestPutOpenStatListRemove(t *testing.T) {
	ctx := testenv.Ctx(t, time.Minute)
	data := bytes.Repeat([]byte("goray files "), 600_000) // 7.2 MB: several blocks and a short last one
	info, err := files.Put(ctx, bytes.NewReader(data), files.WithReplicas(3), files.WithName("sdk/test.txt"))
	if err != nil {
		t.Fatal(err)
	}
	if want := files.Hash(sha256.Sum256(data)); info.Hash != want || info.Size != int64(len(data)) {
		t.Fatalf("put: got %s of %d bytes, want %s of %d", info.Hash, info.Size, want, len(data))
	}
	if len(info.Replicas) != 1 || info.ReplicasWanted != 3 {
		t.Fatalf("3 replicas on one node: got %d (wanted %d), want 1 (wanted 3)", len(info.Replicas), info.ReplicasWanted)
	}
	for _, ref := range []string{"sdk/test.txt", info.Hash.String(), "sha256:" + info.Hash.String()} {
		r, err := files.Open(ctx, ref)
		if err != nil {
			t.Fatalf("open %q: %v", ref, err)
		}
		got, err := io.ReadAll(r)
		r.Close()
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("read %q: got %d bytes (%v), want the %d put", ref, len(got), err, len(data))
		}
	}
	st, err := files.Stat(ctx, "sdk/test.txt")
	if err != nil || st.Hash != info.Hash || len(st.Names) != 1 || st.Names[0] != "sdk/test.txt" {
		t.Fatalf("stat: got %+v, %v; want the file named sdk/test.txt", st, err)
	}
	ls, err := files.List(ctx, "sdk/")
	if err != nil || len(ls) != 1 || ls[0].Hash != info.Hash {
		t.Fatalf("list sdk/: got %+v, %v; want the one file", ls, err)
	}
	if err := files.Remove(ctx, "sdk/test.txt"); err != nil {
		t.Fatal(err)
	}
	if _, err := files.Open(ctx, info.Hash.String()); !errors.Is(err, runtime.ErrNotFound) {
		t.Fatalf("open a removed file: got %v, want ErrNotFound", err)
	}
}

func TestBadInput(t *testing.T) {
	ctx := testenv.Ctx(t, time.Minute)
	tests := []struct {
		name string
		call func() error
		want error
	}{
		{"unknown hash", func() error { _, err := files.Open(ctx, strings.Repeat("ab", 32)); return err }, runtime.ErrNotFound},
		{"unknown name", func() error { _, err := files.Stat(ctx, "no/such"); return err }, runtime.ErrNotFound},
		{"short hash", func() error { _, err := files.Open(ctx, "sha256:abcd"); return err }, runtime.ErrInvalidArgument},
		{"empty name", func() error { _, err := files.Stat(ctx, ""); return err }, runtime.ErrInvalidArgument},
		{"dot-dot name", func() error {
			_, err := files.Put(ctx, strings.NewReader("x"), files.WithName("a/../b"))
			return err
		}, runtime.ErrInvalidArgument},
		{"negative replicas", func() error {
			_, err := files.Put(ctx, strings.NewReader("x"), files.WithReplicas(-1))
			return err
		}, runtime.ErrInvalidArgument},
		{"remove unknown", func() error { return files.Remove(ctx, "no/such") }, runtime.ErrNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.call(); !errors.Is(err, tt.want) {
				t.Fatalf("got %v, want %v", err, tt.want)
			}
		})
	}
}

func Example() {
	ctx := context.Background()
	info, err := files.Put(ctx, strings.NewReader("hello, files\n"), files.WithName("examples/hello.txt"))
	if err != nil {
		fmt.Println(err)
		return
	}
	r, err := files.Open(ctx, "examples/hello.txt")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer r.Close()
	b, _ := io.ReadAll(r)
	fmt.Printf("%s%d bytes, %d replica, hash %s...\n", b, info.Size, len(info.Replicas), info.Hash.String()[:12])
	// Output:
	// hello, files
	// 13 bytes, 1 replica, hash de87f09feb74...
}
