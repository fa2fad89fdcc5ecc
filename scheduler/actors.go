package scheduler

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/goray/goray/internal/errs"
	"github.com/goray/goray/internal/ids"
	"github.com/goray/goray/internal/sched"
	pb "github.com/goray/goray/proto/goray/v1"
	"google.golang.org/protobuf/proto"
)

// CreateActor places an actor on a node, has that raylet start it and
// returns once it runs.
//
// Placement: a node is feasible when its total resources cover the spec's
// placement resources (its resources when none are given). Among alive
// feasible nodes, those whose available resources cover the spec's resources
// are preferred; the pick is the one with the fewest live actors placed by
// this head, then the most available CPU.
func (s *Server) CreateActor(ctx context.Context, req *pb.CreateActorRequest) (*pb.CreateActorResponse, error) {
	spec := req.GetSpec()
	if spec == nil {
		return nil, invalid("CreateActor: no actor spec")
	}
	aid, err := ids.ParseActorID(spec.GetActorId())
	if err != nil {
		return nil, invalid("CreateActor: %v", err)
	}
	jobID := aid.Job()
	if len(spec.GetJobId()) != 0 && string(spec.GetJobId()) != string(jobID[:]) {
		return nil, invalid("CreateActor: actor %s belongs to job %s, but the spec says job %x", aid, jobID, spec.GetJobId())
	}
	if spec.GetTypeName() == "" {
		return nil, invalid("CreateActor: actor %s has no type name", aid)
	}
	if err := checkResources("CreateActor placement_resources", spec.GetPlacementResources()); err != nil {
		return nil, err
	}
	if err := checkResources("CreateActor resources", spec.GetResources()); err != nil {
		return nil, err
	}
	spec = proto.Clone(spec).(*pb.ActorSpec)
	spec.JobId = jobID[:]

	s.mu.Lock()
	job, ok := s.store.GetJob(jobID)
	switch {
	case !ok:
		s.mu.Unlock()
		return nil, notFound(spec.GetTypeName(), "cannot create actor %s: job %s is not registered", aid, jobID)
	case job.Finished:
		s.mu.Unlock()
		return nil, errs.New(errs.KindJobFinished, spec.GetTypeName(), "cannot create actor %s of type %q: job %s has finished; start a new job (runtime.Init) to create actors", aid, spec.GetTypeName(), jobID)
	}
	if _, ok := s.store.GetActor(aid); ok {
		s.mu.Unlock()
		return nil, errs.New(errs.KindAlreadyExists, spec.GetTypeName(), "actor %s already exists", aid)
	}
	key := actorName{spec.GetNamespace(), spec.GetName()}
	if key.name != "" {
		if other, ok := s.names[key]; ok {
			s.mu.Unlock()
			return nil, errs.New(errs.KindAlreadyExists, spec.GetTypeName(), "an actor named %q already exists in namespace %q (actor %s): pick another name, get it with actor.Get, or spawn with actor.WithGetIfExists", key.name, key.namespace, other)
		}
	}
	node, err := s.placeWaitingLocked(ctx, aid, spec)
	if err != nil {
		s.mu.Unlock()
		return nil, err
	}
	// Checked again: the name may have been taken while the actor waited.
	if key.name != "" {
		if other, ok := s.names[key]; ok {
			s.mu.Unlock()
			return nil, errs.New(errs.KindAlreadyExists, spec.GetTypeName(), "an actor named %q already exists in namespace %q (actor %s): pick another name, get it with actor.Get, or spawn with actor.WithGetIfExists", key.name, key.namespace, other)
		}
	}
	nodeID := node.ID
	info := &pb.ActorInfo{Spec: spec, State: pb.ActorState_ACTOR_STATE_PENDING, NodeId: nodeID[:]}
	if err := s.store.PutActor(info); err != nil {
		s.mu.Unlock()
		return nil, s.storeErr("actor "+aid.String(), err)
	}
	s.indexActorLocked(info)
	s.mu.Unlock()

	s.log.Info("actor placed", "actor", aid, "type", spec.GetTypeName(), "name", spec.GetName(),
		"namespace", spec.GetNamespace(), "node", nodeID, "address", node.Address)

	resp, err := s.startActor(ctx, node.Address, spec)
	if err != nil {
		rerr := errs.FromStatus(err)
		var cause *pb.ErrorInfo
		if e := (*errs.Error)(nil); errors.As(rerr, &e) {
			cause = e.Proto()
		} else {
			ce := errs.New(errs.KindActorDied, spec.GetTypeName(), "actor %s could not be started on node %s: %v", aid, nodeID, rerr)
			ce.NodeID = nodeID[:]
			cause = ce.Proto()
			// The raylet may still start it (timeout, cancellation, lost
			// connection): tell it to stop the actor.
			s.killOnNode(aid, node.Address)
		}
		s.mu.Lock()
		a, ok := s.store.GetActor(aid)
		var earlier *pb.ErrorInfo
		if ok && a.GetState() == pb.ActorState_ACTOR_STATE_DEAD {
			earlier = a.GetDeathCause()
		} else if ok {
			s.markActorDeadLocked(a, cause)
		}
		s.mu.Unlock()
		s.log.Warn("actor creation failed", "actor", aid, "type", spec.GetTypeName(), "node", nodeID, "err", rerr)
		if earlier != nil && !errors.As(rerr, new(*errs.Error)) {
			// Killed, its node died or its job finished while it started:
			// that says more than the broken call.
			return nil, errs.FromProto(earlier)
		}
		return nil, rerr
	}

	s.mu.Lock()
	a, ok := s.store.GetActor(aid)
	if !ok || a.GetState() != pb.ActorState_ACTOR_STATE_PENDING {
		// Killed, its node died or its job finished while it started.
		s.mu.Unlock()
		s.killOnNode(aid, node.Address)
		if dc := a.GetDeathCause(); dc != nil {
			return nil, errs.FromProto(dc)
		}
		return nil, errs.New(errs.KindActorDied, spec.GetTypeName(), "actor %s died while it was being created", aid)
	}
	a.State = pb.ActorState_ACTOR_STATE_ALIVE
	a.WorkerId = resp.GetWorkerId()
	a.WorkerAddress = resp.GetWorkerAddress()
	if err := s.store.PutActor(a); err != nil {
		s.mu.Unlock()
		return nil, s.storeErr("actor "+aid.String(), err)
	}
	s.indexActorLocked(a)
	// Charge the actor's resources in the head's view until the node's next
	// heartbeat reports the raylet's own numbers.
	if n, ok := s.store.GetNode(nodeID); ok && n.Alive {
		for r, amt := range spec.GetResources().GetAmounts() {
			if _, has := n.Available[r]; has {
				n.Available[r] = max(0, n.Available[r]-amt)
			}
		}
		if err := s.store.PutNode(n); err != nil {
			s.log.Error("scheduler store write failed", "what", "node "+nodeID.String(), "err", err)
		}
	}
	s.mu.Unlock()
	s.log.Info("actor alive", "actor", aid, "type", spec.GetTypeName(), "node", nodeID, "worker_address", a.GetWorkerAddress())
	return &pb.CreateActorResponse{Actor: a}, nil
}

