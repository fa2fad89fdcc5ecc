package raylet

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"google.golang.org/grpc"
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
	ch := r.pullFlight.DoChan(id.String(), func() (any, error) {
		pctx, cancel := context.WithTimeout(r.ctx, pullBudget)
		defer cancel()
		return r.pull(pctx, id, jobID, loc)
	})
	select {
	case res := <-ch:
		if res.Err != nil {
			return nil, res.Err
		}
		return r.location(res.Val.(*object), loc), nil
	case <-ctx.Done():
		return nil, ctx.Err()
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

// pullSink is where a pull writes: an arena region or a temporary file.
type pullSink struct {
	region []byte
	f      *os.File
}

func (s *pullSink) writeAt(b []byte, off uint64) error {
	if s.region != nil {
		if off+uint64(len(b)) > uint64(len(s.region)) {
			return fmt.Errorf("%d bytes at %d overflow the %d-byte region", len(b), off, len(s.region))
		}
		if len(b) > 0 && &b[0] == &s.region[off] {
			return nil // pullCodec decoded it in place
		}
		copy(s.region[off:], b)
		return nil
	}
	_, err := s.f.Write(b)
	return err
}

// pull copies object id from the raylet at loc into the local store (an
// arena region when there is room, else a file), resuming an interrupted
// stream where it broke off.
func (r *Raylet) pull(ctx context.Context, id ids.ObjectID, jobID ids.JobID, loc *pb.ObjectLocation) (*object, error) {
	if o := r.objects.get(id); o != nil {
		return o, nil
	}
	client, err := r.peer(loc.GetRayletAddress())
	if err != nil {
		return nil, err
	}
	var sink pullSink
	alloc, err := r.objects.alloc(id, jobID, loc.GetSize(), true)
	if err != nil {
		return nil, err
	}
	if alloc != nil {
		m, err := store.OpenArena(r.storeDir)
		if err == nil {
			sink.region, err = m.Region(alloc.off, alloc.size)
		}
		if err != nil {
			r.log.Warn("pull into the arena; using a file", "object", id, "err", err)
			r.objects.dropAlloc(id, alloc)
			alloc, sink.region = nil, nil
		}
	}
	if alloc == nil {
		f, err := store.Create(r.storeDir, id)
		if err != nil {
			return nil, err
		}
		sink.f = f
	}
	committed := false
	defer func() {
		if committed {
			return
		}
		if alloc != nil {
			r.objects.dropAlloc(id, alloc)
		} else {
			sink.f.Close()
			os.Remove(sink.f.Name())
		}
	}()
	var off uint64
	total := int64(-1)
	var lastErr error
	for attempt := 0; attempt < pullAttempts; attempt++ {
		err := r.pullStream(ctx, client, id, &sink, &off, &total)
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
			return nil, lastErr
		}
		return nil, errs.New(errs.KindObjectLost, "", "pull object %s from %s: %v", id, loc.GetRayletAddress(), lastErr)
	}
	if want := loc.GetSize(); want != 0 && want != off {
		return nil, errs.New(errs.KindObjectLost, "", "pull object %s from %s: got %d bytes, its location says %d", id, loc.GetRayletAddress(), off, want)
	}
	if alloc != nil {
		committed = true // sealPulled frees the region if it cannot seal it
		if err := r.objects.sealPulled(id, jobID, alloc); err != nil {
			return nil, err
		}
		return alloc, nil
	}
	if err := store.Commit(sink.f, r.storeDir, id); err != nil {
		return nil, err
	}
	committed = true
	return r.objects.sealFile(id, jobID, off)
}

func (r *Raylet) pullStream(ctx context.Context, client pb.ObjectTransferServiceClient, id ids.ObjectID, sink *pullSink, off *uint64, total *int64) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var opts []grpc.CallOption
	if sink.region != nil {
		opts = append(opts, grpc.ForceCodecV2(pullCodec{region: sink.region}))
	}
	stream, err := client.Pull(ctx, &pb.PullRequest{ObjectId: id[:], Offset: *off, ChunkSize: pullChunk}, opts...)
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
			if sink.region != nil && uint64(*total) != uint64(len(sink.region)) {
				return errs.New(errs.KindObjectLost, "", "object %s is %d bytes at its holder, its location says %d", id, *total, len(sink.region))
			}
		} else if uint64(*total) != msg.GetTotalSize() {
			return errs.New(errs.KindObjectLost, "", "object %s changed size during transfer (%d, then %d bytes)", id, *total, msg.GetTotalSize())
		}
		if msg.GetOffset() != *off {
			return errs.New(errs.KindObjectLost, "", "object %s: transfer chunk at offset %d, want %d", id, msg.GetOffset(), *off)
		}
		if *off+uint64(len(msg.GetData())) > uint64(*total) {
			return errs.New(errs.KindObjectLost, "", "object %s: transfer sent more than its %d bytes", id, *total)
		}
		if err := sink.writeAt(msg.GetData(), *off); err != nil {
			return errs.New(errs.KindObjectLost, "", "object %s: write to local store: %v", id, err)
		}
		*off += uint64(len(msg.GetData()))
	}
}

// transferErr keeps typed errors from the holder; others are retriable.
func transferErr(err error) error {
	if e := errs.FromStatus(err); errors.As(e, new(*errs.Error)) {
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
	o := r.objects.get(id)
	if o == nil {
		return errs.New(errs.KindObjectLost, "", "object %s is not in the object store of node %s", id, r.nodeID)
	}
	if o.inArena {
		m, err := store.OpenArena(r.storeDir)
		var b []byte
		if err == nil {
			b, err = m.View(o.off, o.size)
		}
		if err != nil {
			return errs.New(errs.KindObjectLost, "", "object %s: read the arena: %v", id, err)
		}
		return serveChunks(req, stream, id, o.size, func(off, n uint64) ([]byte, error) {
			return b[off : off+n : off+n], nil
		})
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
	return serveChunks(req, stream, id, uint64(st.Size()), func(off, n uint64) ([]byte, error) {
		// A buffer per chunk: gRPC may still be writing the last one out
		// (transferServerCodec does not copy it).
		buf := make([]byte, n)
		m, err := f.ReadAt(buf, int64(off))
		if m == 0 && err != nil {
			return nil, err
		}
		return buf[:m], nil
	})
}

// serveChunks streams [req.Offset, size) of an object in chunks that read
// gives; a chunk must not change after it is sent.
func serveChunks(req *pb.PullRequest, stream pb.ObjectTransferService_PullServer, id ids.ObjectID, size uint64, read func(off, n uint64) ([]byte, error)) error {
	off := req.GetOffset()
	if off > size {
		return errs.New(errs.KindInvalidArgument, "", "Pull: offset %d is past the end of object %s (%d bytes)", off, id, size)
	}
	chunk := uint64(req.GetChunkSize())
	if chunk == 0 {
		chunk = defaultChunk
	}
	chunk = min(chunk, maxChunk)
	if size == off {
		return stream.Send(&pb.PullResponse{TotalSize: size, Offset: off})
	}
	for off < size {
		n := min(chunk, size-off)
		data, err := read(off, n)
		if err != nil {
			return errs.New(errs.KindObjectLost, "", "object %s: read at %d: %v", id, off, err)
		}
		if err := stream.Send(&pb.PullResponse{TotalSize: size, Offset: off, Data: data}); err != nil {
			return err
		}
		off += uint64(len(data))
	}
	return nil
}
