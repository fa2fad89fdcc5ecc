// Package cancel tests cancellation and actor.Kill end to end, through the
// public SDK, on an embedded cluster whose worker processes are this test
// binary: task.Cancel (plain, forced, recursive), a caller's context that
// cancels its call, and a killed actor's calls. Remote code reports what it
// saw through marker files in a directory the test passes it, since it runs
// in other processes. It is a package of its own so that its job holds the
// node's CPUs and actor hosts alone: a test that kills an actor's host needs
// the actor to be the only one on it.
package cancel

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/goray/goray/actor"
	"github.com/goray/goray/internal/testenv"
	"github.com/goray/goray/internal/testwait"
	"github.com/goray/goray/objectstore"
	"github.com/goray/goray/runtime"
	"github.com/goray/goray/runtime/goraytest"
	"github.com/goray/goray/task"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// mark writes file name in dir (with content), for the test to see.
func mark(dir, name, content string) error {
	return os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600)
}

func marked(dir, name string) bool {
	_, err := os.Stat(filepath.Join(dir, name))
	return err == nil
}

// waitMarked waits until remote code marked name in dir.
func waitMarked(t *testing.T, dir, name string) {
	t.Helper()
	testwait.Eventually(t, 30*time.Second, fmt.Sprintf("%s marked in %s", name, dir), func() bool { return marked(dir, name) })
}

// pidIn is the pid remote code wrote into dir/pid.
func pidIn(t *testing.T, dir string) int {
	t.Helper()
	waitMarked(t, dir, "pid")
	b, err := os.ReadFile(filepath.Join(dir, "pid"))
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(string(b))
	if err != nil {
		t.Fatalf("pid file %q: %v", b, err)
	}
	return pid
}

func processGone(pid int) bool { return errors.Is(syscall.Kill(pid, 0), syscall.ESRCH) }

// waitCtx is what block does: it marks "started" and its pid, waits up to
// 60 s for its context, and marks "saw-done" when the context ended first.
func waitCtx(ctx context.Context, dir string) (int, error) {
	if err := mark(dir, "pid", strconv.Itoa(os.Getpid())); err != nil {
		return 0, err
	}
	if err := mark(dir, "started", ""); err != nil {
		return 0, err
	}
	t := time.NewTimer(60 * time.Second) // the task's work: far longer than any test waits
	defer t.Stop()
	select {
	case <-ctx.Done():
		if err := mark(dir, "saw-done", context.Cause(ctx).Error()); err != nil {
			return 0, err
		}
		return 0, ctx.Err()
	case <-t.C:
		return 60, nil
	}
}

var (
	// block is a 60 s task that ends early when its ctx is done.
	block = task.Register1("canceltest.block", waitCtx)

	// stubborn marks its pid, then sleeps 60 s ignoring its ctx.
	stubborn = task.Register1("canceltest.stubborn", func(_ context.Context, dir string) (int, error) {
		if err := mark(dir, "pid", strconv.Itoa(os.Getpid())); err != nil {
			return 0, err
		}
		time.Sleep(60 * time.Second) // ignores ctx on purpose: only force stops it
		return 60, nil
	})

	// parent submits block in dir/child (with its own ctx, or detached
	// from its cancellation), marks "started" once the child runs, then
	// blocks like block.
	parent = task.Register2("canceltest.parent", func(ctx context.Context, dir string, detach bool) (int, error) {
		cctx := ctx
		if detach {
			cctx = context.WithoutCancel(ctx) // only a recursive cancel reaches the child
		}
		child := filepath.Join(dir, "child")
		if err := os.Mkdir(child, 0o700); err != nil {
			return 0, err
		}
		ref := block.Remote(cctx, objectstore.Val(child))
		for !marked(child, "started") {
			select {
			case <-ctx.Done():
				return 0, ctx.Err()
			case <-time.After(10 * time.Millisecond): // polls the child's marker
			}
		}
		_ = ref
		return waitCtx(ctx, dir)
	})
)

func wantKind(t *testing.T, what string, err, want error) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Fatalf("%s: got error %v, want errors.Is(err, %v)", what, err, want)
	}
}

