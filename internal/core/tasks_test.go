package core

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/goray/goray/internal/errs"
	"github.com/goray/goray/internal/testwait"
	pb "github.com/goray/goray/proto/goray/v1"
)

// TestDefaultShapeKey: the default shape's key, a constant so that it is not
// built for every task, is what shapeKey builds for other shapes.
func TestDefaultShapeKey(t *testing.T) {
	if want := fmt.Sprintf("%s=%g;", "CPU", 1.0); defaultShapeKey != want {
		t.Fatalf("defaultShapeKey = %q, want %q", defaultShapeKey, want)
	}
	for _, c := range []struct {
		r    map[string]float64
		want string
	}{
		{defaultTaskResources, defaultShapeKey},
		{map[string]float64{"CPU": 1}, defaultShapeKey},
		{map[string]float64{"CPU": 2}, "CPU=2;"},
		{map[string]float64{"CPU": 1, "GPU": 0}, "CPU=1;GPU=0;"},
		{map[string]float64{"GPU": 1}, "GPU=1;"},
	} {
		if got := shapeKey(c.r); got != c.want {
			t.Errorf("shapeKey(%v) = %q, want %q", c.r, got, c.want)
		}
	}
}

// fakeLeases grants leases on workers "w1", "w2", ... or fails with err,
// and records what it was asked.
type fakeLeases struct {
	mu  sync.Mutex
	err error
	// grants, when > 0, is how many leases are granted; later requests
	// wait until their context ends.
	grants   int
	requests []*pb.RequestWorkerLeaseRequest
	granted  int
	returned []string // "w1" or "w1 failed"
}

func (f *fakeLeases) requestLease(ctx context.Context, req *pb.RequestWorkerLeaseRequest) (*pb.RequestWorkerLeaseResponse, leaseGranter, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.requests = append(f.requests, req)
	if f.grants > 0 && f.granted == f.grants {
		f.mu.Unlock()
		<-ctx.Done()
		f.mu.Lock()
		return nil, nil, ctx.Err()
	}
	if f.err != nil {
		return nil, nil, f.err
	}
	f.granted++
	w := fmt.Sprintf("w%d", f.granted)
	return &pb.RequestWorkerLeaseResponse{LeaseId: []byte(w), WorkerAddress: w}, "raylet", nil
}

func (f *fakeLeases) returnLease(_ context.Context, from leaseGranter, id []byte, failed bool) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	r := string(id)
	if failed {
		r += " failed"
	}
	f.returned = append(f.returned, r)
	return nil
}

func (f *fakeLeases) counts() (requests int, returned []string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.requests), slices.Clone(f.returned)
}

// pushed is one task a fakePusher was given.
type pushed struct {
	addr string
	spec *pb.TaskSpec
	cb   callback
	sent *fakeSent
}

// fakePusher hands every pushed task to the test, which answers it.
type fakePusher chan pushed

func (p fakePusher) push(addr string, spec *pb.TaskSpec, cb callback) (sentCall, error) {
	sent := &fakeSent{}
	p <- pushed{addr, spec, cb, sent}
	return sent, nil
}

// fakeSent records the cancels of one pushed call; each is acked at once.
type fakeSent struct {
	mu      sync.Mutex
	cancels []string // "cancel", with " recursive" and " force" as asked
}

func (f *fakeSent) cancel(recursive, force bool, acked func()) {
	c := "cancel"
	if recursive {
		c += " recursive"
	}
	if force {
		c += " force"
	}
	f.mu.Lock()
	f.cancels = append(f.cancels, c)
	f.mu.Unlock()
	if acked != nil {
		acked()
	}
}

func (f *fakeSent) got() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.cancels)
}

// next is the next pushed task, or a test failure after a while.
func (p fakePusher) next(t *testing.T) pushed {
	t.Helper()
	select {
	case x := <-p:
		return x
	case <-time.After(10 * time.Second):
		t.Fatal("no task was pushed to a worker")
		return pushed{}
	}
}

