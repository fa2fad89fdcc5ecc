package core

import (
	"context"
	"slices"
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
	// after nil: any live incarnation (the caller never knew one).
	locate(ctx context.Context, id ids.ActorID, after *uint32) (*pb.ActorInfo, error)
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
	ac   *actorCall
	send func()
	fail func(error)
}

// actorCall is one call this process made to an actor, from CallActor to
// its result. The fields below spec and e are guarded by its route's mu.
type actorCall struct {
	spec *pb.TaskSpec
	e    *objEntry
	// release runs once e is complete (the core forgets the call).
	release func()

	state     acState
	sent      sentCall // on the actor's worker, while state is acSent
	cancelled error    // set by cancel: what the caller's Get sees
	recursive bool
	sends     int // counts the sends, so that a push's return knows it is the latest
}

// acState is where an actor call is.
type acState int

const (
	acWaiting acState = iota // not sent yet, or waiting for the actor to be found again
	acSending                // being pushed to the actor's worker
	acSent                   // on the actor's worker
	acDone                   // its entry is (being) completed
)

// finish completes the call's entry with its reply or error.
func (s *actorSubmitter) finish(r *actorRoute, ac *actorCall, resp *pb.ExecuteResponse, err error) {
	r.mu.Lock()
	ac.state = acDone
	r.mu.Unlock()
	complete(ac.e, resp, err)
	if ac.release != nil {
		ac.release()
	}
}

// cancel cancels an actor call (task.Cancel, or its caller's context
// ended): one not sent yet, or waiting for its actor to be found again,
// fails with why at once; one on the actor's worker is cancelled there (a
// queued call is dropped, a running method's context is cancelled) and
// fails with why when the worker answers. Actor calls are never forced.
func (s *actorSubmitter) cancel(r *actorRoute, ac *actorCall, why error, recursive bool) {
	r.mu.Lock()
	if ac.state == acDone {
		r.mu.Unlock()
		return
	}
	first := ac.cancelled == nil
	if first {
		ac.cancelled = why
	}
	upgrade := recursive && !ac.recursive
	ac.recursive = ac.recursive || recursive
	switch ac.state {
	case acWaiting:
		if i := slices.IndexFunc(r.pending, func(pc *pendingCall) bool { return pc.ac == ac }); i >= 0 {
			r.pending = slices.Delete(r.pending, i, i+1)
			r.mu.Unlock()
			s.finish(r, ac, nil, ac.cancelled)
			return
		}
		// Between a failed send and its relocation, which sees the
		// cancellation; or not sent yet, and send sees it.
		r.mu.Unlock()
	case acSending:
		r.mu.Unlock() // send cancels it once the push returns
	case acSent:
		sent := ac.sent
		r.mu.Unlock()
		if first || upgrade {
			sent.cancel(recursive, false, nil)
		}
	}
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

// send sends one call to the route's current incarnation; its entry
// receives the outcome. attempt counts the times it was sent again after a
// worker death.
func (s *actorSubmitter) send(r *actorRoute, ac *actorCall, attempt int32) {
	spec := ac.spec
	again := func(attempt int32) *pendingCall {
		return &pendingCall{ac: ac, send: func() { s.send(r, ac, attempt) }, fail: func(err error) { s.finish(r, ac, nil, err) }}
	}
	r.mu.Lock()
	if err := ac.cancelled; err != nil {
		r.mu.Unlock()
		s.finish(r, ac, nil, err)
		return
	}
	if r.dead != nil {
		err := r.dead
		r.mu.Unlock()
		s.finish(r, ac, nil, err)
		return
	}
	if r.waiting {
		ac.state = acWaiting
		r.pending = append(r.pending, again(attempt))
		r.mu.Unlock()
		return
	}
	if r.addr == "" {
		// Not created yet when the route was made: find where it runs.
		inc := r.incarnation
		r.mu.Unlock()
		s.relocate(r, inc, again(attempt))
		return
	}
	ac.state = acSending
	ac.sends++
	gen := ac.sends
	addr, inc := r.addr, r.incarnation
	r.mu.Unlock()
	spec.ActorIncarnation = inc
	sent, err := s.cfg.pusher.push(addr, spec, func(resp *pb.ExecuteResponse, err error) {
		r.mu.Lock()
		why := ac.cancelled
		r.mu.Unlock()
		if err == nil {
			ee := resp.GetError()
			if why != nil && ee.GetKind() == pb.ErrorKind_ERROR_KIND_CANCELLED {
				s.finish(r, ac, nil, why) // the caller's reason says more
				return
			}
			if ee == nil || ee.GetCause() != causeStaleIncarnation {
				s.finish(r, ac, resp, nil)
				return
			}
			if why != nil {
				s.finish(r, ac, nil, why)
				return
			}
			// It reached another incarnation and never ran: send again.
			s.relocate(r, inc, again(attempt))
			return
		}
		// The worker died while the call was in flight: it may have run.
		r.suspect(inc)
		if why == nil && (r.maxTaskRetries < 0 || attempt < r.maxTaskRetries) {
			if s.cfg.retried != nil {
				s.cfg.retried()
			}
			s.relocate(r, inc, again(attempt+1))
			return
		}
		if why != nil {
			err = why
		}
		s.finish(r, ac, nil, err)
		s.relocate(r, inc, nil)
	})
	if err != nil {
		// Never delivered: safe to send to the next incarnation.
		r.suspect(inc)
		s.relocate(r, inc, again(attempt))
		return
	}
	r.mu.Lock()
	cancel := false
	if ac.state == acSending && ac.sends == gen {
		ac.state, ac.sent = acSent, sent
		cancel = ac.cancelled != nil // cancelled while it was being sent
	}
	recursive := ac.recursive
	r.mu.Unlock()
	if cancel {
		sent.cancel(recursive, false, nil)
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
	if r.dead != nil || r.incarnation > failed || (pc != nil && pc.ac.cancelled != nil) {
		r.mu.Unlock()
		if pc != nil {
			pc.send() // fails it when it is dead or cancelled
		}
		return
	}
	if pc != nil {
		pc.ac.state = acWaiting
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
	// A route made while the actor was still being created has no address
	// yet: no incarnation of it failed, so any live one will do (waiting
	// for one after the first would wait for a restart).
	after := &failed
	if addr == "" {
		after = nil
	}
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
		info, err = s.cfg.locator.locate(ctx, r.id, after)
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

func (h headActors) locate(ctx context.Context, id ids.ActorID, after *uint32) (*pb.ActorInfo, error) {
	var resp *pb.GetActorResponse
	err := retryHead(ctx, func(ctx context.Context) (err error) {
		resp, err = h.c.head.GetActor(ctx, &pb.GetActorRequest{ActorId: id[:], Wait: true, AfterIncarnation: after})
		return err
	})
	return resp.GetActor(), err
}