// startActor calls NodeService.CreateActor on the raylet at addr.
func (s *Server) startActor(ctx context.Context, addr string, spec *pb.ActorSpec) (*pb.NodeServiceCreateActorResponse, error) {
	return s.startActorIncarnation(ctx, addr, spec, 0)
}

// startActorIncarnation starts the given incarnation of an actor.
func (s *Server) startActorIncarnation(ctx context.Context, addr string, spec *pb.ActorSpec, incarnation uint32) (*pb.NodeServiceCreateActorResponse, error) {
	c, err := s.nodeClient(addr)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, createActorTimeout)
	defer cancel()
	stop := context.AfterFunc(s.ctx, cancel)
	defer stop()
	return c.CreateActor(ctx, &pb.NodeServiceCreateActorRequest{Spec: spec, Incarnation: incarnation})
}

// killOnNode asks the raylet at addr to stop an actor; errors are logged.
func (s *Server) killOnNode(aid ids.ActorID, addr string) {
	c, err := s.nodeClient(addr)
	if err == nil {
		ctx, cancel := context.WithTimeout(s.ctx, rayletCallTimeout)
		_, err = c.KillActor(ctx, &pb.NodeServiceKillActorRequest{ActorId: aid[:]})
		cancel()
	}
	if err != nil {
		s.log.Warn("kill actor on raylet", "actor", aid, "raylet", addr, "err", errs.FromStatus(err))
	}
}

