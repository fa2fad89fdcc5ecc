package raylet

import (
	"context"
	"errors"
	"fmt"
	"sort"

	"github.com/goray/goray/internal/errs"
	pb "github.com/goray/goray/proto/goray/v1"
)

// resources is a set of logical resource amounts.
type resources map[string]float64

// eps absorbs float rounding when fractional amounts are added and taken.
const eps = 1e-9

func (r resources) clone() resources {
	c := make(resources, len(r))
	for k, v := range r {
		c[k] = v
	}
	return c
}

// fits reports whether need fits into have.
func fits(need, have resources) bool {
	for k, v := range need {
		if v > 0 && have[k]+eps < v {
			return false
		}
	}
	return true
}

func (r resources) sub(o resources) {
	for k, v := range o {
		r[k] -= v
	}
}

// add adds o, capped at total so rounding never grows the node. Names the
// node no longer has (a returned placement group bundle) are dropped, so
// they never come back.
func (r resources) add(o, total resources) {
	for k, v := range o {
		if _, ok := total[k]; !ok {
			continue
		}
		r[k] += v
		if r[k] > total[k] {
			r[k] = total[k]
		}
	}
}

func (r resources) proto() *pb.Resources {
	return &pb.Resources{Amounts: r.clone()}
}

func resourcesFromMap(m map[string]float64) resources {
	return resources(m).clone()
}

// parseResources reads and checks a request's resources.
func parseResources(p *pb.Resources) (resources, error) {
	m := p.GetAmounts()
	if len(m) > maxResourceNames {
		return nil, errs.New(errs.KindInvalidArgument, "", "%d resources requested, at most %d allowed", len(m), maxResourceNames)
	}
	out := make(resources, len(m))
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

func sortedKeys(r resources) []string {
	keys := make([]string, 0, len(r))
	for k := range r {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// waiter is one request queued for resources.
type waiter struct {
	need    resources
	ready   chan struct{} // closed when granted or failed
	granted bool
	err     error // set (with ready closed) when need can no longer fit
}

var errStopping = errs.New(errs.KindNodeDied, "", "the raylet is shutting down")

// acquire waits until need fits the node's available resources, then takes
// it. Requests are served in arrival order; one that does not fit yet does
// not hold back a later one that does.
func (r *Raylet) acquire(ctx context.Context, need resources) error {
	r.mu.Lock()
	if r.stopping {
		r.mu.Unlock()
		return errStopping
	}
	if len(need) == 0 {
		r.mu.Unlock()
		return nil
	}
	if !fits(need, r.total) {
		r.mu.Unlock()
		return errs.New(errs.KindInfeasible, "", "node %s can never fit %v (its total is %v)", r.nodeID, map[string]float64(need), map[string]float64(r.total))
	}
	if fits(need, r.avail) {
		r.avail.sub(need)
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
		return errs.New(errs.KindTimeout, "", "timed out waiting for resources %v on node %s", map[string]float64(need), r.nodeID)
	}
	return cause
}

// releaseLocked gives resources back and wakes the waiters that now fit.
func (r *Raylet) releaseLocked(res resources) {
	if len(res) == 0 {
		return
	}
	r.avail.add(res, r.total)
	r.wakeWaitersLocked()
}

// wakeWaitersLocked grants, in arrival order, the waiters whose needs fit
// the available resources now.
func (r *Raylet) wakeWaitersLocked() {
	kept := r.waiters[:0]
	for _, w := range r.waiters {
		if fits(w.need, r.avail) {
			r.avail.sub(w.need)
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
		if !fits(w.need, r.total) {
			w.err = errs.New(errs.KindInfeasible, "", "node %s no longer has %s: the placement group bundle it was asked for was returned (the group was removed)", r.nodeID, missingOn(w.need, r.total))
			close(w.ready)
			continue
		}
		kept = append(kept, w)
	}
	clear(r.waiters[len(kept):])
	r.waiters = kept
}

// missingOn names, in words, the first resource of need that total lacks.
func missingOn(need, total resources) string {
	for _, k := range sortedKeys(need) {
		if need[k] > 0 && total[k]+eps < need[k] {
			return fmt.Sprintf("%g of resource %q (it has %g)", need[k], k, total[k])
		}
	}
	return fmt.Sprint(map[string]float64(need))
}

func (r *Raylet) release(res resources) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.releaseLocked(res)
}

func fmtResources(r resources) string {
	return fmt.Sprint(map[string]float64(r))
}
