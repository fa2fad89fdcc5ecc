package raylet

import (
	"context"
	"os/exec"
	"runtime"
	"sync"
	"syscall"

	"google.golang.org/grpc"

	"github.com/goray/goray/internal/errs"
	"github.com/goray/goray/internal/ids"
	"github.com/goray/goray/internal/rpc"
	"github.com/goray/goray/internal/sched"
	pb "github.com/goray/goray/proto/goray/v1"
)

// resourceHolds is what the worker pool asks of the lease manager
// (*leaseManager): leases and actors hold resources, which go back when
// their worker dies.
type resourceHolds interface {
	// fitsTotal says whether the node's total fits res, and if not what
	// it lacks.
	fitsTotal(res sched.Resources) (bool, sched.Shortfall)
	newLease(w *worker, res sched.Resources) *lease
	dropLease(l *lease) bool
	holdActor(id ids.ActorID, res sched.Resources, pg *actorPG)
	releaseActor(id ids.ActorID)
}

// launcher starts a worker's process (*Raylet; a fake in tests). It calls
// the pool back as the process registers (register) and exits (exited),
// and fails when the pool says no (startProcess).
type launcher interface {
	launch(ctx context.Context, w *worker) error
}

// workerPool is this node's worker processes (Ray's WorkerPool): per job,
// the task workers leased to submitters and the actor-host workers with the
// actors they host, from start through registration, idle and busy, to
// death or kill; and the jobs' verified binaries.
//
// NodeService handlers (RequestWorkerLease, ReturnWorkerLease,
// RegisterWorker, CreateActor, KillActor, FinishJob, ReturnBundle), the
// goroutines that wait for worker processes, and Stop call it. mu guards
// the maps and every worker field marked so. Lock order: the pool calls the
// lease manager (resourceHolds) with mu held, never the other way round;
// it calls the launcher without it.
type workerPool struct {
	self      ids.NodeID
	token     string
	maxPerJob int
	holds     resourceHolds
	launcher  launcher
	done      <-chan struct{} // closed when the raylet stops

	mu       sync.Mutex
	stopping bool                     // guarded by mu: no new worker starts
	jobs     map[ids.JobID]*job       // guarded by mu
	workers  map[ids.WorkerID]*worker // guarded by mu
	actors   map[ids.ActorID]*actor   // guarded by mu
	binaries map[string]string        // guarded by mu: sha hex -> verified executable
	grantSeq uint64                   // guarded by mu: the last worker.leaseSeq given
	// deaths are the out-of-memory causes of leased workers that died
	// holding their lease, by lease, until the holder returns the lease
	// (ReturnWorkerLease answers with the cause); deathOrder bounds them to
	// the last maxDeaths. Guarded by mu.
	deaths     map[ids.LeaseID]*errs.Error
	deathOrder []ids.LeaseID
}

// maxDeaths bounds workerPool.deaths.
const maxDeaths = 1024

func newWorkerPool(self ids.NodeID, token string, maxPerJob int, holds resourceHolds, l launcher, done <-chan struct{}) *workerPool {
	return &workerPool{
		self: self, token: token, maxPerJob: maxPerJob, holds: holds, launcher: l, done: done,
		jobs:     make(map[ids.JobID]*job),
		workers:  make(map[ids.WorkerID]*worker),
		actors:   make(map[ids.ActorID]*actor),
		binaries: make(map[string]string),
		deaths:   make(map[ids.LeaseID]*errs.Error),
	}
}

type workerKind int

const (
	kindTask      workerKind = iota // in the lease pool
	kindActorHost                   // hosts actors, never leased
)

func (k workerKind) String() string {
	if k == kindActorHost {
		return "actor-host"
	}
	return "task"
}

// job is this node's state of one job.
type job struct {
	id ids.JobID
	// binPath is the verified executable, once fetched, and namespace the
	// job's namespace from the head's job table (its workers get it in
	// their environment); guarded by workerPool.mu, like every field below.
	binPath   string
	namespace string
	finished  bool
	// finishDone is closed when the finish-job cleanup is complete.
	finishDone chan struct{}
	workers    map[ids.WorkerID]*worker
	// changed is closed (and replaced) whenever a worker of the job becomes
	// idle, registers, dies or leaves.
	changed chan struct{}
}

