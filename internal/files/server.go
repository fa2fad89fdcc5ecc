package files

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/goray/goray/internal/errs"
	"github.com/goray/goray/internal/rpc"
	pb "github.com/goray/goray/proto/goray/v1"
)

// Timeouts of a raylet's file calls.
const (
	// indexCallTimeout bounds a call to the head's file index.
	indexCallTimeout = 10 * time.Second
	// replicateTimeout bounds copying one replica from a peer.
	replicateTimeout = 30 * time.Minute
)

// Server is a raylet's FileStoreService over its Disk. The raylet's gRPC
// handlers call it from their goroutines; mu guards the peer connections
// only and is never held across a call.
type Server struct {
	disk   *Disk
	nodeID []byte
	addr   string
	token  string
	log    *slog.Logger

	// known, when set, checks that a raylet address is one of a node the
	// head registered: ReplicateFile copies only from those.
	known func(ctx context.Context, node []byte, addr string) error

	mu     sync.Mutex
	index  pb.FileIndexServiceClient    // guarded by mu: set by SetIndex
	nodes  pb.NodeRegistryServiceClient // guarded by mu: set by SetIndex
	peers  map[string]*grpc.ClientConn  // guarded by mu: by raylet address
	closed bool                         // guarded by mu
}

var _ pb.FileStoreServiceServer = (*Server)(nil)

// NewServer serves disk for the node nodeID reached at addr; SetIndex
// gives it the head's file index once the raylet has a connection to the
// head.
func NewServer(disk *Disk, nodeID []byte, addr, token string, log *slog.Logger) *Server {
	return &Server{disk: disk, nodeID: nodeID, addr: addr, token: token, log: log, peers: map[string]*grpc.ClientConn{}}
}

// SetKnownPeer sets the check ReplicateFile makes of its sources (the
// raylet's own: a node the head registered); call it before serving.
func (s *Server) SetKnownPeer(known func(ctx context.Context, node []byte, addr string) error) {
	s.known = known
}

// SetIndex gives the server the head's file index and node registry, over
// cc, the raylet's connection to the head.
func (s *Server) SetIndex(cc grpc.ClientConnInterface) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.index = pb.NewFileIndexServiceClient(cc)
	s.nodes = pb.NewNodeRegistryServiceClient(cc)
}

// Disk is the server's disk.
func (s *Server) Disk() *Disk { return s.disk }

func (s *Server) indexClient() (pb.FileIndexServiceClient, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.index == nil {
		return nil, errs.New(errs.KindUnavailable, "", "this raylet has not joined a head yet; try again")
	}
	return s.index, nil
}

// Close closes the peer connections.
func (s *Server) Close() {
	s.mu.Lock()
	peers := s.peers
	s.peers, s.closed = nil, true
	s.mu.Unlock()
	for _, c := range peers {
		c.Close()
	}
}

func (s *Server) peer(addr string) (pb.FileStoreServiceClient, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, errs.New(errs.KindShuttingDown, "", "the raylet is stopping")
	}
	c := s.peers[addr]
	if c == nil {
		var err error
		if c, err = rpc.Dial(addr, s.token); err != nil {
			return nil, err
		}
		s.peers[addr] = c
	}
	return pb.NewFileStoreServiceClient(c), nil
}

