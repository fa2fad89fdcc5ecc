package core

import (
	"context"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/goray/goray/internal/errs"
	"github.com/goray/goray/internal/ids"
	pb "github.com/goray/goray/proto/goray/v1"
)

// actorRelocateTimeout bounds how long calls wait for a failed actor to be
// found again (restarted, or declared dead) before they fail.
const actorRelocateTimeout = 2 * time.Minute

// causeStaleIncarnation marks the error of a call that reached another
// incarnation of its actor than the one it was sent to: it never ran.
const causeStaleIncarnation = "stale incarnation"

// actorLocator finds where an actor runs once an incarnation of it failed:
// the head's GetActor, waiting for a later incarnation or the actor's death.
type actorLocator interface {
	locate(ctx context.Context, id ids.ActorID, after uint32) (*pb.ActorInfo, error)
}

// actorSubmitter is the core worker's actor call submitter (Ray's
// ActorTaskSubmitter): it sends calls straight to the worker hosting the
// actor, in call order, and when the actor's process dies it asks an
// actorLocator for the next incarnation, holding the calls made meanwhile
// and sending again those the actor's task retries allow.
//
// Callers: CallActor and handle creation (any goroutine), the reply
// callbacks of the pusher, and its own relocation goroutines, owned by
// cfg.wg. mu guards routes; each route has its own lock.
type actorSubmitter struct {
	cfg actorSubmitterConfig

	mu     sync.Mutex
	routes map[ids.ActorID]*actorRoute
}

// actorSubmitterConfig is what an actorSubmitter is made from.
type actorSubmitterConfig struct {
	ctx     context.Context
	wg      *sync.WaitGroup
	pusher  taskPusher
	locator actorLocator
	// retried counts a call sent again after its worker died; may be nil.
	retried func()
	// report tells the head that the node at addr (the failed
	// incarnation's worker) could not be reached, so that it checks the
	// node at once, and says whether the node is dead; may be nil.
	report func(ctx context.Context, node []byte, addr string) bool
}

func newActorSubmitter(cfg actorSubmitterConfig) *actorSubmitter {
	return &actorSubmitter{cfg: cfg, routes: map[ids.ActorID]*actorRoute{}}
}

// actorRoute is this process's view of where an actor runs, shared by every
// handle to it. When a call finds the actor gone, the route asks for its
// next incarnation; calls made meanwhile wait, in order.
type actorRoute struct {
	id             ids.ActorID
	typeName       string
	maxTaskRetries int32

	mu          sync.Mutex
	addr        string
	node        []byte // the node hosting incarnation
	incarnation uint32
	dead        error
	waiting     bool
	// unreachable: a call could not reach incarnation's worker (its
	// connection refused or broken), so the next lookup reports its node.
	unreachable bool
	pending     []*pendingCall
}

// pendingCall is a call waiting for its actor to be found again.
type pendingCall struct {
	send func()
	fail func(error)
}

// route is the actor's shared route, updated to info when info is a newer
// live incarnation.
func (s *actorSubmitter) route(info *pb.ActorInfo) (*actorRoute, error) {
	id, err := ids.ParseActorID(info.GetSpec().GetActorId())
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	r, ok := s.routes[id]
	if !ok {
		r = &actorRoute{id: id, typeName: info.GetSpec().GetTypeName(), maxTaskRetries: info.GetSpec().GetMaxTaskRetries()}
		s.routes[id] = r
	}
	s.mu.Unlock()
	r.mu.Lock()
	if !ok || (info.GetState() == pb.ActorState_ACTOR_STATE_ALIVE && info.GetNumRestarts() >= r.incarnation) {
		r.addr, r.node, r.incarnation = info.GetWorkerAddress(), info.GetNodeId(), info.GetNumRestarts()
	}
	r.mu.Unlock()
	return r, nil
}

