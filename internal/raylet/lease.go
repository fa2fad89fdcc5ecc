package raylet

import (
	"context"
	"errors"

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

// returnLease implements NodeService.ReturnWorkerLease. Returning an unknown
// lease (e.g. its worker died) is not an error.
func (r *Raylet) returnLease(req *pb.ReturnWorkerLeaseRequest) error {
	id, err := ids.ParseLeaseID(req.GetLeaseId())
	if err != nil {
		return errs.New(errs.KindInvalidArgument, "", "ReturnWorkerLease: %v", err)
	}
	l := r.leases.lookupLease(id)
	if l == nil || !r.leases.dropLease(l) {
		return nil
	}
	if r.pool.returnLease(l, req.GetWorkerFailed()) {
		w := l.worker
		r.log.Info("killing a worker its lease holder saw fail", "worker", w.id, "pid", w.pid)
		w.kill()
	}
	return nil
}