func (j *job) broadcastLocked() {
	close(j.changed)
	j.changed = make(chan struct{})
}

// worker is one worker process started by this raylet.
type worker struct {
	id   ids.WorkerID
	job  *job
	kind workerKind

	// Set once at launch, under workerPool.mu.
	cmd *exec.Cmd
	pid int

	registered chan struct{} // closed when RegisterWorker arrived
	exited     chan struct{} // closed when the process is gone (or never started)
	streamDone chan struct{} // closed to end the RegisterWorker stream
	closeOnce  sync.Once

	// Guarded by workerPool.mu.
	addr         string
	isRegistered bool
	dead         bool
	// failing is set as soon as the worker is known to be going (its stream
	// ended, or a lease holder saw it fail), before its process is reaped:
	// it gets no new leases or actors.
	failing      bool
	reserved     bool // a lease requester started it and will take it
	lease        *lease
	actors       map[ids.ActorID]*actor
	onPurpose    bool   // the raylet killed it on purpose
	disconnected bool   // its RegisterWorker stream ended first
	startErr     error  // why it failed to start
	exitDesc     string // how it exited
	conn         *grpc.ClientConn
	// leaseSeq orders the worker's current lease among the pool's grants
	// (the memory monitor kills the newest first); function and retriable
	// are what its lease was asked for (RequestWorkerLease).
	leaseSeq  uint64
	function  string
	retriable bool
	// oomCause is set by the memory monitor before it kills the worker;
	// deathCause, once the process exited, is why, when the raylet knows a
	// cause its callers cannot see (out of memory).
	oomCause   *errs.Error
	deathCause *errs.Error

	// oomBase is the kernel's oom_kill count when the process started (-1:
	// unknown); set before the process starts, read after it exited.
	oomBase int64
}

func (w *worker) closeStream() { w.closeOnce.Do(func() { close(w.streamDone) }) }

// kill SIGKILLs the worker's process group.
func (w *worker) kill() {
	w.closeStream()
	if w.pid > 0 {
		_ = syscall.Kill(-w.pid, syscall.SIGKILL)
		_ = syscall.Kill(w.pid, syscall.SIGKILL)
	}
}

// actor is an actor hosted by one of the job's actor-host workers (what it
// holds is the lease manager's actorHold).
type actor struct {
	id     ids.ActorID
	worker *worker
	ready  bool // guarded by workerPool.mu
}

// maxActorHosts is how many actor-host processes one job keeps per node.
func maxActorHosts() int { return max(1, runtime.NumCPU()) }

func errJobFinished(id ids.JobID) error {
	return errs.New(errs.KindJobFinished, "", "job %s has finished: no new work runs for it", id)
}

// job returns the job's state, creating it, and whether it has finished.
func (p *workerPool) job(id ids.JobID) (*job, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	j := p.jobLocked(id)
	return j, j.finished
}

// jobFinished says the job is known here and has finished.
func (p *workerPool) jobFinished(id ids.JobID) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	j := p.jobs[id]
	return j != nil && j.finished
}

func (p *workerPool) jobLocked(id ids.JobID) *job {
	j := p.jobs[id]
	if j == nil {
		j = &job{id: id, workers: make(map[ids.WorkerID]*worker), changed: make(chan struct{}), finishDone: make(chan struct{})}
		p.jobs[id] = j
	}
	return j
}

// newWorkerLocked adds a worker entry that the launcher will start.
func (p *workerPool) newWorkerLocked(j *job, kind workerKind) *worker {
	w := &worker{
		id:         ids.NewWorkerID(),
		job:        j,
		kind:       kind,
		registered: make(chan struct{}),
		exited:     make(chan struct{}),
		streamDone: make(chan struct{}),
		actors:     make(map[ids.ActorID]*actor),
		oomBase:    -1,
	}
	j.workers[w.id] = w
	p.workers[w.id] = w
	return w
}

