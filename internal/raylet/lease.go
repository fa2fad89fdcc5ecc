package raylet

import (
	"context"
	"errors"

	"github.com/goray/goray/internal/errs"
	"github.com/goray/goray/internal/ids"
	"github.com/goray/goray/internal/sched"
	pb "github.com/goray/goray/proto/goray/v1"
)

// leaseWorker takes an idle task worker of the job, or starts one, and
// leases it; res then belongs to the lease.
func (r *Raylet) leaseWorker(ctx context.Context, j *job, res sched.Resources) (*lease, error) {
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
		if !res.FitsIn(r.total) {
			// A placement group bundle it was granted in was returned meanwhile.
			r.mu.Unlock()
			return nil, errs.New(errs.KindInfeasible, "", "node %s no longer has %s: the placement group bundle was returned (the group was removed)", r.nodeID, lacks(res, r.total))
		}
		count := 0
		var idle *worker
		for _, w := range j.workers {
			if w.kind != kindTask || w.dead || w.failing {
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

func (r *Raylet) newLeaseLocked(w *worker, res sched.Resources) *lease {
	l := &lease{id: ids.NewLeaseID(), worker: w, res: res.Clone()}
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
		w.failing = true
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
