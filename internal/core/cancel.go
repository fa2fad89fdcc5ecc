package core

import (
	"context"
	"fmt"
	"reflect"
	"slices"
	"sync"

	"github.com/goray/goray/internal/errs"
	"github.com/goray/goray/internal/ids"
	pb "github.com/goray/goray/proto/goray/v1"
)

// Cancellation (Ray's CancelTask). The owner of a call — the process that
// submitted it — cancels it where it is: at the submitter while it waits
// (dropped), else on its worker over the call's Execute stream
// (pb.CancelCall), where a queued call is dropped and a running one's
// context is cancelled; its reply then is the cancellation. A forced task
// cancel also kills the task's worker (its lease goes back as failed, and
// the raylet kills the process). The context a call was submitted with
// governs it: when it ends first, the call is cancelled.

// callTable is the calls this process submitted that have not finished, by
// the object their result goes to, so that Cancel finds them. SubmitTask
// and CallActor add to it, a call's completion removes it, Cancel and the
// worker service's recursive cancels look up; mu guards m, watches and
// every ctxWatch's calls. It calls nothing with mu held.
//
// The calls in flight that were submitted with one context share one watch
// of it (one context.AfterFunc per context, not per call), which goes when
// the last of them finishes.
type callTable struct {
	mu      sync.Mutex
	m       map[ids.ObjectID]*callRec     // guarded by mu
	watches map[context.Context]*ctxWatch // guarded by mu
}

// callRec is one call in the callTable.
type callRec struct {
	name   string // the function or method, for errors
	actor  bool
	cancel func(why error, force, recursive bool)
	watch  *ctxWatch // the watch of its submission context, if it can end
}

// ctxWatch is the watch of one submission context: the calls made with it
// that have not finished, cancelled when it ends.
type ctxWatch struct {
	ctx   context.Context
	n     int         // guarded by callTable.mu: its calls in the table
	stop  func() bool // guarded by callTable.mu: unregisters the watch
	ended bool        // guarded by callTable.mu: its context ended
}

func (t *callTable) lookup(id ids.ObjectID) *callRec {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.m[id]
}

func (t *callTable) has(id ids.ObjectID) bool { return t.lookup(id) != nil }

// track records a call this process submits, whose result goes to object
// id, until the returned release runs (once its entry is complete). A call
// submitted with the context of a call this worker runs (or one derived
// from it) becomes that call's child, for recursive cancels. When ctx can
// end, its end cancels the call.
func (c *Core) track(ctx context.Context, id ids.ObjectID, name string, actor bool, cancel func(why error, force, recursive bool)) (release func()) {
	rec := &callRec{name: name, actor: actor, cancel: cancel}
	var newWatch *ctxWatch
	watchable := ctx.Done() != nil
	if watchable && !reflect.TypeOf(ctx).Comparable() {
		watchable = false // cannot key a map: watched on its own below
	}
	c.calls.mu.Lock()
	if c.calls.m == nil {
		c.calls.m = map[ids.ObjectID]*callRec{}
		c.calls.watches = map[context.Context]*ctxWatch{}
	}
	c.calls.m[id] = rec
	if watchable {
		w := c.calls.watches[ctx]
		if w == nil {
			w = &ctxWatch{ctx: ctx}
			c.calls.watches[ctx] = w
			newWatch = w
		}
		w.n++
		rec.watch = w
	}
	c.calls.mu.Unlock()
	if parent, ok := ctx.Value(runningKey{}).(*call); ok {
		parent.addChild(c, id)
	}
	var stop func() bool
	switch {
	case newWatch != nil:
		st := context.AfterFunc(ctx, func() { c.contextEnded(ctx, newWatch) })
		c.calls.mu.Lock()
		if newWatch.n == 0 && !newWatch.ended {
			// Every call of it finished already.
			if c.calls.watches[ctx] == newWatch {
				delete(c.calls.watches, ctx)
			}
			c.calls.mu.Unlock()
			st()
		} else {
			newWatch.stop = st
			c.calls.mu.Unlock()
		}
	case ctx.Done() != nil && !watchable:
		stop = context.AfterFunc(ctx, func() {
			c.cancelOwned(id, errs.New(errs.KindCancelled, name, "the caller's context ended before the call finished: %v", context.Cause(ctx)), false, false)
		})
	}
	return func() {
		c.calls.mu.Lock()
		if c.calls.m[id] != rec {
			c.calls.mu.Unlock()
			return // released already
		}
		delete(c.calls.m, id)
		if w := rec.watch; w != nil {
			w.n--
			if w.n == 0 && !w.ended && w.stop != nil {
				// The last call of its context: stop watching it.
				if c.calls.watches[w.ctx] == w {
					delete(c.calls.watches, w.ctx)
				}
				stop, w.stop = w.stop, nil
			}
		}
		c.calls.mu.Unlock()
		if stop != nil {
			stop()
		}
	}
}

