package core

import (
	"context"
	"fmt"
	"github.com/goray/goray/internal/rpc"
	"log/slog"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/goray/goray/internal/errs"
	"github.com/goray/goray/internal/ids"
	"github.com/goray/goray/internal/sched"
	pb "github.com/goray/goray/proto/goray/v1"
)

// TaskOptions shape a task submission.
type TaskOptions struct {
	// Resources the task needs while it runs; default {"CPU": 1}.
	Resources map[string]float64
	// Strategy says where the task may run; nil is the default strategy.
	Strategy *pb.SchedulingStrategy
	// FailFast fails the task at once when no node can ever fit it, instead
	// of waiting (reported as infeasible) for one to join.
	FailFast bool
	// MaxRetries: how often the task runs again after its worker or node
	// died; nil means DefaultMaxRetries, -1 without limit.
	MaxRetries *int
	// RetryExceptions retries application errors too (within MaxRetries).
	RetryExceptions bool
}

type taskItem struct {
	spec  *pb.TaskSpec
	entry *objEntry
	// retries left after system failures (-1: without limit), and whether
	// application errors are retried too.
	retriesLeft     int
	retryExceptions bool
	// sentAt is when the task was last handed to a worker.
	sentAt time.Time
	// seq orders the tasks of a scheduler by submission: a shape's queue
	// is kept in this order, retries included.
	seq uint64

	// Where the task is, for Cancel; guarded by the scheduler's mu like
	// seq: its state, its shape once queued, its worker once handed to
	// one, the call on that worker's stream once sent, and the
	// cancellation asked for (cancelled is what the caller's Get sees).
	state     itemState
	sh        *shape
	w         *leasedWorker
	sent      sentCall
	cancelled error
	force     bool
	recursive bool
	// release runs once the task's entry is complete (the core forgets
	// the call); nil for a lineage rebuild.
	release func()
}

// itemState is where a task is between submission and its result.
type itemState int

const (
	itemNew     itemState = iota // waiting for its arguments
	itemQueued                   // in its shape's queue
	itemHanded                   // in a leased worker's outbox
	itemSending                  // being pushed to the worker
	itemSent                     // on the worker
	itemDone                     // its entry is (being) completed
)

// finish completes the task's entry with its reply or error.
func (it *taskItem) finish(resp *pb.ExecuteResponse, err error) {
	complete(it.entry, resp, err)
	if it.release != nil {
		it.release()
	}
}

// DefaultMaxRetries is how often a task is retried after its worker or node
// died, unless TaskOptions.MaxRetries says otherwise (Ray's default).
const DefaultMaxRetries = 3

// retry reports whether a failed attempt of item is to be run again, and if
// so counts it.
func (it *taskItem) retry(resp *pb.ExecuteResponse, err error) bool {
	if it.retriesLeft == 0 {
		return false
	}
	switch {
	case err != nil:
		// The worker or its node died under the task: a system failure.
	case resp.GetError() == nil:
		return false
	case resp.GetError().GetKind() == pb.ErrorKind_ERROR_KIND_WORKER_CRASHED, resp.GetError().GetKind() == pb.ErrorKind_ERROR_KIND_NODE_DIED:
	case resp.GetError().GetKind() == pb.ErrorKind_ERROR_KIND_TASK_FAILED && it.retryExceptions:
	default:
		return false
	}
	if it.retriesLeft > 0 {
		it.retriesLeft--
	}
	return true
}

// leaseLinger is how long an idle lease is kept before it is returned, so
// that a loop of synchronous tasks reuses one lease instead of asking for a
// new one for every task (Ray's submitter keeps idle leases briefly too).
const leaseLinger = 100 * time.Millisecond

// maxTasksInFlightPerWorker bounds the tasks sent ahead to one leased
// worker (Ray's max_tasks_in_flight_per_worker): the worker runs them in
// order, one at a time (a lease is one CPU), and the next starts as soon as
// the previous ends instead of a round trip later.
const maxTasksInFlightPerWorker = 16

