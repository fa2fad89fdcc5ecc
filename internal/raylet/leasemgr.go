package raylet

import (
	"context"
	"errors"
	"math/rand/v2"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/goray/goray/internal/errs"
	"github.com/goray/goray/internal/ids"
	"github.com/goray/goray/internal/sched"
	pb "github.com/goray/goray/proto/goray/v1"
)

// nodeView is what the lease manager asks of the cluster view
// (*clusterView; a fake in tests).
type nodeView interface {
	// snapshot is the last node table and a channel closed when it changes.
	snapshot() ([]*pb.NodeInfo, <-chan struct{})
	// load is node id's SPREAD load at now.
	load(id ids.NodeID, now time.Time) int
}

// leaseManager owns this node's logical resources (Ray's LocalLeaseManager
// and ClusterLeaseManager in one): the total and available amounts, the
// requests waiting for them in arrival order, what holds them (worker
// leases and actors), the lease requests waiting as infeasible, and the
// decision where a lease request goes (here, spilled back to another node
// of the cluster view, failed, or infeasible).
//
// NodeService handlers (RequestWorkerLease, ReturnWorkerLease, CreateActor,
// KillActor, the bundle calls), the heartbeat loop and worker exits call it
// from their goroutines. mu guards the fields marked so. Lock order: the
// bundle manager's and the worker pool's locks may be held while calling
// it; it calls nothing but the cluster view (innermost) with mu held.
type leaseManager struct {
	self ids.NodeID
	view nodeView
	done <-chan struct{} // closed when the raylet stops

	mu         sync.Mutex
	total      sched.Resources             // guarded by mu
	avail      sched.Resources             // guarded by mu
	waiters    []*waiter                   // guarded by mu: in arrival order
	leases     map[ids.LeaseID]*lease      // guarded by mu
	actors     map[ids.ActorID]*actorHold  // guarded by mu: resources actors hold
	infeasible map[*infeasibleReq]struct{} // guarded by mu
	totalCh    chan struct{}               // guarded by mu: closed and replaced when total changes
	rng        *rand.Rand                  // guarded by mu: PickHybrid's random pick among the best
	spreadSeq  uint64                      // guarded by mu: PickSpread's rotation
	spreadLoad map[ids.NodeID]int          // guarded by mu: SPREAD decisions per alive node (SPREAD's Load)
}

func newLeaseManager(self ids.NodeID, total sched.Resources, view nodeView, done <-chan struct{}) *leaseManager {
	return &leaseManager{
		self: self, view: view, done: done,
		total: total.Clone(), avail: total.Clone(),
		leases:     make(map[ids.LeaseID]*lease),
		actors:     make(map[ids.ActorID]*actorHold),
		infeasible: make(map[*infeasibleReq]struct{}),
		totalCh:    make(chan struct{}),
		rng:        rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64())),
		spreadLoad: make(map[ids.NodeID]int),
	}
}

// lease is a task worker leased to a submitter; it holds res.
type lease struct {
	id     ids.LeaseID
	worker *worker // the pool's; the lease manager reads only its id
	res    sched.Resources
}

// actorHold is what an actor placed here holds: its resources and the
// placement group it was placed in (spec.scheduling_strategy), if any, with
// the bundle index (-1: any bundle).
type actorHold struct {
	res    sched.Resources
	inPG   bool
	pg     ids.PlacementGroupID
	bundle int32
}

// actorPG is the placement group an actor is placed in.
type actorPG struct {
	id     ids.PlacementGroupID
	bundle int32
}

// waiter is one request queued for resources.
type waiter struct {
	need    sched.Resources
	ready   chan struct{} // closed when granted or failed
	granted bool          // guarded by leaseManager.mu
	err     error         // guarded by leaseManager.mu: set (with ready closed) when need can no longer fit
}

func (m *leaseManager) stopped() bool {
	select {
	case <-m.done:
		return true
	default:
		return false
	}
}

// resources are copies of the total and available resources.
func (m *leaseManager) resources() (total, avail sched.Resources) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.total.Clone(), m.avail.Clone()
}

// fitsTotal says whether the node's total fits res, and if not, what of
// res it has too little of.
func (m *leaseManager) fitsTotal(res sched.Resources) (bool, sched.Shortfall) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if res.FitsIn(m.total) {
		return true, sched.Shortfall{}
	}
	return false, lacks(res, m.total)
}

// acquire waits until need fits the node's available resources, then takes
// it. Requests are served in arrival order; one that does not fit yet does
// not hold back a later one that does.
func (m *leaseManager) acquire(ctx context.Context, need sched.Resources) error {
	if m.stopped() {
		return errStopping
	}
	m.mu.Lock()
	if len(need) == 0 {
		m.mu.Unlock()
		return nil
	}
	if !need.FitsIn(m.total) {
		m.mu.Unlock()
		return errs.New(errs.KindInfeasible, "", "node %s can never fit %s: it lacks %s", m.self, need, lacks(need, m.total))
	}
	if need.FitsIn(m.avail) {
		m.avail.Sub(need)
		m.mu.Unlock()
		return nil
	}
	w := &waiter{need: need, ready: make(chan struct{})}
	m.waiters = append(m.waiters, w)
	m.mu.Unlock()

	var cause error
	select {
	case <-w.ready:
		m.mu.Lock()
		err := w.err
		m.mu.Unlock()
		return err
	case <-ctx.Done():
		cause = ctx.Err()
	case <-m.done:
		cause = errStopping
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if w.granted {
		m.releaseLocked(need)
	} else if w.err == nil {
		for i, x := range m.waiters {
			if x == w {
				m.waiters = append(m.waiters[:i], m.waiters[i+1:]...)
				break
			}
		}
	}
	if errors.Is(cause, context.DeadlineExceeded) {
		return errs.New(errs.KindTimeout, "", "timed out waiting for resources %s on node %s", need, m.self)
	}
	return cause
}

// release gives back resources acquire took and no lease or actor holds.
func (m *leaseManager) release(res sched.Resources) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.releaseLocked(res)
}

