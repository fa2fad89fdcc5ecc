package scheduler

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
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

// finishedJobRetention is how long a finished job stays listed in heartbeat
// replies, for raylets that missed NodeService.FinishJob.
var finishedJobRetention = 60 * time.Second

type finishedJob struct {
	id ids.JobID
	at time.Time
}

// jobActors is what the job manager asks of the actor manager. Neither
// method calls back into the job manager.
type jobActors interface {
	// driverGone stops the live non-detached actors of job when it has
	// live detached actors, and returns how many detached ones live (0:
	// nothing was stopped).
	driverGone(job ids.JobID, reason string) int
	// jobFinished declares the job's non-detached actors dead and returns
	// how many.
	jobFinished(job ids.JobID) int
}

// jobNodes is what the job manager asks of the node manager.
type jobNodes interface {
	aliveNodes() []*NodeRecord
}

// jobManager owns the job table (Ray's GcsJobManager): job numbers, job
// binaries on disk, the drivers' KeepJobAlive streams (keepers), the jobs
// found running at start whose drivers have not come back (orphans), the
// recently finished jobs listed in heartbeat replies, and the jobs kept
// for their detached actors after their driver went.
//
// Callers: the gRPC handlers RegisterJob, UploadJobBinary, FetchJobBinary,
// GetJob, KeepJobAlive (one goroutine per stream) and FinishJob; Heartbeat
// (recentlyFinished); the node monitor goroutine (checkOrphans); the
// Deployer; the actor manager's goroutine telling it a job's last detached
// actor died.
//
// Lock: mu guards nextJob, jobDone, finished, orphans, keepers,
// detachedJobs and every read-modify-write of the job rows in the store
// (this manager is their only writer). mu is never held while calling the
// actor manager; it may be held while calling the node manager (a leaf).
type jobManager struct {
	log       *slog.Logger
	store     Store
	binDir    string
	maxBinary int64
	reconnect time.Duration
	ctx       context.Context
	wg        *sync.WaitGroup
	raylets   rayletClient
	nodes     jobNodes
	actors    jobActors
	// mirror holds the binaries for the other heads (nil: none); set once
	// before the server serves.
	mirror BinaryMirror

	mu       sync.Mutex
	nextJob  uint32                      // guarded by mu
	jobDone  map[ids.JobID]chan struct{} // guarded by mu; closed when the job finishes
	finished []finishedJob               // guarded by mu; recently finished, oldest first
	// orphans are the running jobs found in the store at start whose
	// drivers have not opened KeepJobAlive since, with when they were found.
	orphans map[ids.JobID]time.Time // guarded by mu
	// keepers counts each job's open KeepJobAlive streams.
	keepers map[ids.JobID]int // guarded by mu
	// detachedJobs are jobs whose driver is gone but whose detached actors
	// live; the value is why the driver went.
	detachedJobs map[ids.JobID]string // guarded by mu
}

func newJobManager(ctx context.Context, wg *sync.WaitGroup, log *slog.Logger, store Store, binDir string, maxBinary int64, reconnect time.Duration, raylets rayletClient, nodes jobNodes) *jobManager {
	return &jobManager{
		log: log, store: store, binDir: binDir, maxBinary: maxBinary, reconnect: reconnect,
		ctx: ctx, wg: wg, raylets: raylets, nodes: nodes,
		nextJob:      1,
		jobDone:      make(map[ids.JobID]chan struct{}),
		orphans:      make(map[ids.JobID]time.Time),
		keepers:      make(map[ids.JobID]int),
		detachedJobs: make(map[ids.JobID]string),
	}
}

// load rebuilds the job table from the store: every running job with a
// driver gets a full reconnect timeout to open KeepJobAlive.
func (m *jobManager) load(now time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.nextJob = max(m.nextJob, m.store.NextJob())
	for _, j := range m.store.ListJobs() {
		if n := j.ID.Uint32(); n >= m.nextJob {
			m.nextJob = n + 1
		}
		done := make(chan struct{})
		if j.Finished {
			close(done)
			if now.Sub(j.FinishedAt) < finishedJobRetention {
				m.finished = append(m.finished, finishedJob{j.ID, j.FinishedAt})
			}
		} else if j.DriverAddress != "" {
			// Deployed jobs have no driver: nothing keeps them alive.
			m.orphans[j.ID] = now
		}
		m.jobDone[j.ID] = done
	}
	slices.SortFunc(m.finished, func(a, b finishedJob) int { return a.at.Compare(b.at) })
}

