// Package scheduler is goray's head: the cluster control plane, in the role of
// Ray's GCS. It implements the head's services (goray.v1 NodeRegistryService,
// JobService, ActorService, PlacementGroupService, StateService) and owns
//
//   - the node table: raylets register their resources (RegisterNode) and
//     heartbeat their availability; a node that misses heartbeats for
//     Config.NodeTimeout is marked dead and its actors die with a NodeDied
//     cause;
//   - the job table: each driver registers a job for its content-addressed
//     binary (stored under Config.DataDir/binaries/<sha256 hex>, uploaded once,
//     fetched by raylets), holds a KeepJobAlive stream for its whole life, and
//     the job finishes when that stream ends or on FinishJob; raylets are told
//     (NodeService.FinishJob, and in heartbeat replies as a fallback);
//   - the actor table: CreateActor places an actor on a feasible node (least
//     loaded among nodes with enough available resources), asks that raylet to
//     start it and returns when it runs; named actors are unique within their
//     namespace while they live; GetActor, KillActor and ReportWorkerDeath keep
//     the table current.
//
// The head is never on the path of an actor call or a task.
//
// Server is a thin gRPC facade over managers that own their state, each
// behind its own lock, as Ray's GCS managers do: nodeManager (nodes.go),
// jobManager (jobs.go), actorManager (actors.go), pgManager (pg.go) and
// stateView (state.go). A manager asks another for what it needs through a
// method or a small interface (actorNodes, actorJobs, pgNodes, jobActors,
// rayletClient), which unit tests fake. The lock order is on Server.
//
// The tables sit behind the Store interface; MemoryStore keeps them in memory.
// A Server is served on a caller-owned grpc.Server (Register), usually the same
// one that serves the head node's raylet; Close stops its background work and
// closes its raylet connections.
//
// Errors returned by handlers are goray errors (internal/errs) sent as gRPC
// statuses, so callers can test them with errors.Is after errs.FromStatus,
// e.g. errors.Is(errs.FromStatus(err), errs.ErrInfeasible).
package scheduler
