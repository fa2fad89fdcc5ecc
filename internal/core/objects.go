package core

import (
	"context"
	"fmt"
	"sync"

	"github.com/goray/goray/internal/codec"
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
// loc or err is set.
type objEntry struct {
	done  chan struct{}
	once  sync.Once
	value *pb.Payload
	loc   *pb.ObjectLocation
	err   error
}

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
// reference table, without counting yet): an entry per ref made by a put or
// a submitted call, completed once by the call's reply. SDK calls (Put, Get,
// Wait, Release), the submitters' reply callbacks and the worker service's
// GetObject call it from their goroutines; mu guards m, and each entry
// completes at most once (its own once).
type objectTable struct {
	mu sync.Mutex
	m  map[ids.ObjectID]*objEntry // guarded by mu
}

func newObjectTable() *objectTable { return &objectTable{m: map[ids.ObjectID]*objEntry{}} }

func (t *objectTable) create(id ids.ObjectID) *objEntry {
	e := &objEntry{done: make(chan struct{})}
	t.mu.Lock()
	t.m[id] = e
	t.mu.Unlock()
	return e
}

func (t *objectTable) lookup(id ids.ObjectID) (*objEntry, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	e, ok := t.m[id]
	return e, ok
}

func (c *Core) newRef(id ids.ObjectID) (RefInfo, *objEntry) {
	return RefInfo{ID: id, Owner: c.addr, OwnerWorker: c.workerID}, c.objs.create(id)
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

// Put stores v as a new object owned by this process.
func (c *Core) Put(ctx context.Context, v any) (RefInfo, error) {
	p, err := codec.Encode(v)
	if err != nil {
		return RefInfo{}, errs.New(errs.KindInvalidArgument, "", "put: %v", err)
	}
	return c.PutPayload(ctx, p)
}

// PutPayload stores an encoded value as a new object owned by this process.
func (c *Core) PutPayload(ctx context.Context, p *pb.Payload) (RefInfo, error) {
	id := c.nextPutID()
	if len(p.GetData()) < InlineLimit {
		ref, e := c.newRef(id)
		e.setValue(p)
		return ref, nil
	}
	loc, err := c.storePayload(ctx, id, p)
	if err != nil {
		if c.localNodeGone(ctx, err) {
			return RefInfo{}, c.errLocalNodeGone(fmt.Sprintf("put a %d-byte value", len(p.GetData())), err)
		}
		return RefInfo{}, err
	}
	ref, e := c.newRef(id)
	e.setLocation(loc)
	return ref, nil
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
		p, err := c.readStored(ctx, r.ID, loc, view)
		if err != nil && ctx.Err() == nil && c.localNodeGone(ctx, err) {
			// This process's node is gone: read from the holder (peers.go).
			p, err = c.pullWithoutNode(ctx, r.ID, loc)
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
		return e.value, e.loc, e.err
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
	resp, err := pb.NewWorkerServiceClient(cc).GetObject(ctx, &pb.GetObjectRequest{ObjectId: r.ID[:], LocationLost: lost})
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

// FailedRef makes a ref whose Get returns err at once.
func (c *Core) FailedRef(err error) RefInfo {
	id := c.nextPutID()
	ref, e := c.newRef(id)
	e.setError(err)
	return ref
}

// ValueArg encodes v as a call argument, putting it into the object store
// when it is too large to travel inline.
func (c *Core) ValueArg(ctx context.Context, v any) (*pb.Arg, error) {
	p, err := codec.Encode(v)
	if err != nil {
		return nil, errs.New(errs.KindInvalidArgument, "", "%v", err)
	}
	return c.PayloadArg(ctx, p)
}
