package raylet

import (
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/goray/goray/internal/errs"
	"github.com/goray/goray/internal/ids"
	"github.com/goray/goray/internal/store"
	pb "github.com/goray/goray/proto/goray/v1"
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

	o, _, err := objs.alloc(id, job, 4096, false, false)
	if err != nil || o == nil {
		t.Fatalf("alloc: got %v, %v; want a region", o, err)
	}
	if again, _, err := objs.alloc(id, job, 4096, false, false); again != nil || !errors.Is(err, errs.ErrAlreadyExists) {
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
	if again, exists, err := objs.alloc(id, job, 4096, false, false); again != nil || !exists || err != nil {
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
		if _, _, err := objs.alloc(id, id.Job(), 1024, false, false); err != nil {
			t.Fatal(err)
		}
		if _, err := objs.sealAlloc(id, 1024); err != nil {
			t.Fatal(err)
		}
		if keptUsed == 0 {
			keptUsed = objs.arena.Used()
		}
	}
	if _, _, err := objs.alloc(pending, job, 1024, false, false); err != nil {
		t.Fatal(err)
	}
	pull, _, err := objs.alloc(pulling, job, 1024, true, false)
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
	if _, _, err := objs.alloc(objectOf(job, 5), job, 1024, false, false); err == nil {
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

// objectsOf names the objects of one task of job: the same index, the same
// object.
func objectsOf(job ids.JobID) func(i uint32) ids.ObjectID {
	task := ids.NewTaskID(job)
	return task.ObjectID
}

// putObject stores an object of size bytes, each byte fill, as a primary
// copy (alloc, write into the arena, seal).
func putObject(t *testing.T, objs *localObjects, id ids.ObjectID, size uint64, fill byte) {
	t.Helper()
	o, _, err := objs.alloc(id, id.Job(), size, false, false)
	if err != nil || o == nil {
		t.Fatalf("alloc %s: got %v, %v; want a region", id, o, err)
	}
	writeRegion(t, objs, o.off, size, fill)
	if ok, err := objs.sealAlloc(id, size); !ok || err != nil {
		t.Fatalf("seal %s: got %v, %v", id, ok, err)
	}
}

func writeRegion(t *testing.T, objs *localObjects, off, size uint64, fill byte) {
	t.Helper()
	m, err := store.OpenArena(objs.dir)
	if err != nil {
		t.Fatal(err)
	}
	b, err := m.Region(off, size)
	if err != nil {
		t.Fatal(err)
	}
	for i := range b {
		b[i] = fill
	}
}

// readObject pins object id (restoring it if spilled), checks that every
// byte is fill, and unpins it.
func readObject(t *testing.T, objs *localObjects, id ids.ObjectID, size uint64, fill byte) {
	t.Helper()
	p, found, err := objs.pin(t.Context(), id, pb.PinMode_PIN_MODE_READ, true)
	if err != nil || !found {
		t.Fatalf("pin %s: got found=%v, %v; want it pinned", id, found, err)
	}
	defer objs.unpin(id)
	if !p.inArena || p.size != size {
		t.Fatalf("pin %s: got %+v, want %d bytes in the arena", id, p, size)
	}
	m, err := store.OpenArena(objs.dir)
	if err != nil {
		t.Fatal(err)
	}
	b, err := m.View(p.off, p.size)
	if err != nil {
		t.Fatal(err)
	}
	for i, c := range b {
		if c != fill {
			t.Fatalf("object %s byte %d: got %d, want %d", id, i, c, fill)
		}
	}
}

// where says which tiers hold object id: "arena", "spill", "arena+spill",
// or "" when it is not recorded.
func where(objs *localObjects, id ids.ObjectID) string {
	objs.mu.Lock()
	defer objs.mu.Unlock()
	o := objs.sealed[id]
	switch {
	case o == nil:
		return ""
	case o.inArena && o.spill != nil:
		return "arena+spill"
	case o.inArena:
		return "arena"
	case o.spill != nil:
		return "spill"
	}
	return "nowhere"
}

func spillFiles(t *testing.T, objs *localObjects) []string {
	t.Helper()
	objs.removing.Wait()
	es, err := os.ReadDir(objs.spillDir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range es {
		names = append(names, e.Name())
	}
	return names
}

const quarter = 256 << 10 // a quarter of the 1 MiB test arena

// When an allocation does not fit, the least recently used primary copy is
// spilled (a seal or a pin counts as a use), and a pin restores it, intact,
// spilling the next least recently used one.
func TestLocalObjectsSpillLRU(t *testing.T) {
	objs := newTestObjectsSized(t, 1<<20, 1) // no background spilling
	job := ids.JobIDFromUint32(1)
	jobObj := objectsOf(job)
	var id [6]ids.ObjectID
	for i := range id {
		id[i] = jobObj(uint32(i + 1))
	}
	for i := range 4 {
		putObject(t, objs, id[i], quarter, byte(i+1))
	}
	readObject(t, objs, id[0], quarter, 1) // id[0] is now the most recent: id[1] the least
	putObject(t, objs, id[4], quarter, 5)
	for i, want := range []string{"arena", "spill", "arena", "arena", "arena"} {
		if got := where(objs, id[i]); got != want {
			t.Errorf("after a put into the full arena, object %d: got %q, want %q", i, got, want)
		}
	}
	if n := len(spillFiles(t, objs)); n != 1 {
		t.Fatalf("spill files: got %d, want 1", n)
	}
	readObject(t, objs, id[1], quarter, 2) // restored; id[2] is the least recent now
	for i, want := range []string{"arena", "arena+spill", "spill", "arena", "arena"} {
		if got := where(objs, id[i]); got != want {
			t.Errorf("after restoring object 1, object %d: got %q, want %q", i, got, want)
		}
	}
	// A restored object keeps its spill copy: making room drops it from the
	// arena again without writing.
	readObject(t, objs, id[0], quarter, 1)
	readObject(t, objs, id[3], quarter, 4)
	readObject(t, objs, id[4], quarter, 5)
	putObject(t, objs, id[5], quarter, 6)
	if got := where(objs, id[1]); got != "spill" {
		t.Errorf("restored object 1 after a later put: got %q, want %q (its copy in the arena dropped)", got, "spill")
	}
	st := objs.storeStats()
	if st.GetSpilledTotalBytes() != 2*quarter || st.GetRestoredTotalBytes() != quarter || st.GetEvictedTotal() != 0 {
		t.Errorf("stats: got spilled %d, restored %d, evicted %d; want %d, %d, 0", st.GetSpilledTotalBytes(), st.GetRestoredTotalBytes(), st.GetEvictedTotal(), 2*quarter, quarter)
	}
	for i := range id {
		readObject(t, objs, id[i], quarter, byte(i+1))
	}
}

// A pinned object (a reader's pin or a view) is never evicted or spilled:
// with every object pinned a put fails with ErrObjectStoreFull, and
// succeeds once a reader unpins. An object larger than the capacity fails
// at once.
func TestLocalObjectsPinnedNeverSpilled(t *testing.T) {
	objs := newTestObjectsSized(t, 1<<20, 1)
	job := ids.JobIDFromUint32(1)
	jobObj := objectsOf(job)
	for i := range 4 {
		putObject(t, objs, jobObj(uint32(i+1)), quarter, byte(i+1))
	}
	for i := range 3 {
		if _, _, err := objs.pin(t.Context(), jobObj(uint32(i+1)), pb.PinMode_PIN_MODE_READ, true); err != nil {
			t.Fatal(err)
		}
	}
	if _, _, err := objs.pin(t.Context(), jobObj(4), pb.PinMode_PIN_MODE_VIEW, true); err != nil {
		t.Fatal(err)
	}
	_, _, err := objs.alloc(jobObj(5), job, quarter, false, false)
	if !errors.Is(err, errs.ErrObjectStoreFull) || !strings.Contains(err.Error(), "pinned") {
		t.Fatalf("alloc with every object pinned: got %v, want ErrObjectStoreFull saying what is pinned", err)
	}
	for i := range 4 {
		if got := where(objs, jobObj(uint32(i+1))); got != "arena" {
			t.Errorf("pinned object %d: got %q, want it kept in the arena", i+1, got)
		}
	}
	objs.unpin(jobObj(2))
	putObject(t, objs, jobObj(5), quarter, 5)
	if got := where(objs, jobObj(2)); got != "spill" {
		t.Errorf("object unpinned before the put: got %q, want it spilled", got)
	}
	if _, _, err := objs.alloc(jobObj(6), job, 2<<20, false, false); !errors.Is(err, errs.ErrObjectStoreFull) ||
		!strings.Contains(err.Error(), "2097152 bytes") || !strings.Contains(err.Error(), "capacity is 1048576 bytes") {
		t.Fatalf("alloc larger than the capacity: got %v, want ErrObjectStoreFull naming the size and the capacity", err)
	}
}

// Secondary copies (pulled from other nodes) are evicted before any primary
// copy is spilled, even when they were used more recently.
func TestLocalObjectsEvictSecondaryFirst(t *testing.T) {
	objs := newTestObjectsSized(t, 1<<20, 1)
	job := ids.JobIDFromUint32(1)
	jobObj := objectsOf(job)
	for i := range 3 {
		putObject(t, objs, jobObj(uint32(i+1)), quarter, byte(i+1))
	}
	pulled := jobObj(9)
	a, _, err := objs.alloc(pulled, job, quarter, true, false)
	if err != nil || a == nil {
		t.Fatalf("alloc for a pull: %v, %v", a, err)
	}
	writeRegion(t, objs, a.off, quarter, 9)
	if err := objs.sealPulled(pulled, job, a); err != nil {
		t.Fatal(err)
	}
	putObject(t, objs, jobObj(4), quarter, 4)
	if got := where(objs, pulled); got != "" {
		t.Errorf("secondary copy after a put into the full arena: got %q, want it evicted", got)
	}
	for i := range 4 {
		if got := where(objs, jobObj(uint32(i+1))); got != "arena" {
			t.Errorf("primary object %d: got %q, want it in the arena", i+1, got)
		}
	}
	if st := objs.storeStats(); st.GetEvictedTotal() != 1 || st.GetSpilledTotalBytes() != 0 || len(spillFiles(t, objs)) != 0 {
		t.Errorf("stats: got evicted %d, spilled %d bytes, %d spill files; want 1, 0, 0", st.GetEvictedTotal(), st.GetSpilledTotalBytes(), len(spillFiles(t, objs)))
	}
}

// Objects spilled in one batch share one file, which goes when the last of
// them is freed; a finished job's spilled objects and files go with it;
// freeing a pinned object frees its storage when the reader unpins.
func TestLocalObjectsSpillFiles(t *testing.T) {
	objs := newTestObjectsSized(t, 1<<20, 0.4)
	job, other := ids.JobIDFromUint32(1), ids.JobIDFromUint32(2)
	jobObj, otherObj := objectsOf(job), objectsOf(other)
	for i := range 4 {
		putObject(t, objs, jobObj(uint32(i+1)), 128<<10, byte(i+1))
	}
	putObject(t, objs, otherObj(1), 128<<10, 0xee)
	// 640 KiB of a 1 MiB arena is 230 KiB past the 40 % mark: the
	// background round spills the least recently used down to it, in one
	// batch: objects 1 and 2 of job, in one file.
	objs.spillToHighWater()
	if used := objs.arena.Used(); used > objs.highWater {
		t.Fatalf("arena use after a background round: got %d, want <= %d", used, objs.highWater)
	}
	for i, want := range []string{"spill", "spill", "arena", "arena"} {
		if got := where(objs, jobObj(uint32(i+1))); got != want {
			t.Errorf("object %d: got %q, want %q", i+1, got, want)
		}
	}
	files := spillFiles(t, objs)
	if len(files) != 1 || !strings.HasPrefix(files[0], job.String()+"-") {
		t.Fatalf("spill files: got %v, want one of job %s", files, job)
	}
	objs.free(jobObj(1))
	if got := spillFiles(t, objs); len(got) != 1 {
		t.Fatalf("spill files after freeing one of its two objects: got %v, want it kept", got)
	}
	objs.free(jobObj(2))
	if got := spillFiles(t, objs); len(got) != 0 {
		t.Fatalf("spill files after freeing both of its objects: got %v, want none", got)
	}

	// Spill the rest (the whole store but what the other job holds), pin
	// one, and end the job: everything of it goes, the pin too.
	readObject(t, objs, otherObj(1), 128<<10, 0xee)
	putObject(t, objs, jobObj(5), 900<<10, 5) // spills 3 and 4, then the other job's object
	if n := len(spillFiles(t, objs)); n == 0 {
		t.Fatal("no spill files after a put that needs most of the arena")
	}
	if _, _, err := objs.pin(t.Context(), jobObj(5), pb.PinMode_PIN_MODE_READ, true); err != nil {
		t.Fatal(err)
	}
	objs.freeAll(objs.finishJob(job))
	for _, f := range spillFiles(t, objs) {
		if strings.HasPrefix(f, job.String()+"-") {
			t.Errorf("spill file %s of the finished job is left", f)
		}
	}
	readObject(t, objs, otherObj(1), 128<<10, 0xee)
	if used, want := objs.arena.Used(), uint64(128<<10); used != want {
		t.Errorf("arena use after the job ended: got %d, want %d (the other job's object)", used, want)
	}

	// Freed while pinned: the storage stays until the reader unpins.
	id := otherObj(2)
	putObject(t, objs, id, 4096, 7)
	if _, _, err := objs.pin(t.Context(), id, pb.PinMode_PIN_MODE_READ, true); err != nil {
		t.Fatal(err)
	}
	before := objs.arena.Used()
	objs.free(id)
	if objs.has(id) || objs.arena.Used() != before {
		t.Fatalf("freed while pinned: has %v, arena use %d; want forgotten, its region (%d in use) kept", objs.has(id), objs.arena.Used(), before)
	}
	objs.unpin(id)
	if objs.arena.Used() != before-4096 {
		t.Fatalf("after the last unpin of a freed object: arena use %d, want %d", objs.arena.Used(), before-4096)
	}
	objs.free(otherObj(1))
	if got := spillFiles(t, objs); len(got) != 0 || objs.arena.Used() != 0 {
		t.Fatalf("with every object freed: spill files %v, arena use %d; want none, 0", got, objs.arena.Used())
	}
}

// writeDirect writes n bytes of fill into the spill file a direct
// allocation named, as a producer does.
func writeDirect(t *testing.T, o *object, n uint64, fill byte) {
	t.Helper()
	if o == nil || o.direct == "" {
		t.Fatalf("allocation: got %+v, want a direct spill file", o)
	}
	b := make([]byte, n)
	for i := range b {
		b[i] = fill
	}
	if err := os.WriteFile(o.direct, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// A producer that accepts a spill file, finding the arena full of objects
// that would have to be spilled, is given a spill file to write instead of
// waiting: the object is stored spilled, reads back intact, and its file
// goes with it. A file that is not whole is refused at seal and removed
// when the allocation is freed; one of a finished job is removed at seal.
// Where room can be made without writing, the producer gets the arena.
func TestLocalObjectsDirectSpill(t *testing.T) {
	objs := newTestObjectsSized(t, 1<<20, 1)
	job := ids.JobIDFromUint32(1)
	jobObj := objectsOf(job)
	for i := range 4 {
		putObject(t, objs, jobObj(uint32(i+1)), quarter, byte(i+1))
	}
	o, _, err := objs.alloc(jobObj(5), job, quarter, false, true)
	if err != nil {
		t.Fatal(err)
	}
	writeDirect(t, o, quarter, 5)
	if ok, err := objs.sealAlloc(jobObj(5), quarter); !ok || err != nil {
		t.Fatalf("seal of a direct spill: got %v, %v", ok, err)
	}
	for i, want := range []string{"arena", "arena", "arena", "arena", "spill"} {
		if got := where(objs, jobObj(uint32(i+1))); got != want {
			t.Errorf("after a direct spill, object %d: got %q, want %q", i+1, got, want)
		}
	}
	if st := objs.storeStats(); st.GetSpilledBytes() != quarter || st.GetSpilledObjects() != 1 || st.GetSpilledTotalBytes() != quarter {
		t.Errorf("stats after a direct spill: got %d bytes in %d objects, %d in all; want %d, 1, %d", st.GetSpilledBytes(), st.GetSpilledObjects(), st.GetSpilledTotalBytes(), quarter, quarter)
	}
	readObject(t, objs, jobObj(5), quarter, 5) // restored, spilling object 1

	// Object 5 is in the arena with its spill copy: dropping it writes
	// nothing, so the next producer gets the arena.
	six, _, err := objs.alloc(jobObj(6), job, quarter, false, true)
	if err != nil || six == nil || six.direct != "" || !six.inArena {
		t.Fatalf("alloc with a cheap candidate: got %+v, %v; want an arena region", six, err)
	}
	writeRegion(t, objs, six.off, quarter, 6)
	if ok, err := objs.sealAlloc(jobObj(6), quarter); !ok || err != nil {
		t.Fatal(err)
	}

	short, _, err := objs.alloc(jobObj(7), job, quarter, false, true)
	if err != nil {
		t.Fatal(err)
	}
	writeDirect(t, short, quarter/2, 7)
	if ok, err := objs.sealAlloc(jobObj(7), quarter); !ok || !errors.Is(err, errs.ErrInvalidArgument) || !strings.Contains(err.Error(), "has 131072 bytes") {
		t.Fatalf("seal of a short direct spill: got %v, %v; want an invalid-argument error naming the file's size", ok, err)
	}
	objs.free(jobObj(7))
	for _, id := range []ids.ObjectID{jobObj(1), jobObj(5)} {
		objs.free(id)
	}
	if got := spillFiles(t, objs); len(got) != 0 {
		t.Fatalf("spill files with every spilled object and direct spill freed: got %v, want none", got)
	}

	// Fill again with objects that must be spilled, then end the job
	// while a direct spill is being written: the raylet forgets it, and the
	// seal that follows finds no allocation (the producer then removes its
	// file, as it does after any failed seal).
	for i := 8; i < 10; i++ {
		putObject(t, objs, jobObj(uint32(i)), quarter, byte(i))
	}
	late, _, err := objs.alloc(jobObj(10), job, quarter, false, true)
	if err != nil || late == nil || late.direct == "" {
		t.Fatalf("alloc into a full arena: got %+v, %v; want a direct spill file", late, err)
	}
	objs.freeAll(objs.finishJob(job))
	if got := spillFiles(t, objs); len(got) != 0 {
		t.Fatalf("spill files after the job ended: got %v, want none", got)
	}
	if ok, err := objs.sealAlloc(jobObj(10), quarter); ok || err != nil {
		t.Fatalf("seal of a direct spill of a finished job: got %v, %v; want no allocation found", ok, err)
	}
	if objs.has(jobObj(10)) {
		t.Fatal("a direct spill of a finished job is recorded")
	}
}
