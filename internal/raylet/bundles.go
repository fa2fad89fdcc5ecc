package raylet

import (
	"context"
	"maps"
	"slices"

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
	for k := range res {
		if sched.IsBundleResource(k) {
			return errs.New(errs.KindInvalidArgument, "", "PrepareBundle: bundle %d of placement group %s asks for %q, a placement group resource", key.index, key.pg, k)
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.stopping {
		return errStopping
	}
	if b := r.bundles[key]; b != nil {
		if maps.Equal(b.res, res) {
			return nil
		}
		return errs.New(errs.KindInvalidArgument, "", "PrepareBundle: bundle %d of placement group %s is already prepared on node %s with %s, not %s",
			key.index, key.pg, r.nodeID, b.res, res)
	}
	if !res.FitsIn(r.total) {
		return errs.New(errs.KindInfeasible, "", "prepare bundle %d of placement group %s: node %s can never fit %s: it lacks %s",
			key.index, key.pg, r.nodeID, res, lacks(res, r.total))
	}
	if !res.FitsIn(r.avail) {
		return status.Errorf(codes.ResourceExhausted, "prepare bundle %d of placement group %s: node %s has not got %s available now: it lacks %s",
			key.index, key.pg, r.nodeID, res, lacks(res, r.avail))
	}
	r.avail.Sub(res)
	r.bundles[key] = &bundle{res: res}
	r.kickHeartbeat()
	return nil
}

// commitBundle implements NodeService.CommitBundle.
func (r *Raylet) commitBundle(req *pb.CommitBundleRequest) error {
	key, err := parseBundle("CommitBundle", req.GetPlacementGroupId(), req.GetBundleIndex())
	if err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	b := r.bundles[key]
	if b == nil {
		return errs.New(errs.KindNotFound, "", "CommitBundle: node %s has not prepared bundle %d of placement group %s (or it was returned)", r.nodeID, key.index, key.pg)
	}
	if b.committed {
		return nil
	}
	b.committed = true
	for k, v := range sched.CommittedResources(b.res, key.pg, int(key.index)) {
		r.total[k] += v
		r.avail[k] += v
	}
	r.wakeWaitersLocked()
	r.viewChangedLocked()
	r.kickHeartbeat()
	r.log.Debug("placement group bundle committed", "pg", key.pg, "bundle", key.index, "resources", b.res)
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
	r.mu.Lock()
	b := r.bundles[key]
	if b == nil {
		r.mu.Unlock()
		return nil
	}
	delete(r.bundles, key)
	var workers []*worker
	var actors []*actor
	if b.committed {
		workers, actors = r.evictBundleLocked(key, b)
	}
	r.releaseLocked(b.res)
	r.failUnfittableWaitersLocked()
	r.viewChangedLocked()
	r.kickHeartbeat()
	r.mu.Unlock()

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

// evictBundleLocked takes a committed bundle's renamed resources off the
// node. What runs in the bundle is stopped: leases and actors holding the
// bundle's own names or placed in its index, and, when no other committed
// bundle of the group stays on this node, everything of the group; else
// only as many "any bundle" users as the group's remaining share cannot
// hold. Their group resources are forgotten (so they never come back) and
// the actors leave the books at once; the workers and actors to kill are
// returned.
func (r *Raylet) evictBundleLocked(key bundleKey, b *bundle) ([]*worker, []*actor) {
	committed := sched.CommittedResources(b.res, key.pg, int(key.index))
	own := map[string]bool{}
	for k := range b.res {
		own[sched.IndexedName(k, key.pg, int(key.index))] = true
	}
	othersRemain := false
	for k2, b2 := range r.bundles {
		if k2.pg == key.pg && b2.committed {
			othersRemain = true
			break
		}
	}
	inGroup := func(name string) bool {
		b, ok := sched.ParseBundleResource(name)
		return ok && b.Group == key.pg
	}
	isOwn := func(name string) bool { return own[name] }
	holds := func(res sched.Resources, set func(string) bool) bool {
		for k, v := range res {
			if v > 0 && set(k) {
				return true
			}
		}
		return false
	}

	stripped := sched.Resources{}
	strip := func(res sched.Resources) {
		for k, v := range res {
			if inGroup(k) {
				stripped[k] += v
				delete(res, k)
			}
		}
	}
	var workers []*worker
	var actors []*actor
	evictLease := func(l *lease) {
		strip(l.res)
		l.worker.onPurpose = true
		workers = append(workers, l.worker)
	}
	evictActor := func(a *actor) {
		strip(a.res)
		actors = append(actors, a)
	}

	// Users that may stay while the group keeps a share here; those pinned
	// to another bundle of the group are the last to go.
	type spareUser struct {
		res    sched.Resources
		pinned bool
		evict  func()
	}
	pinned := func(res sched.Resources) bool {
		return holds(res, func(k string) bool {
			b, ok := sched.ParseBundleResource(k)
			return ok && b.Group == key.pg && !b.Wildcard()
		})
	}
	var spares []spareUser
	for _, l := range r.leases {
		switch {
		case holds(l.res, isOwn):
			evictLease(l)
		case holds(l.res, inGroup):
			if othersRemain {
				spares = append(spares, spareUser{res: l.res, pinned: pinned(l.res), evict: func() { evictLease(l) }})
			} else {
				evictLease(l)
			}
		}
	}
	for _, a := range r.actors {
		inPG := a.inPG && a.pg == key.pg
		switch {
		case holds(a.res, isOwn) || inPG && a.bundle == key.index:
			evictActor(a)
		case inPG || holds(a.res, inGroup):
			if othersRemain {
				spares = append(spares, spareUser{res: a.res, pinned: a.bundle >= 0 || pinned(a.res), evict: func() { evictActor(a) }})
			} else {
				evictActor(a)
			}
		}
	}
	slices.SortStableFunc(spares, func(x, y spareUser) int {
		switch {
		case x.pinned == y.pinned:
			return 0
		case y.pinned:
			return -1
		}
		return 1
	})

	// The node's group resources after this bundle leaves.
	for k, v := range committed {
		r.total[k] -= v
		r.avail[k] -= v
	}
	for k, v := range stripped {
		r.avail[k] += v
	}
	// Users the group's remaining share cannot hold go too, "any bundle"
	// ones first.
	overKey := func(k string) bool { _, c := committed[k]; return c && r.avail[k] < -sched.Epsilon }
	for {
		i := slices.IndexFunc(spares, func(u spareUser) bool { return holds(u.res, overKey) })
		if i < 0 {
			break
		}
		before := maps.Clone(stripped)
		spares[i].evict()
		spares = slices.Delete(spares, i, i+1)
		for k, v := range stripped {
			r.avail[k] += v - before[k]
		}
	}
	for k := range committed {
		if r.total[k] <= sched.Epsilon {
			delete(r.total, k)
			delete(r.avail, k)
		} else {
			r.avail[k] = min(max(r.avail[k], 0), r.total[k])
		}
	}
	// The actors leave the books now; the workers when their processes exit.
	for _, a := range actors {
		r.removeActorLocked(a)
	}
	return workers, actors
}

// killActorInWorker tells an actor's worker to stop it (the actor has left
// the books already).
func (r *Raylet) killActorInWorker(ctx context.Context, a *actor) error {
	client, err := r.workerConn(a.worker)
	if err != nil {
		return nil // its process is gone, and the actor with it
	}
	ctx, cancel := context.WithTimeout(ctx, headCallTimeout)
	defer cancel()
	if _, err := client.KillActor(ctx, &pb.WorkerServiceKillActorRequest{ActorId: a.id[:]}); err != nil {
		switch status.Code(err) {
		case codes.NotFound, codes.Unavailable:
			return nil
		}
		return errs.FromStatus(err)
	}
	return nil
}
