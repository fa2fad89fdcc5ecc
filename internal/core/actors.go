package core

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/goray/goray/internal/errs"
	"github.com/goray/goray/internal/ids"
	"github.com/goray/goray/internal/sched"
	pb "github.com/goray/goray/proto/goray/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
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
	// Strategy says where the actor may be placed; nil is the default.
	Strategy *pb.SchedulingStrategy
	// FailFast fails creation at once when no node can ever fit the actor,
	// instead of waiting (reported as infeasible) for one to join.
	FailFast bool
	// GetIfExists returns the live actor named Name in the namespace when
	// there is one, instead of failing because the name is taken.
	GetIfExists bool
	// MaxRestarts: how often the actor restarts when its process or node
	// dies; 0 never, -1 without limit.
	MaxRestarts int
	// MaxTaskRetries: how often a call in flight when the actor died is sent
	// to its next incarnation; 0 never (at-most-once), -1 without limit.
	MaxTaskRetries int
	// Detached actors outlive the job that made them, until killed.
	Detached bool
}

// errNoActor is the error of a call on a zero actor handle, such as the one a
// failed Spawn returns.
func errNoActor() error {
	return errs.New(errs.KindInvalidArgument, "", "call on a zero actor handle: use the handle a successful actor.Spawn or actor.Get returned")
}

// callErr is the error of a failed call to the head made with the caller's
// ctx: the context's own error when it ended (for a passed deadline both
// errors.Is(err, context.DeadlineExceeded) and errors.Is(err, errs.ErrTimeout)
// hold, as for Get), else the goray error the head sent.
func callErr(ctx context.Context, err error) error {
	if ctx.Err() == nil && status.Code(err) == codes.DeadlineExceeded {
		// gRPC's own deadline timer can fire just before the context's.
		if d, ok := ctx.Deadline(); ok && !time.Now().Before(d.Add(-10*time.Millisecond)) {
			return fmt.Errorf("%w (%w)", errs.Context(context.DeadlineExceeded, "call to the head"), errs.FromStatus(err))
		}
	}
	if ctx.Err() != nil {
		cerr := errs.Context(ctx.Err(), "call to the head")
		if ge := errs.FromStatus(err); errors.As(ge, new(*errs.Error)) && !errors.Is(ge, errs.ErrTimeout) {
			return fmt.Errorf("%w (%w)", cerr, ge)
		}
		return cerr
	}
	return errs.FromStatus(err)
}

// ActorHandle is this process's handle to one actor.
type ActorHandle struct {
	ID       ids.ActorID
	TypeName string
	Name     string
	route    *actorRoute
}

// handleFromInfo makes a handle, sharing the actor's route.
func (c *Core) handleFromInfo(info *pb.ActorInfo) (*ActorHandle, error) {
	r, err := c.actors.route(info)
	if err != nil {
		return nil, err
	}
	return &ActorHandle{ID: r.id, TypeName: info.GetSpec().GetTypeName(), Name: info.GetSpec().GetName(), route: r}, nil
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
	if opts.GetIfExists && opts.Name != "" {
		if h, err := c.existingActor(ctx, typeName, opts.Name, ns); err == nil || !errors.Is(err, errs.ErrNotFound) {
			return h, err
		}
	}
	spec := &pb.ActorSpec{
		ActorId: func() []byte { id := ids.NewActorID(c.jobID); return id[:] }(),
		JobId:   c.jobID[:], TypeName: typeName, Name: opts.Name, Namespace: ns,
		OwnerAddress: c.addr, MaxConcurrency: uint32(max(opts.MaxConcurrency, 1)),
	}
	place, hold := map[string]float64{"CPU": 1}, map[string]float64{}
	if len(opts.Resources) > 0 {
		place, hold = opts.Resources, opts.Resources
	}
	if st := opts.Strategy; st.GetKind() == pb.SchedulingStrategy_KIND_PLACEMENT_GROUP {
		pg, err := ids.ParsePlacementGroupID(st.GetPlacementGroupId())
		if err != nil {
			return nil, errs.New(errs.KindInvalidArgument, typeName, "placement group strategy: %v", err)
		}
		place = sched.InBundle(place, pg, int(st.GetBundleIndex()))
		hold = sched.InBundle(hold, pg, int(st.GetBundleIndex()))
	}
	spec.PlacementResources = &pb.Resources{Amounts: place}
	spec.Resources = &pb.Resources{Amounts: hold}
	spec.SchedulingStrategy, spec.FailFast, spec.OwnerNodeId = opts.Strategy, opts.FailFast, c.nodeID[:]
	spec.MaxRestarts, spec.MaxTaskRetries, spec.Detached = int32(opts.MaxRestarts), int32(opts.MaxTaskRetries), opts.Detached
	var resp *pb.CreateActorResponse
	err := retryHead(ctx, func(ctx context.Context) (err error) {
		resp, err = c.head.CreateActor(ctx, &pb.CreateActorRequest{Spec: spec})
		return err
	})
	if err != nil {
		if opts.GetIfExists && opts.Name != "" && errors.Is(errs.FromStatus(err), errs.ErrAlreadyExists) {
			// Another creator won the race for the name.
			return c.existingActor(ctx, typeName, opts.Name, ns)
		}
		return nil, fmt.Errorf("create actor %q: %w", typeName, callErr(ctx, err))
	}
	return c.handleFromInfo(resp.GetActor())
}

