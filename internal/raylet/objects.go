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
	_, err = r.objects.sealFile(id, jobID, uint64(st.Size()))
	return err
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
	o, err := r.objects.alloc(id, jobID, req.GetSize(), false)
	if err != nil || o == nil {
		return &pb.AllocateObjectResponse{}, err
	}
	return &pb.AllocateObjectResponse{Ok: true, Offset: o.off}, nil
}

// freeObjects implements NodeService.FreeObjects.
func (r *Raylet) freeObjects(req *pb.FreeObjectsRequest) error {
	for _, b := range req.GetObjectIds() {
		id, err := ids.ParseObjectID(b)
		if err != nil {
			return errs.New(errs.KindInvalidArgument, "", "FreeObjects: %v", err)
		}
		r.objects.free(id)
	}
	return nil
}

// location is where object o is on this node.
func (r *Raylet) location(o *object, like *pb.ObjectLocation) *pb.ObjectLocation {
	return &pb.ObjectLocation{NodeId: r.nodeID[:], RayletAddress: r.addr, Size: o.size,
		Encoding: like.GetEncoding(), TypeUrl: like.GetTypeUrl(), InArena: o.inArena, ArenaOffset: o.off}
}

// pullObject implements NodeService.PullObject: it returns where the object
// is in this node's store.
func (r *Raylet) pullObject(ctx context.Context, req *pb.PullObjectRequest) (*pb.ObjectLocation, error) {
	id, err := ids.ParseObjectID(req.GetObjectId())
	if err != nil {
		return nil, errs.New(errs.KindInvalidArgument, "", "PullObject: %v", err)
	}
	jobID, err := objectJob(id, req.GetJobId())
	if err != nil {
		return nil, errs.New(errs.KindInvalidArgument, "", "PullObject: %v", err)
	}
	loc := req.GetLocation()
	if o := r.objects.get(id); o != nil {
		return r.location(o, loc), nil
	}
	from := loc.GetRayletAddress()
	if from == "" {
		return nil, errs.New(errs.KindInvalidArgument, "", "PullObject: object %s is not on node %s and the request names no location to pull it from", id, r.nodeID)
	}
	if from == r.addr || string(loc.GetNodeId()) == string(r.nodeID[:]) {
		return nil, errs.New(errs.KindObjectLost, "", "object %s is not in the object store of node %s, where its location says it is", id, r.nodeID)
	}
	o, err := r.transfer.fetch(ctx, r.ctx, id, jobID, loc)
	if err != nil {
		return nil, r.pullUnreachable(ctx, id, loc, err)
	}
	return r.location(o, loc), nil
}