// pipelineTaskTime is how short a shape's tasks must be (as the submitter
// sees them complete, a moving average) for more than one to be sent to a
// worker at a time. Pipelining pays only where a round trip is a large part
// of a task; a long task held back behind another on one worker would wait
// for it while other CPUs could run it, and tasks that wait on each other
// (a rendezvous) must each get a worker of their own. Until a shape has
// completed a task, and whenever its tasks take longer, each lease runs one
// task at a time.
const pipelineTaskTime = time.Millisecond

// leaseClient asks raylets for worker leases and gives them back (Ray's
// RayletClientInterface as the submitter sees it). The task submitter calls
// it from its own goroutines, never with its lock held.
type leaseClient interface {
	// requestLease asks for a worker that fits req, following spillbacks
	// to other raylets; it returns the grant and the raylet that made it.
	requestLease(ctx context.Context, req *pb.RequestWorkerLeaseRequest) (*pb.RequestWorkerLeaseResponse, leaseGranter, error)
	// returnLease gives a lease back to the raylet that granted it.
	returnLease(ctx context.Context, from leaseGranter, leaseID []byte, workerFailed bool) error
}

// leaseGranter is the raylet that granted a lease, as its leaseClient knows
// it.
type leaseGranter any

// taskPusher sends a task to a leased worker (Ray's PushNormalTask): cb runs
// exactly once with the reply or the error that lost it. An error returned
// means the task was not sent, and cb does not run; otherwise the sent call
// can be cancelled.
type taskPusher interface {
	push(addr string, spec *pb.TaskSpec, cb callback) (sentCall, error)
}

// leasedWorker is a worker this process holds a lease on.
type leasedWorker struct {
	leaseID []byte
	addr    string
	raylet  leaseGranter // the raylet that granted the lease
	// inflight counts the tasks sent to the worker and not yet answered.
	inflight int
	// outbox holds the tasks handed to the worker and not yet sent, in
	// order; flushing is set while one goroutine sends them, so that the
	// worker gets its tasks in the order they were handed to it.
	outbox   []*taskItem
	flushing bool
	// failed is set by the first failed call: the worker was dropped and
	// its lease returned.
	failed bool
	// lastDone is when the worker last answered a task.
	lastDone time.Time
	// busySince is when the task the worker runs now started, as far as
	// the submitter knows: when it was sent to an idle worker, or when
	// the task before it was answered.
	busySince time.Time
	// idleSince is when the worker last became idle with nothing queued.
	idleSince time.Time
	// death is what its raylet said of it once it failed (workerdeath.go).
	death *workerDeath
}

// shape is the queue and leases of one resource shape (Ray's scheduling key):
// a lease is reused for every task of its shape.
type shape struct {
	resources  map[string]float64
	strategy   *pb.SchedulingStrategy
	failFast   bool
	function   string // the first task's, for logs and the state API
	retriable  bool   // its tasks run again when their worker dies
	queue      []*taskItem
	workers    []*leasedWorker
	requesting bool
	// taskTime is a moving average of how long a task of the shape keeps
	// its worker (0: none completed yet).
	taskTime time.Duration
}

// observe records that a task kept its worker for d.
func (sh *shape) observe(d time.Duration) {
	switch {
	case d <= 0:
		d = 1
	case d >= pipelineTaskTime:
		// One long task stops pipelining at once; short ones bring it back
		// gradually.
		sh.taskTime = d
		return
	}
	if sh.taskTime == 0 {
		sh.taskTime = d
		return
	}
	sh.taskTime += (d - sh.taskTime) / 8
}

// depth is how many tasks a worker of the shape may have in flight. Only
// default-strategy work is pipelined: a SPREAD, node-affinity or placement
// group request asks where each task runs, and sending several ahead to one
// worker would put them all where the first lease landed.
func (sh *shape) depth() int {
	if sh.strategy.GetKind() != pb.SchedulingStrategy_KIND_UNSPECIFIED {
		return 1
	}
	if sh.taskTime > 0 && sh.taskTime < pipelineTaskTime {
		return maxTasksInFlightPerWorker
	}
	return 1
}