func parseSHA256(b []byte) ([32]byte, error) {
	var h [32]byte
	if len(b) != len(h) {
		return h, fmt.Errorf("malformed binary SHA-256: got %d bytes, want %d", len(b), len(h))
	}
	copy(h[:], b)
	return h, nil
}

// binaryPath is where the binary with SHA-256 h is stored.
func (m *jobManager) binaryPath(h [32]byte) string {
	return filepath.Join(m.binDir, hex.EncodeToString(h[:]))
}

func (m *jobManager) binaryPresent(h [32]byte) bool {
	st, err := os.Stat(m.binaryPath(h))
	if err == nil && st.Mode().IsRegular() {
		return true
	}
	if m.mirror != nil {
		ctx, cancel := context.WithTimeout(m.ctx, rayletCallTimeout)
		defer cancel()
		ok, err := m.mirror.Has(ctx, h)
		return err == nil && ok
	}
	return false
}

// register creates a job, numbered from 1 up, and says whether the head
// already has its binary.
func (m *jobManager) register(req *pb.RegisterJobRequest) (*pb.RegisterJobResponse, error) {
	h, err := parseSHA256(req.GetBinarySha256())
	if err != nil {
		return nil, invalid("RegisterJob: %v", err)
	}
	if req.GetBinarySize() > uint64(m.maxBinary) {
		return nil, invalid("RegisterJob: binary of %d bytes exceeds the head's limit of %d bytes", req.GetBinarySize(), m.maxBinary)
	}
	m.mu.Lock()
	if m.nextJob == 0 {
		m.mu.Unlock()
		return nil, status.Error(codes.ResourceExhausted, "RegisterJob: job IDs exhausted")
	}
	id := ids.JobIDFromUint32(m.nextJob)
	rec := &JobRecord{
		ID:            id,
		BinarySHA256:  h,
		DriverAddress: req.GetDriverAddress(),
		Namespace:     req.GetNamespace(),
		Entrypoint:    req.GetEntrypoint(),
	}
	// The next number first: a job ID is never handed out twice, even when
	// the head dies between the two writes.
	if err := m.store.PutNextJob(m.nextJob + 1); err != nil {
		m.mu.Unlock()
		return nil, storeErr(m.log, "next job number", err)
	}
	if err := m.store.PutJob(rec); err != nil {
		m.mu.Unlock()
		return nil, storeErr(m.log, "job "+id.String(), err)
	}
	m.nextJob++
	m.jobDone[id] = make(chan struct{})
	m.mu.Unlock()

	present := m.binaryPresent(h)
	m.log.Info("job registered", "job", id, "entrypoint", rec.Entrypoint, "namespace", rec.Namespace,
		"driver", rec.DriverAddress, "binary", hex.EncodeToString(h[:]), "binary_present", present)
	return &pb.RegisterJobResponse{JobId: id[:], BinaryPresent: present}, nil
}

// UploadJobBinary receives a job binary: the first message carries its
// SHA-256 and size, the rest its bytes. The file is written under a temporary
// name, checked and renamed into place, so concurrent uploads of one binary
// are safe and a reader never sees a partial file.
func (m *jobManager) upload(stream pb.JobService_UploadJobBinaryServer) error {
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
	if size > uint64(m.maxBinary) {
		return invalid("UploadJobBinary: binary of %d bytes exceeds the head's limit of %d bytes", size, m.maxBinary)
	}

	f, err := os.CreateTemp(m.binDir, ".upload-"+hex.EncodeToString(want[:8])+"-*")
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
	if err := os.Rename(tmp, m.binaryPath(want)); err != nil {
		return status.Errorf(codes.Internal, "UploadJobBinary: %v", err)
	}
	if m.mirror != nil {
		if err := m.mirror.Save(stream.Context(), want, m.binaryPath(want)); err != nil {
			return status.Errorf(codes.Unavailable, "UploadJobBinary: keep the binary for the other heads: %v", err)
		}
	}
	m.log.Info("job binary stored", "binary", hex.EncodeToString(want[:]), "size", size)
	return stream.SendAndClose(&pb.UploadJobBinaryResponse{})
}

