package scheduler

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"github.com/goray/goray/internal/errs"
	"github.com/goray/goray/internal/ids"
	"github.com/goray/goray/internal/sched"
	pb "github.com/goray/goray/proto/goray/v1"
	"google.golang.org/protobuf/proto"
)

// actorName is the key of a named actor.
type actorName struct{ namespace, name string }

// actorSet is a set of actor IDs.
type actorSet map[ids.ActorID]struct{}

// actorNodes is the cluster view the actor manager places actors on (the
// node manager in the head, a fake in tests). Its methods must not call
// back into the actor manager: they are called with the actor manager's
// lock held.
type actorNodes interface {
	// aliveNodes returns copies of the alive nodes' records, by node ID.
	aliveNodes() []*NodeRecord
	// aliveAddress is the address of node id when it is alive.
	aliveAddress(id ids.NodeID) (string, bool)
	// chargeActor takes res from node id's available resources.
	chargeActor(id ids.NodeID, res sched.Resources)
}

// actorJobs is what the actor manager asks of the job manager.
type actorJobs interface {
	// jobState says whether the job is registered and whether it finished.
	// It must not call back into the actor manager.
	jobState(id ids.JobID) (known, finished bool)
	// detachedActorsGone is told, without the actor manager's lock held and
	// on a goroutine of its own, that a job's last live detached actor died.
	detachedActorsGone(job ids.JobID)
}

// actorManager owns the actor table (Ray's GcsActorManager): placement of
// new actors on the cluster view, the name, node, job and worker indices of
// live actors, the actors waiting for a node that can host them, restarts
// after a worker or node death, kills.
//
// Callers: the gRPC handlers CreateActor, GetActor, KillActor,
// ReportWorkerDeath and GetClusterState; the node manager (nodeDied, after
// releasing its lock); the job manager (driverGone, jobFinished); the
// placement group manager (placementGroupRemoved); its own restart
// goroutines (restart), tracked by wg.
//
// Lock: mu guards names, byNode, byJob, byWorker, waiting, rng, spreadSeq
// and every read-modify-write of the actor rows in the store (this manager
// is their only writer). While holding mu it calls only leaves: the node
// view, jobState and the change feed; raylet calls and the job manager's
// callback run without mu.
type actorManager struct {
	log     *slog.Logger
	store   Store
	feed    *changeFeed
	nodes   actorNodes
	jobs    actorJobs
	raylets rayletClient
	// ctx ends when the head closes; wg tracks the goroutines started here.
	ctx context.Context
	wg  *sync.WaitGroup
	// restartBackoff is the wait before restart attempt n+1 (n from 0).
	restartBackoff func(n int) time.Duration

	mu sync.Mutex
	// Indices of live (PENDING, RESTARTING or ALIVE) actors.
	names    map[actorName]ids.ActorID // guarded by mu
	byNode   map[ids.NodeID]actorSet   // guarded by mu
	byJob    map[ids.JobID]actorSet    // guarded by mu
	byWorker map[ids.WorkerID]actorSet // guarded by mu
	// waiting are actors no alive node can fit, waiting for one.
	waiting   map[ids.ActorID]*pb.InfeasibleRequest // guarded by mu
	rng       *rand.Rand                            // guarded by mu
	spreadSeq uint64                                // guarded by mu
}

func newActorManager(ctx context.Context, wg *sync.WaitGroup, log *slog.Logger, store Store, feed *changeFeed, nodes actorNodes, jobs actorJobs, raylets rayletClient) *actorManager {
	return &actorManager{
		log: log, store: store, feed: feed, nodes: nodes, jobs: jobs, raylets: raylets, ctx: ctx, wg: wg,
		restartBackoff: func(n int) time.Duration { return time.Duration(n+1) * 200 * time.Millisecond },
		names:          make(map[actorName]ids.ActorID),
		byNode:         make(map[ids.NodeID]actorSet),
		byJob:          make(map[ids.JobID]actorSet),
		byWorker:       make(map[ids.WorkerID]actorSet),
		waiting:        make(map[ids.ActorID]*pb.InfeasibleRequest),
		rng:            rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 0x9e3779b97f4a7c15)),
	}
}