// TestCancelRunningTask: a 60 s task cancelled while it runs: its ctx is
// done, and Get returns the cancellation once the function returned (so it
// has seen ctx.Done by then), long before the task's 60 s.
func TestCancelRunningTask(t *testing.T) {
	ctx := testenv.Ctx(t, 30*time.Second)
	dir := t.TempDir()
	ref := block.Remote(ctx, objectstore.Val(dir))
	waitMarked(t, dir, "started")
	start := time.Now()
	if err := task.Cancel(ctx, ref); err != nil {
		t.Fatalf("Cancel: %v", err)
	}
	_, err := ref.Get(ctx)
	delay := time.Since(start)
	wantKind(t, "Get of the cancelled task", err, runtime.ErrCancelled)
	if !marked(dir, "saw-done") {
		t.Fatal("Get returned the cancellation before the function saw ctx.Done")
	}
	t.Logf("from Cancel to Get returning: %v", delay)
	if err := task.Cancel(ctx, ref); err != nil {
		t.Fatalf("Cancel of a finished task: got %v, want nil (a no-op)", err)
	}
	if v, err := add.Remote(ctx, objectstore.Val(1)).Get(ctx); err != nil || v != 2 {
		t.Fatalf("a task after the cancel: got %d, %v, want 2", v, err)
	}
}

// TestCancelTaskQueuedAtTheSubmitter: with the node's CPUs busy, a third
// task waits at the submitter for a worker; its cancel drops it there while
// the others still run.
func TestCancelTaskQueuedAtTheSubmitter(t *testing.T) {
	ctx := testenv.Ctx(t, 60*time.Second)
	nodes, err := runtime.Nodes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	cpus := 0
	for _, n := range nodes {
		cpus += int(n.Total["CPU"])
	}
	var busy []objectstore.Ref[int]
	var dirs []string
	for range cpus {
		d := t.TempDir()
		dirs = append(dirs, d)
		busy = append(busy, block.Remote(ctx, objectstore.Val(d)))
	}
	for _, d := range dirs {
		waitMarked(t, d, "started")
	}
	queued := block.Remote(ctx, objectstore.Val(t.TempDir()))
	if err := task.Cancel(ctx, queued); err != nil {
		t.Fatalf("Cancel: %v", err)
	}
	_, err = queued.Get(ctx)
	wantKind(t, "Get of the queued task", err, runtime.ErrCancelled)
	for i, d := range dirs {
		if marked(d, "saw-done") {
			t.Fatalf("busy task %d ended before the queued task's cancel returned", i)
		}
	}
	for i, r := range busy {
		if err := task.Cancel(ctx, r); err != nil {
			t.Fatalf("Cancel busy task %d: %v", i, err)
		}
		_, err := r.Get(ctx)
		wantKind(t, fmt.Sprintf("busy task %d", i), err, runtime.ErrCancelled)
	}
}

// TestForceCancelKillsTheWorker: a task that ignores its ctx is stopped by
// killing its worker process; it is not retried, and tasks still run.
func TestForceCancelKillsTheWorker(t *testing.T) {
	ctx := testenv.Ctx(t, 60*time.Second)
	dir := t.TempDir()
	ref := stubborn.Remote(ctx, objectstore.Val(dir), task.WithMaxRetries(3))
	pid := pidIn(t, dir)
	if err := task.Cancel(ctx, ref, task.WithForce()); err != nil {
		t.Fatalf("Cancel with force: %v", err)
	}
	_, err := ref.Get(ctx)
	wantKind(t, "Get of the force-cancelled task", err, runtime.ErrCancelled)
	testwait.Eventually(t, 30*time.Second, fmt.Sprintf("worker process %d gone", pid), func() bool { return processGone(pid) })
	if v, err := add.Remote(ctx, objectstore.Val(1)).Get(ctx); err != nil || v != 2 {
		t.Fatalf("a task after the forced cancel: got %d, %v, want 2", v, err)
	}
}