// FetchJobBinary streams a stored binary in 1 MiB chunks; the first message
// carries its size.
func (m *jobManager) fetch(req *pb.FetchJobBinaryRequest, stream pb.JobService_FetchJobBinaryServer) error {
	h, err := parseSHA256(req.GetBinarySha256())
	if err != nil {
		return invalid("FetchJobBinary: %v", err)
	}
	f, err := os.Open(m.binaryPath(h))
	if errors.Is(err, os.ErrNotExist) && m.mirror != nil {
		// Uploaded to another head of the cluster: load it from the mirror.
		if ok, lerr := m.mirror.Load(stream.Context(), h, m.binaryPath(h)); lerr != nil {
			return status.Errorf(codes.Unavailable, "FetchJobBinary: %v", lerr)
		} else if ok {
			f, err = os.Open(m.binaryPath(h))
		}
	}
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

// get returns a job's record.
func (m *jobManager) get(req *pb.GetJobRequest) (*pb.GetJobResponse, error) {
	id, err := ids.ParseJobID(req.GetJobId())
	if err != nil {
		return nil, invalid("GetJob: %v", err)
	}
	m.mu.Lock()
	rec, ok := m.store.GetJob(id)
	m.mu.Unlock()
	if !ok {
		return nil, notFound("", "job %s is not registered", id)
	}
	return &pb.GetJobResponse{Job: jobInfo(rec)}, nil
}

// jobState says whether job id is registered and whether it finished.
func (m *jobManager) jobState(id ids.JobID) (known, finished bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	rec, ok := m.store.GetJob(id)
	return ok, ok && rec.Finished
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

// keepAlive holds the stream until the driver goes away (then the job is
// finished), the job is finished some other way, or the head closes. The
// response headers are sent at once, so a client can wait for them to know
// the head is watching. A driver opens it again after a head restart.
func (m *jobManager) keepAlive(req *pb.KeepJobAliveRequest, stream pb.JobService_KeepJobAliveServer) error {
	id, err := ids.ParseJobID(req.GetJobId())
	if err != nil {
		return invalid("KeepJobAlive: %v", err)
	}
	m.mu.Lock()
	done, ok := m.jobDone[id]
	if ok {
		if _, orphan := m.orphans[id]; orphan {
			delete(m.orphans, id)
			m.log.Info("driver reconnected", "job", id)
		}
		m.keepers[id]++
		defer func() {
			m.mu.Lock()
			if m.keepers[id]--; m.keepers[id] <= 0 {
				delete(m.keepers, id)
			}
			m.mu.Unlock()
		}()
	}
	m.mu.Unlock()
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
	case <-m.ctx.Done():
		return errs.New(errs.KindShuttingDown, "", "the head is shutting down")
	case <-ctx.Done():
		if m.ctx.Err() != nil {
			return errs.New(errs.KindShuttingDown, "", "the head is shutting down")
		}
		m.log.Info("driver went away", "job", id)
		if err := m.finish(id, "its driver went away"); err != nil {
			m.log.Error("finish job", "job", id, "err", err)
		}
		return status.FromContextError(ctx.Err()).Err()
	}
}

// recentlyFinished lists the jobs finished within finishedJobRetention,
// oldest first.
func (m *jobManager) recentlyFinished(now time.Time) [][]byte {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.pruneFinishedLocked(now)
	out := make([][]byte, 0, len(m.finished))
	for _, f := range m.finished {
		out = append(out, f.id[:])
	}
	return out
}

func (m *jobManager) pruneFinishedLocked(now time.Time) {
	i := 0
	for i < len(m.finished) && now.Sub(m.finished[i].at) >= finishedJobRetention {
		i++
	}
	m.finished = m.finished[i:]
}

// checkOrphans prunes the finished list and finishes the jobs found running
// at start whose drivers did not open KeepJobAlive within the reconnect
// timeout.
func (m *jobManager) checkOrphans(now time.Time) {
	var gone []ids.JobID
	m.mu.Lock()
	m.pruneFinishedLocked(now)
	for id, since := range m.orphans {
		if now.Sub(since) > m.reconnect {
			delete(m.orphans, id)
			gone = append(gone, id)
		}
	}
	m.mu.Unlock()
	for _, id := range gone {
		m.log.Warn("driver did not reconnect after the head restarted", "job", id, "waited", m.reconnect)
		m.wg.Go(func() {
			if err := m.finish(id, "its driver did not reconnect after the head restarted"); err != nil {
				m.log.Error("finish job", "job", id, "err", err)
			}
		})
	}
}

// detachedActorsGone is told (by the actor manager, from a goroutine of
// its own) that job has no live detached actor left: a job kept for them
// finishes now.
func (m *jobManager) detachedActorsGone(job ids.JobID) {
	m.mu.Lock()
	reason, ok := m.detachedJobs[job]
	delete(m.detachedJobs, job)
	m.mu.Unlock()
	if ok {
		if err := m.finish(job, reason+"; its last detached actor died"); err != nil {
			m.log.Error("finish job", "job", job, "err", err)
		}
	}
}

// finish marks job id finished, declares its actors dead and tells every
// alive raylet, waiting (bounded) for their answers; finishing a finished
// job does nothing. A job whose detached actors live is not finished: its
// other actors stop now, and the job finishes when its last detached actor
// dies (detachedActorsGone).
func (m *jobManager) finish(id ids.JobID, reason string) error {
	m.mu.Lock()
	rec, ok := m.store.GetJob(id)
	if !ok {
		m.mu.Unlock()
		return notFound("", "job %s is not registered", id)
	}
	delete(m.orphans, id)
	if rec.Finished {
		m.mu.Unlock()
		return nil
	}
	// Recorded before asking the actor manager: a detached actor dying
	// meanwhile then finds the job and finishes it.
	_, already := m.detachedJobs[id]
	m.detachedJobs[id] = reason
	m.mu.Unlock()

	if n := m.actors.driverGone(id, reason); n > 0 {
		if !already {
			m.log.Info("job's driver is gone; its detached actors live on", "job", id, "reason", reason, "detached_actors", n)
		}
		return nil
	}

	m.mu.Lock()
	delete(m.detachedJobs, id)
	rec, ok = m.store.GetJob(id)
	if !ok || rec.Finished {
		m.mu.Unlock()
		return nil
	}
	now := time.Now()
	rec.Finished, rec.FinishedAt = true, now
	if err := m.store.PutJob(rec); err != nil {
		m.mu.Unlock()
		return storeErr(m.log, "job "+id.String(), err)
	}
	if done, ok := m.jobDone[id]; ok {
		close(done)
	} else {
		done := make(chan struct{})
		close(done)
		m.jobDone[id] = done
	}
	m.finished = append(m.finished, finishedJob{id, now})
	m.mu.Unlock()

	actors := m.actors.jobFinished(id)
	var addrs []string
	for _, n := range m.nodes.aliveNodes() {
		addrs = append(addrs, n.Address)
	}
	m.log.Info("job finished", "job", id, "reason", reason, "actors_stopped", actors, "nodes", len(addrs))
	ctx, cancel := context.WithTimeout(m.ctx, rayletCallTimeout)
	defer cancel()
	var wg sync.WaitGroup
	for _, addr := range addrs {
		wg.Go(func() {
			if err := m.raylets.StopJob(ctx, addr, id); err != nil {
				m.log.Warn("tell raylet a job finished", "job", id, "raylet", addr, "err", errs.FromStatus(err))
			}
		})
	}
	wg.Wait()
	return nil
}
