package core

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"testing"
	"time"

	"github.com/goray/goray/internal/errs"
	"github.com/goray/goray/internal/ids"
	"github.com/goray/goray/internal/testwait"
	pb "github.com/goray/goray/proto/goray/v1"
)

var errTestCancel = errs.New(errs.KindCancelled, "f", "cancelled by the test")

// submitItem submits a task of function name and returns it.
func submitItem(s *taskScheduler, name string, retries int) *taskItem {
	it := &taskItem{spec: &pb.TaskSpec{FunctionName: name}, entry: &objEntry{done: make(chan struct{})}, retriesLeft: retries}
	s.submit(it, defaultTaskResources, TaskOptions{})
	return it
}

func wantCancelled(t *testing.T, what string, e *objEntry) {
	t.Helper()
	waitEntry(t, e)
	if !errors.Is(e.err, errs.ErrCancelled) {
		t.Fatalf("%s: got %v (value %q), want ErrCancelled", what, e.err, e.value.GetData())
	}
}

func TestCancelTaskQueuedAtTheSubmitterDropsIt(t *testing.T) {
	leases := &fakeLeases{grants: 1}
	s, pusher, _ := newTestSubmitter(t, leases)
	first := submitItem(s, "f", 0)
	p := pusher.next(t) // w1 runs the first; the second waits for a lease
	second := submitItem(s, "f", 0)
	s.cancel(second, errTestCancel, false, false)
	wantCancelled(t, "the queued task", second.entry)
	if first.entry.ready() {
		t.Fatal("the running task finished when the queued one was cancelled")
	}
	p.cb(valueReply("a"), nil)
	waitEntry(t, first.entry)
	// Had the second stayed queued, the idle w1 would have run it instead
	// of going back.
	testwait.Eventually(t, 10*time.Second, "the idle lease returned", func() bool {
		_, ret := leases.counts()
		return slices.Contains(ret, "w1")
	})
	if n := len(pusher); n != 0 {
		t.Fatalf("tasks pushed after the cancel: got %d, want 0", n)
	}
}

func TestCancelTaskOnItsWorker(t *testing.T) {
	for _, tc := range []struct {
		name  string
		reply func(p pushed)
	}{
		{"the worker answers with the cancellation", func(p pushed) {
			p.cb(errorReply(0, errs.New(errs.KindCancelled, "f", "the call was cancelled by its caller")), nil)
		}},
		// A cancelled task whose worker dies is not retried.
		{"the worker dies", func(p pushed) { p.cb(nil, errWorkerGone) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			leases := &fakeLeases{}
			s, pusher, retries := newTestSubmitter(t, leases)
			it := submitItem(s, "f", 3)
			p := pusher.next(t)
			s.cancel(it, errTestCancel, false, false)
			if got := p.sent.got(); !slices.Equal(got, []string{"cancel"}) {
				t.Fatalf("cancels sent to the worker: got %v, want [cancel]", got)
			}
			if it.entry.ready() {
				t.Fatal("a running task's ref failed before its worker answered")
			}
			s.cancel(it, errTestCancel, false, false) // again: nothing more is sent
			tc.reply(p)
			wantCancelled(t, "the running task", it.entry)
			if got := p.sent.got(); len(got) != 1 {
				t.Fatalf("cancels sent after a second Cancel: got %v, want one", got)
			}
			if n := retries.Load(); n != 0 || len(pusher) != 0 {
				t.Fatalf("got %d retries and %d pushes after the cancel, want none", n, len(pusher))
			}
		})
	}
}

func TestForceCancelKillsTheWorker(t *testing.T) {
	for _, tc := range []struct {
		name      string
		recursive bool
		cancels   []string
	}{
		{"alone", false, nil},
		// The worker cancels the children first: then it is killed.
		{"recursive", true, []string{"cancel recursive force"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			leases := &fakeLeases{}
			s, pusher, retries := newTestSubmitter(t, leases)
			it := submitItem(s, "f", 3)
			p := pusher.next(t)
			s.cancel(it, errTestCancel, true, tc.recursive)
			testwait.Eventually(t, 10*time.Second, "the worker's lease returned as failed (the raylet kills it)", func() bool {
				_, ret := leases.counts()
				return slices.Equal(ret, []string{"w1 failed"})
			})
			if got := p.sent.got(); !slices.Equal(got, tc.cancels) {
				t.Fatalf("cancels sent to the worker: got %v, want %v", got, tc.cancels)
			}
			// Its death breaks the stream; even a late reply is dropped.
			p.cb(valueReply("late"), nil)
			wantCancelled(t, "the force-cancelled task", it.entry)
			if n := retries.Load(); n != 0 {
				t.Fatalf("retries after a forced cancel: got %d, want 0", n)
			}
		})
	}
}