// TestCancelChildren: a parent task's children are cancelled with it —
// by a recursive cancel even when submitted with a context detached from
// the parent's cancellation, and by the parent's ctx when submitted with it.
func TestCancelChildren(t *testing.T) {
	for _, tc := range []struct {
		name   string
		detach bool
		opts   []task.CancelOption
	}{
		{"recursive cancel, child detached from the parent's ctx", true, []task.CancelOption{task.WithRecursive()}},
		{"plain cancel, child governed by the parent's ctx", false, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := testenv.Ctx(t, 60*time.Second)
			dir := t.TempDir()
			ref := parent.Remote(ctx, objectstore.Val(dir), objectstore.Val(tc.detach))
			waitMarked(t, dir, "started") // the child runs too
			if err := task.Cancel(ctx, ref, tc.opts...); err != nil {
				t.Fatalf("Cancel: %v", err)
			}
			_, err := ref.Get(ctx)
			wantKind(t, "Get of the parent", err, runtime.ErrCancelled)
			if !marked(dir, "saw-done") {
				t.Fatal("Get of the parent returned before the parent saw ctx.Done")
			}
			waitMarked(t, filepath.Join(dir, "child"), "saw-done")
		})
	}
}

// TestCallerContextCancelsTheTask: the ctx a task was submitted with
// governs it: cancelled, or past its deadline, it cancels the task.
func TestCallerContextCancelsTheTask(t *testing.T) {
	ctx := testenv.Ctx(t, 30*time.Second)
	t.Run("cancelled", func(t *testing.T) {
		dir := t.TempDir()
		cctx, cancel := context.WithCancel(ctx)
		ref := block.Remote(cctx, objectstore.Val(dir))
		waitMarked(t, dir, "started")
		cancel()
		_, err := ref.Get(ctx)
		wantKind(t, "Get after the caller's ctx was cancelled", err, runtime.ErrCancelled)
		if !marked(dir, "saw-done") {
			t.Fatal("Get returned before the task saw ctx.Done")
		}
	})
	t.Run("deadline", func(t *testing.T) {
		// The case: a long task under a 500 ms deadline used to
		// run to its end after the caller's Get gave up.
		dir := t.TempDir()
		dctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
		defer cancel()
		ref := block.Remote(dctx, objectstore.Val(dir))
		_, err := ref.Get(dctx)
		wantKind(t, "Get under the deadline", err, runtime.ErrTimeout)
		_, err = ref.Get(ctx)
		wantKind(t, "Get after the deadline", err, runtime.ErrCancelled)
		if marked(dir, "started") && !marked(dir, "saw-done") {
			t.Fatal("the task started but its ctx was not done when Get returned")
		}
	})
	t.Run("detached", func(t *testing.T) {
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		v, err := add.Remote(context.WithoutCancel(cctx), objectstore.Val(2)).Get(ctx)
		if err != nil || v != 3 {
			t.Fatalf("a call submitted with context.WithoutCancel of a done ctx: got %d, %v, want 3", v, err)
		}
	})
}

var add = task.Register1("canceltest.add", func(_ context.Context, x int) (int, error) { return x + 1, nil })

// Poller is an actor whose Poll is a long poll on its context.
type Poller struct{}

// Poll waits, like block, for its ctx (up to 60 s).
func (*Poller) Poll(ctx context.Context, dir string) (int, error) { return waitCtx(ctx, dir) }

// Stuck marks its pid and sleeps 60 s, ignoring its ctx.
func (*Poller) Stuck(_ context.Context, dir string) (int, error) {
	if err := mark(dir, "pid", strconv.Itoa(os.Getpid())); err != nil {
		return 0, err
	}
	time.Sleep(60 * time.Second) // ignores ctx on purpose
	return 60, nil
}

// Echo answers at once.
func (*Poller) Echo(_ context.Context, x int) (int, error) { return x, nil }

var (
	pollerType  = actor.Register("canceltest.poller", func() *Poller { return &Poller{} })
	pollerPoll  = actor.Method1(pollerType, "poll", (*Poller).Poll)
	pollerStuck = actor.Method1(pollerType, "stuck", (*Poller).Stuck)
	pollerEcho  = actor.Method1(pollerType, "echo", (*Poller).Echo)
)

