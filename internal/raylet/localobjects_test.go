package raylet

import (
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"github.com/goray/goray/internal/errs"
	"github.com/goray/goray/internal/ids"
	"github.com/goray/goray/internal/store"
)

// newTestObjects is a local object table over a fresh store directory
// with a 1 MiB arena.
func newTestObjects(t *testing.T) *localObjects {
	return newTestObjectsSized(t, 1<<20, DefaultSpillingThreshold)
}

// newTestObjectsSized is a local object table over a fresh store directory
// with an arena of size bytes and a fresh spill directory; no spill loop
// runs (tests call spillToHighWater).
func newTestObjectsSized(t *testing.T, size uint64, threshold float64) *localObjects {
	t.Helper()
	dir := t.TempDir()
	a, err := store.CreateArena(dir, size)
	if err != nil {
		t.Fatalf("create arena: %v", err)
	}
	t.Cleanup(a.Close)
	spill := filepath.Join(t.TempDir(), "spill")
	if err := os.Mkdir(spill, 0o700); err != nil {
		t.Fatal(err)
	}
	return newLocalObjects(dir, a, spill, threshold, slog.New(slog.DiscardHandler))
}

func objectOf(job ids.JobID, i uint32) ids.ObjectID { return ids.NewTaskID(job).ObjectID(i) }

func TestLocalObjectsArenaLifecycle(t *testing.T) {
	objs := newTestObjects(t)
	job := ids.JobIDFromUint32(1)
	id := objectOf(job, 1)

	o, _, err := objs.alloc(id, job, 4096, false)
	if err != nil || o == nil {
		t.Fatalf("alloc: got %v, %v; want a region", o, err)
	}
	if again, _, err := objs.alloc(id, job, 4096, false); again != nil || !errors.Is(err, errs.ErrAlreadyExists) {
		t.Fatalf("alloc of an object already given a region: got %v, %v; want nil, already exists", again, err)
	}
	if objs.has(id) {
		t.Fatal("has before seal: got true, want false")
	}
	if ok, err := objs.sealAlloc(id, 100); !ok || !errors.Is(err, errs.ErrInvalidArgument) {
		t.Fatalf("seal with the wrong size: got %v, %v; want true, an invalid-argument error", ok, err)
	}
	if ok, err := objs.sealAlloc(id, 4096); !ok || err != nil {
		t.Fatalf("seal: got %v, %v; want true, nil", ok, err)
	}
	if !objs.has(id) {
		t.Fatal("has after seal: got false, want true")
	}
	if again, exists, err := objs.alloc(id, job, 4096, false); again != nil || !exists || err != nil {
		t.Fatalf("alloc of a sealed object: got %v, exists %v, %v; want nil, exists, nil", again, exists, err)
	}
	if used := objs.arena.Used(); used < 4096 {
		t.Fatalf("arena used after seal: got %d, want >= 4096", used)
	}
	objs.free(id)
	if objs.has(id) {
		t.Fatal("has after free: got true, want false")
	}
	if used := objs.arena.Used(); used != 0 {
		t.Fatalf("arena used after free: got %d, want 0", used)
	}
	if ok, _ := objs.sealAlloc(objectOf(job, 2), 1); ok {
		t.Fatal("sealAlloc of an object given no region: got true, want false")
	}
}

func TestLocalObjectsFinishJob(t *testing.T) {
	objs := newTestObjects(t)
	job, other := ids.JobIDFromUint32(1), ids.JobIDFromUint32(2)
	sealed, pending, pulling, kept := objectOf(job, 1), objectOf(job, 2), objectOf(job, 3), objectOf(other, 1)
	var keptUsed uint64 // the arena's use with the other job's object alone
	for _, id := range []ids.ObjectID{kept, sealed} {
		if _, _, err := objs.alloc(id, id.Job(), 1024, false); err != nil {
			t.Fatal(err)
		}
		if _, err := objs.sealAlloc(id, 1024); err != nil {
			t.Fatal(err)
		}
		if keptUsed == 0 {
			keptUsed = objs.arena.Used()
		}
	}
	if _, _, err := objs.alloc(pending, job, 1024, false); err != nil {
		t.Fatal(err)
	}
	pull, _, err := objs.alloc(pulling, job, 1024, true)
	if err != nil {
		t.Fatal(err)
	}
	file := objectOf(job, 4)
	if err := store.Write(objs.dir, file, []byte("payload")); err != nil {
		t.Fatal(err)
	}
	if err := objs.sealFile(file, job, 7); err != nil {
		t.Fatal(err)
	}

	got := objs.finishJob(job)
	if len(got) != 3 {
		t.Fatalf("finishJob: got %d objects, want 3 (sealed, pending region, file; not the one being pulled)", len(got))
	}
	if objs.has(sealed) || objs.has(file) {
		t.Fatal("the finished job's objects are still recorded")
	}
	if !objs.has(kept) {
		t.Fatal("another job's object was dropped")
	}
	objs.freeAll(got)
	if _, err := os.Stat(store.Path(objs.dir, file)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the finished job's file: stat got %v, want it removed", err)
	}
	// Nothing of the finished job is kept from now on.
	if _, _, err := objs.alloc(objectOf(job, 5), job, 1024, false); err == nil {
		t.Fatal("alloc for a finished job: got nil error, want job finished")
	}
	late := objectOf(job, 6)
	if err := store.Write(objs.dir, late, []byte("x")); err != nil {
		t.Fatal(err)
	}
	if err := objs.sealFile(late, job, 1); err == nil {
		t.Fatal("sealFile for a finished job: got nil error, want job finished")
	}
	if _, err := os.Stat(store.Path(objs.dir, late)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a finished job's late file: stat got %v, want it removed", err)
	}
	// The pull still writing frees its own region when it cannot seal.
	if err := objs.sealPulled(pulling, job, pull); err == nil {
		t.Fatal("sealPulled for a finished job: got nil error, want job finished")
	}
	if used, want := objs.arena.Used(), keptUsed; used != want {
		t.Fatalf("arena used after the job finished: got %d, want %d (the other job's object only)", used, want)
	}
}