// PutFile writes the streamed file to disk while hashing it, has the head
// place the other replicas, copies the file to them (in parallel, each
// target pulling from here) and commits the file to the index. A failure
// before the commit removes the partial file; a target that fails leaves
// the file with fewer replicas, which the response says.
func (s *Server) PutFile(stream pb.FileStoreService_PutFileServer) error {
	ctx := stream.Context()
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	hdr := first.GetHeader()
	if hdr == nil {
		return errs.New(errs.KindInvalidArgument, "", "PutFile: the first message must carry the header")
	}
	replicas := max(hdr.GetReplicas(), 1)
	if hdr.GetName() != "" {
		if err := ValidateName(hdr.GetName()); err != nil {
			return err
		}
	}
	index, err := s.indexClient()
	if err != nil {
		return err
	}
	w, err := s.disk.Create()
	if err != nil {
		return err
	}
	defer w.Abort()
	// The other replicas receive the file as it arrives (PushFile), so the
	// copies take no longer than the put.
	pctx, cancelPushes := context.WithCancel(ctx)
	defer cancelPushes()
	var pushes []*push
	if replicas > 1 {
		pushes = s.openPushes(pctx, index, replicas-1)
	}
	for msg := first; ; {
		if len(msg.GetData()) > 0 {
			if _, err := w.Write(msg.GetData()); err != nil {
				return err
			}
			for _, p := range pushes {
				p.send(&pb.PushFileRequest{Data: msg.GetData()})
			}
		}
		msg, err = stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return err
		}
	}
	blocks := w.Blocks()
	h := w.Sum()
	size := w.Size()
	if n, ok := s.disk.Size(h); ok && n == size {
		w.Abort() // already here: same content
	} else if err := w.Commit(h); err != nil {
		return err
	}
	info := &pb.FileInfo{Sha256: h[:], Size: size, BlockSize: BlockSize, ReplicasWanted: replicas}
	info.BlockCrc32C = blocks
	held := []*pb.FileReplica{{NodeId: s.nodeID, Address: s.addr}}
	// Targets that fail are left out of a later placement (a node that
	// stopped but is not yet declared dead, a full disk).
	var exclude [][]byte
	for _, p := range pushes {
		exclude = append(exclude, p.target.GetNodeId())
		if err := p.finish(info); err != nil {
			s.log.Warn("a replica of a put file failed", "file", h.String(), "target", p.target.GetAddress(), "err", err)
			if errors.Is(err, errs.ErrUnavailable) || status.Code(err) == codes.Unavailable {
				s.reportUnreachable(p.target)
			}
			continue
		}
		held = append(held, p.target)
	}
	if uint32(len(held)) < replicas {
		// The rest copy the whole file from here.
		for round := 0; round < 2 && uint32(len(held)) < replicas; round++ {
			pctx, cancel := context.WithTimeout(ctx, indexCallTimeout)
			place, err := index.PlaceFile(pctx, &pb.PlaceFileRequest{Sha256: h[:], Size: size, Replicas: replicas - uint32(len(held)) + 1,
				HolderNodeId: s.nodeID, ExcludeNodeIds: exclude})
			cancel()
			if err != nil {
				return fmt.Errorf("place the replicas of file %s: %w", h, err)
			}
			if len(place.GetTargets()) == 0 {
				break
			}
			ok, bad := s.copyTo(ctx, info, place.GetTargets())
			held = append(held, ok...)
			if len(bad) == 0 {
				break // every node the head could offer took one
			}
			for _, t := range place.GetTargets() {
				exclude = append(exclude, t.GetNodeId())
			}
		}
	}
	info.Replicas = held
	cctx, cancel := context.WithTimeout(ctx, indexCallTimeout)
	defer cancel()
	resp, err := index.CommitFile(cctx, &pb.CommitFileRequest{Info: info, Name: hdr.GetName()})
	if err != nil {
		return fmt.Errorf("record file %s in the head's index: %w", h, err)
	}
	return stream.SendAndClose(&pb.PutFileResponse{Info: resp.GetInfo()})
}

// push is a copy of a put forwarded to another raylet as it arrives.
type push struct {
	target *pb.FileReplica
	st     grpc.ClientStreamingClient[pb.PushFileRequest, pb.PushFileResponse]
	cancel context.CancelFunc
	err    error // the first failure; nothing more is sent then
}