// send sends one call to the route's current incarnation; e receives its
// outcome. attempt counts the times it was sent again after a worker death.
func (s *actorSubmitter) send(r *actorRoute, spec *pb.TaskSpec, e *objEntry, attempt int32) {
	again := func(attempt int32) *pendingCall {
		return &pendingCall{send: func() { s.send(r, spec, e, attempt) }, fail: e.setError}
	}
	r.mu.Lock()
	if r.dead != nil {
		err := r.dead
		r.mu.Unlock()
		e.setError(err)
		return
	}
	if r.waiting {
		r.pending = append(r.pending, again(attempt))
		r.mu.Unlock()
		return
	}
	addr, inc := r.addr, r.incarnation
	r.mu.Unlock()
	spec.ActorIncarnation = inc
	err := s.cfg.pusher.push(addr, spec, func(resp *pb.ExecuteResponse, err error) {
		if err == nil {
			if ee := resp.GetError(); ee == nil || ee.GetCause() != causeStaleIncarnation {
				complete(e, resp, nil)
				return
			}
			// It reached another incarnation and never ran: send again.
			s.relocate(r, inc, again(attempt))
			return
		}
		// The worker died while the call was in flight: it may have run.
		r.suspect(inc)
		if r.maxTaskRetries < 0 || attempt < r.maxTaskRetries {
			if s.cfg.retried != nil {
				s.cfg.retried()
			}
			s.relocate(r, inc, again(attempt+1))
			return
		}
		e.setError(err)
		s.relocate(r, inc, nil)
	})
	if err != nil {
		// Never delivered: safe to send to the next incarnation.
		r.suspect(inc)
		s.relocate(r, inc, again(attempt))
	}
}

// suspect records that incarnation's worker could not be reached.
func (r *actorRoute) suspect(incarnation uint32) {
	r.mu.Lock()
	if r.incarnation == incarnation {
		r.unreachable = true
	}
	r.mu.Unlock()
}

// relocate asks where the actor runs after incarnation failed (at most one
// lookup at a time per actor), then sends pc, if any.
func (s *actorSubmitter) relocate(r *actorRoute, failed uint32, pc *pendingCall) {
	r.mu.Lock()
	if r.dead != nil || r.incarnation > failed {
		r.mu.Unlock()
		if pc != nil {
			pc.send()
		}
		return
	}
	if pc != nil {
		r.pending = append(r.pending, pc)
	}
	if r.waiting {
		r.mu.Unlock()
		return
	}
	r.waiting = true
	r.mu.Unlock()
	s.cfg.wg.Go(func() { s.lookup(r, failed) })
}

// lookup finds the actor's next incarnation after failed (or its death)
// and sends or fails the calls that wait for it.
func (s *actorSubmitter) lookup(r *actorRoute, failed uint32) {
	ctx, cancel := context.WithTimeout(s.cfg.ctx, actorRelocateTimeout)
	r.mu.Lock()
	report, node, addr := r.unreachable && r.incarnation == failed, r.node, r.addr
	r.unreachable = false
	r.mu.Unlock()
	if report && s.cfg.report != nil {
		// Before waiting for the head: when the worker's node is gone,
		// the head's probe finds it so and restarts or buries the actor
		// now, not at the node's heartbeat deadline.
		s.cfg.report(ctx, node, addr)
	}
	var info *pb.ActorInfo
	var err error
	for attempt := 0; ; attempt++ {
		info, err = s.cfg.locator.locate(ctx, r.id, failed)
		if status.Code(err) != codes.Unavailable || ctx.Err() != nil {
			break
		}
		// The head is down (restarting): ask again.
		t := time.NewTimer(min(time.Duration(attempt+1)*200*time.Millisecond, 2*time.Second))
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
		}
	}
	cancel()
	r.mu.Lock()
	var failAll error
	switch {
	case err != nil:
		// No answer (the head may be down): fail what waits, keep the
		// route, and look again on the next failure.
		failAll = errs.New(errs.KindActorDied, r.typeName, "actor %s is unreachable and the head did not say where it went: %v", r.id, errs.FromStatus(err))
	case info.GetState() == pb.ActorState_ACTOR_STATE_DEAD:
		de := errs.New(errs.KindActorDied, r.typeName, "actor %s is dead", r.id)
		if cause := info.GetDeathCause(); cause != nil {
			de.Cause = errs.FromProto(cause).Error()
		}
		r.dead = de
	default:
		r.addr, r.node, r.incarnation = info.GetWorkerAddress(), info.GetNodeId(), info.GetNumRestarts()
	}
	pending := r.pending
	r.pending, r.waiting = nil, false
	r.mu.Unlock()
	for _, pc := range pending {
		if failAll != nil {
			pc.fail(failAll)
			continue
		}
		pc.send()
	}
}

// headActors is a core's actorLocator: the head.
type headActors struct{ c *Core }

func (h headActors) locate(ctx context.Context, id ids.ActorID, after uint32) (*pb.ActorInfo, error) {
	resp, err := h.c.head.GetActor(ctx, &pb.GetActorRequest{ActorId: id[:], Wait: true, AfterIncarnation: &after})
	return resp.GetActor(), err
}
