package core

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"testing"

	"github.com/goray/goray/internal/errs"
	pb "github.com/goray/goray/proto/goray/v1"
)

// explainingLeases is a fakeLeases whose raylet says the workers in oom
// died of out of memory.
type explainingLeases struct {
	*fakeLeases
	mu    sync.Mutex
	oom   map[string]bool
	asked []string
}

func (f *explainingLeases) workerDeath(_ context.Context, _ leaseGranter, id []byte) *errs.Error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.asked = append(f.asked, string(id))
	if !f.oom[string(id)] {
		return nil
	}
	return errs.New(errs.KindOutOfMemory, "", "the memory monitor of node n1 killed worker %s: its workers used 300 MiB, over the limit of 200 MiB", id)
}

func TestSubmitterAsksWhyItsWorkerDied(t *testing.T) {
	leases := &explainingLeases{fakeLeases: &fakeLeases{}, oom: map[string]bool{"w1": true, "w2": true}}
	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	pusher := make(fakePusher, 64)
	s := newTaskScheduler(submitterConfig{ctx: ctx, wg: &wg, log: slog.New(slog.DiscardHandler), leases: leases, pusher: pusher})
	t.Cleanup(func() { s.close(); cancel(); wg.Wait() })
	crashed := errs.New(errs.KindWorkerCrashed, "", "the worker at w went away while the call ran")

	// Retried once after the memory monitor killed its worker, then out of
	// retries: the caller sees ErrOutOfMemory, named for its function.
	e := submitTest(s, "hog", 1)
	pusher.next(t).cb(nil, crashed)
	p := pusher.next(t)
	if p.addr != "w2" {
		t.Fatalf("retry: pushed to %s, want w2", p.addr)
	}
	p.cb(nil, crashed)
	waitEntry(t, e)
	var ge *errs.Error
	if !errors.Is(e.err, errs.ErrOutOfMemory) || !errors.As(e.err, &ge) || ge.Name != "hog" {
		t.Fatalf("after two OOM kills with one retry: got %v, want ErrOutOfMemory named hog", e.err)
	}

	// A worker that died otherwise stays a crash; a non-retriable task gets
	// a lease of its own, asked for as not retriable.
	e = submitTest(s, "crash", 0)
	pusher.next(t).cb(nil, crashed)
	waitEntry(t, e)
	if !errors.Is(e.err, errs.ErrWorkerCrashed) {
		t.Fatalf("a plain crash: got %v, want ErrWorkerCrashed", e.err)
	}
	leases.mu.Lock()
	asked := append([]string(nil), leases.asked...)
	leases.mu.Unlock()
	if len(asked) != 3 || asked[0] != "w1" || asked[1] != "w2" || asked[2] != "w3" {
		t.Fatalf("asked why workers died: got %v, want [w1 w2 w3], once each", asked)
	}
	leases.fakeLeases.mu.Lock()
	reqs := append([]*pb.RequestWorkerLeaseRequest(nil), leases.requests...)
	leases.fakeLeases.mu.Unlock()
	if len(reqs) != 3 || !reqs[0].GetRetriable() || !reqs[1].GetRetriable() || reqs[2].GetRetriable() {
		t.Fatalf("lease requests' retriable: got %v, want [true true false]", retriableOf(reqs))
	}
}

func retriableOf(reqs []*pb.RequestWorkerLeaseRequest) []bool {
	out := make([]bool, len(reqs))
	for i, r := range reqs {
		out[i] = r.GetRetriable()
	}
	return out
}
