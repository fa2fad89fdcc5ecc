package core

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/goray/goray/internal/errs"
	"github.com/goray/goray/internal/ids"
	pb "github.com/goray/goray/proto/goray/v1"
)

const leaseReturnTimeout = 2 * time.Second

// ActorOptions shape an actor's creation.
type ActorOptions struct {
	// Name makes the actor findable by name within Namespace.
	Name      string
	Namespace string
	// Resources held while the actor lives. Empty: the actor needs 1 CPU to
	// be placed and holds none while it runs (Ray's default).
	Resources      map[string]float64
	MaxConcurrency int
}

// errNoActor is the error of a call on a zero actor handle, such as the one a
// failed Spawn returns.
func errNoActor() error {
	return errs.New(errs.KindInvalidArgument, "", "call on a zero actor handle: use the handle a successful actor.Spawn or actor.Get returned")
}

// callErr is the error of a failed call to the head made with the caller's
// ctx: the context's own error when it ended (so errors.Is(err,
// context.DeadlineExceeded) holds, as for Get), else the goray error the
// head sent.
func callErr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		if ge := errs.FromStatus(err); errors.As(ge, new(*errs.Error)) {
			return fmt.Errorf("%w (%w)", ctx.Err(), ge)
		}
		return ctx.Err()
	}
	return errs.FromStatus(err)
}

// ActorHandle is this process's handle to one actor.
type ActorHandle struct {
	ID         ids.ActorID
	TypeName   string
	Name       string
	WorkerAddr string
}

func handleFromInfo(info *pb.ActorInfo) (*ActorHandle, error) {
	id, err := ids.ParseActorID(info.GetSpec().GetActorId())
	if err != nil {
		return nil, err
	}
	return &ActorHandle{ID: id, TypeName: info.GetSpec().GetTypeName(), Name: info.GetSpec().GetName(), WorkerAddr: info.GetWorkerAddress()}, nil
}

// CreateActor asks the head to place and start an actor of a registered type
// and returns when it runs.
func (c *Core) CreateActor(ctx context.Context, typeName string, opts ActorOptions) (*ActorHandle, error) {
	if _, ok := LookupActorType(typeName); !ok {
		return nil, errs.New(errs.KindNotFound, typeName, "actor type %q is not registered: register it with actor.Register at package level (before runtime.Init) in the job's program", typeName)
	}
	ns := opts.Namespace
	if ns == "" {
		ns = c.namespace
	}
	spec := &pb.ActorSpec{
		ActorId: func() []byte { id := ids.NewActorID(c.jobID); return id[:] }(),
		JobId:   c.jobID[:], TypeName: typeName, Name: opts.Name, Namespace: ns,
		OwnerAddress: c.addr, MaxConcurrency: uint32(max(opts.MaxConcurrency, 1)),
	}
	if len(opts.Resources) == 0 {
		spec.PlacementResources = &pb.Resources{Amounts: map[string]float64{"CPU": 1}}
		spec.Resources = &pb.Resources{}
	} else {
		spec.PlacementResources = &pb.Resources{Amounts: opts.Resources}
		spec.Resources = &pb.Resources{Amounts: opts.Resources}
	}
	resp, err := c.head.CreateActor(ctx, &pb.CreateActorRequest{Spec: spec})
	if err != nil {
		return nil, fmt.Errorf("create actor %q: %w", typeName, callErr(ctx, err))
	}
	return handleFromInfo(resp.GetActor())
}

// GetActor finds a live named actor.
func (c *Core) GetActor(ctx context.Context, name, namespace string) (*ActorHandle, error) {
	if namespace == "" {
		namespace = c.namespace
	}
	resp, err := c.head.GetActor(ctx, &pb.GetActorRequest{Name: name, Namespace: namespace})
	if err != nil {
		return nil, fmt.Errorf("get actor %q in namespace %q: %w", name, namespace, callErr(ctx, err))
	}
	if resp.GetActor().GetState() == pb.ActorState_ACTOR_STATE_DEAD {
		return nil, errs.New(errs.KindActorDied, name, "actor %q in namespace %q is dead", name, namespace)
	}
	return handleFromInfo(resp.GetActor())
}

// KillActor stops an actor; calls after it fail with an actor-died error.
func (c *Core) KillActor(ctx context.Context, h *ActorHandle) error {
	if h == nil {
		return errNoActor()
	}
	if _, err := c.head.KillActor(ctx, &pb.KillActorRequest{ActorId: h.ID[:]}); err != nil {
		return fmt.Errorf("kill actor %s: %w", h.ID, callErr(ctx, err))
	}
	return nil
}

// CallActor sends a method call straight to the actor's worker and returns
// the ref of its result at once. Calls from one process run in call order.
func (c *Core) CallActor(ctx context.Context, h *ActorHandle, method string, args []*pb.Arg) RefInfo {
	if h == nil {
		return c.FailedRef(errNoActor())
	}
	tid := ids.NewTaskID(c.jobID)
	ref, e := c.newRef(tid.ObjectID(1))
	spec := &pb.TaskSpec{TaskId: tid[:], JobId: c.jobID[:], ActorId: h.ID[:], MethodName: method,
		Args: args, ReturnObjectId: ref.ID[:], CallerAddress: c.addr}
	st, err := c.execs.get(h.WorkerAddr)
	if err == nil {
		err = st.send(spec, func(resp *pb.ExecuteResponse, err error) { complete(e, resp, err) })
	}
	if err != nil {
		e.setError(c.actorUnreachable(h, err))
	}
	return ref
}

// actorUnreachable explains why a call could not even be sent: the actor's
// recorded death when the head knows it, else the transport error.
func (c *Core) actorUnreachable(h *ActorHandle, err error) error {
	ctx, cancel := context.WithTimeout(c.ctx, 2*time.Second)
	defer cancel()
	resp, herr := c.head.GetActor(ctx, &pb.GetActorRequest{ActorId: h.ID[:]})
	if herr == nil && resp.GetActor().GetState() == pb.ActorState_ACTOR_STATE_DEAD {
		e := errs.New(errs.KindActorDied, h.TypeName, "actor %s is dead", h.ID)
		if cause := resp.GetActor().GetDeathCause(); cause != nil {
			e.Cause = errs.FromProto(cause).Error()
		}
		return e
	}
	return err
}