// placeWaitingLocked places an actor. When no alive node can ever fit it,
// the actor waits — logged once, listed by GetClusterState — until a node
// that fits joins or ctx ends; with fail_fast it fails at once. Called and
// returns with s.mu held.
func (s *Server) placeWaitingLocked(ctx context.Context, aid ids.ActorID, spec *pb.ActorSpec) (*NodeRecord, error) {
	for {
		node, err, final := s.placeLocked(spec)
		if err == nil || final || spec.GetFailFast() {
			delete(s.waitingActors, aid)
			if err != nil {
				s.log.Warn("actor infeasible", "actor", aid, "type", spec.GetTypeName(), "err", err)
			}
			return node, err
		}
		if _, logged := s.waitingActors[aid]; !logged {
			s.log.Warn("actor infeasible: waiting for a node that can host it", "actor", aid, "type", spec.GetTypeName(), "reason", err)
			s.waitingActors[aid] = &pb.InfeasibleRequest{Kind: "actor", Name: spec.GetTypeName(),
				Resources: &pb.Resources{Amounts: placementNeed(spec)}, Reason: err.Error(), JobId: spec.GetJobId()}
		}
		changed := s.changed
		s.mu.Unlock()
		select {
		case <-changed:
			s.mu.Lock()
		case <-ctx.Done():
			s.mu.Lock()
			delete(s.waitingActors, aid)
			return nil, errs.New(errs.KindTimeout, spec.GetTypeName(), "actor %s was still waiting for a node that can host it: %v", aid, err)
		case <-s.ctx.Done():
			s.mu.Lock()
			delete(s.waitingActors, aid)
			return nil, errs.New(errs.KindShuttingDown, spec.GetTypeName(), "the head shut down while actor %s waited: %v", aid, err)
		}
	}
}

// placementNeed is what a node's total must cover to host the actor.
func placementNeed(spec *pb.ActorSpec) sched.Resources {
	need := sched.Resources(spec.GetPlacementResources().GetAmounts()).Positive()
	if len(need) == 0 {
		need = sched.Resources(spec.GetResources().GetAmounts()).Positive()
	}
	return need
}

