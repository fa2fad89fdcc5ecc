package core

import (
	"context"
	"fmt"
	"sync"

	"github.com/goray/goray/internal/errs"
	"github.com/goray/goray/internal/ids"
	pb "github.com/goray/goray/proto/goray/v1"
)

// call is one actor call waiting in a mailbox.
type call struct {
	ctx   context.Context
	id    uint64
	spec  *pb.TaskSpec
	reply func(*pb.ExecuteResponse)
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
	a := &actorInstance{id: id, incarnation: incarnation, typ: typ, obj: obj, maxConc: max(int(spec.GetMaxConcurrency()), 1), box: newMailbox[*call]()}
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

// stop closes a's mailbox: the calls still queued fail with ErrActorDied,
// and its goroutine ends after the calls running now.
func (a *actorInstance) stop() {
	for _, cl := range a.box.close() {
		cl.reply(errorReply(cl.id, errs.New(errs.KindActorDied, a.typ.Name, "actor %s was killed before the call ran", a.id)))
	}
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
		if sem == nil {
			cl.reply(h.c.runMethod(cl, a))
			continue
		}
		sem <- struct{}{}
		running.Add(1)
		go func() {
			defer func() { <-sem; running.Done() }()
			cl.reply(h.c.runMethod(cl, a))
		}()
	}
}

func (h *actorHost) kill(id ids.ActorID) bool {
	h.mu.Lock()
	a, ok := h.actors[id]
	delete(h.actors, id)
	h.mu.Unlock()
	if !ok {
		return false
	}
	a.stop()
	return true
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

func (c *Core) runMethod(cl *call, a *actorInstance) *pb.ExecuteResponse {
	name := cl.spec.GetMethodName()
	qual := fmt.Sprintf("%s.%s", a.typ.Name, name)
	m, ok := a.typ.Method(name)
	if !ok {
		return errorReply(cl.id, errs.New(errs.KindNotFound, qual, "actor type %q has no method %q (registered methods: %v)", a.typ.Name, name, a.typ.MethodNames()))
	}
	args, err := c.decodeArgs(cl.ctx, cl.spec.GetArgs(), m.ArgTypes, qual)
	if err != nil {
		return errorReply(cl.id, err)
	}
	var out any
	err = invoke(qual, func() (any, error) {
		var err error
		out, err = m.Call(cl.ctx, a.obj, args)
		return out, err
	})
	return c.resultReply(cl.ctx, cl.id, cl.spec, out, err)
}
