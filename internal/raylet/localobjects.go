package raylet

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sort"
	"sync"

	"github.com/goray/goray/internal/errs"
	"github.com/goray/goray/internal/ids"
	"github.com/goray/goray/internal/store"
	pb "github.com/goray/goray/proto/goray/v1"
)

// object is an object in the node's store: a region of the arena, a file of
// its own (a node without arena), a copy in a spill file, or a region and a
// spill copy both (a restored object keeps its spill copy, so spilling it
// again costs no write).
type object struct {
	id   ids.ObjectID
	size uint64
	job  ids.JobID
	// primary: sealed here by its producer (SealObject). A copy pulled from
	// another node is secondary: it is evicted, never spilled, since the
	// primary node still has the object.
	primary bool
	// inArena: the object is the region [off, off+size) of the node's arena.
	inArena bool
	off     uint64
	// inFile: the object is a file of its own in the store directory.
	inFile bool
	// spill is the spill file holding a copy at spillOff; nil without one.
	spill    *spillFile
	spillOff uint64
	// pulling: a pull is writing into the region; it frees it itself when
	// the job finishes meanwhile.
	pulling bool
	// direct is the spill file its producer is writing the object into
	// while the arena is full (a direct spill, AllocateObjectResponse's
	// spill_path); "" otherwise. Only on allocations not sealed yet.
	direct string

	// pins counts readers that pinned the object (PIN_MODE_READ): its
	// storage stays where it is until they unpin. viewPinned: a zero-copy
	// view of it exists (PIN_MODE_VIEW): it stays in the arena until freed.
	pins       int
	viewPinned bool
	// busy is non-nil while a spill (spilling) or a restore of the object
	// runs without the lock; it is closed when that ends.
	busy     chan struct{}
	spilling bool
	// freed: the object was freed while pinned or busy; its storage goes
	// when the last pin or the busy operation ends.
	freed bool
	// used is the LRU clock at the object's last seal or pin.
	used uint64
}

// spillFile is one file of spilled objects: one job's objects, written in
// one batch. It is removed when no object's copy is in it any more.
type spillFile struct {
	path string
	job  ids.JobID
	live int // objects whose copy it holds
}

// objPlace is where an object's bytes were when it was pinned: a region
// of the arena, a file of its own, or (for a pin without restore) a spill
// file.
type objPlace struct {
	size      uint64
	inArena   bool
	off       uint64
	inFile    bool
	spillPath string
	spillOff  uint64
}

// storedObject is an object and its storage.
type storedObject struct {
	id ids.ObjectID
	o  *object
}

// storeStats are the figures of ObjectStoreStats the table counts.
type storeStats struct {
	spilledBytes, spilledObjects      uint64 // in spill files now
	spilledTotal, restoredTotal       uint64 // bytes, since start
	evictedTotal                      uint64 // secondary copies
	spillBatches                      uint64 // spill files written
	spillErrors                       uint64
	lastSpillErr                      string
	syncSpills, backgroundSpillRounds uint64
	directSpills                      uint64 // objects written straight to a spill file
}

// localObjects is the node's table of local objects (Ray's
// LocalObjectManager): the objects sealed in its store directory or arena,
// the arena regions handed out and not sealed yet, the objects spilled to
// disk and their spill files, and the jobs finished on this node, whose
// objects it no longer keeps. It owns the storage those records describe:
// it frees it, evicts secondary copies and spills primary ones (least
// recently used first) when the arena passes its high-water mark or an
// allocation does not fit, and restores spilled objects when they are
// pinned.
//
// NodeService handlers (AllocateObject, SealObject, FreeObjects,
// PullObject, UnpinObjects, GetNodeInfo), the transfer server, pulls, the
// spill loop and job cleanup call it from their own goroutines; mu guards
// the maps, the objects' fields and the stats. Spill and restore I/O runs
// without mu, on objects marked busy. It takes no other lock but the
// arena's (a leaf, taken with mu held).
type localObjects struct {
	dir      string
	arena    *store.Allocator // nil without one
	spillDir string           // this raylet's own spill directory
	// highWater is the arena use past which the spill loop runs.
	highWater uint64
	log       *slog.Logger
	kick      chan struct{} // size 1: asks the spill loop for a round
	// removing counts spill files being removed: a large file's unlink
	// takes milliseconds, so it is done without mu (removeSpillFile).
	removing sync.WaitGroup

	mu       sync.Mutex
	sealed   map[ids.ObjectID]*object // guarded by mu
	allocs   map[ids.ObjectID]*object // guarded by mu: arena regions not sealed yet
	zombies  map[ids.ObjectID]*object // guarded by mu: freed while pinned or busy
	finished map[ids.JobID]struct{}   // guarded by mu
	clock    uint64                   // guarded by mu: the LRU clock
	spillSeq uint64                   // guarded by mu: names spill files
	stats    storeStats               // guarded by mu
}