// load rebuilds the indices from the store after a head restart (or a
// failover to another head): actors being created are created again,
// restarts carry on.
func (m *actorManager) load() {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, a := range m.store.ListActors() {
		switch a.GetState() {
		case pb.ActorState_ACTOR_STATE_DEAD:
		case pb.ActorState_ACTOR_STATE_PENDING:
			// Its creation was cut off: the creator repeats its call (the
			// same actor) and waits. Created again as the next
			// incarnation, so that a copy the old head may have started
			// on its node (stopped now) is never the one called.
			aid, err := ids.ParseActorID(a.GetSpec().GetActorId())
			if err != nil {
				continue
			}
			if nid, err := ids.ParseNodeID(a.GetNodeId()); err == nil {
				if addr, alive := m.nodes.aliveAddress(nid); alive {
					m.wg.Go(func() { m.killOnNode(aid, addr) })
				}
			}
			a.State = pb.ActorState_ACTOR_STATE_RESTARTING
			a.NumRestarts++
			a.WorkerAddress, a.WorkerId, a.NodeId = "", nil, nil
			m.putLocked(aid, a)
			m.indexLocked(a)
			inc := a.GetNumRestarts()
			m.log.Info("actor was being created when the head restarted; creating it again", "actor", aid, "incarnation", inc)
			m.wg.Go(func() { m.restart(aid, inc) })
		case pb.ActorState_ACTOR_STATE_RESTARTING:
			// Carry on with the restart the previous head started.
			m.indexLocked(a)
			aid, err := ids.ParseActorID(a.GetSpec().GetActorId())
			if err == nil {
				inc := a.GetNumRestarts()
				m.wg.Go(func() { m.restart(aid, inc) })
			}
		default:
			m.indexLocked(a)
		}
	}
}

