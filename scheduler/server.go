package scheduler

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/goray/goray/internal/errs"
	"github.com/goray/goray/internal/ids"
	"github.com/goray/goray/internal/rpc"
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

// finishedJobRetention is how long a finished job stays listed in heartbeat
// replies, for raylets that missed NodeService.FinishJob.
var finishedJobRetention = 60 * time.Second

// actorName is the key of a named actor.
type actorName struct{ namespace, name string }

type finishedJob struct {
	id ids.JobID
	at time.Time
}

// actorSet is a set of actor IDs.
type actorSet map[ids.ActorID]struct{}

// Server is the head: it implements goray.v1.SchedulerService.
type Server struct {
	pb.UnimplementedSchedulerServiceServer

	cfg    Config
	log    *slog.Logger
	binDir string

	// ctx is cancelled by Close; it bounds background work and calls to raylets.
	ctx       context.Context
	cancel    context.CancelFunc
	wg        sync.WaitGroup
	closeOnce sync.Once

	mu    sync.Mutex
	store Store
	// Volatile state, rebuilt from store by New.
	nextJob  uint32
	jobDone  map[ids.JobID]chan struct{} // closed when the job finishes
	finished []finishedJob               // recently finished, oldest first
	lastSeen map[ids.NodeID]time.Time
	// orphans are the running jobs found in the store at start whose
	// drivers have not opened KeepJobAlive since, with when they were found;
	// keepers counts each job's open KeepJobAlive streams.
	orphans map[ids.JobID]time.Time
	keepers map[ids.JobID]int
	// Indices of live (PENDING or ALIVE) actors.
	names    map[actorName]ids.ActorID
	byNode   map[ids.NodeID]actorSet
	byJob    map[ids.JobID]actorSet
	byWorker map[ids.WorkerID]actorSet

	connMu      sync.Mutex
	conns       map[string]*grpc.ClientConn // by raylet address
	connsClosed bool

	// Scheduling state (volatile).
	rng       *rand.Rand
	spreadSeq uint64
	// changed is closed and replaced whenever something that can make a
	// waiting request placeable happens: a node joins, totals change, a
	// placement group's state changes.
	changed chan struct{}
	// kick wakes the placement group scheduler.
	kick chan struct{}
	pgs  map[ids.PlacementGroupID]*pgState
	// pgOrder is the creation order of the groups in pgs.
	pgOrder []ids.PlacementGroupID
	// pgPending are the groups not yet created (pending or infeasible), in
	// creation order; the group scheduler drops the others as it goes.
	pgPending []ids.PlacementGroupID
	// waitingActors are actors no alive node can fit, waiting for one.
	waitingActors map[ids.ActorID]*pb.InfeasibleRequest
	// rayletInfeasible are the lease requests each raylet holds as infeasible.
	rayletInfeasible map[ids.NodeID][]*pb.InfeasibleRequest
	// detachedJobs are jobs whose driver is gone but whose detached actors
	// live; the value is why the driver went.
	detachedJobs map[ids.JobID]string
}

var _ pb.SchedulerServiceServer = (*Server)(nil)

// New makes a Server from cfg (validated here) and starts its node monitor.
// Call Close to stop it.
func New(cfg Config) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	binDir := filepath.Join(cfg.DataDir, "binaries")
	if err := os.MkdirAll(binDir, 0o700); err != nil {
		return nil, fmt.Errorf("scheduler: create binary directory: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Server{
		cfg:      cfg,
		log:      cfg.Logger,
		binDir:   binDir,
		ctx:      ctx,
		cancel:   cancel,
		store:    cfg.Store,
		nextJob:  1,
		jobDone:  make(map[ids.JobID]chan struct{}),
		lastSeen: make(map[ids.NodeID]time.Time),
		orphans:  make(map[ids.JobID]time.Time),
		keepers:  make(map[ids.JobID]int),
		names:    make(map[actorName]ids.ActorID),
		byNode:   make(map[ids.NodeID]actorSet),
		byJob:    make(map[ids.JobID]actorSet),
		byWorker: make(map[ids.WorkerID]actorSet),
		conns:    make(map[string]*grpc.ClientConn),

		rng:              rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 0x9e3779b97f4a7c15)),
		changed:          make(chan struct{}),
		kick:             make(chan struct{}, 1),
		pgs:              make(map[ids.PlacementGroupID]*pgState),
		waitingActors:    make(map[ids.ActorID]*pb.InfeasibleRequest),
		rayletInfeasible: make(map[ids.NodeID][]*pb.InfeasibleRequest),
		detachedJobs:     make(map[ids.JobID]string),
	}
	s.load(time.Now())
	s.wg.Go(s.monitorNodes)
	s.wg.Go(s.schedulePlacementGroups)
	return s, nil
}

