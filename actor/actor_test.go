package actor_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/goray/goray/actor"
	"github.com/goray/goray/internal/testenv"
	"github.com/goray/goray/internal/testwait"
	"github.com/goray/goray/objectstore"
	"github.com/goray/goray/runtime"
	"github.com/goray/goray/task"
)

// Acc is the actor under test: a running total and a log of appended values.
type Acc struct {
	n   int
	log []int

	mu      sync.Mutex
	entered int
	all     chan struct{}
}

func (a *Acc) Add(_ context.Context, d int) (int, error) { a.n += d; return a.n, nil }

func (a *Acc) Total(context.Context) (int, error) { return a.n, nil }

func (a *Acc) Append(_ context.Context, x int) (int, error) {
	a.log = append(a.log, x)
	return len(a.log), nil
}

func (a *Acc) Log(context.Context) ([]int, error) { return a.log, nil }

func (a *Acc) Sum2(_ context.Context, x, y int) (int, error) { return x + y, nil }

// Explode panics; its name must show in the remote stack.
func (a *Acc) Explode(context.Context) (int, error) { panic("acc exploded on purpose") }

func (a *Acc) Fail(context.Context) (int, error) {
	return 0, errors.New("acc refused: total must stay even")
}

func (a *Acc) Sleep(ctx context.Context, ms int) (int, error) {
	select {
	case <-time.After(time.Duration(ms) * time.Millisecond):
	case <-ctx.Done():
	}
	return ms, nil
}

// Hold marks that it runs (a file "started" in dir, which the test can see
// from its process) and then holds the actor for ms milliseconds, or until
// the call's context ends.
func (a *Acc) Hold(ctx context.Context, dir string, ms int) (int, error) {
	if err := os.WriteFile(filepath.Join(dir, "started"), nil, 0o600); err != nil {
		return 0, err
	}
	return a.Sleep(ctx, ms)
}

func (a *Acc) Exit(context.Context) (int, error) {
	os.Exit(3)
	return 0, nil
}

func (a *Acc) Pid(context.Context) (int, error) { return os.Getpid(), nil }

// Chan returns a value no codec can encode.
func (a *Acc) Chan(context.Context) (chan int, error) { return make(chan int), nil }

// Meet waits until n calls of Meet are inside the actor at once (true), or
// gives up after 5 s (false): with max_concurrency >= n they meet.
func (a *Acc) Meet(_ context.Context, n int) (bool, error) {
	a.mu.Lock()
	if a.all == nil {
		a.all = make(chan struct{})
	}
	a.entered++
	all := a.all
	if a.entered == n {
		close(all)
	}
	a.mu.Unlock()
	select {
	case <-all:
		return true, nil
	case <-time.After(5 * time.Second):
		return false, nil
	}
}

// Digest returns the length and a checksum of b.
func (a *Acc) Digest(_ context.Context, b []byte) ([2]int, error) {
	s := 0
	for _, x := range b {
		s = s*31 + int(x)
	}
	return [2]int{len(b), s}, nil
}

// Blob returns n bytes.
func (a *Acc) Blob(_ context.Context, n int) ([]byte, error) { return blob(n), nil }

func blob(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*13 + 1)
	}
	return b
}