// taskScheduler is the core worker's task submitter (Ray's
// NormalTaskSubmitter): it queues tasks per resource shape, leases workers
// through a leaseClient, pushes tasks to them through a taskPusher (several
// ahead on one worker when the shape's tasks are short), reuses leases for
// the next task of the shape, retries tasks whose worker died, and returns
// leases that stay idle for leaseLinger.
//
// Callers: SubmitTask and lineage reconstruction (submit), Shutdown
// (close), and the submitter's own goroutines (lease requests, reply
// callbacks, the reaper). mu guards shapes, seq, closed, reaper and every
// shape and leasedWorker; the lease client and the pusher are called with
// mu released.
type taskScheduler struct {
	cfg submitterConfig

	mu     sync.Mutex
	shapes map[string]*shape
	seq    uint64 // the last taskItem.seq given
	closed bool
	// reaper returns leases idle for leaseLinger; armed while any is idle.
	reaper *time.Timer
}

// submitterConfig is what a taskScheduler is made from.
type submitterConfig struct {
	// ctx is done when the process shuts down; wg owns every goroutine the
	// submitter starts (Shutdown waits for it).
	ctx    context.Context
	wg     *sync.WaitGroup
	log    *slog.Logger
	leases leaseClient
	pusher taskPusher
	// retried counts a task sent again; finished sees each task's final
	// reply (lineage keeps what reconstruction needs). Either may be nil.
	retried  func()
	finished func(spec *pb.TaskSpec, resp *pb.ExecuteResponse)
}

func newTaskScheduler(cfg submitterConfig) *taskScheduler {
	return &taskScheduler{cfg: cfg, shapes: map[string]*shape{}}
}

// strategyKey tells apart shapes whose strategies differ.
func strategyKey(st *pb.SchedulingStrategy, failFast bool) string {
	if st == nil && !failFast {
		return ""
	}
	return fmt.Sprintf("|%d/%x/%v/%x/%d/%v", st.GetKind(), st.GetNodeId(), st.GetSoft(), st.GetPlacementGroupId(), st.GetBundleIndex(), failFast)
}

// defaultTaskResources is what a task needs unless told otherwise. It is
// shared by every such task and never written.
var defaultTaskResources = map[string]float64{"CPU": 1}

// defaultShapeKey is shapeKey(defaultTaskResources), without building it
// for every task.
const defaultShapeKey = "CPU=1;"

func shapeKey(r map[string]float64) string {
	if v, ok := r["CPU"]; ok && v == 1 && len(r) == 1 {
		return defaultShapeKey
	}
	keys := make([]string, 0, len(r))
	for k := range r {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, "%s=%g;", k, r[k])
	}
	return b.String()
}

// SubmitTask submits a call of the registered function name and returns the
// ref of its result at once; failures surface when the ref is read.
func (c *Core) SubmitTask(ctx context.Context, name string, args Args, opts TaskOptions) Ref {
	tid := ids.NewTaskID(c.jobID)
	oid := tid.ObjectID(1)
	ref, e := c.newRef(oid)
	e.holds = args.holds
	if _, ok := LookupFn(name); !ok {
		e.setError(errs.New(errs.KindNotFound, name, "function %q is not registered: register it with task.Register at package level (before runtime.Init) in the job's program", name))
		return ref
	}
	res := opts.Resources
	if len(res) == 0 {
		res = defaultTaskResources
	}
	if st := opts.Strategy; st.GetKind() == pb.SchedulingStrategy_KIND_PLACEMENT_GROUP {
		pg, err := ids.ParsePlacementGroupID(st.GetPlacementGroupId())
		if err != nil {
			e.setError(errs.New(errs.KindInvalidArgument, name, "placement group strategy: %v", err))
			return ref
		}
		res = sched.InBundle(res, pg, int(st.GetBundleIndex()))
	}
	spec := &pb.TaskSpec{TaskId: tid[:], JobId: c.jobID[:], FunctionName: name, Args: args.Wire,
		ReturnObjectId: oid[:], CallerAddress: c.addr}
	c.submitWhenReady(c.trackTask(ctx, oid, &taskItem{spec: spec, entry: e}), args.Wire, res, opts)
	return ref
}