// openPushes has the head place n more replicas (the file's hash is not
// known yet) and opens a PushFile stream to each target; a target that
// cannot be reached is left out (the put copies to another one later).
func (s *Server) openPushes(ctx context.Context, index pb.FileIndexServiceClient, n uint32) []*push {
	cctx, cancel := context.WithTimeout(ctx, indexCallTimeout)
	place, err := index.PlaceFile(cctx, &pb.PlaceFileRequest{Replicas: n + 1, HolderNodeId: s.nodeID})
	cancel()
	if err != nil {
		s.log.Warn("place a put's replicas", "err", err)
		return nil
	}
	var out []*push
	for _, t := range place.GetTargets() {
		c, err := s.peer(t.GetAddress())
		if err != nil {
			continue
		}
		if s.known != nil && s.known(ctx, t.GetNodeId(), t.GetAddress()) != nil {
			continue
		}
		pctx, cancel := context.WithCancel(ctx)
		st, err := c.PushFile(pctx)
		if err != nil {
			cancel()
			continue
		}
		out = append(out, &push{target: t, st: st, cancel: cancel})
	}
	return out
}

// send forwards m; a target that takes no message for DefaultStallTimeout
// (stopped, cut off) is given up, so that it cannot hold the put.
func (p *push) send(m *pb.PushFileRequest) {
	if p.err == nil {
		stall := time.AfterFunc(DefaultStallTimeout, p.cancel)
		p.err = p.st.Send(m)
		stall.Stop()
	}
}

// finish sends the file's entry and waits for the target to keep its copy.
func (p *push) finish(info *pb.FileInfo) error {
	defer p.cancel()
	p.send(&pb.PushFileRequest{Info: info})
	stall := time.AfterFunc(DefaultStallTimeout, p.cancel)
	defer stall.Stop()
	_, err := p.st.CloseAndRecv() // the target's own error, when a send failed
	return err
}

// PushFile receives a copy of a file as its put arrives at another raylet
// and keeps it once it matches the entry the last message carries.
func (s *Server) PushFile(stream pb.FileStoreService_PushFileServer) error {
	w, err := s.disk.Create()
	if err != nil {
		return err
	}
	defer w.Abort()
	var info *pb.FileInfo
	for {
		m, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return err
		}
		if m.GetInfo() != nil {
			info = m.GetInfo()
			continue
		}
		if info != nil {
			return errs.New(errs.KindInvalidArgument, "", "PushFile: data after the file's entry")
		}
		if _, err := w.Write(m.GetData()); err != nil {
			return err
		}
	}
	if info == nil {
		return errs.New(errs.KindInvalidArgument, "", "PushFile: the stream ended without the file's entry")
	}
	h, err := HashFromBytes(info.GetSha256())
	if err != nil {
		return err
	}
	blocks := w.Blocks()
	if got := w.Sum(); got != h || w.Size() != info.GetSize() || !slices.Equal(blocks, info.GetBlockCrc32C()) {
		return errs.New(errs.KindInvalidArgument, h.String(), "PushFile: the %d bytes received hash to %s, not to the entry's %s of %d bytes; not kept", w.Size(), got, h, info.GetSize())
	}
	if n, ok := s.disk.Size(h); !ok || n != info.GetSize() {
		if err := w.Commit(h); err != nil {
			return err
		}
	}
	return stream.SendAndClose(&pb.PushFileResponse{})
}

// copyTo has every target copy the file from here, in parallel, and
// returns those that did and those that did not. A target that refused
// the connection is reported to the head, which probes it and declares it
// dead if it is gone.
func (s *Server) copyTo(ctx context.Context, info *pb.FileInfo, targets []*pb.FileReplica) (ok, failed []*pb.FileReplica) {
	done := make([]bool, len(targets))
	var wg sync.WaitGroup
	for i, t := range targets {
		wg.Go(func() {
			c, err := s.peer(t.GetAddress())
			if err == nil {
				_, err = c.ReplicateFile(ctx, &pb.ReplicateFileRequest{Info: info, Sources: []string{s.addr}})
			}
			if err != nil {
				s.log.Warn("a replica of a put file failed", "file", fmt.Sprintf("%x", info.GetSha256()), "target", t.GetAddress(), "err", err)
				if errors.Is(err, errs.ErrUnavailable) || status.Code(err) == codes.Unavailable {
					s.reportUnreachable(t)
				}
				return
			}
			done[i] = true
		})
	}
	wg.Wait()
	for i, t := range targets {
		if done[i] {
			ok = append(ok, t)
		} else {
			failed = append(failed, t)
		}
	}
	return ok, failed
}