var (
	accType    = actor.Register("actortest.acc", func() *Acc { return &Acc{} })
	accAdd     = actor.Method1(accType, "add", (*Acc).Add)
	accTotal   = actor.Method0(accType, "total", (*Acc).Total)
	accAppend  = actor.Method1(accType, "append", (*Acc).Append)
	accLog     = actor.Method0(accType, "log", (*Acc).Log)
	accSum2    = actor.Method2(accType, "sum2", (*Acc).Sum2)
	accExplode = actor.Method0(accType, "explode", (*Acc).Explode)
	accFail    = actor.Method0(accType, "fail", (*Acc).Fail)
	accSleep   = actor.Method1(accType, "sleep", (*Acc).Sleep)
	accHold    = actor.Method2(accType, "hold", (*Acc).Hold)
	accExit    = actor.Method0(accType, "exit", (*Acc).Exit)
	accPid     = actor.Method0(accType, "pid", (*Acc).Pid)
	accMeet    = actor.Method1(accType, "meet", (*Acc).Meet)
	accDigest  = actor.Method1(accType, "digest", (*Acc).Digest)
	accBlob    = actor.Method1(accType, "blob", (*Acc).Blob)
	accChan    = actor.Method0(accType, "chan", (*Acc).Chan)

	// badType's constructor panics.
	badType = actor.Register("actortest.bad", func() *Acc { panic("constructor refused") })

	// ping is a task, to check that the cluster still serves tasks after a
	// worker crash.
	ping = task.Register1("actortest.ping", func(_ context.Context, x int) (int, error) { return x + 1, nil })

	// totalOf is a task that looks up a named actor of its job (in the job's
	// namespace, as the driver would) and returns its total.
	totalOf = task.Register1("actortest.totalOf", func(ctx context.Context, name string) (int, error) {
		h, err := actor.Get(ctx, accType, name)
		if err != nil {
			return 0, err
		}
		return accTotal.Remote(ctx, h).Get(ctx)
	})
)

func TestMain(m *testing.M) { testenv.Main(m) }

func testCtx(t *testing.T, d time.Duration) context.Context { return testenv.Ctx(t, d) }

func spawnAcc(t *testing.T, ctx context.Context, opts ...actor.Option) actor.Handle[Acc] {
	t.Helper()
	h, err := actor.Spawn(ctx, accType, opts...)
	if err != nil {
		t.Fatalf("Spawn(%s): got error %v, want nil", accType.Name(), err)
	}
	return h
}

// wantAdd checks that the actor serves a good call and returns want.
func wantAdd(t *testing.T, ctx context.Context, h actor.Handle[Acc], d, want int) {
	t.Helper()
	got, err := accAdd.Remote(ctx, h, objectstore.Val(d)).Get(ctx)
	if err != nil {
		t.Fatalf("add(%d): got error %v, want %d", d, err, want)
	}
	if got != want {
		t.Fatalf("add(%d): got %d, want %d", d, got, want)
	}
}

func wantKind(t *testing.T, what string, err, want error, mustName string) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Fatalf("%s: got error %v, want errors.Is(err, %v)", what, err, want)
	}
	if mustName != "" && !strings.Contains(err.Error(), mustName) {
		t.Fatalf("%s: got error %q, want it to name %q", what, err, mustName)
	}
}

func TestSpawnUnregisteredType(t *testing.T) {
	ctx := testCtx(t, 30*time.Second)
	_, err := actor.SpawnName(ctx, "nope")
	wantKind(t, `SpawnName("nope")`, err, runtime.ErrNotFound, "nope")
}

func TestCallUnregisteredMethod(t *testing.T) {
	ctx := testCtx(t, 30*time.Second)
	h := spawnAcc(t, ctx)
	_, err := actor.CallName[int](ctx, h, "nope").Get(ctx)
	wantKind(t, `CallName("nope")`, err, runtime.ErrNotFound, "nope")
	wantAdd(t, ctx, h, 2, 2)
}

func TestCallBadArguments(t *testing.T) {
	tests := []struct {
		name   string
		method string
		args   []any
	}{
		{"wrong type", "add", []any{"not a number"}},
		{"wrong type second", "sum2", []any{1, "two"}},
		{"too few", "add", nil},
		{"too many", "add", []any{1, 2}},
		{"args to no-arg method", "total", []any{1}},
		{"struct for int", "add", []any{struct{ X int }{1}}},
	}
	ctx := testCtx(t, 60*time.Second)
	h := spawnAcc(t, ctx)
	total := 0
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := actor.CallName[int](ctx, h, tc.method, tc.args...).Get(ctx)
			wantKind(t, fmt.Sprintf("%s%v", tc.method, tc.args), err, runtime.ErrInvalidArgument, tc.method)
			// The actor still serves a good call, state intact.
			total++
			wantAdd(t, ctx, h, 1, total)
		})
	}
}