// releaseLocked gives resources back and wakes the waiters that now fit.
func (m *leaseManager) releaseLocked(res sched.Resources) {
	if len(res) == 0 {
		return
	}
	m.avail.AddCapped(res, m.total)
	m.wakeWaitersLocked()
}

// wakeWaitersLocked grants, in arrival order, the waiters whose needs fit
// the available resources now.
func (m *leaseManager) wakeWaitersLocked() {
	kept := m.waiters[:0]
	for _, w := range m.waiters {
		if w.need.FitsIn(m.avail) {
			m.avail.Sub(w.need)
			w.granted = true
			close(w.ready)
			continue
		}
		kept = append(kept, w)
	}
	clear(m.waiters[len(kept):])
	m.waiters = kept
}

// failUnfittableWaitersLocked fails the waiters whose needs the node's total
// can no longer fit (a placement group bundle they asked for was returned).
func (m *leaseManager) failUnfittableWaitersLocked() {
	kept := m.waiters[:0]
	for _, w := range m.waiters {
		if !w.need.FitsIn(m.total) {
			w.err = errs.New(errs.KindInfeasible, "", "node %s no longer has %s: the placement group bundle it was asked for was returned (the group was removed)", m.self, lacks(w.need, m.total))
			close(w.ready)
			continue
		}
		kept = append(kept, w)
	}
	clear(m.waiters[len(kept):])
	m.waiters = kept
}

func (m *leaseManager) totalChangedLocked() {
	close(m.totalCh)
	m.totalCh = make(chan struct{})
}

// newLease records a lease of w holding res, which acquire took.
func (m *leaseManager) newLease(w *worker, res sched.Resources) *lease {
	l := &lease{id: ids.NewLeaseID(), worker: w, res: res.Clone()}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.leases[l.id] = l
	return l
}

// lookupLease is lease id, or nil.
func (m *leaseManager) lookupLease(id ids.LeaseID) *lease {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.leases[id]
}

// dropLease forgets l and releases what it holds; a lease already dropped
// is ignored.
func (m *leaseManager) dropLease(l *lease) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.leases[l.id] != l {
		return false
	}
	delete(m.leases, l.id)
	m.releaseLocked(l.res)
	return true
}

// holdActor records that actor id holds res (which acquire took), placed in
// placement group pg (nil: none).
func (m *leaseManager) holdActor(id ids.ActorID, res sched.Resources, pg *actorPG) {
	h := &actorHold{res: res.Clone()}
	if pg != nil {
		h.inPG, h.pg, h.bundle = true, pg.id, pg.bundle
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if old := m.actors[id]; old != nil {
		m.releaseLocked(old.res)
	}
	m.actors[id] = h
}

// releaseActor releases what actor id holds; an unknown actor is ignored.
func (m *leaseManager) releaseActor(id ids.ActorID) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if h := m.actors[id]; h != nil {
		delete(m.actors, id)
		m.releaseLocked(h.res)
	}
}

// take takes res from the available resources now, for a placement group
// bundle being prepared, or fails at once: KindInfeasible when the node can
// never fit res, ResourceExhausted when it cannot now.
func (m *leaseManager) take(res sched.Resources, what string) error {
	if m.stopped() {
		return errStopping
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if !res.FitsIn(m.total) {
		return errs.New(errs.KindInfeasible, "", "%s: node %s can never fit %s: it lacks %s", what, m.self, res, lacks(res, m.total))
	}
	if !res.FitsIn(m.avail) {
		return status.Errorf(codes.ResourceExhausted, "%s: node %s has not got %s available now: it lacks %s", what, m.self, res, lacks(res, m.avail))
	}
	m.avail.Sub(res)
	return nil
}

// addTotal adds res (a committed bundle's renamed resources) to the total
// and available resources.
func (m *leaseManager) addTotal(res sched.Resources) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for k, v := range res {
		m.total[k] += v
		m.avail[k] += v
	}
	m.wakeWaitersLocked()
	m.totalChangedLocked()
}

// giveBack returns a returned bundle's own resources (taken by take) and
// fails the waiters the node can no longer fit.
func (m *leaseManager) giveBack(res sched.Resources) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.releaseLocked(res)
	m.failUnfittableWaitersLocked()
	m.totalChangedLocked()
}

// maxInfeasibleReported bounds the infeasible requests one heartbeat lists.
const maxInfeasibleReported = 1000

// heartbeat fills a heartbeat's resources and infeasible requests.
func (m *leaseManager) heartbeat(req *pb.HeartbeatRequest) {
	m.mu.Lock()
	defer m.mu.Unlock()
	req.Available = &pb.Resources{Amounts: m.avail.Clone()}
	req.Total = &pb.Resources{Amounts: m.total.Clone()}
	for q := range m.infeasible {
		if len(req.Infeasible) == maxInfeasibleReported {
			break
		}
		req.Infeasible = append(req.Infeasible, q.proto())
	}
}

// waitInfeasible records q as waiting infeasible (true when it is new) or
// updates its reason.
func (m *leaseManager) waitInfeasible(q *infeasibleReq, reason string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	q.reason = reason
	if _, ok := m.infeasible[q]; ok {
		return false
	}
	m.infeasible[q] = struct{}{}
	return true
}

// doneInfeasible forgets q.
func (m *leaseManager) doneInfeasible(q *infeasibleReq) {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.infeasible, q)
}