// placeLocked picks the node for an actor by its scheduling strategy, or
// says why none can host it; final means waiting cannot help (a hard node
// affinity to a dead node).
func (s *Server) placeLocked(spec *pb.ActorSpec) (node *NodeRecord, err error, final bool) {
	need := placementNeed(spec)
	var alive []*NodeRecord
	for _, n := range s.store.ListNodes() {
		if n.Alive {
			alive = append(alive, n)
		}
	}
	slices.SortFunc(alive, func(a, b *NodeRecord) int { return compareNodeIDs(a.ID, b.ID) })
	strategy := spec.GetSchedulingStrategy()
	if strategy.GetKind() == pb.SchedulingStrategy_KIND_NODE_AFFINITY {
		target, terr := ids.ParseNodeID(strategy.GetNodeId())
		i := slices.IndexFunc(alive, func(n *NodeRecord) bool { return n.ID == target })
		switch {
		case terr == nil && i >= 0 && need.FitsIn(alive[i].Total):
			return alive[i], nil, false
		case !strategy.GetSoft() && (terr != nil || i < 0):
			return nil, errs.New(errs.KindInfeasible, spec.GetTypeName(), "node affinity: node %x is dead or not in the cluster", strategy.GetNodeId()), true
		case !strategy.GetSoft():
			return nil, errs.New(errs.KindInfeasible, spec.GetTypeName(), "node affinity: node %s can never fit actor type %q: %s",
				target, spec.GetTypeName(), sched.Missing(need, []sched.Resources{alive[i].Total})), true
		}
		// Soft: fall back to the default strategy.
	}
	cands := make([]sched.Node, len(alive))
	owner := string(spec.GetOwnerNodeId())
	for i, n := range alive {
		cands[i] = sched.Node{ID: n.ID[:], Total: n.Total, Available: n.Available,
			Local: owner != "" && string(n.ID[:]) == owner, Load: len(s.byNode[n.ID])}
	}
	var pick int
	if strategy.GetKind() == pb.SchedulingStrategy_KIND_SPREAD {
		s.spreadSeq++
		pick, _ = sched.PickSpread(cands, need, s.spreadSeq)
	} else {
		pick, _ = sched.PickHybrid(cands, need, s.rng)
	}
	if pick < 0 {
		return nil, s.infeasible(spec.GetTypeName(), need, alive), false
	}
	return alive[pick], nil, false
}

// infeasible explains why no alive node can ever host the request.
func (s *Server) infeasible(typeName string, need sched.Resources, alive []*NodeRecord) error {
	js, _ := json.Marshal(need) // map keys come out sorted
	totals := make([]sched.Resources, len(alive))
	for i, n := range alive {
		totals[i] = n.Total
	}
	return errs.New(errs.KindInfeasible, typeName, "actor type %q needs %s; %s", typeName, js, sched.Missing(need, totals))
}

// GetActor looks an actor up by ID, or else by name among live actors.
func (s *Server) GetActor(ctx context.Context, req *pb.GetActorRequest) (*pb.GetActorResponse, error) {
	for {
		resp, err := s.getActor(req)
		if err != nil || !req.GetWait() || settled(resp.GetActor(), req) {
			return resp, err
		}
		s.mu.Lock()
		changed := s.changed
		s.mu.Unlock()
		// Re-check: the actor may have changed before changed was read.
		if resp, err := s.getActor(req); err != nil || settled(resp.GetActor(), req) {
			return resp, err
		}
		select {
		case <-changed:
		case <-ctx.Done():
			a := resp.GetActor()
			return nil, errs.New(errs.KindTimeout, a.GetSpec().GetTypeName(), "actor %x is still %v (incarnation %d)",
				a.GetSpec().GetActorId(), a.GetState(), a.GetNumRestarts())
		case <-s.ctx.Done():
			return nil, errs.New(errs.KindShuttingDown, "", "the head is shutting down")
		}
	}
}

// settled reports whether a waiting GetActor can answer: the actor is dead,
// or alive in an incarnation newer than the one the caller saw fail.
func settled(a *pb.ActorInfo, req *pb.GetActorRequest) bool {
	switch a.GetState() {
	case pb.ActorState_ACTOR_STATE_DEAD:
		return true
	case pb.ActorState_ACTOR_STATE_ALIVE:
		return req.AfterIncarnation == nil || a.GetNumRestarts() > req.GetAfterIncarnation()
	default:
		return false
	}
}