func TestCallNameGood(t *testing.T) {
	ctx := testCtx(t, 30*time.Second)
	h := spawnAcc(t, ctx)
	got, err := actor.CallName[int](ctx, h, "sum2", 20, objectstore.Val(22)).Get(ctx)
	if err != nil || got != 42 {
		t.Fatalf("CallName(sum2, 20, 22): got %d, %v, want 42, nil", got, err)
	}
}

func TestPanicKeepsActor(t *testing.T) {
	ctx := testCtx(t, 30*time.Second)
	h := spawnAcc(t, ctx)
	wantAdd(t, ctx, h, 5, 5)
	_, err := accExplode.Remote(ctx, h).Get(ctx)
	wantKind(t, "explode", err, runtime.ErrTaskFailed, "acc exploded on purpose")
	var re *runtime.Error
	if !errors.As(err, &re) {
		t.Fatalf("explode: got error of type %T, want *runtime.Error", err)
	}
	if re.RemoteStack == "" {
		t.Fatal("explode: got empty RemoteStack, want the panicking goroutine's stack")
	}
	if !strings.Contains(re.RemoteStack, "actor_test.(*Acc).Explode") {
		t.Fatalf("explode: RemoteStack does not name the method (*Acc).Explode; got:\n%s", re.RemoteStack)
	}
	// The same actor serves the next call, with its state intact.
	wantAdd(t, ctx, h, 1, 6)
}

func TestMethodError(t *testing.T) {
	ctx := testCtx(t, 30*time.Second)
	h := spawnAcc(t, ctx)
	_, err := accFail.Remote(ctx, h).Get(ctx)
	wantKind(t, "fail", err, runtime.ErrTaskFailed, "acc refused: total must stay even")
	wantAdd(t, ctx, h, 3, 3)
}

func TestGetDeadline(t *testing.T) {
	ctx := testCtx(t, 30*time.Second)
	h := spawnAcc(t, ctx)
	ref := accSleep.Remote(ctx, h, objectstore.Val(5000))
	gctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := ref.Get(gctx)
	took := time.Since(start)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Get with a 200ms deadline on a 5s call: got error %v, want context.DeadlineExceeded", err)
	}
	if took > 3*time.Second {
		t.Fatalf("Get with a 200ms deadline: took %s, want it to return promptly (hang check)", took)
	}
	// The call itself still completes.
	if ms, err := ref.Get(ctx); err != nil || ms != 5000 {
		t.Fatalf("Get after the deadline, without one: got %d, %v, want 5000, nil", ms, err)
	}
}

func TestOrdering(t *testing.T) {
	ctx := testCtx(t, 60*time.Second)
	h := spawnAcc(t, ctx)
	const n = 1000
	refs := make([]objectstore.Ref[int], n)
	for i := range n {
		refs[i] = accAppend.Remote(ctx, h, objectstore.Val(i))
	}
	got, err := accLog.Remote(ctx, h).Get(ctx)
	if err != nil {
		t.Fatalf("log: got error %v", err)
	}
	want := make([]int, n)
	for i := range want {
		want[i] = i
	}
	if !slices.Equal(got, want) {
		i := 0
		for i < min(len(got), n) && got[i] == i {
			i++
		}
		t.Fatalf("log after %d appends: got %d entries, first difference at index %d (got %v), want 0..%d in order",
			n, len(got), i, got[i:min(i+5, len(got))], n-1)
	}
	for i, r := range refs {
		if l, err := r.Get(ctx); err != nil || l != i+1 {
			t.Fatalf("append(%d): got %d, %v, want %d, nil", i, l, err, i+1)
		}
	}
}

