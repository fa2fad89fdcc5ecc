package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/goray/goray/internal/embed"
	"github.com/goray/goray/internal/errs"
)

// TestFilesCommand runs `goray files put|stat|ls|get|rm` against a real
// head with a node.
func TestFilesCommand(t *testing.T) {
	ctx := context.Background()
	hc := embed.Config{Head: true}
	hc.Resources = map[string]float64{"CPU": 1}
	head, err := embed.Start(ctx, hc)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(head.Close)
	t.Setenv("GORAY_TOKEN", head.Token())
	dir := t.TempDir()
	src := filepath.Join(dir, "in.bin")
	data := bytes.Repeat([]byte{1, 2, 3, 4, 5}, 3<<20) // 15 MiB
	if err := os.WriteFile(src, data, 0o600); err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("%x", sha256.Sum256(data))
	addr := []string{"--address", head.Address()}
	files := func(args ...string) (string, error) {
		var out bytes.Buffer
		err := run(ctx, append([]string{"files", args[0]}, append(addr, args[1:]...)...), &out)
		return out.String(), err
	}
	out, err := files("put", "--replicas", "2", "--name", "cli/in.bin", src)
	if err != nil || strings.TrimSpace(out) != want {
		t.Fatalf("files put: got %q, %v; want the hash %s", out, err, want)
	}
	if out, err = files("stat", "cli/in.bin"); err != nil || !strings.Contains(out, want) || !strings.Contains(out, "replicas: 1 of 2 wanted") {
		t.Fatalf("files stat: got %q, %v; want the hash and 1 of 2 replicas", out, err)
	}
	if out, err = files("ls", "cli/"); err != nil || !strings.Contains(out, want) || !strings.Contains(out, "cli/in.bin") {
		t.Fatalf("files ls: got %q, %v; want the file", out, err)
	}
	dst := filepath.Join(dir, "out.bin")
	if _, err = files("get", "-o", dst, "sha256:"+want); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(dst); !bytes.Equal(got, data) {
		t.Fatalf("files get: got %d bytes, want the %d put", len(got), len(data))
	}
	if _, err = files("get", "-o", dst, "sha256:12"); !errors.Is(err, errs.ErrInvalidArgument) {
		t.Fatalf("files get of a malformed hash: got %v, want ErrInvalidArgument", err)
	}
	if out, err = files("rm", "cli/in.bin"); err != nil || !strings.Contains(out, "removed") {
		t.Fatalf("files rm: got %q, %v", out, err)
	}
	if _, err = files("stat", want); !errors.Is(err, errs.ErrNotFound) {
		t.Fatalf("files stat after rm: got %v, want ErrNotFound", err)
	}
}
