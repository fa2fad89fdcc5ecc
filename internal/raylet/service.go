package raylet

import (
	"context"

	"github.com/goray/goray/internal/errs"
	"github.com/goray/goray/internal/ids"
	pb "github.com/goray/goray/proto/goray/v1"
)

// nodeServer serves the raylet's services, one per manager, routing each
// RPC to its manager: NodeService (the node and its worker pool),
// LeaseService (the lease manager), BundleService (the bundle manager) and
// LocalObjectService (the local object table).
type nodeServer struct {
	r *Raylet
}

var (
	_ pb.NodeServiceServer        = (*nodeServer)(nil)
	_ pb.LeaseServiceServer       = (*nodeServer)(nil)
	_ pb.BundleServiceServer      = (*nodeServer)(nil)
	_ pb.LocalObjectServiceServer = (*nodeServer)(nil)
)

func (s *nodeServer) GetNodeInfo(context.Context, *pb.GetNodeInfoRequest) (*pb.GetNodeInfoResponse, error) {
	r := s.r
	total, _ := r.leases.resources()
	return &pb.GetNodeInfoResponse{NodeId: r.nodeID[:], HeadAddress: r.headAddr, StoreDir: r.storeDir, Total: &pb.Resources{Amounts: total},
		ObjectStore: r.objects.storeStats()}, nil
}

func (s *nodeServer) RegisterWorker(req *pb.RegisterWorkerRequest, stream pb.NodeService_RegisterWorkerServer) error {
	return s.r.registerWorker(req, stream)
}

func (s *nodeServer) RequestWorkerLease(ctx context.Context, req *pb.RequestWorkerLeaseRequest) (*pb.RequestWorkerLeaseResponse, error) {
	resp, err := s.r.requestLease(ctx, req)
	return resp, err
}

func (s *nodeServer) ReturnWorkerLease(ctx context.Context, req *pb.ReturnWorkerLeaseRequest) (*pb.ReturnWorkerLeaseResponse, error) {
	return s.r.returnLease(ctx, req)
}

func (s *nodeServer) StartActor(ctx context.Context, req *pb.StartActorRequest) (*pb.StartActorResponse, error) {
	if err := s.r.checkEpoch(ctx, "StartActor"); err != nil {
		return nil, err
	}
	resp, err := s.r.createActor(ctx, req)
	return resp, err
}

func (s *nodeServer) StopActor(ctx context.Context, req *pb.StopActorRequest) (*pb.StopActorResponse, error) {
	if err := s.r.checkEpoch(ctx, "StopActor"); err != nil {
		return nil, err
	}
	if err := s.r.killActor(ctx, req); err != nil {
		return nil, err
	}
	return &pb.StopActorResponse{}, nil
}

func (s *nodeServer) StopJob(ctx context.Context, req *pb.StopJobRequest) (*pb.StopJobResponse, error) {
	if err := s.r.checkEpoch(ctx, "StopJob"); err != nil {
		return nil, err
	}
	id, err := ids.ParseJobID(req.GetJobId())
	if err != nil {
		return nil, errs.New(errs.KindInvalidArgument, "", "FinishJob: %v", err)
	}
	if err := s.r.finishJob(ctx, id); err != nil {
		return nil, err
	}
	return &pb.StopJobResponse{}, nil
}

func (s *nodeServer) PrepareBundle(ctx context.Context, req *pb.PrepareBundleRequest) (*pb.PrepareBundleResponse, error) {
	if err := s.r.checkEpoch(ctx, "PrepareBundle"); err != nil {
		return nil, err
	}
	if err := s.r.prepareBundle(req); err != nil {
		return nil, err
	}
	if req.GetCommit() {
		if err := s.r.commitBundle(&pb.CommitBundleRequest{PlacementGroupId: req.GetPlacementGroupId(), BundleIndex: req.GetBundleIndex()}); err != nil {
			return nil, err
		}
	}
	return &pb.PrepareBundleResponse{}, nil
}

func (s *nodeServer) CommitBundle(ctx context.Context, req *pb.CommitBundleRequest) (*pb.CommitBundleResponse, error) {
	if err := s.r.checkEpoch(ctx, "CommitBundle"); err != nil {
		return nil, err
	}
	if err := s.r.commitBundle(req); err != nil {
		return nil, err
	}
	return &pb.CommitBundleResponse{}, nil
}