// trackTask records item with the calls Cancel can find; ctx governs it.
func (c *Core) trackTask(ctx context.Context, id ids.ObjectID, item *taskItem) *taskItem {
	item.release = c.track(ctx, id, item.spec.GetFunctionName(), false, func(why error, force, recursive bool) {
		c.tasks.cancel(item, why, force, recursive)
	})
	return item
}

// ownedEntry is the entry of a ref argument this process owns, if any.
func (c *Core) ownedEntry(a *pb.Arg) (*objEntry, bool) {
	r := a.GetRef()
	if r == nil || r.GetOwnerAddress() != c.addr {
		return nil, false
	}
	id, err := ids.ParseObjectID(r.GetObjectId())
	if err != nil {
		return nil, false
	}
	return c.objs.lookup(id)
}

// ownedPendingDeps lists the entries of ref arguments this process owns.
func (c *Core) ownedPendingDeps(args []*pb.Arg) []*objEntry {
	var deps []*objEntry
	for _, a := range args {
		if e, ok := c.ownedEntry(a); ok && !e.ready() {
			deps = append(deps, e)
		}
	}
	return deps
}

// inlineArgs replaces refs to small ready objects this process owns by their
// values, so the worker need not ask for them.
func (c *Core) inlineArgs(args []*pb.Arg) {
	for i, a := range args {
		if e, ok := c.ownedEntry(a); ok && e.ready() && e.value != nil {
			args[i] = &pb.Arg{Kind: &pb.Arg_Value{Value: e.value}}
		}
	}
}

func (s *taskScheduler) submit(item *taskItem, res map[string]float64, opts TaskOptions) {
	key := shapeKey(res) + strategyKey(opts.Strategy, opts.FailFast)
	if item.retriesLeft == 0 {
		key += "|noretry" // the memory monitor spares these leases longer
	}
	s.mu.Lock()
	if s.closed {
		item.state = itemDone
		s.mu.Unlock()
		item.finish(nil, errs.New(errs.KindShuttingDown, item.spec.GetFunctionName(), "goray is shutting down"))
		return
	}
	if item.state == itemDone {
		s.mu.Unlock() // cancelled while it waited for its arguments
		if s.cfg.finished != nil {
			s.cfg.finished(item.spec, nil) // nothing to rebuild
		}
		return
	}
	sh, ok := s.shapes[key]
	if !ok {
		sh = &shape{resources: res, strategy: opts.Strategy, failFast: opts.FailFast, function: item.spec.GetFunctionName(), retriable: item.retriesLeft != 0}
		s.shapes[key] = sh
	}
	s.seq++
	item.seq = s.seq
	item.state, item.sh = itemQueued, sh
	sh.queue = append(sh.queue, item)
	acts := s.pump(sh)
	s.mu.Unlock()
	acts.run()
}

// actions are the sends and lease returns decided under the lock and carried
// out after it is released.
type actions []func()

func (a actions) run() {
	for _, f := range a {
		f()
	}
}