// minSpillBatch bounds a spill batch from below (Ray's min_spilling_size):
// objects are fused into files of at least this much, where there is that
// much to spill, capped at an eighth of the capacity.
const minSpillBatch = 100 << 20

func newLocalObjects(dir string, arena *store.Allocator, spillDir string, threshold float64, log *slog.Logger) *localObjects {
	t := &localObjects{dir: dir, arena: arena, spillDir: spillDir, log: log, kick: make(chan struct{}, 1),
		sealed: map[ids.ObjectID]*object{}, allocs: map[ids.ObjectID]*object{}, zombies: map[ids.ObjectID]*object{},
		finished: map[ids.JobID]struct{}{}}
	if arena != nil {
		if threshold <= 0 || threshold > 1 {
			threshold = DefaultSpillingThreshold
		}
		t.highWater = uint64(float64(arena.Size()) * threshold)
	}
	return t
}

// capacity is the arena's size; 0 without one.
func (t *localObjects) capacity() uint64 {
	if t.arena == nil {
		return 0
	}
	return t.arena.Size()
}

// has reports whether object id is sealed here (in any tier).
func (t *localObjects) has(id ids.ObjectID) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.sealed[id] != nil
}

func (t *localObjects) tickLocked() uint64 {
	t.clock++
	return t.clock
}