func TestCancelFinishedTaskIsANoOp(t *testing.T) {
	s, pusher, _ := newTestSubmitter(t, &fakeLeases{})
	it := submitItem(s, "f", 0)
	p := pusher.next(t)
	p.cb(valueReply("done"), nil)
	waitEntry(t, it.entry)
	s.cancel(it, errTestCancel, true, true)
	if it.entry.err != nil || string(it.entry.value.GetData()) != "done" {
		t.Fatalf("after Cancel of a finished task: got %q, %v; want \"done\"", it.entry.value.GetData(), it.entry.err)
	}
	if got := p.sent.got(); len(got) != 0 {
		t.Fatalf("cancels sent for a finished task: got %v, want none", got)
	}
}

func TestCancelActorCall(t *testing.T) {
	t.Run("sent: the worker is asked", func(t *testing.T) {
		s, r, pusher, _, _ := newTestActorSubmitter(t, 0)
		ac := &actorCall{spec: &pb.TaskSpec{MethodName: "poll"}, e: &objEntry{done: make(chan struct{})}}
		s.send(r, ac, 0)
		p := pusher.next(t)
		s.cancel(r, ac, errTestCancel, true)
		if got := p.sent.got(); !slices.Equal(got, []string{"cancel recursive"}) {
			t.Fatalf("cancels sent to the actor's worker: got %v, want [cancel recursive]", got)
		}
		p.cb(errorReply(0, errs.New(errs.KindCancelled, "poll", "the call was cancelled by its caller")), nil)
		wantCancelled(t, "the actor call", ac.e)
	})
	t.Run("waiting for its actor: dropped", func(t *testing.T) {
		s, r, pusher, locator, _ := newTestActorSubmitter(t, 0)
		first := callTest(s, r, "a")
		pusher.next(t).cb(nil, errWorkerGone) // the actor's process died
		q := locator.next(t)
		waiting := &actorCall{spec: &pb.TaskSpec{MethodName: "b"}, e: &objEntry{done: make(chan struct{})}}
		s.send(r, waiting, 0) // held until the actor is found again
		s.cancel(r, waiting, errTestCancel, false)
		wantCancelled(t, "the call waiting for its actor", waiting.e)
		waitEntry(t, first)
		id := r.id
		q.answer <- actorInfo(id, "w2", 1, 0)
		c := callTest(s, r, "c")
		if p := pusher.next(t); p.spec.GetMethodName() != "c" || p.addr != "w2" {
			t.Fatalf("after the relocation: pushed %s to %s, want c to w2 (the cancelled call is not sent)", p.spec.GetMethodName(), p.addr)
		} else {
			p.cb(valueReply("c"), nil)
		}
		waitEntry(t, c)
	})
}

// TestCallTable: a tracked call is found by Cancel until it is released,
// and the end of its submission context cancels it.
func TestCallTable(t *testing.T) {
	c := newCore(slog.New(slog.DiscardHandler), "")
	t.Cleanup(c.cancel)
	c.addr = "me"
	type cancelled struct {
		why              error
		force, recursive bool
	}
	track := func(ctx context.Context, actor bool) (ids.ObjectID, chan cancelled, func()) {
		id := ids.NewTaskID(ids.JobIDFromUint32(1)).ObjectID(1)
		got := make(chan cancelled, 4)
		release := c.track(ctx, id, "f", actor, func(why error, force, recursive bool) { got <- cancelled{why, force, recursive} })
		return id, got, release
	}
	next := func(t *testing.T, ch chan cancelled) cancelled {
		t.Helper()
		select {
		case x := <-ch:
			return x
		case <-time.After(10 * time.Second):
			t.Fatal("the call was not cancelled")
			return cancelled{}
		}
	}

	ctx := t.Context()
	id, got, release := track(ctx, false)
	if err := c.Cancel(ctx, RefInfo{ID: id, Owner: "me"}, true, true); err != nil {
		t.Fatalf("Cancel: %v", err)
	}
	if x := next(t, got); !errors.Is(x.why, errs.ErrCancelled) || !x.force || !x.recursive {
		t.Fatalf("cancel: got %+v, want ErrCancelled, forced and recursive", x)
	}
	release()
	if err := c.Cancel(ctx, RefInfo{ID: id, Owner: "me"}, false, false); err != nil || len(got) != 0 {
		t.Fatalf("Cancel of a finished call: got %v and %d cancels, want nil and none", err, len(got))
	}
	// A borrowed ref's cancel goes to its owner: tests/cancel
	// (TestCancelThroughABorrowedRef) runs it between real processes.

	aid, _, arelease := track(ctx, true)
	defer arelease()
	if err := c.Cancel(ctx, RefInfo{ID: aid, Owner: "me"}, true, false); !errors.Is(err, errs.ErrInvalidArgument) {
		t.Fatalf("forced Cancel of an actor call: got %v, want ErrInvalidArgument", err)
	}

	sctx, stop := context.WithCancel(ctx)
	_, got, release = track(sctx, false)
	stop()
	if x := next(t, got); !errors.Is(x.why, errs.ErrCancelled) || x.force || x.recursive {
		t.Fatalf("the submission context ended: got %+v, want a plain ErrCancelled", x)
	}
	release()

	sctx, stop = context.WithCancel(ctx)
	_, got, release = track(sctx, false)
	release()
	stop()
	select {
	case x := <-got:
		t.Fatalf("a finished call's context ended: got cancel %+v, want none", x)
	case <-time.After(50 * time.Millisecond): // a span in which nothing must happen
	}
}

