package raylet

import (
	"context"
	"runtime"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/goray/goray/internal/errs"
	"github.com/goray/goray/internal/ids"
	"github.com/goray/goray/internal/sched"
	pb "github.com/goray/goray/proto/goray/v1"
)

// maxActorHosts is how many actor-host processes one job keeps per node.
func maxActorHosts() int { return max(1, runtime.NumCPU()) }

// createActor implements NodeService.CreateActor.
func (r *Raylet) createActor(ctx context.Context, req *pb.NodeServiceCreateActorRequest) (*pb.NodeServiceCreateActorResponse, error) {
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

	r.mu.Lock()
	if a := r.actors[actorID]; a != nil {
		w := a.worker
		ready := a.ready
		r.mu.Unlock()
		if ready {
			return &pb.NodeServiceCreateActorResponse{WorkerId: w.id[:], WorkerAddress: w.addr}, nil
		}
		return nil, errs.New(errs.KindAlreadyExists, "", "CreateActor: actor %s is already being created on node %s", actorID, r.nodeID)
	}
	j := r.jobLocked(jobID)
	finished := j.finished
	r.mu.Unlock()
	if finished {
		return nil, errJobFinished(jobID)
	}

	if err := r.acquire(ctx, need); err != nil {
		return nil, err
	}
	// A host that dies just before the actor reaches it (its death not yet
	// seen) is marked failing and the actor goes to another host.
	var a *actor
	var w *worker
	for attempt := 0; ; attempt++ {
		var started bool
		a, started, err = r.placeActor(j, actorID, need, pg)
		if err != nil {
			r.release(need)
			return nil, err
		}
		// From here the actor entry owns need: removeActorLocked releases it.
		fail := func(err error) (*pb.NodeServiceCreateActorResponse, error) {
			r.mu.Lock()
			r.removeActorLocked(a)
			r.mu.Unlock()
			return nil, err
		}
		w = a.worker
		if started {
			if err := r.launch(ctx, w); err != nil {
				return fail(err)
			}
		}
		if err := r.waitRegistered(ctx, w); err != nil {
			return fail(leaseWaitErr(err))
		}
		client, err := r.workerConn(w)
		if err != nil {
			return fail(err)
		}
		_, err = client.CreateActor(ctx, &pb.WorkerServiceCreateActorRequest{Spec: spec, Incarnation: req.GetIncarnation()})
		if err == nil {
			break
		}
		// Unavailable: the host does not answer. Canceled with our own
		// context alive: the raylet closed the host's connection because the
		// host died meanwhile. Either way the actor goes elsewhere.
		code := status.Code(err)
		if (code != codes.Unavailable && code != codes.Canceled) || attempt >= 3 || ctx.Err() != nil {
			return fail(errs.FromStatus(err))
		}
		r.log.Info("actor host unreachable; placing the actor on another host", "actor", actorID, "worker", w.id, "err", err)
		r.mu.Lock()
		w.failing = true
		r.removeActorLocked(a)
		r.mu.Unlock()
		if err := r.acquire(ctx, need); err != nil {
			return nil, err
		}
	}
	r.mu.Lock()
	if r.actors[actorID] != a {
		// Its worker died, or its placement group bundle was returned, meanwhile.
		r.mu.Unlock()
		if err := r.killActorInWorker(ctx, a); err != nil {
			r.log.Warn("kill an actor stopped while it started", "actor", actorID, "err", err)
		}
		return nil, errs.New(errs.KindActorDied, spec.GetTypeName(), "actor %s: it was stopped while it started (its worker process died or its placement group was removed)", actorID)
	}
	a.ready = true
	r.mu.Unlock()
	r.log.Debug("actor created", "actor", actorID, "type", spec.GetTypeName(), "worker", w.id, "pid", w.pid)
	return &pb.NodeServiceCreateActorResponse{WorkerId: w.id[:], WorkerAddress: w.addr}, nil
}

// actorPG is the placement group an actor is placed in.
type actorPG struct {
	id     ids.PlacementGroupID
	bundle int32
}

// placeActor picks the actor-host worker with the fewest actors, or adds a
// new host while the job has fewer than maxActorHosts and every host already
// has an actor; it records the actor on it. started says the host is new and
// must be launched.
func (r *Raylet) placeActor(j *job, id ids.ActorID, res sched.Resources, pg *actorPG) (*actor, bool, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.stopping {
		return nil, false, errStopping
	}
	if j.finished {
		return nil, false, errJobFinished(j.id)
	}
	if r.actors[id] != nil {
		return nil, false, errs.New(errs.KindAlreadyExists, "", "CreateActor: actor %s is already being created on node %s", id, r.nodeID)
	}
	if !res.FitsIn(r.total) {
		return nil, false, errs.New(errs.KindInfeasible, "", "CreateActor: node %s no longer has %s: the placement group bundle was returned (the group was removed)", r.nodeID, lacks(res, r.total))
	}
	var best *worker
	hosts := 0
	for _, w := range j.workers {
		if w.kind != kindActorHost || w.dead || w.failing {
			continue
		}
		hosts++
		if best == nil || len(w.actors) < len(best.actors) {
			best = w
		}
	}
	started := false
	if best == nil || (len(best.actors) > 0 && hosts < maxActorHosts()) {
		best = r.newWorkerLocked(j, kindActorHost)
		started = true
	}
	a := &actor{id: id, worker: best, res: res.Clone()}
	if pg != nil {
		a.inPG, a.pg, a.bundle = true, pg.id, pg.bundle
	}
	best.actors[id] = a
	r.actors[id] = a
	return a, started, nil
}

// killActor implements NodeService.KillActor. An actor this node does not
// host is not an error (it is already gone).
func (r *Raylet) killActor(ctx context.Context, req *pb.NodeServiceKillActorRequest) error {
	id, err := ids.ParseActorID(req.GetActorId())
	if err != nil {
		return errs.New(errs.KindInvalidArgument, "", "KillActor: %v", err)
	}
	r.mu.Lock()
	a := r.actors[id]
	r.mu.Unlock()
	if a == nil {
		return nil
	}
	client, err := r.workerConn(a.worker)
	if err == nil {
		_, err = client.KillActor(ctx, &pb.WorkerServiceKillActorRequest{ActorId: id[:]})
		if err != nil {
			switch status.Code(err) {
			case codes.NotFound, codes.Unavailable:
				// Gone already (or its process is): the books still clear.
			default:
				return errs.FromStatus(err)
			}
		}
	}
	r.mu.Lock()
	r.removeActorLocked(a)
	r.mu.Unlock()
	return nil
}
