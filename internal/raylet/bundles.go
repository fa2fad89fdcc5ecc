package raylet

import (
	"context"
	"fmt"
	"maps"
	"sync"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/goray/goray/internal/errs"
	"github.com/goray/goray/internal/ids"
	"github.com/goray/goray/internal/sched"
	pb "github.com/goray/goray/proto/goray/v1"
)

// Placement group bundles, reserved in two phases driven by the head:
// PrepareBundle takes the bundle's resources from the node's available ones
// (or fails at once), CommitBundle adds the bundle's renamed resources
// (sched.CommittedResources) to the node's total and available, and
// ReturnBundle stops what runs in the bundle, removes the renamed resources
// and gives the original ones back. All three are idempotent.

type bundleKey struct {
	pg    ids.PlacementGroupID
	index int32
}

type bundle struct {
	res       sched.Resources // the bundle's own resources, taken at prepare
	committed bool
}

func parseBundle(what string, pgID []byte, index int32) (bundleKey, error) {
	pg, err := ids.ParsePlacementGroupID(pgID)
	if err != nil {
		return bundleKey{}, errs.New(errs.KindInvalidArgument, "", "%s: %v", what, err)
	}
	if index < 0 {
		return bundleKey{}, errs.New(errs.KindInvalidArgument, "", "%s: bundle index %d of placement group %s is negative", what, index, pg)
	}
	return bundleKey{pg: pg, index: index}, nil
}

// bundleResources is what the bundle manager asks of the lease manager
// (*leaseManager).
type bundleResources interface {
	stopped() bool
	// take takes res from the available resources now, or fails at once.
	take(res sched.Resources, what string) error
	// addTotal adds a committed bundle's renamed resources.
	addTotal(res sched.Resources)
	// returnBundle gives a bundle's resources back and evicts its users.
	returnBundle(key bundleKey, b *bundle, othersRemain bool) ([]*worker, []ids.ActorID)
}

// bundleManager is the placement group bundles prepared and committed on
// this node (Ray's PlacementGroupResourceManager). The resources themselves
// are the lease manager's: the bundle manager takes them at prepare, adds
// the renamed ones at commit and gives them back at return.
//
// The head's PrepareBundle, CommitBundle and ReturnBundle calls reach it
// from their handlers' goroutines. mu guards bundles, and is held while
// calling the lease manager (so that one bundle's calls are atomic); lock
// order: bundleManager.mu, then leaseManager.mu. It never calls the worker
// pool.
type bundleManager struct {
	self ids.NodeID
	res  bundleResources
	kick func() // asks for a heartbeat now (the node's resources changed)

	mu      sync.Mutex
	bundles map[bundleKey]*bundle // guarded by mu
}

func newBundleManager(self ids.NodeID, res bundleResources, kick func()) *bundleManager {
	return &bundleManager{self: self, res: res, kick: kick, bundles: make(map[bundleKey]*bundle)}
}

// prepare takes the bundle's resources res from the node's available ones,
// or fails at once; preparing a prepared bundle again with the same
// resources succeeds.
func (m *bundleManager) prepare(key bundleKey, res sched.Resources) error {
	for k := range res {
		if sched.IsBundleResource(k) {
			return errs.New(errs.KindInvalidArgument, "", "PrepareBundle: bundle %d of placement group %s asks for %q, a placement group resource", key.index, key.pg, k)
		}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.res.stopped() {
		return errStopping
	}
	if b := m.bundles[key]; b != nil {
		if maps.Equal(b.res, res) {
			return nil
		}
		return errs.New(errs.KindInvalidArgument, "", "PrepareBundle: bundle %d of placement group %s is already prepared on node %s with %s, not %s",
			key.index, key.pg, m.self, b.res, res)
	}
	if err := m.res.take(res, fmt.Sprintf("prepare bundle %d of placement group %s", key.index, key.pg)); err != nil {
		return err
	}
	m.bundles[key] = &bundle{res: res.Clone()}
	m.kick()
	return nil
}

// commit adds a prepared bundle's renamed resources
// (sched.CommittedResources) to the node; committing twice is a no-op.
func (m *bundleManager) commit(key bundleKey) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	b := m.bundles[key]
	if b == nil {
		return errs.New(errs.KindNotFound, "", "CommitBundle: node %s has not prepared bundle %d of placement group %s (or it was returned)", m.self, key.index, key.pg)
	}
	if b.committed {
		return nil
	}
	b.committed = true
	m.res.addTotal(sched.CommittedResources(b.res, key.pg, int(key.index)))
	m.kick()
	return nil
}

