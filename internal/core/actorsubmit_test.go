package core

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/goray/goray/internal/errs"
	"github.com/goray/goray/internal/ids"
	"github.com/goray/goray/internal/testwait"
	pb "github.com/goray/goray/proto/goray/v1"
)

// located is one question a fakeLocator was asked.
type located struct {
	after  uint32 // 0 too when any incarnation was asked for (anyInc)
	anyInc bool
	answer chan *pb.ActorInfo
}

// fakeLocator hands every lookup to the test, which answers it.
type fakeLocator chan located

func (l fakeLocator) locate(ctx context.Context, _ ids.ActorID, after *uint32) (*pb.ActorInfo, error) {
	q := located{anyInc: after == nil, answer: make(chan *pb.ActorInfo, 1)}
	if after != nil {
		q.after = *after
	}
	l <- q
	select {
	case info := <-q.answer:
		return info, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (l fakeLocator) next(t *testing.T) located {
	t.Helper()
	select {
	case q := <-l:
		return q
	case <-time.After(10 * time.Second):
		t.Fatal("the submitter never asked where the actor went")
		return located{}
	}
}

func actorInfo(id ids.ActorID, addr string, inc uint32, retries int32) *pb.ActorInfo {
	return &pb.ActorInfo{Spec: &pb.ActorSpec{ActorId: id[:], TypeName: "counter", MaxTaskRetries: retries},
		State: pb.ActorState_ACTOR_STATE_ALIVE, WorkerAddress: addr, NumRestarts: inc}
}

func newTestActorSubmitter(t *testing.T, maxTaskRetries int32) (*actorSubmitter, *actorRoute, fakePusher, fakeLocator, *atomic.Int64) {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait() })
	pusher, locator := make(fakePusher, 64), make(fakeLocator, 8)
	var retries atomic.Int64
	s := newActorSubmitter(actorSubmitterConfig{ctx: ctx, wg: &wg, pusher: pusher, locator: locator, retried: func() { retries.Add(1) }})
	id := ids.NewActorID(ids.JobIDFromUint32(1))
	r, err := s.route(actorInfo(id, "w1", 0, maxTaskRetries))
	if err != nil {
		t.Fatal(err)
	}
	return s, r, pusher, locator, &retries
}

func callTest(s *actorSubmitter, r *actorRoute, method string) *objEntry {
	e := &objEntry{done: make(chan struct{})}
	s.send(r, &actorCall{spec: &pb.TaskSpec{MethodName: method}, e: e}, 0)
	return e
}

var errWorkerGone = errs.New(errs.KindWorkerCrashed, "", "the worker went away")

func TestActorCallsGoToTheActorsWorkerInOrder(t *testing.T) {
	s, r, pusher, _, _ := newTestActorSubmitter(t, 0)
	a, b := callTest(s, r, "a"), callTest(s, r, "b")
	for _, want := range []string{"a", "b"} {
		p := pusher.next(t)
		if p.addr != "w1" || p.spec.GetMethodName() != want || p.spec.GetActorIncarnation() != 0 {
			t.Fatalf("push: got %s to %s (incarnation %d), want %s to w1 (0)", p.spec.GetMethodName(), p.addr, p.spec.GetActorIncarnation(), want)
		}
		p.cb(valueReply(want), nil)
	}
	for _, e := range []*objEntry{a, b} {
		waitEntry(t, e)
		if e.err != nil {
			t.Fatalf("call: got %v, want a value", e.err)
		}
	}
}

func TestActorCallInFlightIsRetriedOnTheNextIncarnation(t *testing.T) {
	s, r, pusher, locator, retries := newTestActorSubmitter(t, 1)
	e := callTest(s, r, "add")
	pusher.next(t).cb(nil, errWorkerGone)
	q := locator.next(t)
	if q.after != 0 {
		t.Fatalf("lookup: asked for an incarnation after %d, want after 0", q.after)
	}
	// A call made while the actor is being found waits for it.
	later := callTest(s, r, "get")
	q.answer <- actorInfo(r.id, "w2", 1, 1)
	for _, want := range []string{"add", "get"} {
		p := pusher.next(t)
		if p.addr != "w2" || p.spec.GetActorIncarnation() != 1 || p.spec.GetMethodName() != want {
			t.Fatalf("after the restart: got %s to %s (incarnation %d), want %s to w2 (1)", p.spec.GetMethodName(), p.addr, p.spec.GetActorIncarnation(), want)
		}
		p.cb(valueReply(want), nil)
	}
	waitEntry(t, e)
	waitEntry(t, later)
	if e.err != nil || later.err != nil {
		t.Fatalf("calls after the restart: got %v, %v; want values", e.err, later.err)
	}
	if got := retries.Load(); got != 1 {
		t.Fatalf("calls sent again: got %d, want 1", got)
	}
}

