package core

import (
	"context"
	"errors"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/goray/goray/internal/errs"
	"github.com/goray/goray/internal/ids"
	"github.com/goray/goray/internal/rpc"
	pb "github.com/goray/goray/proto/goray/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Distributed reference counting, Ray's ownership model (docs/objects.md).
//
// The owner of an object keeps it while any of these holds it:
//   - a handle in the owner's own memory: each Ref made by Put, a remote
//     call or decoding a value carries one, shared by its copies, and the
//     Go GC drops it (runtime.AddCleanup) once no copy is reachable, or
//     Ref.Release drops it now;
//   - a ref inside the value of another object the owner keeps (contained);
//   - the call that makes the object, while it is in flight, holds its
//     arguments (objEntry.holds);
//   - a borrower: another process counted in objEntry.borrowers, which
//     reports its holds with UpdateBorrows.
//
// A borrower keeps one borrowEntry per object it holds refs to, counting its
// own holds; the owner counts that borrower while the entry lives (one count
// per registration, see borrowEntry.registered). When the last hold goes the
// object is freed everywhere: the owner's entry and lineage, the stored
// copies on every node the owner knows of, and the holds of the refs inside
// its value.

// handle is one counted hold on an object. Refs share it by copying; it is
// the pointer the GC watches.
type handle struct {
	c        *Core // the process's core that holds it (nil: no hold)
	info     RefInfo
	owned    bool // this process owns the object
	released atomic.Bool
	cleanup  runtime.Cleanup
	// value is the value of a small put. Such a put is kept in its handle
	// alone, uncounted, until the ref leaves the process (share): until
	// then the GC frees it with the handle, and nothing else knows it.
	value *pb.Payload
	// share makes an uncounted handle counted, once; counted says it is.
	share   sync.Once
	counted bool
	// err is set when a borrow could not be registered (the owner had
	// freed the object or is gone); Get returns it.
	err error
}

// holdKey is what a handle's cleanup needs: never the handle itself, which
// would keep it reachable.
type holdKey struct {
	c     *Core
	id    ids.ObjectID
	owned bool
}

func dropHold(k holdKey) { k.c.dropHold(k.id, k.owned) }

func (c *Core) dropHold(id ids.ObjectID, owned bool) {
	if owned {
		c.objs.release(c, id, 1)
	} else {
		c.borrows.release(c, id, 1)
	}
}

// newHandle makes a handle for a hold the caller already counted.
func (c *Core) newHandle(info RefInfo, owned bool) *handle {
	h := &handle{c: c, info: info, owned: owned, counted: true}
	h.cleanup = runtimeAddCleanup(h, holdKey{c, info.ID, owned})
	return h
}

// shared makes h's object known to this process's table, so that the ref
// can leave the process: a small put kept in its handle gets its entry now.
func (c *Core) shared(h *handle) {
	h.share.Do(func() {
		if h.counted || h.value == nil || h.released.Load() {
			return
		}
		c.objs.create(h.info.ID, &objEntry{done: closedDone, value: h.value, settled: true, c: c, id: h.info.ID})
		h.cleanup = runtimeAddCleanup(h, holdKey{c, h.info.ID, true})
		h.counted = true
	})
}

func runtimeAddCleanup(h *handle, k holdKey) runtime.Cleanup {
	return runtime.AddCleanup(h, dropHold, k)
}

// release drops h's hold now; later Gets through it fail.
func (h *handle) release() {
	if h.released.CompareAndSwap(false, true) {
		h.share.Do(func() {}) // an uncounted handle stays so
		if h.counted {
			h.cleanup.Stop()
			h.c.dropHold(h.info.ID, h.owned)
		}
	}
}

func errReleased() error {
	return errs.New(errs.KindObjectFreed, "", "this ref was released (Ref.Release): it no longer names an object")
}

// RefFor is a counted ref to the object info names: a hold on it (this
// process's own object, or a borrow registered with its owner). It is how
// a ref that arrives from elsewhere (an ID a client sends, a ref in a
// reply) becomes live here.
func (c *Core) RefFor(ctx context.Context, info RefInfo) Ref {
	h := &handle{info: info}
	c.fill(ctx, []*handle{h})
	return Ref{h: h}
}

func errFreed(id ids.ObjectID) error {
	return errs.New(errs.KindObjectFreed, "", "object %s was freed by its owner: every ref to it had been dropped or released; keep a ref (or pass the ref itself, not its ID) for as long as the object is needed", id)
}

// acquire takes a hold on an object this process owns; false when it has
// none (freed).
func (t *objectTable) acquire(id ids.ObjectID) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	e := t.m[id]
	if e == nil {
		return false
	}
	e.local++
	return true
}

