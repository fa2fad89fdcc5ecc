package raylet

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"sync"
	"syscall"

	"golang.org/x/sync/singleflight"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/goray/goray/internal/errs"
	"github.com/goray/goray/internal/ids"
	"github.com/goray/goray/internal/rpc"
	"github.com/goray/goray/internal/store"
	pb "github.com/goray/goray/proto/goray/v1"
)

// transfer moves objects between this node and other raylets (Ray's
// ObjectManager): it keeps one connection per peer raylet, pulls remote
// objects into the local object table (concurrent pulls of one object share
// one transfer) and serves ObjectTransferService.Pull from it.
//
// PullObject handlers call fetch, the transfer server calls serveObject, and
// Raylet.stop calls close, each from its own goroutine. mu guards the peers
// and closed; no other lock is held while it is, and the object table
// (localObjects) is called without it.
type transfer struct {
	nodeID   ids.NodeID
	token    string
	storeDir string
	objects  *localObjects
	log      *slog.Logger

	flight singleflight.Group // pulls, by object ID
	// unreachable, when set, tells the head of a raylet a pull could not
	// reach and went past to a replica.
	unreachable func(node []byte, addr string)
	// known, when set, checks that a source is a node of the cluster.
	known func(ctx context.Context, node []byte, addr string) error

	mu     sync.Mutex
	peers  map[string]*grpc.ClientConn // guarded by mu: by raylet address
	closed bool                        // guarded by mu: close was called
}

func newTransfer(nodeID ids.NodeID, token, storeDir string, objects *localObjects, log *slog.Logger) *transfer {
	return &transfer{nodeID: nodeID, token: token, storeDir: storeDir, objects: objects, log: log, peers: map[string]*grpc.ClientConn{}}
}