// release returns a bundle: its resources go back and what runs in it is
// evicted; it returns the task workers to kill and the actors to stop. An
// unknown bundle is not an error (found is false).
func (m *bundleManager) release(key bundleKey) (workers []*worker, actors []ids.ActorID, found bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	b := m.bundles[key]
	if b == nil {
		return nil, nil, false
	}
	delete(m.bundles, key)
	othersRemain := false
	for k2, b2 := range m.bundles {
		if k2.pg == key.pg && b2.committed {
			othersRemain = true
			break
		}
	}
	workers, actors = m.res.returnBundle(key, b, othersRemain)
	m.kick()
	return workers, actors, true
}

// prepareBundle implements NodeService.PrepareBundle.
func (r *Raylet) prepareBundle(req *pb.PrepareBundleRequest) error {
	key, err := parseBundle("PrepareBundle", req.GetPlacementGroupId(), req.GetBundleIndex())
	if err != nil {
		return err
	}
	res, err := parseResources(req.GetResources())
	if err != nil {
		return err
	}
	return r.bundles.prepare(key, res)
}

// commitBundle implements NodeService.CommitBundle.
func (r *Raylet) commitBundle(req *pb.CommitBundleRequest) error {
	key, err := parseBundle("CommitBundle", req.GetPlacementGroupId(), req.GetBundleIndex())
	if err != nil {
		return err
	}
	if err := r.bundles.commit(key); err != nil {
		return err
	}
	r.log.Debug("placement group bundle committed", "pg", key.pg, "bundle", key.index)
	return nil
}

// returnBundle implements NodeService.ReturnBundle. Task workers leased with
// the bundle's resources are killed, actors placed in it are killed in their
// worker, the renamed resources leave the node and the bundle's own come
// back. An unknown bundle is not an error.
func (r *Raylet) returnBundle(ctx context.Context, req *pb.ReturnBundleRequest) error {
	key, err := parseBundle("ReturnBundle", req.GetPlacementGroupId(), req.GetBundleIndex())
	if err != nil {
		return err
	}
	workers, actorIDs, found := r.bundles.release(key)
	if !found {
		return nil
	}
	actors := r.pool.evicted(workers, actorIDs)
	for _, w := range workers {
		r.log.Info("killing a task worker of a returned placement group bundle", "worker", w.id, "pid", w.pid, "pg", key.pg, "bundle", key.index)
		w.kill()
	}
	for _, a := range actors {
		r.log.Info("killing an actor of a returned placement group bundle", "actor", a.id, "pg", key.pg, "bundle", key.index)
		if err := r.killActorInWorker(ctx, a); err != nil {
			r.log.Warn("kill actor of a returned placement group bundle", "actor", a.id, "err", err)
		}
	}
	return nil
}

// killActorInWorker tells an actor's worker to stop it (the actor has left
// the books already).
func (r *Raylet) killActorInWorker(ctx context.Context, a *actor) error {
	client, err := r.pool.conn(a.worker)
	if err != nil {
		return nil // its process is gone, and the actor with it
	}
	ctx, cancel := context.WithTimeout(ctx, headCallTimeout)
	defer cancel()
	if _, err := client.DestroyActor(ctx, &pb.DestroyActorRequest{ActorId: a.id[:]}); err != nil {
		switch status.Code(err) {
		case codes.NotFound, codes.Unavailable:
			return nil
		}
		return errs.FromStatus(err)
	}
	return nil
}
