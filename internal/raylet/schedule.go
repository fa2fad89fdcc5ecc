package raylet

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/goray/goray/internal/errs"
	"github.com/goray/goray/internal/ids"
	"github.com/goray/goray/internal/sched"
	pb "github.com/goray/goray/proto/goray/v1"
)

// Scheduling of worker leases (the raylet's half of issue 3). A lease
// request is decided against this node's live resources and the cluster view
// of the last heartbeat reply, with the shared rules of internal/sched:
//
//   - default and placement group (whose resources the submitter renamed
//     with sched.InBundle): sched.PickHybrid over this node and the alive
//     nodes; this node → queue here; another node that fits now → spill back
//     there; none fits now → queue here when this node can ever fit it, else
//     spill back to the pick.
//   - SPREAD: sched.PickSpread, Load being the SPREAD requests this raylet
//     decided for each alive node (a node that joins starts at the least of
//     them), so that consecutive SPREAD requests go round the nodes that fit
//     whatever other work this raylet placed before (see spreadLoadsLocked).
//   - node affinity: the named node, or (soft) the default when it is dead,
//     unknown or can never fit the request; hard to a dead or unknown node
//     fails at once.
//   - a request spilled back once (no_spillback) queues here.
//
// A request no alive node can ever fit fails at once with fail_fast;
// otherwise it is logged once, listed in every heartbeat as infeasible and
// decided again whenever the cluster view changes.

// loadWindow is how long a lease granted here or spilled to a node counts
// towards that node's Load for the default strategy.
const loadWindow = 10 * time.Second

// maxRecent bounds the remembered lease events of one node.
const maxRecent = 1024

// viewRefreshTimeout bounds a ListNodes call made to refresh a stale view.
const viewRefreshTimeout = 2 * time.Second

type placement int

const (
	placeHere       placement = iota // queue for the resources on this node
	placeSpill                       // spill back to node
	placeFail                        // fail with err
	placeInfeasible                  // no alive node can ever fit it
	placeRefresh                     // the named node is unknown: refresh the view and decide again
)

func (p placement) String() string {
	switch p {
	case placeHere:
		return "here"
	case placeSpill:
		return "spill back"
	case placeFail:
		return "fail"
	case placeInfeasible:
		return "infeasible"
	case placeRefresh:
		return "refresh the view"
	}
	return fmt.Sprintf("placement(%d)", int(p))
}

type decision struct {
	where  placement
	node   *pb.NodeInfo    // placeSpill
	err    error           // placeFail
	reason string          // placeInfeasible: the missing resource, in words
	view   <-chan struct{} // closed when the cluster view changes
	total  <-chan struct{} // closed when this node's total changes
}

// infeasibleReq is a lease request waiting because no alive node can fit it.
type infeasibleReq struct {
	job    ids.JobID
	name   string
	need   sched.Resources
	reason string
}

func (q *infeasibleReq) proto() *pb.InfeasibleRequest {
	return &pb.InfeasibleRequest{Kind: "task", Name: q.name, Resources: &pb.Resources{Amounts: q.need.Clone()}, Reason: q.reason, JobId: q.job[:]}
}

// requestLease implements NodeService.RequestWorkerLease.
func (r *Raylet) requestLease(ctx context.Context, req *pb.RequestWorkerLeaseRequest) (*pb.RequestWorkerLeaseResponse, error) {
	jobID, err := ids.ParseJobID(req.GetJobId())
	if err != nil {
		return nil, errs.New(errs.KindInvalidArgument, "", "RequestWorkerLease: %v", err)
	}
	need, err := parseResources(req.GetResources())
	if err != nil {
		return nil, err
	}
	if len(need) == 0 {
		need = sched.Resources{"CPU": 1}
	}
	var affinity ids.NodeID
	if req.GetSchedulingStrategy().GetKind() == pb.SchedulingStrategy_KIND_NODE_AFFINITY {
		if affinity, err = ids.ParseNodeID(req.GetSchedulingStrategy().GetNodeId()); err != nil {
			return nil, errs.New(errs.KindInvalidArgument, req.GetFunctionName(), "RequestWorkerLease: node affinity: %v", err)
		}
	}
	if r.pool.jobFinished(jobID) {
		return nil, errJobFinished(jobID)
	}

	var waiting *infeasibleReq
	defer func() {
		if waiting != nil {
			r.leases.doneInfeasible(waiting)
			r.kickHeartbeat()
		}
	}()
	refreshed := false
	for {
		d := r.leases.decide(req, need, affinity, refreshed)
		switch d.where {
		case placeRefresh:
			r.refreshView(ctx)
			refreshed = true
			continue
		case placeHere:
			if waiting != nil {
				r.log.Info("infeasible lease request became feasible", "function", req.GetFunctionName(), "job", jobID, "resources", need)
			}
			return r.grantHere(ctx, jobID, need, req)
		case placeSpill:
			r.view.noteLease(d.node.GetNodeId())
			return &pb.RequestWorkerLeaseResponse{SpillbackAddress: d.node.GetAddress(), SpillbackNodeId: d.node.GetNodeId()}, nil
		case placeFail:
			return nil, d.err
		}
		// Infeasible. The view may be stale (a node joined since the last
		// heartbeat): look once more before calling it so.
		if !refreshed {
			r.refreshView(ctx)
			refreshed = true
			continue
		}
		if req.GetFailFast() {
			return nil, errs.New(errs.KindInfeasible, req.GetFunctionName(),
				"lease request for %s (job %s) is infeasible: %s; add a node that has it, e.g. raylet --resources", need, jobID, d.reason)
		}
		if waiting == nil {
			waiting = &infeasibleReq{job: jobID, name: req.GetFunctionName(), need: need.Clone()}
		}
		if r.leases.waitInfeasible(waiting, d.reason) {
			r.log.Warn("lease request is infeasible: it waits until a node that can fit it joins",
				"function", req.GetFunctionName(), "job", jobID, "resources", need, "missing", d.reason)
			r.kickHeartbeat()
		}
		select {
		case <-d.view:
		case <-d.total:
		case <-ctx.Done():
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return nil, errs.New(errs.KindTimeout, req.GetFunctionName(), "timed out waiting as infeasible: lease request for %s: %s", need, d.reason)
			}
			return nil, ctx.Err()
		case <-r.ctx.Done():
			return nil, errStopping
		}
	}
}

