package raylet

import (
	"context"
	"errors"

	"github.com/goray/goray/internal/errs"
	"github.com/goray/goray/internal/sched"
	pb "github.com/goray/goray/proto/goray/v1"
)

// parseResources reads and checks a request's resources.
func parseResources(p *pb.Resources) (sched.Resources, error) {
	m := p.GetAmounts()
	if len(m) > maxResourceNames {
		return nil, errs.New(errs.KindInvalidArgument, "", "%d resources requested, at most %d allowed", len(m), maxResourceNames)
	}
	out := make(sched.Resources, len(m))
	for k, v := range m {
		if err := checkResource(k, v); err != nil {
			return nil, errs.New(errs.KindInvalidArgument, "", "%v", err)
		}
		if v > 0 {
			out[k] = v
		}
	}
	return out, nil
}

// waiter is one request queued for resources.
type waiter struct {
	need    sched.Resources
	ready   chan struct{} // closed when granted or failed
	granted bool
	err     error // set (with ready closed) when need can no longer fit
}

var errStopping = errs.New(errs.KindNodeDied, "", "the raylet is shutting down")

// acquire waits until need fits the node's available resources, then takes
// it. Requests are served in arrival order; one that does not fit yet does
// not hold back a later one that does.
func (r *Raylet) acquire(ctx context.Context, need sched.Resources) error {
	r.mu.Lock()
	if r.stopping {
		r.mu.Unlock()
		return errStopping
	}
	if len(need) == 0 {
		r.mu.Unlock()
		return nil
	}
	if !need.FitsIn(r.total) {
		r.mu.Unlock()
		return errs.New(errs.KindInfeasible, "", "node %s can never fit %s: it lacks %s", r.nodeID, need, lacks(need, r.total))
	}
	if need.FitsIn(r.avail) {
		r.avail.Sub(need)
		r.mu.Unlock()
		return nil
	}
	w := &waiter{need: need, ready: make(chan struct{})}
	r.waiters = append(r.waiters, w)
	r.mu.Unlock()

	var cause error
	select {
	case <-w.ready:
		r.mu.Lock()
		err := w.err
		r.mu.Unlock()
		return err
	case <-ctx.Done():
		cause = ctx.Err()
	case <-r.ctx.Done():
		cause = errStopping
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if w.granted {
		r.releaseLocked(need)
	} else if w.err == nil {
		for i, x := range r.waiters {
			if x == w {
				r.waiters = append(r.waiters[:i], r.waiters[i+1:]...)
				break
			}
		}
	}
	if errors.Is(cause, context.DeadlineExceeded) {
		return errs.New(errs.KindTimeout, "", "timed out waiting for resources %s on node %s", need, r.nodeID)
	}
	return cause
}

// releaseLocked gives resources back and wakes the waiters that now fit.
func (r *Raylet) releaseLocked(res sched.Resources) {
	if len(res) == 0 {
		return
	}
	r.avail.AddCapped(res, r.total)
	r.wakeWaitersLocked()
}

// wakeWaitersLocked grants, in arrival order, the waiters whose needs fit
// the available resources now.
func (r *Raylet) wakeWaitersLocked() {
	kept := r.waiters[:0]
	for _, w := range r.waiters {
		if w.need.FitsIn(r.avail) {
			r.avail.Sub(w.need)
			w.granted = true
			close(w.ready)
			continue
		}
		kept = append(kept, w)
	}
	clear(r.waiters[len(kept):])
	r.waiters = kept
}

// failUnfittableWaitersLocked fails the waiters whose needs the node's total
// can no longer fit (a placement group bundle they asked for was returned).
func (r *Raylet) failUnfittableWaitersLocked() {
	kept := r.waiters[:0]
	for _, w := range r.waiters {
		if !w.need.FitsIn(r.total) {
			w.err = errs.New(errs.KindInfeasible, "", "node %s no longer has %s: the placement group bundle it was asked for was returned (the group was removed)", r.nodeID, lacks(w.need, r.total))
			close(w.ready)
			continue
		}
		kept = append(kept, w)
	}
	clear(r.waiters[len(kept):])
	r.waiters = kept
}

// lacks is the first resource of need that have has too little of (need
// does not fit in have).
func lacks(need, have sched.Resources) sched.Shortfall {
	s, _ := need.Lacks(have)
	return s
}

func (r *Raylet) release(res sched.Resources) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.releaseLocked(res)
}
