package core

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/goray/goray/internal/errs"
	"github.com/goray/goray/internal/ids"
	pb "github.com/goray/goray/proto/goray/v1"
)

// call is one task or actor call a worker received on an Execute stream,
// from arrival to its one reply (cancel.go has its life). The stream's
// receive loop makes it, a mailbox holds it, the goroutine that runs it
// begins and ends it, and a cancel from its caller or actor.Kill may end it
// early, from their goroutines; mu guards the fields below it.
type call struct {
	ctx   context.Context // the stream's
	id    uint64
	spec  *pb.TaskSpec
	reply func(*pb.ExecuteResponse)
	// forget takes the call off its stream's table when it is answered.
	forget func()

	mu    sync.Mutex
	state callState
	stop  context.CancelCauseFunc // cancels its context, once running
	why   error                   // its cancellation while it ran: its reply
	// children are the results of the calls it submitted with its context
	// (for recursive cancels); pruned counts those kept at the last prune.
	children []ids.ObjectID
	pruned   int
}

// actorInstance is one actor: a value and a goroutine that serves its
// mailbox in arrival order.
type actorInstance struct {
	id          ids.ActorID
	incarnation uint32
	typ         *ActorType
	obj         any
	maxConc     int

	box *mailbox[*call]
	// exited is closed when the actor's goroutine, and every call it
	// started, returned.
	exited chan struct{}

	mu      sync.Mutex
	killed  bool               // guarded by mu
	running map[*call]struct{} // guarded by mu: calls whose method runs
}

// actorHost is the actors hosted in this worker process, each with its
// mailbox and the goroutine that serves it (owned by wg). The worker
// service's handlers call it (ConstructActor, DestroyActor, and Execute to
// enqueue calls), Shutdown closes it; mu guards actors and closed.
type actorHost struct {
	c      *Core
	mu     sync.Mutex
	actors map[ids.ActorID]*actorInstance // guarded by mu
	wg     sync.WaitGroup
	closed bool // guarded by mu
}

func newActorHost(c *Core) *actorHost {
	return &actorHost{c: c, actors: map[ids.ActorID]*actorInstance{}}
}

func (h *actorHost) create(spec *pb.ActorSpec, incarnation uint32) error {
	id, err := ids.ParseActorID(spec.GetActorId())
	if err != nil {
		return errs.New(errs.KindInvalidArgument, "", "%v", err)
	}
	typ, ok := LookupActorType(spec.GetTypeName())
	if !ok {
		return errs.New(errs.KindNotFound, spec.GetTypeName(), "actor type %q is not registered in the job's program: register it with actor.Register at package level, before runtime.Init", spec.GetTypeName())
	}
	var obj any
	if err := invoke(spec.GetTypeName()+" constructor", func() (any, error) { obj = typ.New(); return nil, nil }); err != nil {
		return err
	}
	a := &actorInstance{id: id, incarnation: incarnation, typ: typ, obj: obj, maxConc: max(int(spec.GetMaxConcurrency()), 1),
		box: newMailbox[*call](), exited: make(chan struct{}), running: map[*call]struct{}{}}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return errs.New(errs.KindActorDied, spec.GetTypeName(), "the worker is shutting down")
	}
	if old, dup := h.actors[id]; dup {
		if old.incarnation >= incarnation {
			return nil // a retried create: the actor already runs
		}
		// An older incarnation still here: the new one replaces it.
		old.stop()
	}
	h.actors[id] = a
	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
		defer close(a.exited)
		h.serve(a)
	}()
	return nil
}

func (h *actorHost) enqueue(id ids.ActorID, cl *call) error {
	h.mu.Lock()
	a, ok := h.actors[id]
	h.mu.Unlock()
	if !ok {
		return errs.New(errs.KindActorDied, "", "actor %s is not hosted by this worker (it was killed, or never started here)", id)
	}
	if inc := cl.spec.GetActorIncarnation(); inc != a.incarnation {
		e := errs.New(errs.KindActorDied, a.typ.Name, "a call for incarnation %d of actor %s reached incarnation %d", inc, id, a.incarnation)
		e.Cause = causeStaleIncarnation
		return e
	}
	if !a.box.put(cl) {
		return errs.New(errs.KindActorDied, a.typ.Name, "actor %s was killed", id)
	}
	return nil
}