// fetch pulls object id of job from the raylet at loc into the local store,
// once however many callers ask at the same time. The pull runs under life
// (the raylet's lifetime, bounded by pullBudget), so a caller that gives up
// (ctx) does not cancel it for the others.
func (t *transfer) fetch(ctx, life context.Context, id ids.ObjectID, jobID ids.JobID, loc *pb.ObjectLocation) error {
	ch := t.flight.DoChan(id.String(), func() (any, error) {
		pctx, cancel := context.WithTimeout(life, pullBudget)
		defer cancel()
		return nil, t.pull(pctx, id, jobID, loc)
	})
	select {
	case res := <-ch:
		return res.Err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// close closes every peer connection; peer fails from now on.
func (t *transfer) close() {
	t.mu.Lock()
	peers := t.peers
	t.peers, t.closed = map[string]*grpc.ClientConn{}, true
	t.mu.Unlock()
	for _, c := range peers {
		c.Close()
	}
}

// peer returns a cached connection to another raylet.
func (t *transfer) peer(addr string) (pb.ObjectTransferServiceClient, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return nil, errStopping
	}
	c := t.peers[addr]
	if c == nil {
		var err error
		if c, err = rpc.Dial(addr, t.token); err != nil {
			return nil, err
		}
		t.peers[addr] = c
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
// arena region, making room as a put does; a file on a node without
// arena), resuming an interrupted stream where it broke off.
func (t *transfer) pull(ctx context.Context, id ids.ObjectID, jobID ids.JobID, loc *pb.ObjectLocation) error {
	if t.objects.has(id) {
		return nil
	}
	sources := pullSources(loc, t.nodeID)
	if len(sources) == 0 {
		return errs.New(errs.KindObjectLost, "", "pull object %s: its location names no other node that holds it", id)
	}
	if t.known != nil {
		var firstErr error
		kept := sources[:0:0]
		for _, s := range sources {
			if err := t.known(ctx, s.node, s.addr); err != nil {
				firstErr = cmp.Or(firstErr, err)
				continue
			}
			kept = append(kept, s)
		}
		if len(kept) == 0 {
			return firstErr
		}
		sources = kept
	}
	var sink pullSink
	alloc, exists, err := t.objects.alloc(id, jobID, loc.GetSize(), true, false)
	if err != nil || exists {
		return err
	}
	if alloc != nil {
		m, err := store.OpenArena(t.storeDir)
		if err == nil {
			sink.region, err = m.Region(alloc.off, alloc.size)
		}
		if err != nil {
			t.objects.dropAlloc(id, alloc)
			return errs.New(errs.KindObjectLost, "", "pull object %s: map the arena: %v", id, err)
		}
	} else {
		f, err := store.Create(t.storeDir, id)
		if err != nil {
			return storeFileErr(err, t.storeDir, id, loc.GetSize())
		}
		sink.f = f
	}
	committed := false
	defer func() {
		if committed {
			return
		}
		if alloc != nil {
			t.objects.dropAlloc(id, alloc)
		} else {
			sink.f.Close()
			os.Remove(sink.f.Name())
		}
	}()
	// Each source is tried in turn, resuming at the byte the last one
	// stopped at: a replica holds the same bytes.
	var off uint64
	total := int64(-1)
	var lastErr error
	from := loc.GetRayletAddress()
	for i, src := range sources {
		if i > 0 {
			t.log.Info("object pull failing over to a replica", "object", id, "from", from, "to", src.addr, "offset", off, "err", lastErr)
		}
		from = src.addr
		lastErr = t.pullFrom(ctx, src.addr, id, &sink, &off, &total)
		if lastErr == nil || ctx.Err() != nil {
			break
		}
		if i+1 < len(sources) && errors.Is(lastErr, errs.ErrUnavailable) && t.unreachable != nil {
			// Failing over: the source still counts as down, for the head.
			t.unreachable(src.node, src.addr)
		}
	}
	if lastErr != nil {
		var ge *errs.Error
		if errors.As(lastErr, &ge) {
			return lastErr
		}
		return errs.New(errs.KindObjectLost, "", "pull object %s from %s: %v", id, from, lastErr)
	}
	if want := loc.GetSize(); want != 0 && want != off {
		return errs.New(errs.KindObjectLost, "", "pull object %s from %s: got %d bytes, its location says %d", id, from, off, want)
	}
	if alloc != nil {
		committed = true // sealPulled frees the region if it cannot seal it
		return t.objects.sealPulled(id, jobID, alloc)
	}
	if err := store.Commit(sink.f, t.storeDir, id); err != nil {
		return storeFileErr(err, t.storeDir, id, off)
	}
	committed = true
	return t.objects.sealFile(id, jobID, off)
}

// pullSource is a raylet a pull may read the object from.
type pullSource struct {
	node []byte
	addr string
}

// pullSources are the raylets a pull of the object at loc may read from:
// loc's, then its replicas', this node's left out.
func pullSources(loc *pb.ObjectLocation, self ids.NodeID) []pullSource {
	var out []pullSource
	add := func(node []byte, addr string) {
		if addr == "" || (len(node) > 0 && string(node) == string(self[:])) ||
			slices.ContainsFunc(out, func(s pullSource) bool { return s.addr == addr }) {
			return
		}
		out = append(out, pullSource{node, addr})
	}
	add(loc.GetNodeId(), loc.GetRayletAddress())
	for _, r := range loc.GetReplicas() {
		add(r.GetNodeId(), r.GetRayletAddress())
	}
	return out
}

// pullFrom streams the object from the raylet at addr into sink from *off
// on, resuming a bounded number of times after an interrupted stream; nil
// once it has every byte.
func (t *transfer) pullFrom(ctx context.Context, addr string, id ids.ObjectID, sink *pullSink, off *uint64, total *int64) error {
	client, err := t.peer(addr)
	if err != nil {
		return err
	}
	var lastErr error
	for attempt := 0; attempt < pullAttempts; attempt++ {
		err := t.pullStream(ctx, client, id, sink, off, total)
		if err == nil && *total >= 0 && *off == uint64(*total) {
			return nil
		}
		if err == nil {
			err = fmt.Errorf("stream ended at byte %d of %d", *off, *total)
		}
		lastErr = err
		var ge *errs.Error
		if errors.As(err, &ge) || ctx.Err() != nil {
			break // the holder answered definitely, or we ran out of time
		}
		t.log.Debug("object pull interrupted, resuming", "object", id, "offset", *off, "err", err)
	}
	return lastErr
}

// storeFileErr is the error of writing object id's file of size bytes into
// the store directory (a node without arena): a full file system is
// ErrObjectStoreFull, not a raw ENOSPC.
func storeFileErr(err error, dir string, id ids.ObjectID, size uint64) error {
	if errors.Is(err, syscall.ENOSPC) {
		return errs.New(errs.KindObjectStoreFull, "", "object %s (%d bytes): the file system under the store directory %s is full; free space there (/dev/shm)", id, size, dir)
	}
	return err
}

func (t *transfer) pullStream(ctx context.Context, client pb.ObjectTransferServiceClient, id ids.ObjectID, sink *pullSink, off *uint64, total *int64) error {
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
func (t *transfer) serveObject(req *pb.PullRequest, stream pb.ObjectTransferService_PullServer) error {
	id, err := ids.ParseObjectID(req.GetObjectId())
	if err != nil {
		return errs.New(errs.KindInvalidArgument, "", "Pull: %v", err)
	}
	// Pin the copy for the stream (a spilled one is read from its spill
	// file, not restored), so that it is not evicted, spilled or freed
	// under it.
	p, found, err := t.objects.pin(stream.Context(), id, pb.PinMode_PIN_MODE_READ, false)
	if err != nil {
		return err
	}
	if !found {
		return errs.New(errs.KindObjectLost, "", "object %s is not in the object store of node %s", id, t.nodeID)
	}
	defer t.objects.unpin(id)
	if p.inArena {
		m, err := store.OpenArena(t.storeDir)
		var b []byte
		if err == nil {
			b, err = m.View(p.off, p.size)
		}
		if err != nil {
			return errs.New(errs.KindObjectLost, "", "object %s: read the arena: %v", id, err)
		}
		return serveChunks(req, stream, id, p.size, func(off, n uint64) ([]byte, error) {
			return b[off : off+n : off+n], nil
		})
	}
	path, base, size := store.Path(t.storeDir, id), uint64(0), p.size
	if !p.inFile {
		path, base = p.spillPath, p.spillOff
	}
	f, err := os.Open(path)
	if err != nil {
		return errs.New(errs.KindObjectLost, "", "object %s is recorded on node %s but its file is gone: %v", id, t.nodeID, err)
	}
	defer f.Close()
	if p.inFile {
		st, err := f.Stat()
		if err != nil {
			return errs.New(errs.KindObjectLost, "", "object %s: %v", id, err)
		}
		size = uint64(st.Size())
	}
	return serveChunks(req, stream, id, size, func(off, n uint64) ([]byte, error) {
		// A buffer per chunk: gRPC may still be writing the last one out
		// (transferServerCodec does not copy it).
		buf := make([]byte, n)
		m, err := f.ReadAt(buf, int64(base+off))
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