// load rebuilds the volatile state from the store. After a head restart
// every alive node gets a full NodeTimeout to heartbeat, and every running
// job with a driver a full DriverReconnectTimeout to open KeepJobAlive.
func (s *Server) load(now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.nextJob = max(s.nextJob, s.store.NextJob())
	for _, j := range s.store.ListJobs() {
		if n := j.ID.Uint32(); n >= s.nextJob {
			s.nextJob = n + 1
		}
		done := make(chan struct{})
		if j.Finished {
			close(done)
			if now.Sub(j.FinishedAt) < finishedJobRetention {
				s.finished = append(s.finished, finishedJob{j.ID, j.FinishedAt})
			}
		} else if j.DriverAddress != "" {
			// Deployed jobs have no driver: nothing keeps them alive.
			s.orphans[j.ID] = now
		}
		s.jobDone[j.ID] = done
	}
	s.loadPlacementGroupsLocked()
	slices.SortFunc(s.finished, func(a, b finishedJob) int { return a.at.Compare(b.at) })
	for _, n := range s.store.ListNodes() {
		if n.Alive {
			// Give every node a full timeout to heartbeat the new head.
			s.lastSeen[n.ID] = now
		}
	}
	for _, a := range s.store.ListActors() {
		switch a.GetState() {
		case pb.ActorState_ACTOR_STATE_DEAD:
		case pb.ActorState_ACTOR_STATE_PENDING:
			// Its creation was cut off by the restart; the creator's call
			// failed with it.
			s.indexActorLocked(a)
			s.markActorDeadLocked(a, errs.New(errs.KindActorDied, a.GetSpec().GetTypeName(), "the head restarted while actor %x was being created", a.GetSpec().GetActorId()).Proto())
		case pb.ActorState_ACTOR_STATE_RESTARTING:
			// Carry on with the restart the previous head started.
			s.indexActorLocked(a)
			aid, err := ids.ParseActorID(a.GetSpec().GetActorId())
			if err == nil {
				inc := a.GetNumRestarts()
				s.wg.Go(func() { s.restartActor(aid, inc) })
			}
		default:
			s.indexActorLocked(a)
		}
	}
}

// notifyLocked wakes everything waiting for the cluster to change.
func (s *Server) notifyLocked() {
	close(s.changed)
	s.changed = make(chan struct{})
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// Register registers the SchedulerService on g.
func (s *Server) Register(g *grpc.Server) {
	pb.RegisterSchedulerServiceServer(g, s)
}

// Close stops the Server's background work, ends its KeepJobAlive streams
// (without finishing their jobs), closes its raylet connections and waits.
// Call it before stopping the grpc.Server: a stream whose context ends for
// any other reason counts as its driver going away.
func (s *Server) Close() {
	s.closeOnce.Do(func() {
		s.cancel()
		s.wg.Wait()
		s.connMu.Lock()
		defer s.connMu.Unlock()
		s.connsClosed = true
		for addr, cc := range s.conns {
			if err := cc.Close(); err != nil {
				s.log.Debug("close raylet connection", "address", addr, "err", err)
			}
			delete(s.conns, addr)
		}
	})
}

// nodeClient is a NodeService client for the raylet at addr, over a cached
// connection.
func (s *Server) nodeClient(addr string) (pb.NodeServiceClient, error) {
	s.connMu.Lock()
	defer s.connMu.Unlock()
	if s.connsClosed {
		return nil, errs.New(errs.KindShuttingDown, "", "the head is shutting down")
	}
	cc, ok := s.conns[addr]
	if !ok {
		var err error
		if cc, err = rpc.Dial(addr, s.cfg.Token); err != nil {
			return nil, status.Error(codes.Unavailable, err.Error())
		}
		s.conns[addr] = cc
	}
	return pb.NewNodeServiceClient(cc), nil
}

// dropConn closes the cached connection to addr, if any.
func (s *Server) dropConn(addr string) {
	s.connMu.Lock()
	cc, ok := s.conns[addr]
	delete(s.conns, addr)
	s.connMu.Unlock()
	if ok {
		if err := cc.Close(); err != nil {
			s.log.Debug("close raylet connection", "address", addr, "err", err)
		}
	}
}

// storeErr reports a failure to persist a table.
func (s *Server) storeErr(what string, err error) error {
	s.log.Error("scheduler store write failed", "what", what, "err", err)
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