// leaseWorker takes an idle task worker of the job, or starts one, and
// leases it; res, which the caller acquired, then belongs to the lease.
func (p *workerPool) leaseWorker(ctx context.Context, j *job, res sched.Resources) (*lease, error) {
	for {
		p.mu.Lock()
		if p.stopping {
			p.mu.Unlock()
			return nil, errStopping
		}
		if j.finished {
			p.mu.Unlock()
			return nil, errJobFinished(j.id)
		}
		if fits, short := p.holds.fitsTotal(res); !fits {
			// A placement group bundle it was granted in was returned meanwhile.
			p.mu.Unlock()
			return nil, errs.New(errs.KindInfeasible, "", "node %s no longer has %s: the placement group bundle was returned (the group was removed)", p.self, short)
		}
		count := 0
		var idle *worker
		for _, w := range j.workers {
			if w.kind != kindTask || w.dead || w.failing {
				continue
			}
			count++
			if idle == nil && w.isRegistered && !w.reserved && w.lease == nil {
				idle = w
			}
		}
		if idle != nil {
			l := p.leaseLocked(idle, res)
			p.mu.Unlock()
			return l, nil
		}
		if count < p.maxPerJob {
			w := p.newWorkerLocked(j, kindTask)
			w.reserved = true
			p.mu.Unlock()
			if err := p.launch(ctx, w); err != nil {
				return nil, err
			}
			if err := p.waitRegistered(ctx, w); err != nil {
				p.mu.Lock()
				w.reserved = false
				if !w.dead {
					j.broadcastLocked()
				}
				p.mu.Unlock()
				return nil, leaseWaitErr(err)
			}
			p.mu.Lock()
			w.reserved = false
			if !w.dead && w.lease == nil {
				l := p.leaseLocked(w, res)
				p.mu.Unlock()
				return l, nil
			}
			p.mu.Unlock()
			continue
		}
		changed := j.changed
		p.mu.Unlock()
		select {
		case <-changed:
		case <-ctx.Done():
			return nil, leaseWaitErr(ctx.Err())
		case <-p.done:
			return nil, errStopping
		}
	}
}

func (p *workerPool) leaseLocked(w *worker, res sched.Resources) *lease {
	l := p.holds.newLease(w, res)
	w.lease = l
	p.grantSeq++
	w.leaseSeq, w.function, w.retriable = p.grantSeq, "", false
	return l
}

// noteTask records what l was asked for: the function of its first task
// and whether its tasks are retried when the worker dies.
func (p *workerPool) noteTask(l *lease, function string, retriable bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if w := l.worker; w.lease == l {
		w.function, w.retriable = function, retriable
	}
}

// returnLease marks l's worker idle again, or, when its holder saw it fail,
// failing and to be killed (killed is true then).
func (p *workerPool) returnLease(l *lease, workerFailed bool) (killed bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	w := l.worker
	if w.lease == l {
		w.lease = nil
	}
	if workerFailed {
		w.onPurpose = true
		w.failing = true
		return true
	}
	w.job.broadcastLocked()
	return false
}

// launch has the launcher start w's process; on failure w is removed (and
// its actors released).
func (p *workerPool) launch(ctx context.Context, w *worker) error {
	err := p.launcher.launch(ctx, w)
	if err != nil {
		p.mu.Lock()
		if !w.dead {
			w.startErr = err
			p.goneLocked(w)
		}
		p.mu.Unlock()
	}
	return err
}

// startProcess runs start (which starts w's process and records it in w)
// unless the raylet is stopping, the job finished or w is gone.
func (p *workerPool) startProcess(w *worker, start func() error) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stopping || w.job.finished || w.dead {
		if w.job.finished {
			return errJobFinished(w.job.id)
		}
		return errStopping
	}
	return start()
}

// namespace is the namespace of w's job.
func (p *workerPool) namespace(w *worker) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return w.job.namespace
}

