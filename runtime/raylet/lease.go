package raylet

import (
	"context"
	"errors"
	"time"

	"github.com/goray/goray/internal/errs"
	"github.com/goray/goray/internal/ids"
	pb "github.com/goray/goray/proto/goray/v1"
)

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
		need = resources{"CPU": 1}
	}

	r.mu.Lock()
	feasibleHere := fits(need, r.total)
	r.mu.Unlock()
	if !feasibleHere {
		node, err := r.spillbackTarget(ctx, need)
		if err != nil {
			return nil, err
		}
		if req.GetNoSpillback() {
			return nil, errs.New(errs.KindInfeasible, "", "node %s can never fit %s and the request was already spilled back once (node %x can)", r.nodeID, fmtResources(need), node.GetNodeId())
		}
		return &pb.RequestWorkerLeaseResponse{SpillbackAddress: node.GetAddress(), SpillbackNodeId: node.GetNodeId()}, nil
	}

	r.mu.Lock()
	j := r.jobLocked(jobID)
	finished := j.finished
	r.mu.Unlock()
	if finished {
		return nil, errJobFinished(jobID)
	}
	if err := r.acquire(ctx, need); err != nil {
		return nil, err
	}
	l, err := r.leaseWorker(ctx, j, need)
	if err != nil {
		r.release(need)
		return nil, err
	}
	return &pb.RequestWorkerLeaseResponse{
		LeaseId:       l.id[:],
		WorkerId:      l.worker.id[:],
		WorkerAddress: l.worker.addr,
		NodeId:        r.nodeID[:],
	}, nil
}

// leaseWorker takes an idle task worker of the job, or starts one, and
// leases it; res then belongs to the lease.
func (r *Raylet) leaseWorker(ctx context.Context, j *job, res resources) (*lease, error) {
	for {
		r.mu.Lock()
		if r.stopping {
			r.mu.Unlock()
			return nil, errStopping
		}
		if j.finished {
			r.mu.Unlock()
			return nil, errJobFinished(j.id)
		}
		count := 0
		var idle *worker
		for _, w := range j.workers {
			if w.kind != kindTask || w.dead {
				continue
			}
			count++
			if idle == nil && w.isRegistered && !w.reserved && w.lease == nil {
				idle = w
			}
		}
		if idle != nil {
			l := r.newLeaseLocked(idle, res)
			r.mu.Unlock()
			return l, nil
		}
		if count < r.cfg.MaxWorkersPerJob {
			w := r.newWorkerLocked(j, kindTask)
			w.reserved = true
			r.mu.Unlock()
			if err := r.launch(ctx, w); err != nil {
				return nil, err
			}
			if err := r.waitRegistered(ctx, w); err != nil {
				r.mu.Lock()
				w.reserved = false
				if !w.dead {
					j.broadcastLocked()
				}
				r.mu.Unlock()
				return nil, leaseWaitErr(err)
			}
			r.mu.Lock()
			w.reserved = false
			if !w.dead && w.lease == nil {
				l := r.newLeaseLocked(w, res)
				r.mu.Unlock()
				return l, nil
			}
			r.mu.Unlock()
			continue
		}
		changed := j.changed
		r.mu.Unlock()
		select {
		case <-changed:
		case <-ctx.Done():
			return nil, leaseWaitErr(ctx.Err())
		case <-r.ctx.Done():
			return nil, errStopping
		}
	}
}

func leaseWaitErr(err error) error {
	if errors.Is(err, context.DeadlineExceeded) {
		return errs.New(errs.KindTimeout, "", "timed out waiting for a worker: %v", err)
	}
	return err
}

func (r *Raylet) newLeaseLocked(w *worker, res resources) *lease {
	l := &lease{id: ids.NewLeaseID(), worker: w, res: res}
	w.lease = l
	r.leases[l.id] = l
	return l
}

// returnLease implements NodeService.ReturnWorkerLease. Returning an unknown
// lease (e.g. its worker died) is not an error.
func (r *Raylet) returnLease(req *pb.ReturnWorkerLeaseRequest) error {
	id, err := ids.ParseLeaseID(req.GetLeaseId())
	if err != nil {
		return errs.New(errs.KindInvalidArgument, "", "ReturnWorkerLease: %v", err)
	}
	r.mu.Lock()
	l := r.leases[id]
	if l == nil {
		r.mu.Unlock()
		return nil
	}
	w := l.worker
	r.removeLeaseLocked(l)
	if req.GetWorkerFailed() {
		w.onPurpose = true
	} else {
		w.job.broadcastLocked()
	}
	r.mu.Unlock()
	if req.GetWorkerFailed() {
		r.log.Info("killing a worker its lease holder saw fail", "worker", w.id, "pid", w.pid)
		w.kill()
	}
	return nil
}

// spillbackTarget picks another alive node whose total fits need, preferring
// one whose available resources fit now. With none it returns an infeasible
// error naming the missing resource.
func (r *Raylet) spillbackTarget(ctx context.Context, need resources) (*pb.NodeInfo, error) {
	if n := r.pickNode(need); n != nil {
		return n, nil
	}
	// The view may be stale (a node joined since the last heartbeat).
	cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	resp, err := r.head.ListNodes(cctx, &pb.ListNodesRequest{})
	cancel()
	if err == nil {
		r.mu.Lock()
		r.nodes = resp.GetNodes()
		r.mu.Unlock()
		if n := r.pickNode(need); n != nil {
			return n, nil
		}
	}
	r.mu.Lock()
	totals := []resources{r.total}
	for _, n := range r.nodes {
		if n.GetAlive() {
			totals = append(totals, resources(n.GetTotal().GetAmounts()))
		}
	}
	r.mu.Unlock()
	return nil, infeasible(need, totals)
}

func (r *Raylet) pickNode(need resources) *pb.NodeInfo {
	r.mu.Lock()
	defer r.mu.Unlock()
	var feasible *pb.NodeInfo
	for _, n := range r.nodes {
		if !n.GetAlive() || n.GetAddress() == "" || string(n.GetNodeId()) == string(r.nodeID[:]) {
			continue
		}
		if !fits(need, resources(n.GetTotal().GetAmounts())) {
			continue
		}
		if fits(need, resources(n.GetAvailable().GetAmounts())) {
			return n
		}
		if feasible == nil {
			feasible = n
		}
	}
	return feasible
}