func newTestSubmitter(t *testing.T, leases *fakeLeases) (*taskScheduler, fakePusher, *atomic.Int64) {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	pusher := make(fakePusher, 64)
	var retries atomic.Int64
	s := newTaskScheduler(submitterConfig{ctx: ctx, wg: &wg, log: slog.New(slog.DiscardHandler),
		leases: leases, pusher: pusher, retried: func() { retries.Add(1) }})
	t.Cleanup(func() { s.close(); cancel(); wg.Wait() })
	return s, pusher, &retries
}

// submitTest submits a task of function name with the given retries and
// returns its entry.
func submitTest(s *taskScheduler, name string, retries int) *objEntry {
	e := &objEntry{done: make(chan struct{})}
	s.submit(&taskItem{spec: &pb.TaskSpec{FunctionName: name}, entry: e, retriesLeft: retries}, defaultTaskResources, TaskOptions{})
	return e
}

func valueReply(b string) *pb.ExecuteResponse {
	return &pb.ExecuteResponse{Result: &pb.ExecuteResponse_Value{Value: &pb.Payload{Data: []byte(b)}}}
}

func waitEntry(t *testing.T, e *objEntry) {
	t.Helper()
	select {
	case <-e.done:
	case <-time.After(10 * time.Second):
		t.Fatal("the task's result never arrived")
	}
}

func TestSubmitterReusesALeaseAndReturnsItWhenIdle(t *testing.T) {
	leases := &fakeLeases{}
	s, pusher, _ := newTestSubmitter(t, leases)

	a := submitTest(s, "f", 0)
	p := pusher.next(t)
	if p.addr != "w1" || p.spec.GetFunctionName() != "f" {
		t.Fatalf("first push: got %s to %s, want f to w1", p.spec.GetFunctionName(), p.addr)
	}
	p.cb(valueReply("a"), nil)
	waitEntry(t, a)
	if string(a.value.GetData()) != "a" || a.err != nil {
		t.Fatalf("first result: got %q, %v; want \"a\"", a.value.GetData(), a.err)
	}

	b := submitTest(s, "f", 0)
	if p := pusher.next(t); p.addr != "w1" {
		t.Fatalf("second push: got worker %s, want w1 (the lingering lease)", p.addr)
	} else {
		p.cb(valueReply("b"), nil)
	}
	waitEntry(t, b)
	if n, _ := leases.counts(); n != 1 {
		t.Fatalf("lease requests: got %d, want 1 (the lease is reused)", n)
	}
	testwait.Eventually(t, 10*time.Second, "the idle lease returned", func() bool {
		_, ret := leases.counts()
		return slices.Equal(ret, []string{"w1"})
	})
}

func TestSubmitterRetriesOnAnotherWorkerWhenOneDies(t *testing.T) {
	leases := &fakeLeases{}
	s, pusher, retries := newTestSubmitter(t, leases)

	e := submitTest(s, "f", 1)
	p := pusher.next(t)
	p.cb(nil, errs.New(errs.KindWorkerCrashed, "", "the worker went away"))
	p = pusher.next(t)
	if p.addr != "w2" {
		t.Fatalf("retry: pushed to %s, want a new lease's worker w2", p.addr)
	}
	p.cb(valueReply("ok"), nil)
	waitEntry(t, e)
	if e.err != nil || string(e.value.GetData()) != "ok" {
		t.Fatalf("result after a retry: got %q, %v; want \"ok\"", e.value.GetData(), e.err)
	}
	if got := retries.Load(); got != 1 {
		t.Fatalf("retries counted: got %d, want 1", got)
	}
	if _, ret := leases.counts(); !slices.Contains(ret, "w1 failed") {
		t.Fatalf("returned leases: got %v, want w1 returned as failed", ret)
	}

	// Out of retries, the failure reaches the caller.
	e = submitTest(s, "f", 0)
	pusher.next(t).cb(nil, errs.New(errs.KindWorkerCrashed, "", "the worker went away"))
	waitEntry(t, e)
	if !errors.Is(e.err, errs.ErrWorkerCrashed) {
		t.Fatalf("without retries: got %v, want ErrWorkerCrashed", e.err)
	}
}