// existingActor finds the live actor named name, checking its type.
func (c *Core) existingActor(ctx context.Context, typeName, name, ns string) (*ActorHandle, error) {
	h, err := c.GetActor(ctx, name, ns)
	if err != nil {
		return nil, err
	}
	if h.TypeName != typeName {
		return nil, errs.New(errs.KindInvalidArgument, typeName, "actor %q in namespace %q exists but is of type %q, not %q", name, ns, h.TypeName, typeName)
	}
	return h, nil
}

// GetActor finds a live named actor.
func (c *Core) GetActor(ctx context.Context, name, namespace string) (*ActorHandle, error) {
	if namespace == "" {
		namespace = c.namespace
	}
	var resp *pb.GetActorResponse
	err := retryHead(ctx, func(ctx context.Context) (err error) {
		resp, err = c.head.GetActor(ctx, &pb.GetActorRequest{Name: name, Namespace: namespace})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("get actor %q in namespace %q: %w", name, namespace, callErr(ctx, err))
	}
	if resp.GetActor().GetState() == pb.ActorState_ACTOR_STATE_DEAD {
		return nil, errs.New(errs.KindActorDied, name, "actor %q in namespace %q is dead", name, namespace)
	}
	return c.handleFromInfo(resp.GetActor())
}

// KillActor stops an actor; calls after it fail with an actor-died error.
func (c *Core) KillActor(ctx context.Context, h *ActorHandle) error {
	if h == nil {
		return errNoActor()
	}
	if err := retryHead(ctx, func(ctx context.Context) error {
		_, err := c.head.KillActor(ctx, &pb.KillActorRequest{ActorId: h.ID[:]})
		return err
	}); err != nil {
		return fmt.Errorf("kill actor %s: %w", h.ID, callErr(ctx, err))
	}
	return nil
}

// CallActor sends a method call straight to the actor's worker and returns
// the ref of its result at once. Calls from one process run in call order.
// When the actor's process dies, a call in flight fails with a
// worker-crashed error unless the actor allows task retries; calls made
// while it restarts wait for its next incarnation.
func (c *Core) CallActor(ctx context.Context, h *ActorHandle, method string, args Args) Ref {
	if h == nil || h.route == nil {
		return RefErr(errNoActor())
	}
	tid := ids.NewTaskID(c.jobID)
	oid := tid.ObjectID(1)
	ref, e := c.newRef(oid)
	e.holds = args.holds
	spec := &pb.TaskSpec{TaskId: tid[:], JobId: c.jobID[:], ActorId: h.ID[:], MethodName: method,
		Args: args.Wire, ReturnObjectId: oid[:], CallerAddress: c.addr}
	ac := &actorCall{spec: spec, e: e}
	ac.release = c.track(ctx, oid, h.TypeName+"."+method, true, func(why error, _, recursive bool) {
		c.actors.cancel(h.route, ac, why, recursive)
	})
	c.actors.send(h.route, ac, 0)
	return ref
}