// grantHere waits for need on this node and leases a worker of the job.
func (r *Raylet) grantHere(ctx context.Context, jobID ids.JobID, need sched.Resources, req *pb.RequestWorkerLeaseRequest) (*pb.RequestWorkerLeaseResponse, error) {
	j, finished := r.pool.job(jobID)
	if finished {
		return nil, errJobFinished(jobID)
	}
	if err := r.leases.acquire(ctx, need); err != nil {
		return nil, err
	}
	l, err := r.pool.leaseWorker(ctx, j, need)
	if err != nil {
		r.leases.release(need)
		return nil, err
	}
	r.pool.noteTask(l, req.GetFunctionName(), req.GetRetriable())
	r.view.noteLease(r.nodeID[:])
	return &pb.RequestWorkerLeaseResponse{
		LeaseId:       l.id[:],
		WorkerId:      l.worker.id[:],
		WorkerAddress: l.worker.addr,
		NodeId:        r.nodeID[:],
	}, nil
}

// decide places one lease request against this node's resources and the
// cluster view.
func (m *leaseManager) decide(req *pb.RequestWorkerLeaseRequest, need sched.Resources, affinity ids.NodeID, refreshed bool) decision {
	nodes, viewCh := m.view.snapshot()
	m.mu.Lock()
	defer m.mu.Unlock()
	d := m.decideLocked(req, need, affinity, refreshed, nodes)
	d.view, d.total = viewCh, m.totalCh
	return d
}

func (m *leaseManager) decideLocked(req *pb.RequestWorkerLeaseRequest, need sched.Resources, affinity ids.NodeID, refreshed bool, view []*pb.NodeInfo) decision {
	strat := req.GetSchedulingStrategy()
	noSpill := req.GetNoSpillback()
	feasibleHere := need.FitsIn(m.total)

	if strat.GetKind() == pb.SchedulingStrategy_KIND_NODE_AFFINITY {
		hard := !strat.GetSoft()
		if affinity == m.self {
			if feasibleHere {
				return decision{where: placeHere}
			}
			if hard {
				return decision{where: placeFail, err: errs.New(errs.KindInfeasible, req.GetFunctionName(),
					"node affinity: node %s can never fit %s: it lacks %s", affinity, need, lacks(need, m.total))}
			}
		} else {
			n := viewNode(view, affinity)
			switch {
			case n == nil && !refreshed:
				return decision{where: placeRefresh}
			case n != nil && n.GetAlive() && n.GetAddress() != "":
				if noSpill {
					if hard {
						return decision{where: placeFail, err: errs.New(errs.KindInfeasible, req.GetFunctionName(),
							"node affinity: the request for node %s reached node %s after a spillback; it runs only on node %s", affinity, m.self, affinity)}
					}
					break // soft: the default below, here
				}
				if hard || need.FitsIn(n.GetTotal().GetAmounts()) {
					return decision{where: placeSpill, node: n}
				}
			default:
				if hard {
					return decision{where: placeFail, err: errs.New(errs.KindInfeasible, req.GetFunctionName(),
						"node affinity: node %s is dead or not in the cluster", affinity)}
				}
			}
		}
		// Soft affinity that cannot be honoured: the default strategy.
	}

	nodes, infos := m.candidatesLocked(view)
	if noSpill {
		// Spilled back here once already: it queues here.
		if feasibleHere {
			return decision{where: placeHere}
		}
		for i := range nodes {
			if need.FitsIn(nodes[i].Total) {
				return decision{where: placeFail, err: errs.New(errs.KindInfeasible, req.GetFunctionName(),
					"node %s can never fit %s (it lacks %s) and the request was already spilled back once (node %x can fit it)",
					m.self, need, lacks(need, m.total), nodes[i].ID)}
			}
		}
		return decision{where: placeInfeasible, reason: missing(need, nodes)}
	}

	var pick int
	var now bool
	if strat.GetKind() == pb.SchedulingStrategy_KIND_SPREAD {
		m.spreadLoadsLocked(nodes)
		pick, _ = sched.PickSpread(nodes, need, m.spreadSeq)
		m.spreadSeq++
		if pick < 0 {
			return decision{where: placeInfeasible, reason: missing(need, nodes)}
		}
		if id, err := ids.ParseNodeID(nodes[pick].ID); err == nil {
			m.spreadLoad[id]++
		}
		if nodes[pick].Local {
			return decision{where: placeHere}
		}
		return decision{where: placeSpill, node: infos[pick]}
	}
	pick, now = sched.PickHybrid(nodes, need, m.rng)
	switch {
	case pick < 0:
		return decision{where: placeInfeasible, reason: missing(need, nodes)}
	case nodes[pick].Local:
		return decision{where: placeHere}
	case now:
		return decision{where: placeSpill, node: infos[pick]}
	case feasibleHere:
		return decision{where: placeHere}
	default:
		return decision{where: placeSpill, node: infos[pick]}
	}
}