func (s *Server) reportUnreachable(t *pb.FileReplica) {
	s.mu.Lock()
	nodes := s.nodes
	s.mu.Unlock()
	if nodes == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), indexCallTimeout)
	defer cancel()
	nodes.ReportUnreachable(ctx, &pb.ReportUnreachableRequest{NodeId: t.GetNodeId(), Address: t.GetAddress()})
}

// ReadFile streams the local replica from offset, one block per message.
// The bytes are sent as they are on disk: the reader verifies them.
func (s *Server) ReadFile(req *pb.ReadFileRequest, stream pb.FileStoreService_ReadFileServer) error {
	h, err := HashFromBytes(req.GetSha256())
	if err != nil {
		return err
	}
	bs := req.GetBlockSize()
	if bs == 0 {
		bs = BlockSize
	}
	if bs > 4<<20 {
		return errs.New(errs.KindInvalidArgument, "", "ReadFile: block size %d over the 4 MiB bound", bs)
	}
	f, err := s.disk.Open(h)
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	size := uint64(st.Size())
	off := req.GetOffset()
	if off > size || off%uint64(bs) != 0 {
		return errs.New(errs.KindInvalidArgument, "", "ReadFile: offset %d is not a block boundary of the %d-byte file", off, size)
	}
	buf := make([]byte, bs)
	first := true
	for off < size || first {
		n, err := f.ReadAt(buf[:min(uint64(bs), size-off)], int64(off))
		if err != nil && !errors.Is(err, io.EOF) {
			return errs.New(errs.KindInternal, "", "read file %s: %v", h, err)
		}
		m := &pb.ReadFileResponse{Offset: off, Data: buf[:n]}
		if first {
			m.Size, first = size, false
		}
		if err := stream.Send(m); err != nil {
			return err
		}
		if n == 0 {
			break
		}
		off += uint64(n)
	}
	return nil
}

// ReplicateFile copies a file from the sources (in order, resuming at the
// last verified block on the next source when one fails), verifying every
// block against the index's checksums and the whole copy against the
// file's SHA-256 before it keeps it.
func (s *Server) ReplicateFile(ctx context.Context, req *pb.ReplicateFileRequest) (*pb.ReplicateFileResponse, error) {
	info := req.GetInfo()
	h, err := HashFromBytes(info.GetSha256())
	if err != nil {
		return nil, err
	}
	if n, ok := s.disk.Size(h); ok && n == info.GetSize() && !req.GetReplace() {
		return &pb.ReplicateFileResponse{}, nil
	}
	ctx, cancel := context.WithTimeout(ctx, replicateTimeout)
	defer cancel()
	w, err := s.disk.Create()
	if err != nil {
		return nil, err
	}
	defer w.Abort()
	v, err := newVerifier(info)
	if err != nil {
		return nil, err
	}
	var last error
	for _, src := range req.GetSources() {
		if src == s.addr {
			continue
		}
		if s.known != nil {
			if err := s.known(ctx, nil, src); err != nil {
				last = err
				continue
			}
		}
		if err := s.copyFrom(ctx, src, v, w); err != nil {
			if errors.Is(err, errs.ErrObjectStoreFull) || ctx.Err() != nil {
				return nil, err
			}
			last = err
			continue
		}
		if got := w.Sum(); got != h {
			// Every block's checksum matched, the content's hash does not:
			// a source's replica was altered.
			return nil, errs.New(errs.KindObjectLost, h.String(), "copy file %s: the bytes copied hash to %s although every block's checksum matched; not kept", h, got)
		}
		if err := w.Commit(h); err != nil {
			return nil, err
		}
		return &pb.ReplicateFileResponse{}, nil
	}
	if last == nil {
		last = errors.New("no source given")
	}
	return nil, errs.New(errs.KindObjectLost, h.String(), "copy file %s: no source could provide it: %v", h, last)
}

