package store

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"sync"
	"syscall"
)

// The arena is a node's shared-memory object store: one file (ArenaPath) in
// the store directory that the raylet creates at start and carves into
// regions, one per object. A writer asks the raylet for a region
// (NodeService.AllocateObject), copies the object into its mapping of the
// arena, and seals it (SealObject); readers on the node slice their mapping
// of the arena without a copy. Pages of the arena are faulted in once
// (Allocator.Prefault, or the first time a region reaches them) and then
// recycled: a put into a recycled region writes into pages the kernel
// neither hands out nor zeroes again. The arena's size is the store's
// capacity: the raylet evicts and spills objects to make room in it, and an
// object that cannot get a region fails its put (there is no fallback to
// files of their own beside the arena).
//
// Lifetime: a []byte read from the arena (View) aliases the store. It is
// read-only (writing to it faults) and it is valid until its object is freed
// (released by its owner, or its job ends): after that the region may hold
// another object.

// ArenaName is the arena's file name in the store directory.
const ArenaName = "arena"

// ArenaPath is the arena of the store directory dir.
func ArenaPath(dir string) string { return filepath.Join(dir, ArenaName) }

// Alignment of arena regions: pages, so that madvise can take a region.
const arenaAlign = 4096

// Linux madvise advice not in package syscall.
const (
	madvPopulateRead  = 22
	madvPopulateWrite = 23
)

// Mapping is this process's mapping of an arena file: rw for writers, ro
// for readers. Mappings are made once per process and arena and kept.
type Mapping struct {
	rw, ro []byte
	mu     sync.Mutex
	path   string
	ino    uint64
	// populated marks the popChunk-sized chunks of rw whose page tables
	// are filled in: the pages of an arena stay, so once is enough.
	populated []bool
}

// popChunk is the granule of Mapping.populated.
const popChunk = 2 << 20

var (
	mappingsMu sync.Mutex
	mappings   = map[string]*Mapping{}
)

// OpenArena returns this process's mapping of the arena in store directory
// dir, or an error when there is none.
func OpenArena(dir string) (*Mapping, error) {
	path := ArenaPath(dir)
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		return nil, fmt.Errorf("object store: arena: %w", err)
	}
	mappingsMu.Lock()
	defer mappingsMu.Unlock()
	m := mappings[path]
	if m == nil || m.ino != st.Ino {
		// A new arena (a raylet restarted on this directory): map it anew.
		// The old mapping is left to slices that may still use it.
		m = &Mapping{path: path, ino: st.Ino}
		mappings[path] = m
	}
	return m, nil
}

func (m *Mapping) mapLocked(write bool) ([]byte, error) {
	if write && m.rw != nil {
		return m.rw, nil
	}
	if !write && m.ro != nil {
		return m.ro, nil
	}
	flag, prot := os.O_RDONLY, syscall.PROT_READ
	if write {
		flag, prot = os.O_RDWR, syscall.PROT_READ|syscall.PROT_WRITE
	}
	f, err := os.OpenFile(m.path, flag, 0)
	if err != nil {
		return nil, fmt.Errorf("object store: open arena: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("object store: arena: %w", err)
	}
	if st.Size() == 0 {
		return nil, errors.New("object store: the arena is empty")
	}
	b, err := syscall.Mmap(int(f.Fd()), 0, int(st.Size()), prot, syscall.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("object store: map arena: %w", err)
	}
	if write {
		m.rw = b
		m.populated = make([]bool, (len(b)+popChunk-1)/popChunk)
	} else {
		m.ro = b
	}
	return b, nil
}

func (m *Mapping) region(off, n uint64, write bool) ([]byte, error) {
	m.mu.Lock()
	b, err := m.mapLocked(write)
	m.mu.Unlock()
	if err != nil {
		return nil, err
	}
	if off > uint64(len(b)) || n > uint64(len(b))-off {
		return nil, fmt.Errorf("object store: region [%d, %d) is outside the arena (%d bytes)", off, off+n, len(b))
	}
	return b[off : off+n : off+n], nil
}

// Region is the writable region [off, off+n) of the arena, its page tables
// filled in (no fault per page while it is written).
func (m *Mapping) Region(off, n uint64) ([]byte, error) {
	b, err := m.region(off, n, true)
	if err != nil || n == 0 {
		return b, err
	}
	// Fill in the page tables of the chunks not filled in before (walking
	// them again costs nearly as much as the first time).
	end := off + n
	for c := off / popChunk; c*popChunk < end; c++ {
		lo, hi := max(c*popChunk, off), min((c+1)*popChunk, end)
		m.mu.Lock()
		done := m.populated[c]
		m.mu.Unlock()
		if done {
			continue
		}
		if lo%4096 != 0 {
			lo &^= 4095 // the region starts on a page; its chunk may not be in use
		}
		if populate(m.rw[lo:hi], madvPopulateWrite) == nil && lo == c*popChunk && hi == (c+1)*popChunk {
			m.mu.Lock()
			m.populated[c] = true
			m.mu.Unlock()
		}
	}
	return b, nil
}

// View is the read-only region [off, off+n) of the arena (see the lifetime
// rule above).
func (m *Mapping) View(off, n uint64) ([]byte, error) {
	return m.region(off, n, false)
}

// ReadView is View with its page tables filled in first, for one pass
// over a large region (a spill's write): a page faulted in one by one costs
// about as much as copying it.
func (m *Mapping) ReadView(off, n uint64) ([]byte, error) {
	b, err := m.region(off, n, false)
	if skip := (4096 - off%4096) % 4096; err == nil && skip < n {
		_ = populate(b[skip:], madvPopulateRead) // madvise wants a page-aligned start
	}
	return b, err
}

// populate fills in the page tables of b (advice: madvPopulate*); an error
// only means the pages fault in one by one.
func populate(b []byte, advice int) error {
	if len(b) == 0 {
		return nil
	}
	return syscall.Madvise(b, advice)
}

// Allocator hands out regions of an arena file; it lives in the raylet.
// First fit over a sorted free list, neighbours coalesced. Pages are faulted
// in (fallocate) before a region first reaches them, so a writer never
// meets a hole (which, with /dev/shm full, would be SIGBUS).
type Allocator struct {
	mu      sync.Mutex
	f       *os.File
	size    uint64
	faulted uint64 // [0, faulted) is allocated in the file
	free    []span // sorted by off, coalesced
	used    uint64
	// holes are the ranges of [0, faulted) whose pages Release gave back:
	// sorted by off, coalesced, each inside a free span when punched. Alloc
	// faults in the part of a region that falls in one.
	holes []span
}

type span struct{ off, n uint64 }

// CreateArena creates the arena file of size bytes in store directory dir
// (replacing one a dead raylet left there).
func CreateArena(dir string, size uint64) (*Allocator, error) {
	size = size &^ (4096 - 1)
	if size == 0 {
		return nil, errors.New("object store: arena size is 0")
	}
	path := ArenaPath(dir)
	os.Remove(path)
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("object store: create arena: %w", err)
	}
	if err := f.Truncate(int64(size)); err != nil {
		f.Close()
		os.Remove(path)
		return nil, fmt.Errorf("object store: size arena: %w", err)
	}
	return &Allocator{f: f, size: size, free: []span{{0, size}}}, nil
}

