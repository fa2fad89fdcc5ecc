package scheduler

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/goray/goray/internal/errs"
	"github.com/goray/goray/internal/ids"
	pb "github.com/goray/goray/proto/goray/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Timeouts of the head's calls to raylets.
const (
	// createActorTimeout bounds NodeService.CreateActor: the raylet may have to
	// fetch the job binary and start a worker first.
	createActorTimeout = 2 * time.Minute
	// rayletCallTimeout bounds the head's other calls to raylets.
	rayletCallTimeout = 10 * time.Second
)

// Server is the head: it implements the head's services (one per manager:
// NodeRegistryService, JobService, ActorService, PlacementGroupService,
// StateService) as a thin facade that routes each RPC to the manager owning
// its state.
//
// The managers (each in its own file, each with its own lock):
//   - nodeManager (nodes.go): node table, heartbeats, liveness, cluster view;
//   - jobManager (jobs.go): jobs, binaries, drivers' streams, finished jobs;
//   - actorManager (actors.go): actor table, indices, placement, restarts;
//   - pgManager (pg.go): placement groups and their scheduler loop;
//   - stateView (state.go): the state API over the others' snapshots.
//
// Lock order: no manager calls another manager while holding its own lock,
// except for leaves, which never call out while holding theirs: the node
// manager, the job manager's jobState, the change feed and the store
// wrapper. So every chain of held locks is (actors | jobs | pgs) → nodes →
// feed or store, and none can cycle. Callbacks between managers (a node
// died, a job's last detached actor died) run with no manager lock held.
type Server struct {
	cfg Config
	log *slog.Logger

	// ctx is cancelled by Close; it bounds background work and calls to
	// raylets. wg tracks every goroutine the Server and its managers start.
	ctx       context.Context
	cancel    context.CancelFunc
	wg        sync.WaitGroup
	closeOnce sync.Once

	raylets *rayletPool
	feed    *changeFeed
	nodes   *nodeManager
	jobs    *jobManager
	actors  *actorManager
	pgs     *pgManager
	state   stateView
	files   *fileManager
}

// The head's services, one per manager; Server routes each RPC to its
// manager.
var (
	_ pb.NodeRegistryServiceServer   = (*Server)(nil)
	_ pb.JobServiceServer            = (*Server)(nil)
	_ pb.ActorServiceServer          = (*Server)(nil)
	_ pb.PlacementGroupServiceServer = (*Server)(nil)
	_ pb.StateServiceServer          = (*Server)(nil)
)