// pump hands queued tasks to leased workers (up to the shape's depth in
// flight on each), asks for another lease when tasks still wait, and returns idle leases when the
// queue is empty. Called with s.mu held.
func (s *taskScheduler) pump(sh *shape) actions {
	var acts actions
	if len(sh.queue) > 0 && len(sh.workers) > 0 {
		depth := sh.depth()
		now := time.Now()
		for len(sh.queue) > 0 {
			// The least loaded worker: idle ones first, then one more task
			// ahead on each in turn. A task goes ahead behind another only
			// while more tasks wait than there are workers (a short
			// backlog waits for a worker, or a lease, of its own), and not
			// behind a task that already runs long.
			ahead := len(sh.queue) > len(sh.workers)
			var w *leasedWorker
			for _, x := range sh.workers {
				if x.inflight > 0 && (!ahead || x.inflight >= depth || now.Sub(x.busySince) >= pipelineTaskTime) {
					continue
				}
				if w == nil || x.inflight < w.inflight {
					w = x
				}
			}
			if w == nil {
				break
			}
			if w.inflight == 0 {
				w.busySince = now
			}
			item := sh.queue[0]
			sh.queue[0] = nil
			sh.queue = sh.queue[1:]
			w.inflight++
			w.idleSince = time.Time{}
			item.sentAt = now
			item.state, item.w = itemHanded, w
			w.outbox = append(w.outbox, item)
			if !w.flushing {
				w.flushing = true
				acts = append(acts, func() { s.flush(sh, w) })
			}
		}
	}
	if len(sh.queue) > 0 && !sh.requesting && !s.closed {
		sh.requesting = true
		s.cfg.wg.Go(func() { s.requestLease(sh) })
	}
	if len(sh.queue) == 0 && !s.closed {
		// Idle leases linger for the next task; the reaper returns them.
		now := time.Now()
		for _, w := range sh.workers {
			if w.inflight == 0 && w.idleSince.IsZero() {
				w.idleSince = now
				s.armReaperLocked()
			}
		}
	}
	return acts
}

// armReaperLocked schedules a reap when none is scheduled. Called with s.mu
// held.
func (s *taskScheduler) armReaperLocked() {
	if s.reaper == nil {
		s.reaper = time.AfterFunc(leaseLinger, s.reap)
	}
}

// reap returns the leases that have been idle for leaseLinger.
func (s *taskScheduler) reap() {
	s.mu.Lock()
	s.reaper = nil
	if s.closed {
		s.mu.Unlock()
		return
	}
	now := time.Now()
	var idle []*leasedWorker
	for _, sh := range s.shapes {
		kept := sh.workers[:0]
		for _, w := range sh.workers {
			switch {
			case w.inflight > 0 || w.idleSince.IsZero():
				kept = append(kept, w)
			case now.Sub(w.idleSince) >= leaseLinger:
				idle = append(idle, w)
			default:
				kept = append(kept, w)
				s.armReaperLocked()
			}
		}
		clear(sh.workers[len(kept):])
		sh.workers = kept
	}
	s.cfg.wg.Add(1) // Shutdown waits for these returns
	s.mu.Unlock()
	defer s.cfg.wg.Done()
	for _, w := range idle {
		s.returnLease(w, false)
	}
}

// flush sends w's outbox in order until it stays empty.
func (s *taskScheduler) flush(sh *shape, w *leasedWorker) {
	for {
		s.mu.Lock()
		items := w.outbox
		w.outbox = nil
		if len(items) == 0 {
			w.flushing = false
			s.mu.Unlock()
			return
		}
		for _, item := range items {
			item.state = itemSending
		}
		s.mu.Unlock()
		for _, item := range items {
			s.dispatch(sh, w, item)
		}
	}
}