// create places an actor on a node, has that raylet start it and returns
// once it runs.
//
// Placement: a node is feasible when its total resources cover the spec's
// placement resources (its resources when none are given). Among alive
// feasible nodes, those whose available resources cover the spec's resources
// are preferred; the pick is the one with the fewest live actors placed by
// this head, then the most available CPU.
func (m *actorManager) create(ctx context.Context, req *pb.CreateActorRequest) (*pb.CreateActorResponse, error) {
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

	m.mu.Lock()
	if err := m.checkJobLocked(aid, spec); err != nil {
		m.mu.Unlock()
		return nil, err
	}
	if old, ok := m.store.GetActor(aid); ok {
		m.mu.Unlock()
		if proto.Equal(old.GetSpec(), spec) {
			// The creator sent it again (its first attempt reached a head
			// that failed over before answering): the same actor.
			return &pb.CreateActorResponse{Actor: old}, nil
		}
		return nil, errs.New(errs.KindAlreadyExists, spec.GetTypeName(), "actor %s already exists", aid)
	}
	key := actorName{spec.GetNamespace(), spec.GetName()}
	if err := m.checkNameLocked(key, spec); err != nil {
		m.mu.Unlock()
		return nil, err
	}
	node, err := m.placeWaitingLocked(ctx, aid, spec)
	if err != nil {
		m.mu.Unlock()
		return nil, err
	}
	// Checked again: the name may have been taken while the actor waited.
	if err := m.checkNameLocked(key, spec); err != nil {
		m.mu.Unlock()
		return nil, err
	}
	nodeID := node.ID
	info := &pb.ActorInfo{Spec: spec, State: pb.ActorState_ACTOR_STATE_PENDING, NodeId: nodeID[:]}
	if err := m.store.PutActor(info); err != nil {
		m.mu.Unlock()
		return nil, storeErr(m.log, "actor "+aid.String(), err)
	}
	m.indexLocked(info)
	// Checked again now that the actor is indexed: a node that died or a
	// job that finished before the index saw it is caught here, one that
	// does so later finds the actor in the index.
	if _, alive := m.nodes.aliveAddress(nodeID); !alive {
		cause := errs.New(errs.KindNodeDied, spec.GetTypeName(), "actor %s died with its node %s (%s): the node died while the actor was placed", aid, nodeID, node.Address)
		cause.NodeID = nodeID[:]
		m.markDeadLocked(info, cause.Proto())
		m.mu.Unlock()
		return nil, cause
	}
	if err := m.checkJobLocked(aid, spec); err != nil {
		m.markDeadLocked(info, errs.New(errs.KindActorDied, spec.GetTypeName(), "actor %s died: its job finished", aid).Proto())
		m.mu.Unlock()
		return nil, err
	}
	m.mu.Unlock()

	m.log.Info("actor placed", "actor", aid, "type", spec.GetTypeName(), "name", spec.GetName(),
		"namespace", spec.GetNamespace(), "node", nodeID, "address", node.Address)

	resp, err := m.startOnNode(ctx, node.Address, spec, 0)
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
			m.killOnNode(aid, node.Address)
		}
		m.mu.Lock()
		a, ok := m.store.GetActor(aid)
		var earlier *pb.ErrorInfo
		if ok && a.GetState() == pb.ActorState_ACTOR_STATE_DEAD {
			earlier = a.GetDeathCause()
		} else if ok {
			m.markDeadLocked(a, cause)
		}
		m.mu.Unlock()
		m.log.Warn("actor creation failed", "actor", aid, "type", spec.GetTypeName(), "node", nodeID, "err", rerr)
		if earlier != nil && !errors.As(rerr, new(*errs.Error)) {
			// Killed, its node died or its job finished while it started:
			// that says more than the broken call.
			return nil, errs.FromProto(earlier)
		}
		return nil, rerr
	}

	m.mu.Lock()
	a, ok := m.store.GetActor(aid)
	if !ok || a.GetState() != pb.ActorState_ACTOR_STATE_PENDING {
		// Killed, its node died or its job finished while it started.
		m.mu.Unlock()
		m.killOnNode(aid, node.Address)
		if dc := a.GetDeathCause(); dc != nil {
			return nil, errs.FromProto(dc)
		}
		return nil, errs.New(errs.KindActorDied, spec.GetTypeName(), "actor %s died while it was being created", aid)
	}
	a.State = pb.ActorState_ACTOR_STATE_ALIVE
	a.WorkerId = resp.GetWorkerId()
	a.WorkerAddress = resp.GetWorkerAddress()
	if err := m.store.PutActor(a); err != nil {
		m.mu.Unlock()
		return nil, storeErr(m.log, "actor "+aid.String(), err)
	}
	m.indexLocked(a)
	// Charge the actor's resources in the head's view until the node's next
	// heartbeat reports the raylet's own numbers.
	m.nodes.chargeActor(nodeID, spec.GetResources().GetAmounts())
	m.mu.Unlock()
	m.log.Info("actor alive", "actor", aid, "type", spec.GetTypeName(), "node", nodeID, "worker_address", a.GetWorkerAddress())
	return &pb.CreateActorResponse{Actor: a}, nil
}

// checkJobLocked refuses an actor whose job is unknown or finished.
func (m *actorManager) checkJobLocked(aid ids.ActorID, spec *pb.ActorSpec) error {
	jobID := aid.Job()
	switch known, finished := m.jobs.jobState(jobID); {
	case !known:
		return notFound(spec.GetTypeName(), "cannot create actor %s: job %s is not registered", aid, jobID)
	case finished:
		return errs.New(errs.KindJobFinished, spec.GetTypeName(), "cannot create actor %s of type %q: job %s has finished; start a new job (runtime.Init) to create actors", aid, spec.GetTypeName(), jobID)
	}
	return nil
}

// checkNameLocked refuses a name a live actor holds.
func (m *actorManager) checkNameLocked(key actorName, spec *pb.ActorSpec) error {
	if key.name == "" {
		return nil
	}
	if other, ok := m.names[key]; ok {
		return errs.New(errs.KindAlreadyExists, spec.GetTypeName(), "an actor named %q already exists in namespace %q (actor %s): pick another name, get it with actor.Get, or spawn with actor.WithGetIfExists", key.name, key.namespace, other)
	}
	return nil
}

