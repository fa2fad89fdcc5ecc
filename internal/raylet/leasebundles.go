package raylet

import (
	"maps"
	"slices"

	"github.com/goray/goray/internal/ids"
	"github.com/goray/goray/internal/sched"
)

// returnBundle gives back a returned placement group bundle's resources
// (res, taken by take): when it was committed, its renamed resources leave
// the node and what runs in it is evicted (evictBundleLocked); the waiters
// the node can no longer fit fail. It returns the task workers to kill and
// the actors that left the books.
func (m *leaseManager) returnBundle(key bundleKey, b *bundle, othersRemain bool) ([]*worker, []ids.ActorID) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var workers []*worker
	var actors []ids.ActorID
	if b.committed {
		workers, actors = m.evictBundleLocked(key, b, othersRemain)
	}
	m.releaseLocked(b.res)
	m.failUnfittableWaitersLocked()
	m.totalChangedLocked()
	return workers, actors
}

// evictBundleLocked takes a committed bundle's renamed resources off the
// node. What runs in the bundle is stopped: leases and actors holding the
// bundle's own names or placed in its index, and, when no other committed
// bundle of the group stays on this node, everything of the group; else
// only as many "any bundle" users as the group's remaining share cannot
// hold. Their group resources are forgotten (so they never come back) and
// the actors leave the books at once; the workers and actors to kill are
// returned. othersRemain says another committed bundle of the group stays
// on this node.
func (m *leaseManager) evictBundleLocked(key bundleKey, b *bundle, othersRemain bool) ([]*worker, []ids.ActorID) {
	committed := sched.CommittedResources(b.res, key.pg, int(key.index))
	own := map[string]bool{}
	for k := range b.res {
		own[sched.IndexedName(k, key.pg, int(key.index))] = true
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
	var actors []ids.ActorID
	evictLease := func(l *lease) {
		strip(l.res)
		workers = append(workers, l.worker)
	}
	evictActor := func(id ids.ActorID, a *actorHold) {
		strip(a.res)
		actors = append(actors, id)
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
	for _, l := range m.leases {
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
	for id, a := range m.actors {
		inPG := a.inPG && a.pg == key.pg
		switch {
		case holds(a.res, isOwn) || inPG && a.bundle == key.index:
			evictActor(id, a)
		case inPG || holds(a.res, inGroup):
			if othersRemain {
				spares = append(spares, spareUser{res: a.res, pinned: a.bundle >= 0 || pinned(a.res), evict: func() { evictActor(id, a) }})
			} else {
				evictActor(id, a)
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
		m.total[k] -= v
		m.avail[k] -= v
	}
	for k, v := range stripped {
		m.avail[k] += v
	}
	// Users the group's remaining share cannot hold go too, "any bundle"
	// ones first.
	overKey := func(k string) bool { _, c := committed[k]; return c && m.avail[k] < -sched.Epsilon }
	for {
		i := slices.IndexFunc(spares, func(u spareUser) bool { return holds(u.res, overKey) })
		if i < 0 {
			break
		}
		before := maps.Clone(stripped)
		spares[i].evict()
		spares = slices.Delete(spares, i, i+1)
		for k, v := range stripped {
			m.avail[k] += v - before[k]
		}
	}
	for k := range committed {
		if m.total[k] <= sched.Epsilon {
			delete(m.total, k)
			delete(m.avail, k)
		} else {
			m.avail[k] = min(max(m.avail[k], 0), m.total[k])
		}
	}
	// The actors leave the books now (the worker pool's, when told); the
	// workers when their processes exit.
	for _, id := range actors {
		h := m.actors[id]
		delete(m.actors, id)
		m.releaseLocked(h.res)
	}
	return workers, actors
}