func TestManyActorsPerProcess(t *testing.T) {
	ctx := testCtx(t, 60*time.Second)
	const n = 50
	hs := make([]actor.Handle[Acc], n)
	for i := range hs {
		hs[i] = spawnAcc(t, ctx)
	}
	refs := make([]objectstore.Ref[int], n)
	for i, h := range hs {
		refs[i] = accPid.Remote(ctx, h)
	}
	pids := map[int]bool{}
	for i, r := range refs {
		pid, err := r.Get(ctx)
		if err != nil {
			t.Fatalf("actor %d pid: got error %v", i, err)
		}
		if pid == os.Getpid() {
			t.Fatalf("actor %d runs in the driver (pid %d), want a worker process", i, pid)
		}
		pids[pid] = true
	}
	if len(pids) >= n {
		t.Fatalf("distinct worker pids for %d actors: got %d, want fewer than %d", n, len(pids), n)
	}
	for i, h := range hs {
		if err := actor.Kill(ctx, h); err != nil {
			t.Fatalf("Kill actor %d: %v", i, err)
		}
	}
}

func TestKill(t *testing.T) {
	ctx := testCtx(t, 30*time.Second)
	h := spawnAcc(t, ctx)
	wantAdd(t, ctx, h, 1, 1)
	if err := actor.Kill(ctx, h); err != nil {
		t.Fatalf("Kill: got error %v, want nil", err)
	}
	_, err := accAdd.Remote(ctx, h, objectstore.Val(1)).Get(ctx)
	wantKind(t, "add after Kill", err, runtime.ErrActorDied, "")
}

func TestKillWithQueuedCalls(t *testing.T) {
	ctx := testCtx(t, 30*time.Second)
	h := spawnAcc(t, ctx)
	dir := t.TempDir()
	running := accHold.Remote(ctx, h, objectstore.Val(dir), objectstore.Val(1000))
	queued := make([]objectstore.Ref[int], 5)
	for i := range queued {
		queued[i] = accAdd.Remote(ctx, h, objectstore.Val(1))
	}
	// The first call runs in the actor: the later ones, sent after it on the
	// same ordered stream, queue behind it.
	testwait.Eventually(t, 10*time.Second, "the first call to start in the actor", func() bool {
		_, err := os.Stat(filepath.Join(dir, "started"))
		return err == nil
	})
	if err := actor.Kill(ctx, h); err != nil {
		t.Fatalf("Kill: got error %v, want nil", err)
	}
	for i, r := range queued {
		_, err := r.Get(ctx)
		wantKind(t, fmt.Sprintf("queued call %d after Kill", i), err, runtime.ErrActorDied, "")
	}
	_, err := running.Get(ctx)
	wantKind(t, "the running call after Kill", err, runtime.ErrActorDied, "killed while the call ran")
}

func TestConcurrentCallers(t *testing.T) {
	ctx := testCtx(t, 60*time.Second)
	h := spawnAcc(t, ctx)
	const callers, calls = 8, 100
	var wg sync.WaitGroup
	errc := make(chan error, callers)
	for range callers {
		wg.Go(func() {
			last := 0
			for range calls {
				n, err := accAdd.Remote(ctx, h, objectstore.Val(1)).Get(ctx)
				if err != nil {
					errc <- err
					return
				}
				if n <= last {
					errc <- fmt.Errorf("add returned %d after %d: one caller's calls ran out of order", n, last)
					return
				}
				last = n
			}
		})
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Fatal(err)
	}
	if got, err := accTotal.Remote(ctx, h).Get(ctx); err != nil || got != callers*calls {
		t.Fatalf("total: got %d, %v, want %d, nil", got, err, callers*calls)
	}
}

func TestMaxConcurrency(t *testing.T) {
	ctx := testCtx(t, 30*time.Second)
	const n = 4
	h := spawnAcc(t, ctx, actor.WithMaxConcurrency(n))
	refs := make([]objectstore.Ref[bool], n)
	for i := range refs {
		refs[i] = accMeet.Remote(ctx, h, objectstore.Val(n))
	}
	for i, r := range refs {
		if met, err := r.Get(ctx); err != nil || !met {
			t.Fatalf("meet %d with max_concurrency %d: got %v, %v, want true, nil (the calls did not overlap)", i, n, met, err)
		}
	}
}