// alloc reserves an arena region of size bytes for object id of job,
// evicting and spilling to make room; o is nil (and err too) when there is
// no arena or the object is here already (exists: sealed here). It fails
// with ErrObjectStoreFull when the object can never fit or the store is
// full of objects that cannot move.
//
// With direct, a producer that can write a spill file itself is given one
// (o.direct) instead of waiting while a spill makes room: the put then
// costs one write to disk, as spilling it would, and the arena's spill
// goes on beside it.
func (t *localObjects) alloc(id ids.ObjectID, job ids.JobID, size uint64, pulling, direct bool) (o *object, exists bool, _ error) {
	if t.arena == nil || size == 0 {
		return nil, false, nil
	}
	if c := t.arena.Size(); store.Footprint(size) > c {
		return nil, false, errs.New(errs.KindObjectStoreFull, "", "object %s is %d bytes (%s), more than this node's object store can ever hold: its capacity is %d bytes (%s); raise the raylet's --object-store-memory (GORAY_OBJECT_STORE_MEMORY) or store the value in smaller pieces",
			id, size, human(size), c, human(c))
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	for {
		if _, ok := t.finished[job]; ok {
			return nil, false, errJobFinished(job)
		}
		if t.sealed[id] != nil {
			return nil, true, nil
		}
		if t.allocs[id] != nil {
			return nil, false, errs.New(errs.KindAlreadyExists, "", "object %s is being written into this node's store already", id)
		}
		off, err := t.arena.Alloc(size)
		if err == nil {
			o := &object{id: id, size: size, job: job, inArena: true, off: off, pulling: pulling}
			t.allocs[id] = o
			t.kickIfHighLocked()
			return o, false, nil
		}
		if direct && errors.Is(err, store.ErrNoRoom) && t.spillDir != "" {
			if t.cheapRoomLocked(store.Footprint(size)) {
				continue // room made without writing anything
			}
			t.spillSeq++
			o := &object{id: id, size: size, job: job, direct: fmt.Sprintf("%s/%s-%06d", t.spillDir, job, t.spillSeq)}
			t.allocs[id] = o
			t.stats.directSpills++
			t.kickLocked()
			return o, false, nil
		}
		if err := t.makeRoomFor(id, size, err); err != nil {
			return nil, false, err
		}
		// Room was made (or someone else's spill ended): try again; the
		// checks above run again, since the lock was let go.
	}
}

// makeRoomFor makes room for an allocation of size bytes that failed with
// allocErr, or says why it cannot. Called with mu held; it lets mu go while
// it spills.
func (t *localObjects) makeRoomFor(id ids.ObjectID, size uint64, allocErr error) error {
	if !errors.Is(allocErr, store.ErrNoRoom) {
		return errs.New(errs.KindObjectStoreFull, "", "object %s (%d bytes): %v; free space in the file system under %s (/dev/shm) or lower the raylet's --object-store-memory", id, size, allocErr, t.dir)
	}
	t.stats.syncSpills++
	progress, err := t.makeRoomLocked(store.Footprint(size))
	if err != nil {
		return errs.New(errs.KindObjectStoreFull, "", "object %s (%d bytes) does not fit in this node's object store and spilling failed: %v", id, size, err)
	}
	if !progress {
		pinned, writing := t.unmovableLocked()
		c := t.arena.Size()
		return errs.New(errs.KindObjectStoreFull, "", "object %s is %d bytes (%s) and does not fit in this node's object store: its capacity is %d bytes (%s), %d in use, of which %d pinned by readers and %d being written, which cannot be spilled; release objects or raise the raylet's --object-store-memory (GORAY_OBJECT_STORE_MEMORY)",
			id, size, human(size), c, human(c), t.arena.Used(), pinned, writing)
	}
	return nil
}

// unmovableLocked is what holds the arena that eviction and spilling cannot
// touch: pinned objects and regions being written.
func (t *localObjects) unmovableLocked() (pinned, writing uint64) {
	for _, o := range t.sealed {
		if o.inArena && (o.pins > 0 || o.viewPinned) {
			pinned += store.Footprint(o.size)
		}
	}
	for _, o := range t.allocs {
		writing += store.Footprint(o.size)
	}
	return pinned, writing
}

// candidatesLocked are the objects that may leave the arena, least recently
// used first: cheap ones (secondary copies, and primaries whose spill copy
// exists: dropping them writes nothing) and the primaries to spill.
func (t *localObjects) candidatesLocked() (cheap, spill []*object) {
	for _, o := range t.sealed {
		if !o.inArena || o.busy != nil || o.pins > 0 || o.viewPinned {
			continue
		}
		if !o.primary || o.spill != nil {
			cheap = append(cheap, o)
		} else {
			spill = append(spill, o)
		}
	}
	byUse := func(s []*object) {
		sort.Slice(s, func(i, j int) bool { return s[i].used < s[j].used })
	}
	byUse(cheap)
	byUse(spill)
	return cheap, spill
}

// cheapRoomLocked evicts cheap candidates (secondary copies, primaries
// with a spill copy) until need bytes were freed, and reports whether it
// freed anything; it writes nothing.
func (t *localObjects) cheapRoomLocked(need uint64) bool {
	cheap, _ := t.candidatesLocked()
	return t.dropCheapLocked(cheap, need)
}

// dropCheapLocked drops cheap candidates from the arena, least recently
// used first, until need bytes were freed; it reports whether it freed any.
func (t *localObjects) dropCheapLocked(cheap []*object, need uint64) bool {
	var freed uint64
	for _, o := range cheap {
		if freed >= need {
			break
		}
		freed += store.Footprint(o.size)
		t.dropArenaLocked(o)
	}
	return freed > 0
}

// makeRoomLocked frees at least need bytes of the arena if it can: it evicts
// cheap candidates first, else waits for a spill under way, else spills a
// batch of primaries (letting mu go for the writes). progress is false when
// nothing can leave the arena.
func (t *localObjects) makeRoomLocked(need uint64) (progress bool, _ error) {
	cheap, spill := t.candidatesLocked()
	if t.dropCheapLocked(cheap, need) {
		return true, nil
	}
	// A spill under way (the spill loop's, or another allocation's) frees
	// room soon: wait for it rather than write a second batch beside it, so
	// that one writer streams to disk while puts copy into the arena.
	if t.waitSpillLocked() {
		return true, nil
	}
	if len(spill) > 0 {
		want := max(need, min(minSpillBatch, t.arena.Size()/8))
		var batch []*object
		var sum uint64
		for _, o := range spill {
			if sum >= want {
				break
			}
			batch = append(batch, o)
			sum += store.Footprint(o.size)
		}
		return true, t.spillLocked(batch)
	}
	return false, nil
}

// waitSpillLocked waits for a spill under way, if there is one, letting mu
// go meanwhile; it reports whether it waited.
func (t *localObjects) waitSpillLocked() bool {
	for _, o := range t.sealed {
		if o.busy != nil && o.spilling {
			ch := o.busy
			t.mu.Unlock()
			<-ch
			t.mu.Lock()
			return true
		}
	}
	return false
}

// dropArenaLocked takes an unpinned, idle object out of the arena: a
// secondary copy without spill copy is evicted (forgotten), others keep
// their spill copy.
func (t *localObjects) dropArenaLocked(o *object) {
	t.arena.Free(o.off, o.size)
	o.inArena = false
	if o.spill == nil {
		delete(t.sealed, o.id)
		t.stats.evictedTotal++
	}
}

// spillLocked writes the objects of batch (sealed, in the arena, unpinned
// and idle) to spill files, one per job, with mu let go during the writes,
// and frees their regions, except of objects pinned meanwhile.
func (t *localObjects) spillLocked(batch []*object) error {
	type group struct {
		job  ids.JobID
		path string
		objs []*object
		offs []uint64
		err  error
	}
	var groups []*group
	byJob := map[ids.JobID]*group{}
	for _, o := range batch {
		o.busy, o.spilling = make(chan struct{}), true
		g := byJob[o.job]
		if g == nil {
			t.spillSeq++
			g = &group{job: o.job, path: fmt.Sprintf("%s/%s-%06d", t.spillDir, o.job, t.spillSeq)}
			byJob[o.job] = g
			groups = append(groups, g)
		}
		g.objs = append(g.objs, o)
		g.offs = append(g.offs, 0)
	}
	// The regions stay the batch's while it is busy: a free defers to it,
	// eviction skips it, and a pin finds the bytes where they are.
	regions := make([][2]uint64, len(batch))
	i := 0
	for _, g := range groups {
		for _, o := range g.objs {
			regions[i] = [2]uint64{o.off, o.size}
			i++
		}
	}
	t.mu.Unlock()
	i = 0
	for _, g := range groups {
		rs := regions[i : i+len(g.objs)]
		i += len(g.objs)
		g.err = writeSpillFile(t.dir, g.path, rs, g.offs)
	}
	t.mu.Lock()
	var firstErr error
	for _, g := range groups {
		sf := &spillFile{path: g.path, job: g.job}
		for k, o := range g.objs {
			close(o.busy)
			o.busy, o.spilling = nil, false
			switch {
			case o.freed:
				t.releaseLocked(o, false)
			case g.err == nil:
				o.spill, o.spillOff = sf, g.offs[k]
				sf.live++
				t.stats.spilledBytes += o.size
				t.stats.spilledObjects++
				t.stats.spilledTotal += o.size
				if o.pins == 0 && !o.viewPinned {
					t.arena.Free(o.off, o.size)
					o.inArena = false
				}
			}
		}
		if g.err != nil {
			t.stats.spillErrors++
			t.stats.lastSpillErr = g.err.Error()
			if firstErr == nil {
				firstErr = g.err
			}
		}
		if sf.live == 0 {
			os.Remove(g.path)
		} else {
			t.stats.spillBatches++
		}
	}
	return firstErr
}

// writeSpillFile writes the arena regions rs (offset, size) one after the
// other into a new file at path, one write per region, and sets offs to
// where each landed.
func writeSpillFile(storeDir, path string, rs [][2]uint64, offs []uint64) (err error) {
	m, err := store.OpenArena(storeDir)
	if err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("spill: %w", err)
	}
	defer func() {
		if cerr := f.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("spill: %w", cerr)
		}
		if err != nil {
			os.Remove(path)
		}
	}()
	var at uint64
	for k, r := range rs {
		b, err := m.ReadView(r[0], r[1])
		if err != nil {
			return err
		}
		if _, err := f.Write(b); err != nil {
			return fmt.Errorf("spill: %w", err)
		}
		offs[k] = at
		at += r[1]
	}
	return nil
}

