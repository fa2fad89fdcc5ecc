package raylet

import (
	"context"
	"errors"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/goray/goray/internal/errs"
	"github.com/goray/goray/internal/ids"
	"github.com/goray/goray/internal/sched"

	"github.com/goray/goray/internal/testwait"
)

func TestBundleManagerPrepareCommitReturn(t *testing.T) {
	leases := newTestLeases(t, sched.Resources{"CPU": 4}, newFakeView())
	kicks := 0
	m := newBundleManager(leases.self, leases, func() { kicks++ })
	pg := ids.NewPlacementGroupID(ids.JobIDFromUint32(1))
	b0 := bundleKey{pg: pg, index: 0}
	own, wild := sched.IndexedName("CPU", pg, 0), sched.WildcardName("CPU", pg)

	// Prepare takes the bundle's resources from the available ones.
	if err := m.prepare(b0, sched.Resources{"CPU": 3}); err != nil {
		t.Fatalf("prepare: %v", err)
	}
	if total, avail := leases.resources(); total["CPU"] != 4 || avail["CPU"] != 1 {
		t.Fatalf("after prepare: total %v available %v, want CPU 4 and 1", total, avail)
	}
	if err := m.prepare(b0, sched.Resources{"CPU": 3}); err != nil {
		t.Errorf("prepare again, same resources: got %v, want nil", err)
	}
	if err := m.prepare(b0, sched.Resources{"CPU": 1}); !errors.Is(err, errs.ErrInvalidArgument) {
		t.Errorf("prepare again, other resources: got %v, want ErrInvalidArgument", err)
	}
	if err := m.prepare(bundleKey{pg: pg, index: 1}, sched.Resources{"CPU": 2}); status.Code(err) != codes.ResourceExhausted {
		t.Errorf("prepare more than is available: got %v, want ResourceExhausted", err)
	}
	if err := m.prepare(bundleKey{pg: pg, index: 1}, sched.Resources{"GPU": 1}); !errors.Is(err, errs.ErrInfeasible) {
		t.Errorf("prepare what the node never has: got %v, want ErrInfeasible", err)
	}
	if err := m.prepare(bundleKey{pg: pg, index: 1}, sched.Resources{own: 1}); !errors.Is(err, errs.ErrInvalidArgument) {
		t.Errorf("prepare a placement group resource: got %v, want ErrInvalidArgument", err)
	}

	// Commit adds the renamed resources, which work in the group ask for.
	if err := m.commit(bundleKey{pg: pg, index: 1}); !errors.Is(err, errs.ErrNotFound) {
		t.Errorf("commit an unprepared bundle: got %v, want ErrNotFound", err)
	}
	if err := m.commit(b0); err != nil {
		t.Fatalf("commit: %v", err)
	}
	if err := m.commit(b0); err != nil {
		t.Errorf("commit twice: got %v, want nil", err)
	}
	total, avail := leases.resources()
	if total[own] != 3 || total[wild] != 3 || avail[own] != 3 || avail[wild] != 3 || total["CPU"] != 4 {
		t.Fatalf("after commit: total %v available %v, want %s and %s 3 each, CPU 4", total, avail, own, wild)
	}
	inBundle := sched.InBundle(sched.Resources{"CPU": 1}, pg, 0)
	if err := leases.acquire(context.Background(), inBundle); err != nil {
		t.Fatalf("acquire in the bundle: %v", err)
	}
	w := &worker{id: ids.NewWorkerID()}
	l := leases.newLease(w, inBundle)
	actorID := ids.NewActorID(pg.Job())
	if err := leases.acquire(context.Background(), sched.InBundle(sched.Resources{"CPU": 1}, pg, -1)); err != nil {
		t.Fatalf("acquire for an actor in the group: %v", err)
	}
	leases.holdActor(actorID, sched.InBundle(sched.Resources{"CPU": 1}, pg, -1), &actorPG{id: pg, bundle: -1})
	// Waiting for more of the bundle than is free: it fails when it goes.
	waiting := acquireAsync(context.Background(), leases, sched.InBundle(sched.Resources{"CPU": 2}, pg, 0))
	testwait.Eventually(t, 10*time.Second, "the request in the bundle queued", func() bool { return leases.queued() == 1 })

	// Return evicts what runs in it and gives the bundle's own resources back.
	workers, actors, found := m.release(b0)
	if !found {
		t.Fatal("release of a committed bundle: found is false")
	}
	if len(workers) != 1 || workers[0] != w {
		t.Errorf("workers evicted: got %v, want the leased one", workers)
	}
	if len(actors) != 1 || actors[0] != actorID {
		t.Errorf("actors evicted: got %v, want %s", actors, actorID)
	}
	if err := <-waiting; !errors.Is(err, errs.ErrInfeasible) {
		t.Errorf("request waiting in the returned bundle: got %v, want ErrInfeasible", err)
	}
	total, avail = leases.resources()
	if _, ok := total[own]; ok || total[wild] != 0 || total["CPU"] != 4 || avail["CPU"] != 4 {
		t.Errorf("after return: total %v available %v, want no group resources, CPU 4 and 4", total, avail)
	}
	// The evicted lease's worker exits later: dropping it frees nothing twice.
	leases.dropLease(l)
	if _, avail := leases.resources(); avail["CPU"] != 4 {
		t.Errorf("CPU after the evicted lease is dropped: got %v, want 4", avail["CPU"])
	}
	if _, _, found := m.release(b0); found {
		t.Error("release twice: found is true, want false")
	}
	if kicks < 3 {
		t.Errorf("heartbeats asked for: got %d, want one per prepare, commit and return", kicks)
	}
}