// stop closes a's mailbox and ends its calls: those still queued and those
// running fail with ErrActorDied at once, and the running methods' contexts
// are cancelled; its goroutine ends when they return.
func (a *actorInstance) stop() {
	queued := a.box.close()
	a.mu.Lock()
	a.killed = true
	running := make([]*call, 0, len(a.running))
	for cl := range a.running {
		running = append(running, cl)
	}
	a.mu.Unlock()
	for _, cl := range running {
		cl.kill(errs.New(errs.KindActorDied, a.typ.Name, "actor %s was killed while the call ran", a.id))
	}
	for _, cl := range queued {
		cl.kill(errs.New(errs.KindActorDied, a.typ.Name, "actor %s was killed before the call ran", a.id))
	}
}

// begin starts cl in a, unless a was killed (cl then fails) or cl was
// cancelled while it waited.
func (a *actorInstance) begin(cl *call) (context.Context, bool) {
	a.mu.Lock()
	if a.killed {
		a.mu.Unlock()
		cl.kill(errs.New(errs.KindActorDied, a.typ.Name, "actor %s was killed before the call ran", a.id))
		return nil, false
	}
	ctx, ok := cl.begin()
	if ok {
		a.running[cl] = struct{}{}
	}
	a.mu.Unlock()
	return ctx, ok
}

// run runs cl, begun, and answers it.
func (a *actorInstance) run(c *Core, ctx context.Context, cl *call) {
	cl.end(c.runMethod(ctx, cl, a))
	a.mu.Lock()
	delete(a.running, cl)
	a.mu.Unlock()
}

// killGrace is how long DestroyActor waits for a killed actor's running
// methods to return once their contexts are cancelled.
const killGrace = 2 * time.Second

// waitStopped waits up to grace for a's goroutine and calls to return and
// says how many calls still run then (methods that ignore their context).
func (a *actorInstance) waitStopped(grace time.Duration) int {
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-a.exited:
		return 0
	case <-t.C:
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.running)
}

// serve runs a's calls in arrival order; with max_concurrency > 1 up to that
// many overlap, still started in order.
func (h *actorHost) serve(a *actorInstance) {
	var sem chan struct{}
	var running sync.WaitGroup
	if a.maxConc > 1 {
		sem = make(chan struct{}, a.maxConc)
	}
	defer running.Wait()
	for {
		cl, ok := a.box.next()
		if !ok {
			return
		}
		ctx, ok := a.begin(cl)
		if !ok {
			continue
		}
		if sem == nil {
			a.run(h.c, ctx, cl)
			continue
		}
		sem <- struct{}{}
		running.Add(1)
		go func() {
			defer func() { <-sem; running.Done() }()
			a.run(h.c, ctx, cl)
		}()
	}
}

// kill stops the actor id and returns it (nil when it is not hosted here).
func (h *actorHost) kill(id ids.ActorID) *actorInstance {
	h.mu.Lock()
	a, ok := h.actors[id]
	delete(h.actors, id)
	h.mu.Unlock()
	if !ok {
		return nil
	}
	a.stop()
	return a
}

func (h *actorHost) close() {
	h.mu.Lock()
	h.closed = true
	all := make([]ids.ActorID, 0, len(h.actors))
	for id := range h.actors {
		all = append(all, id)
	}
	h.mu.Unlock()
	for _, id := range all {
		h.kill(id)
	}
	h.wg.Wait()
}

func (c *Core) runMethod(ctx context.Context, cl *call, a *actorInstance) *pb.ExecuteResponse {
	name := cl.spec.GetMethodName()
	qual := fmt.Sprintf("%s.%s", a.typ.Name, name)
	m, ok := a.typ.Method(name)
	if !ok {
		return errorReply(cl.id, errs.New(errs.KindNotFound, qual, "actor type %q has no method %q (registered methods: %v)", a.typ.Name, name, a.typ.MethodNames()))
	}
	args, err := c.decodeArgs(ctx, cl.spec.GetArgs(), m.ArgTypes, qual)
	if err != nil {
		return errorReply(cl.id, err)
	}
	var out any
	err = invoke(qual, func() (any, error) {
		var err error
		out, err = m.Call(ctx, a.obj, args)
		return out, err
	})
	return c.resultReply(ctx, cl.id, cl.spec, out, err)
}