// Size is the arena's capacity; Used what is allocated.
func (a *Allocator) Size() uint64 { return a.size }

// Used is the number of bytes allocated.
func (a *Allocator) Used() uint64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.used
}

// faultLocked makes sure [0, end) of the file is allocated.
func (a *Allocator) faultLocked(end uint64) error {
	if end <= a.faulted {
		return nil
	}
	if err := syscall.Fallocate(int(a.f.Fd()), 0, int64(a.faulted), int64(end-a.faulted)); err != nil {
		return err
	}
	a.faulted = end
	return nil
}

// Prefault faults in the whole arena, a slice at a time (so allocations are
// not held up). It stops at the first error (no room in /dev/shm) or when
// ctx is done.
func (a *Allocator) Prefault(ctx context.Context) error {
	const step = 64 << 20
	for ctx.Err() == nil {
		a.mu.Lock()
		if a.f == nil || a.faulted >= a.size {
			a.mu.Unlock()
			return nil
		}
		err := a.faultLocked(min(a.faulted+step, a.size))
		a.mu.Unlock()
		if err != nil {
			return fmt.Errorf("object store: prefault arena: %w", err)
		}
	}
	return nil
}

// ErrNoRoom is Alloc's error when no free span is large enough: freeing
// (evicting, spilling) other regions may make room.
var ErrNoRoom = errors.New("object store: no free region of the arena is large enough")

// ErrShmFull wraps Alloc's error when the arena's pages cannot be faulted
// in: the file system under the store directory (/dev/shm) is full, so the
// arena cannot grow into its capacity until something else there is freed.
var ErrShmFull = errors.New("object store: the shared memory under the store directory is full")

// Footprint is what a region of n bytes takes of the arena (n rounded up to
// whole pages). A size within a page of 2^64 saturates at the largest page
// multiple rather than wrap to a small one: it never fits.
func Footprint(n uint64) uint64 {
	if n == 0 {
		n = 1
	}
	if n > math.MaxUint64-(arenaAlign-1) {
		return math.MaxUint64 &^ (arenaAlign - 1)
	}
	return (n + arenaAlign - 1) &^ (arenaAlign - 1)
}