// release drops n holds of this process on object id, and frees it when
// none is left.
func (t *objectTable) release(c *Core, id ids.ObjectID, n int32) {
	t.mu.Lock()
	e := t.m[id]
	if e == nil {
		t.mu.Unlock()
		return
	}
	e.local -= n
	if e.local > 0 || e.selfBorrows > 0 || len(e.borrowers) > 0 {
		t.mu.Unlock()
		return
	}
	delete(t.m, id)
	w := c.freeLocked(id, e)
	t.mu.Unlock()
	w.run(c)
}

// addBorrows applies a borrower's count changes to the objects this process
// owns, increases first; it returns the objects of increases it no longer
// has.
func (t *objectTable) addBorrows(c *Core, deltas []*pb.BorrowDelta) (unknown [][]byte) {
	var w freeWork
	var watch []string
	t.mu.Lock()
	for _, pass := range []bool{true, false} {
		for _, d := range deltas {
			if (d.GetDelta() > 0) != pass {
				continue
			}
			id, err := ids.ParseObjectID(d.GetObjectId())
			if err != nil {
				continue
			}
			e := t.m[id]
			if e == nil {
				if pass {
					unknown = append(unknown, d.GetObjectId())
				}
				continue
			}
			who := d.GetBorrowerAddress()
			if who == c.addr {
				// A ref of ours in a result handed to us: the count
				// becomes ours when the reply is read (settle).
				e.selfBorrows += d.GetDelta()
			} else {
				if e.borrowers == nil {
					e.borrowers = map[string]int32{}
				}
				old, had := e.borrowers[who]
				if n := old + d.GetDelta(); n > 0 {
					e.borrowers[who] = n
					if !had {
						t.borrowed(who, 1)
						watch = append(watch, who)
					}
				} else if had {
					delete(e.borrowers, who)
					t.borrowed(who, -1)
				}
			}
			if !pass && e.local <= 0 && e.selfBorrows <= 0 && len(e.borrowers) == 0 {
				delete(t.m, id)
				w.merge(c.freeLocked(id, e))
			}
		}
	}
	t.mu.Unlock()
	for _, who := range watch {
		c.monitor.watch(c, who)
	}
	w.run(c)
	return unknown
}

// borrowed counts the entries that count borrower who (mu held).
func (t *objectTable) borrowed(who string, n int) {
	if t.byBorrower == nil {
		t.byBorrower = map[string]int{}
	}
	if t.byBorrower[who] += n; t.byBorrower[who] <= 0 {
		delete(t.byBorrower, who)
	}
}

// dropBorrower forgets every count of a borrower that is gone.
func (t *objectTable) dropBorrower(c *Core, who string) int {
	var w freeWork
	n := 0
	t.mu.Lock()
	for id, e := range t.m {
		if _, ok := e.borrowers[who]; !ok {
			continue
		}
		n++
		delete(e.borrowers, who)
		t.borrowed(who, -1)
		if e.local <= 0 && e.selfBorrows <= 0 && len(e.borrowers) == 0 {
			delete(t.m, id)
			w.merge(c.freeLocked(id, e))
		}
	}
	t.mu.Unlock()
	w.run(c)
	return n
}

// borrowsOf reports whether any object still counts borrower who.
func (t *objectTable) borrowsOf(who string) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.byBorrower[who] > 0
}

// freeWork is what freeing objects leaves to do once the table's lock is
// released: holds to drop (refs inside freed values) and stored copies to
// remove.
type freeWork struct {
	owned    []ids.ObjectID
	borrowed []ids.ObjectID
	stored   []storedCopy
}

type storedCopy struct {
	id     ids.ObjectID
	raylet string // "" for this process's own raylet
	node   ids.NodeID
}

func (w *freeWork) merge(o freeWork) {
	w.owned = append(w.owned, o.owned...)
	w.borrowed = append(w.borrowed, o.borrowed...)
	w.stored = append(w.stored, o.stored...)
}

func (w freeWork) run(c *Core) {
	for _, id := range w.owned {
		c.objs.release(c, id, 1)
	}
	for _, id := range w.borrowed {
		c.borrows.release(c, id, 1)
	}
	if len(w.stored) > 0 {
		c.freer.free(c, w.stored)
	}
}