// startOnNode starts the given incarnation of an actor on the raylet at
// addr, bounded by createActorTimeout and the head's life.
func (m *actorManager) startOnNode(ctx context.Context, addr string, spec *pb.ActorSpec, incarnation uint32) (*pb.StartActorResponse, error) {
	ctx, cancel := context.WithTimeout(ctx, createActorTimeout)
	defer cancel()
	stop := context.AfterFunc(m.ctx, cancel)
	defer stop()
	return m.raylets.StartActor(ctx, addr, spec, incarnation)
}

// killOnNode asks the raylet at addr to stop an actor; errors are logged.
func (m *actorManager) killOnNode(aid ids.ActorID, addr string) {
	ctx, cancel := context.WithTimeout(m.ctx, rayletCallTimeout)
	defer cancel()
	if err := m.raylets.StopActor(ctx, addr, aid); err != nil {
		m.log.Warn("kill actor on raylet", "actor", aid, "raylet", addr, "err", errs.FromStatus(err))
	}
}

// placeWaitingLocked places an actor. When no alive node can ever fit it,
// the actor waits — logged once, listed by GetClusterState — until a node
// that fits joins or ctx ends; with fail_fast it fails at once. Called and
// returns with m.mu held.
func (m *actorManager) placeWaitingLocked(ctx context.Context, aid ids.ActorID, spec *pb.ActorSpec) (*NodeRecord, error) {
	for {
		// Taken before looking: a change after the look closes it.
		changed := m.feed.C()
		node, err, final := m.placeLocked(spec)
		if err == nil || final || spec.GetFailFast() {
			delete(m.waiting, aid)
			if err != nil {
				m.log.Warn("actor infeasible", "actor", aid, "type", spec.GetTypeName(), "err", err)
			}
			return node, err
		}
		if _, logged := m.waiting[aid]; !logged {
			m.log.Warn("actor infeasible: waiting for a node that can host it", "actor", aid, "type", spec.GetTypeName(), "reason", err)
			m.waiting[aid] = &pb.InfeasibleRequest{Kind: "actor", Name: spec.GetTypeName(),
				Resources: &pb.Resources{Amounts: placementNeed(spec)}, Reason: err.Error(), JobId: spec.GetJobId()}
		}
		m.mu.Unlock()
		select {
		case <-changed:
			m.mu.Lock()
		case <-ctx.Done():
			m.mu.Lock()
			delete(m.waiting, aid)
			return nil, errs.New(errs.KindTimeout, spec.GetTypeName(), "actor %s was still waiting for a node that can host it: %v", aid, err)
		case <-m.ctx.Done():
			m.mu.Lock()
			delete(m.waiting, aid)
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
func (m *actorManager) placeLocked(spec *pb.ActorSpec) (node *NodeRecord, err error, final bool) {
	need := placementNeed(spec)
	alive := m.nodes.aliveNodes()
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
			Local: owner != "" && string(n.ID[:]) == owner, Load: len(m.byNode[n.ID])}
	}
	var pick int
	if strategy.GetKind() == pb.SchedulingStrategy_KIND_SPREAD {
		m.spreadSeq++
		pick, _ = sched.PickSpread(cands, need, m.spreadSeq)
	} else {
		pick, _ = sched.PickHybrid(cands, need, m.rng)
	}
	if pick < 0 {
		return nil, infeasibleActor(spec.GetTypeName(), need, alive), false
	}
	return alive[pick], nil, false
}

// infeasibleActor explains why no alive node can ever host the request.
func infeasibleActor(typeName string, need sched.Resources, alive []*NodeRecord) error {
	js, _ := json.Marshal(need) // map keys come out sorted
	totals := make([]sched.Resources, len(alive))
	for i, n := range alive {
		totals[i] = n.Total
	}
	return errs.New(errs.KindInfeasible, typeName, "actor type %q needs %s; %s", typeName, js, sched.Missing(need, totals))
}

// get looks an actor up by ID, or else by name among live actors; with
// wait it waits until the actor settles (see settled).
func (m *actorManager) get(ctx context.Context, req *pb.GetActorRequest) (*pb.GetActorResponse, error) {
	for {
		resp, err := m.lookup(req)
		if err != nil || !req.GetWait() || settled(resp.GetActor(), req) {
			return resp, err
		}
		changed := m.feed.C()
		// Re-check: the actor may have changed before changed was read.
		if resp, err := m.lookup(req); err != nil || settled(resp.GetActor(), req) {
			return resp, err
		}
		select {
		case <-changed:
		case <-ctx.Done():
			a := resp.GetActor()
			return nil, errs.New(errs.KindTimeout, a.GetSpec().GetTypeName(), "actor %x is still %v (incarnation %d)",
				a.GetSpec().GetActorId(), a.GetState(), a.GetNumRestarts())
		case <-m.ctx.Done():
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

func (m *actorManager) lookup(req *pb.GetActorRequest) (*pb.GetActorResponse, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(req.GetActorId()) != 0 {
		aid, err := ids.ParseActorID(req.GetActorId())
		if err != nil {
			return nil, invalid("GetActor: %v", err)
		}
		a, ok := m.store.GetActor(aid)
		if !ok {
			return nil, notFound("", "actor %s not found", aid)
		}
		return &pb.GetActorResponse{Actor: a}, nil
	}
	if req.GetName() == "" {
		return nil, invalid("GetActor: give an actor ID or a name")
	}
	aid, ok := m.names[actorName{req.GetNamespace(), req.GetName()}]
	if !ok {
		return nil, notFound(req.GetName(), "no live actor named %q in namespace %q", req.GetName(), req.GetNamespace())
	}
	a, ok := m.store.GetActor(aid)
	if !ok {
		return nil, notFound(req.GetName(), "no live actor named %q in namespace %q", req.GetName(), req.GetNamespace())
	}
	return &pb.GetActorResponse{Actor: a}, nil
}

// list returns every actor the head knows, dead ones included.
func (m *actorManager) list() []*pb.ActorInfo {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.store.ListActors()
}

// waitingInfeasible lists the actors waiting for a node that can host them.
func (m *actorManager) waitingInfeasible() []*pb.InfeasibleRequest {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]*pb.InfeasibleRequest, 0, len(m.waiting))
	for _, r := range m.waiting {
		out = append(out, r)
	}
	return out
}

// kill declares an actor dead and asks its raylet to stop it. Killing a
// dead actor does nothing.
func (m *actorManager) kill(req *pb.KillActorRequest) (*pb.KillActorResponse, error) {
	aid, err := ids.ParseActorID(req.GetActorId())
	if err != nil {
		return nil, invalid("KillActor: %v", err)
	}
	m.mu.Lock()
	a, ok := m.store.GetActor(aid)
	if !ok {
		m.mu.Unlock()
		return nil, notFound("", "actor %s not found", aid)
	}
	if a.GetState() == pb.ActorState_ACTOR_STATE_DEAD {
		m.mu.Unlock()
		return &pb.KillActorResponse{}, nil
	}
	var addr string
	if nid, err := ids.ParseNodeID(a.GetNodeId()); err == nil {
		addr, _ = m.nodes.aliveAddress(nid)
	}
	m.markDeadLocked(a, errs.New(errs.KindActorDied, a.GetSpec().GetTypeName(), "actor %s was killed by actor.Kill", aid).Proto())
	m.mu.Unlock()
	m.log.Info("actor killed", "actor", aid, "type", a.GetSpec().GetTypeName())
	if addr != "" {
		m.killOnNode(aid, addr)
	}
	return &pb.KillActorResponse{}, nil
}

// workerDied declares dead every actor listed and every actor the head
// recorded on that worker (restarting those with restarts left).
func (m *actorManager) workerDied(req *pb.ReportWorkerDeathRequest) (*pb.ReportWorkerDeathResponse, error) {
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

	m.mu.Lock()
	if hasWorker {
		for aid := range m.byWorker[wid] {
			listed = append(listed, aid)
		}
	}
	died := 0
	for _, aid := range listed {
		if a, ok := m.store.GetActor(aid); ok && a.GetState() == pb.ActorState_ACTOR_STATE_ALIVE &&
			(!hasWorker || string(a.GetWorkerId()) == string(wid[:])) {
			m.failedLocked(a, cause)
			died++
		}
	}
	m.mu.Unlock()
	m.log.Warn("worker died", "worker", fmt.Sprintf("%x", req.GetWorkerId()), "node", fmt.Sprintf("%x", req.GetNodeId()),
		"actors_lost", died, "cause", errs.FromProto(cause))
	return &pb.ReportWorkerDeathResponse{}, nil
}

// nodeDied is told by the node manager that node id died: its alive actors
// restart (or die), the others die. It returns how many were lost.
func (m *actorManager) nodeDied(id ids.NodeID, addr, reason string) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	killed := 0
	for aid := range m.byNode[id] {
		a, ok := m.store.GetActor(aid)
		if !ok {
			continue
		}
		cause := errs.New(errs.KindNodeDied, a.GetSpec().GetTypeName(), "actor %s died with its node %s (%s): %s", aid, id, addr, reason)
		cause.NodeID = id[:]
		if a.GetState() == pb.ActorState_ACTOR_STATE_ALIVE {
			m.failedLocked(a, cause.Proto())
		} else {
			m.markDeadLocked(a, cause.Proto())
		}
		killed++
	}
	return killed
}

// driverGone stops the live non-detached actors of job when it has live
// detached actors, and returns how many detached ones live (0: nothing was
// stopped).
func (m *actorManager) driverGone(job ids.JobID, reason string) int {
	type victim struct {
		aid  ids.ActorID
		addr string
	}
	var kills []victim
	m.mu.Lock()
	var detached, others []*pb.ActorInfo
	for aid := range m.byJob[job] {
		if a, ok := m.store.GetActor(aid); ok && a.GetState() != pb.ActorState_ACTOR_STATE_DEAD {
			if a.GetSpec().GetDetached() {
				detached = append(detached, a)
			} else {
				others = append(others, a)
			}
		}
	}
	if len(detached) == 0 {
		m.mu.Unlock()
		return 0
	}
	for _, a := range others {
		m.markDeadLocked(a, errs.New(errs.KindActorDied, a.GetSpec().GetTypeName(), "actor %x died: its driver is gone (%s)", a.GetSpec().GetActorId(), reason).Proto())
		if nid, err := ids.ParseNodeID(a.GetNodeId()); err == nil {
			if addr, ok := m.nodes.aliveAddress(nid); ok {
				aid, _ := ids.ParseActorID(a.GetSpec().GetActorId())
				kills = append(kills, victim{aid, addr})
			}
		}
	}
	m.mu.Unlock()
	for _, k := range kills {
		m.wg.Go(func() { m.killOnNode(k.aid, k.addr) })
	}
	return len(detached)
}

// jobFinished declares the finished job's non-detached actors dead (their
// raylets are told the job finished) and returns how many.
func (m *actorManager) jobFinished(job ids.JobID) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	n := 0
	for aid := range m.byJob[job] {
		if a, ok := m.store.GetActor(aid); ok && !a.GetSpec().GetDetached() {
			m.markDeadLocked(a, errs.New(errs.KindActorDied, a.GetSpec().GetTypeName(), "actor %s died: its job finished", aid).Proto())
			n++
		}
	}
	return n
}