func (s *Server) getActor(req *pb.GetActorRequest) (*pb.GetActorResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(req.GetActorId()) != 0 {
		aid, err := ids.ParseActorID(req.GetActorId())
		if err != nil {
			return nil, invalid("GetActor: %v", err)
		}
		a, ok := s.store.GetActor(aid)
		if !ok {
			return nil, notFound("", "actor %s not found", aid)
		}
		return &pb.GetActorResponse{Actor: a}, nil
	}
	if req.GetName() == "" {
		return nil, invalid("GetActor: give an actor ID or a name")
	}
	aid, ok := s.names[actorName{req.GetNamespace(), req.GetName()}]
	if !ok {
		return nil, notFound(req.GetName(), "no live actor named %q in namespace %q", req.GetName(), req.GetNamespace())
	}
	a, ok := s.store.GetActor(aid)
	if !ok {
		return nil, notFound(req.GetName(), "no live actor named %q in namespace %q", req.GetName(), req.GetNamespace())
	}
	return &pb.GetActorResponse{Actor: a}, nil
}

// KillActor declares an actor dead and asks its raylet to stop it. Killing
// a dead actor does nothing.
func (s *Server) KillActor(_ context.Context, req *pb.KillActorRequest) (*pb.KillActorResponse, error) {
	aid, err := ids.ParseActorID(req.GetActorId())
	if err != nil {
		return nil, invalid("KillActor: %v", err)
	}
	s.mu.Lock()
	a, ok := s.store.GetActor(aid)
	if !ok {
		s.mu.Unlock()
		return nil, notFound("", "actor %s not found", aid)
	}
	if a.GetState() == pb.ActorState_ACTOR_STATE_DEAD {
		s.mu.Unlock()
		return &pb.KillActorResponse{}, nil
	}
	var addr string
	if nid, err := ids.ParseNodeID(a.GetNodeId()); err == nil {
		if n, ok := s.store.GetNode(nid); ok && n.Alive {
			addr = n.Address
		}
	}
	s.markActorDeadLocked(a, errs.New(errs.KindActorDied, a.GetSpec().GetTypeName(), "actor %s was killed by actor.Kill", aid).Proto())
	s.mu.Unlock()
	s.log.Info("actor killed", "actor", aid, "type", a.GetSpec().GetTypeName())
	if addr != "" {
		s.killOnNode(aid, addr)
	}
	return &pb.KillActorResponse{}, nil
}

// ReportWorkerDeath declares dead every actor listed and every actor the
// head recorded on that worker.
func (s *Server) ReportWorkerDeath(_ context.Context, req *pb.ReportWorkerDeathRequest) (*pb.ReportWorkerDeathResponse, error) {
	var wid ids.WorkerID
	hasWorker := len(req.GetWorkerId()) != 0
	if hasWorker {
		var err error
		if wid, err = ids.ParseWorkerID(req.GetWorkerId()); err != nil {
			return nil, invalid("ReportWorkerDeath: %v", err)
		}
	}
	listed := make([]ids.ActorID, 0, len(req.GetActorIds()))
	for _, b := range req.GetActorIds() {
		aid, err := ids.ParseActorID(b)
		if err != nil {
			return nil, invalid("ReportWorkerDeath: %v", err)
		}
		listed = append(listed, aid)
	}
	cause := req.GetCause()
	if cause == nil {
		e := errs.New(errs.KindWorkerCrashed, "", "worker %x on node %x died", req.GetWorkerId(), req.GetNodeId())
		e.WorkerID, e.NodeID = req.GetWorkerId(), req.GetNodeId()
		cause = e.Proto()
	}

	s.mu.Lock()
	if hasWorker {
		for aid := range s.byWorker[wid] {
			listed = append(listed, aid)
		}
	}
	died := 0
	for _, aid := range listed {
		if a, ok := s.store.GetActor(aid); ok && a.GetState() == pb.ActorState_ACTOR_STATE_ALIVE &&
			(!hasWorker || string(a.GetWorkerId()) == string(wid[:])) {
			s.actorFailedLocked(a, cause)
			died++
		}
	}
	s.mu.Unlock()
	s.log.Warn("worker died", "worker", fmt.Sprintf("%x", req.GetWorkerId()), "node", fmt.Sprintf("%x", req.GetNodeId()),
		"actors_lost", died, "cause", errs.FromProto(cause))
	return &pb.ReportWorkerDeathResponse{}, nil
}

