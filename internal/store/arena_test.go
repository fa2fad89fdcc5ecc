package store

import (
	"bytes"
	"errors"
	"os"
	"testing"
)

func TestArena(t *testing.T) {
	dir := t.TempDir()
	a, err := CreateArena(dir, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	o1, err := a.Alloc(100)
	if err != nil || o1 != 0 {
		t.Fatalf("Alloc(100) = %d, %v", o1, err)
	}
	o2, err := a.Alloc(5000)
	if err != nil || o2 != arenaAlign {
		t.Fatalf("Alloc(5000) = %d, %v", o2, err)
	}
	if _, err := a.Alloc(1 << 20); !errors.Is(err, ErrNoRoom) {
		t.Fatalf("Alloc past the capacity: got %v, want ErrNoRoom", err)
	}
	m, err := OpenArena(dir)
	if err != nil {
		t.Fatal(err)
	}
	w, err := m.Region(o2, 5000)
	if err != nil {
		t.Fatal(err)
	}
	copy(w, bytes.Repeat([]byte{7}, 5000))
	r, err := m.View(o2, 5000)
	if err != nil || !bytes.Equal(r, bytes.Repeat([]byte{7}, 5000)) {
		t.Fatalf("View: %v", err)
	}
	if _, err := m.View(1<<20-10, 20); err == nil {
		t.Fatal("View past the end succeeded")
	}
	a.Free(o1, 100)
	a.Free(o2, 5000)
	if a.Used() != 0 || len(a.free) != 1 || a.free[0] != (span{0, 1 << 20}) {
		t.Fatalf("after freeing all: used %d, free list %v", a.Used(), a.free)
	}
	if o, err := a.Alloc(1 << 20); err != nil || o != 0 {
		t.Fatalf("Alloc(all) after coalescing = %d, %v", o, err)
	}
	a.Close()
	if _, err := os.Stat(ArenaPath(dir)); !os.IsNotExist(err) {
		t.Fatalf("arena file after Close: %v", err)
	}
}
