package raylet

import (
	"errors"
	"log/slog"
	"os"
	"sync"

	"github.com/goray/goray/internal/errs"
	"github.com/goray/goray/internal/ids"
	"github.com/goray/goray/internal/store"
)

// object is an object in the node's store: a file of its own, or a region
// of the arena.
type object struct {
	size uint64
	job  ids.JobID
	// inArena: the object is the region [off, off+size) of the node's arena.
	inArena bool
	off     uint64
	// pulling: a pull is writing into the region; it frees it itself when
	// the job finishes meanwhile.
	pulling bool
}

// storedObject is an object and its storage.
type storedObject struct {
	id ids.ObjectID
	o  *object
}

// localObjects is the node's table of local objects (Ray's
// LocalObjectManager): the objects sealed in its store directory or arena,
// the arena regions handed out and not sealed yet, and the jobs finished on
// this node, whose objects it no longer keeps. It owns the storage those
// records describe and frees it.
//
// NodeService handlers (AllocateObject, SealObject, FreeObjects,
// PullObject), the transfer server, pulls and job cleanup call it from
// their own goroutines; mu guards the maps. It takes no other lock, and no
// other lock is held while calling it with the arena's (which has its own).
type localObjects struct {
	dir   string
	arena *store.Allocator // nil without one
	log   *slog.Logger

	mu       sync.Mutex
	sealed   map[ids.ObjectID]*object // guarded by mu
	allocs   map[ids.ObjectID]*object // guarded by mu: arena regions not sealed yet
	finished map[ids.JobID]struct{}   // guarded by mu
}

func newLocalObjects(dir string, arena *store.Allocator, log *slog.Logger) *localObjects {
	return &localObjects{dir: dir, arena: arena, log: log,
		sealed: map[ids.ObjectID]*object{}, allocs: map[ids.ObjectID]*object{}, finished: map[ids.JobID]struct{}{}}
}

// get is the sealed object id, or nil.
func (t *localObjects) get(id ids.ObjectID) *object {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.sealed[id]
}

// alloc reserves an arena region of size bytes for object id of job; nil
// when there is no room, no arena, or the object is here already.
func (t *localObjects) alloc(id ids.ObjectID, job ids.JobID, size uint64, pulling bool) (*object, error) {
	if t.arena == nil || size == 0 {
		return nil, nil
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if _, ok := t.finished[job]; ok {
		return nil, errJobFinished(job)
	}
	if t.sealed[id] != nil || t.allocs[id] != nil {
		return nil, nil
	}
	off, ok := t.arena.Alloc(size)
	if !ok {
		return nil, nil
	}
	o := &object{size: size, job: job, inArena: true, off: off, pulling: pulling}
	t.allocs[id] = o
	return o, nil
}

// dropAlloc gives back a region alloc reserved and that was not sealed.
func (t *localObjects) dropAlloc(id ids.ObjectID, o *object) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.allocs[id] == o {
		delete(t.allocs, id)
		t.arena.Free(o.off, o.size)
	}
}

// sealAlloc seals the arena region alloc gave object id, written by its
// producer; ok is false when no region was given for id.
func (t *localObjects) sealAlloc(id ids.ObjectID, size uint64) (ok bool, _ error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	a := t.allocs[id]
	if a == nil {
		return false, nil
	}
	if size != a.size {
		return true, errs.New(errs.KindInvalidArgument, "", "SealObject: object %s was given %d bytes of the arena, the request says %d", id, a.size, size)
	}
	delete(t.allocs, id)
	if _, done := t.finished[a.job]; done {
		t.arena.Free(a.off, a.size)
		return true, errJobFinished(a.job)
	}
	t.sealed[id] = a
	return true, nil
}

// sealFile records object id, a file of size bytes in the store directory.
// A file of a finished job is removed.
func (t *localObjects) sealFile(id ids.ObjectID, job ids.JobID, size uint64) (*object, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if _, done := t.finished[job]; done {
		store.Remove(t.dir, id)
		return nil, errJobFinished(job)
	}
	o := &object{size: size, job: job}
	t.sealed[id] = o
	return o, nil
}

// sealPulled seals the region a pull of job's object id wrote into.
func (t *localObjects) sealPulled(id ids.ObjectID, job ids.JobID, a *object) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.allocs[id] != a {
		return errJobFinished(job) // freed under it
	}
	delete(t.allocs, id)
	a.pulling = false
	if _, done := t.finished[job]; done {
		t.arena.Free(a.off, a.size)
		return errJobFinished(job)
	}
	t.sealed[id] = a
	return nil
}

// free forgets object id and frees its storage.
func (t *localObjects) free(id ids.ObjectID) {
	t.mu.Lock()
	o, a := t.sealed[id], t.allocs[id]
	delete(t.sealed, id)
	delete(t.allocs, id)
	t.mu.Unlock()
	t.freeStorage(id, o)
	t.freeStorage(id, a)
}

// finishJob marks job finished — no object of it is kept from now on — and
// forgets its objects (a region being pulled into is freed by its pull).
// It returns them: the caller frees their storage with freeAll once the
// job's workers, which may still read them, are gone.
func (t *localObjects) finishJob(job ids.JobID) []storedObject {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.finished[job] = struct{}{}
	var out []storedObject
	for _, m := range []map[ids.ObjectID]*object{t.sealed, t.allocs} {
		for id, o := range m {
			if (o.job == job || id.Job() == job) && !o.pulling {
				out = append(out, storedObject{id, o})
				delete(m, id)
			}
		}
	}
	return out
}

// freeAll frees the storage of objects finishJob returned.
func (t *localObjects) freeAll(objs []storedObject) {
	for _, o := range objs {
		t.freeStorage(o.id, o.o)
	}
}

// freeStorage frees the storage of an object no longer recorded.
func (t *localObjects) freeStorage(id ids.ObjectID, o *object) {
	if o == nil {
		return
	}
	if o.inArena {
		t.arena.Free(o.off, o.size)
		return
	}
	if err := store.Remove(t.dir, id); err != nil && !errors.Is(err, os.ErrNotExist) {
		t.log.Warn("free object", "object", id, "err", err)
	}
}

// removeFiles removes the files of every object recorded, for a store
// directory that outlives the raylet (one the raylet made goes whole).
func (t *localObjects) removeFiles() {
	t.mu.Lock()
	defer t.mu.Unlock()
	for id, o := range t.sealed {
		if !o.inArena {
			store.Remove(t.dir, id)
		}
	}
}
