package store

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"syscall"
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

// allocated is the bytes of path's file that hold pages.
func allocated(t *testing.T, path string) int64 {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Blocks * 512
}

// TestArenaRelease: freed regions' pages go back to the system on Release
// (the arena file's allocated blocks drop), and a later Alloc faults the
// pages of its region in again.
func TestArenaRelease(t *testing.T) {
	dir := t.TempDir()
	if st, err := os.Stat("/dev/shm"); err == nil && st.IsDir() {
		dir = filepath.Join("/dev/shm", filepath.Base(dir))
		if err := os.Mkdir(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(dir) })
	}
	const mib = 1 << 20
	a, err := CreateArena(dir, 16*mib)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	path := ArenaPath(dir)
	keep, err := a.Alloc(2 * mib)
	if err != nil {
		t.Fatalf("Alloc(2 MiB): %v", err)
	}
	big, err := a.Alloc(8 * mib)
	if err != nil {
		t.Fatalf("Alloc(8 MiB): %v", err)
	}
	m, err := OpenArena(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range []struct{ off, n uint64 }{{keep, 2 * mib}, {big, 8 * mib}} {
		w, err := m.Region(r.off, r.n)
		if err != nil {
			t.Fatal(err)
		}
		for i := range w {
			w[i] = 7
		}
	}
	if got := allocated(t, path); got < 10*mib {
		t.Fatalf("allocated with 10 MiB in use: got %d bytes, want >= %d", got, 10*mib)
	}
	a.Free(big, 8*mib)
	if got := allocated(t, path); got < 10*mib {
		t.Fatalf("allocated after Free, before Release: got %d bytes, want >= %d (Free keeps the pages)", got, 10*mib)
	}
	released, err := a.Release()
	if err != nil {
		t.Fatal(err)
	}
	if released != 8*mib {
		t.Fatalf("Release: got %d bytes, want %d", released, 8*mib)
	}
	if got := allocated(t, path); got < 2*mib || got > 3*mib {
		t.Fatalf("allocated after Release: got %d bytes, want 2 MiB (the region still in use)", got)
	}
	if again, _ := a.Release(); again != 0 {
		t.Fatalf("second Release: got %d bytes, want 0", again)
	}
	kv, err := m.View(keep, 2*mib)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(kv, bytes.Repeat([]byte{7}, 2*mib)) {
		t.Fatal("the region in use changed after Release")
	}
	// A new region in the given-back range is faulted in before it is
	// handed out, and reads as zero.
	off, err := a.Alloc(4 * mib)
	if err != nil || off != big {
		t.Fatalf("Alloc(4 MiB) after Release: got %d, %v, want %d, nil", off, err, big)
	}
	if got := allocated(t, path); got < 6*mib || got > 7*mib {
		t.Fatalf("allocated after Alloc(4 MiB): got %d bytes, want 6 MiB", got)
	}
	w, err := m.Region(off, 4*mib)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(w[:mib], make([]byte, mib)) {
		t.Fatal("a given-back region does not read as zero")
	}
	copy(w, bytes.Repeat([]byte{9}, 4*mib))
	if len(a.holes) != 1 || a.holes[0] != (span{big + 4*mib, 4 * mib}) {
		t.Fatalf("holes after Alloc: got %v, want [{%d %d}]", a.holes, big+4*mib, 4*mib)
	}
}

func TestSpanSets(t *testing.T) {
	for _, tt := range []struct {
		s     span
		holes []span
		want  []span
	}{
		{span{0, 10}, nil, []span{{0, 10}}},
		{span{0, 10}, []span{{0, 10}}, nil},
		{span{0, 10}, []span{{2, 3}, {7, 1}}, []span{{0, 2}, {5, 2}, {8, 2}}},
		{span{5, 10}, []span{{0, 6}, {14, 5}}, []span{{6, 8}}},
	} {
		if got := minusSpans(tt.s, tt.holes); !slices.Equal(got, tt.want) {
			t.Errorf("minusSpans(%v, %v): got %v, want %v", tt.s, tt.holes, got, tt.want)
		}
	}
	var s []span
	for _, x := range []span{{10, 5}, {0, 5}, {5, 5}, {20, 1}} {
		s = addSpan(s, x)
	}
	if want := []span{{0, 15}, {20, 1}}; !slices.Equal(s, want) {
		t.Fatalf("addSpan: got %v, want %v", s, want)
	}
}
