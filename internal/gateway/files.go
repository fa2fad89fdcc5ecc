package gateway

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/goray/goray/internal/errs"
	ifiles "github.com/goray/goray/internal/files"
	pb "github.com/goray/goray/proto/goray/v1"
)

// The file store's RPCs of ClientService: the gateway is a file client
// whose puts go through the head's own node, and it streams what clients
// send and read through it. Files are cluster-wide (no namespace).

// files returns the gateway's file client, made on first use.
func (g *Gateway) files(ctx context.Context) (*ifiles.Client, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return nil, errs.New(errs.KindShuttingDown, "", "the gateway is shutting down")
	}
	if g.fc == nil {
		c, err := ifiles.DialVia(ctx, g.cfg.HeadAddress, g.cfg.Token)
		if err != nil {
			return nil, errs.New(errs.KindUnavailable, "", "the head's node, through which files are put, does not answer: %v", err)
		}
		g.fc = c
	}
	return g.fc, nil
}

func (g *Gateway) closeFiles() {
	g.mu.Lock()
	fc := g.fc
	g.fc = nil
	g.mu.Unlock()
	if fc != nil {
		fc.Close()
	}
}

func storedFile(in *pb.FileInfo) *pb.StoredFile {
	f := &pb.StoredFile{Sha256: fmt.Sprintf("%x", in.GetSha256()), Size: in.GetSize(), Names: in.GetNames(),
		ReplicasWanted: in.GetReplicasWanted(), CreatedUnixMs: in.GetCreatedUnixMs()}
	for _, r := range in.GetReplicas() {
		f.ReplicaNodes = append(f.ReplicaNodes, fmt.Sprintf("%x", r.GetNodeId()))
	}
	return f
}

// putReader reads a FilePut stream's chunks, the first message's included.
type putReader struct {
	stream pb.ClientService_FilePutServer
	buf    []byte
	err    error
}

func (r *putReader) Read(p []byte) (int, error) {
	for len(r.buf) == 0 {
		if r.err != nil {
			return 0, r.err
		}
		m, err := r.stream.Recv()
		if err != nil {
			r.err = err // io.EOF ends the file
			continue
		}
		if len(m.GetChunk()) > ChunkSize {
			r.err = errs.New(errs.KindInvalidArgument, "", "FilePut: a chunk of %d bytes, over the %d-byte bound", len(m.GetChunk()), ChunkSize)
			continue
		}
		r.buf = m.GetChunk()
	}
	n := copy(p, r.buf)
	r.buf = r.buf[n:]
	return n, nil
}

// FilePut stores a streamed file.
func (g *Gateway) FilePut(stream pb.ClientService_FilePutServer) error {
	ctx := stream.Context()
	first, err := stream.Recv()
	if errors.Is(err, io.EOF) {
		return errs.New(errs.KindInvalidArgument, "", "FilePut: empty stream, want a first message with the replicas and name")
	}
	if err != nil {
		return err
	}
	if n := first.GetName(); n != "" {
		if err := ifiles.ValidateName(n); err != nil {
			return err
		}
	}
	fc, err := g.files(ctx)
	if err != nil {
		return err
	}
	r := &putReader{stream: stream, buf: first.GetChunk()}
	info, err := fc.Put(ctx, r, int(first.GetReplicas()), first.GetName())
	if err != nil {
		return err
	}
	return stream.SendAndClose(&pb.FilePutResponse{File: storedFile(info)})
}

// FileGet streams a file, verified.
func (g *Gateway) FileGet(req *pb.FileGetRequest, stream pb.ClientService_FileGetServer) error {
	ctx := stream.Context()
	fc, err := g.files(ctx)
	if err != nil {
		return err
	}
	rd, err := fc.Open(ctx, req.GetRef())
	if err != nil {
		return err
	}
	defer rd.Close()
	msg := &pb.FileGetResponse{File: storedFile(rd.Info())}
	buf := make([]byte, ChunkSize)
	for {
		n, err := io.ReadFull(rd, buf)
		if n > 0 || msg.File != nil {
			msg.Chunk = buf[:n]
			if serr := stream.Send(msg); serr != nil {
				return serr
			}
			msg = &pb.FileGetResponse{}
		}
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// FileStat describes a file.
func (g *Gateway) FileStat(ctx context.Context, req *pb.FileStatRequest) (*pb.FileStatResponse, error) {
	fc, err := g.files(ctx)
	if err != nil {
		return nil, err
	}
	info, err := fc.Stat(ctx, req.GetRef())
	if err != nil {
		return nil, err
	}
	return &pb.FileStatResponse{File: storedFile(info)}, nil
}

// FileList lists files.
func (g *Gateway) FileList(ctx context.Context, req *pb.FileListRequest) (*pb.FileListResponse, error) {
	fc, err := g.files(ctx)
	if err != nil {
		return nil, err
	}
	infos, err := fc.List(ctx, req.GetPrefix())
	if err != nil {
		return nil, err
	}
	resp := &pb.FileListResponse{}
	for _, in := range infos {
		resp.Files = append(resp.Files, storedFile(in))
	}
	return resp, nil
}

// FileRemove removes a name or a file.
func (g *Gateway) FileRemove(ctx context.Context, req *pb.FileRemoveRequest) (*pb.FileRemoveResponse, error) {
	fc, err := g.files(ctx)
	if err != nil {
		return nil, err
	}
	content, err := fc.Remove(ctx, req.GetRef())
	if err != nil {
		return nil, err
	}
	return &pb.FileRemoveResponse{RemovedContent: content}, nil
}