func TestActorCallInFlightFailsWithoutTaskRetries(t *testing.T) {
	s, r, pusher, locator, retries := newTestActorSubmitter(t, 0)
	e := callTest(s, r, "add")
	pusher.next(t).cb(nil, errWorkerGone)
	waitEntry(t, e)
	if !errors.Is(e.err, errs.ErrWorkerCrashed) {
		t.Fatalf("call in flight when the worker died: got %v, want ErrWorkerCrashed (at most once)", e.err)
	}
	locator.next(t).answer <- actorInfo(r.id, "w2", 1, 0)
	// The route follows the actor for the next calls.
	eventuallyRoute(t, r, "w2")
	callTest(s, r, "get")
	if p := pusher.next(t); p.addr != "w2" {
		t.Fatalf("next call: pushed to %s, want w2", p.addr)
	}
	if retries.Load() != 0 {
		t.Fatalf("calls sent again: got %d, want 0", retries.Load())
	}
}

func eventuallyRoute(t *testing.T, r *actorRoute, addr string) {
	t.Helper()
	testwait.Eventually(t, 10*time.Second, "the route to move to "+addr, func() bool {
		r.mu.Lock()
		defer r.mu.Unlock()
		return r.addr == addr && !r.waiting
	})
}

func TestActorCallThatReachedAnotherIncarnationIsSentAgain(t *testing.T) {
	s, r, pusher, locator, retries := newTestActorSubmitter(t, 0)
	e := callTest(s, r, "add")
	stale := errs.New(errs.KindActorDied, "counter", "a call for incarnation 0 reached incarnation 1")
	stale.Cause = causeStaleIncarnation
	pusher.next(t).cb(errorReply(0, stale), nil)
	locator.next(t).answer <- actorInfo(r.id, "w2", 1, 0)
	p := pusher.next(t)
	if p.addr != "w2" {
		t.Fatalf("a call that never ran: sent again to %s, want w2", p.addr)
	}
	p.cb(valueReply("ok"), nil)
	waitEntry(t, e)
	if e.err != nil || retries.Load() != 0 {
		t.Fatalf("got %v with %d retries counted; want a value and none (it never ran)", e.err, retries.Load())
	}
}

func TestActorCallsToADeadActorFail(t *testing.T) {
	s, r, pusher, locator, _ := newTestActorSubmitter(t, 1)
	e := callTest(s, r, "add")
	pusher.next(t).cb(nil, errWorkerGone)
	dead := actorInfo(r.id, "", 0, 1)
	dead.State = pb.ActorState_ACTOR_STATE_DEAD
	dead.DeathCause = errs.ToProto(errs.New(errs.KindActorDied, "counter", "killed by its owner"))
	locator.next(t).answer <- dead
	waitEntry(t, e)
	if !errors.Is(e.err, errs.ErrActorDied) {
		t.Fatalf("call waiting for a dead actor: got %v, want ErrActorDied", e.err)
	}
	after := callTest(s, r, "get")
	waitEntry(t, after)
	if !errors.Is(after.err, errs.ErrActorDied) {
		t.Fatalf("call after the actor died: got %v, want ErrActorDied", after.err)
	}
}

// A handle got while its actor was still being created (by name, with
// get-if-exists) has no address: its first call waits for the actor to be
// alive in any incarnation, the first included, not for a restart.
func TestActorCallBeforeTheActorHasAnAddress(t *testing.T) {
	s, _, pusher, locator, _ := newTestActorSubmitter(t, 0)
	id := ids.NewActorID(ids.JobIDFromUint32(1))
	pending := &pb.ActorInfo{Spec: &pb.ActorSpec{ActorId: id[:], TypeName: "counter"}, State: pb.ActorState_ACTOR_STATE_PENDING}
	r, err := s.route(pending)
	if err != nil {
		t.Fatal(err)
	}
	e := callTest(s, r, "add")
	q := locator.next(t)
	if !q.anyInc {
		t.Fatalf("lookup of an actor never located: asked for an incarnation after %d, want any", q.after)
	}
	q.answer <- actorInfo(id, "w1", 0, 0)
	p := pusher.next(t)
	if p.addr != "w1" || p.spec.GetActorIncarnation() != 0 {
		t.Fatalf("the first call: pushed to %q (incarnation %d), want w1 (0)", p.addr, p.spec.GetActorIncarnation())
	}
	p.cb(valueReply("add"), nil)
	waitEntry(t, e)
	if e.err != nil {
		t.Fatalf("the first call: %v", e.err)
	}
}