// placementGroupRemoved declares dead the live actors placed in group id
// and returns how many.
func (m *actorManager) placementGroupRemoved(id ids.PlacementGroupID) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	killed := 0
	for _, a := range m.store.ListActors() {
		if a.GetState() == pb.ActorState_ACTOR_STATE_DEAD || string(a.GetSpec().GetSchedulingStrategy().GetPlacementGroupId()) != string(id[:]) {
			continue
		}
		m.markDeadLocked(a, errs.New(errs.KindActorDied, a.GetSpec().GetTypeName(), "its placement group %s was removed", id).Proto())
		killed++
	}
	return killed
}

// failedLocked handles the death of an actor's process or node: the actor
// restarts on a live node while it has restarts left (max_restarts, -1
// without limit), else it is dead.
func (m *actorManager) failedLocked(a *pb.ActorInfo, cause *pb.ErrorInfo) {
	spec := a.GetSpec()
	max := spec.GetMaxRestarts()
	if max == 0 || (max > 0 && int64(a.GetNumRestarts()) >= int64(max)) {
		if max != 0 {
			e := errs.FromProto(cause)
			e.Message += fmt.Sprintf(" (restarted %d times, max_restarts %d)", a.GetNumRestarts(), max)
			cause = e.Proto()
		}
		m.markDeadLocked(a, cause)
		return
	}
	aid, err := ids.ParseActorID(spec.GetActorId())
	if err != nil {
		return
	}
	if nid, err := ids.ParseNodeID(a.GetNodeId()); err == nil {
		removeFrom(m.byNode, nid, aid)
	}
	if wid, err := ids.ParseWorkerID(a.GetWorkerId()); err == nil {
		removeFrom(m.byWorker, wid, aid)
	}
	a.State = pb.ActorState_ACTOR_STATE_RESTARTING
	a.NumRestarts++
	a.WorkerAddress, a.WorkerId, a.NodeId = "", nil, nil
	a.DeathCause = cause
	m.putLocked(aid, a)
	m.feed.Notify()
	m.log.Warn("actor restarting", "actor", aid, "type", spec.GetTypeName(), "incarnation", a.GetNumRestarts(), "cause", errs.FromProto(cause))
	incarnation := a.GetNumRestarts()
	m.wg.Go(func() { m.restart(aid, incarnation) })
}