// TestWorkerCall: a call a worker received, through its cancels and
// kills.
func TestWorkerCall(t *testing.T) {
	newCall := func() (*call, chan *pb.ExecuteResponse) {
		replies := make(chan *pb.ExecuteResponse, 4)
		return &call{ctx: t.Context(), id: 7, spec: &pb.TaskSpec{FunctionName: "f"}, reply: func(r *pb.ExecuteResponse) { replies <- r }}, replies
	}
	wantReply := func(t *testing.T, replies chan *pb.ExecuteResponse, kind errs.Kind) {
		t.Helper()
		select {
		case r := <-replies:
			if e := r.GetError(); e == nil || errs.Kind(e.GetKind()) != kind || r.GetCallId() != 7 {
				t.Fatalf("reply: got %v, want call 7 failing with %v", r, kind)
			}
		default:
			t.Fatalf("no reply, want one failing with %v", kind)
		}
		if len(replies) != 0 {
			t.Fatalf("%d more replies, want one in all", len(replies))
		}
	}

	t.Run("cancelled while queued: answered at once, never runs", func(t *testing.T) {
		cl, replies := newCall()
		cl.cancel(errTestCancel, false)
		wantReply(t, replies, errs.KindCancelled)
		if _, ok := cl.begin(); ok {
			t.Fatal("a call cancelled while queued began")
		}
	})
	t.Run("cancelled while running: its context ends, its result is dropped", func(t *testing.T) {
		cl, replies := newCall()
		ctx, ok := cl.begin()
		if !ok {
			t.Fatal("begin: not ok")
		}
		child := ids.NewTaskID(ids.JobIDFromUint32(1)).ObjectID(1)
		c := newCore(slog.New(slog.DiscardHandler), "")
		t.Cleanup(c.cancel)
		release := c.track(ctx, child, "child", false, func(error, bool, bool) {})
		defer release()
		children := cl.cancel(errTestCancel, true)
		if !errors.Is(context.Cause(ctx), errs.ErrCancelled) {
			t.Fatalf("the call's context: cause %v, want ErrCancelled", context.Cause(ctx))
		}
		if !slices.Equal(children, []ids.ObjectID{child}) {
			t.Fatalf("children to cancel: got %v, want the one it submitted", children)
		}
		if len(replies) != 0 {
			t.Fatal("a running call was answered before it returned")
		}
		cl.end(valueReply("ignored its ctx"))
		wantReply(t, replies, errs.KindCancelled)
	})
	t.Run("killed while running: answered at once", func(t *testing.T) {
		cl, replies := newCall()
		ctx, _ := cl.begin()
		cl.kill(errs.New(errs.KindActorDied, "a", "killed"))
		wantReply(t, replies, errs.KindActorDied)
		if ctx.Err() == nil {
			t.Fatal("a killed call's context is not done")
		}
		cl.end(valueReply("late"))
		if len(replies) != 0 {
			t.Fatal("a killed call was answered again when its method returned")
		}
	})
}

// TestTrackSharesOneWatchPerContext: the calls in flight on one context
// share its watch, its end cancels every one of them, and the watch goes
// with the last call (no entry is left for a context that never ends).
func TestTrackSharesOneWatchPerContext(t *testing.T) {
	c := newCore(slog.New(slog.DiscardHandler), "")
	defer c.shutdown()
	ctx, cancel := context.WithCancel(context.Background())
	cancelled := make(chan ids.ObjectID, 10)
	var releases []func()
	task := ids.NewTaskID(ids.JobIDFromUint32(1))
	for i := range 5 {
		id := task.ObjectID(uint32(i + 1))
		releases = append(releases, c.track(ctx, id, "f", false, func(error, bool, bool) { cancelled <- id }))
	}
	if n := len(c.calls.watches); n != 1 {
		t.Fatalf("watches of one context with 5 calls: got %d, want 1", n)
	}
	releases[0]() // finished before the context ends: not cancelled
	cancel()
	got := map[ids.ObjectID]bool{}
	for range 4 {
		select {
		case id := <-cancelled:
			got[id] = true
		case <-time.After(10 * time.Second):
			t.Fatalf("cancelled %d calls of 4 after their context ended", len(got))
		}
	}
	if got[task.ObjectID(1)] {
		t.Fatal("a finished call was cancelled")
	}
	for _, r := range releases[1:] {
		r()
	}

	// A context that never ends: its watch goes with its last call.
	live, stop := context.WithCancel(context.Background())
	defer stop()
	for round := range 3 {
		id := task.ObjectID(uint32(100 + round))
		release := c.track(live, id, "f", false, func(error, bool, bool) { t.Error("cancelled a call whose context lives") })
		release()
	}
	c.calls.mu.Lock()
	n, m := len(c.calls.watches), len(c.calls.m)
	c.calls.mu.Unlock()
	if n != 0 || m != 0 {
		t.Fatalf("after every call finished: %d watches and %d calls left, want none", n, m)
	}
}
