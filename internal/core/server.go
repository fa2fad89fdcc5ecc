package core

import (
	"context"
	"fmt"
	"reflect"
	"runtime/debug"
	"sync"

	"github.com/goray/goray/internal/errs"
	"github.com/goray/goray/internal/ids"
	pb "github.com/goray/goray/proto/goray/v1"
	"google.golang.org/grpc/status"
)

// workerServer is the WorkerService of every driver and worker process.
type workerServer struct {
	pb.UnimplementedWorkerServiceServer
	c *Core
}

func (s *workerServer) Execute(stream pb.WorkerService_ExecuteServer) error {
	ctx := stream.Context()
	var mu sync.Mutex
	closed := false
	reply := func(r *pb.ExecuteResponse) {
		mu.Lock()
		defer mu.Unlock()
		if !closed {
			_ = stream.Send(r)
		}
	}
	defer func() {
		mu.Lock()
		closed = true
		mu.Unlock()
	}()
	// The stream's calls not yet answered, by call ID, for its caller's
	// cancels.
	var callsMu sync.Mutex
	calls := map[uint64]*call{}
	// The tasks of this stream run in arrival order, one at a time, in one
	// goroutine that ends with the stream: the caller holds one lease (one
	// CPU) on this worker and may send several of its tasks ahead. Those
	// still queued when the stream ends are dropped: the caller fails them
	// (and retries them elsewhere).
	var tasks *mailbox[*call]
	var runner sync.WaitGroup
	defer runner.Wait()
	for {
		req, err := stream.Recv()
		if err != nil {
			return nil
		}
		if cc := req.GetCancel(); cc != nil {
			callsMu.Lock()
			target := calls[cc.GetTargetCallId()]
			callsMu.Unlock()
			// Apart from the loop: a recursive cancel sends the cancels
			// of the call's children, and the ack follows them.
			id := req.GetCallId()
			runner.Go(func() {
				if target != nil {
					s.c.cancelCall(target, cc.GetRecursive(), cc.GetForce())
				}
				reply(&pb.ExecuteResponse{CallId: id})
			})
			continue
		}
		spec := req.GetTask()
		if spec == nil {
			reply(errorReply(req.GetCallId(), errs.New(errs.KindInvalidArgument, "", "execute request without a task or a cancel")))
			continue
		}
		cl := &call{ctx: ctx, id: req.GetCallId(), spec: spec, reply: reply}
		callsMu.Lock()
		calls[cl.id] = cl
		callsMu.Unlock()
		cl.forget = func() {
			callsMu.Lock()
			if calls[cl.id] == cl {
				delete(calls, cl.id)
			}
			callsMu.Unlock()
		}
		if len(spec.GetActorId()) > 0 {
			id, err := ids.ParseActorID(spec.GetActorId())
			if err == nil {
				err = s.c.host.enqueue(id, cl)
			}
			if err != nil {
				cl.answer(errorReply(req.GetCallId(), err))
			}
			continue
		}
		if tasks == nil {
			tasks = newMailbox[*call]()
			runner.Go(func() {
				for cl, ok := tasks.next(); ok; cl, ok = tasks.next() {
					if rctx, ok := cl.begin(); ok {
						cl.end(s.c.runTask(rctx, cl.id, cl.spec))
					}
				}
			})
			defer tasks.close()
		}
		tasks.put(cl)
	}
}

func (s *workerServer) ConstructActor(_ context.Context, req *pb.ConstructActorRequest) (*pb.ConstructActorResponse, error) {
	if !s.c.worker {
		return nil, errs.New(errs.KindInvalidArgument, req.GetSpec().GetTypeName(), "this process is a driver: actors run in worker processes; ask a raylet (NodeService.CreateActor) to place it")
	}
	if err := s.c.host.create(req.GetSpec(), req.GetIncarnation()); err != nil {
		return nil, err
	}
	return &pb.ConstructActorResponse{}, nil
}

func (s *workerServer) DestroyActor(_ context.Context, req *pb.DestroyActorRequest) (*pb.DestroyActorResponse, error) {
	id, err := ids.ParseActorID(req.GetActorId())
	if err != nil {
		return nil, errs.New(errs.KindInvalidArgument, "", "%v", err)
	}
	a := s.c.host.kill(id)
	if a == nil {
		return &pb.DestroyActorResponse{}, nil
	}
	// Its calls failed with ErrActorDied and their contexts are
	// cancelled: wait briefly for the methods to return, and tell the
	// raylet about those that do not (it may end this process).
	stuck := a.waitStopped(killGrace)
	if stuck > 0 {
		s.c.log.Warn("a killed actor's methods ignore their cancelled context and still run", "actor", id, "type", a.typ.Name, "calls", stuck)
	}
	return &pb.DestroyActorResponse{StuckCalls: uint32(stuck)}, nil
}