// contextEnded cancels the calls still running that were submitted with
// ctx, which has ended.
func (c *Core) contextEnded(ctx context.Context, w *ctxWatch) {
	c.calls.mu.Lock()
	if c.calls.watches[ctx] == w {
		delete(c.calls.watches, ctx)
	}
	w.ended = true
	calls := map[ids.ObjectID]*callRec{}
	for id, rec := range c.calls.m {
		if rec.watch == w {
			calls[id] = rec
		}
	}
	c.calls.mu.Unlock()
	for id, rec := range calls {
		c.cancelOwned(id, errs.New(errs.KindCancelled, rec.name, "the caller's context ended before the call finished: %v", context.Cause(ctx)), false, false)
	}
}

// cancelOwned cancels the call this process submitted whose result is
// object id, if it has not finished. force is dropped for actor calls.
func (c *Core) cancelOwned(id ids.ObjectID, why error, force, recursive bool) {
	rec := c.calls.lookup(id)
	if rec == nil {
		return
	}
	rec.cancel(why, force && !rec.actor, recursive)
}

// Cancel cancels the task or actor call whose result r names (task.Cancel).
// A call still waiting at this process is dropped; a running one's context
// is cancelled on its worker; force (tasks only) kills the task's worker;
// recursive also cancels the tasks and actor calls it submitted, and theirs.
// Its ref then fails with ErrCancelled. A finished call, or a ref that names
// no call (a Put), is left as it is: nil.
func (c *Core) Cancel(ctx context.Context, r RefInfo, force, recursive bool) error {
	if err := ctx.Err(); err != nil {
		return errs.Context(err, "cancel "+r.ID.String())
	}
	if r.Owner != c.addr {
		// A borrowed ref: its owner submitted the call and cancels it.
		cc, err := c.conns.get(r.Owner)
		if err == nil {
			_, err = pb.NewWorkerServiceClient(cc).CancelCall(ctx, &pb.CancelCallRequest{ObjectId: r.ID[:], Force: force, Recursive: recursive})
		}
		if err != nil {
			return fmt.Errorf("cancel %s at its owner %s: %w", r.ID, r.Owner, errs.FromStatus(err))
		}
		return nil
	}
	rec := c.calls.lookup(r.ID)
	if rec == nil {
		return nil
	}
	if force && rec.actor {
		return errs.New(errs.KindInvalidArgument, rec.name, "an actor call cannot be force-cancelled (that would kill the worker hosting the actor and its neighbours): cancel it without WithForce, or stop the actor with actor.Kill")
	}
	rec.cancel(errs.New(errs.KindCancelled, rec.name, "cancelled by task.Cancel"), force, recursive)
	return nil
}

// runningKey is the context key under which a running call's context holds
// its *call, so that the calls it submits become its children.
type runningKey struct{}

// callState is where a call a worker received is.
type callState int