// actorFailedLocked handles the death of an actor's process or node: the
// actor restarts on a live node while it has restarts left (max_restarts,
// -1 without limit), else it is dead.
func (s *Server) actorFailedLocked(a *pb.ActorInfo, cause *pb.ErrorInfo) {
	spec := a.GetSpec()
	max := spec.GetMaxRestarts()
	if max == 0 || (max > 0 && int64(a.GetNumRestarts()) >= int64(max)) {
		if max != 0 {
			e := errs.FromProto(cause)
			e.Message += fmt.Sprintf(" (restarted %d times, max_restarts %d)", a.GetNumRestarts(), max)
			cause = e.Proto()
		}
		s.markActorDeadLocked(a, cause)
		return
	}
	aid, err := ids.ParseActorID(spec.GetActorId())
	if err != nil {
		return
	}
	if nid, err := ids.ParseNodeID(a.GetNodeId()); err == nil {
		removeFrom(s.byNode, nid, aid)
	}
	if wid, err := ids.ParseWorkerID(a.GetWorkerId()); err == nil {
		removeFrom(s.byWorker, wid, aid)
	}
	a.State = pb.ActorState_ACTOR_STATE_RESTARTING
	a.NumRestarts++
	a.WorkerAddress, a.WorkerId, a.NodeId = "", nil, nil
	a.DeathCause = cause
	if err := s.store.PutActor(a); err != nil {
		s.log.Error("scheduler store write failed", "what", "actor "+aid.String(), "err", err)
	}
	s.notifyLocked()
	s.log.Warn("actor restarting", "actor", aid, "type", spec.GetTypeName(), "incarnation", a.GetNumRestarts(), "cause", errs.FromProto(cause))
	incarnation := a.GetNumRestarts()
	s.wg.Go(func() { s.restartActor(aid, incarnation) })
}

// restartActor places and starts incarnation of a restarting actor.
func (s *Server) restartActor(aid ids.ActorID, incarnation uint32) {
	for attempt := 0; ; attempt++ {
		s.mu.Lock()
		a, ok := s.store.GetActor(aid)
		if !ok || a.GetState() != pb.ActorState_ACTOR_STATE_RESTARTING || a.GetNumRestarts() != incarnation {
			s.mu.Unlock()
			return
		}
		spec := a.GetSpec()
		node, err := s.placeWaitingLocked(s.ctx, aid, spec)
		if err != nil {
			if s.ctx.Err() == nil {
				s.markActorDeadLocked(a, errs.ToProto(err))
				s.notifyLocked()
			}
			s.mu.Unlock()
			return
		}
		a.NodeId = node.ID[:]
		if err := s.store.PutActor(a); err != nil {
			s.log.Error("scheduler store write failed", "what", "actor "+aid.String(), "err", err)
		}
		s.indexActorLocked(a)
		s.mu.Unlock()

		resp, err := s.startActorIncarnation(s.ctx, node.Address, spec, incarnation)
		s.mu.Lock()
		a, ok = s.store.GetActor(aid)
		if !ok || a.GetState() != pb.ActorState_ACTOR_STATE_RESTARTING || a.GetNumRestarts() != incarnation {
			s.mu.Unlock()
			if err == nil {
				s.killOnNode(aid, node.Address) // killed or failed again meanwhile
			}
			return
		}
		if err != nil {
			removeFrom(s.byNode, node.ID, aid)
			if attempt >= 5 || s.ctx.Err() != nil {
				s.markActorDeadLocked(a, errs.New(errs.KindActorDied, spec.GetTypeName(), "actor %s could not be restarted: %v", aid, errs.FromStatus(err)).Proto())
				s.notifyLocked()
				s.mu.Unlock()
				return
			}
			s.mu.Unlock()
			s.log.Warn("actor restart failed; retrying", "actor", aid, "node", node.ID, "err", errs.FromStatus(err))
			select {
			case <-time.After(time.Duration(attempt+1) * 200 * time.Millisecond):
			case <-s.ctx.Done():
				return
			}
			continue
		}
		a.State = pb.ActorState_ACTOR_STATE_ALIVE
		a.WorkerId, a.WorkerAddress = resp.GetWorkerId(), resp.GetWorkerAddress()
		if err := s.store.PutActor(a); err != nil {
			s.log.Error("scheduler store write failed", "what", "actor "+aid.String(), "err", err)
		}
		s.indexActorLocked(a)
		s.notifyLocked()
		s.mu.Unlock()
		s.log.Info("actor restarted", "actor", aid, "type", spec.GetTypeName(), "incarnation", incarnation, "node", node.ID, "worker_address", resp.GetWorkerAddress())
		return
	}
}