func (s *workerServer) GetObject(ctx context.Context, req *pb.GetObjectRequest) (*pb.GetObjectResponse, error) {
	id, err := ids.ParseObjectID(req.GetObjectId())
	if err != nil {
		return nil, errs.New(errs.KindInvalidArgument, "", "%v", err)
	}
	e, ok := s.c.objs.lookup(id)
	if ok && req.GetLocationLost() && e.ready() && e.loc != nil {
		// A borrower could not read the object where we said it was.
		if err := s.c.reconstruct(id, e.loc); err != nil {
			return &pb.GetObjectResponse{Result: &pb.GetObjectResponse_Error{Error: errs.New(errs.KindObjectLost, "",
				"object %s was lost with its node and cannot be rebuilt: %v", id, err).Proto()}}, nil
		}
		e, ok = s.c.objs.lookup(id)
	}
	if !ok {
		if id.Job() == s.c.jobID {
			return &pb.GetObjectResponse{Result: &pb.GetObjectResponse_Error{Error: errs.New(errs.KindObjectFreed, "",
				"object %s is not held by its owner any more: every ref to it was dropped or released, or the ref was not made by this process", id).Proto()}}, nil
		}
		return &pb.GetObjectResponse{Result: &pb.GetObjectResponse_Error{Error: errs.New(errs.KindObjectLost, "",
			"object %s is not known to its owner (it was freed, or the ref was not made by this process)", id).Proto()}}, nil
	}
	if !e.ready() {
		s.c.waitingGets.Add(1)
		select {
		case <-e.done:
		case <-ctx.Done():
		}
		s.c.waitingGets.Add(-1)
		if !e.ready() {
			return nil, status.FromContextError(ctx.Err()).Err()
		}
	}
	switch {
	case e.err != nil:
		return &pb.GetObjectResponse{Result: &pb.GetObjectResponse_Error{Error: errs.ToProto(e.err)}}, nil
	case e.loc != nil:
		if r := req.GetReaderRayletAddress(); r != "" && r != e.loc.GetRayletAddress() {
			s.c.objs.addCopy(e, r)
		}
		return &pb.GetObjectResponse{Result: &pb.GetObjectResponse_Stored{Stored: s.c.readLocation(e)}}, nil
	default:
		return &pb.GetObjectResponse{Result: &pb.GetObjectResponse_Value{Value: e.value}}, nil
	}
}

// UpdateBorrows applies borrowers' count changes to objects this process
// owns.
func (s *workerServer) UpdateBorrows(_ context.Context, req *pb.UpdateBorrowsRequest) (*pb.UpdateBorrowsResponse, error) {
	if n := len(req.GetDeltas()); n > maxBorrowDeltas {
		return nil, errs.New(errs.KindInvalidArgument, "", "UpdateBorrows: %d deltas, at most %d allowed", n, maxBorrowDeltas)
	}
	for _, d := range req.GetDeltas() {
		if _, err := ids.ParseObjectID(d.GetObjectId()); err != nil {
			return nil, errs.New(errs.KindInvalidArgument, "", "UpdateBorrows: %v", err)
		}
		if d.GetDelta() == 0 || d.GetBorrowerAddress() == "" {
			return nil, errs.New(errs.KindInvalidArgument, "", "UpdateBorrows: a delta needs a borrower address and a non-zero count")
		}
	}
	return &pb.UpdateBorrowsResponse{UnknownObjectIds: s.c.objs.addBorrows(s.c, req.GetDeltas())}, nil
}

// maxBorrowDeltas bounds one UpdateBorrows request.
const maxBorrowDeltas = 1_000_000

// CancelCall cancels a call this process submitted, for a process that
// borrows its result's ref (task.Cancel there).
func (s *workerServer) CancelCall(ctx context.Context, req *pb.CancelCallRequest) (*pb.CancelCallResponse, error) {
	id, err := ids.ParseObjectID(req.GetObjectId())
	if err != nil {
		return nil, errs.New(errs.KindInvalidArgument, "", "CancelCall: %v", err)
	}
	info := RefInfo{ID: id, Owner: s.c.addr, OwnerWorker: s.c.workerID}
	if err := s.c.Cancel(ctx, info, req.GetForce(), req.GetRecursive()); err != nil {
		return nil, err
	}
	return &pb.CancelCallResponse{}, nil
}

// Ping answers an owner checking that this borrower lives.
func (s *workerServer) Ping(context.Context, *pb.PingRequest) (*pb.PingResponse, error) {
	return &pb.PingResponse{WorkerId: s.c.workerID[:]}, nil
}