// freeLocked frees entry e of object id, already removed from the table
// (its lock held): its lineage now, its value's refs and stored copies
// through the work returned. An entry whose call is still running is freed
// when its reply comes (settle).
func (c *Core) freeLocked(id ids.ObjectID, e *objEntry) freeWork {
	e.freed = true
	c.lin.mu.Lock()
	delete(c.lin.m, id)
	c.lin.mu.Unlock()
	c.freedObjects.Add(1)
	if !e.settled {
		return freeWork{}
	}
	return c.releaseSettled(id, e)
}

// containedWork drops the holds of the refs inside e's value (table lock
// held).
func (c *Core) containedWork(e *objEntry) freeWork {
	var w freeWork
	for _, r := range e.contained {
		if r.Owner == c.addr {
			w.owned = append(w.owned, r.ID)
		} else {
			w.borrowed = append(w.borrowed, r.ID)
		}
	}
	e.contained = nil
	return w
}

// releaseSettled is the work of freeing a settled entry.
func (c *Core) releaseSettled(id ids.ObjectID, e *objEntry) freeWork {
	w := c.containedWork(e)
	if e.loc != nil {
		nid, _ := ids.ParseNodeID(e.loc.GetNodeId())
		w.stored = append(w.stored, storedCopy{id: id, raylet: e.loc.GetRayletAddress(), node: nid})
		if nid != c.nodeID {
			w.stored = append(w.stored, storedCopy{id: id}) // a pull to this node
		}
		for _, r := range e.copies {
			if r != e.loc.GetRayletAddress() {
				w.stored = append(w.stored, storedCopy{id: id, raylet: r})
			}
		}
	}
	return w
}

// settle records that entry e's value, location or error is there, with
// the refs inside the value (for a call's reply: registered for this
// process by the executor). An entry freed while its call ran is freed now.
func (c *Core) settle(e *objEntry, contained []*pb.ObjectRef) {
	id := e.id
	var refs []RefInfo
	for _, p := range contained {
		r, err := RefFromProto(p)
		if err == nil {
			refs = append(refs, r)
		}
	}
	var w freeWork
	t := c.objs
	t.mu.Lock()
	e.settled = true
	e.holds = nil
	// The executor counted this process as a borrower of each ref inside
	// the result; those counts become the result's holds.
	var foreign []RefInfo
	for _, r := range refs {
		if r.Owner == c.addr {
			if o := t.m[r.ID]; o != nil {
				o.local++
				o.selfBorrows--
				e.contained = append(e.contained, r)
			}
			continue
		}
		foreign = append(foreign, r)
		e.contained = append(e.contained, r)
	}
	if e.freed {
		w = c.releaseSettled(id, e)
	}
	t.mu.Unlock()
	if len(foreign) > 0 {
		c.borrows.adopt(c, foreign)
	}
	w.run(c)
}

// borrowTable is this process's table of the objects it borrows: objects
// other processes own that it holds refs to. Decoders, handle cleanups and
// freed entries call it from their goroutines; mu guards m, and each owner's
// link orders the UpdateBorrows sent to that owner.
type borrowTable struct {
	mu    sync.Mutex
	m     map[ids.ObjectID]*borrowEntry // guarded by mu
	links map[string]*ownerLink         // guarded by mu
}

// borrowEntry counts this process's holds on one borrowed object; the owner
// counts registered for it (each registration, by this process or by an
// executor that handed the ref to it in a result, is one count there).
type borrowEntry struct {
	info       RefInfo
	count      int32
	registered int32
}

// ownerLink sends one owner this process's count changes, in order: mu is
// held while a request is out, and removals wait in pending until the next.
type ownerLink struct {
	owner   string
	mu      sync.Mutex
	pmu     sync.Mutex
	pending []*pb.BorrowDelta // guarded by pmu
	kicked  bool              // guarded by pmu: a flush is on its way
}

func (t *borrowTable) link(owner string) *ownerLink {
	if t.links == nil {
		t.links = map[string]*ownerLink{}
	}
	l := t.links[owner]
	if l == nil {
		l = &ownerLink{owner: owner}
		t.links[owner] = l
	}
	return l
}