// TestCancelActorCall: an actor call cancelled by its caller's ctx, or by
// task.Cancel, is cancelled in the actor (the method's ctx is done), and
// the actor serves on; force is refused for actor calls.
func TestCancelActorCall(t *testing.T) {
	ctx := testenv.Ctx(t, 30*time.Second)
	h := goraytest.Spawn(t, pollerType)
	for _, tc := range []struct {
		name   string
		cancel func(cancelCtx context.CancelFunc, ref objectstore.Ref[int]) error
	}{
		{"by the caller's ctx", func(cancel context.CancelFunc, _ objectstore.Ref[int]) error { cancel(); return nil }},
		{"by task.Cancel", func(_ context.CancelFunc, ref objectstore.Ref[int]) error { return task.Cancel(ctx, ref) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			cctx, cancel := context.WithCancel(ctx)
			defer cancel()
			ref := pollerPoll.Remote(cctx, h, objectstore.Val(dir))
			queued := pollerEcho.Remote(ctx, h, objectstore.Val(7))
			waitMarked(t, dir, "started")
			if err := task.Cancel(ctx, ref, task.WithForce()); !errors.Is(err, runtime.ErrInvalidArgument) {
				t.Fatalf("Cancel with force of an actor call: got %v, want ErrInvalidArgument", err)
			}
			if err := tc.cancel(cancel, ref); err != nil {
				t.Fatalf("cancel: %v", err)
			}
			_, err := ref.Get(ctx)
			wantKind(t, "Get of the cancelled call", err, runtime.ErrCancelled)
			if !marked(dir, "saw-done") {
				t.Fatal("Get returned before the method saw ctx.Done")
			}
			if v, err := queued.Get(ctx); err != nil || v != 7 {
				t.Fatalf("the call queued behind it: got %d, %v, want 7", v, err)
			}
		})
	}
}

// TestCancelQueuedActorCall: a call queued in the actor's mailbox behind a
// running one is dropped there by its cancel, at once.
func TestCancelQueuedActorCall(t *testing.T) {
	ctx := testenv.Ctx(t, 30*time.Second)
	h := goraytest.Spawn(t, pollerType)
	dir := t.TempDir()
	running := pollerPoll.Remote(ctx, h, objectstore.Val(dir))
	waitMarked(t, dir, "started")
	queuedDir := t.TempDir()
	queued := pollerPoll.Remote(ctx, h, objectstore.Val(queuedDir))
	if err := task.Cancel(ctx, queued); err != nil {
		t.Fatalf("Cancel: %v", err)
	}
	_, err := queued.Get(ctx)
	wantKind(t, "Get of the queued call", err, runtime.ErrCancelled)
	if marked(dir, "saw-done") {
		t.Fatal("the running call ended before the queued call's cancel was answered")
	}
	if err := task.Cancel(ctx, running); err != nil {
		t.Fatalf("Cancel: %v", err)
	}
	_, err = running.Get(ctx)
	wantKind(t, "Get of the running call", err, runtime.ErrCancelled)
	if v, err := pollerEcho.Remote(ctx, h, objectstore.Val(1)).Get(ctx); err != nil || v != 1 {
		t.Fatalf("a call after: got %d, %v, want 1", v, err)
	}
	if marked(queuedDir, "started") {
		t.Fatal("the cancelled queued call ran")
	}
}