func TestSubmitterApplicationErrorsAreNotRetried(t *testing.T) {
	s, pusher, retries := newTestSubmitter(t, &fakeLeases{})
	e := submitTest(s, "f", 3)
	pusher.next(t).cb(errorReply(0, errs.New(errs.KindTaskFailed, "f", "user code failed")), nil)
	waitEntry(t, e)
	if !errors.Is(e.err, errs.ErrTaskFailed) || retries.Load() != 0 {
		t.Fatalf("got %v after %d retries, want ErrTaskFailed after none", e.err, retries.Load())
	}
}

func TestSubmitterLeaseFailureFailsTheQueuedTasks(t *testing.T) {
	leases := &fakeLeases{err: errs.New(errs.KindInfeasible, "", "no node has gpu")}
	s, _, _ := newTestSubmitter(t, leases)
	e := submitTest(s, "beta", 3)
	waitEntry(t, e)
	if !errors.Is(e.err, errs.ErrInfeasible) || !strings.Contains(e.err.Error(), "beta") {
		t.Fatalf("got %v, want ErrInfeasible naming the task beta", e.err)
	}
}

func TestSubmitterCloseFailsQueuedTasksAndReturnsLeases(t *testing.T) {
	leases := &fakeLeases{grants: 1}
	s, pusher, _ := newTestSubmitter(t, leases)
	submitTest(s, "f", 0)
	pusher.next(t) // w1 runs the first task; the second waits for a lease
	second := submitTest(s, "f", 0)
	testwait.Eventually(t, 10*time.Second, "a second lease requested", func() bool { n, _ := leases.counts(); return n == 2 })
	s.close()
	waitEntry(t, second)
	if !errors.Is(second.err, errs.ErrShuttingDown) || !strings.Contains(second.err.Error(), "shut down") {
		t.Fatalf("a task queued at close: got %v, want ErrShuttingDown saying goray shut down", second.err)
	}
	if _, ret := leases.counts(); !slices.Equal(ret, []string{"w1"}) {
		t.Fatalf("leases returned by close: got %v, want [w1]", ret)
	}
}

// TestPumpPipelinesShortTasks: once a shape's tasks are known to be short,
// a backlog goes ahead on a worker up to maxTasksInFlightPerWorker; tasks
// of unknown length, and non-default strategies, go one at a time.
func TestPumpPipelinesShortTasks(t *testing.T) {
	for _, tc := range []struct {
		name     string
		taskTime time.Duration
		strategy *pb.SchedulingStrategy
		want     int
	}{
		// The last one waits for a worker (or lease) of its own: a task goes
		// ahead behind another only while more wait than there are workers.
		{"short tasks", 10 * time.Microsecond, nil, 4},
		{"unknown length", 0, nil, 1},
		{"long tasks", 5 * time.Millisecond, nil, 1},
		{"spread", 10 * time.Microsecond, &pb.SchedulingStrategy{Kind: pb.SchedulingStrategy_KIND_SPREAD}, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newTaskScheduler(submitterConfig{ctx: t.Context(), wg: &sync.WaitGroup{}, log: slog.New(slog.DiscardHandler)})
			w := &leasedWorker{addr: "w1", flushing: true} // no flush goroutine: the test reads the outbox
			sh := &shape{resources: defaultTaskResources, strategy: tc.strategy, taskTime: tc.taskTime, workers: []*leasedWorker{w}, requesting: true}
			for range 5 {
				sh.queue = append(sh.queue, &taskItem{spec: &pb.TaskSpec{}})
			}
			s.mu.Lock()
			s.pump(sh)
			s.mu.Unlock()
			if got := len(w.outbox); got != tc.want {
				t.Fatalf("tasks handed to the one worker: got %d, want %d", got, tc.want)
			}
		})
	}
}