// dropSpillLocked drops o's spill copy, removing its file when it was the
// last one there.
func (t *localObjects) dropSpillLocked(o *object) {
	sf := o.spill
	if sf == nil {
		return
	}
	o.spill = nil
	t.stats.spilledBytes -= o.size
	t.stats.spilledObjects--
	sf.live--
	if sf.live == 0 {
		t.removeSpillFile(sf.path)
	}
}

// removeSpillFile removes a spill file none of whose objects is left, in
// the background (its name is never used again).
func (t *localObjects) removeSpillFile(path string) {
	t.removing.Go(func() {
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			t.log.Warn("remove spill file", "file", path, "err", err)
		}
	})
}

// releaseLocked frees the storage of o, which is no longer in sealed or
// allocs — unless a pin (and not force) or a spill or restore holds it:
// then it is marked freed and goes when they end. Releasing twice is
// harmless.
func (t *localObjects) releaseLocked(o *object, force bool) {
	if o.busy != nil || (o.pins > 0 && !force) {
		o.freed = true
		t.zombies[o.id] = o
		return
	}
	if t.zombies[o.id] == o {
		delete(t.zombies, o.id)
	}
	if o.inArena {
		t.arena.Free(o.off, o.size)
		o.inArena = false
	}
	if o.inFile {
		o.inFile = false
		if err := store.Remove(t.dir, o.id); err != nil && !errors.Is(err, os.ErrNotExist) {
			t.log.Warn("free object", "object", o.id, "err", err)
		}
	}
	if o.direct != "" {
		t.removeSpillFile(o.direct) // a direct spill that was not sealed
		o.direct = ""
	}
	t.dropSpillLocked(o)
}