// Alloc reserves n bytes. The error is ErrNoRoom when no free span is large
// enough, or wraps ErrShmFull when the span's pages cannot be faulted in.
func (a *Allocator) Alloc(n uint64) (off uint64, err error) {
	n = Footprint(n)
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.f == nil {
		return 0, errors.New("object store: the arena is closed")
	}
	for i, s := range a.free {
		if s.n < n {
			continue
		}
		if err := a.faultLocked(s.off + n); err != nil {
			return 0, fmt.Errorf("%w (%d bytes of the arena's %d are in the file so far): %w", ErrShmFull, a.faulted, a.size, err)
		}
		if err := a.fillHolesLocked(s.off, n); err != nil {
			return 0, fmt.Errorf("%w (faulting in pages given back before): %w", ErrShmFull, err)
		}
		off = s.off
		if s.n == n {
			a.free = append(a.free[:i], a.free[i+1:]...)
		} else {
			a.free[i] = span{s.off + n, s.n - n}
		}
		a.used += n
		return off, nil
	}
	return 0, ErrNoRoom
}

// Free returns the region Alloc(n) gave at off.
func (a *Allocator) Free(off, n uint64) {
	n = Footprint(n)
	a.mu.Lock()
	defer a.mu.Unlock()
	i := sort.Search(len(a.free), func(i int) bool { return a.free[i].off > off })
	a.free = append(a.free, span{})
	copy(a.free[i+1:], a.free[i:])
	a.free[i] = span{off, n}
	a.used -= n
	// Coalesce with the next, then with the previous.
	if i+1 < len(a.free) && a.free[i].off+a.free[i].n == a.free[i+1].off {
		a.free[i].n += a.free[i+1].n
		a.free = append(a.free[:i+1], a.free[i+2:]...)
	}
	if i > 0 && a.free[i-1].off+a.free[i-1].n == a.free[i].off {
		a.free[i-1].n += a.free[i].n
		a.free = append(a.free[:i], a.free[i+1:]...)
	}
}

// Linux fallocate modes not in package syscall.
const (
	fallocKeepSize  = 0x01
	fallocPunchHole = 0x02
)

// Release gives the pages of the arena's free regions back to the system
// (fallocate PUNCH_HOLE on the arena file, which also drops them from every
// process's mapping): the raylet calls it when a job ends, so that a node
// whose jobs are done holds no store memory. A later Alloc faults the pages
// of its region in again before a writer sees it. It returns the bytes it
// gave back.
func (a *Allocator) Release() (uint64, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.f == nil {
		return 0, nil
	}
	var released uint64
	for _, s := range a.free {
		hi := min(s.off+s.n, a.faulted)
		if s.off >= hi {
			continue
		}
		for _, p := range minusSpans(span{s.off, hi - s.off}, a.holes) {
			if err := syscall.Fallocate(int(a.f.Fd()), fallocPunchHole|fallocKeepSize, int64(p.off), int64(p.n)); err != nil {
				return released, fmt.Errorf("object store: give back arena pages: %w", err)
			}
			released += p.n
			a.holes = addSpan(a.holes, p)
		}
	}
	return released, nil
}

// fillHolesLocked faults in the part of [off, off+n) that Release gave back.
func (a *Allocator) fillHolesLocked(off, n uint64) error {
	if len(a.holes) == 0 {
		return nil
	}
	end := off + n
	var kept []span
	for i, h := range a.holes {
		lo, hi := max(h.off, off), min(h.off+h.n, end)
		if lo >= hi {
			kept = append(kept, h)
			continue
		}
		if err := syscall.Fallocate(int(a.f.Fd()), 0, int64(lo), int64(hi-lo)); err != nil {
			a.holes = append(kept, a.holes[i:]...)
			return err
		}
		if h.off < lo {
			kept = append(kept, span{h.off, lo - h.off})
		}
		if hi < h.off+h.n {
			kept = append(kept, span{hi, h.off + h.n - hi})
		}
	}
	a.holes = kept
	return nil
}

// minusSpans is the parts of s outside spans (sorted, disjoint), in order.
func minusSpans(s span, spans []span) []span {
	var out []span
	cur, end := s.off, s.off+s.n
	for _, h := range spans {
		if h.off+h.n <= cur {
			continue
		}
		if h.off >= end {
			break
		}
		if h.off > cur {
			out = append(out, span{cur, h.off - cur})
		}
		cur = max(cur, h.off+h.n)
	}
	if cur < end {
		out = append(out, span{cur, end - cur})
	}
	return out
}

// addSpan inserts s (disjoint from them) into spans, sorted and coalesced.
func addSpan(spans []span, s span) []span {
	i := sort.Search(len(spans), func(i int) bool { return spans[i].off > s.off })
	spans = slices.Insert(spans, i, s)
	if i+1 < len(spans) && spans[i].off+spans[i].n == spans[i+1].off {
		spans[i].n += spans[i+1].n
		spans = slices.Delete(spans, i+1, i+2)
	}
	if i > 0 && spans[i-1].off+spans[i-1].n == spans[i].off {
		spans[i-1].n += spans[i].n
		spans = slices.Delete(spans, i, i+1)
	}
	return spans
}

// Close removes the arena file. Mappings of it stay valid until unmapped.
func (a *Allocator) Close() {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.f == nil {
		return
	}
	os.Remove(a.f.Name())
	a.f.Close()
	a.f = nil
}
