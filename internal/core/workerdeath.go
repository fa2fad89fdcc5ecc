package core

import (
	"context"
	"errors"
	"time"

	"github.com/goray/goray/internal/errs"
	"github.com/goray/goray/internal/rpc"
	pb "github.com/goray/goray/proto/goray/v1"
)

// deathExplainer is a leaseClient that can ask the raylet that granted a
// lease why its worker died (rayletLeases; the submitter's fakes need not).
type deathExplainer interface {
	// workerDeath returns the lease as failed and is what the raylet knows
	// of the worker's death that its holder cannot see (out of memory), or
	// nil.
	workerDeath(ctx context.Context, from leaseGranter, leaseID []byte) *errs.Error
}

// workerDeath is the raylet's answer for one failed leased worker, asked
// once: every task in flight on the worker waits for the one answer.
type workerDeath struct {
	done  chan struct{} // closed when cause is set
	cause *errs.Error   // nil: the raylet knows no more than the caller
}

// deathQueryTimeout bounds the question (the raylet waits up to 5 s for the
// worker's process to exit).
const deathQueryTimeout = 10 * time.Second

// deathCause is err, the failure of a task of function on leased worker w,
// or, when err says the worker went away and its raylet knows why (it was
// killed for using too much memory), that cause, named for function.
func (s *taskScheduler) deathCause(w *leasedWorker, function string, err error) error {
	ex, ok := s.cfg.leases.(deathExplainer)
	if !ok || !errors.Is(err, errs.ErrWorkerCrashed) {
		return err
	}
	s.mu.Lock()
	d, first := w.death, w.death == nil
	if first {
		d = &workerDeath{done: make(chan struct{})}
		w.death = d
	}
	s.mu.Unlock()
	if first {
		ctx, cancel := context.WithTimeout(s.cfg.ctx, deathQueryTimeout)
		d.cause = ex.workerDeath(ctx, w.raylet, w.leaseID)
		cancel()
		close(d.done)
	} else {
		select {
		case <-d.done:
		case <-s.cfg.ctx.Done():
			return err
		}
	}
	if d.cause == nil {
		return err
	}
	return forTask(d.cause, function)
}

func (rayletLeases) workerDeath(ctx context.Context, from leaseGranter, leaseID []byte) *errs.Error {
	c, ok := from.(*rpc.NodeClient)
	if !ok {
		return nil
	}
	resp, err := c.ReturnWorkerLease(ctx, &pb.ReturnWorkerLeaseRequest{LeaseId: leaseID, WorkerFailed: true})
	if err != nil || resp.GetWorkerDeath() == nil {
		return nil
	}
	return errs.FromProto(resp.GetWorkerDeath())
}
