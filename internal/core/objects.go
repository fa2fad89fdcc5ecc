package core

import (
	"context"
	"fmt"
	"sync"

	"github.com/goray/goray/internal/errs"
	"github.com/goray/goray/internal/ids"
	pb "github.com/goray/goray/proto/goray/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// RefInfo names an object and its owner.
type RefInfo struct {
	ID          ids.ObjectID
	Owner       string // the owner's WorkerService address
	OwnerWorker ids.WorkerID
}

// Proto is r on the wire.
func (r RefInfo) Proto() *pb.ObjectRef {
	return &pb.ObjectRef{ObjectId: r.ID[:], OwnerAddress: r.Owner, OwnerWorkerId: r.OwnerWorker[:]}
}

// Arg is r as a call argument.
func (r RefInfo) Arg() *pb.Arg { return &pb.Arg{Kind: &pb.Arg_Ref{Ref: r.Proto()}} }

// RefFromProto reads a wire ref.
func RefFromProto(p *pb.ObjectRef) (RefInfo, error) {
	id, err := ids.ParseObjectID(p.GetObjectId())
	if err != nil {
		return RefInfo{}, err
	}
	r := RefInfo{ID: id, Owner: p.GetOwnerAddress()}
	if len(p.GetOwnerWorkerId()) > 0 {
		if r.OwnerWorker, err = ids.ParseWorkerID(p.GetOwnerWorkerId()); err != nil {
			return RefInfo{}, err
		}
	}
	return r, nil
}

// objEntry is one object this process owns. done closes once, when value,
// loc or err is set. The counts below it are guarded by the table's lock
// (refcount.go says what holds an object).
type objEntry struct {
	done  chan struct{}
	once  sync.Once
	value *pb.Payload
	loc   *pb.ObjectLocation
	err   error

	c  *Core // nil for entries of unit tests
	id ids.ObjectID

	// guarded by objectTable.mu:
	local       int32            // holds in this process: handles, refs in values it keeps
	selfBorrows int32            // counts registered for this process by executors, until settled
	borrowers   map[string]int32 // other processes' counts, by WorkerService address
	contained   []RefInfo        // refs inside the value, held while this entry lives
	copies      []string         // raylets, besides loc's, that may hold a copy
	replicas    *replicaSet      // the copies of a replicated put (replicas.go); nil otherwise
	holds       []*handle        // the call's arguments, held until it completes
	settled     bool             // the outcome is recorded (settle ran)
	freed       bool             // no longer in the table
}

// closedDone is the done channel of entries made complete (puts).
var closedDone = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

func (e *objEntry) setValue(p *pb.Payload) { e.once.Do(func() { e.value = p; close(e.done) }) }
func (e *objEntry) setLocation(l *pb.ObjectLocation) {
	e.once.Do(func() { e.loc = l; close(e.done) })
}
func (e *objEntry) setError(err error) { e.once.Do(func() { e.err = err; close(e.done) }) }

func (e *objEntry) ready() bool {
	select {
	case <-e.done:
		return true
	default:
		return false
	}
}

// objectTable is the owner's table of the objects this process owns (Ray's
// reference table): an entry per object made by a put or a submitted call,
// completed once by the call's reply, with the counts that keep it (see
// refcount.go); an entry goes when its last hold does. SDK calls (Put,
// Get, Wait, Release), handle cleanups, the submitters' reply callbacks and
// the worker service's GetObject and UpdateBorrows call it from their
// goroutines; mu guards m, byBorrower and every entry's counts, and each
// entry completes at most once (its own once). Lock order: mu, then the
// lineage's.
type objectTable struct {
	mu         sync.Mutex
	m          map[ids.ObjectID]*objEntry // guarded by mu
	byBorrower map[string]int             // guarded by mu: entries counting each borrower
}

func newObjectTable() *objectTable { return &objectTable{m: map[ids.ObjectID]*objEntry{}} }

// create adds the entry of a new object, with one hold: the caller's
// handle.
func (t *objectTable) create(id ids.ObjectID, e *objEntry) {
	e.local = 1
	t.mu.Lock()
	t.m[id] = e
	t.mu.Unlock()
}

func (t *objectTable) lookup(id ids.ObjectID) (*objEntry, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	e, ok := t.m[id]
	return e, ok
}

// newRef makes the entry and the ref of a new object this process owns,
// whose outcome a call will settle.
func (c *Core) newRef(id ids.ObjectID) (Ref, *objEntry) {
	e := &objEntry{done: make(chan struct{}), c: c, id: id}
	c.objs.create(id, e)
	return Ref{h: c.newHandle(RefInfo{ID: id, Owner: c.addr, OwnerWorker: c.workerID}, true)}, e
}

// newSettled makes the entry and the ref of an object whose value or
// location is here already, holding the refs inside it.
func (c *Core) newSettled(id ids.ObjectID, value *pb.Payload, loc *pb.ObjectLocation, contained []*handle) Ref {
	return c.settledRef(&objEntry{done: closedDone, value: value, loc: loc, settled: true, c: c, id: id}, contained)
}

// FailedRef is a ref of its own, with an ID, whose Get returns err: for
// clients that address refs by ID (the gateway), where a call that could
// not be made still needs a ref of its own.
func (c *Core) FailedRef(err error) Ref {
	id := c.nextPutID()
	return c.settledRef(&objEntry{done: closedDone, err: err, settled: true, c: c, id: id}, nil)
}

// settledRef adds e, complete already, to the table and returns its ref.
func (c *Core) settledRef(e *objEntry, contained []*handle) Ref {
	id := e.id
	e.once.Do(func() {}) // complete: later sets are no-ops
	if len(contained) > 0 {
		e.contained = c.holdContained(contained)
	}
	c.objs.create(id, e)
	return Ref{h: c.newHandle(RefInfo{ID: id, Owner: c.addr, OwnerWorker: c.workerID}, true)}
}

// holdContained takes one more hold on each ref inside a value this process
// keeps (its handles show this process holds them already), returning them.
func (c *Core) holdContained(hs []*handle) []RefInfo {
	out := make([]RefInfo, 0, len(hs))
	for _, h := range hs {
		if h == nil || h.err != nil || h.released.Load() {
			continue
		}
		var ok bool
		if h.owned {
			ok = c.objs.acquire(h.info.ID)
		} else {
			ok = c.borrows.hold(h.info.ID)
		}
		if ok {
			out = append(out, h.info)
		}
	}
	return out
}

func (c *Core) nextPutID() ids.ObjectID {
	c.putMu.Lock()
	defer c.putMu.Unlock()
	c.putIdx++
	if c.putIdx == 0 { // wrapped: start a fresh put task
		c.putTID = ids.NewTaskID(c.jobID)
		c.putIdx = 1
	}
	return c.putTID.ObjectID(c.putIdx)
}

// Put stores v as a new object owned by this process. Refs inside v are
// held while the object lives.
func (c *Core) Put(ctx context.Context, v any) (Ref, error) {
	p, contained, err := c.encode(v)
	if err != nil {
		return Ref{}, errs.New(errs.KindInvalidArgument, "", "put: %v", err)
	}
	return c.putPayload(ctx, p, contained)
}

// PutPayload stores an encoded value as a new object owned by this process.
func (c *Core) PutPayload(ctx context.Context, p *pb.Payload) (Ref, error) {
	return c.putPayload(ctx, p, nil)
}

func (c *Core) putPayload(ctx context.Context, p *pb.Payload, contained []*handle) (Ref, error) {
	id := c.nextPutID()
	if len(p.GetData()) < InlineLimit {
		if len(contained) == 0 {
			// Kept in its ref alone until the ref leaves the process.
			return Ref{h: &handle{c: c, info: RefInfo{ID: id, Owner: c.addr, OwnerWorker: c.workerID}, owned: true, value: p}}, nil
		}
		return c.newSettled(id, p, nil, contained), nil
	}
	loc, err := c.storePayload(ctx, id, p)
	if err != nil {
		if c.localNodeGone(ctx, err) {
			return Ref{}, c.errLocalNodeGone(fmt.Sprintf("put a %d-byte value", len(p.GetData())), err)
		}
		return Ref{}, err
	}
	c.pressure.add(c, int64(len(p.GetData())))
	return c.newSettled(id, nil, loc, contained), nil
}

// GetPayload waits for the object r names and returns its encoded value.
func (c *Core) GetPayload(ctx context.Context, r RefInfo) (*pb.Payload, error) {
	return c.getPayload(ctx, r, false)
}

// GetPayloadView is GetPayload, but raw bytes held in the node's arena come
// back as a read-only view of it, not a copy (objectstore.View).
func (c *Core) GetPayloadView(ctx context.Context, r RefInfo) (*pb.Payload, error) {
	return c.getPayload(ctx, r, true)
}

func (c *Core) getPayload(ctx context.Context, r RefInfo, view bool) (*pb.Payload, error) {
	lost := false
	for attempt := 0; ; attempt++ {
		value, loc, err := c.locateLost(ctx, r, lost)
		if err != nil {
			return nil, err
		}
		if value != nil {
			return value, nil
		}
		loc = nearestFirst(loc, c.nodeID)
		p, err := c.readStored(ctx, r.ID, loc, view)
		if err != nil && ctx.Err() == nil && c.localNodeGone(ctx, err) {
			// This process's node is gone: read from a holder (peers.go).
			for _, at := range copiesOf(loc) {
				if p, err = c.pullWithoutNode(ctx, r.ID, at); err == nil || ctx.Err() != nil {
					break
				}
			}
		}
		if err == nil || ctx.Err() != nil || attempt >= maxRebuilds {
			return p, err
		}
		// The copy at loc is gone (its node died): the owner rebuilds the
		// object from lineage, if it can, and says where it is now.
		c.log.Info("object lost at its location; asking its owner to rebuild it", "object", r.ID, "node", fmt.Sprintf("%x", loc.GetNodeId()), "err", err)
		if r.Owner == c.addr {
			if rerr := c.reconstruct(r.ID, loc); rerr != nil {
				return nil, errs.New(errs.KindObjectLost, "", "object %s was lost with its node and cannot be rebuilt: %v (read error: %v)", r.ID, rerr, err)
			}
		}
		lost = true
	}
}

// maxRebuilds bounds how often one Get asks for an object to be rebuilt.
const maxRebuilds = 3

// locateLost is locate; with lost it first tells a remote owner that the
// location it gave could not be read.
func (c *Core) locateLost(ctx context.Context, r RefInfo, lost bool) (*pb.Payload, *pb.ObjectLocation, error) {
	if !lost || r.Owner == c.addr {
		return c.locate(ctx, r)
	}
	return c.askOwner(ctx, r, true)
}

// locate waits until the object is ready and returns its inline value or its
// location.
func (c *Core) locate(ctx context.Context, r RefInfo) (*pb.Payload, *pb.ObjectLocation, error) {
	if r.Owner == c.addr {
		e, ok := c.objs.lookup(r.ID)
		if !ok {
			return nil, nil, errs.New(errs.KindObjectLost, "", "object %s is not known to this process, its owner", r.ID)
		}
		select {
		case <-e.done:
		case <-ctx.Done():
			return nil, nil, errs.Context(ctx.Err(), "get object "+r.ID.String())
		}
		return e.value, c.readLocation(e), e.err
	}
	return c.askOwner(ctx, r, false)
}

// Ready reports, without blocking, whether r is an object this process owns
// whose value or error is there.
func (c *Core) Ready(r RefInfo) bool {
	if r.Owner != c.addr {
		return false
	}
	e, ok := c.objs.lookup(r.ID)
	return ok && e.ready()
}

// readyValue is the inline value of an object this process owns once it is
// there; nil while it is pending, failed, stored, or owned elsewhere.
func (c *Core) readyValue(r RefInfo) *pb.Payload {
	if r.Owner != c.addr {
		return nil
	}
	e, ok := c.objs.lookup(r.ID)
	if !ok || !e.ready() {
		return nil
	}
	return e.value
}

// askOwner asks the object's owner for it (GetObject), which waits until it
// is ready; lost says the location it gave before could not be read.
func (c *Core) askOwner(ctx context.Context, r RefInfo, lost bool) (*pb.Payload, *pb.ObjectLocation, error) {
	cc, err := c.conns.get(r.Owner)
	if err != nil {
		return nil, nil, err
	}
	resp, err := pb.NewWorkerServiceClient(cc).GetObject(ctx, &pb.GetObjectRequest{ObjectId: r.ID[:], LocationLost: lost, ReaderRayletAddress: c.raylet})
	if err != nil {
		if ctx.Err() != nil {
			return nil, nil, errs.Context(ctx.Err(), "get object "+r.ID.String())
		}
		if status.Code(err) == codes.Unavailable {
			return nil, nil, errs.New(errs.KindOwnerDied, "", "the owner of object %s at %s is unreachable: %v", r.ID, r.Owner, status.Convert(err).Message())
		}
		return nil, nil, fmt.Errorf("get object %s from its owner at %s: %w", r.ID, r.Owner, errs.FromStatus(err))
	}
	switch x := resp.GetResult().(type) {
	case *pb.GetObjectResponse_Value:
		return x.Value, nil, nil
	case *pb.GetObjectResponse_Stored:
		return nil, x.Stored, nil
	case *pb.GetObjectResponse_Error:
		return nil, nil, errs.FromProto(x.Error)
	default:
		return nil, nil, fmt.Errorf("get object %s: empty reply from its owner", r.ID)
	}
}

// WaitReady blocks until the object is ready (or failed) or ctx ends; it
// returns only ctx's error.
func (c *Core) WaitReady(ctx context.Context, r RefInfo) error {
	if r.Owner == c.addr { // own object: wait on its entry, no error to build
		e, ok := c.objs.lookup(r.ID)
		if !ok {
			return nil // lost: Get reports it
		}
		select {
		case <-e.done:
			return nil
		case <-ctx.Done():
			return errs.Context(ctx.Err(), "wait for object "+r.ID.String())
		}
	}
	_, _, err := c.locate(ctx, r)
	if ctx.Err() != nil {
		return err
	}
	return nil
}

// ValueArg encodes v as a call argument, putting it into the object store
// when it is too large to travel inline; the call holds the refs inside it.
func (c *Core) ValueArg(ctx context.Context, v any, a *Args) error {
	p, contained, err := c.encode(v)
	if err != nil {
		return errs.New(errs.KindInvalidArgument, "", "%v", err)
	}
	a.holds = append(a.holds, contained...)
	return c.PayloadArg(ctx, p, a)
}

// PayloadArg makes an encoded value a call argument, storing it first when
// it is too large to travel inline (the call holds the stored object).
func (c *Core) PayloadArg(ctx context.Context, p *pb.Payload, a *Args) error {
	if len(p.GetData()) < InlineLimit {
		a.Wire = append(a.Wire, &pb.Arg{Kind: &pb.Arg_Value{Value: p}})
		return nil
	}
	ref, err := c.PutPayload(ctx, p)
	if err != nil {
		return err
	}
	a.Add(ref.h.info.Arg(), ref)
	return nil
}