func (s *taskScheduler) dispatch(sh *shape, w *leasedWorker, item *taskItem) {
	done := func(resp *pb.ExecuteResponse, err error) {
		err = s.deathCause(w, item.spec.GetFunctionName(), err)
		s.mu.Lock()
		// A cancelled task is not retried: its worker dying (killed by a
		// forced cancel, or by chance) ends it with the cancellation, as
		// does the worker's answer that it cancelled it (the caller's
		// reason says more than the worker's).
		final := err
		if item.cancelled != nil && (err != nil || item.force || resp.GetError().GetKind() == pb.ErrorKind_ERROR_KIND_CANCELLED) {
			resp, final = nil, item.cancelled
		}
		retry := item.cancelled == nil && item.retry(resp, err) && s.cfg.ctx.Err() == nil
		switch {
		case !retry:
			item.state = itemDone
		case s.closed:
			item.state = itemDone
			resp, final = nil, errs.New(errs.KindShuttingDown, item.spec.GetFunctionName(), "goray shut down before the task could be retried")
		default:
			// Back in submission order: a task may wait for an earlier
			// one (a ref inside its arguments), which must not end up
			// behind it on one worker.
			item.state, item.w, item.sent = itemQueued, nil, nil
			i := sort.Search(len(sh.queue), func(i int) bool { return sh.queue[i].seq > item.seq })
			sh.queue = slices.Insert(sh.queue, i, item)
		}
		ended, left := item.state == itemDone, item.retriesLeft
		w.inflight--
		// A failed worker fails every task in flight on it: the first
		// failure drops it and returns its lease.
		drop := err != nil && !w.failed
		if drop {
			w.failed = true
			s.dropWorker(sh, w)
		} else if err == nil {
			now := time.Now()
			start := item.sentAt
			if w.lastDone.After(start) {
				start = w.lastDone // it waited behind the previous task
			}
			w.lastDone = now
			w.busySince = now
			sh.observe(now.Sub(start))
		}
		closed := s.closed
		acts := s.pump(sh)
		s.mu.Unlock()
		if ended {
			item.finish(resp, final)
			if s.cfg.finished != nil && !retry {
				s.cfg.finished(item.spec, resp)
			}
		} else {
			if s.cfg.retried != nil {
				s.cfg.retried()
			}
			s.cfg.log.Info("retrying task", "function", item.spec.GetFunctionName(), "task", fmt.Sprintf("%x", item.spec.GetTaskId()), "retries_left", left, "err", err)
		}
		// After close every lease was already returned.
		if drop && !closed {
			acts = append(acts, func() { s.returnLease(w, true) })
		}
		acts.run()
	}
	sent, err := s.cfg.pusher.push(w.addr, item.spec, done)
	if err != nil {
		done(nil, err)
		return
	}
	s.mu.Lock()
	cancel := false
	if item.state == itemSending && item.w == w {
		item.state, item.sent = itemSent, sent
		cancel = item.cancelled != nil // cancelled while it was being sent
	}
	s.mu.Unlock()
	if cancel {
		s.stopOnWorker(item)
	}
}

// cancel cancels a task (task.Cancel, or its caller's context ended): one
// that waits at the submitter — for its arguments, in its shape's queue or
// a worker's outbox — is dropped and fails with why at once; one on a worker
// is cancelled there (force: the worker is killed), and fails with why when
// the worker answers. A finished task is left as it is.
func (s *taskScheduler) cancel(item *taskItem, why error, force, recursive bool) {
	s.mu.Lock()
	if item.state == itemDone {
		s.mu.Unlock()
		return
	}
	first := item.cancelled == nil
	if first {
		item.cancelled = why
	}
	upgrade := (force && !item.force) || (recursive && !item.recursive)
	item.force, item.recursive = item.force || force, item.recursive || recursive
	var acts actions
	switch item.state {
	case itemNew:
	case itemQueued:
		if i := slices.Index(item.sh.queue, item); i >= 0 {
			item.sh.queue = slices.Delete(item.sh.queue, i, i+1)
		}
	case itemHanded:
		w := item.w
		if i := slices.Index(w.outbox, item); i >= 0 {
			w.outbox = slices.Delete(w.outbox, i, i+1)
		}
		w.inflight--
		acts = s.pump(item.sh)
	case itemSending:
		// dispatch cancels it once the push returns.
		s.mu.Unlock()
		return
	case itemSent:
		s.mu.Unlock()
		if first || upgrade {
			s.stopOnWorker(item)
		}
		return
	}
	item.state = itemDone
	why = item.cancelled
	s.mu.Unlock()
	item.finish(nil, why)
	if s.cfg.finished != nil {
		s.cfg.finished(item.spec, nil) // nothing to rebuild
	}
	acts.run()
}