func TestLargeValues(t *testing.T) {
	ctx := testCtx(t, 30*time.Second)
	h := spawnAcc(t, ctx)
	b := blob(5 << 20)
	want := [2]int{len(b), 0}
	for _, x := range b {
		want[1] = want[1]*31 + int(x)
	}
	put, err := objectstore.Put(ctx, b)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		arg  objectstore.Arg[[]byte]
	}{{"value", objectstore.Val(b)}, {"put ref", put}, {"actor result ref", accBlob.Remote(ctx, h, objectstore.Val(5<<20))}} {
		t.Run(tc.name, func(t *testing.T) {
			if got, err := accDigest.Remote(ctx, h, tc.arg).Get(ctx); err != nil || got != want {
				t.Fatalf("digest: got %v, %v, want %v, nil", got, err, want)
			}
		})
	}
	got, err := accBlob.Remote(ctx, h, objectstore.Val(3<<20)).Get(ctx)
	if err != nil || !bytes.Equal(got, blob(3<<20)) {
		t.Fatalf("blob(3 MiB): got %d bytes, %v, want the 3 MiB pattern", len(got), err)
	}
}

func TestTaskResultAsActorArgument(t *testing.T) {
	ctx := testCtx(t, 30*time.Second)
	h := spawnAcc(t, ctx)
	wantAdd(t, ctx, h, 1, 1)
	// ping(41) = 42, passed by ref while it may still run.
	if got, err := accAdd.Remote(ctx, h, ping.Remote(ctx, objectstore.Val(41))).Get(ctx); err != nil || got != 43 {
		t.Fatalf("add(ping(41)): got %d, %v, want 43, nil", got, err)
	}
}

func TestNameReusableAfterKill(t *testing.T) {
	ctx := testCtx(t, 30*time.Second)
	h := spawnAcc(t, ctx, actor.WithName("reused"))
	if err := actor.Kill(ctx, h); err != nil {
		t.Fatal(err)
	}
	if _, err := actor.Get(ctx, accType, "reused"); err == nil {
		t.Fatal(`Get("reused") after Kill: got nil error, want ErrNotFound or ErrActorDied`)
	} else if !errors.Is(err, runtime.ErrNotFound) && !errors.Is(err, runtime.ErrActorDied) {
		t.Fatalf(`Get("reused") after Kill: got %v, want ErrNotFound or ErrActorDied`, err)
	}
	h2 := spawnAcc(t, ctx, actor.WithName("reused"))
	defer actor.Kill(ctx, h2)
	wantAdd(t, ctx, h2, 2, 2)
}

func TestConstructorPanic(t *testing.T) {
	ctx := testCtx(t, 30*time.Second)
	_, err := actor.Spawn(ctx, badType)
	if err == nil {
		t.Fatal("Spawn of a type whose constructor panics: got nil error, want one")
	}
	wantKind(t, "Spawn(bad)", err, runtime.ErrTaskFailed, "constructor refused")
	// The worker process that tried survives: new actors still work.
	wantAdd(t, ctx, spawnAcc(t, ctx), 1, 1)
}

func TestUnencodableResult(t *testing.T) {
	ctx := testCtx(t, 30*time.Second)
	h := spawnAcc(t, ctx)
	_, err := accChan.Remote(ctx, h).Get(ctx)
	if err == nil {
		t.Fatal("chan result: got nil error, want an encode error")
	}
	wantKind(t, "chan result", err, runtime.ErrTaskFailed, "")
	wantAdd(t, ctx, h, 1, 1)
}

func TestUnencodableArgument(t *testing.T) {
	ctx := testCtx(t, 30*time.Second)
	h := spawnAcc(t, ctx)
	_, err := actor.CallName[int](ctx, h, "add", make(chan int)).Get(ctx)
	wantKind(t, "add(chan)", err, runtime.ErrInvalidArgument, "")
}