// TestKillEndsRunningAndQueuedCalls: actor.Kill fails the running call and
// every queued one with ErrActorDied; the running method's ctx is done.
// Its host process lives on: the method returned, nothing is stuck.
func TestKillEndsRunningAndQueuedCalls(t *testing.T) {
	ctx := testenv.Ctx(t, 30*time.Second)
	h := goraytest.Spawn(t, pollerType)
	dir := t.TempDir()
	running := pollerPoll.Remote(ctx, h, objectstore.Val(dir))
	queued := make([]objectstore.Ref[int], 3)
	for i := range queued {
		queued[i] = pollerEcho.Remote(ctx, h, objectstore.Val(i))
	}
	pid := pidIn(t, dir)
	waitMarked(t, dir, "started")
	if err := actor.Kill(ctx, h); err != nil {
		t.Fatalf("Kill: %v", err)
	}
	_, err := running.Get(ctx)
	wantKind(t, "the running call after Kill", err, runtime.ErrActorDied)
	for i, r := range queued {
		_, err := r.Get(ctx)
		wantKind(t, fmt.Sprintf("queued call %d after Kill", i), err, runtime.ErrActorDied)
	}
	waitMarked(t, dir, "saw-done")
	if processGone(pid) {
		t.Fatalf("the actor's host (pid %d) was ended although the killed method returned", pid)
	}
}

// TestKillEndsAStuckActorsHost: a killed actor whose method ignores its
// ctx: the call fails with ErrActorDied, and its host, which hosts only
// that actor, is ended so that nothing of the actor runs on.
func TestKillEndsAStuckActorsHost(t *testing.T) {
	ctx := testenv.Ctx(t, 60*time.Second)
	h := goraytest.Spawn(t, pollerType)
	dir := t.TempDir()
	running := pollerStuck.Remote(ctx, h, objectstore.Val(dir))
	queued := pollerEcho.Remote(ctx, h, objectstore.Val(1))
	pid := pidIn(t, dir)
	if err := actor.Kill(ctx, h); err != nil {
		t.Fatalf("Kill: %v", err)
	}
	_, err := running.Get(ctx)
	wantKind(t, "the running call after Kill", err, runtime.ErrActorDied)
	_, err = queued.Get(ctx)
	wantKind(t, "the queued call after Kill", err, runtime.ErrActorDied)
	testwait.Eventually(t, 30*time.Second, fmt.Sprintf("the stuck actor's host (pid %d) gone", pid), func() bool { return processGone(pid) })
	// Actors still start and serve.
	h2 := goraytest.Spawn(t, pollerType)
	if v, err := pollerEcho.Remote(ctx, h2, objectstore.Val(5)).Get(ctx); err != nil || v != 5 {
		t.Fatalf("a new actor after: got %d, %v, want 5", v, err)
	}
}

// Canceller is an actor that cancels the calls whose refs it is given.
type Canceller struct{}

// Cancel cancels the call behind the ref inside its argument: a ref it
// borrows, owned by the process that made the call.
func (*Canceller) Cancel(ctx context.Context, refs []objectstore.Ref[int]) (int, error) {
	for _, r := range refs {
		if err := task.Cancel(ctx, r); err != nil {
			return 0, err
		}
	}
	return len(refs), nil
}

var (
	cancellerType   = actor.Register("canceltest.canceller", func() *Canceller { return &Canceller{} })
	cancellerCancel = actor.Method1(cancellerType, "cancel", (*Canceller).Cancel)
)

// TestCancelThroughABorrowedRef: a process that borrows a call's ref (an
// actor it was passed to, inside a value) cancels the call: its owner
// cancels it, and the owner's Get returns the cancellation.
func TestCancelThroughABorrowedRef(t *testing.T) {
	ctx := testenv.Ctx(t, 30*time.Second)
	h, err := actor.Spawn(ctx, cancellerType)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = actor.Kill(context.Background(), h) })
	dir := t.TempDir()
	ref := block.Remote(ctx, objectstore.Val(dir))
	waitMarked(t, dir, "started")
	if n, err := cancellerCancel.Remote(ctx, h, objectstore.Val([]objectstore.Ref[int]{ref})).Get(ctx); err != nil || n != 1 {
		t.Fatalf("the actor cancelling the borrowed ref: got %d, %v", n, err)
	}
	_, err = ref.Get(ctx)
	wantKind(t, "Get of the task cancelled through a borrowed ref", err, runtime.ErrCancelled)
	if !marked(dir, "saw-done") {
		t.Fatal("Get returned the cancellation before the function saw ctx.Done")
	}
}