// copyFrom appends the blocks from v's next one on from the raylet at src.
func (s *Server) copyFrom(ctx context.Context, src string, v *verifier, w *Writer) error {
	c, err := s.peer(src)
	if err != nil {
		return err
	}
	if v.done() {
		return nil
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	st, err := c.ReadFile(ctx, &pb.ReadFileRequest{Sha256: v.info.GetSha256(), Offset: v.offset(), BlockSize: v.info.GetBlockSize()})
	if err != nil {
		return err
	}
	for !v.done() {
		stall := time.AfterFunc(DefaultStallTimeout, cancel)
		m, err := st.Recv()
		if !stall.Stop() && err != nil {
			err = fmt.Errorf("no block from %s for %v: %w", src, DefaultStallTimeout, err)
		}
		if err != nil {
			return err
		}
		if err := v.check(m.GetOffset(), m.GetData()); err != nil {
			return err
		}
		if _, err := w.Write(m.GetData()); err != nil {
			return err
		}
	}
	return nil
}

// DeleteFile removes the local replica.
func (s *Server) DeleteFile(_ context.Context, req *pb.DeleteFileRequest) (*pb.DeleteFileResponse, error) {
	h, err := HashFromBytes(req.GetSha256())
	if err != nil {
		return nil, err
	}
	if err := s.disk.Remove(h); err != nil {
		return nil, err
	}
	return &pb.DeleteFileResponse{}, nil
}

// Reconcile tells the head which replicas are on disk (the raylet calls it
// once it joined) and deletes those the head answers are stale or
// unwanted; the head adopts the rest.
func (s *Server) Reconcile(ctx context.Context) error {
	index, err := s.indexClient()
	if err != nil {
		return err
	}
	local, err := s.disk.List()
	if err != nil {
		return err
	}
	req := &pb.ReportNodeFilesRequest{NodeId: s.nodeID}
	for _, f := range local {
		req.Files = append(req.Files, &pb.LocalFile{Sha256: f.Hash[:], Size: f.Size})
	}
	ctx, cancel := context.WithTimeout(ctx, indexCallTimeout)
	defer cancel()
	resp, err := index.ReportNodeFiles(ctx, req)
	if err != nil {
		return err
	}
	for _, b := range resp.GetDeleteSha256() {
		if h, err := HashFromBytes(b); err == nil {
			s.disk.Remove(h)
		}
	}
	if len(local) > 0 {
		s.log.Info("file replicas reconciled with the head", "found", len(local), "deleted", len(resp.GetDeleteSha256()))
	}
	return nil
}

// verifier checks a file's blocks in order against its index entry.
type verifier struct {
	info *pb.FileInfo
	next int // the next block
	n    int // blocks
}

func newVerifier(info *pb.FileInfo) (*verifier, error) {
	bs := info.GetBlockSize()
	if bs == 0 || bs > 4<<20 {
		return nil, errs.New(errs.KindInvalidArgument, "", "file index entry: block size %d", bs)
	}
	n := NumBlocks(info.GetSize(), bs)
	if len(info.GetBlockCrc32C()) != n {
		return nil, errs.New(errs.KindInvalidArgument, "", "file index entry: %d block checksums for %d blocks", len(info.GetBlockCrc32C()), n)
	}
	return &verifier{info: info, n: n}, nil
}

func (v *verifier) done() bool { return v.next == v.n }

func (v *verifier) offset() uint64 { return uint64(v.next) * uint64(v.info.GetBlockSize()) }

// errCorrupt marks a block whose bytes do not match the index.
var errCorrupt = errors.New("corrupt block")

// check verifies the block at off.
func (v *verifier) check(off uint64, data []byte) error {
	if v.done() {
		return fmt.Errorf("%d bytes past the end of the file", len(data))
	}
	want := BlockLen(v.info.GetSize(), v.info.GetBlockSize(), v.next)
	if off != v.offset() || len(data) != want {
		return fmt.Errorf("%w: got %d bytes at %d, want block %d (%d bytes at %d)", errCorrupt, len(data), off, v.next, want, v.offset())
	}
	if sum := BlockSum(data); sum != v.info.GetBlockCrc32C()[v.next] {
		return fmt.Errorf("%w: block %d (at byte %d) does not match its checksum", errCorrupt, v.next, off)
	}
	v.next++
	return nil
}