func (c *Core) runTask(ctx context.Context, callID uint64, spec *pb.TaskSpec) *pb.ExecuteResponse {
	name := spec.GetFunctionName()
	fn, ok := LookupFn(name)
	if !ok {
		return errorReply(callID, errs.New(errs.KindNotFound, name, "function %q is not registered in the job's program: register it with task.Register at package level, before runtime.Init", name))
	}
	args, err := c.decodeArgs(ctx, spec.GetArgs(), fn.ArgTypes, name)
	if err != nil {
		return errorReply(callID, err)
	}
	var out any
	err = invoke(name, func() (any, error) {
		var err error
		out, err = fn.Call(ctx, args)
		return out, err
	})
	return c.resultReply(ctx, callID, spec, out, err)
}

// decodeArgs resolves ref arguments and decodes each into the type the
// callee declares.
func (c *Core) decodeArgs(ctx context.Context, args []*pb.Arg, types []reflect.Type, name string) ([]any, error) {
	if len(args) != len(types) {
		return nil, errs.New(errs.KindInvalidArgument, name, "%s takes %d argument(s), got %d", name, len(types), len(args))
	}
	out := make([]any, len(args))
	for i, a := range args {
		var p *pb.Payload
		switch k := a.GetKind().(type) {
		case *pb.Arg_Value:
			p = k.Value
		case *pb.Arg_Ref:
			ref, err := RefFromProto(k.Ref)
			if err != nil {
				return nil, errs.New(errs.KindInvalidArgument, name, "argument %d: %v", i+1, err)
			}
			if p, err = c.GetPayload(ctx, ref); err != nil {
				return nil, fmt.Errorf("argument %d of %s: %w", i+1, name, err)
			}
		default:
			return nil, errs.New(errs.KindInvalidArgument, name, "argument %d of %s is empty", i+1, name)
		}
		v, err := c.decodeTo(ctx, p, types[i])
		if err != nil {
			return nil, errs.New(errs.KindInvalidArgument, name, "argument %d of %s: %v", i+1, name, err)
		}
		if v.IsValid() {
			out[i] = v.Interface()
		}
	}
	return out, nil
}

// invoke runs user code, turning a panic into a task error with the stack.
func invoke(name string, f func() (any, error)) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = &errs.Error{Kind: errs.KindTaskFailed, Name: name, Message: fmt.Sprintf("panic: %v", r), RemoteStack: string(debug.Stack())}
		}
	}()
	if _, err := f(); err != nil {
		if e, ok := err.(*errs.Error); ok {
			return e
		}
		return &errs.Error{Kind: errs.KindTaskFailed, Name: name, Message: err.Error()}
	}
	return nil
}

func (c *Core) resultReply(ctx context.Context, callID uint64, spec *pb.TaskSpec, out any, err error) *pb.ExecuteResponse {
	if err != nil {
		return errorReply(callID, c.stamp(err))
	}
	p, contained, err := c.encode(out)
	if err != nil {
		return errorReply(callID, errs.New(errs.KindTaskFailed, spec.GetFunctionName()+spec.GetMethodName(), "encode result: %v", err))
	}
	var refs []*pb.ObjectRef
	if len(contained) > 0 {
		// The caller holds these once it reads the reply: register it as
		// their borrower first, while this process still holds them.
		if refs, err = c.handOn(ctx, spec.GetCallerAddress(), contained); err != nil {
			return errorReply(callID, errs.New(errs.KindTaskFailed, spec.GetFunctionName()+spec.GetMethodName(), "pass on the refs in the result: %v", err))
		}
	}
	if len(p.GetData()) < InlineLimit {
		return &pb.ExecuteResponse{CallId: callID, Result: &pb.ExecuteResponse_Value{Value: p}, Contained: refs}
	}
	id, err := ids.ParseObjectID(spec.GetReturnObjectId())
	if err != nil {
		return errorReply(callID, errs.New(errs.KindInvalidArgument, "", "return object: %v", err))
	}
	loc, err := c.storePayload(ctx, id, p)
	if err != nil {
		return errorReply(callID, err)
	}
	return &pb.ExecuteResponse{CallId: callID, Result: &pb.ExecuteResponse_Stored{Stored: loc}, Contained: refs}
}

// stamp adds where an error happened.
func (c *Core) stamp(err error) error {
	if e, ok := err.(*errs.Error); ok && e.NodeID == nil {
		e.NodeID, e.WorkerID = c.nodeID[:], c.workerID[:]
	}
	return err
}

func errorReply(callID uint64, err error) *pb.ExecuteResponse {
	return &pb.ExecuteResponse{CallId: callID, Result: &pb.ExecuteResponse_Error{Error: errs.ToProto(err)}}
}
