// Package raylet is goray's node manager: one per machine, like Ray's raylet.
//
// A raylet registers the node's logical resources with the head (package
// scheduler; it does not import it — internal/embed serves a head and its
// node on one gRPC port for `raylet --head`) and heartbeats it; it serves
// NodeService and ObjectTransferService:
//
//   - Worker pool. Worker processes are started from the job's own binary,
//     fetched once from the head per SHA-256 and verified, with the
//     environment of package internal/workerenv, in their own process group
//     (killed as a group) with a parent-death signal. A worker registers over
//     a RegisterWorker stream that stays open for its life; one that has not
//     registered within 60 s is killed. When a worker exits on its own its
//     lease and actors are released and the head is told (ReportWorkerDeath)
//     with the exit status as the cause.
//   - Leases. RequestWorkerLease grants an idle (or new) task worker of the
//     job once the requested resources (default {"CPU": 1}) are available,
//     waiting in arrival order; a request this node can never fit is spilled
//     back to a node that can, or fails with errs.ErrInfeasible naming the
//     missing resource when no node can.
//   - Actors. CreateActor holds the actor's resources for its life and puts
//     it on the job's actor-host process with the fewest actors, adding
//     hosts up to NumCPU per job.
//   - Objects. Sealed objects are files in the store directory (package
//     internal/store). PullObject copies a remote object into the local store
//     over ObjectTransferService.Pull in 1 MiB chunks, deduplicating
//     concurrent pulls of one object and resuming interrupted streams.
//   - Jobs. When a job finishes (NodeService.FinishJob, or the head's
//     heartbeat reply) its workers are killed and its objects freed.
//
// Inside, Raylet wires managers that each own their state behind their own
// lock (workerPool, leaseManager, bundleManager, clusterView, localObjects,
// transfer); their doc comments say who calls them, what the lock guards
// and the lock order.
//
// Every RPC must carry the cluster token unless auth is disabled. Start runs a
// standalone node that joins a head; New, Register and Join let another
// package (internal/embed) serve it on a server it shares with the head.
package raylet
