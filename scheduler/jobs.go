package scheduler

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/goray/goray/internal/errs"
	"github.com/goray/goray/internal/ids"
	pb "github.com/goray/goray/proto/goray/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// binaryChunkSize is the size of the chunks FetchJobBinary sends.
const binaryChunkSize = 1 << 20

func parseSHA256(b []byte) ([32]byte, error) {
	var h [32]byte
	if len(b) != len(h) {
		return h, fmt.Errorf("malformed binary SHA-256: got %d bytes, want %d", len(b), len(h))
	}
	copy(h[:], b)
	return h, nil
}

// binaryPath is where the binary with SHA-256 h is stored.
func (s *Server) binaryPath(h [32]byte) string {
	return filepath.Join(s.binDir, hex.EncodeToString(h[:]))
}

func (s *Server) binaryPresent(h [32]byte) bool {
	st, err := os.Stat(s.binaryPath(h))
	return err == nil && st.Mode().IsRegular()
}

// RegisterJob creates a job, numbered from 1 up, and says whether the head
// already has its binary.
func (s *Server) RegisterJob(_ context.Context, req *pb.RegisterJobRequest) (*pb.RegisterJobResponse, error) {
	h, err := parseSHA256(req.GetBinarySha256())
	if err != nil {
		return nil, invalid("RegisterJob: %v", err)
	}
	if req.GetBinarySize() > uint64(s.cfg.MaxBinarySize) {
		return nil, invalid("RegisterJob: binary of %d bytes exceeds the head's limit of %d bytes", req.GetBinarySize(), s.cfg.MaxBinarySize)
	}
	s.mu.Lock()
	if s.nextJob == 0 {
		s.mu.Unlock()
		return nil, status.Error(codes.ResourceExhausted, "RegisterJob: job IDs exhausted")
	}
	id := ids.JobIDFromUint32(s.nextJob)
	rec := &JobRecord{
		ID:            id,
		BinarySHA256:  h,
		DriverAddress: req.GetDriverAddress(),
		Namespace:     req.GetNamespace(),
		Entrypoint:    req.GetEntrypoint(),
	}
	// The next number first: a job ID is never handed out twice, even when
	// the head dies between the two writes.
	if err := s.store.PutNextJob(s.nextJob + 1); err != nil {
		s.mu.Unlock()
		return nil, s.storeErr("next job number", err)
	}
	if err := s.store.PutJob(rec); err != nil {
		s.mu.Unlock()
		return nil, s.storeErr("job "+id.String(), err)
	}
	s.nextJob++
	s.jobDone[id] = make(chan struct{})
	s.mu.Unlock()

	present := s.binaryPresent(h)
	s.log.Info("job registered", "job", id, "entrypoint", rec.Entrypoint, "namespace", rec.Namespace,
		"driver", rec.DriverAddress, "binary", hex.EncodeToString(h[:]), "binary_present", present)
	return &pb.RegisterJobResponse{JobId: id[:], BinaryPresent: present}, nil
}

// UploadJobBinary receives a job binary: the first message carries its
// SHA-256 and size, the rest its bytes. The file is written under a temporary
// name, checked and renamed into place, so concurrent uploads of one binary
// are safe and a reader never sees a partial file.
func (s *Server) UploadJobBinary(stream pb.SchedulerService_UploadJobBinaryServer) error {
	first, err := stream.Recv()
	if errors.Is(err, io.EOF) {
		return invalid("UploadJobBinary: empty stream, want a first message with the SHA-256 and size")
	}
	if err != nil {
		return err
	}
	want, err := parseSHA256(first.GetBinarySha256())
	if err != nil {
		return invalid("UploadJobBinary: %v", err)
	}
	size := first.GetSize()
	if size == 0 {
		return invalid("UploadJobBinary: size is 0, want the binary's size in bytes")
	}
	if size > uint64(s.cfg.MaxBinarySize) {
		return invalid("UploadJobBinary: binary of %d bytes exceeds the head's limit of %d bytes", size, s.cfg.MaxBinarySize)
	}

	f, err := os.CreateTemp(s.binDir, ".upload-"+hex.EncodeToString(want[:8])+"-*")
	if err != nil {
		return status.Errorf(codes.Internal, "UploadJobBinary: %v", err)
	}
	tmp := f.Name()
	defer func() {
		_ = f.Close() // a second Close after success is harmless
		_ = os.Remove(tmp)
	}()

	hash := sha256.New()
	w := io.MultiWriter(f, hash)
	var got uint64
	msg := first
	for {
		if len(msg.GetBinarySha256()) != 0 && msg != first && string(msg.GetBinarySha256()) != string(want[:]) {
			return invalid("UploadJobBinary: a later message names another binary")
		}
		chunk := msg.GetChunk()
		if got+uint64(len(chunk)) > size {
			return invalid("UploadJobBinary: received more than the declared %d bytes", size)
		}
		if _, err := w.Write(chunk); err != nil {
			return status.Errorf(codes.Internal, "UploadJobBinary: write: %v", err)
		}
		got += uint64(len(chunk))
		msg, err = stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return err
		}
	}
	if got != size {
		return invalid("UploadJobBinary: received %d bytes, want the declared %d", got, size)
	}
	var sum [32]byte
	hash.Sum(sum[:0])
	if sum != want {
		return invalid("UploadJobBinary: SHA-256 mismatch: the received bytes hash to %x, want the declared %x", sum, want)
	}
	if err := f.Sync(); err != nil {
		return status.Errorf(codes.Internal, "UploadJobBinary: sync: %v", err)
	}
	if err := f.Close(); err != nil {
		return status.Errorf(codes.Internal, "UploadJobBinary: close: %v", err)
	}
	// Identical content under a content-addressed name: whichever concurrent
	// upload renames last wins, and either is correct.
	if err := os.Rename(tmp, s.binaryPath(want)); err != nil {
		return status.Errorf(codes.Internal, "UploadJobBinary: %v", err)
	}
	s.log.Info("job binary stored", "binary", hex.EncodeToString(want[:]), "size", size)
	return stream.SendAndClose(&pb.UploadJobBinaryResponse{})
}