// registerTimedOut records that w did not register in time; it is to be
// killed.
func (p *workerPool) registerTimedOut(w *worker, err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !w.isRegistered && !w.dead {
		w.startErr = err
		w.onPurpose = true
	}
}

// waitRegistered waits until w registered, failed or ctx ended.
func (p *workerPool) waitRegistered(ctx context.Context, w *worker) error {
	select {
	case <-w.registered:
	case <-w.exited:
	case <-ctx.Done():
		return ctx.Err()
	case <-p.done:
		return errStopping
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if w.dead {
		if w.startErr != nil {
			return w.startErr
		}
		return errs.New(errs.KindWorkerCrashed, "", "worker process (pid %d) of job %s exited before it registered: %s", w.pid, w.job.id, w.exitDesc)
	}
	return nil
}

// register records that worker id, started here, serves at addr.
func (p *workerPool) register(id ids.WorkerID, addr string) (*worker, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	w := p.workers[id]
	switch {
	case w == nil:
		return nil, errs.New(errs.KindNotFound, "", "RegisterWorker: worker %s was not started by this raylet (node %s)", id, p.self)
	case w.isRegistered:
		return nil, errs.New(errs.KindInvalidArgument, "", "RegisterWorker: worker %s is already registered", id)
	}
	w.addr = addr
	w.isRegistered = true
	close(w.registered)
	w.job.broadcastLocked()
	return w, nil
}

// exit is what the pool knew of a worker whose process exited.
type exit struct {
	actorIDs     [][]byte
	report       bool // not killed on purpose: the head must hear of it
	disconnected bool
}

// exited removes a worker whose process exited with desc; cause, when not
// nil, is why it died (out of memory), which a holder of its lease learns
// when it returns the lease.
func (p *workerPool) exited(w *worker, desc string, cause *errs.Error) exit {
	p.mu.Lock()
	defer p.mu.Unlock()
	w.exitDesc = desc
	if cause != nil && !w.dead {
		w.deathCause = cause
		if w.lease != nil {
			p.noteDeathLocked(w.lease.id, cause)
		}
	}
	e := exit{actorIDs: make([][]byte, 0, len(w.actors))}
	for id := range w.actors {
		e.actorIDs = append(e.actorIDs, id[:])
	}
	e.report = !w.onPurpose && !p.stopping && !w.job.finished
	e.disconnected = w.disconnected
	p.goneLocked(w)
	return e
}

// goneLocked removes a dead (or never started) worker: its lease and
// actors are released and waiters woken.
func (p *workerPool) goneLocked(w *worker) {
	if w.dead {
		return
	}
	w.dead = true
	close(w.exited)
	w.closeStream()
	delete(p.workers, w.id)
	delete(w.job.workers, w.id)
	if l := w.lease; l != nil {
		w.lease = nil
		p.holds.dropLease(l)
	}
	for _, a := range w.actors {
		p.removeActorLocked(a)
	}
	if w.conn != nil {
		w.conn.Close()
		w.conn = nil
	}
	w.job.broadcastLocked()
}

// markFailing marks w as going: it gets no new leases or actors.
func (p *workerPool) markFailing(w *worker) {
	p.mu.Lock()
	defer p.mu.Unlock()
	w.failing = true
}

// markDisconnected records that w's stream ended first; false when w is
// dead already (nothing to kill).
func (p *workerPool) markDisconnected(w *worker) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if w.dead {
		return false
	}
	w.disconnected = true
	return true
}

// conn is the client of a registered worker's WorkerService.
func (p *workerPool) conn(w *worker) (pb.WorkerServiceClient, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if w.dead {
		return nil, errs.New(errs.KindWorkerCrashed, "", "worker %s died", w.id)
	}
	if w.conn == nil {
		c, err := rpc.Dial(w.addr, p.token)
		if err != nil {
			return nil, err
		}
		w.conn = c
	}
	return pb.NewWorkerServiceClient(w.conn), nil
}

