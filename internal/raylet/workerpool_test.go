package raylet

import (
	"context"
	"errors"
	"sync"
	"testing"

	"github.com/goray/goray/internal/errs"
	"github.com/goray/goray/internal/ids"
	"github.com/goray/goray/internal/sched"
)

// fakeLauncher "starts" a worker by registering it with the pool at once.
type fakeLauncher struct {
	pool *workerPool

	mu       sync.Mutex
	launched []*worker
	fail     error // returned by launch when set
}

func (f *fakeLauncher) launch(_ context.Context, w *worker) error {
	f.mu.Lock()
	fail := f.fail
	f.launched = append(f.launched, w)
	f.mu.Unlock()
	if fail != nil {
		return fail
	}
	if err := f.pool.startProcess(w, func() error { return nil }); err != nil {
		return err
	}
	_, err := f.pool.register(w.id, "127.0.0.1:1")
	return err
}

func (f *fakeLauncher) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.launched)
}

func newTestPool(t *testing.T, maxPerJob int, cpus float64) (*workerPool, *leaseManager, *fakeLauncher) {
	t.Helper()
	leases := newTestLeases(t, sched.Resources{"CPU": cpus}, newFakeView())
	l := &fakeLauncher{}
	done := make(chan struct{})
	t.Cleanup(func() { close(done) })
	p := newWorkerPool(leases.self, "", maxPerJob, leases, l, done)
	l.pool = p
	return p, leases, l
}

// lease acquires res and leases a worker of j with it.
func leaseFromPool(t *testing.T, p *workerPool, leases *leaseManager, j *job, res sched.Resources) *lease {
	t.Helper()
	if err := leases.acquire(context.Background(), res); err != nil {
		t.Fatalf("acquire %v: %v", res, err)
	}
	l, err := p.leaseWorker(context.Background(), j, res)
	if err != nil {
		t.Fatalf("leaseWorker: %v", err)
	}
	return l
}

// giveBackLease returns l as ReturnWorkerLease does.
func giveBackLease(p *workerPool, leases *leaseManager, l *lease, failed bool) bool {
	leases.dropLease(l)
	return p.returnLease(l, failed)
}

func TestWorkerPoolReusesIdleWorkers(t *testing.T) {
	p, leases, launcher := newTestPool(t, 2, 4)
	j, _ := p.job(ids.JobIDFromUint32(1))
	one := sched.Resources{"CPU": 1}

	first := leaseFromPool(t, p, leases, j, one)
	if launcher.count() != 1 {
		t.Fatalf("workers started for the first lease: got %d, want 1", launcher.count())
	}
	giveBackLease(p, leases, first, false)
	again := leaseFromPool(t, p, leases, j, one)
	if again.worker != first.worker || launcher.count() != 1 {
		t.Fatalf("lease after a return: got worker %s (%d started), want the idle %s reused (1 started)", again.worker.id, launcher.count(), first.worker.id)
	}
	// The worker is busy: a second lease starts a second worker.
	second := leaseFromPool(t, p, leases, j, one)
	if second.worker == again.worker || launcher.count() != 2 {
		t.Fatalf("second concurrent lease: got worker %s (%d started), want a new one (2 started)", second.worker.id, launcher.count())
	}

	// At the job's limit a third lease waits until one comes back.
	if err := leases.acquire(context.Background(), one); err != nil {
		t.Fatal(err)
	}
	got := make(chan *lease, 1)
	go func() {
		l, err := p.leaseWorker(context.Background(), j, one)
		if err != nil {
			t.Errorf("third lease: %v", err)
		}
		got <- l
	}()
	giveBackLease(p, leases, second, false)
	if third := <-got; third == nil || third.worker != second.worker {
		t.Fatalf("third lease: got %v, want the returned worker %s", third, second.worker.id)
	}
	if launcher.count() != 2 {
		t.Errorf("workers started at the limit: got %d, want 2", launcher.count())
	}
}

func TestWorkerPoolDeathFreesLeaseAndFailedWorkerIsNotReused(t *testing.T) {
	p, leases, launcher := newTestPool(t, 4, 2)
	j, _ := p.job(ids.JobIDFromUint32(1))
	one := sched.Resources{"CPU": 1}

	l := leaseFromPool(t, p, leases, j, one)
	e := p.exited(l.worker, "exit status 1", nil)
	if !e.report {
		t.Error("a worker that died on its own: report is false, want true")
	}
	if _, avail := leases.resources(); avail["CPU"] != 2 {
		t.Errorf("CPU after the leased worker died: got %v, want 2", avail["CPU"])
	}
	if p.lookupWorker(l.worker.id) != nil {
		t.Error("dead worker still in the pool")
	}

	// A lease holder that saw its worker fail returns it failed: it is not
	// leased again, and a new worker starts.
	l = leaseFromPool(t, p, leases, j, one)
	if !giveBackLease(p, leases, l, true) {
		t.Fatal("return with worker_failed: got no kill, want the worker killed")
	}
	next := leaseFromPool(t, p, leases, j, one)
	if next.worker == l.worker || launcher.count() != 3 {
		t.Errorf("lease after a failed return: got worker %s (%d started), want a new one (3 started)", next.worker.id, launcher.count())
	}
	if e := p.exited(l.worker, "killed by signal killed (9)", nil); e.report {
		t.Error("a worker killed on purpose: report is true, want false")
	}

	// A worker that fails to start gives the error; the job finishing
	// stops further leases.
	launcher.mu.Lock()
	launcher.fail = errs.New(errs.KindWorkerCrashed, "", "no binary")
	launcher.mu.Unlock()
	if err := leases.acquire(context.Background(), one); err != nil {
		t.Fatal(err)
	}
	if _, err := p.leaseWorker(context.Background(), j, one); !errors.Is(err, errs.ErrWorkerCrashed) {
		t.Errorf("lease when the worker cannot start: got %v, want ErrWorkerCrashed", err)
	}
	leases.release(one)
	_, ws, first := p.finish(j.id)
	if !first || len(ws) != 1 {
		t.Errorf("finish: got %d workers (first %v), want the 1 live worker", len(ws), first)
	}
	if _, err := p.leaseWorker(context.Background(), j, one); !errors.Is(err, errs.ErrJobFinished) {
		t.Errorf("lease after the job finished: got %v, want ErrJobFinished", err)
	}
}