// FetchJobBinary streams a stored binary in 1 MiB chunks; the first message
// carries its size.
func (s *Server) FetchJobBinary(req *pb.FetchJobBinaryRequest, stream pb.SchedulerService_FetchJobBinaryServer) error {
	h, err := parseSHA256(req.GetBinarySha256())
	if err != nil {
		return invalid("FetchJobBinary: %v", err)
	}
	f, err := os.Open(s.binaryPath(h))
	if errors.Is(err, os.ErrNotExist) {
		return notFound("", "FetchJobBinary: the head has no binary with SHA-256 %x", h)
	}
	if err != nil {
		return status.Errorf(codes.Internal, "FetchJobBinary: %v", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return status.Errorf(codes.Internal, "FetchJobBinary: %v", err)
	}
	size := uint64(st.Size())
	buf := make([]byte, binaryChunkSize)
	var sent uint64
	for first := true; first || sent < size; first = false {
		n, err := io.ReadFull(f, buf[:min(uint64(len(buf)), size-sent)])
		if err != nil {
			return status.Errorf(codes.Internal, "FetchJobBinary: read: %v", err)
		}
		msg := &pb.FetchJobBinaryResponse{Chunk: buf[:n]}
		if first {
			msg.Size = size
		}
		if err := stream.Send(msg); err != nil {
			return err
		}
		sent += uint64(n)
	}
	return nil
}

// GetJob returns a job's record.
func (s *Server) GetJob(_ context.Context, req *pb.GetJobRequest) (*pb.GetJobResponse, error) {
	id, err := ids.ParseJobID(req.GetJobId())
	if err != nil {
		return nil, invalid("GetJob: %v", err)
	}
	s.mu.Lock()
	rec, ok := s.store.GetJob(id)
	s.mu.Unlock()
	if !ok {
		return nil, notFound("", "job %s is not registered", id)
	}
	return &pb.GetJobResponse{Job: jobInfo(rec)}, nil
}

func jobInfo(j *JobRecord) *pb.JobInfo {
	id, h := j.ID, j.BinarySHA256
	return &pb.JobInfo{
		JobId:         id[:],
		BinarySha256:  h[:],
		DriverAddress: j.DriverAddress,
		Namespace:     j.Namespace,
		Entrypoint:    j.Entrypoint,
		Finished:      j.Finished,
	}
}

// KeepJobAlive holds the stream until the driver goes away (then the job is
// finished), the job is finished some other way, or the head closes. The
// response headers are sent at once, so a client can wait for them to know
// the head is watching. A driver opens it again after a head restart.
func (s *Server) KeepJobAlive(req *pb.KeepJobAliveRequest, stream pb.SchedulerService_KeepJobAliveServer) error {
	id, err := ids.ParseJobID(req.GetJobId())
	if err != nil {
		return invalid("KeepJobAlive: %v", err)
	}
	s.mu.Lock()
	done, ok := s.jobDone[id]
	if ok {
		if _, orphan := s.orphans[id]; orphan {
			delete(s.orphans, id)
			s.log.Info("driver reconnected", "job", id)
		}
		s.keepers[id]++
		defer func() {
			s.mu.Lock()
			if s.keepers[id]--; s.keepers[id] <= 0 {
				delete(s.keepers, id)
			}
			s.mu.Unlock()
		}()
	}
	s.mu.Unlock()
	if !ok {
		return notFound("", "job %s is not registered", id)
	}
	if err := stream.SendHeader(metadata.MD{}); err != nil {
		return err
	}
	ctx := stream.Context()
	select {
	case <-done:
		return nil
	case <-s.ctx.Done():
		return errs.New(errs.KindShuttingDown, "", "the head is shutting down")
	case <-ctx.Done():
		if s.ctx.Err() != nil {
			return errs.New(errs.KindShuttingDown, "", "the head is shutting down")
		}
		s.log.Info("driver went away", "job", id)
		if err := s.finishJob(id, "its driver went away"); err != nil {
			s.log.Error("finish job", "job", id, "err", err)
		}
		return status.FromContextError(ctx.Err()).Err()
	}
}

// checkOrphanJobs finishes the jobs found running at start whose drivers did
// not open KeepJobAlive within DriverReconnectTimeout.
func (s *Server) checkOrphanJobs(now time.Time) {
	var gone []ids.JobID
	s.mu.Lock()
	for id, since := range s.orphans {
		if now.Sub(since) > s.cfg.DriverReconnectTimeout {
			delete(s.orphans, id)
			gone = append(gone, id)
		}
	}
	s.mu.Unlock()
	for _, id := range gone {
		s.log.Warn("driver did not reconnect after the head restarted", "job", id, "waited", s.cfg.DriverReconnectTimeout)
		s.wg.Go(func() {
			if err := s.finishJob(id, "its driver did not reconnect after the head restarted"); err != nil {
				s.log.Error("finish job", "job", id, "err", err)
			}
		})
	}
}

// FinishJob finishes a job; finishing a finished job does nothing.
func (s *Server) FinishJob(_ context.Context, req *pb.FinishJobRequest) (*pb.FinishJobResponse, error) {
	id, err := ids.ParseJobID(req.GetJobId())
	if err != nil {
		return nil, invalid("FinishJob: %v", err)
	}
	if err := s.finishJob(id, "its driver finished it"); err != nil {
		return nil, err
	}
	return &pb.FinishJobResponse{}, nil
}

// finishJob marks job id finished, declares its actors dead and tells every
// alive raylet, waiting (bounded) for their answers.
// keepForDetachedLocked defers finishing a job whose detached actors live:
// its other actors stop now, and the job finishes when its last detached
// actor dies (markActorDeadLocked). It reports whether it deferred.
func (s *Server) keepForDetachedLocked(id ids.JobID, reason string) bool {
	var detached, others []*pb.ActorInfo
	for aid := range s.byJob[id] {
		if a, ok := s.store.GetActor(aid); ok && a.GetState() != pb.ActorState_ACTOR_STATE_DEAD {
			if a.GetSpec().GetDetached() {
				detached = append(detached, a)
			} else {
				others = append(others, a)
			}
		}
	}
	if len(detached) == 0 {
		return false
	}
	if _, already := s.detachedJobs[id]; !already {
		s.log.Info("job's driver is gone; its detached actors live on", "job", id, "reason", reason, "detached_actors", len(detached))
	}
	s.detachedJobs[id] = reason
	for _, a := range others {
		s.markActorDeadLocked(a, errs.New(errs.KindActorDied, a.GetSpec().GetTypeName(), "actor %x died: its driver is gone (%s)", a.GetSpec().GetActorId(), reason).Proto())
		if nid, err := ids.ParseNodeID(a.GetNodeId()); err == nil {
			if n, ok := s.store.GetNode(nid); ok && n.Alive {
				aid, _ := ids.ParseActorID(a.GetSpec().GetActorId())
				addr := n.Address
				s.wg.Go(func() { s.killOnNode(aid, addr) })
			}
		}
	}
	return true
}

func (s *Server) finishJob(id ids.JobID, reason string) error {
	s.mu.Lock()
	rec, ok := s.store.GetJob(id)
	if !ok {
		s.mu.Unlock()
		return notFound("", "job %s is not registered", id)
	}
	delete(s.orphans, id)
	if rec.Finished {
		s.mu.Unlock()
		return nil
	}
	if s.keepForDetachedLocked(id, reason) {
		s.mu.Unlock()
		return nil
	}
	now := time.Now()
	rec.Finished, rec.FinishedAt = true, now
	if err := s.store.PutJob(rec); err != nil {
		s.mu.Unlock()
		return s.storeErr("job "+id.String(), err)
	}
	if done, ok := s.jobDone[id]; ok {
		close(done)
	} else {
		done := make(chan struct{})
		close(done)
		s.jobDone[id] = done
	}
	s.finished = append(s.finished, finishedJob{id, now})
	actors := 0
	for aid := range s.byJob[id] {
		if a, ok := s.store.GetActor(aid); ok && !a.GetSpec().GetDetached() {
			s.markActorDeadLocked(a, errs.New(errs.KindActorDied, a.GetSpec().GetTypeName(), "actor %s died: its job finished", aid).Proto())
			actors++
		}
	}
	var addrs []string
	for _, n := range s.store.ListNodes() {
		if n.Alive {
			addrs = append(addrs, n.Address)
		}
	}
	s.mu.Unlock()

	s.log.Info("job finished", "job", id, "reason", reason, "actors_stopped", actors, "nodes", len(addrs))
	ctx, cancel := context.WithTimeout(s.ctx, rayletCallTimeout)
	defer cancel()
	var wg sync.WaitGroup
	for _, addr := range addrs {
		wg.Go(func() {
			c, err := s.nodeClient(addr)
			if err == nil {
				_, err = c.FinishJob(ctx, &pb.NodeServiceFinishJobRequest{JobId: id[:]})
			}
			if err != nil {
				s.log.Warn("tell raylet a job finished", "job", id, "raylet", addr, "err", errs.FromStatus(err))
			}
		})
	}
	wg.Wait()
	return nil
}
