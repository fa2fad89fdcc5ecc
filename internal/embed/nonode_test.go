package embed

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/goray/goray/internal/store"
)

// claimedStoreDirs lists the store directories this process owns.
func claimedStoreDirs(t *testing.T) []string {
	t.Helper()
	dirs, _ := filepath.Glob(filepath.Join(store.BaseDir(os.TempDir()), "store-*"))
	var mine []string
	for _, d := range dirs {
		if b, err := os.ReadFile(filepath.Join(d, ".goray-owner")); err == nil && strings.HasPrefix(string(b), fmt.Sprintf("%d ", os.Getpid())) {
			mine = append(mine, d)
		}
	}
	return mine
}

// arenaMappings counts this process's mappings of arena files.
func arenaMappings(t *testing.T) int {
	t.Helper()
	maps, err := os.ReadFile("/proc/self/maps")
	if err != nil {
		t.Fatal(err)
	}
	return bytes.Count(maps, []byte("/"+store.ArenaName+"\n"))
}

// TestHeadOnlyHasNoObjectStore: a head with no node (Config.NoNode) makes no
// store directory and maps no arena; a head with its node does make one.
func TestHeadOnlyHasNoObjectStore(t *testing.T) {
	dirsBefore, mapsBefore := len(claimedStoreDirs(t)), arenaMappings(t)
	s := startHeadOnly(t, "127.0.0.1:0", t.TempDir(), filepath.Join(t.TempDir(), "token"), 0)
	if s.Node() != nil {
		t.Fatal("head-only server: got a node, want none")
	}
	if got := len(claimedStoreDirs(t)); got != dirsBefore {
		t.Fatalf("store dirs owned by this process with a head-only server: got %d, want %d (none of its own)", got, dirsBefore)
	}
	if got := arenaMappings(t); got != mapsBefore {
		t.Fatalf("arena mappings with a head-only server: got %d, want %d", got, mapsBefore)
	}

	cfg := Config{Head: true}
	cfg.Logger, cfg.Stderr = testLogger(t), t.Output()
	withNode, err := Start(callCtx(t), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer withNode.Close()
	if got := len(claimedStoreDirs(t)); got != dirsBefore+1 {
		t.Fatalf("store dirs owned by this process with a head and its node: got %d, want %d", got, dirsBefore+1)
	}
	if _, err := os.Stat(store.ArenaPath(withNode.Node().StoreDir())); err != nil {
		t.Fatalf("the node's arena: got %v, want it there", err)
	}
}