// New makes a Server from cfg (validated here) and starts its node monitor
// and placement group scheduler. Call Close to stop it.
func New(cfg Config) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	binDir := filepath.Join(cfg.DataDir, "binaries")
	if err := os.MkdirAll(binDir, 0o700); err != nil {
		return nil, fmt.Errorf("scheduler: create binary directory: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Server{cfg: cfg, log: cfg.Logger, ctx: ctx, cancel: cancel}
	store := &syncStore{s: cfg.Store}
	s.raylets = newRayletPool(cfg.Token, s.log)
	s.raylets.epoch, s.raylets.leads = cfg.Epoch, cfg.Leads
	s.feed = newChangeFeed()
	s.nodes = newNodeManager(s.log, store, s.feed, cfg.HeartbeatInterval, cfg.NodeTimeout)
	s.jobs = newJobManager(ctx, &s.wg, s.log, store, binDir, cfg.MaxBinarySize, cfg.DriverReconnectTimeout, s.raylets, s.nodes)
	s.jobs.mirror = cfg.Binaries
	s.actors = newActorManager(ctx, &s.wg, s.log, store, s.feed, s.nodes, s.jobs, s.raylets)
	s.pgs = newPGManager(ctx, &s.wg, s.log, store, s.feed, s.nodes, s.actors, s.raylets)
	s.state = stateView{stateSources{nodes: s.nodes, actors: s.actors, pgs: s.pgs}}
	s.jobs.actors = s.actors
	s.files = newFileManager(ctx, s.log, cfg.Store, s.nodes, s.raylets)
	actorsNodeDied := s.actors.nodeDied
	s.nodes.onDead = func(id ids.NodeID, addr, reason string) int {
		s.files.nodeDied(id)
		return actorsNodeDied(id, addr, reason)
	}
	s.nodes.dropConn = s.raylets.drop

	// After a head restart every alive node gets a full NodeTimeout to
	// heartbeat, and every running job with a driver a full
	// DriverReconnectTimeout to open KeepJobAlive.
	now := time.Now()
	s.jobs.load(now)
	s.pgs.load()
	s.nodes.load(now)
	s.actors.load()

	s.wg.Go(s.monitorNodes)
	s.wg.Go(s.pgs.run)
	s.wg.Go(s.files.run)
	return s, nil
}

// monitorNodes declares nodes dead when they miss heartbeats and finishes
// orphaned jobs, until Close.
func (s *Server) monitorNodes() {
	t := time.NewTicker(s.cfg.NodeTimeout / 4)
	defer t.Stop()
	for {
		select {
		case <-s.ctx.Done():
			return
		case now := <-t.C:
			s.nodes.checkNodes(now)
			s.jobs.checkOrphans(now)
		}
	}
}

// Register registers the head's services on g: NodeRegistryService (node
// manager), JobService (job manager), ActorService (actor manager),
// PlacementGroupService (placement group manager) and StateService.
func (s *Server) Register(g grpc.ServiceRegistrar) {
	pb.RegisterNodeRegistryServiceServer(g, s)
	pb.RegisterJobServiceServer(g, s)
	pb.RegisterActorServiceServer(g, s)
	pb.RegisterPlacementGroupServiceServer(g, s)
	pb.RegisterStateServiceServer(g, s)
	pb.RegisterFileIndexServiceServer(g, s.files)
}

// Close stops the Server's background work, ends its KeepJobAlive streams
// (without finishing their jobs), closes its raylet connections and waits.
// Call it before stopping the grpc.Server: a stream whose context ends for
// any other reason counts as its driver going away.
func (s *Server) Close() {
	s.closeOnce.Do(func() {
		s.cancel()
		s.wg.Wait()
		s.raylets.close()
	})
}

// finishJob finishes a job (for the Deployer).
func (s *Server) finishJob(id ids.JobID, reason string) error { return s.jobs.finish(id, reason) }

// RegisterNode adds a node, or replaces the alive node with the same ID (a
// raylet registering again after a head restart). An alive node at the same
// address under another ID is a restarted raylet: the old incarnation is
// declared dead. A node ID the head declared dead is refused with a
// node-died error: that incarnation is over, and its raylet joins again
// under a new ID.
func (s *Server) RegisterNode(_ context.Context, req *pb.RegisterNodeRequest) (*pb.RegisterNodeResponse, error) {
	return s.nodes.register(req)
}

// Heartbeat records a node's available resources and answers with the node
// table and the recently finished jobs. A node the head does not know, or
// holds for dead, is told to register again.
func (s *Server) Heartbeat(_ context.Context, req *pb.HeartbeatRequest) (*pb.HeartbeatResponse, error) {
	resp, err := s.nodes.heartbeatNode(req)
	if err != nil || resp.GetReregister() {
		return resp, err
	}
	resp.FinishedJobIds = s.jobs.recentlyFinished(time.Now())
	return resp, nil
}

// ListNodes lists every node the head knows, dead ones included.
func (s *Server) ListNodes(context.Context, *pb.ListNodesRequest) (*pb.ListNodesResponse, error) {
	return &pb.ListNodesResponse{Nodes: s.nodes.infos()}, nil
}

// ReportUnreachable probes the raylet of a node a peer could not reach and
// declares the node dead when the raylet refuses the connection too.
func (s *Server) ReportUnreachable(_ context.Context, req *pb.ReportUnreachableRequest) (*pb.ReportUnreachableResponse, error) {
	return s.nodes.reportUnreachable(req)
}

// RegisterJob creates a job, numbered from 1 up, and says whether the head
// already has its binary.
func (s *Server) RegisterJob(_ context.Context, req *pb.RegisterJobRequest) (*pb.RegisterJobResponse, error) {
	return s.jobs.register(req)
}

// UploadJobBinary receives a job binary: the first message carries its
// SHA-256 and size, the rest its bytes. The file is written under a temporary
// name, checked and renamed into place, so concurrent uploads of one binary
// are safe and a reader never sees a partial file.
func (s *Server) UploadJobBinary(stream pb.JobService_UploadJobBinaryServer) error {
	return s.jobs.upload(stream)
}

// FetchJobBinary streams a stored binary in 1 MiB chunks; the first message
// carries its size.
func (s *Server) FetchJobBinary(req *pb.FetchJobBinaryRequest, stream pb.JobService_FetchJobBinaryServer) error {
	return s.jobs.fetch(req, stream)
}

// GetJob returns a job's record.
func (s *Server) GetJob(_ context.Context, req *pb.GetJobRequest) (*pb.GetJobResponse, error) {
	return s.jobs.get(req)
}

// KeepJobAlive holds the stream until the driver goes away (then the job is
// finished), the job is finished some other way, or the head closes. The
// response headers are sent at once, so a client can wait for them to know
// the head is watching. A driver opens it again after a head restart.
func (s *Server) KeepJobAlive(req *pb.KeepJobAliveRequest, stream pb.JobService_KeepJobAliveServer) error {
	return s.jobs.keepAlive(req, stream)
}

// FinishJob finishes a job; finishing a finished job does nothing.
func (s *Server) FinishJob(_ context.Context, req *pb.FinishJobRequest) (*pb.FinishJobResponse, error) {
	id, err := ids.ParseJobID(req.GetJobId())
	if err != nil {
		return nil, invalid("FinishJob: %v", err)
	}
	if err := s.jobs.finish(id, "its driver finished it"); err != nil {
		return nil, err
	}
	return &pb.FinishJobResponse{}, nil
}

// CreateActor places an actor on a node, has that raylet start it and
// returns once it runs.
func (s *Server) CreateActor(ctx context.Context, req *pb.CreateActorRequest) (*pb.CreateActorResponse, error) {
	return s.actors.create(ctx, req)
}

// GetActor looks an actor up by ID, or else by name among live actors.
func (s *Server) GetActor(ctx context.Context, req *pb.GetActorRequest) (*pb.GetActorResponse, error) {
	return s.actors.get(ctx, req)
}

// KillActor declares an actor dead and asks its raylet to stop it. Killing
// a dead actor does nothing.
func (s *Server) KillActor(_ context.Context, req *pb.KillActorRequest) (*pb.KillActorResponse, error) {
	return s.actors.kill(req)
}

// ReportWorkerDeath declares dead every actor listed and every actor the
// head recorded on that worker.
func (s *Server) ReportWorkerDeath(_ context.Context, req *pb.ReportWorkerDeathRequest) (*pb.ReportWorkerDeathResponse, error) {
	return s.actors.workerDied(req)
}

// CreatePlacementGroup records a group and wakes the group scheduler, which
// reserves all its bundles or none (two-phase: prepare every bundle, then
// commit every one; a failed prepare returns the others).
func (s *Server) CreatePlacementGroup(_ context.Context, req *pb.CreatePlacementGroupRequest) (*pb.CreatePlacementGroupResponse, error) {
	return s.pgs.create(req)
}

// GetPlacementGroup returns a group; with wait it first waits while the
// group is pending.
func (s *Server) GetPlacementGroup(ctx context.Context, req *pb.GetPlacementGroupRequest) (*pb.GetPlacementGroupResponse, error) {
	return s.pgs.get(ctx, req)
}

// RemovePlacementGroup returns a group's bundles and stops the actors
// placed in it.
func (s *Server) RemovePlacementGroup(_ context.Context, req *pb.RemovePlacementGroupRequest) (*pb.RemovePlacementGroupResponse, error) {
	return s.pgs.remove(req)
}

// GetClusterState is the state API: nodes, actors, placement groups and the
// requests waiting as infeasible.
func (s *Server) GetClusterState(context.Context, *pb.GetClusterStateRequest) (*pb.GetClusterStateResponse, error) {
	return s.state.clusterState(), nil
}

// storeErr reports a failure to persist a table.
func storeErr(log *slog.Logger, what string, err error) error {
	if errors.Is(err, ErrFenced) {
		// Deposed: the caller asks another head (as from a standby).
		log.Warn("a write of a deposed head was refused", "what", what)
		return status.Errorf(codes.Unavailable, "this goray head no longer leads the cluster; ask the leader")
	}
	log.Error("scheduler store write failed", "what", what, "err", err)
	return status.Errorf(codes.Internal, "head could not store %s: %v", what, err)
}

// invalid is an InvalidArgument error for the wire.
func invalid(format string, args ...any) error {
	return errs.New(errs.KindInvalidArgument, "", format, args...)
}

// notFound is a NotFound error for the wire.
func notFound(name, format string, args ...any) error {
	return errs.New(errs.KindNotFound, name, format, args...)
}

// checkResources rejects negative, NaN or infinite amounts.
func checkResources(what string, r *pb.Resources) error {
	for k, v := range r.GetAmounts() {
		if k == "" {
			return invalid("%s: empty resource name", what)
		}
		if !(v >= 0) || v > 1e300 {
			return invalid("%s: resource %q has amount %v, want a finite amount ≥ 0", what, k, v)
		}
	}
	return nil
}

func compareNodeIDs(a, b ids.NodeID) int { return bytes.Compare(a[:], b[:]) }