// kickIfHighLocked asks the spill loop for a round when the arena is past
// its high-water mark.
func (t *localObjects) kickIfHighLocked() {
	if t.arena != nil && t.arena.Used() > t.highWater {
		t.kickLocked()
	}
}

// kickLocked asks the spill loop for a round.
func (t *localObjects) kickLocked() {
	select {
	case t.kick <- struct{}{}:
	default:
	}
}

// spillLoop evicts and spills in the background whenever the arena passes
// its high-water mark, until done closes. The raylet runs it.
func (t *localObjects) spillLoop(done <-chan struct{}) {
	for {
		select {
		case <-done:
			return
		case <-t.kick:
		}
		t.spillToHighWater()
	}
}

// spillToHighWater evicts and spills until the arena's use is under its
// high-water mark or nothing more can leave it.
func (t *localObjects) spillToHighWater() {
	if t.arena == nil {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	for {
		used := t.arena.Used()
		if used <= t.highWater {
			return
		}
		t.stats.backgroundSpillRounds++
		progress, err := t.makeRoomLocked(used - t.highWater)
		if err != nil {
			t.log.Warn("spill objects", "dir", t.spillDir, "err", err)
			return
		}
		if !progress {
			return
		}
	}
}

// dropAlloc gives back a region alloc reserved and that was not sealed.
func (t *localObjects) dropAlloc(id ids.ObjectID, o *object) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.allocs[id] == o {
		delete(t.allocs, id)
		t.releaseLocked(o, true)
	} else if o.freed {
		t.releaseLocked(o, true) // freed while a pull wrote into it
	}
}

// sealAlloc seals the arena region alloc gave object id, written by its
// producer (a primary copy); ok is false when no region was given for id.
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
	if a.direct != "" {
		// The producer wrote a spill file of its own: it must hold the
		// object whole, or the object is not sealed (the producer frees it).
		st, err := os.Stat(a.direct)
		if err == nil && uint64(st.Size()) != size {
			err = fmt.Errorf("the file has %d bytes", st.Size())
		}
		if err != nil {
			return true, errs.New(errs.KindInvalidArgument, "", "SealObject: object %s was to be written whole (%d bytes) to the spill file %s: %v", id, size, a.direct, err)
		}
	}
	delete(t.allocs, id)
	if _, done := t.finished[a.job]; done {
		t.releaseLocked(a, true)
		return true, errJobFinished(a.job)
	}
	if a.direct != "" {
		a.spill, a.spillOff = &spillFile{path: a.direct, job: a.job, live: 1}, 0
		a.direct = ""
		t.stats.spilledBytes += a.size
		t.stats.spilledObjects++
		t.stats.spilledTotal += a.size
		t.stats.spillBatches++
	}
	a.primary, a.used = true, t.tickLocked()
	t.sealed[id] = a
	t.kickIfHighLocked()
	return true, nil
}