// acquire takes one hold on each ref (all owned by owner), registering this
// process with the owner where it holds none yet; it returns an error per
// ref that could not be registered.
func (t *borrowTable) acquire(ctx context.Context, c *Core, owner string, refs []RefInfo) []error {
	out := make([]error, len(refs))
	var reg []int
	t.mu.Lock()
	if t.m == nil {
		t.m = map[ids.ObjectID]*borrowEntry{}
	}
	for i, r := range refs {
		e := t.m[r.ID]
		if e == nil {
			e = &borrowEntry{info: r}
			t.m[r.ID] = e
		}
		e.count++
		if e.registered == 0 {
			e.registered++ // counted now, so a concurrent release sends it back
			reg = append(reg, i)
		}
	}
	l := t.link(owner)
	t.mu.Unlock()
	if len(reg) == 0 {
		return out
	}
	deltas := make([]*pb.BorrowDelta, len(reg))
	for j, i := range reg {
		deltas[j] = &pb.BorrowDelta{ObjectId: refs[i].ID[:], BorrowerAddress: c.addr, Delta: 1}
	}
	unknown, err := l.send(ctx, c, deltas)
	if err != nil {
		for _, i := range reg {
			out[i] = err
		}
	} else {
		for _, b := range unknown {
			id, _ := ids.ParseObjectID(b)
			for _, i := range reg {
				if refs[i].ID == id {
					out[i] = errFreed(id)
				}
			}
		}
	}
	// A failed registration is no count at the owner: undo this hold.
	t.mu.Lock()
	for i, r := range refs {
		if out[i] != nil {
			if e := t.m[r.ID]; e != nil {
				e.registered--
				if e.count--; e.count <= 0 {
					delete(t.m, r.ID)
				}
			}
		}
	}
	t.mu.Unlock()
	return out
}

// adopt takes one hold on each ref whose owner already counts this process
// once more for it (an executor registered it before replying).
func (t *borrowTable) adopt(c *Core, refs []RefInfo) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.m == nil {
		t.m = map[ids.ObjectID]*borrowEntry{}
	}
	for _, r := range refs {
		e := t.m[r.ID]
		if e == nil {
			e = &borrowEntry{info: r}
			t.m[r.ID] = e
		}
		e.count++
		e.registered++
	}
}

// hold takes one more hold on a borrowed object this process holds already;
// false when it holds none.
func (t *borrowTable) hold(id ids.ObjectID) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	e := t.m[id]
	if e == nil || e.count <= 0 {
		return false
	}
	e.count++
	return true
}

// release drops n holds on a borrowed object; with none left, the owner is
// told (in the background, in order with later registrations).
func (t *borrowTable) release(c *Core, id ids.ObjectID, n int32) {
	t.mu.Lock()
	e := t.m[id]
	if e == nil {
		t.mu.Unlock()
		return
	}
	if e.count -= n; e.count > 0 {
		t.mu.Unlock()
		return
	}
	delete(t.m, id)
	l := t.link(e.info.Owner)
	t.mu.Unlock()
	if e.registered > 0 {
		l.queue(c, &pb.BorrowDelta{ObjectId: id[:], BorrowerAddress: c.addr, Delta: -e.registered})
	}
}

// count is how many objects this process borrows.
func (t *borrowTable) count() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.m)
}

// send sends the pending removals and deltas to the owner, in order after
// every earlier request.
func (l *ownerLink) send(ctx context.Context, c *Core, deltas []*pb.BorrowDelta) ([][]byte, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.pmu.Lock()
	all := append(deltas, l.pending...)
	l.pending = nil
	l.pmu.Unlock()
	return l.post(ctx, c, all)
}

func (l *ownerLink) post(ctx context.Context, c *Core, deltas []*pb.BorrowDelta) ([][]byte, error) {
	if len(deltas) == 0 {
		return nil, nil
	}
	cc, err := c.conns.get(l.owner)
	if err != nil {
		return nil, err
	}
	resp, err := pb.NewWorkerServiceClient(cc).UpdateBorrows(ctx, &pb.UpdateBorrowsRequest{Deltas: deltas})
	if err != nil {
		if status.Code(err) == codes.Unavailable {
			return nil, errs.New(errs.KindOwnerDied, "", "the owner of the refs at %s is unreachable: %v", l.owner, status.Convert(err).Message())
		}
		return nil, errs.FromStatus(err)
	}
	return resp.GetUnknownObjectIds(), nil
}

