package raylet

import (
	"context"
	"errors"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/goray/goray/internal/errs"
	"github.com/goray/goray/internal/ids"
	pb "github.com/goray/goray/proto/goray/v1"
)

// createActor implements NodeService.CreateActor.
func (r *Raylet) createActor(ctx context.Context, req *pb.StartActorRequest) (*pb.StartActorResponse, error) {
	spec := req.GetSpec()
	if spec == nil {
		return nil, errs.New(errs.KindInvalidArgument, "", "CreateActor: spec is missing")
	}
	actorID, err := ids.ParseActorID(spec.GetActorId())
	if err != nil {
		return nil, errs.New(errs.KindInvalidArgument, "", "CreateActor: %v", err)
	}
	jobID := actorID.Job()
	if len(spec.GetJobId()) != 0 {
		if jobID, err = ids.ParseJobID(spec.GetJobId()); err != nil {
			return nil, errs.New(errs.KindInvalidArgument, "", "CreateActor: %v", err)
		}
		if jobID != actorID.Job() {
			return nil, errs.New(errs.KindInvalidArgument, "", "CreateActor: actor %s does not belong to job %s", actorID, jobID)
		}
	}
	if spec.GetTypeName() == "" {
		return nil, errs.New(errs.KindInvalidArgument, "", "CreateActor: actor %s has no type name", actorID)
	}
	need, err := parseResources(spec.GetResources())
	if err != nil {
		return nil, err
	}
	// Actors placed in a placement group hold the group's renamed resources
	// (the head renamed them); the group is recorded so that ReturnBundle
	// finds the actor.
	var pg *actorPG
	if b := spec.GetSchedulingStrategy().GetPlacementGroupId(); len(b) != 0 {
		id, err := ids.ParsePlacementGroupID(b)
		if err != nil {
			return nil, errs.New(errs.KindInvalidArgument, "", "CreateActor: %v", err)
		}
		pg = &actorPG{id: id, bundle: spec.GetSchedulingStrategy().GetBundleIndex()}
	}

	if w, ready, ok := r.pool.existingActor(actorID); ok {
		if ready {
			return &pb.StartActorResponse{WorkerId: w.id[:], WorkerAddress: w.addr}, nil
		}
		return nil, errs.New(errs.KindAlreadyExists, "", "CreateActor: actor %s is already being created on node %s", actorID, r.nodeID)
	}
	j, finished := r.pool.job(jobID)
	if finished {
		return nil, errJobFinished(jobID)
	}

	if err := r.leases.acquire(ctx, need); err != nil {
		return nil, err
	}
	// A host that dies just before the actor reaches it (its death not yet
	// seen) is marked failing and the actor goes to another host.
	var a *actor
	var w *worker
	for attempt := 0; ; attempt++ {
		var started bool
		a, started, err = r.pool.placeActor(j, actorID, need, pg)
		if err != nil {
			r.leases.release(need)
			return nil, err
		}
		// From here the actor entry owns need: removeActor releases it.
		fail := func(err error) (*pb.StartActorResponse, error) {
			r.pool.removeActor(a)
			return nil, err
		}
		w = a.worker
		if started {
			if err := r.pool.launch(ctx, w); err != nil {
				return fail(err)
			}
		}
		if err := r.pool.waitRegistered(ctx, w); err != nil {
			return fail(leaseWaitErr(err))
		}
		client, err := r.pool.conn(w)
		if err != nil {
			return fail(err)
		}
		_, err = client.ConstructActor(ctx, &pb.ConstructActorRequest{Spec: spec, Incarnation: req.GetIncarnation()})
		if err == nil {
			break
		}
		// Unavailable: the host does not answer. Canceled with our own
		// context alive: the raylet closed the host's connection because the
		// host died meanwhile. Either way the actor goes elsewhere.
		// (A Canceled status reaches here as an error wrapping
		// context.Canceled: the client interceptor converts it.)
		code := status.Code(err)
		canceled := code == codes.Canceled || errors.Is(err, context.Canceled)
		if (code != codes.Unavailable && !canceled) || attempt >= 3 || ctx.Err() != nil {
			return fail(errs.FromStatus(err))
		}
		r.log.Info("actor host unreachable; placing the actor on another host", "actor", actorID, "worker", w.id, "err", err)
		r.pool.moveActor(a)
		if err := r.leases.acquire(ctx, need); err != nil {
			return nil, err
		}
	}
	if !r.pool.actorReady(a) {
		// Its worker died, or its placement group bundle was returned, meanwhile.
		if err := r.killActorInWorker(ctx, a); err != nil {
			r.log.Warn("kill an actor stopped while it started", "actor", actorID, "err", err)
		}
		return nil, errs.New(errs.KindActorDied, spec.GetTypeName(), "actor %s: it was stopped while it started (its worker process died or its placement group was removed)", actorID)
	}
	r.log.Debug("actor created", "actor", actorID, "type", spec.GetTypeName(), "worker", w.id, "pid", w.pid)
	return &pb.StartActorResponse{WorkerId: w.id[:], WorkerAddress: w.addr}, nil
}

// killActor implements NodeService.KillActor. An actor this node does not
// host is not an error (it is already gone).
func (r *Raylet) killActor(ctx context.Context, req *pb.StopActorRequest) error {
	id, err := ids.ParseActorID(req.GetActorId())
	if err != nil {
		return errs.New(errs.KindInvalidArgument, "", "KillActor: %v", err)
	}
	a := r.pool.lookupActor(id)
	if a == nil {
		return nil
	}
	client, err := r.pool.conn(a.worker)
	var stuck uint32
	if err == nil {
		var resp *pb.DestroyActorResponse
		resp, err = client.DestroyActor(ctx, &pb.DestroyActorRequest{ActorId: id[:]})
		if err != nil {
			switch status.Code(err) {
			case codes.NotFound, codes.Unavailable:
				// Gone already (or its process is): the books still clear.
			default:
				return errs.FromStatus(err)
			}
		}
		stuck = resp.GetStuckCalls()
	}
	if stuck == 0 {
		r.pool.removeActor(a)
		return nil
	}
	// Its methods ignore their cancelled context: a host left with no
	// other actor is ended, so that nothing of the killed actor runs on.
	if w := r.pool.removeStuckActor(a); w != nil {
		r.log.Info("killing an actor host whose only, killed, actor still runs", "actor", id, "worker", w.id, "pid", w.pid, "calls", stuck)
		w.kill()
	} else {
		r.log.Warn("a killed actor's methods ignore their context and run on in a host shared with other actors", "actor", id, "worker", a.worker.id, "calls", stuck)
	}
	return nil
}