// sealFile records object id, a file of size bytes in the store directory.
// A file of a finished job is removed.
func (t *localObjects) sealFile(id ids.ObjectID, job ids.JobID, size uint64) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if _, done := t.finished[job]; done {
		store.Remove(t.dir, id)
		return errJobFinished(job)
	}
	if old := t.sealed[id]; old != nil && !old.inFile {
		t.releaseLocked(old, false) // a file replaces what was there
	}
	t.sealed[id] = &object{id: id, size: size, job: job, primary: true, inFile: true, used: t.tickLocked()}
	return nil
}

// sealPulled seals the region a pull of job's object id wrote into (a
// secondary copy).
func (t *localObjects) sealPulled(id ids.ObjectID, job ids.JobID, a *object) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.allocs[id] != a {
		t.releaseLocked(a, true) // freed while the pull wrote into it
		return errs.New(errs.KindObjectFreed, "", "object %s was freed while it was pulled to this node", id)
	}
	delete(t.allocs, id)
	a.pulling = false
	if _, done := t.finished[job]; done {
		t.releaseLocked(a, true)
		return errJobFinished(job)
	}
	a.used = t.tickLocked()
	t.sealed[id] = a
	t.kickIfHighLocked()
	return nil
}

// keepAsReplica makes the copy of object id here a replica: like a primary
// copy it is spilled, never evicted, when the store needs room. It
// reports whether the copy is here.
func (t *localObjects) keepAsReplica(id ids.ObjectID) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	o := t.sealed[id]
	if o != nil {
		o.primary = true
	}
	return o != nil
}

// pin pins sealed object id (mode READ or VIEW; UNSPECIFIED pins nothing)
// and returns where it is. A spilled object is restored into the arena
// first — making room as alloc does — unless restore is false (a READ pin
// for a reader that reads the spill file itself: a Get that copies the
// bytes anyway, or a pull by another node). found is false when the object
// is not here.
func (t *localObjects) pin(ctx context.Context, id ids.ObjectID, mode pb.PinMode, restore bool) (_ objPlace, found bool, _ error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for {
		o := t.sealed[id]
		if o == nil {
			return objPlace{}, false, nil
		}
		if o.inArena || o.inFile || (!restore && mode != pb.PinMode_PIN_MODE_VIEW) {
			switch mode {
			case pb.PinMode_PIN_MODE_READ:
				o.pins++
			case pb.PinMode_PIN_MODE_VIEW:
				o.viewPinned = true
			}
			o.used = t.tickLocked()
			p := objPlace{size: o.size, inArena: o.inArena, off: o.off, inFile: o.inFile}
			if !o.inArena && !o.inFile && o.spill != nil {
				p.spillPath, p.spillOff = o.spill.path, o.spillOff
				t.stats.restoredTotal += o.size // read from its spill file by the pinner
			}
			return p, true, nil
		}
		if o.busy != nil { // another reader restores it
			ch := o.busy
			t.mu.Unlock()
			select {
			case <-ch:
			case <-ctx.Done():
				t.mu.Lock()
				return objPlace{}, true, errs.Context(ctx.Err(), "restore object "+id.String())
			}
			t.mu.Lock()
			continue
		}
		if err := t.restoreLocked(o); err != nil {
			return objPlace{}, true, err
		}
	}
}

