package raylet

import (
	"context"
	"os"

	"github.com/goray/goray/internal/errs"
	"github.com/goray/goray/internal/ids"
	"github.com/goray/goray/internal/store"
	pb "github.com/goray/goray/proto/goray/v1"
)

// Chunk sizes of object transfers.
const (
	defaultChunk = 1 << 20
	maxChunk     = 4 << 20
	pullChunk    = 4 << 20 // what a pull asks for
	pullAttempts = 3
)

// objectJob is the job an object request names, or the object's own job.
func objectJob(id ids.ObjectID, b []byte) (ids.JobID, error) {
	if len(b) == 0 {
		return id.Job(), nil
	}
	return ids.ParseJobID(b)
}

// sealObject implements NodeService.SealObject.
func (r *Raylet) sealObject(req *pb.SealObjectRequest) error {
	id, err := ids.ParseObjectID(req.GetObjectId())
	if err != nil {
		return errs.New(errs.KindInvalidArgument, "", "SealObject: %v", err)
	}
	jobID, err := objectJob(id, req.GetJobId())
	if err != nil {
		return errs.New(errs.KindInvalidArgument, "", "SealObject: %v", err)
	}
	if ok, err := r.objects.sealAlloc(id, req.GetSize()); ok {
		return err // written into the arena region AllocateObject gave
	}
	st, err := os.Stat(store.Path(r.storeDir, id))
	if err != nil {
		return errs.New(errs.KindNotFound, "", "SealObject: object %s has no file in the store directory %s (write it with the store package first): %v", id, r.storeDir, err)
	}
	if req.GetSize() != 0 && uint64(st.Size()) != req.GetSize() {
		return errs.New(errs.KindInvalidArgument, "", "SealObject: object %s is %d bytes in the store, the request says %d", id, st.Size(), req.GetSize())
	}
	return r.objects.sealFile(id, jobID, uint64(st.Size()))
}

// allocateObject implements NodeService.AllocateObject.
func (r *Raylet) allocateObject(req *pb.AllocateObjectRequest) (*pb.AllocateObjectResponse, error) {
	id, err := ids.ParseObjectID(req.GetObjectId())
	if err != nil {
		return nil, errs.New(errs.KindInvalidArgument, "", "AllocateObject: %v", err)
	}
	jobID, err := objectJob(id, req.GetJobId())
	if err != nil {
		return nil, errs.New(errs.KindInvalidArgument, "", "AllocateObject: %v", err)
	}
	o, exists, err := r.objects.alloc(id, jobID, req.GetSize(), false, req.GetAcceptSpillFile())
	if err != nil || o == nil {
		return &pb.AllocateObjectResponse{Exists: exists}, err
	}
	if o.direct != "" {
		return &pb.AllocateObjectResponse{SpillPath: o.direct}, nil
	}
	return &pb.AllocateObjectResponse{Ok: true, Offset: o.off}, nil
}

// freeObjects implements NodeService.FreeObjects.
func (r *Raylet) freeObjects(req *pb.FreeObjectsRequest) error {
	if n := len(req.GetObjectIds()); n > maxFreeIDs {
		return errs.New(errs.KindInvalidArgument, "", "FreeObjects: %d object IDs, at most %d in one request", n, maxFreeIDs)
	}
	for _, b := range req.GetObjectIds() {
		id, err := ids.ParseObjectID(b)
		if err != nil {
			return errs.New(errs.KindInvalidArgument, "", "FreeObjects: %v", err)
		}
		r.objects.free(id)
	}
	return nil
}

// Bounds on the IDs of one UnpinObjects or FreeObjects request.
const (
	maxUnpinIDs = 10000
	maxFreeIDs  = 100000
)

// unpinObjects implements LocalObjectService.UnpinObjects.
func (r *Raylet) unpinObjects(req *pb.UnpinObjectsRequest) error {
	if n := len(req.GetObjectIds()); n > maxUnpinIDs {
		return errs.New(errs.KindInvalidArgument, "", "UnpinObjects: %d object IDs, at most %d in one request", n, maxUnpinIDs)
	}
	for _, b := range req.GetObjectIds() {
		id, err := ids.ParseObjectID(b)
		if err != nil {
			return errs.New(errs.KindInvalidArgument, "", "UnpinObjects: %v", err)
		}
		r.objects.unpin(id)
	}
	return nil
}

// location is where an object is on this node (p, from a pin).
func (r *Raylet) location(p objPlace, like *pb.ObjectLocation) *pb.ObjectLocation {
	return &pb.ObjectLocation{NodeId: r.nodeID[:], RayletAddress: r.addr, Size: p.size,
		Encoding: like.GetEncoding(), TypeUrl: like.GetTypeUrl(), InArena: p.inArena, ArenaOffset: p.off}
}

// pullObject implements NodeService.PullObject: it makes the object local
// (pulling it from another node, restoring it from a spill file), pins it
// as asked, and returns where it is in this node's store.
func (r *Raylet) pullObject(ctx context.Context, req *pb.PullObjectRequest) (*pb.PullObjectResponse, error) {
	id, err := ids.ParseObjectID(req.GetObjectId())
	if err != nil {
		return nil, errs.New(errs.KindInvalidArgument, "", "PullObject: %v", err)
	}
	jobID, err := objectJob(id, req.GetJobId())
	if err != nil {
		return nil, errs.New(errs.KindInvalidArgument, "", "PullObject: %v", err)
	}
	mode := req.GetPin()
	if _, ok := pb.PinMode_name[int32(mode)]; !ok {
		return nil, errs.New(errs.KindInvalidArgument, "", "PullObject: unknown pin mode %d", mode)
	}
	loc := req.GetLocation()
	// A copy pulled here may be evicted before it is pinned (the store is
	// under pressure): pull it again, a bounded number of times.
	for attempt := 0; ; attempt++ {
		direct := req.GetReadSpilled() && mode == pb.PinMode_PIN_MODE_READ
		p, found, err := r.objects.pin(ctx, id, mode, !direct)
		if err != nil {
			return nil, err
		}
		if found {
			if req.GetKeepAsReplica() && !r.objects.keepAsReplica(id) && attempt < pullAttempts {
				continue // evicted before it was kept: pull it again
			}
			return &pb.PullObjectResponse{Local: r.location(p, loc), SpillPath: p.spillPath, SpillOffset: p.spillOff}, nil
		}
		from, here := loc.GetRayletAddress(), string(loc.GetNodeId()) == string(r.nodeID[:])
		if from == "" && !here {
			return nil, errs.New(errs.KindInvalidArgument, "", "PullObject: object %s is not on node %s and the request names no location to pull it from", id, r.nodeID)
		}
		if srcs := pullSources(loc, r.nodeID); len(srcs) == 0 || (len(loc.GetReplicas()) == 0 && from == r.addr) {
			return nil, errs.New(errs.KindObjectLost, "", "object %s is not in the object store of node %s, where its location says it is (freed, or its job ended)", id, r.nodeID)
		}
		if attempt >= pullAttempts {
			return nil, errs.New(errs.KindObjectStoreFull, "", "object %s was evicted from node %s's store %d times before it could be read: the store is too full; release objects or raise --object-store-memory", id, r.nodeID, attempt)
		}
		if err := r.transfer.fetch(ctx, r.ctx, id, jobID, loc); err != nil {
			return nil, r.pullUnreachable(ctx, id, loc, err)
		}
	}
}