// current reports whether the actor is still restarting into incarnation
// (not killed or failed again meanwhile), with its row.
func (m *actorManager) currentLocked(aid ids.ActorID, incarnation uint32) (*pb.ActorInfo, bool) {
	a, ok := m.store.GetActor(aid)
	if !ok || a.GetState() != pb.ActorState_ACTOR_STATE_RESTARTING || a.GetNumRestarts() != incarnation {
		return nil, false
	}
	return a, true
}

// restart places and starts incarnation of a restarting actor, retrying a
// failed start a few times.
func (m *actorManager) restart(aid ids.ActorID, incarnation uint32) {
	for attempt := 0; ; attempt++ {
		m.mu.Lock()
		a, ok := m.currentLocked(aid, incarnation)
		if !ok {
			m.mu.Unlock()
			return
		}
		spec := a.GetSpec()
		node, err := m.placeWaitingLocked(m.ctx, aid, spec)
		if err != nil {
			if m.ctx.Err() == nil {
				m.markDeadLocked(a, errs.ToProto(err))
			}
			m.mu.Unlock()
			return
		}
		a.NodeId = node.ID[:]
		m.putLocked(aid, a)
		m.indexLocked(a)
		if _, alive := m.nodes.aliveAddress(node.ID); !alive {
			// The node died before the index saw the actor (see create).
			cause := errs.New(errs.KindNodeDied, spec.GetTypeName(), "actor %s died with its node %s (%s): the node died while the actor was placed", aid, node.ID, node.Address)
			cause.NodeID = node.ID[:]
			m.markDeadLocked(a, cause.Proto())
			m.mu.Unlock()
			return
		}
		m.mu.Unlock()

		resp, err := m.startOnNode(m.ctx, node.Address, spec, incarnation)
		m.mu.Lock()
		a, ok = m.currentLocked(aid, incarnation)
		if !ok {
			m.mu.Unlock()
			if err == nil {
				m.killOnNode(aid, node.Address) // killed or failed again meanwhile
			}
			return
		}
		if err != nil {
			removeFrom(m.byNode, node.ID, aid)
			if attempt >= 5 || m.ctx.Err() != nil {
				m.markDeadLocked(a, errs.New(errs.KindActorDied, spec.GetTypeName(), "actor %s could not be restarted: %v", aid, errs.FromStatus(err)).Proto())
				m.mu.Unlock()
				return
			}
			m.mu.Unlock()
			m.log.Warn("actor restart failed; retrying", "actor", aid, "node", node.ID, "err", errs.FromStatus(err))
			select {
			case <-time.After(m.restartBackoff(attempt)):
			case <-m.ctx.Done():
				return
			}
			continue
		}
		a.State = pb.ActorState_ACTOR_STATE_ALIVE
		a.WorkerId, a.WorkerAddress = resp.GetWorkerId(), resp.GetWorkerAddress()
		m.putLocked(aid, a)
		m.indexLocked(a)
		m.feed.Notify()
		m.mu.Unlock()
		m.log.Info("actor restarted", "actor", aid, "type", spec.GetTypeName(), "incarnation", incarnation, "node", node.ID, "worker_address", resp.GetWorkerAddress())
		return
	}
}