// restoreLocked reads spilled object o back into a region of the arena,
// with mu let go during the read. Its spill copy stays.
func (t *localObjects) restoreLocked(o *object) error {
	if t.arena == nil || o.spill == nil {
		return errs.New(errs.KindObjectLost, "", "object %s is recorded on this node but has no copy here", o.id)
	}
	o.busy = make(chan struct{})
	done := func() {
		close(o.busy)
		o.busy = nil
	}
	var off uint64
	for {
		var err error
		if off, err = t.arena.Alloc(o.size); err == nil {
			break
		}
		if err := t.makeRoomFor(o.id, o.size, err); err != nil {
			done()
			if o.freed {
				t.releaseLocked(o, false)
			}
			return err
		}
	}
	path, soff := o.spill.path, o.spillOff
	t.mu.Unlock()
	rerr := readSpilled(t.dir, path, soff, off, o.size)
	t.mu.Lock()
	done()
	if o.freed || rerr != nil {
		t.arena.Free(off, o.size)
		if o.freed {
			t.releaseLocked(o, false)
			return nil // the caller's loop finds it gone
		}
		return errs.New(errs.KindObjectLost, "", "object %s: restore from spill file %s: %v", o.id, path, rerr)
	}
	o.inArena, o.off = true, off
	t.stats.restoredTotal += o.size
	t.kickIfHighLocked()
	return nil
}

// readSpilled reads size bytes at soff of the spill file path into the
// arena region at off, in one read.
func readSpilled(storeDir, path string, soff, off, size uint64) error {
	m, err := store.OpenArena(storeDir)
	if err != nil {
		return err
	}
	dst, err := m.Region(off, size)
	if err != nil {
		return err
	}
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	n, err := f.ReadAt(dst, int64(soff))
	if uint64(n) == size {
		return nil
	}
	if err == nil {
		err = fmt.Errorf("read %d of %d bytes", n, size)
	}
	return err
}

// unpin drops one read pin of object id.
func (t *localObjects) unpin(id ids.ObjectID) {
	t.mu.Lock()
	defer t.mu.Unlock()
	o := t.sealed[id]
	if o == nil {
		o = t.zombies[id]
	}
	if o == nil || o.pins == 0 {
		return
	}
	o.pins--
	if o.pins == 0 && o.freed {
		t.releaseLocked(o, false)
	}
}

// free forgets object id and frees its storage, whichever tier holds it
// (pinned storage goes when its last reader unpins).
func (t *localObjects) free(id ids.ObjectID) {
	t.mu.Lock()
	defer t.mu.Unlock()
	o, a := t.sealed[id], t.allocs[id]
	delete(t.sealed, id)
	delete(t.allocs, id)
	if o != nil {
		t.releaseLocked(o, false)
	}
	if a != nil && a.pulling {
		a.freed = true // the pull frees the region when it stops writing
	} else if a != nil {
		t.releaseLocked(a, true)
	}
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
	for _, m := range []map[ids.ObjectID]*object{t.sealed, t.allocs, t.zombies} {
		for id, o := range m {
			if (o.job == job || id.Job() == job) && !o.pulling {
				out = append(out, storedObject{id, o})
				delete(m, id)
				// A spill or restore under way frees it when it ends; the
				// job's readers are being killed with their pins.
				o.freed, o.pins = true, 0
			}
		}
	}
	return out
}

// freeAll frees the storage of objects finishJob returned, pins or not.
func (t *localObjects) freeAll(objs []storedObject) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, o := range objs {
		t.releaseLocked(o.o, true)
	}
}

// removeFiles removes the files of every object recorded, for a store
// directory that outlives the raylet (one the raylet made goes whole).
func (t *localObjects) removeFiles() {
	t.mu.Lock()
	defer t.mu.Unlock()
	for id, o := range t.sealed {
		if o.inFile {
			store.Remove(t.dir, id)
		}
	}
}

// storeStats are the store's figures for GetNodeInfo and heartbeats.
func (t *localObjects) storeStats() *pb.ObjectStoreStats {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := &pb.ObjectStoreStats{CapacityBytes: t.capacity(), SpilledBytes: t.stats.spilledBytes, SpilledObjects: t.stats.spilledObjects,
		SpilledTotalBytes: t.stats.spilledTotal, RestoredTotalBytes: t.stats.restoredTotal, EvictedTotal: t.stats.evictedTotal, SpillDir: t.spillDir,
		DirectSpilledTotal: t.stats.directSpills}
	if t.arena != nil {
		s.UsedBytes = t.arena.Used()
	}
	s.PinnedBytes, _ = t.unmovableLocked()
	return s
}

// human is n bytes for a message: 1.5 GiB, 256 MiB, 12 KiB.
func human(n uint64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}