// stopOnWorker cancels a task its worker runs (or holds behind another):
// the worker cancels its context (and, recursive, the calls it submitted);
// force kills the worker, after those cancels when recursive.
func (s *taskScheduler) stopOnWorker(item *taskItem) {
	s.mu.Lock()
	sent, w, sh, force, recursive := item.sent, item.w, item.sh, item.force, item.recursive
	s.mu.Unlock()
	if sent == nil {
		return
	}
	if !force {
		sent.cancel(recursive, false, nil)
		return
	}
	kill := func() {
		s.mu.Lock()
		first := !w.failed && !s.closed
		if first {
			w.failed = true
			s.dropWorker(sh, w)
		}
		acts := s.pump(sh)
		s.mu.Unlock()
		acts.run()
		if !first {
			return
		}
		s.cfg.log.Info("force-cancelling a task: killing its worker", "function", item.spec.GetFunctionName(), "worker", w.addr)
		// The worker's death breaks its stream, which ends the task (and
		// fails the others in flight on it, which are retried).
		if err := s.returnLeaseErr(w, true); err != nil {
			s.cfg.log.Warn("force-cancel: the raylet did not kill the worker; the task may run on", "worker", w.addr, "err", err)
			s.mu.Lock()
			ended := item.state != itemDone
			item.state = itemDone
			s.mu.Unlock()
			if ended {
				item.finish(nil, item.cancelled)
			}
		}
	}
	if !recursive {
		kill()
		return
	}
	// The worker cancels what the task submitted first: a process that is
	// killed cancels nothing.
	s.cfg.wg.Add(1)
	sent.cancel(true, true, func() { s.cfg.wg.Go(kill); s.cfg.wg.Done() })
}

func (s *taskScheduler) dropWorker(sh *shape, w *leasedWorker) {
	for i, x := range sh.workers {
		if x == w {
			sh.workers = append(sh.workers[:i], sh.workers[i+1:]...)
			return
		}
	}
}

func (s *taskScheduler) requestLease(sh *shape) {
	ctx := s.cfg.ctx
	req := &pb.RequestWorkerLeaseRequest{Resources: &pb.Resources{Amounts: sh.resources},
		SchedulingStrategy: sh.strategy, FailFast: sh.failFast, FunctionName: sh.function, Retriable: sh.retriable}
	var resp *pb.RequestWorkerLeaseResponse
	var from leaseGranter
	var err error
	// A raylet that cannot be reached (a node that just died, which the
	// cluster view may still list, or a restarting raylet) is not a reason
	// to fail the tasks: ask again from the local raylet until the view
	// catches up, for up to leaseUnreachableTimeout.
	deadline := time.Now().Add(leaseUnreachableTimeout)
	for attempt := 0; ; attempt++ {
		resp, from, err = s.cfg.leases.requestLease(ctx, req)
		if err == nil || !leaseRetriable(err) || ctx.Err() != nil || time.Now().After(deadline) {
			break
		}
		s.cfg.log.Debug("lease request: a raylet is unreachable; asking again", "function", sh.function, "err", err)
		t := time.NewTimer(min(time.Duration(attempt+1)*200*time.Millisecond, 2*time.Second))
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
		}
	}
	s.mu.Lock()
	sh.requesting = false
	if err != nil {
		failed := sh.queue
		sh.queue = nil
		for _, it := range failed {
			it.state = itemDone
		}
		s.mu.Unlock()
		err = errs.FromStatus(err)
		if ctx.Err() != nil {
			err = errs.New(errs.KindShuttingDown, "", "goray shut down before the task got a worker")
		}
		for _, it := range failed {
			it.finish(nil, fmt.Errorf("task %s: no worker lease: %w", it.spec.GetFunctionName(), forTask(err, it.spec.GetFunctionName())))
		}
		return
	}
	sh.workers = append(sh.workers, &leasedWorker{leaseID: resp.GetLeaseId(), addr: resp.GetWorkerAddress(), raylet: from})
	acts := s.pump(sh)
	s.mu.Unlock()
	acts.run()
}

