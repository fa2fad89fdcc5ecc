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

// add adds o, capped at total so rounding never grows the node.
func (r resources) add(o, total resources) {
	for k, v := range o {
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

// infeasible explains why need fits no node: it names the first resource no
// node's total has enough of.
func infeasible(need resources, totals []resources) error {
	for _, k := range sortedKeys(need) {
		best := 0.0
		for _, t := range totals {
			best = max(best, t[k])
		}
		if best+eps < need[k] {
			if best == 0 {
				return errs.New(errs.KindInfeasible, "", "no node in the cluster has resource %q (requested %g): add a node with --resources '{%q: %g}'", k, need[k], k, need[k])
			}
			return errs.New(errs.KindInfeasible, "", "no node in the cluster has %g of resource %q (requested %g, largest node has %g)", need[k], k, need[k], best)
		}
	}
	return errs.New(errs.KindInfeasible, "", "no single node in the cluster can fit %v", map[string]float64(need))
}

// waiter is one request queued for resources.
type waiter struct {
	need    resources
	ready   chan struct{} // closed when granted
	granted bool
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
		return nil
	case <-ctx.Done():
		cause = ctx.Err()
	case <-r.ctx.Done():
		cause = errStopping
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if w.granted {
		r.releaseLocked(need)
	} else {
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

func (r *Raylet) release(res resources) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.releaseLocked(res)
}

func fmtResources(r resources) string {
	return fmt.Sprint(map[string]float64(r))
}