// queue adds a removal for the next request, and makes sure one goes soon.
func (l *ownerLink) queue(c *Core, d *pb.BorrowDelta) {
	l.pmu.Lock()
	l.pending = append(l.pending, d)
	kick := !l.kicked
	l.kicked = true
	l.pmu.Unlock()
	if !kick {
		return
	}
	c.afterGather(func() {
		l.pmu.Lock()
		l.kicked = false
		l.pmu.Unlock()
		ctx, cancel := context.WithTimeout(c.ctx, 10*time.Second)
		defer cancel()
		if _, err := l.send(ctx, c, nil); err != nil && !errors.Is(err, context.Canceled) {
			c.log.Debug("tell an owner about dropped refs", "owner", l.owner, "err", err)
		}
	})
}

// afterGather runs f in the core's wait group once borrowFlushDelay has
// passed, so that a burst of requests (a GC cycle's cleanups) gathers into
// one; not at all once the core shuts down.
func (c *Core) afterGather(f func()) {
	if c.ctx.Err() != nil {
		return
	}
	c.wg.Go(func() {
		select {
		case <-time.After(borrowFlushDelay):
		case <-c.ctx.Done():
			return
		}
		f()
	})
}

// borrowFlushDelay gathers removals for one owner into one request.
const borrowFlushDelay = 5 * time.Millisecond

// borrowerMonitor pings the processes that borrow this process's objects,
// and drops the counts of one that stopped answering (it died: it will never
// report its refs dropped). Only addresses with counts are pinged.
type borrowerMonitor struct {
	mu      sync.Mutex
	watched map[string]bool // guarded by mu
}

// Borrower liveness: pinged every borrowerPing; declared gone after
// borrowerMisses pings in a row fail as unreachable.
const (
	borrowerPing   = time.Second
	borrowerMisses = 2
)

func (m *borrowerMonitor) watch(c *Core, who string) {
	m.mu.Lock()
	if m.watched[who] {
		m.mu.Unlock()
		return
	}
	if m.watched == nil {
		m.watched = map[string]bool{}
	}
	m.watched[who] = true
	m.mu.Unlock()
	if c.ctx.Err() != nil {
		return
	}
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		misses := 0
		t := time.NewTicker(borrowerPing)
		defer t.Stop()
		for {
			select {
			case <-t.C:
			case <-c.ctx.Done():
				m.mu.Lock()
				delete(m.watched, who)
				m.mu.Unlock()
				return
			}
			m.mu.Lock()
			if !c.objs.borrowsOf(who) { // lock order: monitor, then table
				delete(m.watched, who)
				m.mu.Unlock()
				return
			}
			m.mu.Unlock()
			if c.pingBorrower(who) {
				misses = 0
				continue
			}
			if misses++; misses >= borrowerMisses {
				m.mu.Lock()
				delete(m.watched, who)
				m.mu.Unlock()
				n := c.objs.dropBorrower(c, who)
				c.log.Info("a borrower of this process's objects is gone; dropped its refs", "borrower", who, "objects", n)
				return
			}
		}
	}()
}

// pingBorrower reports whether who answers, or fails otherwise than as
// unreachable.
func (c *Core) pingBorrower(who string) bool {
	cc, err := c.conns.get(who)
	if err != nil {
		return false
	}
	ctx, cancel := context.WithTimeout(c.ctx, 2*time.Second)
	defer cancel()
	_, err = pb.NewWorkerServiceClient(cc).Ping(ctx, &pb.PingRequest{})
	return err == nil || (status.Code(err) != codes.Unavailable && status.Code(err) != codes.DeadlineExceeded)
}

// storeFreer removes the stored copies of freed objects, batched per raylet,
// in the background.
type storeFreer struct {
	mu      sync.Mutex
	pending map[string][]ids.ObjectID // guarded by mu; "" is this node's raylet
	kicked  bool                      // guarded by mu
}

func (f *storeFreer) free(c *Core, copies []storedCopy) {
	f.mu.Lock()
	if f.pending == nil {
		f.pending = map[string][]ids.ObjectID{}
	}
	for _, s := range copies {
		r := s.raylet
		if r == c.raylet || (s.node == c.nodeID && s.raylet != "") {
			r = ""
		}
		f.pending[r] = append(f.pending[r], s.id)
	}
	kick := !f.kicked
	f.kicked = true
	f.mu.Unlock()
	if !kick {
		return
	}
	c.afterGather(func() {
		f.mu.Lock()
		batch := f.pending
		f.pending, f.kicked = nil, false
		f.mu.Unlock()
		for raylet, objs := range batch {
			c.freeCopies(raylet, objs)
		}
	})
}