// indexActorLocked adds a live actor to the indices.
func (s *Server) indexActorLocked(a *pb.ActorInfo) {
	aid, err := ids.ParseActorID(a.GetSpec().GetActorId())
	if err != nil {
		return
	}
	add := func(set actorSet) actorSet {
		if set == nil {
			set = make(actorSet)
		}
		set[aid] = struct{}{}
		return set
	}
	if name := a.GetSpec().GetName(); name != "" {
		s.names[actorName{a.GetSpec().GetNamespace(), name}] = aid
	}
	if nid, err := ids.ParseNodeID(a.GetNodeId()); err == nil {
		s.byNode[nid] = add(s.byNode[nid])
	}
	s.byJob[aid.Job()] = add(s.byJob[aid.Job()])
	if wid, err := ids.ParseWorkerID(a.GetWorkerId()); err == nil {
		s.byWorker[wid] = add(s.byWorker[wid])
	}
}

// markActorDeadLocked declares a live actor dead with cause and drops it from
// the indices.
func (s *Server) markActorDeadLocked(a *pb.ActorInfo, cause *pb.ErrorInfo) {
	if a.GetState() == pb.ActorState_ACTOR_STATE_DEAD {
		return
	}
	aid, err := ids.ParseActorID(a.GetSpec().GetActorId())
	if err != nil {
		return
	}
	a.State = pb.ActorState_ACTOR_STATE_DEAD
	a.DeathCause = cause
	defer s.notifyLocked()
	if err := s.store.PutActor(a); err != nil {
		s.log.Error("scheduler store write failed", "what", "actor "+aid.String(), "err", err)
	}
	if name := a.GetSpec().GetName(); name != "" {
		key := actorName{a.GetSpec().GetNamespace(), name}
		if s.names[key] == aid {
			delete(s.names, key)
		}
	}
	if nid, err := ids.ParseNodeID(a.GetNodeId()); err == nil {
		removeFrom(s.byNode, nid, aid)
	}
	removeFrom(s.byJob, aid.Job(), aid)
	if wid, err := ids.ParseWorkerID(a.GetWorkerId()); err == nil {
		removeFrom(s.byWorker, wid, aid)
	}
	if reason, ok := s.detachedJobs[aid.Job()]; ok && a.GetSpec().GetDetached() {
		live := false
		for other := range s.byJob[aid.Job()] {
			if o, ok := s.store.GetActor(other); ok && o.GetSpec().GetDetached() && o.GetState() != pb.ActorState_ACTOR_STATE_DEAD {
				live = true
				break
			}
		}
		if !live {
			delete(s.detachedJobs, aid.Job())
			job := aid.Job()
			s.wg.Go(func() { _ = s.finishJob(job, reason+"; its last detached actor died") })
		}
	}
	s.log.Debug("actor dead", "actor", aid, "type", a.GetSpec().GetTypeName(), "cause", errs.FromProto(cause))
}

func removeFrom[K comparable](m map[K]actorSet, k K, aid ids.ActorID) {
	set := m[k]
	delete(set, aid)
	if len(set) == 0 {
		delete(m, k)
	}
}