// putLocked writes an actor row; a failure is logged (the actor lives on
// in memory, and its next change writes it again).
func (m *actorManager) putLocked(aid ids.ActorID, a *pb.ActorInfo) {
	if err := m.store.PutActor(a); err != nil {
		m.log.Error("scheduler store write failed", "what", "actor "+aid.String(), "err", err)
	}
}

// indexLocked adds a live actor to the indices.
func (m *actorManager) indexLocked(a *pb.ActorInfo) {
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
		m.names[actorName{a.GetSpec().GetNamespace(), name}] = aid
	}
	if nid, err := ids.ParseNodeID(a.GetNodeId()); err == nil {
		m.byNode[nid] = add(m.byNode[nid])
	}
	m.byJob[aid.Job()] = add(m.byJob[aid.Job()])
	if wid, err := ids.ParseWorkerID(a.GetWorkerId()); err == nil {
		m.byWorker[wid] = add(m.byWorker[wid])
	}
}

// markDeadLocked declares a live actor dead with cause and drops it from
// the indices. When it was its job's last live detached actor, the job
// manager is told, on a goroutine of its own.
func (m *actorManager) markDeadLocked(a *pb.ActorInfo, cause *pb.ErrorInfo) {
	if a.GetState() == pb.ActorState_ACTOR_STATE_DEAD {
		return
	}
	aid, err := ids.ParseActorID(a.GetSpec().GetActorId())
	if err != nil {
		return
	}
	a.State = pb.ActorState_ACTOR_STATE_DEAD
	a.DeathCause = cause
	defer m.feed.Notify()
	m.putLocked(aid, a)
	if name := a.GetSpec().GetName(); name != "" {
		key := actorName{a.GetSpec().GetNamespace(), name}
		if m.names[key] == aid {
			delete(m.names, key)
		}
	}
	if nid, err := ids.ParseNodeID(a.GetNodeId()); err == nil {
		removeFrom(m.byNode, nid, aid)
	}
	job := aid.Job()
	removeFrom(m.byJob, job, aid)
	if wid, err := ids.ParseWorkerID(a.GetWorkerId()); err == nil {
		removeFrom(m.byWorker, wid, aid)
	}
	if a.GetSpec().GetDetached() && !m.liveDetachedLocked(job) {
		m.wg.Go(func() { m.jobs.detachedActorsGone(job) })
	}
	m.log.Debug("actor dead", "actor", aid, "type", a.GetSpec().GetTypeName(), "cause", errs.FromProto(cause))
}

// liveDetachedLocked reports whether job has a live detached actor.
func (m *actorManager) liveDetachedLocked(job ids.JobID) bool {
	for other := range m.byJob[job] {
		if o, ok := m.store.GetActor(other); ok && o.GetSpec().GetDetached() && o.GetState() != pb.ActorState_ACTOR_STATE_DEAD {
			return true
		}
	}
	return false
}

func removeFrom[K comparable](m map[K]actorSet, k K, aid ids.ActorID) {
	set := m[k]
	delete(set, aid)
	if len(set) == 0 {
		delete(m, k)
	}
}