// existingActor is actor id's host and whether it is ready; ok is false
// when the node has no such actor.
func (p *workerPool) existingActor(id ids.ActorID) (w *worker, ready, ok bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	a := p.actors[id]
	if a == nil {
		return nil, false, false
	}
	return a.worker, a.ready, true
}

// lookupActor is actor id, or nil.
func (p *workerPool) lookupActor(id ids.ActorID) *actor {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.actors[id]
}

// placeActor picks the actor-host worker with the fewest actors, or adds a
// new host while the job has fewer than maxActorHosts and every host already
// has an actor; it records the actor on it, holding res (which the caller
// acquired) in placement group pg. started says the host is new and must be
// launched.
func (p *workerPool) placeActor(j *job, id ids.ActorID, res sched.Resources, pg *actorPG) (*actor, bool, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stopping {
		return nil, false, errStopping
	}
	if j.finished {
		return nil, false, errJobFinished(j.id)
	}
	if p.actors[id] != nil {
		return nil, false, errs.New(errs.KindAlreadyExists, "", "CreateActor: actor %s is already being created on node %s", id, p.self)
	}
	if fits, short := p.holds.fitsTotal(res); !fits {
		return nil, false, errs.New(errs.KindInfeasible, "", "CreateActor: node %s no longer has %s: the placement group bundle was returned (the group was removed)", p.self, short)
	}
	var best *worker
	hosts := 0
	for _, w := range j.workers {
		if w.kind != kindActorHost || w.dead || w.failing {
			continue
		}
		hosts++
		if best == nil || len(w.actors) < len(best.actors) {
			best = w
		}
	}
	started := false
	if best == nil || (len(best.actors) > 0 && hosts < maxActorHosts()) {
		best = p.newWorkerLocked(j, kindActorHost)
		started = true
	}
	a := &actor{id: id, worker: best}
	best.actors[id] = a
	p.actors[id] = a
	p.holds.holdActor(id, res, pg)
	return a, started, nil
}

// actorReady marks a ready; false when it left the books meanwhile (its
// worker died, or its placement group bundle was returned).
func (p *workerPool) actorReady(a *actor) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.actors[a.id] != a {
		return false
	}
	a.ready = true
	return true
}

// removeActor takes a off the books and releases what it holds.
func (p *workerPool) removeActor(a *actor) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.removeActorLocked(a)
}

// removeStuckActor takes a, killed while a method of it still runs, off the
// books; when that leaves its host with no actor, the host is marked to be
// killed on purpose and returned.
func (p *workerPool) removeStuckActor(a *actor) *worker {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.removeActorLocked(a)
	w := a.worker
	if len(w.actors) > 0 || w.dead {
		return nil
	}
	w.onPurpose, w.failing = true, true
	return w
}

// moveActor takes a off the books and marks its host failing: the host
// did not answer, and the actor goes elsewhere.
func (p *workerPool) moveActor(a *actor) {
	p.mu.Lock()
	defer p.mu.Unlock()
	a.worker.failing = true
	p.removeActorLocked(a)
}

func (p *workerPool) removeActorLocked(a *actor) {
	if p.actors[a.id] != a {
		return
	}
	delete(p.actors, a.id)
	delete(a.worker.actors, a.id)
	p.holds.releaseActor(a.id)
}

// evicted takes the users of a returned placement group bundle off the
// books: the task workers (to be killed on purpose) and the actors (whose
// resources the lease manager dropped already); it returns the actors to
// stop in their workers.
func (p *workerPool) evicted(ws []*worker, actorIDs []ids.ActorID) []*actor {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, w := range ws {
		w.onPurpose = true
	}
	var out []*actor
	for _, id := range actorIDs {
		if a := p.actors[id]; a != nil {
			p.removeActorLocked(a)
			out = append(out, a)
		}
	}
	return out
}