func (s *nodeServer) ReturnBundle(ctx context.Context, req *pb.ReturnBundleRequest) (*pb.ReturnBundleResponse, error) {
	if err := s.r.checkEpoch(ctx, "ReturnBundle"); err != nil {
		return nil, err
	}
	if err := s.r.returnBundle(ctx, req); err != nil {
		return nil, err
	}
	return &pb.ReturnBundleResponse{}, nil
}

func (s *nodeServer) SealObject(_ context.Context, req *pb.SealObjectRequest) (*pb.SealObjectResponse, error) {
	if err := s.r.sealObject(req); err != nil {
		return nil, err
	}
	return &pb.SealObjectResponse{}, nil
}

func (s *nodeServer) PullObject(ctx context.Context, req *pb.PullObjectRequest) (*pb.PullObjectResponse, error) {
	return s.r.pullObject(ctx, req)
}

func (s *nodeServer) AllocateObject(_ context.Context, req *pb.AllocateObjectRequest) (*pb.AllocateObjectResponse, error) {
	resp, err := s.r.allocateObject(req)
	if err != nil {
		return nil, err
	}
	return resp, nil
}

func (s *nodeServer) FreeObjects(_ context.Context, req *pb.FreeObjectsRequest) (*pb.FreeObjectsResponse, error) {
	if err := s.r.freeObjects(req); err != nil {
		return nil, err
	}
	return &pb.FreeObjectsResponse{}, nil
}

func (s *nodeServer) UnpinObjects(_ context.Context, req *pb.UnpinObjectsRequest) (*pb.UnpinObjectsResponse, error) {
	if err := s.r.unpinObjects(req); err != nil {
		return nil, err
	}
	return &pb.UnpinObjectsResponse{}, nil
}

// transferServer is the raylet's ObjectTransferService.
type transferServer struct {
	pb.UnimplementedObjectTransferServiceServer
	r *Raylet
}

func (s *transferServer) Pull(req *pb.PullRequest, stream pb.ObjectTransferService_PullServer) error {
	return s.r.transfer.serveObject(req, stream)
}

// finishJob stops the job's workers, frees its objects and (through the
// workers' exits) its resources. It is idempotent; a second call waits for
// the first one's cleanup.
func (r *Raylet) finishJob(ctx context.Context, id ids.JobID) error {
	j, ws, first := r.pool.finish(id)
	if !first {
		select {
		case <-j.finishDone:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	objs := r.objects.finishJob(id)

	for _, w := range ws {
		w.kill()
	}
	waitExited(ws, killWaitTimeout, r.log)
	r.objects.freeAll(objs)
	r.releaseArena(id)
	close(j.finishDone)
	if len(ws) > 0 || len(objs) > 0 {
		r.log.Info("job finished", "job", id, "workers_stopped", len(ws), "objects_freed", len(objs))
	}
	return nil
}

func (r *Raylet) finishJobAsync(id ids.JobID) {
	if r.pool.jobFinished(id) {
		return
	}
	r.goTracked(func() { _ = r.finishJob(r.ctx, id) })
}

// releaseArena gives the pages of the arena's free regions back to the
// system once job id ended, so that an idle node holds no store memory.
func (r *Raylet) releaseArena(id ids.JobID) {
	if r.arena == nil {
		return
	}
	n, err := r.arena.Release()
	if err != nil {
		r.log.Warn("give the object store arena's free pages back", "job", id, "err", err)
		return
	}
	if n > 0 {
		r.log.Debug("gave the object store arena's free pages back", "job", id, "bytes", n)
	}
}

// checkEpoch refuses a command from a head of an older term than one this
// raylet has seen: a deposed leader that has not yet noticed.
func (r *Raylet) checkEpoch(ctx context.Context, what string) error {
	if ok, got, cur := r.epochs.Check(ctx); !ok {
		r.log.Warn("refused a command of a deposed head", "command", what, "epoch", got, "current", cur)
		return errs.New(errs.KindPermissionDenied, "", "%s from a deposed head (leadership epoch %d; the current leader's is %d)", what, got, cur)
	}
	return nil
}
