package raylet

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/goray/goray/internal/errs"
	"github.com/goray/goray/internal/ids"
	"github.com/goray/goray/internal/rpc"
	"github.com/goray/goray/internal/store"
	pb "github.com/goray/goray/proto/goray/v1"
)

// Chunk sizes of object transfers.
const (
	defaultChunk = 1 << 20
	maxChunk     = 4 << 20
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
	st, err := os.Stat(store.Path(r.storeDir, id))
	if err != nil {
		return errs.New(errs.KindNotFound, "", "SealObject: object %s has no file in the store directory %s (write it with the store package first): %v", id, r.storeDir, err)
	}
	if req.GetSize() != 0 && uint64(st.Size()) != req.GetSize() {
		return errs.New(errs.KindInvalidArgument, "", "SealObject: object %s is %d bytes in the store, the request says %d", id, st.Size(), req.GetSize())
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if j := r.jobs[jobID]; j != nil && j.finished {
		return errJobFinished(jobID)
	}
	r.objects[id] = &object{size: uint64(st.Size()), job: jobID}
	return nil
}

// pullObject implements NodeService.PullObject.
func (r *Raylet) pullObject(ctx context.Context, req *pb.PullObjectRequest) error {
	id, err := ids.ParseObjectID(req.GetObjectId())
	if err != nil {
		return errs.New(errs.KindInvalidArgument, "", "PullObject: %v", err)
	}
	jobID, err := objectJob(id, req.GetJobId())
	if err != nil {
		return errs.New(errs.KindInvalidArgument, "", "PullObject: %v", err)
	}
	r.mu.Lock()
	_, local := r.objects[id]
	r.mu.Unlock()
	if local {
		return nil
	}
	loc := req.GetLocation()
	from := loc.GetRayletAddress()
	if from == "" {
		return errs.New(errs.KindInvalidArgument, "", "PullObject: object %s is not on node %s and the request names no location to pull it from", id, r.nodeID)
	}
	if from == r.addr || string(loc.GetNodeId()) == string(r.nodeID[:]) {
		return errs.New(errs.KindObjectLost, "", "object %s is not in the object store of node %s, where its location says it is", id, r.nodeID)
	}
	ch := r.pullFlight.DoChan(id.String(), func() (any, error) {
		pctx, cancel := context.WithTimeout(r.ctx, pullBudget)
		defer cancel()
		return nil, r.pull(pctx, id, jobID, loc)
	})
	select {
	case res := <-ch:
		return res.Err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// peer returns a cached connection to another raylet.
func (r *Raylet) peer(addr string) (pb.ObjectTransferServiceClient, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.stopping {
		return nil, errStopping
	}
	c := r.peers[addr]
	if c == nil {
		var err error
		if c, err = rpc.Dial(addr, r.token); err != nil {
			return nil, err
		}
		r.peers[addr] = c
	}
	return pb.NewObjectTransferServiceClient(c), nil
}

// pull copies object id from the raylet at loc into the local store, resuming
// an interrupted stream where it broke off.
func (r *Raylet) pull(ctx context.Context, id ids.ObjectID, jobID ids.JobID, loc *pb.ObjectLocation) error {
	r.mu.Lock()
	_, local := r.objects[id]
	r.mu.Unlock()
	if local {
		return nil
	}
	client, err := r.peer(loc.GetRayletAddress())
	if err != nil {
		return err
	}
	f, err := store.Create(r.storeDir, id)
	if err != nil {
		return err
	}
	committed := false
	defer func() {
		if !committed {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	var off uint64
	total := int64(-1)
	var lastErr error
	for attempt := 0; attempt < pullAttempts; attempt++ {
		err := r.pullStream(ctx, client, id, f, &off, &total)
		if err == nil && total >= 0 && off == uint64(total) {
			lastErr = nil
			break
		}
		if err == nil {
			err = fmt.Errorf("stream ended at byte %d of %d", off, total)
		}
		lastErr = err
		var ge *errs.Error
		if errors.As(err, &ge) || ctx.Err() != nil {
			break // the holder answered definitely, or we ran out of time
		}
		r.log.Debug("object pull interrupted, resuming", "object", id, "offset", off, "err", err)
	}
	if lastErr != nil {
		var ge *errs.Error
		if errors.As(lastErr, &ge) {
			return lastErr
		}
		return errs.New(errs.KindObjectLost, "", "pull object %s from %s: %v", id, loc.GetRayletAddress(), lastErr)
	}
	if want := loc.GetSize(); want != 0 && want != off {
		return errs.New(errs.KindObjectLost, "", "pull object %s from %s: got %d bytes, its location says %d", id, loc.GetRayletAddress(), off, want)
	}
	if err := store.Commit(f, r.storeDir, id); err != nil {
		return err
	}
	committed = true
	r.mu.Lock()
	defer r.mu.Unlock()
	if j := r.jobs[jobID]; j != nil && j.finished {
		store.Remove(r.storeDir, id)
		return errJobFinished(jobID)
	}
	r.objects[id] = &object{size: off, job: jobID}
	return nil
}

func (r *Raylet) pullStream(ctx context.Context, client pb.ObjectTransferServiceClient, id ids.ObjectID, f *os.File, off *uint64, total *int64) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := client.Pull(ctx, &pb.PullRequest{ObjectId: id[:], Offset: *off, ChunkSize: defaultChunk})
	if err != nil {
		return transferErr(err)
	}
	for {
		msg, err := stream.Recv()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return transferErr(err)
		}
		if *total < 0 {
			*total = int64(msg.GetTotalSize())
		} else if uint64(*total) != msg.GetTotalSize() {
			return errs.New(errs.KindObjectLost, "", "object %s changed size during transfer (%d, then %d bytes)", id, *total, msg.GetTotalSize())
		}
		if msg.GetOffset() != *off {
			return errs.New(errs.KindObjectLost, "", "object %s: transfer chunk at offset %d, want %d", id, msg.GetOffset(), *off)
		}
		if *off+uint64(len(msg.GetData())) > uint64(*total) {
			return errs.New(errs.KindObjectLost, "", "object %s: transfer sent more than its %d bytes", id, *total)
		}
		if _, err := f.Write(msg.GetData()); err != nil {
			return errs.New(errs.KindObjectLost, "", "object %s: write to local store: %v", id, err)
		}
		*off += uint64(len(msg.GetData()))
	}
}

// transferErr keeps typed errors from the holder; others are retriable.
func transferErr(err error) error {
	if e := errs.FromStatus(err); e != err {
		return e
	}
	switch status.Code(err) {
	case codes.Unauthenticated, codes.PermissionDenied, codes.Unimplemented, codes.InvalidArgument:
		return errs.New(errs.KindObjectLost, "", "%v", err)
	}
	return err
}

// serveObject implements ObjectTransferService.Pull.
func (r *Raylet) serveObject(req *pb.PullRequest, stream pb.ObjectTransferService_PullServer) error {
	id, err := ids.ParseObjectID(req.GetObjectId())
	if err != nil {
		return errs.New(errs.KindInvalidArgument, "", "Pull: %v", err)
	}
	r.mu.Lock()
	_, ok := r.objects[id]
	r.mu.Unlock()
	if !ok {
		return errs.New(errs.KindObjectLost, "", "object %s is not in the object store of node %s", id, r.nodeID)
	}
	f, err := os.Open(store.Path(r.storeDir, id))
	if err != nil {
		return errs.New(errs.KindObjectLost, "", "object %s is recorded on node %s but its file is gone: %v", id, r.nodeID, err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return errs.New(errs.KindObjectLost, "", "object %s: %v", id, err)
	}
	size := uint64(st.Size())
	off := req.GetOffset()
	if off > size {
		return errs.New(errs.KindInvalidArgument, "", "Pull: offset %d is past the end of object %s (%d bytes)", off, id, size)
	}
	chunk := uint64(req.GetChunkSize())
	if chunk == 0 {
		chunk = defaultChunk
	}
	chunk = min(chunk, maxChunk)
	buf := make([]byte, min(chunk, max(size-off, 1)))
	if size == off {
		return stream.Send(&pb.PullResponse{TotalSize: size, Offset: off})
	}
	for off < size {
		n, err := f.ReadAt(buf[:min(uint64(len(buf)), size-off)], int64(off))
		if n == 0 && err != nil {
			return errs.New(errs.KindObjectLost, "", "object %s: read at %d: %v", id, off, err)
		}
		if err := stream.Send(&pb.PullResponse{TotalSize: size, Offset: off, Data: buf[:n]}); err != nil {
			return err
		}
		off += uint64(n)
	}
	return nil
}

// objectsOfJobLocked removes and returns the objects recorded for a job.
func (r *Raylet) objectsOfJobLocked(j ids.JobID) []ids.ObjectID {
	var out []ids.ObjectID
	for id, o := range r.objects {
		if o.job == j || id.Job() == j {
			out = append(out, id)
			delete(r.objects, id)
		}
	}
	return out
}