func TestZeroHandle(t *testing.T) {
	ctx := testCtx(t, 30*time.Second)
	var h actor.Handle[Acc] // e.g. from a Spawn whose error was ignored
	_, err := accAdd.Remote(ctx, h, objectstore.Val(1)).Get(ctx)
	wantKind(t, "call on a zero Handle", err, runtime.ErrInvalidArgument, "")
	_, err = actor.CallName[int](ctx, h, "add", 1).Get(ctx)
	wantKind(t, "CallName on a zero Handle", err, runtime.ErrInvalidArgument, "")
	wantKind(t, "Kill of a zero Handle", actor.Kill(ctx, h), runtime.ErrInvalidArgument, "")
}

func TestNamedActor(t *testing.T) {
	ctx := testCtx(t, 30*time.Second)
	h := spawnAcc(t, ctx, actor.WithName("x"))
	t.Cleanup(func() { _ = actor.Kill(context.Background(), h) })
	wantAdd(t, ctx, h, 10, 10)

	g, err := actor.Get(ctx, accType, "x")
	if err != nil {
		t.Fatalf(`Get("x"): got error %v, want nil`, err)
	}
	if g.ID() != h.ID() {
		t.Fatalf(`Get("x").ID(): got %s, want %s`, g.ID(), h.ID())
	}
	wantAdd(t, ctx, g, 5, 15) // shares state with h
	if got, err := accTotal.Remote(ctx, h).Get(ctx); err != nil || got != 15 {
		t.Fatalf("total via the first handle: got %d, %v, want 15, nil", got, err)
	}

	if _, err := actor.Spawn(ctx, accType, actor.WithName("x")); err == nil {
		t.Fatal(`second Spawn WithName("x"): got nil error, want a duplicate-name error`)
	} else if !errors.Is(err, runtime.ErrAlreadyExists) {
		t.Fatalf(`second Spawn WithName("x"): got error %v, want errors.Is(err, runtime.ErrAlreadyExists)`, err)
	}
	if _, err := actor.Get(ctx, accType, "no-such-actor"); !errors.Is(err, runtime.ErrNotFound) {
		t.Fatalf(`Get("no-such-actor"): got error %v, want ErrNotFound`, err)
	}
	// Another namespace does not see it.
	if _, err := actor.Get(ctx, accType, "x", actor.WithNamespace("elsewhere")); !errors.Is(err, runtime.ErrNotFound) {
		t.Fatalf(`Get("x") in namespace "elsewhere": got error %v, want ErrNotFound`, err)
	}
}

// TestNamedActorFromTask: a task (in a worker process) that looks up a named
// actor without a namespace finds it in its job's namespace.
func TestNamedActorFromTask(t *testing.T) {
	ctx := testCtx(t, 30*time.Second)
	h := spawnAcc(t, ctx, actor.WithName("box"))
	t.Cleanup(func() { _ = actor.Kill(context.Background(), h) })
	wantAdd(t, ctx, h, 7, 7)
	if got, err := totalOf.Remote(ctx, objectstore.Val("box")).Get(ctx); err != nil || got != 7 {
		t.Fatalf(`totalOf("box") in a task: got %d, %v, want 7, nil`, got, err)
	}
}

// TestInfeasibleActor: with WithFailFast an actor no node can ever host fails
// at once with ErrInfeasible; by default it waits (listed as infeasible) and
// Spawn ends at the caller's deadline with context.DeadlineExceeded.
func TestInfeasibleActor(t *testing.T) {
	ctx := testCtx(t, 30*time.Second)
	gpu := actor.WithResources(map[string]float64{"gpu": 1})
	_, err := actor.Spawn(ctx, accType, gpu, actor.WithFailFast())
	if !errors.Is(err, runtime.ErrInfeasible) || !strings.Contains(err.Error(), `"gpu"`) {
		t.Fatalf("fail-fast Spawn with gpu:1: got %v, want ErrInfeasible naming gpu", err)
	}
	sctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	start := time.Now()
	_, err = actor.Spawn(sctx, accType, gpu)
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("waiting Spawn with a 1 s deadline took %s, want it to end by the deadline (hang check)", took)
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("waiting Spawn with gpu:1: got %v, want context.DeadlineExceeded", err)
	}
	// The cluster still places feasible actors.
	wantAdd(t, ctx, spawnAcc(t, ctx), 1, 1)
}