// freeCopies asks a raylet ("" this node's) to free its copies of objs.
func (c *Core) freeCopies(raylet string, objs []ids.ObjectID) {
	req := &pb.FreeObjectsRequest{ObjectIds: make([][]byte, len(objs))}
	for i, id := range objs {
		req.ObjectIds[i] = id[:]
	}
	ctx, cancel := context.WithTimeout(c.ctx, 10*time.Second)
	defer cancel()
	var err error
	if raylet == "" {
		if c.node == nil {
			return
		}
		_, err = c.node.FreeObjects(ctx, req)
	} else {
		cc, cerr := c.conns.get(raylet)
		if cerr != nil {
			return
		}
		_, err = rpc.NewNodeClient(cc).FreeObjects(ctx, req)
	}
	if err != nil && c.ctx.Err() == nil {
		c.log.Debug("free stored copies", "raylet", raylet, "objects", len(objs), "err", err)
	}
}

// storePressure starts a GC once this process has stored gcStoredBytes
// since the last: stored objects cost the Go heap almost nothing, so the GC
// would otherwise find their dropped refs late while the store fills.
type storePressure struct {
	bytes   atomic.Int64
	running atomic.Bool
}

const gcStoredBytes = 64 << 20

func (p *storePressure) add(c *Core, n int64) {
	if p.bytes.Add(n) < gcStoredBytes || !p.running.CompareAndSwap(false, true) {
		return
	}
	p.bytes.Store(0)
	if c.ctx.Err() != nil {
		p.running.Store(false)
		return
	}
	c.wg.Go(func() {
		defer p.running.Store(false)
		runtime.GC()
	})
}

// ObjectCounts are the objects this process counts, for tests and status.
type ObjectCounts struct {
	Owned    int   // entries in the owner's table
	Borrowed int   // objects borrowed from other owners
	Lineage  int   // lineage entries kept for reconstruction
	Freed    int64 // objects freed since start
}

// ObjectCounts reports this process's object tables' sizes.
func (c *Core) ObjectCounts() ObjectCounts {
	c.objs.mu.Lock()
	owned := len(c.objs.m)
	c.objs.mu.Unlock()
	c.lin.mu.Lock()
	lin := len(c.lin.m)
	c.lin.mu.Unlock()
	return ObjectCounts{Owned: owned, Borrowed: c.borrows.count(), Lineage: lin, Freed: c.freedObjects.Load()}
}

// addCopy records that raylet may hold a copy of e's object.
func (t *objectTable) addCopy(e *objEntry, raylet string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, r := range e.copies {
		if r == raylet {
			return
		}
	}
	e.copies = append(e.copies, raylet)
}

// handOn registers borrower (the caller of a task) with the owners of the
// refs inside the task's result, one count per ref, before the result is
// sent: this process holds them until then. It returns the refs for the
// reply.
func (c *Core) handOn(ctx context.Context, borrower string, hs []*handle) ([]*pb.ObjectRef, error) {
	refs := make([]*pb.ObjectRef, 0, len(hs))
	byOwner := map[string][]*pb.BorrowDelta{}
	for _, h := range hs {
		refs = append(refs, h.info.Proto())
		byOwner[h.info.Owner] = append(byOwner[h.info.Owner], &pb.BorrowDelta{ObjectId: h.info.ID[:], BorrowerAddress: borrower, Delta: 1})
	}
	for owner, deltas := range byOwner {
		if owner == c.addr {
			if unknown := c.objs.addBorrows(c, deltas); len(unknown) > 0 {
				id, _ := ids.ParseObjectID(unknown[0])
				return nil, errFreed(id)
			}
			continue
		}
		c.borrows.mu.Lock()
		l := c.borrows.link(owner)
		c.borrows.mu.Unlock()
		unknown, err := l.send(ctx, c, deltas)
		if err != nil {
			return nil, err
		}
		if len(unknown) > 0 {
			id, _ := ids.ParseObjectID(unknown[0])
			return nil, errFreed(id)
		}
	}
	for _, h := range hs {
		runtime.KeepAlive(h)
	}
	return refs, nil
}

// Owns reports whether this process still keeps object id.
func (c *Core) Owns(id ids.ObjectID) bool {
	_, ok := c.objs.lookup(id)
	return ok
}

// HasLineage reports whether this process keeps lineage to rebuild object
// id.
func (c *Core) HasLineage(id ids.ObjectID) bool {
	c.lin.mu.Lock()
	defer c.lin.mu.Unlock()
	_, ok := c.lin.m[id]
	return ok
}