// spreadLoadsLocked sets each candidate's Load to the SPREAD requests
// decided for it. A node seen for the first time starts at the least load of
// the others, so it joins the rotation instead of taking every request until
// it caught up; a node no longer a candidate (dead) is forgotten.
//
// SPREAD used to count every lease granted here or spilled within
// loadWindow. That made where a burst of SPREAD tasks went depend on what
// ran in the 10 s before: after default-strategy work had loaded this node,
// a burst went to the other nodes only, and with a stale view (a node's
// leases are seen at the next heartbeat) even to one node, where its tasks
// queued behind each other: "6 concurrent SPREAD tasks on 1 distinct nodes".
func (m *leaseManager) spreadLoadsLocked(nodes []sched.Node) {
	least, known := 0, false
	seen := make(map[ids.NodeID]bool, len(nodes))
	for _, n := range nodes {
		id, err := ids.ParseNodeID(n.ID)
		if err != nil {
			continue
		}
		seen[id] = true
		if l, ok := m.spreadLoad[id]; ok && (!known || l < least) {
			least, known = l, true
		}
	}
	for id := range m.spreadLoad {
		if !seen[id] {
			delete(m.spreadLoad, id)
		}
	}
	for i := range nodes {
		id, err := ids.ParseNodeID(nodes[i].ID)
		if err != nil {
			continue
		}
		l, ok := m.spreadLoad[id]
		if !ok {
			l = least
			m.spreadLoad[id] = l
		}
		nodes[i].Load = l
	}
}

// candidatesLocked lists this node (first, Local) and the other alive nodes
// of the view; infos[i] is the view's entry of nodes[i] (nil for this node).
func (m *leaseManager) candidatesLocked(view []*pb.NodeInfo) ([]sched.Node, []*pb.NodeInfo) {
	now := time.Now()
	others, otherInfos := candidates(m.view, m.self, view, now)
	nodes := append([]sched.Node{{ID: m.self[:], Total: m.total, Available: m.avail, Local: true, Load: m.view.load(m.self, now)}}, others...)
	infos := append([]*pb.NodeInfo{nil}, otherInfos...)
	return nodes, infos
}

func missing(need sched.Resources, nodes []sched.Node) string {
	totals := make([]sched.Resources, len(nodes))
	for i, n := range nodes {
		totals[i] = n.Total
	}
	return sched.Missing(need, totals)
}

// viewNode is the entry of node id in nodes, or nil.
func viewNode(nodes []*pb.NodeInfo, id ids.NodeID) *pb.NodeInfo {
	for _, n := range nodes {
		if string(n.GetNodeId()) == string(id[:]) {
			return n
		}
	}
	return nil
}

// refreshView asks the head for the node table now.
func (r *Raylet) refreshView(ctx context.Context) {
	cctx, cancel := context.WithTimeout(ctx, viewRefreshTimeout)
	defer cancel()
	resp, err := r.head.ListNodes(cctx, &pb.ListNodesRequest{})
	if err != nil {
		r.log.Debug("refresh cluster view", "err", err)
		return
	}
	r.view.set(resp.GetNodes())
}
