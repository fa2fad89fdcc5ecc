package raylet

import (
	"context"
	"errors"
	"time"

	"github.com/goray/goray/internal/errs"
	"github.com/goray/goray/internal/ids"
	pb "github.com/goray/goray/proto/goray/v1"
)

func leaseWaitErr(err error) error {
	if errors.Is(err, context.DeadlineExceeded) {
		return errs.New(errs.KindTimeout, "", "timed out waiting for a worker: %v", err)
	}
	return err
}

// deathWaitTimeout bounds how long ReturnWorkerLease waits for a failed
// worker's process to exit, to say why it died.
const deathWaitTimeout = 5 * time.Second

// returnLease implements NodeService.ReturnWorkerLease. Returning an unknown
// lease (e.g. its worker died) is not an error. For a worker its holder saw
// fail, it answers why the worker died when that is out of memory (the
// memory monitor or the kernel killed it), which the holder cannot see.
func (r *Raylet) returnLease(ctx context.Context, req *pb.ReturnWorkerLeaseRequest) (*pb.ReturnWorkerLeaseResponse, error) {
	id, err := ids.ParseLeaseID(req.GetLeaseId())
	if err != nil {
		return nil, errs.New(errs.KindInvalidArgument, "", "ReturnWorkerLease: %v", err)
	}
	resp := &pb.ReturnWorkerLeaseResponse{}
	l := r.leases.lookupLease(id)
	if l == nil || !r.leases.dropLease(l) {
		// Gone already: its worker died holding it (or it was returned).
		if req.GetWorkerFailed() {
			if cause := r.pool.takeDeath(id); cause != nil {
				resp.WorkerDeath = cause.Proto()
			}
		}
		return resp, nil
	}
	if r.pool.returnLease(l, req.GetWorkerFailed()) {
		w := l.worker
		if r.pool.monitorCause(w) == nil {
			r.log.Info("killing a worker its lease holder saw fail", "worker", w.id, "pid", w.pid)
		}
		w.kill()
		t := time.NewTimer(deathWaitTimeout)
		defer t.Stop()
		select {
		case <-w.exited:
			if cause := r.pool.deathCauseOf(w); cause != nil {
				resp.WorkerDeath = cause.Proto()
			}
		case <-t.C:
		case <-ctx.Done():
		}
	}
	return resp, nil
}