// forTask is a lease error as one task of the shape sees it: a goray error
// names that task's function, not the function of the task that made the
// shape (the one the lease was asked for).
func forTask(err error, function string) error {
	e, ok := err.(*errs.Error)
	if !ok || e.Name == function {
		return err
	}
	named := *e
	named.Name = function
	return &named
}

// leaseUnreachableTimeout bounds how long a lease request keeps asking
// when raylets are unreachable.
const leaseUnreachableTimeout = 2 * time.Minute

func (s *taskScheduler) returnLease(w *leasedWorker, failed bool) {
	if err := s.returnLeaseErr(w, failed); err != nil {
		s.cfg.log.Debug("return worker lease", "worker", w.addr, "err", err)
	}
}

func (s *taskScheduler) returnLeaseErr(w *leasedWorker, failed bool) error {
	ctx, cancel := context.WithTimeout(context.Background(), leaseReturnTimeout)
	defer cancel()
	return s.cfg.leases.returnLease(ctx, w.raylet, w.leaseID, failed)
}

// rayletLeases is the leaseClient of a core: its local raylet, and the
// raylets that raylet spills requests back to.
type rayletLeases struct{ c *Core }

func (l rayletLeases) requestLease(ctx context.Context, req *pb.RequestWorkerLeaseRequest) (*pb.RequestWorkerLeaseResponse, leaseGranter, error) {
	req.JobId = l.c.jobID[:]
	for restart := 0; ; restart++ {
		// The local raylet, or another once it is gone (peers.go).
		client, node, addr, err := l.c.leaseRaylet(ctx, req)
		if err != nil {
			return nil, nil, err
		}
		req.NoSpillback = false
		for hop := 0; ; hop++ {
			resp, err := client.RequestWorkerLease(ctx, req)
			if err != nil && transportDown(err) && ctx.Err() == nil && restart < 3 && l.c.leaseTargetDown(ctx, node, addr) {
				break // the raylet asked first is gone: start at another
			}
			if err != nil || resp.GetSpillbackAddress() == "" {
				return resp, client, err
			}
			if hop >= 3 {
				return nil, nil, errs.New(errs.KindInfeasible, "", "lease for %v spilled back %d times without a grant", req.GetResources().GetAmounts(), hop+1)
			}
			cc, err := l.c.conns.get(resp.GetSpillbackAddress())
			if err != nil {
				return nil, nil, err
			}
			client, node, addr = rpc.NewNodeClient(cc), resp.GetSpillbackNodeId(), resp.GetSpillbackAddress()
			req.NoSpillback = true
		}
	}
}

func (rayletLeases) returnLease(ctx context.Context, from leaseGranter, leaseID []byte, workerFailed bool) error {
	_, err := from.(*rpc.NodeClient).ReturnWorkerLease(ctx, &pb.ReturnWorkerLeaseRequest{LeaseId: leaseID, WorkerFailed: workerFailed})
	return err
}

// push sends a task over the process's Execute stream to the worker.
func (p *execPool) push(addr string, spec *pb.TaskSpec, cb callback) (sentCall, error) {
	st, err := p.get(addr)
	if err != nil {
		return nil, err
	}
	return st.send(spec, cb)
}

func (s *taskScheduler) close() {
	s.mu.Lock()
	s.closed = true
	if s.reaper != nil {
		s.reaper.Stop()
		s.reaper = nil
	}
	var pending []*taskItem
	var leases []*leasedWorker
	for _, sh := range s.shapes {
		for _, it := range sh.queue {
			it.state = itemDone
		}
		pending = append(pending, sh.queue...)
		sh.queue = nil
		leases = append(leases, sh.workers...)
		sh.workers = nil
	}
	s.mu.Unlock()
	for _, it := range pending {
		it.finish(nil, errs.New(errs.KindShuttingDown, it.spec.GetFunctionName(), "goray shut down before the task ran"))
	}
	for _, w := range leases {
		s.returnLease(w, false)
	}
}