// TestWorkerCrash kills the worker process under a call. It runs last among
// the actor tests in this file's order and leaves the cluster usable.
func TestWorkerCrash(t *testing.T) {
	ctx := testCtx(t, 60*time.Second)
	h := spawnAcc(t, ctx)
	wantAdd(t, ctx, h, 1, 1)

	gctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	_, err := accExit.Remote(gctx, h).Get(gctx)
	if errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Get of a call whose worker exited: got deadline %v, want ErrWorkerCrashed without a hang", err)
	}
	t.Logf("call whose worker exited: %v", err)
	wantKind(t, "exit", err, runtime.ErrWorkerCrashed, "")

	// The dead actor fails new calls instead of hanging: at first perhaps
	// with ErrWorkerCrashed (its process is gone), and once its raylet has
	// reported the death to the head, with ErrActorDied naming the cause.
	testwait.Eventually(t, 10*time.Second, "ErrActorDied from a call to the actor whose process died", func() bool {
		cctx, cancel2 := context.WithTimeout(ctx, 10*time.Second)
		_, err = accAdd.Remote(cctx, h, objectstore.Val(1)).Get(cctx)
		cancel2()
		if errors.Is(err, runtime.ErrActorDied) {
			t.Logf("call to the dead actor: %v", err)
			if !strings.Contains(err.Error(), "exit status 3") {
				t.Errorf("call to the dead actor: got %q, want the cause (exit status 3)", err)
			}
			return true
		}
		if !errors.Is(err, runtime.ErrWorkerCrashed) {
			t.Fatalf("call to an actor whose process died: got error %v, want ErrActorDied or ErrWorkerCrashed", err)
		}
		return false
	})

	// The cluster still serves new actors and tasks.
	h2 := spawnAcc(t, ctx)
	wantAdd(t, ctx, h2, 7, 7)
	if got, err := ping.Remote(ctx, objectstore.Val(1)).Get(ctx); err != nil || got != 2 {
		t.Fatalf("task after a worker crash: got %d, %v, want 2, nil", got, err)
	}
}

// TestSpawnRightAfterCrash: right after an actor-host process dies, and
// before its raylet has reaped it, Spawn must not land on it (the raylet
// marks it failing, or moves the actor to another host when the dying host
// does not answer).
func TestSpawnRightAfterCrash(t *testing.T) {
	ctx := testCtx(t, 60*time.Second)
	for round := range 10 {
		h := spawnAcc(t, ctx)
		_, err := accExit.Remote(ctx, h).Get(ctx)
		wantKind(t, "exit", err, runtime.ErrWorkerCrashed, "")
		for k := range 3 {
			h2, err := actor.Spawn(ctx, accType)
			if err != nil {
				t.Fatalf("round %d: Spawn %d right after a worker crash: got error %v, want nil", round, k, err)
			}
			wantAdd(t, ctx, h2, 1, 1)
		}
	}
}

// Example of spawning an actor of a registered type and calling it.
func ExampleSpawn() {
	ctx := context.Background()
	h, err := actor.Spawn(ctx, accType) // accType = actor.Register("actortest.acc", ...)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer actor.Kill(ctx, h)
	for i := 1; i <= 3; i++ {
		accAdd.Remote(ctx, h, objectstore.Val(i)) // calls from one caller run in order
	}
	total, err := accTotal.Remote(ctx, h).Get(ctx)
	fmt.Println(total, err)
	// Output: 6 <nil>
}

// Example of finding a named actor from anywhere in the job.
func ExampleGet() {
	ctx := context.Background()
	h, err := actor.Spawn(ctx, accType, actor.WithName("example-counter"))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer actor.Kill(ctx, h)
	accAdd.Remote(ctx, h, objectstore.Val(40))

	same, err := actor.Get(ctx, accType, "example-counter")
	if err != nil {
		fmt.Println(err)
		return
	}
	n, err := accAdd.Remote(ctx, same, objectstore.Val(2)).Get(ctx)
	fmt.Println(n, err)
	// Output: 42 <nil>
}