const (
	callQueued  callState = iota // in a mailbox
	callRunning                  // its function or method runs
	callReplied                  // answered; a killed method may still run
)

// begin starts cl: its context is done when the call is cancelled, its
// actor killed, or its stream ends. ok is false when it was cancelled or
// killed while queued (and answered then).
func (cl *call) begin() (ctx context.Context, ok bool) {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	if cl.state != callQueued {
		return nil, false
	}
	ctx, cl.stop = context.WithCancelCause(cl.ctx)
	cl.state = callRunning
	return context.WithValue(ctx, runningKey{}, cl), true
}

// end answers cl with resp, or with its cancellation when it was cancelled
// while it ran; nothing when it was answered already (its actor was
// killed).
func (cl *call) end(resp *pb.ExecuteResponse) {
	cl.mu.Lock()
	if cl.state == callReplied {
		cl.mu.Unlock()
		return
	}
	if cl.why != nil {
		resp = errorReply(cl.id, cl.why)
	}
	cl.state = callReplied
	stop := cl.stop
	cl.children = nil
	cl.mu.Unlock()
	if stop != nil {
		stop(context.Canceled)
	}
	cl.answer(resp)
}

func (cl *call) answer(resp *pb.ExecuteResponse) {
	if cl.forget != nil {
		cl.forget()
	}
	cl.reply(resp)
}

// cancel is its caller's cancel of cl: a queued call is answered with why
// at once, a running one's context is cancelled and its reply will be why.
// With recursive it returns the calls cl submitted, for the caller to
// cancel.
func (cl *call) cancel(why error, recursive bool) []ids.ObjectID {
	cl.mu.Lock()
	var children []ids.ObjectID
	if recursive {
		children, cl.children = cl.children, nil
	}
	switch cl.state {
	case callQueued:
		cl.state = callReplied
		cl.mu.Unlock()
		cl.answer(errorReply(cl.id, why))
	case callRunning:
		if cl.why == nil {
			cl.why = why
		}
		stop := cl.stop
		cl.mu.Unlock()
		stop(why)
	default:
		cl.mu.Unlock()
	}
	return children
}

// kill ends cl because its actor was killed: it is answered with why at
// once, queued or running; a running method's context is cancelled, and
// what it returns later is dropped.
func (cl *call) kill(why error) {
	cl.mu.Lock()
	if cl.state == callReplied {
		cl.mu.Unlock()
		return
	}
	cl.state = callReplied
	stop := cl.stop
	cl.children = nil
	cl.mu.Unlock()
	if stop != nil {
		stop(why)
	}
	cl.answer(errorReply(cl.id, why))
}

// addChild records that cl submitted the call whose result is id. Calls
// that finished are pruned as the list grows, so a long-running call that
// submits many keeps only those still running.
func (cl *call) addChild(c *Core, id ids.ObjectID) {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	if cl.state != callRunning {
		return
	}
	if len(cl.children) >= 2*cl.pruned+16 {
		cl.children = slices.DeleteFunc(cl.children, func(id ids.ObjectID) bool { return !c.calls.has(id) })
		cl.pruned = len(cl.children)
	}
	cl.children = append(cl.children, id)
}

// cancelCall handles a pb.CancelCall for cl from its caller: cl is
// cancelled, and with recursive so is every call it submitted that has not
// finished (tasks forced when force is set), before cancelCall returns.
func (c *Core) cancelCall(cl *call, recursive, force bool) {
	why := c.stamp(errs.New(errs.KindCancelled, cl.spec.GetFunctionName()+cl.spec.GetMethodName(), "the call was cancelled by its caller"))
	children := cl.cancel(why, recursive)
	for _, id := range children {
		c.cancelOwned(id, errs.New(errs.KindCancelled, "", "the call that submitted it (%s) was cancelled recursively", cl.spec.GetFunctionName()+cl.spec.GetMethodName()), force, true)
	}
}