// finish marks the job finished and returns its workers, marked killed on
// purpose; first is false when it had finished before (then wait for done).
func (p *workerPool) finish(id ids.JobID) (j *job, ws []*worker, first bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	j = p.jobLocked(id)
	if j.finished {
		return j, nil, false
	}
	j.finished = true
	ws = make([]*worker, 0, len(j.workers))
	for _, w := range j.workers {
		w.onPurpose = true
		ws = append(ws, w)
	}
	j.broadcastLocked()
	return j, ws, true
}

// all returns every worker, marked killed on purpose; with stop, the pool
// starts no new worker from now on.
func (p *workerPool) all(stop bool) []*worker {
	p.mu.Lock()
	defer p.mu.Unlock()
	if stop {
		p.stopping = true
	}
	ws := make([]*worker, 0, len(p.workers))
	for _, w := range p.workers {
		w.onPurpose = true
		ws = append(ws, w)
	}
	return ws
}

// lookupWorker is worker id, or nil.
func (p *workerPool) lookupWorker(id ids.WorkerID) *worker {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.workers[id]
}

// jobBinary is the job's verified executable, "" until fetched.
func (p *workerPool) jobBinary(j *job) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return j.binPath
}

// setJobBinary records the job's executable and namespace.
func (p *workerPool) setJobBinary(j *job, path, namespace string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	j.binPath, j.namespace = path, namespace
}

// binary is the verified executable of SHA-256 key (hex), if fetched.
func (p *workerPool) binary(key string) (string, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	path, ok := p.binaries[key]
	return path, ok
}

// addBinary records the verified executable of key.
func (p *workerPool) addBinary(key, path string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.binaries[key] = path
}

// noteDeathLocked keeps the cause of the death of lease id's worker for its
// holder, forgetting the oldest beyond maxDeaths.
func (p *workerPool) noteDeathLocked(id ids.LeaseID, cause *errs.Error) {
	if _, ok := p.deaths[id]; !ok {
		p.deathOrder = append(p.deathOrder, id)
	}
	p.deaths[id] = cause
	for len(p.deathOrder) > maxDeaths {
		delete(p.deaths, p.deathOrder[0])
		p.deathOrder = p.deathOrder[1:]
	}
}

// takeDeath is (and forgets) the cause of the death of lease id's worker,
// if one was kept.
func (p *workerPool) takeDeath(id ids.LeaseID) *errs.Error {
	p.mu.Lock()
	defer p.mu.Unlock()
	cause := p.deaths[id]
	delete(p.deaths, id) // its deathOrder entry goes with the oldest
	return cause
}

// deathCauseOf is why w died, once its process exited and when known.
func (p *workerPool) deathCauseOf(w *worker) *errs.Error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return w.deathCause
}

// monitorCause is the memory monitor's reason for killing w, if it did.
func (p *workerPool) monitorCause(w *worker) *errs.Error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return w.oomCause
}

// memCandidate is a worker the memory monitor may kill, as the pool saw it.
type memCandidate struct {
	w         *worker
	pid       int
	job       ids.JobID
	kind      workerKind
	leased    bool
	retriable bool
	leaseSeq  uint64
	function  string
	actors    int
	rss       uint64 // filled in by the monitor
}

// memoryCandidates lists the registered workers that are not going.
func (p *workerPool) memoryCandidates() []memCandidate {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]memCandidate, 0, len(p.workers))
	for _, w := range p.workers {
		if w.dead || w.failing || !w.isRegistered || w.pid <= 0 || w.oomCause != nil {
			continue
		}
		out = append(out, memCandidate{w: w, pid: w.pid, job: w.job.id, kind: w.kind, leased: w.lease != nil,
			retriable: w.retriable, leaseSeq: w.leaseSeq, function: w.function, actors: len(w.actors)})
	}
	return out
}

// killForMemory marks w as killed by the memory monitor with cause: it gets
// no new work, and its death is reported with cause. False when w is gone
// or going already (then it is not to be killed).
func (p *workerPool) killForMemory(w *worker, cause *errs.Error) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if w.dead || w.failing || w.oomCause != nil {
		return false
	}
	w.oomCause = cause
	w.failing = true
	return true
}
